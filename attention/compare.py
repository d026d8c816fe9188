"""Comparing a kernel's output with the reference, within a documented tolerance.

The rule follows FlashAttention's tests: a kernel's error against an fp64 golden output may
be at most `K` times the error of a same-dtype torch computation (here: the reference with
its probabilities rounded to bf16 before the value product and its output rounded to bf16,
which is what a device kernel feeding a bf16 matmul does), plus an absolute floor relative
to the largest live value row, so a zero baseline error cannot fail everything. Errors are
measured per `(b, s, h)` output row, so a failure names the token.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.reference import attend

#: Multiple of the same-dtype baseline error a kernel may make.
K = 3.0
#: Absolute floor, relative to the largest magnitude in the token's live value rows: half a
#: bf16 ulp at 1.0 (2**-8), the rounding of one bf16 output.
FLOOR_REL = 2.0**-8
FLOOR_ABS = 1e-6


@dataclass
class Comparison:
    """The outcome of comparing one output with the reference."""

    ok: bool
    worst_ratio: float          # max over rows of err / tol (<= 1 passes)
    message: str


def _attended(what) -> Attended:
    """`what` itself, or what a convention's `Inputs` attends to."""
    return what if isinstance(what, Attended) else what.attended()


def golden(inputs) -> torch.Tensor:
    """The contract's output in fp64, for a convention's `Inputs` (or an `Attended`)."""
    return attend(_attended(inputs), torch.float64)


def tolerance(inputs, gold: torch.Tensor) -> torch.Tensor:
    """Per output row (`[*tokens, H]`) tolerance."""
    att = _attended(inputs)
    # a device kernel's rows are bf16 (an FP8 row dequantised to bf16 for the matmul):
    # exact for bf16 pools and power-of-two scales, the kernel's own rounding otherwise
    as_bf16 = replace(att, rows=att.rows.to(torch.bfloat16))
    base = attend(as_bf16, torch.float32, prob_dtype=torch.bfloat16).to(torch.bfloat16)
    err_base = (base.double() - gold).abs().amax(dim=-1)
    vmax = att.values.double().abs().amax(dim=(-1, -2))[..., None]
    return K * err_base + FLOOR_REL * vmax + FLOOR_ABS


def row_errors(actual: torch.Tensor, expected: torch.Tensor,
               tol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output row: the largest error, and its ratio to the row's tolerance. A
    non-finite value on either side is an infinite error; a NaN tolerance (a reference
    outside the domain) can never be met."""
    actual, expected = actual.double(), expected.double()
    finite = torch.isfinite(actual).all(dim=-1) & torch.isfinite(expected).all(dim=-1)
    err = (actual - expected).abs().amax(dim=-1)
    err = torch.where(finite, err, torch.tensor(float("inf"), dtype=err.dtype))
    ratio = err / tol.double()
    return err, torch.where(torch.isnan(ratio), float("inf"), ratio)


def compare(actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor,
            what: str = "kernel output", against: str = "the reference",
            dims: tuple[str, ...] = ("b", "s", "h")) -> Comparison:
    """Per-row check that `actual` is finite and within `tol` of `expected`; `dims` names
    a row's index in the message (`Attended.row_dims`)."""
    actual, expected = actual.double(), expected.double()
    err, ratio = row_errors(actual, expected, tol)
    worst = float(ratio.max()) if ratio.numel() else 0.0
    if worst <= 1.0:
        return Comparison(True, worst, "")
    at = tuple(int(i) for i in torch.nonzero(ratio == ratio.max())[0])
    bad = int((ratio > 1).sum())
    where = " ".join(f"{n}={i}" for n, i in zip(dims, at, strict=True))
    idx = ",".join(str(i) for i in at)
    msg = (f"{what} differs from {against} in {bad} of {ratio.numel()} ({', '.join(dims)}) "
           f"rows; worst at {where}: error {float(err[at]):.4g} > tolerance "
           f"{float(tol[at]):.4g}\n"
           f"  expected[{idx},:8] = {_fmt(expected[at][:8])}\n"
           f"  actual  [{idx},:8] = {_fmt(actual[at][:8])}")
    return Comparison(False, worst, msg)


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{float(x):.5g}" for x in t) + "]"
