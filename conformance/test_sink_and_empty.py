"""Property 7: sink semantics and empty tokens.

- With every sink at `-inf` the output is the plain softmax over the live rows.
- With `q = 0` every live logit is 0, so `o = sum_j v_j / (n + exp(sink))`: a closed form
  computed here without any softmax.
- A token with no live entry returns exactly 0, never NaN, whatever its sink.
- A token whose live logits all lie far below zero (down to -2^119, inside the domain) with
  its sink below them (-3e38 or -inf) is not empty: it returns the softmax of its rows,
  which a finite "minus infinity" sentinel above those logits (sglang's -1e20, vLLM's
  -1e30) turns into 0 (`conformance.logits.far_below_zero`).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches
from sparse_attn_conformance.conformance.logits import far_below_zero


@given(data=st.data())
def test_minus_inf_sink_is_plain_softmax(kernel, data):
    if kernel.pre.finite_sinks:
        pytest.skip(f"not exercised: {kernel.name} declares finite sinks only")
    case = draw_case(data, kernel)
    with example(case, kernel):
        i = case.inputs.replace(attn_sink=torch.full((case.config.H,), float("-inf")))
        att = i.attended()
        k = att.rows.double()
        z = i.softmax_scale * torch.einsum("...hd,...td->...ht", i.q.double(), k)
        z = torch.where(att.live.unsqueeze(-2), z, float("-inf"))
        p = torch.softmax(z, dim=-1).nan_to_num(0.0)  # an empty token: all -inf -> 0
        plain = torch.einsum("...ht,...td->...hd", p, att.values.double())
        expect_matches(call(kernel, i), i, expected=plain, against="the plain softmax")


@given(data=st.data())
def test_zero_query_closed_form(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        i = case.inputs.replace(q=torch.zeros_like(case.inputs.q))
        att = i.attended()
        n = att.live.sum(dim=-1).double()[..., None, None]
        total = att.values.double().sum(dim=-2)[..., None, :]
        sink = i.attn_sink.double()[:, None]
        closed = torch.where(n > 0, total / (n + torch.exp(sink)), 0.0)
        expect_matches(call(kernel, i), i, expected=closed, against="the closed form for q = 0")


@given(data=st.data())
def test_empty_tokens_return_exact_zero(kernel, data):
    case = draw_case(data, kernel, empty_token=True)
    i = case.inputs
    empty = ~i.attended().live.any(dim=-1)
    assert bool(empty.any()), "the strategy was asked for an empty token"
    with example(case, kernel):
        out = call(kernel, i)
        got = out[empty]
        assert bool((got == 0).all()), (
            f"tokens with no live entry {torch.nonzero(empty).tolist()} must return exactly 0; "
            f"got NaN: {bool(got.isnan().any())}, max |o| = {got.nan_to_num(1e30).abs().max():.4g}")


@given(data=st.data())
def test_logits_far_below_zero_still_weigh_their_rows(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel, transform=(
            "every pool value made its magnitude; per token and head, q zero but one dim at "
            "-2^e and softmax_scale a power of two, so every live logit lies at most 0 and "
            "mostly below -2^66; every attn_sink -3e38 or -inf (conformance.logits)")):
        gen = torch.Generator().manual_seed(case.seed + 11)
        i = far_below_zero(case.inputs, gen, finite_sinks=kernel.pre.finite_sinks)
        expect_matches(call(kernel, i), i, what="output with every live logit far below zero")
