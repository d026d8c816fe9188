"""The names and descriptions of the v2 corners (`strategies.v2.coverage`), apart from the
code that detects them so that `strategies.v1.coverage` can list them without importing it."""

from __future__ import annotations

# FP32_EXACT: positions at or above it make an fp32 cut `trunc((p + 1) * (1 / r))` inexact
# (P4); BIG_ID: a window row (flat `ori_kv` row) or block id at or past it needs more than
# 16 bits
from sparse_attn_conformance.strategies.edges import (
    BIG_ID,
    FP32_EXACT,
    INT32_MAX,
    LAUNCH_LIMIT,
    WIDE_COLUMN,
)

#: name -> what a v2 case must contain to hit the corner (shown in the report).
V2_CORNERS: dict[str, str] = {
    "cut_divisible": "compress_ratio r > 1 and a token with pos + 1 divisible by r",
    "cut_not_divisible": "a compress_ratio r and a token with pos + 1 not divisible by r",
    "no_cut": "compress_ratio None (the caller pre-cut the compressed lists)",
    "distinct_positions": "a batch whose tokens are not at consecutive positions start + s",
    "window_straddles_pages": "a window whose consecutive live lanes cross into a physical "
                              "page that is not the next one",
    "shared_pool_interleaved": "two batches' window pages interleaved in one ori pool",
    "garbage_table": "an out-of-pool id in a block-table entry no live slot uses",
    "slot_at_bound": "a compressed id exactly at the cut (pos + 1) // r",
    "garbage_columns": "an idx_topk column >= index_topk holding an id that would be live",
    "empty_token": "a token with no live lane at all",
    "long_context": "a live compressed slot at or above 2^15 = 32768",
    "far_position": f"a position at or above 2^24 = {FP32_EXACT} (an fp32 cut is inexact)",
    "extreme_values": "a live logit above 88 in magnitude, a q.k partial sum or value sum "
                      "above fp16's 65504, or a sink beyond +-1e30",
    "strided": "a tensor argument that is not contiguous",
    "dominant_key": "one live key carries most of a token's softmax weight",
    "large_dim": "a dimension above the seed config (B>64, S>2, H>64, D>512, WIN>128, "
                 "IDX_TOPK>512 or BLOCK>128)",
    "off_tile": "H, D, TOPK or BLOCK not a multiple of 16",
    "nonpositive_scale": "softmax_scale <= 0",
    "int32_position": f"a position within 2^8 of INT32_MAX = {INT32_MAX} (pos + 1 overflows "
                      f"int32 at the top)",
    "inexact_cut": "a compressed id between a token's cut and the cut computed in fp32, "
                   "trunc(fp32(pos + 1) * fp32(1 / r)), where the two differ",
    "wide_table": f"a live compressed slot in a cmp_block_table column at or past 2^12 = "
                  f"{WIDE_COLUMN}",
    "big_block_id": f"a live compressed slot in a physical block with id at or past 2^16 = "
                    f"{BIG_ID}",
    "big_window_row": f"a live window lane naming a flat ori_kv row at or past 2^16 = {BIG_ID}",
    "many_heads": f"H past a launch-grid axis' {LAUNCH_LIMIT} programs",
    "many_tokens": f"T = B*S past a launch-grid axis' {LAUNCH_LIMIT} programs",
}
