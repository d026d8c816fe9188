"""The contract's output from what each token attends to (docs/contract.md section 3):

    z_j = softmax_scale * <q[t, h], k_j>,   m = max_j z_j
    o[t, h] = sum_j exp(z_j - m) v_j / (sum_j exp(z_j - m) + exp(attn_sink[h] - m))

over the token's live rows (`k_j = v_j`), and exactly 0 for a token with no live row.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.attention.attended import Attended


def attend(att: Attended, dtype: torch.dtype = torch.float32,
           prob_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The output `[*tokens, H, D_v]` computed in `dtype`.

    prob_dtype: if given, the probabilities are rounded to it before the value product, as
    a device kernel feeding a bf16 matmul does (used to calibrate tolerances).
    """
    kv = att.rows.to(dtype)
    q = att.q.to(dtype)
    live = att.live
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", q, kv)
    live_h = live.unsqueeze(-2)
    z = torch.where(live_h, z, torch.tensor(float("-inf"), dtype=dtype))
    m = z.amax(dim=-1, keepdim=True)
    empty = ~live.any(dim=-1)
    empty_h = empty[..., None, None]
    m = torch.where(empty_h, torch.zeros((), dtype=dtype), m)
    p = torch.where(live_h, torch.exp(z - m), torch.zeros((), dtype=dtype))
    sink = att.attn_sink.to(dtype)[:, None]
    denom = p.sum(dim=-1, keepdim=True) + torch.exp(sink - m)
    pv = p if prob_dtype is None else p.to(prob_dtype).to(dtype)
    v = kv if att.d_v is None else kv[..., :att.d_v]
    o = torch.einsum("...ht,...td->...hd", pv, v) / denom
    # A token with no live entry returns exactly 0 (its denominator may be 0 or inf).
    return torch.where(empty_h, torch.zeros((), dtype=dtype), o)
