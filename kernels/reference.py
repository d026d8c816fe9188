"""The torch reference: docs/contract.md computed directly, vectorised over tokens.

It gathers every index entry through a safe address and then zeroes the rows of ignored
entries with `where` (never by multiplying), so an unread row's NaN or inf cannot reach the
output: reading and discarding is equivalent to not reading.
"""

from __future__ import annotations

import torch

from kernels.contract import Inputs, live_mask, validate


def gather_rows(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows addressed by every index entry, `[B, S, TOPK, D]` bf16, and the live mask.

    Ignored entries get a zero row, whatever their address would hold.
    """
    win, block = inputs.window_size, inputs.BLOCK
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    e = inputs.topk_idxs.to(torch.int64)
    is_cmp = e >= win
    slot = torch.where(is_cmp, e - win, e).clamp(min=0)
    safe_slot = torch.where(live, slot, torch.zeros_like(slot))
    col = safe_slot // block
    row = safe_slot % block
    B = inputs.B
    bidx = torch.arange(B)[:, None, None].expand_as(col)
    ori_cols = inputs.ori_block_table.shape[1]
    cmp_cols = inputs.cmp_block_table.shape[1]
    ori_block = inputs.ori_block_table.to(torch.int64)[bidx, col.clamp(max=ori_cols - 1)]
    cmp_block = inputs.cmp_block_table.to(torch.int64)[bidx, col.clamp(max=cmp_cols - 1)]
    ori_block = torch.where(live & ~is_cmp, ori_block, 0)
    cmp_block = torch.where(live & is_cmp, cmp_block, 0)
    ori_rows = inputs.ori_kv[ori_block, row]
    cmp_rows = inputs.cmp_kv[cmp_block, row]
    rows = torch.where(is_cmp[..., None], cmp_rows, ori_rows)
    rows = torch.where(live[..., None], rows, torch.zeros((), dtype=rows.dtype))
    return rows, live


def attend(inputs: Inputs, dtype: torch.dtype = torch.float32,
           prob_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The contract's output `[B, S, H, D]` computed in `dtype`.

    prob_dtype: if given, the probabilities are rounded to it before the value product, as
    a device kernel feeding a bf16 matmul does (used to calibrate tolerances).
    """
    rows, live = gather_rows(inputs)
    kv = rows.to(dtype)
    q = inputs.q.to(dtype)
    z = inputs.softmax_scale * torch.einsum("bshd,bstd->bsht", q, kv)
    live_h = live[:, :, None, :]
    z = torch.where(live_h, z, torch.tensor(float("-inf"), dtype=dtype))
    m = z.amax(dim=-1, keepdim=True)
    empty = ~live.any(dim=-1)
    m = torch.where(empty[:, :, None, None], torch.zeros((), dtype=dtype), m)
    p = torch.where(live_h, torch.exp(z - m), torch.zeros((), dtype=dtype))
    sink = inputs.attn_sink.to(dtype)[None, None, :, None]
    denom = p.sum(dim=-1, keepdim=True) + torch.exp(sink - m)
    pv = p if prob_dtype is None else p.to(prob_dtype).to(dtype)
    o = torch.einsum("bsht,bstd->bshd", pv, kv) / denom
    # A token with no live entry returns exactly 0 (its denominator may be 0 or inf).
    return torch.where(empty[:, :, None, None], torch.zeros((), dtype=dtype), o)


def sparse_attn(**kw) -> torch.Tensor:
    """Kernel entry point (contract section 1): fp32 output.

    The arguments are made contiguous first: torch's matmul and reductions may round
    differently on other strides, and the reference's output must not depend on the layout.
    """
    kw = {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    return attend(validate(**kw), torch.float32)
