"""Telling the call a kernel got (conformance/calls.py): every argument, the ones a
property changed marked bit for bit (NaN equal to itself, -0 not equal to 0), small tensors
whole, large ones by their first values and range, byte pools by their format."""

import torch

from sparse_attn_conformance.conformance import calls
from sparse_attn_conformance.contracts import formats


def test_changed_is_bit_for_bit():
    a = torch.tensor([0.0, float("nan"), 1.0])
    assert calls.changed({"x": a}, {"x": a.clone()}) == []
    assert calls.changed({"x": a}, {"x": torch.tensor([-0.0, float("nan"), 1.0])}) == ["x"]
    assert calls.changed({"x": a}, {"x": a.double()}) == ["x"]
    assert calls.changed({"s": 0.5, "w": 3}, {"s": 0.5, "w": 4}) == ["w"]


def test_describe_marks_what_the_property_changed():
    drawn = {"q": torch.ones(1, 2, 2, dtype=torch.bfloat16),
             "attn_sink": torch.tensor([0.25, -1.0]), "softmax_scale": 0.5}
    got = dict(drawn, attn_sink=torch.full((2,), float("-inf")))
    lines = calls.describe(got, drawn).splitlines()
    assert lines[0] == "the property changed attn_sink from the drawn case"
    assert lines[1] == "   q: bfloat16 [1, 2, 2] = [1, 1, 1, 1]"
    assert lines[2] == " * attn_sink: float32 [2] = [-inf, -inf]"
    assert lines[3] == "   softmax_scale: 0.5"
    assert lines[-1] == " (* differs from the drawn case)"
    told = calls.describe(got, drawn, transform="every attn_sink set to -inf")
    assert told.splitlines()[0] == ("the property's change to the drawn case: every "
                                    "attn_sink set to -inf")
    assert calls.describe(drawn, drawn).splitlines()[0] == "the drawn case's arguments, unchanged"


def test_large_tensors_and_byte_pools_are_summarised():
    big = torch.arange(100, dtype=torch.float32)
    big[5] = float("nan")
    line = calls.describe({"x": big}).splitlines()[1]
    assert line.startswith("   x: float32 [100] = [0, 1, 2, 3, 4, nan, 6, 7, ...]")
    assert line.endswith("finite in [0, 99], 1 non-finite")
    ids = calls.describe({"t": torch.arange(40, dtype=torch.int32)}).splitlines()[1]
    assert ids == "   t: int32 [40] = [0, 1, 2, 3, 4, 5, 6]...; in [0, 39]"
    pool = torch.zeros(2, 4, formats.FORMATS["fp8_ds_v4"].row_bytes, dtype=torch.uint8)
    assert "(fp8_ds_v4 rows" in calls.describe({"ori_kv": pool})
