"""Property 4: per-token derivation. Token `s` of an `S`-token call equals the same token
computed in a one-token call whose `seqused_kv` is the token's own derived length."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_equal_rows
from sparse_attn_conformance.conformance.v1.views import one_token_call
from sparse_attn_conformance.strategies.config import dim_values


@given(data=st.data())
def test_token_equals_its_one_token_call(kernel, data):
    S_values = dim_values("S", kernel.pre)
    if S_values is not None and (1 not in S_values or max(S_values) < 2):
        pytest.skip(f"not exercised: {kernel.name}'s preconditions exclude S = 1 or S >= 2")
    case = draw_case(data, kernel, min_S=2)
    with example(case, kernel):
        s = data.draw(st.integers(0, case.config.S - 1), label="token s")
        full = call(kernel, case.inputs)
        single_inputs = one_token_call(case.inputs, s)
        single = call(kernel, single_inputs)
        expect_equal_rows(full[:, s:s + 1], single, single_inputs,
                          what=f"token s={s} of the S={case.config.S} call",
                          against="the same token in a one-token call")
