"""The exact mapping of a v1 call onto a v2 call with the same output (docs/contract.md
section 11): per token, the live v1 entries become v2 lanes, everything else `-1`."""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts import v1, v2
from sparse_attn_conformance.contracts.checks import ContractError


def _live_first(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per row of `values` `[T, K]`: the entries where `keep`, in row order, then `-1`."""
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)
    packed = torch.gather(values, -1, order)
    kept = torch.gather(keep, -1, order)
    return torch.where(kept, packed, -1)


def to_v2(inputs: v1.Inputs, compress_ratio: int = 1) -> v2.Inputs:
    """The v2 call (validated by `contracts.v2.validate`) whose every token attends exactly
    the live multiset of the same v1 token, so `o_v2[b*S + s] == o_v1[b, s]`.

    For token `t = b*S + s`, scanning `topk_idxs[b, s]` in order:

    - a live window entry `e` (`0 <= e < window_valid`) becomes flat row
      `ori_block_table[b, e // BLOCK] * BLOCK + e % BLOCK` of `window_swa_indices[t]`;
    - a live compressed entry `e` (`WIN <= e < WIN + cmp_valid`) becomes slot `e - WIN` of
      `idx_topk[t]`;
    - both lists keep the row's order and are padded with `-1`; every ignored entry is dropped.

    Both v2 widths are v1's `TOPK` (`WIN_v2 = IDX_TOPK_v2 = TOPK`): a v1 row may hold up to
    `TOPK` live entries of either kind (by duplication), and every one must fit.
    `position_ids[t] = max(compress_ratio * cmp_valid - 1, 0)`, so the cut
    `floor((pos + 1) / r)` equals `cmp_valid` (for `cmp_valid >= 1`) and keeps every listed
    slot, which are all below it. `q` is reshaped to `[B*S, H, D]`; pools, `cmp_block_table`,
    sink and scale carry over. The result is contiguous whatever `inputs.layout` says.

    Raises `ContractError` for arguments that are not a valid v1 call, for a
    `compress_ratio` that is not an int >= 1, and when a position would pass int32.
    """
    if not isinstance(inputs, v1.Inputs):
        raise ContractError(f"to_v2: expected a contracts.v1.Inputs, got {type(inputs).__name__}")
    r = compress_ratio
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ContractError(f"compress_ratio: expected an int >= 1 (the mapping needs a cut to "
                            f"place positions; None is v2's no-cut form), got {r!r}")
    # the canonical tensors, checked as a kernel call would be: a hand-built Inputs that
    # breaks v1 fails here, naming the v1 argument
    inputs = v1.validate(**{a: getattr(inputs, a) for a in inputs.call_arguments()})
    scales = {a: getattr(inputs, a) for a in inputs.call_arguments() if a not in v1.ARGUMENTS}
    B, S, H, D = inputs.q.shape
    T, win, block, topk = B * S, inputs.window_size, inputs.BLOCK, inputs.TOPK

    _, _, cmp_valid = v1.derived_lengths(inputs.seqused_kv, S, win)
    live = v1.live_mask(inputs.topk_idxs, inputs.seqused_kv, win).reshape(T, topk)
    e = inputs.topk_idxs.to(torch.int64).reshape(T, topk)
    live_w = live & (e < win)
    live_c = live & (e >= win)

    # flat ori rows of live window entries; an ignored entry looks up column 0 (its value is
    # dropped below, and the column it names may be garbage)
    slot = torch.where(live_w, e, 0)
    b = (torch.arange(T) // S)[:, None].expand_as(slot)
    blocks = inputs.ori_block_table.to(torch.int64)[b, slot // block]
    window = _live_first(blocks * block + slot % block, live_w)
    idx = _live_first(e - win, live_c)

    pos = (r * cmp_valid.reshape(T) - 1).clamp(min=0)
    if bool((pos > v2.INT32_MAX).any()):
        worst = int(cmp_valid.max())
        raise ContractError(f"compress_ratio: expected r * cmp_valid - 1 <= {v2.INT32_MAX} (an int32 "
                            f"position), got r={r} with cmp_valid={worst}")
    return v2.validate(
        q=inputs.q.reshape(T, H, D).contiguous(), ori_kv=inputs.ori_kv,
        window_swa_indices=window.to(torch.int32), cmp_kv=inputs.cmp_kv,
        cmp_block_table=inputs.cmp_block_table, idx_topk=idx.to(torch.int32),
        position_ids=pos.to(torch.int32)[:, None], attn_sink=inputs.attn_sink,
        softmax_scale=inputs.softmax_scale, seq_per_batch=S, index_topk=topk, compress_ratio=r,
        **scales)
