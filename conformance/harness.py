"""Calling a kernel under test, and the checks the properties share."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from conformance import recorder
from conformance.compare import compare, golden, tolerance
from kernels.contract import Inputs, Preconditions, validate, validate_output


class KernelFailure(AssertionError):
    """The kernel raised, crashed or returned something the contract does not allow."""


@dataclass(frozen=True)
class KernelUnderTest:
    name: str
    fn: object
    pre: Preconditions
    faulty: bool

    def __repr__(self) -> str:
        return f"KernelUnderTest({self.name!r})"


def call(kernel: KernelUnderTest, inputs: Inputs, args: dict | None = None) -> torch.Tensor:
    """Call the kernel on a fresh copy of `inputs` (or on `args`, if given); return its
    output as CPU fp32. Anything the kernel raises becomes a `KernelFailure` that names the
    kernel and keeps whatever diagnostics the exception carries."""
    kw = inputs.kwargs() if args is None else args
    validate(**kw)  # the suite's own inputs must be valid: fail loudly if not
    try:
        out = kernel.fn(**kw)
    except Exception as exc:
        raise KernelFailure(
            f"kernel {kernel.name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        return validate_output(out, inputs)
    except ValueError as exc:
        raise KernelFailure(f"kernel {kernel.name!r}: {exc}") from exc


def expect_matches(actual: torch.Tensor, inputs: Inputs, what: str = "kernel output",
                   gold: torch.Tensor | None = None, against: str = "the reference") -> None:
    """Assert `actual` matches the contract's output for `inputs` (or `gold`), within the
    tolerance of conformance/compare.py, and record the margin."""
    reference = golden(inputs)
    expected = reference if gold is None else gold
    result = compare(actual, expected, tolerance(inputs, reference), what, against)
    if not result.ok:
        raise AssertionError(result.message)
    recorder.note_ratio(result.worst_ratio)


def expect_equal_rows(actual: torch.Tensor, expected: torch.Tensor, inputs: Inputs,
                      what: str, against: str) -> None:
    """Assert two outputs of the kernel agree within the comparison tolerance."""
    expect_matches(actual, inputs, what, gold=expected.double(), against=against)
