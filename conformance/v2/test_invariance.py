"""v2 properties: invariance. Live lanes are a multiset, so permuting a token's window lanes
and its compressed lanes changes nothing; physical block labels are only labels, so moving
both pools' blocks (and rewriting window rows and the compressed table) changes nothing
(upstream's #779 assumed the identity table, #919 consecutive window rows)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call_many, example, expect_equal_rows
from sparse_attn_conformance.conformance.v2.views import blocks_relabelled, lanes_permuted


@given(data=st.data())
def test_lane_order_does_not_matter(kernel, data):
    if kernel.pre.canonical_windows or kernel.pre.canonical_rows:
        pytest.skip(f"not exercised: {kernel.name} reads canonical windows or rows only")
    case = draw_case(data, kernel)
    with example(case, kernel):
        permuted = lanes_permuted(case.inputs, torch.Generator().manual_seed(case.seed + 1))
        out_permuted, out = call_many(kernel, [permuted, case.inputs])
        expect_equal_rows(out_permuted, out, case.inputs,
                          what="output with each token's lanes permuted",
                          against="the output with the original lane order")


@given(data=st.data())
def test_physical_block_labels_do_not_matter(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        moved = blocks_relabelled(case.inputs, torch.Generator().manual_seed(case.seed + 2))
        out_moved, out = call_many(kernel, [moved, case.inputs])
        expect_equal_rows(out_moved, out, case.inputs,
                          what="output with the physical blocks relabelled",
                          against="the output with the original labels")
