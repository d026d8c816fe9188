"""v2 calls made from other v2 calls: everything but one token changed, lanes permuted,
physical blocks relabelled. Each keeps the live multiset of the tokens it promises to keep."""

from __future__ import annotations

import torch

from contracts import formats
from contracts.v2 import Inputs, live_lanes
from strategies.pools import relabel_blocks


def others_changed(inputs: Inputs, t: int, gen: torch.Generator) -> Inputs:
    """`inputs` with everything token `t` does not read changed: every other token's query,
    position, window row and index row, and every pool row no live lane of `t` addresses.
    Other tokens' new lanes are drawn from rows and slots that stay valid (rows inside the
    pool, slots whose table entry is a real block) so the call stays within the contract."""
    T, block = inputs.T, inputs.BLOCK
    others = torch.arange(T) != t
    q = inputs.q.clone()
    q[others] = torch.flip(inputs.q, dims=[0])[others] * -1  # other tokens' queries
    live_w, live_c = live_lanes(inputs)
    # other tokens' positions: anything up to the largest position of the call
    top = int(inputs.position_ids.max()) + 1
    pos = inputs.position_ids.clone()
    pos[others, 0] = torch.randint(0, top, (T - 1,), generator=gen, dtype=torch.int32)
    # other tokens' window rows: any rows of the pool, or empty lanes
    n_rows = inputs.ori_kv.shape[0] * block
    win = torch.randint(-2, n_rows, inputs.window_swa_indices.shape, generator=gen,
                        dtype=torch.int32)
    win[t] = inputs.window_swa_indices[t]
    # other tokens' index rows: slots whose block is real in their batch's table, cut or not
    idx = inputs.idx_topk.clone()
    table = inputs.cmp_block_table.to(torch.int64)
    real = (table >= 0) & (table < inputs.cmp_kv.shape[0])
    n = inputs.index_topk
    if n:
        # all tokens at once (an edge case has 2^16): per token, n columns drawn among its
        # batch's real ones (listed first by a stable sort), a row in each
        b = inputs.batch_of_token
        count = real.sum(dim=1)[b][:, None]
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        k = (torch.rand((T, n), generator=gen) * count).long().clamp(max=table.shape[1] - 1)
        slot = order[b[:, None], k] * block + torch.randint(block, (T, n), generator=gen)
        # every slot addresses a real block, so whichever the token's new cut keeps is
        # valid; some lanes empty
        empty = (torch.rand((T, n), generator=gen) < 0.25) | (count == 0)
        idx[others, :n] = torch.where(empty, -1, slot).to(torch.int32)[others]
    # pool rows token t does not read: fresh values of the same scale
    keep_ori = torch.zeros(n_rows, dtype=torch.bool)
    keep_ori[inputs.window_swa_indices[t].to(torch.int64)[live_w[t]]] = True
    c = inputs.idx_topk[t, :inputs.index_topk].to(torch.int64)[live_c[t]]
    keep_cmp = torch.zeros(inputs.cmp_kv.shape[0] * block, dtype=torch.bool)
    keep_cmp[table[t // inputs.S, c // block] * block + c % block] = True
    ori = _refill(inputs.ori_kv, keep_ori, gen)
    cmp = _refill(inputs.cmp_kv, keep_cmp, gen)
    return inputs.replace(q=q, position_ids=pos, window_swa_indices=win, idx_topk=idx,
                          ori_kv=ori, cmp_kv=cmp)


def _refill(pool: torch.Tensor, keep: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`pool` with the rows outside `keep` (flat) replaced by a permutation of the pool's
    own rows, negated: new values of the same magnitudes (a byte pool's records, permuted:
    their codes and scales as drawn)."""
    name = formats.of_pool(pool)
    if name != formats.BF16:
        recs = formats.records(pool).reshape(-1, pool.shape[-1])
        perm = torch.randperm(recs.shape[0], generator=gen)
        out = torch.where(keep[:, None], recs, recs[perm])
        return formats.to_pool(name, out.reshape(pool.shape))
    flat = pool.reshape(-1, pool.shape[-1])
    perm = torch.randperm(flat.shape[0], generator=gen)
    out = torch.where(keep[:, None], flat, -flat[perm])
    return out.reshape(pool.shape).contiguous()


def lanes_permuted(inputs: Inputs, gen: torch.Generator) -> Inputs:
    """Each token's window lanes permuted, and its first `IDX_TOPK` compressed columns
    permuted among themselves (columns past `IDX_TOPK` are not lanes and stay)."""
    w = inputs.window_swa_indices
    w = torch.gather(w, -1, torch.argsort(torch.rand(w.shape, generator=gen), dim=-1))
    idx = inputs.idx_topk.clone()
    n = inputs.index_topk
    if n:
        head = idx[:, :n]
        idx[:, :n] = torch.gather(head, -1, torch.argsort(torch.rand(head.shape, generator=gen),
                                                          dim=-1))
    return inputs.replace(window_swa_indices=w.contiguous(), idx_topk=idx)


def blocks_relabelled(inputs: Inputs, gen: torch.Generator) -> Inputs:
    """Both pools' physical blocks moved to new labels, with the window rows and the
    compressed table rewritten to match: the same rows under new addresses."""
    block = inputs.BLOCK
    n_ori = inputs.ori_kv.shape[0]
    perm = torch.randperm(n_ori, generator=gen)
    ori = torch.empty_like(inputs.ori_kv)
    ori[perm] = inputs.ori_kv
    w = inputs.window_swa_indices.to(torch.int64)
    moved = perm[(w // block).clamp(0, n_ori - 1)] * block + w % block
    w = torch.where(w >= 0, moved, w).to(torch.int32)
    cmp, table = relabel_blocks(inputs.cmp_kv, inputs.cmp_block_table,
                                torch.randperm(inputs.cmp_kv.shape[0], generator=gen))
    return inputs.replace(ori_kv=ori, window_swa_indices=w, cmp_kv=cmp, cmp_block_table=table)
