"""The corners of the v2 input domain a drawn case can hit (`V2_CORNERS` in
strategies/v2/corners.py): the compressed cut at and beside multiples of the ratio, no cut,
tokens of a batch at unrelated positions, windows across non-adjacent pages of a shared
pool, ids exactly at the cut, live-looking ids in unread columns, long context, far
positions, integers at the edge of their types (strategies/v2/edges.py), and the v1 corners
that carry over. `strategies.coverage.corners` dispatches
here for a v2 case."""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v2 import cmp_bound, live_lanes
from sparse_attn_conformance.strategies.edges import (
    BIG_ID,
    FP32_EXACT,
    INT32_MAX,
    LAUNCH_LIMIT,
    WIDE_COLUMN,
)
from sparse_attn_conformance.strategies.v1.coverage import LONG_CONTEXT, SEED_CONFIG
from sparse_attn_conformance.strategies.v2.corners import V2_CORNERS

CORNERS = V2_CORNERS


def corners(case) -> list[str]:
    """The corners `case` (a `strategies.v2.cases.Case`) hits, in `CORNERS` order."""
    c, i = case.config, case.inputs
    hit = set()
    pos = i.position_ids.reshape(-1).to(torch.int64)
    r = i.compress_ratio
    if r is None:
        hit.add("no_cut")
    else:
        if r > 1 and bool(((pos + 1) % r == 0).any()):
            hit.add("cut_divisible")
        if bool(((pos + 1) % r != 0).any()):
            hit.add("cut_not_divisible")
    p2 = pos.reshape(i.B, i.S)
    if bool((p2 != p2[:, :1] + torch.arange(i.S)).any()):
        hit.add("distinct_positions")
    live_w, live_c = live_lanes(i)
    w = i.window_swa_indices.to(torch.int64)
    if _straddles(w, live_w, i.BLOCK):
        hit.add("window_straddles_pages")
    if _interleaved(w, live_w, i.S, i.BLOCK):
        hit.add("shared_pool_interleaved")
    if _garbage_table(i, live_c) or _garbage_ori(case, i):
        hit.add("garbage_table")
    idx = i.idx_topk.to(torch.int64)
    bound = cmp_bound(i.position_ids, r)
    if r is not None and bool((idx[:, :i.IDX_TOPK] == bound[:, None]).any()):
        hit.add("slot_at_bound")
    tail = idx[:, i.IDX_TOPK:]
    if bool(((tail >= 0) & (tail < bound[:, None])).any()):
        hit.add("garbage_columns")
    if bool((~(live_w.any(-1) | live_c.any(-1))).any()):
        hit.add("empty_token")
    if bool((live_c & (idx[:, :i.IDX_TOPK] >= LONG_CONTEXT)).any()):
        hit.add("long_context")
    if bool((pos >= FP32_EXACT).any()):
        hit.add("far_position")
    if case.extremes or bool((i.attn_sink.abs() > 1e30).any()):
        hit.add("extreme_values")
    if any(v != "contiguous" for v in i.layout.values()):
        hit.add("strided")
    if case.dominant:
        hit.add("dominant_key")
    if any(getattr(c, k) > v for k, v in SEED_CONFIG.items()):
        hit.add("large_dim")
    if any(n % 16 for n in (c.H, c.D, c.TOPK, c.BLOCK)):
        hit.add("off_tile")
    if c.softmax_scale <= 0:
        hit.add("nonpositive_scale")
    hit |= _integer_edges(i, pos, bound, idx[:, :i.IDX_TOPK], live_w, live_c, w)
    return [name for name in CORNERS if name in hit]


def fp32_cut(pos: torch.Tensor, ratio: int) -> torch.Tensor:
    """The cut as a kernel computing it in fp32 gets it: `trunc(fp32(pos + 1) * fp32(1/r))`."""
    inv = torch.tensor(1.0 / ratio, dtype=torch.float32)
    return torch.trunc((pos + 1).to(torch.float32) * inv).to(torch.int64)


def _integer_edges(i, pos, bound, c, live_w, live_c, w) -> set[str]:
    """The corners of integers at the edge of their types and of launch-grid limits."""
    hit = set()
    if bool((pos > INT32_MAX - 2**8).any()):
        hit.add("int32_position")
    r = i.compress_ratio
    if r is not None:
        other = fp32_cut(pos, r)
        lo, hi = torch.minimum(bound, other)[:, None], torch.maximum(bound, other)[:, None]
        if bool(((c >= lo) & (c < hi)).any()):
            hit.add("inexact_cut")
    col = torch.where(live_c, c, 0) // i.BLOCK
    if bool((live_c & (col >= WIDE_COLUMN)).any()):
        hit.add("wide_table")
    table = i.cmp_block_table.to(torch.int64)
    b = i.batch_of_token[:, None].expand_as(col)
    blk = table[b, col.clamp(max=table.shape[1] - 1)]
    if bool((live_c & (blk >= BIG_ID)).any()):
        hit.add("big_block_id")
    if bool((live_w & (w >= BIG_ID)).any()):
        hit.add("big_window_row")
    if i.H > LAUNCH_LIMIT:
        hit.add("many_heads")
    if i.T > LAUNCH_LIMIT:
        hit.add("many_tokens")
    return hit


def _straddles(w: torch.Tensor, live: torch.Tensor, block: int) -> bool:
    """Some token's consecutive live lanes move to a page other than the same or the next."""
    if w.shape[1] < 2:
        return False
    pages = w // block
    both = live[:, 1:] & live[:, :-1]
    step = pages[:, 1:] - pages[:, :-1]
    return bool((both & (step != 0) & (step != 1)).any())


def _interleaved(w: torch.Tensor, live: torch.Tensor, S: int, block: int) -> bool:
    """Two batches whose live window pages' ranges overlap in the one pool."""
    spans = []
    for b in range(w.shape[0] // S):
        pages = w[b * S:(b + 1) * S][live[b * S:(b + 1) * S]] // block
        if pages.numel():
            spans.append((int(pages.min()), int(pages.max())))
    return any(a[0] < z[1] and z[0] < a[1] for k, a in enumerate(spans) for z in spans[k + 1:])


def _garbage_table(i, live_c: torch.Tensor) -> bool:
    """An out-of-pool id in a `cmp_block_table` entry no live slot uses."""
    table = i.cmp_block_table.to(torch.int64)
    used = torch.zeros_like(table, dtype=torch.bool)
    c = i.idx_topk[:, :i.IDX_TOPK].to(torch.int64)
    b = i.batch_of_token[:, None].expand_as(c)
    used[b[live_c], (c[live_c] // i.BLOCK)] = True
    bad = (table < 0) | (table >= i.cmp_kv.shape[0])
    return bool((bad & ~used).any())


def _garbage_ori(case, i) -> bool:
    """An out-of-pool id in the (dense) ori block table the windows were produced through."""
    table = getattr(case, "ori_block_table", None)
    if not isinstance(table, torch.Tensor):
        return False
    t = table.to(torch.int64)
    return bool(((t < 0) | (t >= i.ori_kv.shape[0])).any())
