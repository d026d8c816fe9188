"""The far-below-zero call (conformance/logits.py) and the magnitudes of a pool's rows in
every format (contracts/formats.py) that it is made from: a row's magnitude decodes to the
magnitude of its value, bit for bit, NaN staying NaN; the made call is valid, inside the
domain, with every live logit at most 0 and, on the tokens whose rows allow it, below every
finite sentinel kernels are known to use (-1e20, -1e30); its sinks lie below them all."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance import contracts
from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.logits import LOW_SINKS, TOP_LOG2, far_below_zero
from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.kernels.registry import kernel_under_test


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_magnitudes_decode_to_the_magnitude_of_every_field(name):
    fmt = formats.FORMATS[name]
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 256, (512, fmt.row_bytes), generator=g, dtype=torch.uint8)
    rows[:256, fmt.nope_at:fmt.nope_at + fmt.nope] = torch.arange(256, dtype=torch.uint8)[:, None]
    got, want = fmt.decode(fmt.magnitudes(rows)), fmt.decode(rows).abs()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
    start, stop = fmt.pad
    assert torch.equal(fmt.magnitudes(rows)[:, start:stop], rows[:, start:stop])


@pytest.mark.parametrize("name", formats.NAMES)
def test_magnitudes_of_a_pool_keep_its_format_and_layout(name):
    g = torch.Generator().manual_seed(5)
    if name == formats.BF16:
        pool = torch.randn(3, 4, 8, generator=g).bfloat16()
        pool[0, 0, 0] = float("nan")
        got = formats.magnitudes(pool)
        assert got.dtype == torch.bfloat16 and torch.equal(got.isnan(), pool.isnan())
        assert torch.equal(got.nan_to_num(0), pool.abs().nan_to_num(0))
        return
    pt = formats.per_tensor(name)
    if pt is not None:  # every code: its sign cleared, a NaN code kept
        codes = torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8)
        got = formats.magnitudes(codes.view(pt.dtype))
        assert got.dtype == pt.dtype and got.shape == codes.shape
        want, value = pt.values(codes), pt.values(got.view(torch.uint8))
        assert torch.equal(value.isnan(), want.isnan())
        assert torch.equal(value.nan_to_num(7.0), want.abs().nan_to_num(7.0))
        return
    fmt = formats.FORMATS[name]
    recs = torch.randint(0, 256, (3, 4, fmt.row_bytes), generator=g, dtype=torch.uint8)
    pool = formats.to_pool(name, recs)
    got = formats.magnitudes(pool)
    assert formats.of_pool(got) == name and got.shape == pool.shape
    assert torch.equal(formats.records(got), fmt.magnitudes(recs))


def _logits(i) -> tuple[torch.Tensor, torch.Tensor]:
    att = i.attended()
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", att.q.double(), att.rows.double())
    return z, att.live.unsqueeze(-2).expand_as(z)


SOME = settings(max_examples=8, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

@pytest.mark.parametrize("kv_format", formats.NAMES)
@pytest.mark.parametrize("kernel_name", ["reference", "reference-v2"])
def test_far_below_zero_makes_valid_calls_with_most_logits_below_the_sentinels(
        kernel_name, kv_format):
    """Every made call is valid, inside the domain, its live logits at most 0 and its sinks
    below them; over the examples, nine in ten (token, head) pairs with a live row have
    every live logit below -1e20 (a zero in a row's chosen dim, or a spread of more than
    2^53 between a token's rows, keeps the rest above). One test, so that the share counts
    exactly its own examples, whatever worker runs it."""
    kernel = kernel_under_test(kernel_name)
    counts = [0, 0]  # (token, head) pairs with a live row, those below -1e20

    @SOME
    @given(data=st.data(), finite_sinks=st.booleans())
    def made_call(finite_sinks, data):
        case = draw_case(data, kernel, kv_format=kv_format)
        gen = torch.Generator().manual_seed(case.seed)
        i = far_below_zero(case.inputs, gen, finite_sinks=finite_sinks)
        contracts.of(i).validate(**i.kwargs())
        z, live = _logits(i)
        assert bool((z[live] <= 0).all())
        # the domain: |q_d k_d| * max(1, scale) for the query's one dim is the logit's size
        assert bool((z[live].abs() <= 2.0**TOP_LOG2).all())
        assert set(i.attn_sink.tolist()) <= set(torch.tensor(LOW_SINKS).tolist())  # as fp32
        assert not finite_sinks or bool(torch.isfinite(i.attn_sink).all())
        has = live.any(dim=-1)
        below = has & torch.where(live, z, float("-inf")).amax(dim=-1).lt(-1e20)
        counts[0] += int(has.sum())
        counts[1] += int(below.sum())

    made_call()
    has, below = counts
    assert has > 0 and below / has > 0.9, f"{below} of {has} (token, head) pairs below -1e20"
