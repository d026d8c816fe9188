"""The torch reference kernels: the shared reference (`attention.reference`) behind each
calling convention's front end (`contracts.v1`, `contracts.v2`).

The front end gathers every index entry through a safe address and then zeroes the rows of
ignored entries with `where` (never by multiplying), so an unread row's NaN or inf cannot
reach the output: reading and discarding is equivalent to not reading.
"""

from __future__ import annotations

import torch

from attention.reference import attend
from contracts import v1, v2


def _contiguous(kw: dict) -> dict:
    # torch's matmul and reductions may round differently on other strides, and the
    # reference's output must not depend on the layout
    return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def sparse_attn(**kw) -> torch.Tensor:
    """v1 entry point (docs/contract.md section 1): `o` `[B, S, H, D]` fp32."""
    return attend(v1.validate(**_contiguous(kw)).attended(), torch.float32)


def sparse_attn_v2(**kw) -> torch.Tensor:
    """v2 entry point (docs/contract.md section 8): `o` `[T, H, D]` fp32."""
    return attend(v2.validate(**_contiguous(kw)).attended(), torch.float32)


sparse_attn_v2.convention = "v2"
