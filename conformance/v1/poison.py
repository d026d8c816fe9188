"""Poisoning what a call may not read: every pool row no live entry addresses, and every
ignored index entry (replaced by another ignored value)."""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.v1 import Inputs, addressed_rows, derived_lengths, live_mask

#: Values an unread row is filled with, cycled: each breaks a different leak.
POISON = (float("nan"), float("inf"), float("-inf"), 3.0e38, -3.0e38)


def poison_pool(pool: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of `pool` with every row outside `keep` set to a poison value (a byte pool's
    rows to its format's NaN codes and scales: `contracts.formats.poison_pool`)."""
    if formats.of_pool(pool) != formats.BF16:
        return formats.poison_pool(pool, keep)
    out = pool.clone()
    idx = torch.nonzero(~keep.reshape(-1)).flatten()
    values = torch.tensor(POISON, dtype=torch.float32)[torch.arange(idx.numel()) % len(POISON)]
    flat = out.view(-1, out.shape[-1])
    flat[idx] = values[:, None].to(out.dtype).expand(-1, out.shape[-1])
    return out


def ignored_values(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, entry values that are ignored for it `[B, S, 8]` int64, and how many of
    the 8 apply `[B, S]` (the last two only while the window is not full)."""
    win = inputs.window_size
    _, wv, cv = derived_lengths(inputs.seqused_kv, inputs.S, win)
    const = torch.tensor([-1, -2, 2**31 - 1, -(2**31)], dtype=torch.int64).expand(*wv.shape, 4)
    values = torch.cat([const, torch.stack([win + cv, win + cv + 1, wv,
                                            torch.full_like(wv, win - 1)], dim=-1)], dim=-1)
    count = torch.where(wv < win, 8, 6)
    return values, count


def garbage_entries(inputs: Inputs, gen: torch.Generator) -> torch.Tensor:
    """`topk_idxs` with every ignored entry replaced by another ignored value; live entries
    stay where they are."""
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, inputs.window_size)
    values, count = ignored_values(inputs)
    pick = (torch.rand(live.shape, generator=gen) * count[..., None]).long()
    garbage = torch.gather(values, -1, pick).to(torch.int32)
    return torch.where(live, inputs.topk_idxs, garbage)


def poisoned(inputs: Inputs, gen: torch.Generator, entries: bool) -> Inputs:
    """`inputs` with every unread row poisoned and, if `entries`, every ignored entry
    replaced by garbage."""
    ori_keep, cmp_keep = addressed_rows(inputs)
    changes = dict(ori_kv=poison_pool(inputs.ori_kv, ori_keep),
                   cmp_kv=poison_pool(inputs.cmp_kv, cmp_keep))
    if entries:
        changes["topk_idxs"] = garbage_entries(inputs, gen)
    return inputs.replace(**changes)
