"""Poisoning what a v2 call may not read: every pool row no live lane addresses, and every
ignored lane rewritten to another ignored value that addresses a poisoned row where it can
(a compressed id at or just past the token's cut, a live-looking id in a column
`>= IDX_TOPK`), so that a kernel reading one gets NaN or inf."""

from __future__ import annotations

import torch

from sparse_attn_conformance.conformance.v1.poison import POISON, poison_pool
from sparse_attn_conformance.contracts.v2 import Inputs, addressed_rows, cmp_bound, live_lanes

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _pick(gen: torch.Generator, choices: torch.Tensor) -> torch.Tensor:
    """One value per row of `choices` `[..., n]`, uniformly."""
    k = (torch.rand(choices.shape[:-1], generator=gen) * choices.shape[-1]).long()
    return torch.gather(choices, -1, k[..., None])[..., 0]


def garbage_lanes(inputs: Inputs, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`window_swa_indices` and `idx_topk` with every ignored lane replaced by another
    ignored value, live lanes kept. Window lanes get negatives (`-1`, `-2`, INT32_MIN);
    compressed lanes get negatives, the cut bound itself, the bound + 1 and INT32_MAX;
    columns `>= IDX_TOPK` get ids below the bound (live-looking: their rows exist) or any
    int32."""
    live_w, live_c = live_lanes(inputs)
    w = inputs.window_swa_indices.to(torch.int64)
    negatives = torch.tensor([-1, -2, INT32_MIN], dtype=torch.int64).expand(*w.shape, 3)
    w = torch.where(live_w, w, _pick(gen, negatives))
    idx = inputs.idx_topk.to(torch.int64).clone()
    n = inputs.index_topk
    c = idx[:, :n]
    bound = cmp_bound(inputs.position_ids, inputs.compress_ratio)[:, None].expand_as(c)
    at_bound = torch.stack([torch.full_like(c, -1), torch.full_like(c, INT32_MIN), bound,
                            bound + 1, torch.full_like(c, INT32_MAX)], dim=-1)
    # a candidate below the bound would be live, one past int32 is not an int32 (a bound at
    # 2^31 leaves only negatives): those become -1
    ignored = (at_bound < 0) | ((at_bound >= bound[..., None]) & (at_bound <= INT32_MAX))
    at_bound = torch.where(ignored, at_bound, -1)
    idx[:, :n] = torch.where(live_c, c, _pick(gen, at_bound))
    tail = idx[:, n:]
    if tail.numel():
        # the token's own live ids, and any int32: a kernel that reads past IDX_TOPK
        # attends one of these
        live_ids = torch.where(live_c, c, -1)
        own = live_ids.max(dim=-1, keepdim=True).values.expand_as(tail) if n else -torch.ones_like(tail)
        wild = torch.randint(INT32_MIN, INT32_MAX, tail.shape, generator=gen, dtype=torch.int64)
        idx[:, n:] = torch.where(torch.rand(tail.shape, generator=gen) < 0.5, own, wild)
    return w.to(torch.int32), idx.to(torch.int32)


def poisoned(inputs: Inputs, gen: torch.Generator, lanes: bool, keep_row0: bool) -> Inputs:
    """`inputs` with every unread pool row poisoned (flat row 0 of `ori_kv` kept finite if
    `keep_row0`, for a kernel declaring `finite_row0`) and, if `lanes`, every ignored lane
    replaced by garbage (`garbage_lanes`)."""
    ori_keep, cmp_keep = addressed_rows(inputs)
    if keep_row0:
        ori_keep = ori_keep.clone()
        ori_keep.view(-1)[0] = True
    changes = dict(ori_kv=poison_pool(inputs.ori_kv, ori_keep),
                   cmp_kv=poison_pool(inputs.cmp_kv, cmp_keep))
    if lanes:
        changes["window_swa_indices"], changes["idx_topk"] = garbage_lanes(inputs, gen)
    return inputs.replace(**changes)


__all__ = ["POISON", "addressed_rows", "garbage_lanes", "poisoned"]
