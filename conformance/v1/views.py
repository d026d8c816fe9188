"""Calls made from other calls: one token of every batch on its own, some batches on their
own, and one token (with its batch's cache) from call A beside everything else from call B."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.v1 import Inputs, derived_lengths, live_mask


def one_token_call(inputs: Inputs, s: int) -> Inputs:
    """Every batch's token `s` alone (`S = 1`), with `seqused_kv` its derived length
    (clamped at 0, which gives the same empty token)."""
    seq_used, _, _ = derived_lengths(inputs.seqused_kv, inputs.S, inputs.window_size)
    return inputs.replace(
        q=inputs.q[:, s:s + 1].clone(),
        topk_idxs=inputs.topk_idxs[:, s:s + 1].clone(),
        seqused_kv=seq_used[:, s].clamp(min=0).to(inputs.seqused_kv.dtype),
    )


def batch_view(inputs: Inputs, idx: list[int]) -> Inputs:
    """Batches `idx` alone (the pools stay whole)."""
    return inputs.replace(q=inputs.q[idx], topk_idxs=inputs.topk_idxs[idx],
                          seqused_kv=inputs.seqused_kv[idx],
                          ori_block_table=inputs.ori_block_table[idx],
                          cmp_block_table=inputs.cmp_block_table[idx])


def widen(t: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    """`t` with its last dimension widened to `width` by `fill` entries."""
    if t.shape[-1] == width:
        return t
    pad = torch.full((*t.shape[:-1], width - t.shape[-1]), fill, dtype=t.dtype)
    return torch.cat([t, pad], dim=-1)


def mix(a: Inputs, b: Inputs, batch: int, token: int, rows_too: bool) -> Inputs:
    """Batch `batch` from `a` (its lengths, tables and pool rows); in it, token `token` from
    `a` and the other tokens' queries (and, if `rows_too`, index rows) from `b`; every other
    batch wholly from `b`. Both calls must share B, S, H, D, WIN, TOPK and BLOCK."""
    cols = max(a.cmp_block_table.shape[1], b.cmp_block_table.shape[1])
    # extra columns point at block 0: in range, and never read (past every live slot)
    a_cmp_t, b_cmp_t = widen(a.cmp_block_table, cols, 0), widen(b.cmp_block_table, cols, 0)
    n_ori, n_cmp = a.ori_kv.shape[0], a.cmp_kv.shape[0]
    ori_t = b.ori_block_table + n_ori
    cmp_t = b_cmp_t + n_cmp
    ori_t[batch], cmp_t[batch] = a.ori_block_table[batch], a_cmp_t[batch]
    q = b.q.clone()
    q[batch, token] = a.q[batch, token]
    rows = b.topk_idxs.clone()
    if rows_too:
        rows[batch, token] = a.topk_idxs[batch, token]
    else:
        rows[batch] = a.topk_idxs[batch]
    seqused = b.seqused_kv.clone()
    seqused[batch] = a.seqused_kv[batch]
    sink = a.attn_sink  # the sink is per head, shared by all tokens
    return a.replace(
        q=q, topk_idxs=rows, seqused_kv=seqused, attn_sink=sink,
        ori_kv=torch.cat([a.ori_kv, b.ori_kv]), ori_block_table=ori_t,
        cmp_kv=torch.cat([a.cmp_kv, b.cmp_kv]), cmp_block_table=cmp_t,
    )


# -- aliasing: two live entries that resolve to one physical row (contract sections 1, 3) ----

@dataclass(frozen=True)
class Aliasing:
    """A call with aliasing and the call it was made from. `base` is the drawn call with one
    entry of token `token` overwritten by a repeat of a live entry (`ids[0]`, at row
    positions `positions`); `aliased` names the repeat by another entry (`ids[1]`) that
    resolves to the same physical row, through a table column or, with `one_storage`, the
    other pool. Every token's live rows (values, as a multiset) are the same in both.
    `parts` says which part each entry is in ("window" or "compressed"); in v2 `positions`
    are lanes of that part (`window_swa_indices` or `idx_topk` columns)."""

    base: Inputs
    aliased: Inputs
    token: tuple[int, ...]
    positions: tuple[int, int]
    ids: tuple[int, int]
    one_storage: bool
    parts: tuple[str, str]

    def kwargs(self) -> dict:
        """The aliased call's arguments; with `one_storage`, `ori_kv` and `cmp_kv` are one
        tensor object (the kernel sees one storage, as a single-pool kernel has)."""
        kw = self.aliased.kwargs()
        if self.one_storage:
            kw["cmp_kv"] = kw["ori_kv"]
        return kw


#: the parts of an index row, by number
PARTS = ("window", "compressed")


def pool_records(pool: torch.Tensor) -> torch.Tensor:
    """Every row of `pool` (any cache format) as a record `[N, BLOCK, W]`: a bf16 pool's
    rows, a byte pool's records (`contracts.formats.records`, whole rows even when the
    format splits each block)."""
    return pool if formats.of_pool(pool) == formats.BF16 else formats.records(pool)


def records_pool(name: str, recs: torch.Tensor) -> torch.Tensor:
    """A pool in format `name` holding records `recs` (inverse of `pool_records`)."""
    return recs.contiguous() if name == formats.BF16 else formats.to_pool(name, recs)


def merged_block(first: torch.Tensor, blk: int, second: torch.Tensor, blk2: int,
                 rows: list[int]) -> torch.Tensor:
    """One block `[1, BLOCK, W]` in the pools' format: block `blk` of pool `first`, with the
    rows `rows` taken from block `blk2` of pool `second` (a block two table columns can both
    name, each column's used rows holding what they held)."""
    rec = pool_records(first[blk:blk + 1]).clone()
    if rows:
        idx = torch.tensor(rows, dtype=torch.int64)
        rec[0, idx] = pool_records(second[blk2:blk2 + 1])[0, idx]
    return records_pool(formats.of_pool(first), rec)


def offset_table(table: torch.Tensor, n_blocks: int, offset: int) -> torch.Tensor:
    """`table` with the ids inside a pool of `n_blocks` moved up by `offset` (the pool
    placed after another in one storage); ids outside it (garbage) stay as they are."""
    t = table.to(torch.int64)
    inside = (t >= 0) & (t < n_blocks)
    return torch.where(inside, t + offset, t).to(table.dtype)


def _used_rows(inputs: Inputs, live: torch.Tensor, b: int) -> dict[tuple[int, int], set[int]]:
    """Batch `b`'s table usage: `(part, column) -> rows` read by a live entry (`live`, the
    call's live mask) of any of its tokens (part 0: window, 1: compressed)."""
    win, block = inputs.window_size, inputs.BLOCK
    e = inputs.topk_idxs[b].to(torch.int64)[live[b]]
    part = (e >= win).long()
    slot = torch.where(part == 1, e - win, e)
    used: dict[tuple[int, int], set[int]] = {}
    for p, c, r in torch.unique(torch.stack([part, slot // block, slot % block], 1), dim=0).tolist():
        used.setdefault((p, c), set()).add(r)
    return used


def aliased(inputs: Inputs, gen: torch.Generator, one_storage: bool = False,
            tries: int = 8) -> Aliasing | None:
    """Two live entries of one token that resolve to one physical row (contract sections 1
    and 3: several columns may name one block, and each live entry counts).

    A token's live entry `x` (window or compressed slot, row `r` of column `col`) is
    repeated over another entry of its row (an ignored one when there is one), and the
    rows that live entries of the batch read through both `col` and another column `col2`
    get `col`'s values in `col2` (a new block, named by `col2`): `base`. In `aliased` the
    repeat is entry `x2`, the slot of `col2` at row `r` (live for the token), and both
    columns name one new block: `col`'s, with the other rows read through `col2` copied in.
    Without `one_storage`, `col2` is a column of the same part (and table); with it, of the
    other part, and `ori_kv` and `cmp_kv` are one pool (the window blocks, then the
    compressed ones, then the new block; the compressed table moved up to match), passed as
    one tensor (`Aliasing.kwargs`). None when no token of the call allows it (within
    `tries` tokens and `tries` entries of each)."""
    win, block = inputs.window_size, inputs.BLOCK
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    _, wv, cv = derived_lengths(inputs.seqused_kv, inputs.S, win)
    tokens = torch.nonzero(live.any(dim=-1)).tolist()
    order = torch.randperm(len(tokens), generator=gen).tolist()[:tries]
    for b, s in (tokens[i] for i in order):
        row = inputs.topk_idxs[b, s].to(torch.int64)
        if row.numel() < 2:
            continue
        positions = torch.nonzero(live[b, s]).flatten()
        for p1 in positions[torch.randperm(len(positions), generator=gen)][:tries].tolist():
            x = int(row[p1])
            part = int(x >= win)
            col, r = (x - win * part) // block, (x - win * part) % block
            part2 = 1 - part if one_storage else part
            valid2 = int((wv if part2 == 0 else cv)[b, s])
            cols = [c for c in range(-(-valid2 // block))
                    if (part2, c) != (part, col) and c * block + r < valid2]
            if cols:
                break
        else:
            continue
        col2 = cols[int(torch.randint(len(cols), (1,), generator=gen))]
        x2 = col2 * block + r + win * part2
        others = [p for p in range(row.numel()) if p != p1]
        ignored = [p for p in others if not bool(live[b, s, p])]
        pick = ignored or others
        p2 = pick[int(torch.randint(len(pick), (1,), generator=gen))]
        used = _used_rows(inputs, live, b)
        rows1, rows2 = used[(part, col)], used.get((part2, col2), set())
        tables = [inputs.ori_block_table.clone(), inputs.cmp_block_table.clone()]
        pools = [inputs.ori_kv, inputs.cmp_kv]
        blk, blk2 = int(tables[part][b, col]), int(tables[part2][b, col2])
        # base: the repeat, and col2's rows that col also reads holding col's values
        base_pools, base_tables = list(pools), [t.clone() for t in tables]
        base_pools[part2] = torch.cat([pools[part2], merged_block(
            pools[part2], blk2, pools[part], blk, sorted(rows1 & rows2))])
        base_tables[part2][b, col2] = base_pools[part2].shape[0] - 1
        base_rows = inputs.topk_idxs.clone()
        base_rows[b, s, p2] = x
        base = inputs.replace(topk_idxs=base_rows, ori_kv=base_pools[0], cmp_kv=base_pools[1],
                              ori_block_table=base_tables[0], cmp_block_table=base_tables[1])
        # aliased: both columns name one block, and the repeat is x2
        new = merged_block(pools[part], blk, pools[part2], blk2, sorted(rows2 - rows1))
        if one_storage:
            tables[1] = offset_table(tables[1], inputs.cmp_kv.shape[0], inputs.ori_kv.shape[0])
            pool = torch.cat([inputs.ori_kv, inputs.cmp_kv, new])
            pools = [pool, pool]
        else:
            pools[part] = torch.cat([pools[part], new])
        tables[part][b, col] = tables[part2][b, col2] = pools[part].shape[0] - 1
        alias_rows = base_rows.clone()
        alias_rows[b, s, p2] = x2
        alias = inputs.replace(topk_idxs=alias_rows, ori_kv=pools[0], cmp_kv=pools[1],
                               ori_block_table=tables[0], cmp_block_table=tables[1])
        return Aliasing(base, alias, (b, s), (p1, p2), (x, x2), one_storage,
                        (PARTS[part], PARTS[part2]))
    return None
