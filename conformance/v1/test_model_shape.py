"""The model's own attention shape (contract section 4: B=64, S=2, H=64, D=512, WIN=128,
IDX_TOPK=512, BLOCK=128), with random sinks, rows and lengths: the kernel matches the
reference. Its examples cost seconds each (tens of seconds on the simulated pypto kernel),
so it runs in the `ci` and `nightly` profiles only, four examples; the other properties
reach these sizes one at a time. A kernel that takes the attention shape
but not B=64 (`Preconditions.shapes`) gets it with B drawn from its own values."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call, example, expect_matches
from sparse_attn_conformance.plugin import profiles
from sparse_attn_conformance.strategies.config import dim_values

MODEL_SHAPE = {"B": 64, "S": 2, "H": 64, "D": 512, "WIN": 128, "IDX_TOPK": 512, "BLOCK": 128}
#: The profiles that run it.
PROFILES = ("ci", "nightly")


def model_shape_for(kernel) -> dict | None:
    """The model's shape as the kernel takes it: whole, or without B; None if neither."""
    if kernel.pre.accepts(MODEL_SHAPE):
        return dict(MODEL_SHAPE)
    attention = {k: v for k, v in MODEL_SHAPE.items() if k != "B"}
    return attention if kernel.pre.accepts(attention) else None


@settings(max_examples=4)
@given(data=st.data())
def test_model_attention_shape_matches_reference(kernel, data):
    if profiles.current() not in PROFILES:
        pytest.skip(f"runs in the {' and '.join(PROFILES)} profiles (seconds an example)")
    shape = model_shape_for(kernel)
    if shape is None:
        excluded = [n for n, v in MODEL_SHAPE.items()
                    if dim_values(n, kernel.pre) is not None
                    and v not in dim_values(n, kernel.pre)]
        pytest.skip(f"not exercised: {kernel.name}'s preconditions exclude the model's {excluded}")
    case = draw_case(data, kernel, fixed=shape)
    with example(case, kernel):
        expect_matches(call(kernel, case.inputs), case.inputs)
