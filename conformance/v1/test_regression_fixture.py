"""Property 3: the seed's standalone causal regression fixture, as an explicit example (in
the kernel's first cache format when it reads no bf16: the fixture's rows, 0 and 8, are
exact in every format)."""

import pytest

from sparse_attn_conformance.conformance.draw import format_preconditions
from sparse_attn_conformance.conformance.harness import call, expect_matches
from sparse_attn_conformance.conformance.v1.seed_fixture import LARGE, causal_regression
from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.strategies.formats import as_format


def test_seed_causal_regression_fixture(kernel):
    fmt = formats.BF16 if formats.BF16 in kernel.kv_formats else kernel.kv_formats[0]
    inputs = causal_regression(format_preconditions(kernel.pre, fmt))
    if inputs is not None:
        inputs = as_format(inputs, fmt)
    if inputs is None:
        pytest.skip(f"not exercised: {kernel.name}'s preconditions exclude S >= 2 or WIN >= 2")
    out = call(kernel, inputs)
    first, last = out[:, 0].abs().max().item(), out[:, -1].abs().min().item()
    assert first < 1.0, (
        f"token 0 (seq_used = WIN - 1 = {inputs.window_size - 1}) attended window slot "
        f"{inputs.window_size - 1}, written by a later token: |o| reaches {first:.4g} "
        f"(about {LARGE} when the slot leaks, 0 when it does not)")
    assert last > LARGE / 2, (
        f"the last token must attend slot {inputs.window_size - 1} (|o| about {LARGE}); "
        f"its smallest |o| is {last:.4g}")
    expect_matches(out, inputs)
