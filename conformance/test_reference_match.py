"""Property 1: the kernel matches the torch reference within the documented tolerance
(attention/compare.py), on model rows and adversarial ones."""

from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches


@given(data=st.data())
def test_matches_reference(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        expect_matches(call(kernel, case.inputs), case.inputs)


@given(data=st.data())
def test_matches_reference_on_model_rows(kernel, data):
    """The inputs the SWA, HCA and CSA paths produce, on their own: a kernel that fails
    only here fails in production."""
    case = draw_case(data, kernel, adversarial=False)
    with example(case, kernel):
        expect_matches(call(kernel, case.inputs), case.inputs)
