"""Poisoning what a call may not read: every pool row no live entry addresses, and every
ignored index entry (replaced by another ignored value)."""

from __future__ import annotations

import torch

from kernels.contract import Inputs, derived_lengths, live_mask

#: Values an unread row is filled with, cycled: each breaks a different leak.
POISON = (float("nan"), float("inf"), float("-inf"), 3.0e38, -3.0e38)


def addressed_rows(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean `[N, BLOCK]` masks of the window and compressed pool rows that some live
    entry of some token addresses."""
    win, block = inputs.window_size, inputs.BLOCK
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    ori = torch.zeros(inputs.ori_kv.shape[:2], dtype=torch.bool)
    cmp = torch.zeros(inputs.cmp_kv.shape[:2], dtype=torch.bool)
    for b, s, j in torch.nonzero(live).tolist():
        e = int(inputs.topk_idxs[b, s, j])
        if e < win:
            ori[int(inputs.ori_block_table[b, e // block]), e % block] = True
        else:
            c = e - win
            cmp[int(inputs.cmp_block_table[b, c // block]), c % block] = True
    return ori, cmp


def poison_pool(pool: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A copy of `pool` with every row outside `keep` set to a poison value."""
    out = pool.clone()
    rows = torch.nonzero(~keep).tolist()
    for i, (n, r) in enumerate(rows):
        out[n, r] = POISON[i % len(POISON)]
    return out


def ignored_values(inputs: Inputs, b: int, s: int) -> list[int]:
    """Entry values that are ignored for token `(b, s)`."""
    win = inputs.window_size
    _, wv, cv = derived_lengths(inputs.seqused_kv, inputs.S, win)
    wv, cv = int(wv[b, s]), int(cv[b, s])
    out = [-1, -2, win + cv, win + cv + 1, 2**31 - 1, -(2**31)]
    if wv < win:
        out += [wv, win - 1]
    return out


def garbage_entries(inputs: Inputs, gen: torch.Generator) -> torch.Tensor:
    """`topk_idxs` with every ignored entry replaced by another ignored value; live entries
    stay where they are."""
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, inputs.window_size)
    rows = inputs.topk_idxs.clone()
    for b in range(inputs.B):
        for s in range(inputs.S):
            choices = ignored_values(inputs, b, s)
            for j in torch.nonzero(~live[b, s]).flatten().tolist():
                rows[b, s, j] = choices[int(torch.randint(len(choices), (1,), generator=gen))]
    return rows


def poisoned(inputs: Inputs, gen: torch.Generator, entries: bool) -> Inputs:
    """`inputs` with every unread row poisoned and, if `entries`, every ignored entry
    replaced by garbage."""
    ori_keep, cmp_keep = addressed_rows(inputs)
    changes = dict(ori_kv=poison_pool(inputs.ori_kv, ori_keep),
                   cmp_kv=poison_pool(inputs.cmp_kv, cmp_keep))
    if entries:
        changes["topk_idxs"] = garbage_entries(inputs, gen)
    return inputs.replace(**changes)
