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

A kernel that declares `Preconditions.dims` still gets every edge its declaration admits
(`plan`): each dimension it declares takes a declared value (the smallest ones, as the
undeclared ones stay tiny), the mode's own dimension goes to its edge, and a mode is left
out only where the declaration (or another precondition) truly excludes it, or where its
cost at the declared sizes passes `EDGE_COST` / `EDGE_POOL`; `excluded` names each with
the reason (listed by `Preconditions.unexercised`). At a declared D the pools are what
costs: the other dims shrink to one batch of few tokens, "lengths" uses pages of 2^11 to
2^16 rows (a wider table, up to `WIDE_EDGE_COLUMNS` columns, instead of 2^16-row pages of
D-wide rows) and "table" a pool of at most `EDGE_POOL` elements.
"""

from __future__ import annotations

from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v1 import Preconditions
from sparse_attn_conformance.contracts.v2 import INT32_MAX
from sparse_attn_conformance.strategies.config import SCALE_FACTORS, Config, cost

# The edges the modes (here and in strategies/v2/edges.py) reach, and so the thresholds of
# the coverage corners that count them (strategies/v1/coverage.py, strategies/v2/corners.py);
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


#: Most elements (rows times D) an edge case's pools may hold at declared dims (v1's
#: undeclared edge cases stay below it: 2^17 + 2 blocks of 2 rows at D <= 4).
EDGE_POOL = 2**26
#: Most key elements (tokens x TOPK x D) the reference gathers for an edge case: 2^16
#: tokens at D = 512 gather 2^28 (10 to 15 s on the 2-core machine), so "tokens" stops
#: near D = 56 (about 3 s); undeclared D <= 2 gathers 2^20.
EDGE_GATHER = 2**25
#: The most query (and output) elements, T * H * D, an edge case may hold: the "heads"
#: mode at a large declared D keeps its tokens few.
EDGE_QUERY = 2**26
#: Widest compressed table of a "lengths" case at a declared D or BLOCK (2^31 slots in pages
#: of 2^11 rows; 4 MiB of int32 per batch).
WIDE_EDGE_COLUMNS = 2**20 + 2**8
#: The most elements one page of a long-context edge case may hold where D or BLOCK is
#: declared: the pools hold more pages than the addressed ones (window pages, spares), and
#: pages of 2^16 rows at an FP8 format's D = 512 made pools of gigabytes (an xdist worker
#: ran out of memory); at D = 512 pages of 2^11 rows still cover 2^31 slots.
EDGE_PAGE = 2**20
#: Page sizes of the "lengths" mode where D or BLOCK is declared: smaller pages (a wider
#: table) keep the few addressed pages of D-wide rows within `EDGE_POOL`.
DECLARED_PAGES = (2**11, 2**11 + 3, 2**12 - 1, 2**12, 2**13) + LONG_PAGES
#: What each mode's edge is, in the report's words.
EDGE_WHAT = {"lengths": "v1: seqused_kv up to INT32_MAX, past 2^16 and 2^24",
             "table": "block-table columns past 2^12 and 2^16, block ids past 2^16",
             "heads": f"H past {LAUNCH_LIMIT}", "tokens": f"B*S past {LAUNCH_LIMIT}"}


#: Why `canonical_rows` excludes every mode (v1 and v2).
CANONICAL_ROWS = "canonical_rows (edge cases draw their own index rows, not the model's)"


def _shown(values) -> str:
    return str(tuple(values))


def pick(pre: Preconditions, name: str, lo: int, hi: int,
         declared_lo: int | None = None) -> range | tuple[int, ...] | str:
    """What dimension `name` of an edge case may take: `range(lo, hi + 1)` if undeclared,
    else the declared values in `[lo', hi]` (`lo'`: `declared_lo`, default `lo`), or the
    smallest declared one past `hi`; a reason string if none is at least `lo'`."""
    values = pre.dims.get(name)
    if values is None:
        return range(lo, hi + 1)
    lo = lo if declared_lo is None else declared_lo
    ok = sorted(v for v in values if v >= lo)
    if not ok:
        return f"dims {name}={_shown(values)} (none >= {lo})"
    return tuple(v for v in ok if v <= hi) or (ok[0],)


def smallest(choice: range | tuple[int, ...]) -> int:
    return choice[0]


def largest(choice: range | tuple[int, ...]) -> int:
    return choice[-1]


def draw_dim(draw, choice: range | tuple[int, ...], label: str) -> int:
    """A value of `pick`'s `choice` (an undeclared range is drawn as before)."""
    if isinstance(choice, range):
        return draw(st.integers(choice.start, choice.stop - 1), label=label)
    return draw(st.sampled_from(choice), label=label)


def shrink(pre: Preconditions, p: dict, **small: int) -> None:
    """At a declared D or BLOCK, undeclared dims in `small` shrink to `range(lo, hi + 1)`
    capped at the given `hi` (the pools, not the count, are what costs there)."""
    if "D" in pre.dims or "BLOCK" in pre.dims:
        for name, hi in small.items():
            if isinstance(p[name], range):
                p[name] = range(p[name].start, max(p[name].start, min(hi, p[name].stop - 1)) + 1)


def long_pages(pre: Preconditions, D_max: int, blocks: int, slots: int = INT32_MAX,
               ) -> tuple[int, ...] | str:
    """Pages of a mode that covers `slots` slots with `blocks` distinct pages of `D_max`-wide
    rows: `LONG_PAGES` where neither D nor BLOCK is declared, else the declared (or
    `DECLARED_PAGES`) sizes whose table stays within `WIDE_EDGE_COLUMNS` columns and whose
    pool within `EDGE_POOL`."""
    if "D" not in pre.dims and "BLOCK" not in pre.dims:
        return LONG_PAGES
    declared = pre.dims.get("BLOCK")
    pages = sorted(declared) if declared is not None else DECLARED_PAGES
    ok = tuple(P for P in pages if -(-slots // P) <= WIDE_EDGE_COLUMNS
               and blocks * P * D_max <= EDGE_POOL and P * D_max <= EDGE_PAGE)
    if ok:
        return ok
    if declared is not None and not any(-(-slots // P) <= WIDE_EDGE_COLUMNS for P in declared):
        return (f"dims BLOCK={_shown(declared)} (2^31 slots need pages of at least "
                f"{-(-slots // WIDE_EDGE_COLUMNS)} rows within {WIDE_EDGE_COLUMNS} table columns)")
    return (f"dims D={_shown(pre.dims.get('D', (D_max,)))}"
            + (f", BLOCK={_shown(declared)}" if declared is not None else "")
            + f" (cost: {blocks} pages of D-wide rows past the edge pool bound {EDGE_POOL}, "
              f"or pages past {EDGE_PAGE} elements)")


def big_pool_pages(pre: Preconditions, D_max: int, choice: range | tuple[int, ...],
                   ) -> range | tuple[int, ...] | str:
    """Page sizes (from `choice`) of a mode whose pool holds more than 2^16 blocks: those
    whose 2^16 + 2^10 blocks of `D_max`-wide rows stay within `EDGE_POOL`."""
    if "D" not in pre.dims and "BLOCK" not in pre.dims:
        return choice
    ok = tuple(P for P in choice if (BIG_ID + 2**10) * P * D_max <= EDGE_POOL)
    if ok:
        return ok
    what = ", ".join(f"{k}={_shown(pre.dims[k])}" for k in ("D", "BLOCK") if k in pre.dims)
    return (f"dims {what} (cost: a pool of 2^16 blocks of {smallest(choice)} rows at "
            f"D={D_max} is past the edge pool bound {EDGE_POOL})")


def spare_blocks(cfg, base: int = BIG_ID) -> st.SearchStrategy[int]:
    """How many spare blocks a pool of more than 2^16 blocks gets: 2^16 to 2^17 where blocks
    are tiny (BLOCK * D <= 8, as undeclared), else 2^16 to 2^16 + 2^10 (the pool, just past
    2^16 blocks, is what costs: about 2^16 rows at D = 512 take 4 to 14 s to encode in an
    FP8 format, `strategies.formats.in_format`)."""
    return st.integers(base, 2 * base if cfg.BLOCK * cfg.D <= 8 else base + 2**10)


def count_cost_reason(pre: Preconditions, p: dict, B: int, S: int, H: int,
                      win: int = 8) -> str | None:
    """Why a "heads" or "tokens" case of `B`, `S`, `H` at the smallest declared (else the
    mode's own tiny: D <= 2, WIN <= `win`, IDX_TOPK <= 5) dims is past `EDGE_COST`, or None."""
    d = {"B": B, "S": S, "H": H, "BLOCK": 1,
         "D": smallest(p["D"]) if "D" in pre.dims else 2,
         "WIN": smallest(p["WIN"]) if "WIN" in pre.dims else win,
         "IDX_TOPK": smallest(p["IDX_TOPK"]) if "IDX_TOPK" in pre.dims else 5}
    if cost(d) <= EDGE_COST and B * S * (d["WIN"] + d["IDX_TOPK"]) * d["D"] <= EDGE_GATHER:
        return None
    what = ", ".join(f"{k}={_shown(pre.dims[k])}" for k in ("H", "D", "WIN", "IDX_TOPK")
                     if k in pre.dims)
    return (f"dims {what} (cost: {B * S} tokens x H={H} x TOPK={d['WIN'] + d['IDX_TOPK']} "
            f"x D={d['D']}: past the edge bounds, 2^31 work or 2^25 gathered key elements)")


def few_heads_tokens(pre: Preconditions, p: dict, min_S: int) -> str | None:
    """For a "heads" case: keep its tokens few enough that `T * H * D` stays within
    `EDGE_QUERY` (at a large declared D, an FP8 format's 512 or 576, one or two tokens of
    2^16 heads already hold that many query elements, and the reference makes float64
    copies of them), narrowing an undeclared B, then S, to its smallest; why the mode is
    excluded if even that is past the bound, else None. `p` is changed in place."""
    H_max = largest(p["H"]) if "H" in pre.dims else LAUNCH_LIMIT + 2**10

    def queries() -> int:
        return largest(p["B"]) * largest(p["S"]) * H_max * largest(p["D"])

    for k, lo in (("B", 1), ("S", max(min_S, 1))):
        if queries() > EDGE_QUERY and k not in pre.dims:
            p[k] = range(lo, lo + 1)
    if queries() > EDGE_QUERY:
        return (f"dims D={_shown(p['D'])} (cost: {largest(p['B']) * largest(p['S'])} tokens x "
                f"H={H_max} x D={largest(p['D'])} query elements, past the edge bound "
                f"{EDGE_QUERY})")
    return None


def token_split(pre: Preconditions, p: dict, need: int) -> tuple[tuple[int, int], ...] | str:
    """`(B, S)` pairs with `B*S >= need` from the declared B and S (one batch of `need`
    tokens where neither is declared: None)."""
    Bs, Ss = pre.dims.get("B"), pre.dims.get("S")
    if Ss is None:
        return ((smallest(p["B"]) if Bs is not None else 1, 0),)  # S derived
    if Bs is None:
        big = [s for s in sorted(Ss) if s >= need]
        if big:
            return ((1, big[0]),)
        return (f"dims S={_shown(Ss)} (one or two batches of {need} tokens: the edge case "
                f"does not draw {-(-need // max(Ss))} batches)")
    pairs = sorted(((b, s) for b in Bs for s in Ss if b * s >= need), key=lambda bs: bs[0] * bs[1])
    if pairs:
        return tuple(pairs[:1])
    return f"dims B={_shown(Bs)}, S={_shown(Ss)} (B*S at most {max(Bs) * max(Ss)})"


def plan(pre: Preconditions, mode: str, min_S: int = 1) -> dict | str:
    """What each dimension of an edge case of `mode` may take under `pre` (see `pick`), or
    why the preconditions exclude the mode."""
    if mode not in EDGE_MODES:
        raise ValueError(f"plan: mode expected one of {EDGE_MODES}, got {mode!r}")
    if pre.canonical_rows:
        return CANONICAL_ROWS
    p = {"B": pick(pre, "B", 1, 2), "S": pick(pre, "S", min_S, max(min_S, 4)),
         "H": pick(pre, "H", 1, 2), "D": pick(pre, "D", 1, 4),
         "WIN": pick(pre, "WIN", max(1, min_S), 8, declared_lo=1),
         "IDX_TOPK": pick(pre, "IDX_TOPK", 1, 8)}
    for v in p.values():
        if isinstance(v, str):
            return v
    if mode in ("heads", "tokens") and pre.max_seqused is not None and pre.max_seqused < 1:
        return f"max_seqused={pre.max_seqused} (the tokens must see a slot)"
    if mode == "heads":
        H = pre.dims.get("H")
        if H is not None:
            big = tuple(h for h in sorted(H) if h > LAUNCH_LIMIT)
            if not big:
                return f"dims H={_shown(H)}"
            p["H"] = big[:1]
        p["BLOCK"] = pick(pre, "BLOCK", 1, 4)
        for k in ("B", "S", "D", "WIN", "IDX_TOPK"):
            if k in pre.dims:
                p[k] = p[k][:1]
        why = count_cost_reason(pre, p, smallest(p["B"]) if "B" in pre.dims else 1,
                                smallest(p["S"]) if "S" in pre.dims else min_S,
                                largest(p["H"]) if "H" in pre.dims else LAUNCH_LIMIT + 2**10)
        if why:
            return why
        why = few_heads_tokens(pre, p, min_S)
        if why:
            return why
    elif mode == "tokens":
        split = token_split(pre, p, LAUNCH_LIMIT + 2**10)
        if isinstance(split, str):
            return split
        p["split"] = split
        p["BLOCK"] = pick(pre, "BLOCK", 1, 4)
        for k in ("H", "D", "WIN", "IDX_TOPK"):
            if k in pre.dims:
                p[k] = p[k][:1]
        b, s = split[0]
        why = count_cost_reason(pre, p, b, s or -(-(LAUNCH_LIMIT + 2**10) // b), smallest(p["H"]),
                                win=4)
        if why:
            return why
    elif mode == "lengths":
        if pre.max_seqused is not None and pre.max_seqused < INT32_MAX:
            return f"max_seqused={pre.max_seqused} (lengths up to 2^31 - 1)"
        shrink(pre, p, B=1, S=max(min_S, 2), IDX_TOPK=4)
        blocks = largest(p["B"]) * (largest(p["S"]) * largest(p["IDX_TOPK"]) + 2) + 3
        pages = long_pages(pre, largest(p["D"]), blocks)
        if isinstance(pages, str):
            return pages
        p["BLOCK"] = pages
    else:  # table
        if pre.max_seqused is not None and pre.max_seqused < INT32_MAX:
            return f"max_seqused={pre.max_seqused} (lengths past 2^16 table columns)"
        pages = big_pool_pages(pre, largest(p["D"]), pick(pre, "BLOCK", 1, 2))
        if isinstance(pages, str):
            return pages
        p["BLOCK"] = pages
    return p


def excluded(pre: Preconditions, min_S: int = 1, modes: tuple[str, ...] = EDGE_MODES,
             plan_of=None) -> dict[str, str]:
    """The edge modes `pre` leaves out, each with the declaration that excludes it
    (`modes` and `plan_of`: a convention's own, v1's by default)."""
    plan_of = plan_of or plan
    out = {}
    for mode in modes:
        p = plan_of(pre, mode, min_S)
        if isinstance(p, str):
            out[mode] = p
    return out


def allowed_modes(pre: Preconditions, min_S: int = 1, modes: tuple[str, ...] = EDGE_MODES,
                  plan_of=None) -> tuple[str, ...]:
    gone = excluded(pre, min_S, modes, plan_of)
    return tuple(m for m in modes if m not in gone)


def eligible(pre: Preconditions, min_S: int = 1) -> bool:
    """Whether any edge mode meets `pre` (`excluded` names those that do not)."""
    return bool(allowed_modes(pre, min_S))


def edge_modes(weights: dict[str, int] = MODE_WEIGHTS, normal: int = NORMAL_WEIGHT,
               allowed: tuple[str, ...] | None = None) -> st.SearchStrategy[str | None]:
    """None (an ordinary case) `normal` times in `normal + sum(weights)`, else a mode, each
    as often as its weight (default: v1's `EDGE_MODES`; only the `allowed` ones, if given);
    shrinks to None."""
    modes = [m for m, w in weights.items() if allowed is None or m in allowed for _ in range(w)]
    return st.sampled_from((None,) * normal + tuple(modes))


@st.composite
def edge_configs(draw, mode: str, min_S: int = 1, pre: Preconditions = Preconditions()) -> Config:
    """A tiny `Config` for an edge `mode`, with the one dimension the mode needs at its edge
    and every dimension `pre` declares at a declared value (`plan`)."""
    p = plan(pre, mode, min_S)
    if isinstance(p, str):
        raise ValueError(f"edge_configs: mode {mode!r} is excluded by the preconditions: {p}")
    d = {k: draw_dim(draw, p[k], f"edge_{k}") for k in ("B", "S", "H", "D", "WIN", "IDX_TOPK")}
    mine = {k: k not in pre.dims for k in d}       # undeclared: the mode may set it
    d["BLOCK"] = draw_dim(draw, p["BLOCK"], "edge_BLOCK")
    if mode in ("heads", "tokens"):
        if mine["D"]:
            d["D"] = min(d["D"], 2)
        past = draw(st.sampled_from((1, 17, 2**10)), label="past_launch_limit")
        if mine["IDX_TOPK"]:
            d["IDX_TOPK"] = min(d["IDX_TOPK"], 4)
        if mode == "heads":
            d.update(B=1 if mine["B"] else d["B"], S=min_S if mine["S"] else d["S"],
                     H=LAUNCH_LIMIT + past if mine["H"] else d["H"])
        else:
            B, S = p["split"][0]
            if not S:   # S undeclared: B batches of S tokens, B*S past the limit
                S = max(min_S, -(-(LAUNCH_LIMIT + past) // B))
            d.update(B=B, S=S, H=1 if mine["H"] else d["H"])
            if mine["WIN"]:
                d["WIN"] = min(d["WIN"], 4)
    ratio = draw(st.sampled_from((4, 128)), label="ratio")
    factor = draw(st.sampled_from(SCALE_FACTORS[:5]), label="scale_factor")
    return Config(ratio=ratio, softmax_scale=factor * d["D"] ** -0.5, **d)


#: What a "lengths" batch's `seqused_kv` is near (offsets are drawn around each); the top
#: of int32 twice, as only its last few values overflow.
LENGTH_EDGES = ("int32_top", "fp32_exact", "int32_top", "u16", "huge")


@st.composite
def edge_seqused(draw, cfg: Config, mode: str,
                 max_seqused: int | None = None) -> tuple[int, ...]:
    """Per-batch `seqused_kv` for an edge case of `mode` (Hypothesis draws every batch: an
    edge case has at most 2, or a few declared ones); "heads" and "tokens" lengths stay
    within `max_seqused` (the modes that need long lengths are excluded by it)."""
    out = []
    for b in range(cfg.B):
        if mode in ("heads", "tokens"):
            # the last tokens (those past the launch limit) see at least one slot
            hi = cfg.WIN + cfg.IDX_TOPK + cfg.S + 2
            hi = hi if max_seqused is None else max(1, min(hi, max_seqused))
            out.append(draw(st.integers(1, hi), label=f"seqused_kv[{b}]"))
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
