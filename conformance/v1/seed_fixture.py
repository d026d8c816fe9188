"""Hand-built calls: the seed's causal regression fixture (contract section 4)."""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, Preconditions
from sparse_attn_conformance.strategies.config import dim_values

#: The seed's values, used wherever the kernel's preconditions allow them.
SEED_DIMS = {"B": 1, "S": 2, "H": 64, "D": 512, "WIN": 128, "IDX_TOPK": 512, "BLOCK": 128}
LARGE = 8.0


def _pick(name: str, pre: Preconditions, at_least: int = 1) -> int | None:
    want = SEED_DIMS[name]
    declared = dim_values(name, pre)
    if declared is None:
        return want
    allowed = [v for v in declared if v >= at_least]
    if not allowed:
        return None
    return want if want in allowed else min(allowed, key=lambda v: abs(v - want))


def causal_regression(pre: Preconditions) -> Inputs | None:
    """Window only, `seqused_kv = WIN`: token 0 has `seq_used = WIN - 1`, window slot
    `WIN - 1` holds a large row (8.0) and every other row 0, and `q = 1`. A kernel that
    lets token 0 attend slot `WIN - 1` returns about 8 in every head instead of 0.

    The seed's own shape (H=64, D=512, WIN=128, BLOCK=128) wherever the kernel's
    preconditions allow it, else the nearest allowed; random finite sinks (a fixed seed).
    None when the kernel's preconditions exclude every shape the fixture needs.
    """
    dims = {n: _pick(n, pre, at_least=2 if n in ("S", "WIN") else 1) for n in SEED_DIMS}
    if None in dims.values():
        return None
    B, S, H, D, WIN, IDX_TOPK, BLOCK = (dims[n] for n in ("B", "S", "H", "D", "WIN",
                                                          "IDX_TOPK", "BLOCK"))
    n_win_blocks = -(-WIN // BLOCK)
    ori_kv = torch.zeros(B * n_win_blocks, BLOCK, D, dtype=torch.bfloat16)
    # batch b's window blocks in reverse physical order, so the table matters
    table = torch.arange(B * n_win_blocks).flip(0).reshape(B, n_win_blocks).to(torch.int32)
    for b in range(B):
        slot = WIN - 1
        ori_kv[table[b, slot // BLOCK], slot % BLOCK] = LARGE
    row = list(range(WIN)) + [-1] * IDX_TOPK
    sinks = torch.randn(H, generator=torch.Generator().manual_seed(58894)) * 2.0
    return Inputs(
        q=torch.ones(B, S, H, D, dtype=torch.bfloat16),
        ori_kv=ori_kv,
        ori_block_table=table,
        cmp_kv=torch.zeros(1, BLOCK, D, dtype=torch.bfloat16),
        cmp_block_table=torch.zeros(B, 1, dtype=torch.int32),
        topk_idxs=torch.tensor(row, dtype=torch.int32).repeat(B, S, 1),
        attn_sink=sinks,
        seqused_kv=torch.full((B,), WIN, dtype=torch.int32),
        softmax_scale=D ** -0.5,
        window_size=WIN,
    )
