"""Case packing: several independent calls concatenated along `B` into one kernel call, and
the output split back per call.

The contract makes batches independent (docs/contract.md section 3: a token reads only its
own batch's length, tables and the rows they address), so a call assembled from parts must
give every part's batches the output the part's own call gives. A kernel whose calls have a
large fixed cost (the simulated pypto kernel) declares `max_packed_batch`
(`kernels.interface.Kernel`), and the properties hand their independent calls to
`conformance.harness.call_many`, which packs them here.

Parts can share one call only when everything the call shares agrees: `S`, `H`, `D`,
`window_size`, `BLOCK`, `softmax_scale`, `attn_sink` and the dtypes (`compatible`). The
pack keeps each part's meaning:

- pools are concatenated and each part's live table entries offset by the blocks before it;
  a garbage entry (negative, or past the part's pool) stays garbage: past the packed pool;
- tables are widened to the widest part with `-1` (an unused entry, contract section 2);
- index rows are widened to the longest part with `-1` (ignored entries);
- the packed call takes the first part's layout where it still applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparse_attn_conformance.conformance.v1.views import widen
from sparse_attn_conformance.contracts.v1 import Inputs


@dataclass(frozen=True)
class Packed:
    """One packed call and, per part, the slice of its batches."""

    inputs: Inputs
    spans: tuple[slice, ...]

    def split(self, out: torch.Tensor) -> list[torch.Tensor]:
        """The packed call's output `[B, S, H, D]` cut back into the parts' outputs."""
        return [out[span] for span in self.spans]


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().numpy().tobytes()


def compatible(a: Inputs, b: Inputs) -> str | None:
    """Why `a` and `b` cannot share one call, in words; None when they can."""
    for what in ("S", "H", "D", "window_size", "BLOCK", "softmax_scale"):
        if getattr(a, what) != getattr(b, what):
            return f"{what} differs ({getattr(a, what)} vs {getattr(b, what)})"
    for name in ("q", "ori_kv", "cmp_kv", "attn_sink", "topk_idxs", "seqused_kv",
                 "ori_block_table", "cmp_block_table"):
        if getattr(a, name).dtype != getattr(b, name).dtype:
            return f"{name}.dtype differs"
    if a.attn_sink.shape != b.attn_sink.shape or _bits(a.attn_sink) != _bits(b.attn_sink):
        return "attn_sink differs (it is shared by every token of a call)"
    for name in ("ori_kv_scale", "cmp_kv_scale"):  # a per-tensor FP8 pool's one scale
        sa, sb = getattr(a, name), getattr(b, name)
        if (sa is None) != (sb is None) or (sa is not None and _bits(sa) != _bits(sb)):
            return f"{name} differs (one scale for each pool of a call)"
    return None


def _relabel(table: torch.Tensor, n_blocks: int, offset: int, total: int) -> torch.Tensor:
    """A part's table in the packed pool: entries naming one of its `n_blocks` blocks move by
    `offset`; entries past its pool move past the packed pool (`total` blocks); negative
    entries stay. Computed in int64, so int32 extremes stay what they were."""
    t = table.to(torch.int64)
    own = (t >= 0) & (t < n_blocks)
    past = (t >= n_blocks) & (t < total)  # would land in another part's blocks
    t = torch.where(own, t + offset, torch.where(past, t - n_blocks + total, t))
    return t.to(table.dtype)


def pack(parts: list[Inputs]) -> Packed:
    """Concatenate `parts` along `B` into one call (see the module docstring). Raises
    `ValueError` naming the first part that cannot share the call."""
    if not parts:
        raise ValueError("pack: expected at least one part, got none")
    first = parts[0]
    for k, p in enumerate(parts[1:], 1):
        reason = compatible(first, p)
        if reason is not None:
            raise ValueError(f"pack: part {k} cannot share a call with part 0: {reason}")
    if len(parts) == 1:
        return Packed(first, (slice(0, first.B),))
    n_ori = [p.ori_kv.shape[0] for p in parts]
    n_cmp = [p.cmp_kv.shape[0] for p in parts]
    ori_w = max(p.ori_block_table.shape[1] for p in parts)
    cmp_w = max(p.cmp_block_table.shape[1] for p in parts)
    topk = max(p.TOPK for p in parts)
    total_ori, total_cmp = sum(n_ori), sum(n_cmp)
    ori_t, cmp_t, spans = [], [], []
    o_off = c_off = b_off = 0
    for p, no, nc in zip(parts, n_ori, n_cmp, strict=True):
        ori_t.append(widen(_relabel(p.ori_block_table, no, o_off, total_ori), ori_w, -1))
        cmp_t.append(widen(_relabel(p.cmp_block_table, nc, c_off, total_cmp), cmp_w, -1))
        spans.append(slice(b_off, b_off + p.B))
        o_off, c_off, b_off = o_off + no, c_off + nc, b_off + p.B
    packed = first.replace(
        q=torch.cat([p.q for p in parts]),
        ori_kv=torch.cat([p.ori_kv for p in parts]),
        ori_block_table=torch.cat(ori_t),
        cmp_kv=torch.cat([p.cmp_kv for p in parts]),
        cmp_block_table=torch.cat(cmp_t),
        topk_idxs=torch.cat([widen(p.topk_idxs, topk, -1) for p in parts]),
        seqused_kv=torch.cat([p.seqused_kv for p in parts]),
    )  # `replace` keeps the first part's layout where it still applies
    return Packed(packed, tuple(spans))


def groups(parts: list[Inputs], max_batch: int) -> list[list[int]]:
    """Indices of `parts` grouped into packed calls, in order: a part joins the open group
    while the group's total `B` stays within `max_batch` and it can share the call with the
    group's first part; a part alone over `max_batch` gets a call of its own."""
    out: list[list[int]] = []
    total = 0
    for k, p in enumerate(parts):
        if out and total + p.B <= max_batch and compatible(parts[out[-1][0]], p) is None:
            out[-1].append(k)
            total += p.B
        else:
            out.append([k])
            total = p.B
    return out
