"""Paged KV pools: shuffled physical blocks, spare blocks, and the block tables that map
each batch's logical slots onto them."""

from __future__ import annotations

import torch


def block_table(gen: torch.Generator, B: int, cols: int, spare: int) -> tuple[torch.Tensor, int]:
    """A `[B, cols]` int32 table of distinct physical blocks in a pool of `B*cols + spare`.

    The physical order is a random permutation, so a kernel that assumes block `b*cols + j`
    or ignores the table reads the wrong rows.
    """
    n_blocks = B * cols + spare
    ids = torch.randperm(n_blocks, generator=gen)[: B * cols]
    return ids.reshape(B, cols).to(torch.int32), n_blocks


def fill_pool(gen: torch.Generator, n_blocks: int, block: int, D: int, scale: float,
              dist: str) -> torch.Tensor:
    """A `[n_blocks, block, D]` bf16 pool of rows drawn from `dist`."""
    shape = (n_blocks, block, D)
    if dist == "normal":
        rows = torch.randn(shape, generator=gen) * scale
    elif dist == "positive":
        rows = torch.rand(shape, generator=gen) * scale
    elif dist == "small_ints":
        # exact in bf16: differences between kernels are then rounding in the kernel only
        rows = torch.randint(-4, 5, shape, generator=gen).float() * scale
    else:
        raise ValueError(f"fill_pool: dist expected one of normal, positive, small_ints, got {dist!r}")
    return rows.to(torch.bfloat16)


def relabel_blocks(pool: torch.Tensor, table: torch.Tensor, perm: torch.Tensor):
    """Move physical block `i` to `perm[i]` and rewrite the table to match: the same
    logical contents under new physical labels."""
    new_pool = torch.empty_like(pool)
    new_pool[perm] = pool
    return new_pool, perm.to(torch.int64)[table.to(torch.int64)].to(torch.int32)
