"""Where each cached row came from, modelled from the per-batch start positions (the model
paths of contract section 4): window ring slot `p % WIN` holds position `p`, the latest
write winning; compressed slot `c` summarises positions `[c*r, (c+1)*r)` and exists once
position `(c+1)*r - 1` is written. After a call all positions `< start_pos + S` are written.
"""

from __future__ import annotations

import torch

from kernels.contract import Inputs

UNWRITTEN = None


def window_slot_position(w: int, written: int, win: int) -> int | None:
    """The position ring slot `w` holds once positions `[0, written)` are written."""
    if w >= written:
        return UNWRITTEN
    return w + win * ((written - 1 - w) // win)


def cmp_slot_last_position(c: int, ratio: int) -> int:
    """The last position compressed slot `c` summarises."""
    return (c + 1) * ratio - 1


def later_rows(inputs: Inputs, start_pos, ratio: int, s: int):
    """Boolean `[N, BLOCK]` masks of the window and compressed pool rows that hold a position
    later than token `s`'s own (`start_pos[b] + s`) for its batch `b`, or nothing written."""
    win, block, S = inputs.window_size, inputs.BLOCK, inputs.S
    ori = torch.zeros(inputs.ori_kv.shape[:2], dtype=torch.bool)
    cmp = torch.zeros(inputs.cmp_kv.shape[:2], dtype=torch.bool)
    for b, p0 in enumerate(start_pos):
        own, written = p0 + s, p0 + S
        for w in range(win):
            pos = window_slot_position(w, written, win)
            if pos is UNWRITTEN or pos > own:
                ori[int(inputs.ori_block_table[b, w // block]), w % block] = True
        for c in range(inputs.cmp_block_table.shape[1] * block):
            if ratio == 0 or cmp_slot_last_position(c, ratio) > own:
                cmp[int(inputs.cmp_block_table[b, c // block]), c % block] = True
    return ori, cmp


def ring_wrapped(start_pos, S: int, win: int) -> bool:
    """Whether some batch's ring holds a slot overwritten during the call's own tokens."""
    return any(p0 + S > win for p0 in start_pos)
