"""Property 6: invariance. Live entries are a multiset, so permuting a token's index row
changes nothing; and physical block labels are only labels, so relabelling the blocks of
both pools (moving the data with them) changes nothing."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call_many, example, expect_equal_rows
from sparse_attn_conformance.strategies.pools import relabel_blocks


@given(data=st.data())
def test_index_row_order_does_not_matter(kernel, data):
    if kernel.pre.canonical_rows:
        pytest.skip(f"not exercised: {kernel.name} reads canonical rows only")
    case = draw_case(data, kernel)
    with example(case, kernel):
        gen = torch.Generator().manual_seed(case.seed + 1)
        rows = case.inputs.topk_idxs
        perm = torch.argsort(torch.rand(rows.shape, generator=gen), dim=-1)
        permuted = case.inputs.replace(topk_idxs=torch.gather(rows, -1, perm))
        out_permuted, out = call_many(kernel, [permuted, case.inputs])
        expect_equal_rows(out_permuted, out, case.inputs,
                          what="output with each index row permuted",
                          against="the output with the original rows")


@given(data=st.data())
def test_physical_block_labels_do_not_matter(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        gen = torch.Generator().manual_seed(case.seed + 2)
        i = case.inputs
        ori_kv, ori_t = relabel_blocks(i.ori_kv, i.ori_block_table,
                                       torch.randperm(i.ori_kv.shape[0], generator=gen))
        cmp_kv, cmp_t = relabel_blocks(i.cmp_kv, i.cmp_block_table,
                                       torch.randperm(i.cmp_kv.shape[0], generator=gen))
        moved = i.replace(ori_kv=ori_kv, ori_block_table=ori_t, cmp_kv=cmp_kv,
                          cmp_block_table=cmp_t)
        out_moved, out = call_many(kernel, [moved, i])
        expect_equal_rows(out_moved, out, i,
                          what="output with the physical blocks relabelled",
                          against="the output with the original labels")
