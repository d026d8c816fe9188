"""Per-batch start positions and the `seqused_kv` derived from them (contract section 4),
and lengths the model never writes, from empty to long context.

Per-batch values: Hypothesis draws those of the first `FEATURED` batches (so they shrink);
the rest come from the case's seeded generator over the same range, so a batch count of
hundreds costs Hypothesis nothing.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.strategies.config import DEFAULT_BUDGET, Config

#: Batches whose per-batch values Hypothesis draws itself.
FEATURED = 8
#: Longest context drawn: index values reach past 2^16.
LONG_CONTEXT_MAX = 2**17
#: Start of the long-context range: an int16 index wraps at 2^15.
LONG_CONTEXT_MIN = 2**15 - 16
#: Work-budget units per block-table entry (building, validating and reading it).
TABLE_ENTRY_COST = 16


def model_seqused(cfg: Config, start_pos: int) -> int:
    """`seqused_kv[b]` as the model wrappers write it, for a batch at `start_pos`.

    SWA (ratio 0): `min(WIN, L)`; HCA and CSA: `L` while `L <= WIN`, else
    `WIN + min(IDX_TOPK, L // ratio)`, with `L = start_pos + S`.
    """
    L = start_pos + cfg.S
    if cfg.ratio == 0:
        return min(cfg.WIN, L)
    if L <= cfg.WIN:
        return L
    return cfg.WIN + min(cfg.IDX_TOPK, L // cfg.ratio)


def n_compressed(cfg: Config, start_pos: int) -> int:
    """Compressed entries that exist once the batch's last token is written: `L // ratio`."""
    return 0 if cfg.ratio == 0 else (start_pos + cfg.S) // cfg.ratio


def max_start_pos(cfg: Config) -> int:
    """Far enough to wrap the window ring and to fill the compressed top-k."""
    return 2 * cfg.WIN + cfg.ratio * (cfg.IDX_TOPK + 2) + cfg.S


def _per_batch(draw, B: int, gen: torch.Generator, label: str, lo: int, hi: int,
               first: tuple[int, int] | None = None) -> list[int]:
    """`B` values in `[lo, hi]`: Hypothesis draws the featured ones, `gen` the rest.
    `first`: a narrower range for batch 0."""
    return [_one(draw, b, gen, label, *(first if (b == 0 and first is not None) else (lo, hi)))
            for b in range(B)]


def _one(draw, b: int, gen: torch.Generator, label: str, lo: int, hi: int) -> int:
    """Batch `b`'s value in `[lo, hi]`: drawn by Hypothesis for a featured batch, else by `gen`."""
    if b < FEATURED:
        return draw(st.integers(lo, hi), label=f"{label}[{b}]")
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def _last_start_within(cfg: Config, hi: int, max_seqused: int) -> int:
    """The largest start position `<= hi` whose model length is at most `max_seqused`
    (the model length grows with the start position)."""
    lo = 0
    if model_seqused(cfg, 0) > max_seqused:
        raise ValueError(f"start_positions: even start_pos=0 gives seqused_kv="
                         f"{model_seqused(cfg, 0)} > the kernel's max_seqused={max_seqused}")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if model_seqused(cfg, mid) <= max_seqused else (lo, mid - 1)
    return lo


@st.composite
def start_positions(draw, cfg: Config, gen: torch.Generator, ring: str | None = None,
                    max_seqused: int | None = None):
    """One start position per batch, shrinking towards 0 (an empty cache before this step).

    ring: None for any position (up to `max_start_pos`, or sometimes long context);
    "unwrapped": every batch has `start_pos + S <= WIN` (the config must have `WIN >= S`);
    "wrapped": batch 0's ring has wrapped during the call (`start_pos + S > WIN`).
    max_seqused: a kernel's declared bound on the lengths these positions give.
    """
    if ring == "unwrapped":
        if cfg.S > cfg.WIN:
            raise ValueError(f"start_positions: ring='unwrapped' needs WIN >= S, got "
                             f"WIN={cfg.WIN}, S={cfg.S}")
        hi = cfg.WIN - cfg.S
        if max_seqused is not None:
            hi = _last_start_within(cfg, hi, max_seqused)
        return tuple(_per_batch(draw, cfg.B, gen, "start_pos", 0, hi))
    hi = max_start_pos(cfg)
    if draw(st.booleans(), label="long_start_pos"):
        hi = max(hi, LONG_CONTEXT_MAX)
    if max_seqused is not None:
        hi = _last_start_within(cfg, hi, max_seqused)
    first = (max(0, cfg.WIN - cfg.S + 1), hi) if ring == "wrapped" else None
    return tuple(_per_batch(draw, cfg.B, gen, "start_pos", 0, hi, first))


#: Regimes of out-of-model lengths: some tokens with nothing live, lengths around the
#: window and the top-k (every boundary), and long context.
LENGTH_REGIMES = ("typical", "short", "long", "mixed")


@st.composite
def out_of_model_seqused(draw, cfg: Config, gen: torch.Generator,
                         regime: str | None = None, max_seqused: int | None = None,
                         budget: int = DEFAULT_BUDGET) -> tuple[int, ...]:
    """`seqused_kv` values the model never writes: below `S` (tokens with no live key),
    exactly at the window, with more compressed entries than `IDX_TOPK`, or long context
    (compressed slots past 2^15 and 2^16). `max_seqused`: a kernel's declared bound. The
    long regime is left out where that bound, or the work budget (the compressed block
    table holds `B * ceil(cmp_valid / BLOCK)` entries), does not reach it."""
    cap = LONG_CONTEXT_MAX + cfg.WIN if max_seqused is None else max_seqused
    table_cap = cfg.WIN + (budget // (TABLE_ENTRY_COST * cfg.B)) * cfg.BLOCK
    ranges = {
        "typical": (0, min(cap, cfg.WIN + cfg.IDX_TOPK + cfg.S + 2)),
        "short": (0, min(cap, max(0, cfg.S - 1))),
        "long": (cfg.WIN + LONG_CONTEXT_MIN, min(cap, table_cap, cfg.WIN + LONG_CONTEXT_MAX)),
    }
    regimes = LENGTH_REGIMES if ranges["long"][0] <= ranges["long"][1] else ("typical", "short")
    if regime is None:
        regime = draw(st.sampled_from(regimes), label="length_regime")
    if regime != "mixed":
        return tuple(_per_batch(draw, cfg.B, gen, "seqused_kv", *ranges[regime]))
    out = []
    for b in range(cfg.B):
        if b < FEATURED:
            name = draw(st.sampled_from(LENGTH_REGIMES[:3]), label=f"length_regime[{b}]")
        else:
            name = LENGTH_REGIMES[int(torch.randint(3, (1,), generator=gen))]
        out.append(_one(draw, b, gen, "seqused_kv", *ranges[name]))
    return tuple(out)
