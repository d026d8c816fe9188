"""Compressed top-k rows (`idx_topk`) and the compressed block table they read through.

As the model writes them (upstream's `decode_indexer.py`, HCA layer): per token the visible
count is `V = min(kv_len // r, (pos + 1) // r)` with `kv_len = start_pos[b] + S`; the first
`min(IDX_TOPK, V)` columns hold distinct slots of `[0, V)` (CSA: in score order, a random
permutation's prefix; HCA: `0, 1, ...` in order), the rest `-1`, also in the `L - IDX_TOPK`
unread columns. SWA: no compressed entry at all.

Adversarial rows mix live slots, duplicates, negatives (`INT32_MIN` included), ids exactly
at and past the cut `(pos + 1) // r`, empty tokens, and any int32 in the unread columns
(live-looking ids included).

Long contexts stay cheap: a batch's live slots come from `candidate_slots`, the first
slots plus a few anchor blocks spread over its range (the last one, those holding 2^15 and
2^16), so the pool holds a few blocks however far the positions are.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from sparse_attn_conformance.contracts.v2 import INT32_MAX, cmp_bound
from sparse_attn_conformance.strategies.edges import EDGE_POOL
from sparse_attn_conformance.strategies.lengths import TABLE_ENTRY_COST
from sparse_attn_conformance.strategies.pools import INT32_MIN, garbage_ids
from sparse_attn_conformance.strategies.v2.config import Config
from sparse_attn_conformance.strategies.v2.windows import MAX_RECIPES, NEGATIVES

PAD = -1
#: Random anchor blocks per batch besides the last one and those holding 2^15 and 2^16.
CLUSTERS = 3


#: Unaddressed columns `cmp_block_tables` may add past the last addressed one.
EXTRA_COLUMNS = 2


def slot_caps(cfg: Config, budget: int, max_columns: int | None = None) -> tuple[int, int]:
    """`(columns, rows)`: the most `cmp_block_table` columns a batch may address (within the
    work budget, and leaving room for the extra columns under a kernel's declared
    `max_cmp_columns`), and the most leading slots a batch's candidates take whole."""
    cols = max(1, budget // (TABLE_ENTRY_COST * cfg.B))
    if max_columns is not None:
        cols = max(1, min(cols, max_columns - EXTRA_COLUMNS))
    rows = max(cfg.BLOCK, budget // (8 * cfg.B * cfg.D))
    return cols, rows


def candidate_slots(bound: int, cfg: Config, gen: torch.Generator, budget: int,
                    max_columns: int | None = None) -> torch.Tensor:
    """Sorted distinct slots (int64) of `[0, bound)` a batch's live entries may take: all
    of `[0, min(bound, IDX_TOPK + rows))` and every slot of a few anchor blocks below the
    table's column cap (so any token with `V` visible slots finds `min(IDX_TOPK, V)`)."""
    col_cap, row_cap = slot_caps(cfg, budget, max_columns)
    bound = min(bound, col_cap * cfg.BLOCK)
    head = min(bound, cfg.IDX_TOPK + row_cap)
    if head >= bound:
        return torch.arange(bound, dtype=torch.int64)
    n_cols = -(-bound // cfg.BLOCK)
    anchors = {n_cols - 1} | {e // cfg.BLOCK for e in (2**15, 2**16) if e < bound}
    anchors |= set(torch.randint(0, n_cols, (CLUSTERS,), generator=gen).tolist())
    parts = [torch.arange(head, dtype=torch.int64)]
    parts += [torch.arange(a * cfg.BLOCK, min(bound, (a + 1) * cfg.BLOCK)) for a in sorted(anchors)]
    return torch.unique(torch.cat(parts))


def visible(position_ids: torch.Tensor, kv_len: list[int], cfg: Config) -> torch.Tensor:
    """`[T]` int64: `V = min(kv_len[b] // r, (pos + 1) // r)` with the producer's ratio."""
    pos = position_ids.reshape(-1).to(torch.int64)
    kv = torch.tensor(kv_len, dtype=torch.int64).repeat_interleave(cfg.S)
    return torch.minimum(kv // cfg.cut, (pos + 1) // cfg.cut)


def model_idx_topk(position_ids: torch.Tensor, kv_len: list[int], cfg: Config, path: str,
                   gen: torch.Generator, budget: int, empty: tuple[int, ...] = (),
                   max_columns: int | None = None) -> torch.Tensor:
    """`idx_topk` `[T, L]` int32 as the model writes it for `path` ("CSA": score order,
    "HCA": in order, "SWA": none). `kv_len[b]` is batch b's cache length after the call.
    empty: batches whose indexer sees nothing (all `-1`)."""
    if path not in ("CSA", "HCA", "SWA"):
        raise ValueError(f"model_idx_topk: path expected 'CSA', 'HCA' or 'SWA', got {path!r}")
    if len(kv_len) != cfg.B:
        raise ValueError(f"kv_len: expected {cfg.B} lengths (one per batch), got {len(kv_len)}")
    out = torch.full((cfg.T, cfg.L), PAD, dtype=torch.int64)
    if path == "SWA" or cfg.IDX_TOPK == 0:
        return out.to(torch.int32)
    V = visible(position_ids, kv_len, cfg)
    # slots past the table's column cap (budget, `max_columns`) cannot be addressed: a token
    # with more visible slots than that gets fewer entries, the rest `-1`
    cap = slot_caps(cfg, budget, max_columns)[0] * cfg.BLOCK
    for b in range(cfg.B):
        if b in empty:
            continue
        tokens = range(b * cfg.S, (b + 1) * cfg.S)
        vmax = max(int(V[t]) for t in tokens)
        cand = candidate_slots(vmax, cfg, gen, budget, max_columns) if path == "CSA" else None
        for t in tokens:
            k = min(cfg.IDX_TOPK, int(V[t]), cap)
            if path == "HCA":
                out[t, :k] = torch.arange(k)
            elif k:
                c = cand[cand < int(V[t])]
                k = min(k, c.numel())
                out[t, :k] = c[torch.randperm(c.numel(), generator=gen)[:k]]
    return out.to(torch.int32)


#: Entry kinds of an adversarial compressed row, relative to the token's cut `(pos+1)//r`.
IDX_KINDS = ("live", "duplicate", "negative", "at_bound", "past_bound")
IDX_ARRANGEMENTS = ("pads_back", "pads_front", "shuffled")
#: How the unread columns `>= IDX_TOPK` are filled.
TAIL_FILLS = ("pad", "garbage")


@st.composite
def idx_recipes(draw, idx_topk: int) -> dict:
    """Counts per `IDX_KINDS` entry (live ones up to the whole row), an arrangement, the
    unread columns' fill and whether the token is left with no live compressed lane."""
    recipe = {"live": draw(st.one_of(st.integers(0, min(idx_topk, 6)), st.integers(0, idx_topk)),
                           label="live")}
    for kind in IDX_KINDS[1:]:
        recipe[kind] = draw(st.integers(0, min(idx_topk, 4)), label=kind)
    recipe["arrangement"] = draw(st.sampled_from(IDX_ARRANGEMENTS), label="idx_arrangement")
    recipe["tail"] = draw(st.sampled_from(TAIL_FILLS), label="idx_tail")
    recipe["empty"] = draw(st.integers(0, 7), label="idx_empty") == 0
    return recipe


def _id_cap(max_position: int | None) -> int:
    return INT32_MAX if max_position is None else min(INT32_MAX, max_position)


def adversarial_idx_row(recipe: dict, cfg: Config, bound: int | None, cand: torch.Tensor,
                        gen: torch.Generator, max_position: int | None) -> list[int]:
    """One token's `[L]` row from a recipe. `bound`: the kernel's cut for the token (None:
    no cut, every non-negative id is live); `cand`: the batch's candidate slots (live ones
    are taken below the bound from them). Ids never exceed `max_position`."""
    cap = _id_cap(max_position)
    live_pool = cand if bound is None else cand[cand < bound]
    n_live = 0 if recipe["empty"] else min(recipe["live"], live_pool.numel())
    live = live_pool[torch.randperm(live_pool.numel(), generator=gen)[:n_live]].tolist()
    entries = list(live)
    if live:
        entries += [live[i] for i in torch.randint(0, len(live), (recipe["duplicate"],),
                                                   generator=gen).tolist()]
    entries += [NEGATIVES[i % len(NEGATIVES)] for i in
                torch.randint(0, 1 << 10, (recipe["negative"],), generator=gen).tolist()]
    if bound is not None:
        if bound <= cap:
            entries += [bound] * recipe["at_bound"]
        past = [bound + x for x in torch.randint(1, 4 * cfg.BLOCK + 2, (recipe["past_bound"],),
                                                 generator=gen).tolist()]
        entries += [p for p in past if p <= cap]
    entries = entries[:cfg.IDX_TOPK]
    pads = [PAD] * (cfg.IDX_TOPK - len(entries))
    arrangement = recipe["arrangement"]
    row = pads + entries if arrangement == "pads_front" else entries + pads
    if arrangement == "shuffled":
        row = [row[i] for i in torch.randperm(len(row), generator=gen).tolist()]
    n_tail = cfg.L - cfg.IDX_TOPK
    if recipe["tail"] == "pad" or n_tail == 0:
        return row + [PAD] * n_tail
    # unread columns: live-looking slots, negatives, int32 extremes (within max_position)
    looks_live = live_pool[torch.randint(0, max(1, live_pool.numel()), (n_tail,), generator=gen)
                           ] if live_pool.numel() else torch.zeros(n_tail, dtype=torch.int64)
    odd = torch.tensor([INT32_MIN, -2, PAD, cap, min(cap, (bound or 0) + 1)], dtype=torch.int64)
    pick = odd[torch.randint(0, len(odd), (n_tail,), generator=gen)]
    which = torch.randint(0, 2, (n_tail,), generator=gen).bool()
    return row + torch.where(which, looks_live, pick).tolist()


@st.composite
def adversarial_idx_topk(draw, cfg: Config, position_ids: torch.Tensor, gen: torch.Generator,
                         budget: int, max_position: int | None = None,
                         max_columns: int | None = None) -> torch.Tensor:
    """`idx_topk` `[T, L]` int32 from up to `MAX_RECIPES` drawn `idx_recipes` (token `t`
    uses recipe `t mod n`), against each token's kernel cut."""
    bound = cmp_bound(position_ids, cfg.ratio)
    n = draw(st.integers(1, min(MAX_RECIPES, cfg.T)), label="idx_recipes")
    recipes = [draw(idx_recipes(cfg.IDX_TOPK), label=f"idx_recipe[{i}]") for i in range(n)]
    # without a cut, live slots reach as far as the producer's cut would let them
    reach = bound if cfg.ratio is not None else (position_ids.reshape(-1).long() + 1) // cfg.cut
    rows = []
    for b in range(cfg.B):
        tokens = range(b * cfg.S, (b + 1) * cfg.S)
        cand = candidate_slots(max(int(reach[t]) for t in tokens), cfg, gen, budget, max_columns)
        for t in tokens:
            tb = None if cfg.ratio is None else int(bound[t])
            rows.append(adversarial_idx_row(recipes[t % n], cfg, tb, cand, gen, max_position))
    return torch.tensor(rows, dtype=torch.int64).reshape(cfg.T, cfg.L).to(torch.int32)


def live_slots(idx_topk: torch.Tensor, position_ids: torch.Tensor, cfg: Config) -> torch.Tensor:
    """`[T, IDX_TOPK]` bool: the live compressed lanes (`contracts.v2.live_lanes`' rule)."""
    c = idx_topk[:, :cfg.IDX_TOPK].to(torch.int64)
    return (c >= 0) & (c < cmp_bound(position_ids, cfg.ratio)[:, None])


#: Most elements (rows x D) the compressed pool of an ordinary case holds: a column per live
#: slot makes it up to 2 * T * IDX_TOPK blocks, which the work budget (`strategies.config.cost`)
#: does not bound, and at an FP8 format's D = 512 a dev case held gigabytes (an xdist worker
#: ran out of memory). The edge cases' bound (`strategies.edges.EDGE_POOL`), which their
#: plans already keep.
MAX_POOL_ELEMENTS = EDGE_POOL

@st.composite
def cmp_block_tables(draw, idx_topk: torch.Tensor, position_ids: torch.Tensor, cfg: Config,
                     gen: torch.Generator, max_columns: int | None = None) -> tuple[torch.Tensor, int]:
    """`(cmp_block_table [B, M] int32, N_cmp)`: one shared pool; every column a live slot
    reads gets its own block (a random interleaving of the batches', spare blocks between),
    unless the pool would hold more than `MAX_POOL_ELEMENTS` (rows x D): then it keeps that
    many and the columns share its blocks at random (aliasing, which the contract allows);
    `M` covers the last such column and up to two more. Other entries: garbage (`-1`, int32
    extremes, ids past the pool) or in-pool blocks aliasing used ones."""
    live = live_slots(idx_topk, position_ids, cfg)
    c = idx_topk[:, :cfg.IDX_TOPK].to(torch.int64)
    used = []
    for b in range(cfg.B):
        rows = slice(b * cfg.S, (b + 1) * cfg.S)
        used.append(sorted(set((c[rows][live[rows]] // cfg.BLOCK).tolist())))
    n_used = sum(len(u) for u in used)
    spare = draw(st.sampled_from((0, 1, 3, n_used)), label="spare_cmp_blocks")
    n_blocks = max(1, n_used + spare)
    cap = max(1, MAX_POOL_ELEMENTS // (cfg.BLOCK * cfg.D))
    if n_blocks <= cap:
        ids = torch.randperm(n_blocks, generator=gen)[:n_used].tolist()
    else:
        n_blocks = cap
        ids = torch.randint(0, cap, (n_used,), generator=gen).tolist()
    M = max((u[-1] + 1 for u in used if u), default=1)
    room = EXTRA_COLUMNS if max_columns is None else max(0, min(EXTRA_COLUMNS, max_columns - M))
    M += draw(st.integers(0, room), label="extra_cmp_columns")
    if draw(st.booleans(), label="garbage_cmp_table"):
        table = garbage_ids(gen, cfg.B * M, n_blocks).reshape(cfg.B, M)
    else:
        table = torch.randint(0, n_blocks, (cfg.B, M), generator=gen)
    i = 0
    for b, u in enumerate(used):
        if u:
            table[b, u] = torch.tensor(ids[i:i + len(u)], dtype=torch.int64)
        i += len(u)
    return table.to(torch.int32), n_blocks
