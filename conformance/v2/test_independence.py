"""v2 property: per-token independence. A token's output depends only on its own query,
position, window row and index row, its batch's `cmp_block_table` and the rows it
addresses: changing every other token's query, position and lanes, and every pool row the
token does not read, changes nothing for it (upstream's #516 mixed tokens' outputs, #634
leaked padded token rows)."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from sparse_attn_conformance.conformance.draw import draw_case
from sparse_attn_conformance.conformance.harness import call_many, example, expect_equal_rows
from sparse_attn_conformance.conformance.v2.views import others_changed


@given(data=st.data())
def test_other_tokens_do_not_matter(kernel, data):
    case = draw_case(data, kernel)
    with example(case, kernel):
        i = case.inputs
        t = data.draw(st.integers(0, i.T - 1), label="token")
        changed = others_changed(i, t, torch.Generator().manual_seed(case.seed + 3))
        out_changed, out = call_many(kernel, [changed, i])
        one = slice(t, t + 1)
        token_alone = i.replace(q=i.q[one], window_swa_indices=i.window_swa_indices[one],
                                idx_topk=i.idx_topk[one], position_ids=i.position_ids[one],
                                cmp_block_table=i.cmp_block_table[t // i.S:t // i.S + 1],
                                seq_per_batch=1)
        expect_equal_rows(out_changed[one], out[one], token_alone,
                          what=f"token t={t} with every other token and unread row changed",
                          against="the same token in the original call")
