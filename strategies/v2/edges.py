"""Integer inputs at the edge of their types, and counts past launch limits (v2).

v1's edge cases (strategies/edges.py) in v2's terms. Each mode puts one integer at its edge
with every other dimension tiny, and builds only what live lanes address (tables may repeat
blocks, a far position needs a few distinct pages):

- "positions": positions at the top of int32 (the last token at `INT32_MAX`, where
  `pos + 1` overflows), within 2^8 of it, and just below and above 2^16 and 2^24 (fp32 stops
  being exact), as positions and as cuts (`pos + 1` near `r * 2^16`, `r * 2^24`); ratios 1,
  4, 128 and past 2^16. Every token's row holds ids at and beside its cut
  `floor((pos + 1) / r)`: `cut - 1` and `cut - 2` (live) and `cut`, `cut + 1` (ignored),
  where a cut computed in fp32 or in wrapping int32 flips a verdict. Pages of 2^14 to 2^16
  rows keep the table of an id near 2^31 within `EDGE_COLUMNS` columns;
- "table": pages of 1 or 2 rows, a live id in a `cmp_block_table` column just before or
  past 2^12, 2^15 and 2^16, in a pool of more than 2^16 one-row blocks whose addressed
  blocks all have ids past 2^16 (the rest spare);
- "window": window rows (flat `ori_kv` rows) past 2^16: the producer's rows through pages
  whose blocks sit past row 2^16 of a pool of 2^16 to 2^17 rows. Not past 2^24: that pool
  is 2^24 rows (32 MiB at D = 1), copied by every property (poison, views, layouts), about a
  second per example on the 2-core machine, beyond what dev's time allows;
- "heads": H just past the 65535 launch limit, one or two tokens, D <= 2;
- "tokens": T = B*S just past 65535 (one batch), H = 1, D <= 2.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from contracts.preconditions import Preconditions
from contracts.v2 import INT32_MAX, cmp_bound
from strategies import edges as v1_edges
from strategies.config import SCALE_FACTORS
from strategies.v2.config import Config
from strategies.v2.indexer import PAD, cmp_block_tables
from strategies.v2.positions import model_positions
from strategies.v2.windows import Table, ori_block_tables, window_rows

LAUNCH_LIMIT = v1_edges.LAUNCH_LIMIT
EDGE_COLUMNS = v1_edges.EDGE_COLUMNS
EDGE_COST = v1_edges.EDGE_COST
EDGE_MODES = ("positions", "table", "window", "heads", "tokens")
#: One case in three is an edge case (as in v1); positions carry most integer classes.
MODE_WEIGHTS = {"positions": 4, "table": 2, "window": 1, "heads": 1, "tokens": 1}
NORMAL_WEIGHT = 18
#: Ratios of the "positions" mode: the model's, then past 2^16 (drawn below).
MODEL_RATIOS = (1, 4, 128)
#: What a "positions" batch's start is near: the position itself, or `pos + 1` near
#: `r * edge` (the cut at the edge); the top of int32 twice, as only its last value
#: overflows.
POSITION_EDGES = ("int32_top", "pos_2_24", "cut_2_24", "int32_top", "pos_2_16", "cut_2_16",
                  "huge")
#: Tokens beyond this get no dominant key (`cases._dominate` places keys token by token).
DOMINATE_MAX_TOKENS = 4096


def eligible(pre: Preconditions) -> bool:
    """Edge cases need the whole v2 contract: any dims, any position and table width,
    adversarial windows and rows (v1's rule, with v2's own restrictions)."""
    return (v1_edges.eligible(pre) and pre.max_position is None and pre.max_cmp_columns is None
            and not pre.canonical_windows)


def edge_modes() -> st.SearchStrategy[str | None]:
    """None (an ordinary case) most of the time, else one of `EDGE_MODES`; shrinks to None."""
    return v1_edges.edge_modes(MODE_WEIGHTS, NORMAL_WEIGHT)


@st.composite
def edge_configs(draw, mode: str, min_S: int = 1) -> Config:
    """A tiny v2 `Config` for an edge `mode`, with the one dimension the mode needs at its
    edge (the ratio is always an int: the cut is what the modes are about)."""
    if mode not in EDGE_MODES:
        raise ValueError(f"edge_configs: mode expected one of {EDGE_MODES}, got {mode!r}")
    d = {"B": draw(st.integers(1, 2), label="edge_B"),
         "S": draw(st.integers(min_S, max(min_S, 4)), label="edge_S"),
         "H": draw(st.integers(1, 2), label="edge_H"), "D": draw(st.integers(1, 4), label="edge_D"),
         "WIN": draw(st.integers(1, 8), label="edge_WIN"),
         # room for the four ids around the cut and one more
         "IDX_TOPK": draw(st.integers(5, 8), label="edge_IDX_TOPK")}
    ratio = draw(st.sampled_from(MODEL_RATIOS), label="edge_ratio")
    if mode == "positions":
        d["BLOCK"] = draw(st.sampled_from(v1_edges.LONG_PAGES), label="edge_BLOCK")
        if draw(st.booleans(), label="ratio_past_2_16"):
            ratio = draw(st.integers(2**16 + 1, 2**17 + 2**10), label="big_ratio")
    elif mode == "table":
        d["BLOCK"] = draw(st.integers(1, 2), label="edge_BLOCK")
        ratio = min(ratio, 4)
    else:
        d["BLOCK"] = draw(st.integers(1, 4), label="edge_BLOCK")
    if mode in ("heads", "tokens"):
        d["D"] = min(d["D"], 2)
        past = draw(st.sampled_from((1, 17, 2**10)), label="past_launch_limit")
        d.update(WIN=min(d["WIN"], 4), IDX_TOPK=5)
        if mode == "heads":
            d.update(B=1, S=min_S, H=LAUNCH_LIMIT + past)
        else:
            d.update(B=1, S=LAUNCH_LIMIT + past, H=1)
    extra = draw(st.sampled_from((0, 1, 3)), label="edge_extra_idx_columns")
    factor = draw(st.sampled_from(SCALE_FACTORS[:5]), label="edge_scale_factor")
    return Config(L=d["IDX_TOPK"] + extra, ratio=ratio, cut=ratio,
                  softmax_scale=factor * d["D"] ** -0.5, **d)


def _clamp_start(start: int, S: int) -> int:
    return max(0, min(start, INT32_MAX - (S - 1)))


@st.composite
def edge_starts(draw, cfg: Config, mode: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """`(start_pos, anchors)` per batch: tokens sit at `start + s`; `anchors[b]` is an id
    the batch's rows must hold (the "table" mode's wide column; else -1)."""
    starts, anchors = [], []
    r, S = cfg.ratio, cfg.S
    for b in range(cfg.B):
        anchor = -1
        if mode == "positions":
            edge = draw(st.sampled_from(POSITION_EDGES), label=f"position_edge[{b}]")
            if edge == "int32_top":
                start = INT32_MAX - (S - 1)             # the last token at INT32_MAX
            elif edge == "huge":
                start = draw(st.integers(2**31 - 2**8, INT32_MAX), label=f"huge_pos[{b}]")
            else:
                power = 2**24 if edge.endswith("2_24") else 2**16
                centre = power if edge.startswith("pos") else r * power - 1
                start = centre + draw(st.integers(-S - 2, S + 2), label=f"edge_offset[{b}]")
        elif mode == "table":
            # a live id in a column just before or past 2^12, 2^15 or 2^16, live for the
            # batch's last token and at or past the cut for earlier ones
            col = draw(st.sampled_from((2**12, 2**15, 2**16)), label=f"edge_column[{b}]")
            col += draw(st.integers(-1, 3), label=f"column_offset[{b}]")
            anchor = col * cfg.BLOCK + draw(st.integers(0, cfg.BLOCK - 1), label=f"column_row[{b}]")
            start = r * (anchor + 1) - 1 - (S - 1) + draw(st.integers(0, 2 * r), label=f"past_cut[{b}]")
        else:
            start = draw(st.integers(0, 2 * cfg.WIN + 8), label=f"edge_start[{b}]")
        starts.append(_clamp_start(start, S))
        anchors.append(anchor)
    return tuple(starts), tuple(anchors)


#: How a row's ids are arranged: around-the-cut first, shuffled, or pads first.
ARRANGEMENTS = ("cut_first", "shuffled", "pads_front")


def edge_idx_topk(cfg: Config, position_ids: torch.Tensor, anchors: tuple[int, ...],
                  arrangement: str, gen: torch.Generator) -> torch.Tensor:
    """`idx_topk` `[T, L]` int32, built for all tokens at once: per token `cut - 1`,
    `cut`, `cut + 1`, `cut - 2`, the batch's anchor (or slot 0), then `-1`. Ids past int32
    (a cut of 2^31) become `-1`; negatives stay (ignored). Unread columns repeat `cut - 1`
    (live-looking) or hold `-1`."""
    bound = cmp_bound(position_ids, cfg.ratio)
    anchor = torch.tensor(anchors, dtype=torch.int64).repeat_interleave(cfg.S)
    anchor = torch.where(anchor >= 0, anchor, 0)
    ids = torch.stack([bound - 1, bound, bound + 1, bound - 2, anchor], dim=1)
    ids = torch.where(ids > INT32_MAX, PAD, ids)
    T, n = ids.shape[0], cfg.IDX_TOPK
    row = torch.full((T, n), PAD, dtype=torch.int64)
    row[:, :ids.shape[1]] = ids
    if arrangement == "shuffled":
        row = torch.gather(row, 1, torch.argsort(torch.rand(row.shape, generator=gen), dim=1))
    elif arrangement == "pads_front":
        row = row.flip(1)
    tail = torch.where(torch.rand((T, cfg.L - n), generator=gen) < 0.5, ids[:, :1], PAD)
    return torch.cat([row, tail], dim=1).to(torch.int32)


def _shift_blocks(table: Table, n_blocks: int, base: int) -> Table:
    """`table` with every in-pool block id moved up by `base` (the pool grows by `base`
    spare blocks below them); entries outside the pool stay garbage."""
    if isinstance(table, torch.Tensor):
        t = table.to(torch.int64)
        inside = (t >= 0) & (t < n_blocks)
        return torch.where(inside, t + base, t).to(torch.int32)
    return {b: {c: blk + base for c, blk in cols.items()} for b, cols in table.items()}


@st.composite
def edge_lanes(draw, cfg: Config, mode: str, gen: torch.Generator, budget: int):
    """The integer part of an edge case: `(start_pos, position_ids, ori_table, n_ori,
    windows, idx_topk, cmp_table, n_cmp)`. Windows are the producer's (the other
    properties vary them); tables give each addressed page its own block."""
    start_pos, anchors = draw(edge_starts(cfg, mode), label="edge_starts")
    position_ids = model_positions(start_pos, cfg.S)
    ori_table, n_ori = draw(ori_block_tables(position_ids, cfg.S, cfg.WIN, cfg.BLOCK, gen,
                                             budget), label="edge_ori_table")
    if mode == "window":
        # every page the windows read sits past flat row 2^16
        base = -(-v1_edges.BIG_ID // cfg.BLOCK) + draw(st.integers(0, 2), label="row_offset")
        ori_table, n_ori = _shift_blocks(ori_table, n_ori, base), n_ori + base
    windows = window_rows(position_ids, ori_table, cfg.S, cfg.WIN, cfg.BLOCK)
    arrangement = draw(st.sampled_from(ARRANGEMENTS), label="edge_arrangement")
    idx = edge_idx_topk(cfg, position_ids, anchors, arrangement, gen)
    cmp_table, n_cmp = draw(cmp_block_tables(idx, position_ids, cfg, gen), label="edge_cmp_table")
    if mode == "table":
        # addressed blocks past id 2^16, in a pool of 2^16 to 2^17 one-row blocks
        base = draw(st.integers(2**16, 2**17), label="big_block_base")
        cmp_table, n_cmp = _shift_blocks(cmp_table, n_cmp, base), n_cmp + base
    return start_pos, position_ids, ori_table, n_ori, windows, idx, cmp_table, n_cmp
