"""Block tables: which physical block of a paged pool holds each batch's logical blocks.

Physical blocks are a random permutation with spare blocks in between, so a kernel that
assumes block `b*cols + j` or ignores the table reads the wrong rows. Only what a live slot
may read is allocated: a long context's logical blocks that no entry addresses share
physical blocks (the contract only asks them to be inside the pool), and the columns past
a batch's length may hold garbage (`-1`, int32 extremes, ids past the pool's end).
"""

from __future__ import annotations

import torch

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: A batch with more valid columns than this gets distinct blocks only for the columns that
#: some entry addresses.
DISTINCT_COLUMNS = 64


def garbage_ids(gen: torch.Generator, n: int, n_blocks: int) -> torch.Tensor:
    """`n` block ids that address nothing: negative, past the pool, int32 extremes."""
    pool = torch.tensor([-1, -2, INT32_MIN, INT32_MAX, n_blocks, n_blocks + 7, -n_blocks],
                        dtype=torch.int64)
    return pool[torch.randint(0, len(pool), (n,), generator=gen)]


def block_table(gen: torch.Generator, valid_cols: list[int], cols: int, spare: int,
                addressed: list[set[int]] | None = None,
                garbage: bool = False) -> tuple[torch.Tensor, int]:
    """A `[B, cols]` int32 table and its pool's block count.

    valid_cols[b]: the columns batch `b`'s live slots may use (`ceil(length / BLOCK)`);
    they address inside the pool. Each gets its own physical block, except in a batch with
    more than `DISTINCT_COLUMNS` of them, where only the columns in `addressed[b]` do and the
    others share those. The columns past `valid_cols[b]` hold ids of blocks no valid column
    uses, or with `garbage` ids that address nothing.
    """
    B = len(valid_cols)
    own = []
    for b in range(B):
        if addressed is not None and valid_cols[b] > DISTINCT_COLUMNS:
            own.append(sorted(c for c in addressed[b] if c < valid_cols[b]))
        else:
            own.append(list(range(valid_cols[b])))
    n_own = sum(len(o) for o in own)
    unused = any(v < cols for v in valid_cols)
    # columns past a batch's length point at blocks no live slot uses (or at garbage)
    n_blocks = max(1, n_own + spare + (1 if unused and not garbage else 0))
    perm = torch.randperm(n_blocks, generator=gen)
    ids, free = perm[:n_own].tolist(), perm[n_own:]
    table = torch.zeros((B, cols), dtype=torch.int64)
    i = 0
    for b in range(B):
        cs = own[b]
        table[b, cs] = torch.tensor(ids[i:i + len(cs)], dtype=torch.int64)
        i += len(cs)
        # valid columns no entry addresses share the batch's own blocks (long context)
        alone = torch.ones(valid_cols[b], dtype=torch.bool)
        alone[cs] = False
        shared = torch.nonzero(alone).flatten()
        if shared.numel():
            table[b, shared] = table[b, cs][torch.randint(0, len(cs), (shared.numel(),),
                                                          generator=gen)] if cs else 0
        n_unused = cols - valid_cols[b]
        if n_unused > 0:
            table[b, valid_cols[b]:] = (garbage_ids(gen, n_unused, n_blocks) if garbage else
                                        free[torch.randint(0, len(free), (n_unused,),
                                                           generator=gen)])
    return table.to(torch.int32), n_blocks


def relabel_blocks(pool: torch.Tensor, table: torch.Tensor, perm: torch.Tensor):
    """Move physical block `i` to `perm[i]` and rewrite the table to match: the same
    logical contents under new physical labels. Ids outside the pool (garbage in unused
    columns) are left as they are."""
    new_pool = torch.empty_like(pool)
    new_pool[perm] = pool
    t = table.to(torch.int64)
    inside = (t >= 0) & (t < pool.shape[0])
    moved = perm.to(torch.int64)[t.clamp(0, pool.shape[0] - 1)]
    return new_pool, torch.where(inside, moved, t).to(torch.int32)
