"""Property 8: determinism and inputs left unmodified. Two calls on the same inputs return
identical bits, and the kernel writes into none of its arguments."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example


@given(data=st.data())
def test_two_calls_give_identical_bits(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        first, second = call(kernel, case.inputs), call(kernel, case.inputs)
        same = torch.equal(first, second) or bool(
            ((first == second) | (first.isnan() & second.isnan())).all())
        diff = (first - second).abs().nan_to_num(float("inf")).max().item()
        assert same, f"two calls on identical inputs differ (max |difference| {diff:.4g})"


@given(data=st.data())
def test_inputs_are_not_modified(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        args = case.inputs.kwargs()
        call(kernel, case.inputs, args=args)
        original = case.inputs.kwargs()
        changed = [name for name, value in args.items() if isinstance(value, torch.Tensor)
                   and not torch.equal(value, original[name])]
        assert not changed, f"the kernel modified its arguments {changed} in place"
