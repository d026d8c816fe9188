"""Building a call out of two: one token (and its batch's cache) from call A, everything
else from call B, over one pair of concatenated pools."""

from __future__ import annotations

import torch

from kernels.contract import Inputs


def _widen(table: torch.Tensor, cols: int) -> torch.Tensor:
    """Extra columns point at block 0: in range, and never read (past every live slot)."""
    pad = torch.zeros(table.shape[0], cols - table.shape[1], dtype=table.dtype)
    return torch.cat([table, pad], dim=1)


def mix(a: Inputs, b: Inputs, batch: int, token: int, rows_too: bool) -> Inputs:
    """Batch `batch` from `a` (its lengths, tables and pool rows); in it, token `token` from
    `a` and the other tokens' queries (and, if `rows_too`, index rows) from `b`; every other
    batch wholly from `b`. Both calls must share B, S, H, D, WIN, TOPK and BLOCK."""
    cols = max(a.cmp_block_table.shape[1], b.cmp_block_table.shape[1])
    a_cmp_t, b_cmp_t = _widen(a.cmp_block_table, cols), _widen(b.cmp_block_table, cols)
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
