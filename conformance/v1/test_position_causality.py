"""Position-level causality (a property about the contract, reported apart from kernel
conformance): no token may attend a row written at a later position than its own.

Rows are modelled from the start positions (conformance/v1/positions.py). For each token `s`
every row holding a later position of its batch (or nothing written) is poisoned; the
token's output must not change. The derived length protects by count, not by position:
once the window ring has wrapped, an earlier token of a multi-token call keeps window slots
that later tokens of the same call overwrote (contract section 4). That case is a strict
expected failure, so it flips when the contract is fixed; docs/position-causality.md holds
its shrunk counterexample.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call_many, example, expect_equal_rows
from sparse_attn_conformance.conformance.v1.poison import poison_pool
from sparse_attn_conformance.conformance.v1.positions import later_rows, ring_wrapped
from sparse_attn_conformance.conformance.v1.views import one_token_call
from sparse_attn_conformance.kernels.registry import kernel_under_test


def check_no_later_position(kernel, case):
    i = case.inputs
    dirty = []
    for s in range(i.S):
        ori_later, cmp_later = later_rows(i, case.start_pos, case.config.ratio, s)
        dirty.append(i.replace(ori_kv=poison_pool(i.ori_kv, ~ori_later),
                               cmp_kv=poison_pool(i.cmp_kv, ~cmp_later)))
    clean, *outs = call_many(kernel, [i, *dirty])
    for s, out in enumerate(outs):
        expect_equal_rows(out[:, s:s + 1], clean[:, s:s + 1], one_token_call(i, s),
                          what=f"token s={s} with every row of a later position poisoned",
                          against="the same token with clean rows")


@given(data=st.data())
def test_no_later_position_before_the_ring_wraps(kernel, data):
    case = draw_case(data, kernel, adversarial=False, ring="unwrapped")
    with example(case, kernel):
        check_no_later_position(kernel, case)


@pytest.mark.contract_finding
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "contract finding: with per-batch seqused_kv, once the window ring has wrapped an earlier "
    "token of a multi-token call attends the window slot a later token overwrote "
    "(docs/position-causality.md)"))
@given(data=st.data())
def test_no_later_position_after_the_ring_wraps(data):
    """Run on the reference whatever the kernel under test: it is the contract that fails,
    and any conforming kernel fails it the same way."""
    kernel = kernel_under_test("reference")
    case = draw_case(data, kernel, adversarial=False, min_S=2, ring="wrapped")
    assert ring_wrapped(case.start_pos, case.config.S, case.config.WIN)  # drawn so
    with example(case, kernel):
        check_no_later_position(kernel, case)
