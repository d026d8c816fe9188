"""Index rows (`topk_idxs`): as the model writes them, and adversarial ones.

Hypothesis draws the structure of a row (how many entries of each kind, where the pads go)
so that shrinking removes entries; a seeded generator picks the concrete slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from strategies.config import Config

PAD = -1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def canonical_row(cfg: Config, seqused: int, n_cmp: int, order: torch.Tensor | None) -> list[int]:
    """The row the model writes for a batch: `arange(WIN)`, then `WIN + c` for the compressed
    slots, then `-1` up to `TOPK`.

    HCA (order None): the first `k = min(IDX_TOPK, n_cmp)` compressed slots in order.
    CSA: `order` is the indexer's score order over the `n_cmp` existing slots; its top `k`.
    """
    k = min(cfg.IDX_TOPK, n_cmp) if cfg.ratio else 0
    cmp = list(range(k)) if order is None else order[:k].tolist()
    row = list(range(cfg.WIN)) + [cfg.WIN + c for c in cmp]
    return row + [PAD] * (cfg.TOPK - len(row))


#: Entry kinds of an adversarial row, relative to the token's (window_valid, cmp_valid).
KINDS = (
    "live_window",      # 0 <= e < window_valid
    "live_cmp",         # WIN <= e < WIN + cmp_valid
    "duplicate",        # a repeat of a live entry already in the row
    "pad",              # -1
    "window_boundary",  # e == window_valid (ignored)
    "cmp_boundary",     # e == WIN + cmp_valid (ignored)
    "dead_window",      # window_valid <= e < WIN (ignored)
    "dead_cmp",         # WIN + cmp_valid <= e (ignored)
    "garbage",          # < -1, or far beyond any slot, up to int32 extremes (ignored)
)
ARRANGEMENTS = ("pads_back", "pads_front", "shuffled", "interleaved")


@dataclass(frozen=True)
class RowRecipe:
    """How many entries of each kind a row holds, and how they are arranged."""

    counts: dict
    arrangement: str


@st.composite
def row_recipes(draw, topk: int) -> RowRecipe:
    """Counts per entry kind (shrinking to an all-pad row) and an arrangement."""
    budget = topk
    counts = {}
    for kind in KINDS[:3] + KINDS[4:]:
        n = draw(st.integers(0, min(budget, 6 if kind != "live_window" else topk)), label=kind)
        counts[kind] = n
        budget -= n
    arrangement = draw(st.sampled_from(ARRANGEMENTS), label="arrangement")
    return RowRecipe(counts=counts, arrangement=arrangement)


def _pick(gen: torch.Generator, lo: int, hi: int, n: int) -> list[int]:
    """`n` values in `[lo, hi)`, distinct while the range allows it."""
    if hi <= lo or n == 0:
        return []
    if hi - lo >= n:
        return (torch.randperm(hi - lo, generator=gen)[:n] + lo).tolist()
    return torch.randint(lo, hi, (n,), generator=gen).tolist()


def adversarial_row(recipe: RowRecipe, cfg: Config, window_valid: int, cmp_valid: int,
                    gen: torch.Generator) -> list[int]:
    """Build a row of exactly `TOPK` entries from a recipe, relative to one token's lengths.

    Kinds that cannot exist for these lengths (a live window entry when `window_valid` is
    0, a window boundary when the window is full) contribute nothing; pads fill the rest.
    """
    win, c = cfg.WIN, recipe.counts
    live = _pick(gen, 0, window_valid, c["live_window"])
    live += [win + x for x in _pick(gen, 0, cmp_valid, c["live_cmp"])]
    entries = list(live)
    if live:
        idx = torch.randint(0, len(live), (c["duplicate"],), generator=gen).tolist()
        entries += [live[i] for i in idx]
    if window_valid < win:
        entries += [window_valid] * c["window_boundary"]
        entries += _pick(gen, window_valid, win, c["dead_window"])
    entries += [win + cmp_valid] * c["cmp_boundary"]
    entries += [win + cmp_valid + x for x in _pick(gen, 0, 4 * win + 64, c["dead_cmp"])]
    garbage_pool = [PAD - 1, INT32_MIN, INT32_MAX, cfg.TOPK, 2 * cfg.TOPK + 7, -win]
    entries += [garbage_pool[i % len(garbage_pool)] for i in
                torch.randint(0, 1 << 16, (c["garbage"],), generator=gen).tolist()]
    entries = entries[: cfg.TOPK]
    pads = [PAD] * (cfg.TOPK - len(entries))
    if recipe.arrangement == "pads_front":
        return pads + entries
    if recipe.arrangement == "pads_back":
        return entries + pads
    row = entries + pads
    if recipe.arrangement == "shuffled":
        perm = torch.randperm(len(row), generator=gen).tolist()
        return [row[i] for i in perm]
    # interleaved: a pad between entries while pads last, the rest at the back
    out = []
    for e in entries:
        if pads:
            out.append(pads.pop())
        out.append(e)
    return out + pads
