"""The torch reference kernels: the shared reference (`attention.reference`) behind each
calling convention's front end (`contracts.v1`, `contracts.v2`).

The front end gathers every index entry through a safe address and then zeroes the rows of
ignored entries with `where` (never by multiplying), so an unread row's NaN or inf cannot
reach the output: reading and discarding is equivalent to not reading.

`sparse_attn_lse` and `sparse_attn_v2_lse` also return the LSE (docs/contract.md section
13), computed by attention/lse.py in fp32, each under one of the two declarations device
kernels make: log2 with the sink (v1), and FlashMLA's natural log without the sink, +inf for
an empty token (v2).
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.attention import lse as lse_
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.reference import attend
from sparse_attn_conformance.contracts import v1, v2
from sparse_attn_conformance.kernels.interface import LSE


def _contiguous(kw: dict) -> dict:
    # torch's matmul and reductions may round differently on other strides, and the
    # reference's output must not depend on the layout
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def sparse_attn(**kw) -> torch.Tensor:
    """v1 entry point (docs/contract.md section 1): `o` `[B, S, H, D_v]` fp32."""
    return attend(v1.validate(**_contiguous(kw)).attended(), torch.float32)


def sparse_attn_v2(**kw) -> torch.Tensor:
    """v2 entry point (docs/contract.md section 8): `o` `[T, H, D_v]` fp32."""
    return attend(v2.validate(**_contiguous(kw)).attended(), torch.float32)


sparse_attn_v2.convention = "v2"
# The reference reads every cache format (section 12). The references declare bf16 (the
# baseline of bf16 runs: reports, meta-tests, the kill-rate's controls) and take another
# format from --kv-format.


def with_lse(att: Attended, decl: LSE, lse=lse_.lse) -> tuple[torch.Tensor, torch.Tensor]:
    """`(o, lse)` for what the tokens attend to, both fp32: the LSE computed by `lse`
    (attention/lse.py's, in fp32) in `decl`'s base, an empty token's set to `decl.empty`
    where one is declared."""
    value = lse_.in_base(lse(att, torch.float32, decl.with_sink), decl.base)
    if decl.empty is not None:
        empty = ~att.live.any(dim=-1)
        value = torch.where(empty.unsqueeze(-1), torch.tensor(decl.empty, dtype=value.dtype),
                            value)
    return attend(att, torch.float32), value.float()


def sparse_attn_lse(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """v1, with the LSE: `(o [B, S, H, D], lse [B, S, H])`, the LSE in log2 with the sink."""
    return with_lse(v1.validate(**_contiguous(kw)).attended(), sparse_attn_lse.lse)


sparse_attn_lse.lse = LSE(base="2", with_sink=True)


def sparse_attn_v2_lse(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """v2, with the LSE: `(o [T, H, D], lse [T, H])`, the LSE as FlashMLA's sparse decode
    keeps it: natural log, without the sink, +inf for an empty token."""
    return with_lse(v2.validate(**_contiguous(kw)).attended(), sparse_attn_v2_lse.lse)


sparse_attn_v2_lse.convention = "v2"
sparse_attn_v2_lse.lse = LSE(base="e", with_sink=False, empty=float("inf"))
