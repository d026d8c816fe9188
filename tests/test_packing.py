"""Case packing (conformance/packing.py, harness.call_many): a packed call gives every part
what its own call gives, on drawn cases with garbage table entries, different B, TOPK and
table widths; parts that cannot share a call are refused or kept apart."""

import dataclasses

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance import harness, packing
from sparse_attn_conformance.contracts.v1 import Preconditions
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.torch import reference
from sparse_attn_conformance.strategies.formats import as_format
from sparse_attn_conformance.strategies.v1.cases import cases

SMALL = Preconditions(dims={"H": (2,), "D": (8,), "WIN": (4,), "BLOCK": (2,), "S": (1, 2),
                            "B": (1, 2, 3)})


@st.composite
def compatible_parts(draw):
    """2-4 cases drawn with one shared config apart from B; shared sink."""
    first = draw(cases(SMALL))
    parts = [first.inputs]
    for _ in range(draw(st.integers(1, 3))):
        B = draw(st.integers(1, 3))
        other = draw(cases(SMALL, config=dataclasses.replace(first.config, B=B)))
        parts.append(other.inputs.replace(attn_sink=first.inputs.attn_sink))
    return parts


@settings(max_examples=40, deadline=None)
@given(parts=compatible_parts())
def test_a_packed_call_gives_each_part_its_own_output(parts):
    packed = packing.pack(parts)
    assert packed.inputs.B == sum(p.B for p in parts)
    out = reference.sparse_attn(**packed.inputs.kwargs())
    for p, piece in zip(parts, packed.split(out), strict=True):
        want = reference.sparse_attn(**p.kwargs())
        torch.testing.assert_close(piece, want, equal_nan=True, rtol=0, atol=0)


def test_garbage_table_entries_stay_outside_the_packed_pool():
    table = torch.tensor([[0, 2, -1, 5, 2**31 - 1]], dtype=torch.int32)
    moved = packing._relabel(table, n_blocks=3, offset=4, total=10)
    assert moved.tolist() == [[4, 6, -1, 12, 2**31 - 1]]


@settings(max_examples=5, deadline=None)
@given(case=cases(SMALL))
def test_parts_that_cannot_share_a_call_are_refused_and_grouped_apart(case):
    a = case.inputs
    other_scale = a.replace(softmax_scale=a.softmax_scale + 1.0)
    with pytest.raises(ValueError, match="part 1 cannot share a call with part 0: "
                                         "softmax_scale differs"):
        packing.pack([a, other_scale])
    assert packing.groups([a, other_scale, other_scale], max_batch=64) == [[0], [1, 2]]
    assert packing.groups([a, a, a], max_batch=2 * a.B) == [[0, 1], [2]]


def test_per_tensor_fp8_parts_share_a_call_only_with_the_same_scales():
    parts = [as_format(p, "fp8_e4m3") for p in _two_parts()]
    same = parts[1].replace(ori_kv_scale=parts[0].ori_kv_scale,
                            cmp_kv_scale=parts[0].cmp_kv_scale)
    assert packing.compatible(parts[0], same) is None
    other = same.replace(cmp_kv_scale=same.cmp_kv_scale * 2)
    assert packing.compatible(parts[0], other) == ("cmp_kv_scale differs (one scale for each "
                                                   "pool of a call)")
    assert packing.compatible(parts[0], _two_parts()[1]).startswith("ori_kv.dtype differs")
    packed = packing.pack([parts[0], same])
    out = reference.sparse_attn(**packed.inputs.kwargs())
    for p, piece in zip([parts[0], same], packed.split(out), strict=True):
        torch.testing.assert_close(piece, reference.sparse_attn(**p.kwargs()), rtol=0, atol=0)


def _two_parts():
    first = find(cases(SMALL), lambda c: True)
    second = find(cases(SMALL, config=first.config), lambda c: True)
    return [first.inputs, second.inputs.replace(attn_sink=first.inputs.attn_sink)]


@settings(max_examples=5, deadline=None)
@given(case=cases(SMALL))
def test_call_many_packs_for_a_kernel_that_declares_it(case):
    calls = []

    def kernel(**kw):
        calls.append(kw["q"].shape[0])
        return reference.sparse_attn(**kw)

    kernel.max_packed_batch = 64
    k = KernelUnderTest.of("mine", kernel)
    a = case.inputs
    b = a.replace(q=torch.zeros_like(a.q))
    outs = harness.call_many(k, [a, b, a])
    assert calls == [3 * a.B]
    for part, out in zip([a, b, a], outs, strict=True):
        torch.testing.assert_close(out, reference.sparse_attn(**part.kwargs()).float(),
                                   equal_nan=True)
    calls.clear()
    harness.call_many(dataclasses.replace(k, max_packed_batch=0), [a, b])
    assert calls == [a.B, a.B]
