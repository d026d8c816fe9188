"""The corners of the input domain a drawn case can hit, named once.

Each corner is a region of the contract's domain where a class of kernel bugs lives (a tile
remainder, a narrow index, an overflowing accumulator...). `corners(case)` says which ones a
case hits; the suite counts them per property (the report's coverage table) and tells
Hypothesis (`hypothesis.event`), so a run shows whether it reached every corner at all.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v1 import derived_lengths, live_mask
from sparse_attn_conformance.strategies.edges import (
    BIG_ID,
    FP32_EXACT,
    INT32_MAX,
    LAUNCH_LIMIT,
    WIDE_COLUMN,
)

#: Beyond the seed's own config (contract section 4): B=64, S=2, H=64, D=512, WIN=128,
#: IDX_TOPK=512, BLOCK=128. A dimension above these is "large".
SEED_CONFIG = {"B": 64, "S": 2, "H": 64, "D": 512, "WIN": 128, "IDX_TOPK": 512, "BLOCK": 128}

#: Slot indices at or above this are "long context" (an int16 index wraps there).
LONG_CONTEXT = 2**15
#: |logit| above this overflows an unshifted fp32 exp (exp(88.7) = fp32 max).
EXP_OVERFLOW = 88.0
#: |value| above this overflows an fp16 accumulator.
FP16_MAX = 65504.0
#: Live entries in one row above this are "many" (a fixed-size candidate buffer overflows).
MANY_LIVE = 1024

#: name -> what a case must contain to hit the corner (shown in the report).
V1_CORNERS: dict[str, str] = {
    "large_dim": "a dimension above the seed config (B>64, S>2, H>64, D>512, WIN>128, "
                 "IDX_TOPK>512 or BLOCK>128)",
    "off_tile": "H, D, TOPK or BLOCK not a multiple of 16",
    "long_context": f"a live slot at or above 2^15 = {LONG_CONTEXT}",
    "extreme_values": f"a live logit above {EXP_OVERFLOW:g} in magnitude, a q.k partial sum or "
                      f"value sum above fp16's {FP16_MAX:g}, or a sink beyond +-1e30",
    "nonpositive_scale": "softmax_scale <= 0",
    "strided": "a tensor argument that is not contiguous",
    "garbage_table": "an out-of-pool id in a block-table entry no live slot uses",
    "wrapped_ring": "a window ring that has wrapped (start_pos + S > WIN)",
    "empty_token": "a token with no live entry",
    "many_live": f"a token with more than {MANY_LIVE} live entries",
    "dominant_key": "one live key carries most of a token's softmax weight",
    "int32_edge": f"a seqused_kv within 2^8 of INT32_MAX = {INT32_MAX} (seqused + 1 + s "
                  f"overflows int32 at the top)",
    "fp32_inexact": f"a derived length or a live index above 2^24 = {FP32_EXACT} (fp32 no "
                    f"longer holds every integer)",
    "wide_table": f"a live slot in a block-table column at or past 2^12 = {WIDE_COLUMN}",
    "big_block_id": f"a live slot in a physical block with id at or past 2^16 = {BIG_ID}",
    "many_heads": f"H past a launch-grid axis' {LAUNCH_LIMIT} programs",
    "many_tokens": f"B*S past a launch-grid axis' {LAUNCH_LIMIT} programs",
}


def corners(case) -> list[str]:
    """The corners a v1 case (`strategies.v1.cases.Case`) hits, in `V1_CORNERS` order."""
    c, i = case.config, case.inputs
    hit = set()
    if any(getattr(c, k) > v for k, v in SEED_CONFIG.items()):
        hit.add("large_dim")
    if any(n % 16 for n in (c.H, c.D, c.TOPK, c.BLOCK)):
        hit.add("off_tile")
    live = live_mask(i.topk_idxs, i.seqused_kv, c.WIN)
    e = i.topk_idxs.to(torch.int64)
    if bool((live & (e - c.WIN >= LONG_CONTEXT)).any()):
        hit.add("long_context")
    if case.extremes or bool((i.attn_sink.abs() > 1e30).any()):
        hit.add("extreme_values")
    if c.softmax_scale <= 0:
        hit.add("nonpositive_scale")
    if any(v != "contiguous" for v in i.layout.values()):
        hit.add("strided")
    if _garbage_table(i):
        hit.add("garbage_table")
    if case.start_pos is not None and any(p + c.S > c.WIN for p in case.start_pos):
        hit.add("wrapped_ring")
    if bool((~live.any(dim=-1)).any()):
        hit.add("empty_token")
    if live.numel() and int(live.sum(dim=-1).max()) > MANY_LIVE:
        hit.add("many_live")
    if case.dominant:
        hit.add("dominant_key")
    hit |= _integer_edges(i, live, e)
    return [name for name in V1_CORNERS if name in hit]


def _integer_edges(i, live: torch.Tensor, e: torch.Tensor) -> set[str]:
    """The corners of integers at the edge of their types and of launch-grid limits."""
    hit = set()
    seqused = i.seqused_kv.to(torch.int64)
    if bool((seqused > INT32_MAX - 2**8).any()):
        hit.add("int32_edge")
    seq_used, _, _ = derived_lengths(i.seqused_kv, i.S, i.window_size)
    if bool((seq_used > FP32_EXACT).any()) or bool((live & (e > FP32_EXACT)).any()):
        hit.add("fp32_inexact")
    is_cmp = live & (e >= i.window_size)
    slot = torch.where(is_cmp, e - i.window_size, torch.where(live, e, 0))
    col = slot // i.BLOCK
    if bool((live & (col >= WIDE_COLUMN)).any()):
        hit.add("wide_table")
    table = i.cmp_block_table.to(torch.int64)
    b = torch.arange(i.B)[:, None, None].expand_as(col)
    blk = table[b, col.clamp(max=table.shape[1] - 1)]
    if bool((is_cmp & (blk >= BIG_ID)).any()):
        hit.add("big_block_id")
    if i.H > LAUNCH_LIMIT:
        hit.add("many_heads")
    if i.B * i.S > LAUNCH_LIMIT:
        hit.add("many_tokens")
    return hit


def _garbage_table(i) -> bool:
    _, wv, cv = derived_lengths(i.seqused_kv, i.S, i.window_size)
    block = i.BLOCK
    for table, n, used in ((i.ori_block_table, i.ori_kv.shape[0], -(-wv[:, -1] // block)),
                           (i.cmp_block_table, i.cmp_kv.shape[0], -(-cv[:, -1] // block))):
        cols = torch.arange(table.shape[1])[None, :]
        unused = cols >= used[:, None]
        bad = (table < 0) | (table >= n)
        if bool((unused & bad).any()):
            return True
    return False
