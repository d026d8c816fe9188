"""Index rows (`topk_idxs`): as the model writes them, and adversarial ones.

Hypothesis draws the structure of a row (how many entries of each kind, where the pads go)
so that shrinking removes entries; a seeded generator picks the concrete slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.strategies.config import Config

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


#: How many live entries a row gets: a few, any number, or the whole row.
DENSITIES = ("few", "any", "full")


@st.composite
def row_recipes(draw, topk: int, min_live: int = 0) -> RowRecipe:
    """Counts per entry kind (shrinking to an all-pad row) and an arrangement. The live
    entries are a few, any number, or the whole row (a row full of live keys, where a
    kernel that caps its candidates or drops one key among many shows); the other kinds
    take a few entries each. `min_live`: at least this many live compressed entries (an
    edge case's point is a live entry at the edge; they are dropped where none can be live)."""
    density = draw(st.sampled_from(DENSITIES), label="density")
    counts = dict.fromkeys(KINDS, 0)
    if density == "full":
        counts["live_window"] = draw(st.integers(0, topk), label="live_window")
        counts["live_cmp"] = topk - counts["live_window"]
    else:
        budget = topk
        for kind in KINDS[:3] + KINDS[4:]:
            many = density == "any" and kind in ("live_window", "live_cmp")
            lo = min(min_live, budget) if kind == "live_cmp" else 0
            n = draw(st.integers(lo, budget if many else max(lo, min(budget, 6))), label=kind)
            counts[kind] = n
            budget -= n
    counts.pop("pad")
    arrangement = draw(st.sampled_from(ARRANGEMENTS), label="arrangement")
    return RowRecipe(counts=counts, arrangement=arrangement)


def _pick(gen: torch.Generator, lo: int, hi: int, n: int) -> list[int]:
    """`n` values in `[lo, hi)`, distinct while the range allows it."""
    if hi <= lo or n == 0:
        return []
    if hi - lo > 4 * n + 64:  # a wide range: draws rarely collide, and randperm would be slow
        return torch.randint(lo, hi, (n,), generator=gen).tolist()
    if hi - lo >= n:
        return (torch.randperm(hi - lo, generator=gen)[:n] + lo).tolist()
    return torch.randint(lo, hi, (n,), generator=gen).tolist()


#: Above this many compressed slots, live compressed entries cluster in a few logical blocks
#: (the last one among them), so that long context needs few pool blocks.
CLUSTER_ABOVE = 4096
CLUSTERS = 4


def _pick_compressed(gen: torch.Generator, cmp_valid: int, n: int, block: int) -> list[int]:
    """`n` live compressed slots in `[0, cmp_valid)`: anywhere for a short context; for a
    long one, inside a few logical blocks spread over the range, always including the
    block of the last live slot and slots past 2^15 and 2^16 when the length allows."""
    if cmp_valid <= CLUSTER_ABOVE or n == 0:
        return _pick(gen, 0, cmp_valid, n)
    n_blocks = -(-cmp_valid // block)
    anchors = {n_blocks - 1}
    for edge in (2**15, 2**16, 2**24 + 1):
        if edge < cmp_valid:
            anchors.add(edge // block)
    # table columns just past the edges of 12-, 15- and 16-bit column fields
    anchors |= {col for col in (2**12, 2**15, 2**16) if col < n_blocks}
    anchors |= set(torch.randint(0, n_blocks, (CLUSTERS,), generator=gen).tolist())
    anchors = sorted(anchors)
    out = []
    for i in torch.randint(0, len(anchors), (n,), generator=gen).tolist():
        lo = anchors[i] * block
        hi = min(cmp_valid, lo + block)
        out.append(lo + int(torch.randint(0, hi - lo, (1,), generator=gen)))
    return out


def empty_row(row: torch.Tensor, window_valid: int, cmp_valid: int, win: int) -> torch.Tensor:
    """`row` with every live entry replaced by `-1`: a token with nothing to attend."""
    e = row.to(torch.int64)
    live = ((e >= 0) & (e < window_valid)) | ((e >= win) & (e < win + cmp_valid))
    return torch.where(live, torch.full_like(row, PAD), row)


def adversarial_row(recipe: RowRecipe, cfg: Config, window_valid: int, cmp_valid: int,
                    gen: torch.Generator) -> list[int]:
    """Build a row of exactly `TOPK` entries from a recipe, relative to one token's lengths.

    Kinds that cannot exist for these lengths (a live window entry when `window_valid` is
    0, a window boundary when the window is full) contribute nothing; pads fill the rest.
    """
    win, c = cfg.WIN, recipe.counts
    live = _pick(gen, 0, window_valid, c["live_window"])
    live += [win + x for x in _pick_compressed(gen, cmp_valid, c["live_cmp"], cfg.BLOCK)]
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
