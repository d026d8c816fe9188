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

Declared dims are v1's story (strategies/edges.py, `plan`): each declared dimension takes a
declared value, a mode is left out only where a precondition excludes it or its cost at the
declared sizes is past the edge bounds (`excluded` names each). The modes' windows are the
producer's, so `canonical_windows` excludes none; `canonical_rows` excludes all (the rows
hold ids around the cut, not the model's). A declared IDX_TOPK below 5 keeps the first ids
of the row (the anchor first in the "table" mode).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.preconditions import Preconditions
from sparse_attn_conformance.contracts.v2 import INT32_MAX, cmp_bound
from sparse_attn_conformance.strategies import edges as v1_edges
from sparse_attn_conformance.strategies.config import SCALE_FACTORS
from sparse_attn_conformance.strategies.v2.config import Config
from sparse_attn_conformance.strategies.v2.indexer import PAD, cmp_block_tables
from sparse_attn_conformance.strategies.v2.positions import model_positions
from sparse_attn_conformance.strategies.v2.windows import Table, ori_block_tables, window_rows

LAUNCH_LIMIT = v1_edges.LAUNCH_LIMIT
EDGE_COLUMNS = v1_edges.EDGE_COLUMNS
EDGE_COST = v1_edges.EDGE_COST
EDGE_MODES = ("positions", "table", "window", "heads", "tokens")
#: One case in three is an edge case (as in v1); positions carry most integer classes; heads
#: twice, so that dev's 30 examples of one property reach H past the launch limit (at
#: weight 1 in 27 the derandomized kill profile drew it in no property).
MODE_WEIGHTS = {"positions": 4, "table": 2, "window": 1, "heads": 2, "tokens": 1}
NORMAL_WEIGHT = 20
#: Ratios of the "positions" mode: the model's, then past 2^16 (drawn below).
MODEL_RATIOS = (1, 4, 128)
#: What a "positions" batch's start is near: the position itself, or `pos + 1` near
#: `r * edge` (the cut at the edge); the top of int32 twice, as only its last value
#: overflows.
POSITION_EDGES = ("int32_top", "pos_2_24", "cut_2_24", "int32_top", "pos_2_16", "cut_2_16",
                  "huge")
#: Tokens beyond this get no dominant key (`cases._dominate` places keys token by token).
DOMINATE_MAX_TOKENS = 4096


#: What each mode's edge is, in the report's words.
EDGE_WHAT = {"positions": "v2: positions up to INT32_MAX, past 2^16 and 2^24, and their cuts",
             "table": v1_edges.EDGE_WHAT["table"],
             "window": "v2: window rows past flat row 2^16",
             "heads": v1_edges.EDGE_WHAT["heads"], "tokens": v1_edges.EDGE_WHAT["tokens"]}


def _max_position(pre: Preconditions, mode: str, need: int) -> str | None:
    if pre.max_position is not None and pre.max_position < need:
        return f"max_position={pre.max_position} ({EDGE_WHAT[mode].split(': ')[-1]} needs {need})"
    return None


def plan(pre: Preconditions, mode: str, min_S: int = 1) -> dict | str:
    """What each dimension of a v2 edge case of `mode` may take under `pre`
    (`strategies.edges.pick`), or why the preconditions exclude the mode."""
    if mode not in EDGE_MODES:
        raise ValueError(f"plan: mode expected one of {EDGE_MODES}, got {mode!r}")
    if pre.canonical_rows:
        return v1_edges.CANONICAL_ROWS
    pick = v1_edges.pick
    p = {"B": pick(pre, "B", 1, 2), "S": pick(pre, "S", min_S, max(min_S, 4)),
         "H": pick(pre, "H", 1, 2), "D": pick(pre, "D", 1, 4), "WIN": pick(pre, "WIN", 1, 8),
         "IDX_TOPK": pick(pre, "IDX_TOPK", 5, 8, declared_lo=1)}
    for v in p.values():
        if isinstance(v, str):
            return v
    small, large = v1_edges.smallest, v1_edges.largest
    if mode in ("heads", "tokens"):
        for k in ("B", "S", "H", "D", "WIN", "IDX_TOPK"):
            if k in pre.dims:
                p[k] = p[k][:1]
        p["BLOCK"] = pick(pre, "BLOCK", 1, 4)
        win = small(p["WIN"]) if "WIN" in pre.dims else 4
        if mode == "heads":
            H = pre.dims.get("H")
            if H is not None:
                if not any(h > LAUNCH_LIMIT for h in H):
                    return f"dims H={tuple(H)}"
                p["H"] = (min(h for h in H if h > LAUNCH_LIMIT),)
            B = small(p["B"]) if "B" in pre.dims else 1
            S = small(p["S"]) if "S" in pre.dims else min_S
            why = v1_edges.count_cost_reason(pre, p, B, S, large(p["H"]) if H else
                                             LAUNCH_LIMIT + 2**10) \
                or v1_edges.few_heads_tokens(pre, p, min_S)
        else:
            split = v1_edges.token_split(pre, p, LAUNCH_LIMIT + 2**10)
            if isinstance(split, str):
                return split
            p["split"] = split
            B, S = split[0]
            S = S or -(-(LAUNCH_LIMIT + 2**10) // B)
            why = v1_edges.count_cost_reason(pre, p, B, S, small(p["H"]), win=4)
        return why or _max_position(pre, mode, 2 * win + 8 + B * S) or p
    if mode == "positions":
        if pre.max_position is not None and pre.max_position < INT32_MAX:
            return f"max_position={pre.max_position} (positions up to 2^31 - 1)"
        if pre.max_cmp_columns is not None and pre.max_cmp_columns < EDGE_COLUMNS:
            return (f"max_cmp_columns={pre.max_cmp_columns} (compressed ids near 2^31 / ratio "
                    f"need up to {EDGE_COLUMNS} columns)")
        v1_edges.shrink(pre, p, B=1, S=max(min_S, 2))
        # live ids per token: cut - 1, cut - 2, the anchor; as many spare blocks
        blocks = 2 * large(p["B"]) * (3 * large(p["S"]) + 1) + 2
        pages = v1_edges.long_pages(pre, large(p["D"]), blocks)
        if isinstance(pages, str):
            return pages
        p["BLOCK"] = pages
        return p
    if mode == "table":
        if pre.max_cmp_columns is not None and pre.max_cmp_columns < 2**16 + 6:
            return f"max_cmp_columns={pre.max_cmp_columns} (table columns past 2^16)"
        pages = v1_edges.big_pool_pages(pre, large(p["D"]), pick(pre, "BLOCK", 1, 2))
        if isinstance(pages, str):
            return pages
        p["BLOCK"] = pages
        # positions r * (anchor + 1) + 2r, anchor below (2^16 + 4) * BLOCK, r <= 4
        why = _max_position(pre, mode, 4 * ((2**16 + 4) * large(pages) + 3))
        return why or p
    # window: positions below 2 * WIN + 8 + S; a pool of 2^16 + rows
    p["BLOCK"] = pick(pre, "BLOCK", 1, 4)
    if (v1_edges.BIG_ID + 4 * large(p["WIN"]) + 8 * large(p["BLOCK"])) * large(p["D"]) > \
            v1_edges.EDGE_POOL:
        return (f"dims D={tuple(pre.dims.get('D', ()))} (cost: a pool of 2^16 rows at "
                f"D={large(p['D'])} is past the edge pool bound {v1_edges.EDGE_POOL})")
    return _max_position(pre, mode, 2 * large(p["WIN"]) + 8 + large(p["S"])) or p


def excluded(pre: Preconditions, min_S: int = 1) -> dict[str, str]:
    """The v2 edge modes `pre` leaves out, each with the declaration that excludes it."""
    return v1_edges.excluded(pre, min_S, EDGE_MODES, plan)


def allowed_modes(pre: Preconditions, min_S: int = 1) -> tuple[str, ...]:
    return v1_edges.allowed_modes(pre, min_S, EDGE_MODES, plan)


def eligible(pre: Preconditions, min_S: int = 1) -> bool:
    """Whether any v2 edge mode meets `pre` (`excluded` names those that do not)."""
    return bool(allowed_modes(pre, min_S))


def edge_modes(allowed: tuple[str, ...] | None = None) -> st.SearchStrategy[str | None]:
    """None (an ordinary case) most of the time, else one of `EDGE_MODES` (of `allowed`, if
    given); shrinks to None."""
    return v1_edges.edge_modes(MODE_WEIGHTS, NORMAL_WEIGHT, allowed)


@st.composite
def edge_configs(draw, mode: str, min_S: int = 1, pre: Preconditions = Preconditions()) -> Config:
    """A tiny v2 `Config` for an edge `mode`, with the one dimension the mode needs at its
    edge and every dimension `pre` declares at a declared value (`plan`; the ratio is always
    an int: the cut is what the modes are about)."""
    p = plan(pre, mode, min_S)
    if isinstance(p, str):
        raise ValueError(f"edge_configs: mode {mode!r} is excluded by the preconditions: {p}")
    draw_dim = v1_edges.draw_dim
    # room for the four ids around the cut and one more (where IDX_TOPK is not declared)
    d = {k: draw_dim(draw, p[k], f"edge_{k}") for k in ("B", "S", "H", "D", "WIN", "IDX_TOPK")}
    mine = {k: k not in pre.dims for k in d}       # undeclared: the mode may set it
    ratio = draw(st.sampled_from(MODEL_RATIOS), label="edge_ratio")
    if mode == "positions":
        d["BLOCK"] = draw_dim(draw, p["BLOCK"], "edge_BLOCK")
        if draw(st.booleans(), label="ratio_past_2_16"):
            ratio = draw(st.integers(2**16 + 1, 2**17 + 2**10), label="big_ratio")
    elif mode == "table":
        d["BLOCK"] = draw_dim(draw, p["BLOCK"], "edge_BLOCK")
        ratio = min(ratio, 4)
    else:
        d["BLOCK"] = draw_dim(draw, p["BLOCK"], "edge_BLOCK")
    if mode in ("heads", "tokens"):
        if mine["D"]:
            d["D"] = min(d["D"], 2)
        past = draw(st.sampled_from((1, 17, 2**10)), label="past_launch_limit")
        if mine["WIN"]:
            d["WIN"] = min(d["WIN"], 4)
        if mine["IDX_TOPK"]:
            d["IDX_TOPK"] = 5
        if mode == "heads":
            d.update(B=1 if mine["B"] else d["B"], S=min_S if mine["S"] else d["S"],
                     H=LAUNCH_LIMIT + past if mine["H"] else d["H"])
        else:
            B, S = p["split"][0]
            if not S:   # S undeclared: B batches of S tokens, B*S past the limit
                S = max(min_S, -(-(LAUNCH_LIMIT + past) // B))
            d.update(B=B, S=S, H=1 if mine["H"] else d["H"])
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
    if n < ids.shape[1]:    # a declared IDX_TOPK below 5: the first ids (the anchor first)
        ids = ids[:, [4, 0, 1, 2, 3] if any(a >= 0 for a in anchors) else [0, 1, 2, 3, 4]][:, :n]
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
        base = draw(v1_edges.spare_blocks(cfg), label="big_block_base")
        cmp_table, n_cmp = _shift_blocks(cmp_table, n_cmp, base), n_cmp + base
    return start_pos, position_ids, ori_table, n_ori, windows, idx, cmp_table, n_cmp
