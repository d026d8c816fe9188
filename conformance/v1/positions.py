"""Where each cached row came from, modelled from the per-batch start positions (the model
paths of contract section 4): window ring slot `p % WIN` holds position `p`, the latest
write winning; compressed slot `c` summarises positions `[c*r, (c+1)*r)` and exists once
position `(c+1)*r - 1` is written. After a call all positions `< start_pos + S` are written.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, mark_rows


def later_rows(inputs: Inputs, start_pos, ratio: int, s: int):
    """Boolean `[N, BLOCK]` masks of the window and compressed pool rows that hold a position
    later than token `s`'s own (`start_pos[b] + s`) for its batch `b`, or nothing written."""
    win, block, S = inputs.window_size, inputs.BLOCK, inputs.S
    ori = torch.zeros(inputs.ori_kv.shape[:2], dtype=torch.bool)
    cmp = torch.zeros(inputs.cmp_kv.shape[:2], dtype=torch.bool)
    w = torch.arange(win)
    c = torch.arange(inputs.cmp_block_table.shape[1] * block)
    for b, p0 in enumerate(start_pos):
        own, written = p0 + s, p0 + S
        # ring slot w holds position w + WIN * ((written - 1 - w) // WIN) once written
        pos = w + win * torch.div(written - 1 - w, win, rounding_mode="floor")
        mark_rows(ori, inputs.ori_block_table, b, w[(w >= written) | (pos > own)], block)
        later = torch.ones_like(c, dtype=torch.bool) if ratio == 0 else (c + 1) * ratio - 1 > own
        mark_rows(cmp, inputs.cmp_block_table, b, c[later], block)
    return ori, cmp


def ring_wrapped(start_pos, S: int, win: int) -> bool:
    """Whether some batch's ring holds a slot overwritten during the call's own tokens."""
    return any(p0 + S > win for p0 in start_pos)
