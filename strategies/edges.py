"""Integer inputs at the edge of their types, and counts past launch limits (v1).

Device kernels hold lengths, positions, slots, table columns and block ids in fixed-width
fields, pass some through fp32, and put tokens and heads on launch-grid axes. Each class of
bug lives at an edge the rest of the strategies never reach; an edge case goes there with
every other dimension tiny, so it stays cheap:

- "lengths": `seqused_kv` up to `INT32_MAX` (just below it, so that `seqused + 1 + s`
  overflows int32 before `- S`), just below and above 2^16, 2^24 (fp32 stops being exact)
  and 2^31 - 1; pages of 2^14 to 2^16 rows, so the table covering 2^31 slots has at most
  `EDGE_COLUMNS` columns, and only the few addressed blocks are distinct;
- "table": pages of 1 or 2 rows, lengths whose live slots sit in table columns just past
  2^12, 2^15 and 2^16, and a compressed pool of more than 2^16 blocks (most of them spare,
  one row each), so that live slots use block ids past 2^16;
- "heads": H just past the 65535 launch limit, one or two tokens, D <= 2;
- "tokens": B*S just past 2^16 (one batch of `S` tokens, H = 1, D <= 2).

The index values `WIN + c` of live entries stay below the derived length, so within int32.
"""

from __future__ import annotations

from hypothesis import strategies as st

from contracts.v1 import Preconditions
from contracts.v2 import INT32_MAX
from strategies.config import SCALE_FACTORS, Config

# The edges the modes (here and in strategies/v2/edges.py) reach, and so the thresholds of
# the coverage corners that count them (strategies/coverage.py, strategies/v2/corners.py);
# INT32_MAX is the contract's (every int32 argument's) own.
#: Integers above this are not all exact in fp32.
FP32_EXACT = 2**24
#: A block-table column at or past this needs more than a 12-bit column field.
WIDE_COLUMN = 2**12
#: A block id (or a flat row) at or past this needs more than 16 bits.
BIG_ID = 2**16
#: A launch-grid axis of CUDA (y, z) and of many NPU runtimes holds at most this many programs.
LAUNCH_LIMIT = 65535
#: Most compressed-table columns an edge case builds per batch (past 2^16, and enough for
#: `INT32_MAX` slots with pages of 2^14 + 3 rows).
EDGE_COLUMNS = 2**17 + 64
EDGE_MODES = ("lengths", "table", "heads", "tokens")
#: What an edge case may cost (`strategies.config.cost`) whatever the profile's budget: 2^16
#: tokens cost about a second (above every profile's budget), so they are drawn in a fixed
#: share of examples instead of growing with the budget.
EDGE_COST = 2**31
#: How often each mode is drawn beside `NORMAL_WEIGHT` ordinary cases: one case in three is
#: an edge case (so that dev's 30 examples reach each mode); the 2^16-head ones (about a
#: second each) are the rarest.
MODE_WEIGHTS = {"lengths": 3, "table": 2, "heads": 1, "tokens": 2}
NORMAL_WEIGHT = 16
#: Page sizes of the "lengths" mode: powers of two and odd ones, all >= 2^14.
LONG_PAGES = (2**14, 2**14 + 3, 2**15 - 1, 2**15, 2**16)


def eligible(pre: Preconditions) -> bool:
    """Edge cases need the whole contract: any dims, any length, adversarial rows."""
    return not pre.dims and pre.max_seqused is None and not pre.canonical_rows


def edge_modes(weights: dict[str, int] = MODE_WEIGHTS,
               normal: int = NORMAL_WEIGHT) -> st.SearchStrategy[str | None]:
    """None (an ordinary case) `normal` times in `normal + sum(weights)`, else a mode, each
    as often as its weight (default: v1's `EDGE_MODES`); shrinks to None."""
    modes = [m for m, w in weights.items() for _ in range(w)]
    return st.sampled_from((None,) * normal + tuple(modes))


@st.composite
def edge_configs(draw, mode: str, min_S: int = 1) -> Config:
    """A tiny `Config` for an edge `mode`, with the one dimension the mode needs at its edge."""
    if mode not in EDGE_MODES:
        raise ValueError(f"edge_configs: mode expected one of {EDGE_MODES}, got {mode!r}")
    S_hi = max(min_S, 4)
    d = {"B": draw(st.integers(1, 2), label="edge_B"), "S": draw(st.integers(min_S, S_hi), label="edge_S"),
         "H": draw(st.integers(1, 2), label="edge_H"), "D": draw(st.integers(1, 4), label="edge_D"),
         "WIN": draw(st.integers(max(1, min_S), 8), label="edge_WIN"),
         "IDX_TOPK": draw(st.integers(1, 8), label="edge_IDX_TOPK")}
    if mode == "lengths":
        d["BLOCK"] = draw(st.sampled_from(LONG_PAGES), label="edge_BLOCK")
    elif mode == "table":
        d["BLOCK"] = draw(st.integers(1, 2), label="edge_BLOCK")
    else:
        d["BLOCK"] = draw(st.integers(1, 4), label="edge_BLOCK")
        d["D"] = min(d["D"], 2)
        past = draw(st.sampled_from((1, 17, 2**10)), label="past_launch_limit")
        if mode == "heads":
            d.update(B=1, S=min_S, H=LAUNCH_LIMIT + past, IDX_TOPK=min(d["IDX_TOPK"], 4))
        else:
            d.update(B=1, S=LAUNCH_LIMIT + past, H=1, WIN=min(d["WIN"], 4),
                     IDX_TOPK=min(d["IDX_TOPK"], 4))
    ratio = draw(st.sampled_from((4, 128)), label="ratio")
    factor = draw(st.sampled_from(SCALE_FACTORS[:5]), label="scale_factor")
    return Config(ratio=ratio, softmax_scale=factor * d["D"] ** -0.5, **d)


#: What a "lengths" batch's `seqused_kv` is near (offsets are drawn around each); the top
#: of int32 twice, as only its last few values overflow.
LENGTH_EDGES = ("int32_top", "fp32_exact", "int32_top", "u16", "huge")


@st.composite
def edge_seqused(draw, cfg: Config, mode: str) -> tuple[int, ...]:
    """Per-batch `seqused_kv` for an edge case of `mode` (Hypothesis draws every batch: an
    edge case has at most 2)."""
    out = []
    for b in range(cfg.B):
        if mode in ("heads", "tokens"):
            # the last tokens (those past the launch limit) see at least one slot
            out.append(draw(st.integers(1, cfg.WIN + cfg.IDX_TOPK + cfg.S + 2),
                            label=f"seqused_kv[{b}]"))
            continue
        if mode == "lengths":
            out.append(draw(_long_length(cfg, b)))
            continue
        if mode != "table":
            raise ValueError(f"edge_seqused: mode expected one of {EDGE_MODES}, got {mode!r}")
        # the last live slot in a column just before or past 2^12, 2^15 or 2^16
        col = draw(st.sampled_from((2**12, 2**15, 2**16)), label=f"edge_column[{b}]")
        col += draw(st.integers(-1, 3), label=f"column_offset[{b}]")
        row = draw(st.integers(1, cfg.BLOCK), label=f"column_row[{b}]")
        out.append(cfg.WIN + col * cfg.BLOCK + row + cfg.S - 1)
    return tuple(out)


@st.composite
def _long_length(draw, cfg: Config, b: int) -> int:
    edge = draw(st.sampled_from(LENGTH_EDGES), label=f"length_edge[{b}]")
    if edge == "int32_top":
        # within S - 1 of the top: `seqused + 1 + s` passes INT32_MAX for the last token
        # (the "huge" edge takes the values below)
        return INT32_MAX - draw(st.integers(0, cfg.S - 1), label=f"below_int32_max[{b}]")
    if edge == "huge":
        return draw(st.integers(2**31 - 2**8, INT32_MAX), label=f"huge_seqused[{b}]")
    base = 2**24 if edge == "fp32_exact" else 2**16
    # the tokens' lengths straddle the edge, as slots and as lengths
    return cfg.WIN + base + draw(st.integers(-cfg.S - 2, cfg.S + 2), label=f"edge_offset[{b}]")
