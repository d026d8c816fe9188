"""Calling a kernel under test, and the checks the properties share."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from hypothesis.errors import HypothesisException

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


#: per kernel: the arguments of its latest call, and of the latest call in a failing example
_last_args: dict[str, dict] = {}
failing_args: dict[str, dict] = {}


def call(kernel: KernelUnderTest, inputs: Inputs, args: dict | None = None) -> torch.Tensor:
    """Call the kernel on a fresh copy of `inputs` (or on `args`, if given); return its
    output as CPU fp32. Anything the kernel raises becomes a `KernelFailure` that names the
    kernel and keeps whatever diagnostics the exception carries."""
    kw = inputs.kwargs() if args is None else args
    validate(**kw)  # the suite's own inputs must be valid: fail loudly if not
    _last_args[kernel.name] = kw
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


@contextmanager
def example(case, kernel: KernelUnderTest):
    """Wrap one example's body (see `recorder.example`); on failure keep the arguments of
    the kernel's latest call, for the kernel's own diagnostics (`diagnose`)."""
    try:
        with recorder.example(case):
            yield
    except HypothesisException:
        raise  # a rejected draw, not a failure (as in recorder.example)
    except Exception:
        if kernel.name in _last_args:
            failing_args[kernel.name] = _last_args[kernel.name]
        raise


def diagnose(kernel: KernelUnderTest) -> str | None:
    """What the kernel's optional `diagnose(**args)` says about its latest failing call
    (for the pypto kernel: which compiler pass first diverged)."""
    fn = getattr(kernel.fn, "diagnose", None)
    args = failing_args.pop(kernel.name, None)
    if fn is None or args is None:
        return None
    try:
        return str(fn(**args))
    except Exception as exc:  # diagnostics must never hide the failure itself
        return f"{kernel.name}.diagnose failed: {type(exc).__name__}: {exc}"
