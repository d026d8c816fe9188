"""Calls made from other calls: one token of every batch on its own, some batches on their
own, and one token (with its batch's cache) from call A beside everything else from call B."""

from __future__ import annotations

import torch

from contracts.v1 import Inputs, derived_lengths


def one_token_call(inputs: Inputs, s: int) -> Inputs:
    """Every batch's token `s` alone (`S = 1`), with `seqused_kv` its derived length
    (clamped at 0, which gives the same empty token)."""
    seq_used, _, _ = derived_lengths(inputs.seqused_kv, inputs.S, inputs.window_size)
    return inputs.replace(
        q=inputs.q[:, s:s + 1].clone(),
        topk_idxs=inputs.topk_idxs[:, s:s + 1].clone(),
        seqused_kv=seq_used[:, s].clamp(min=0).to(inputs.seqused_kv.dtype),
    )


def batch_view(inputs: Inputs, idx: list[int]) -> Inputs:
    """Batches `idx` alone (the pools stay whole)."""
    return inputs.replace(q=inputs.q[idx], topk_idxs=inputs.topk_idxs[idx],
                          seqused_kv=inputs.seqused_kv[idx],
                          ori_block_table=inputs.ori_block_table[idx],
                          cmp_block_table=inputs.cmp_block_table[idx])


def widen(t: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    """`t` with its last dimension widened to `width` by `fill` entries."""
    if t.shape[-1] == width:
        return t
    pad = torch.full((*t.shape[:-1], width - t.shape[-1]), fill, dtype=t.dtype)
    return torch.cat([t, pad], dim=-1)


def mix(a: Inputs, b: Inputs, batch: int, token: int, rows_too: bool) -> Inputs:
    """Batch `batch` from `a` (its lengths, tables and pool rows); in it, token `token` from
    `a` and the other tokens' queries (and, if `rows_too`, index rows) from `b`; every other
    batch wholly from `b`. Both calls must share B, S, H, D, WIN, TOPK and BLOCK."""
    cols = max(a.cmp_block_table.shape[1], b.cmp_block_table.shape[1])
    # extra columns point at block 0: in range, and never read (past every live slot)
    a_cmp_t, b_cmp_t = widen(a.cmp_block_table, cols, 0), widen(b.cmp_block_table, cols, 0)
    n_ori, n_cmp = a.ori_kv.shape[0], a.cmp_kv.shape[0]
    ori_t = b.ori_block_table + n_ori
    cmp_t = b_cmp_t + n_cmp
    ori_t[batch], cmp_t[batch] = a.ori_block_table[batch], a_cmp_t[batch]
    q = b.q.clone()
    q[batch, token] = a.q[batch, token]
    rows = b.topk_idxs.clone()
    if rows_too:
        rows[batch, token] = a.topk_idxs[batch, token]
    else:
        rows[batch] = a.topk_idxs[batch]
    seqused = b.seqused_kv.clone()
    seqused[batch] = a.seqused_kv[batch]
    sink = a.attn_sink  # the sink is per head, shared by all tokens
    return a.replace(
        q=q, topk_idxs=rows, seqused_kv=seqused, attn_sink=sink,
        ori_kv=torch.cat([a.ori_kv, b.ori_kv]), ori_block_table=ori_t,
        cmp_kv=torch.cat([a.cmp_kv, b.cmp_kv]), cmp_block_table=cmp_t,
    )
