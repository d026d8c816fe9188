"""Calling a kernel under test, and the checks the properties share."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from hypothesis import target
from hypothesis.control import current_build_context, currently_in_test_context
from hypothesis.errors import HypothesisException

from sparse_attn_conformance import contracts
from sparse_attn_conformance.attention import counterfactuals, lse_counterfactuals
from sparse_attn_conformance.attention.compare import compare, golden, row_errors, tolerance
from sparse_attn_conformance.attention.lse import compare_lse, ratios
from sparse_attn_conformance.conformance import calls, packing, picture, recorder
from sparse_attn_conformance.conformance.failures import KernelFailure
from sparse_attn_conformance.contracts import checks
from sparse_attn_conformance.contracts.v1 import Inputs
from sparse_attn_conformance.kernels.interface import KernelUnderTest

#: per kernel: the arguments of its latest call, and of the latest call in a failing example
_last_args: dict[str, dict] = {}
failing_args: dict[str, dict] = {}
#: the arguments of the running example's latest call (as `calls.arguments`: no copies)
_example_call: dict | None = None


def call(kernel: KernelUnderTest, inputs: Inputs, args: dict | None = None) -> torch.Tensor:
    """Call the kernel on a fresh copy of `inputs` (or on `args`, if given); return its
    output as CPU fp32. Anything the kernel raises becomes a `KernelFailure` that names the
    kernel and keeps whatever diagnostics the exception carries.

    A kernel declaring an LSE (`kernel.lse`, docs/contract.md section 13) returns `(o, lse)`:
    its LSE is checked here against the reference's for `inputs` (attention/lse.py), a
    mismatch failing the property (`AssertionError`), and `o` is returned as for any other."""
    global _example_call
    _example_call = calls.arguments(inputs) if args is None else args
    kw = inputs.kwargs() if args is None else args
    front = contracts.of(inputs)
    front.validate(**kw)  # the suite's own inputs must be valid: fail loudly if not
    if getattr(kernel.fn, "diagnose", None) is not None:
        # kept only for a kernel that can use them: a run of many kernels in one worker
        # would otherwise hold every kernel's latest (an edge case's: hundreds of MB) call
        _last_args[kernel.name] = kw
    try:
        out = kernel.fn(**kw)
    except Exception as exc:
        raise KernelFailure(
            f"kernel {kernel.name!r} raised {type(exc).__name__}: {exc}") from exc
    lse = None
    if kernel.lse is not None:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise KernelFailure(
                f"kernel {kernel.name!r}: declares an LSE ({kernel.lse!r}), so it must return "
                f"a 2-tuple (o, lse); got {_kind(out)}")
        out, lse = out
    elif isinstance(out, (tuple, list)):
        raise KernelFailure(
            f"kernel {kernel.name!r}: returned {_kind(out)}, but it declares no LSE: a kernel "
            f"returns `o` alone unless it declares `fn.lse = kernels.interface.LSE(...)` "
            f"(docs/contract.md section 13), and then returns (o, lse)")
    try:
        o = front.validate_output(out, inputs)
        if lse is not None:
            lse = _validate_lse(lse, inputs)
    except ValueError as exc:
        raise KernelFailure(f"kernel {kernel.name!r}: {exc}") from exc
    if lse is not None:
        _expect_lse(kernel, lse, inputs)
    return o


def _kind(out) -> str:
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def _validate_lse(lse, inputs: Inputs) -> torch.Tensor:
    """A kernel's LSE, checked to be a floating tensor `[*tokens, H]` (v1 `[B, S, H]`, v2
    `[T, H]`), as a CPU tensor of its own dtype."""
    if inputs.CONVENTION == "v2":
        shape, form = (inputs.T, inputs.H), "[T, H]"
    else:
        shape, form = (inputs.B, inputs.S, inputs.H), "[B, S, H]"
    checks.expect(isinstance(lse, torch.Tensor), "kernel lse", "a torch.Tensor",
                  type(lse).__name__)
    checks.expect(tuple(lse.shape) == shape, "kernel lse", f"shape {list(shape)} ({form})",
                  f"shape {list(lse.shape)}")
    checks.expect(lse.is_floating_point(), "kernel lse", "a floating dtype", lse.dtype)
    return lse.detach().to("cpu")


def _expect_lse(kernel: KernelUnderTest, lse: torch.Tensor, inputs: Inputs) -> None:
    """Assert the kernel's LSE matches the reference's for `inputs` under its declaration
    (attention/lse.py); a mismatch is a property failure (`AssertionError`)."""
    global _example_worst
    att = inputs.attended()
    result = compare_lse(lse, att, kernel.lse)
    _example_worst = max(_example_worst, result.worst_ratio)
    if not result.ok:
        error = AssertionError(f"kernel {kernel.name!r}: {result.message}")
        if _final_example():
            found = lse_counterfactuals.diagnose(att, lse, kernel.lse).as_dict()
            error.add_note("diagnosis of the LSE (attention/lse_counterfactuals.py):\n"
                           + counterfactuals.text_of(found))
            recorder.note_diagnosis(found, picture.of(att, ratios(lse, att, kernel.lse)[0],
                                                      found))
        raise error


def call_many(kernel: KernelUnderTest, parts: list[Inputs]) -> list[torch.Tensor]:
    """The kernel's output for each of several independent calls. A kernel that declares
    `max_packed_batch` gets them packed along `B` into as few calls as its limit allows
    (`conformance.packing`); any other kernel gets one call each. A failure names the
    packed call."""
    # packing is written for v1 calls (conformance/packing.py); other conventions' calls
    # are made one by one
    if kernel.max_packed_batch < 2 or len(parts) < 2 or parts[0].CONVENTION != "v1":
        return [call(kernel, p) for p in parts]
    outs: list[torch.Tensor | None] = [None] * len(parts)
    for group in packing.groups(parts, kernel.max_packed_batch):
        if len(group) == 1:
            outs[group[0]] = call(kernel, parts[group[0]])
            continue
        packed = packing.pack([parts[k] for k in group])
        try:
            out = call(kernel, packed.inputs)
        except KernelFailure as exc:
            raise KernelFailure(f"{exc}\n(in a call packing {len(group)} independent calls "
                                f"along B: {packed.inputs!r})") from exc
        for k, piece in zip(group, packed.split(out), strict=True):
            outs[k] = piece
    return outs


def expect_matches(actual: torch.Tensor, inputs: Inputs, what: str = "kernel output",
                   expected: torch.Tensor | None = None, against: str = "the reference") -> None:
    """Assert `actual` matches `expected`, by default the contract's output for `inputs`
    (the reference), within the tolerance of attention/compare.py, and record the margin."""
    att = inputs.attended()
    reference = golden(att)
    if expected is None:
        expected = reference
    tol = tolerance(att, reference)
    result = compare(actual, expected, tol, what, against, att.row_dims)
    global _example_worst
    _example_worst = max(_example_worst, result.worst_ratio)
    if not result.ok:
        error = AssertionError(result.message)
        if _final_example():
            found = counterfactuals.diagnose(
                att, actual, tol, gold=reference,
                catalogue=_convention_hypotheses(inputs) + counterfactuals.CATALOGUE).as_dict()
            error.add_note("diagnosis (attention/counterfactuals.py):\n"
                           + counterfactuals.text_of(found))
            _, ratio = row_errors(actual, expected, tol)
            recorder.note_diagnosis(found, picture.of(att, ratio, found))
        raise error
    recorder.note_ratio(result.worst_ratio)


def _convention_hypotheses(inputs) -> tuple:
    """The counterfactuals of `inputs`' calling convention (its derivations: lengths, cut)."""
    if inputs.CONVENTION == "v2":
        from sparse_attn_conformance.conformance.v2 import counterfactuals
    else:
        from sparse_attn_conformance.conformance.v1 import counterfactuals
    return counterfactuals.hypotheses(inputs)


def _final_example() -> bool:
    """Whether this is the example a failure is reported with: Hypothesis' final replay
    of the shrunk example, or a property run outside Hypothesis (the diagnosis is not
    worth its time on every example shrinking tries)."""
    if not currently_in_test_context():
        return True
    return current_build_context().is_final


def expect_equal_rows(actual: torch.Tensor, expected: torch.Tensor, inputs: Inputs,
                      what: str, against: str) -> None:
    """Assert two outputs of the kernel agree within the comparison tolerance."""
    expect_matches(actual, inputs, what, expected=expected.double(), against=against)


#: the largest error / tolerance ratio of the running example's comparisons
_example_worst = 0.0
#: the label under which examples' worst ratios are reported to `hypothesis.target`
TARGET_LABEL = "error / tolerance"


@contextmanager
def example(case, kernel: KernelUnderTest, transform: str | None = None):
    """Wrap one example's body (see `recorder.example`); on failure tell the call the
    kernel got (`calls.describe`: every argument of its latest call, what the property
    changed from the drawn case, `transform` naming the change in one line) in the
    failure and the report, and keep its arguments for the kernel's own diagnostics
    (`diagnose`).

    The example's worst error-to-tolerance ratio goes to `hypothesis.target`, so that
    Hypothesis searches towards near misses and drives them over the line, instead of
    only sampling."""
    global _example_worst, _example_call
    _example_worst = 0.0
    _example_call = None
    try:
        with recorder.example(case):
            yield
        target(min(_example_worst, 1e6), label=TARGET_LABEL)
    except HypothesisException:
        raise  # a rejected draw, not a failure (as in recorder.example)
    except Exception as exc:
        if kernel.name in _last_args:
            failing_args[kernel.name] = _last_args[kernel.name]
        if _example_call is not None:
            told = calls.describe(_example_call, calls.arguments(case.inputs), transform)
            exc.add_note(f"the call the kernel got (the property's latest call):\n{told}")
            counterexample = recorder.current().counterexample
            if counterexample is not None:
                counterexample["call"] = told
        raise
    finally:
        _example_call = None


def diagnose(kernel: KernelUnderTest) -> str | None:
    """What the kernel's optional `diagnose` (`kernels.interface.Kernel`) says about its
    latest failing call (for the pypto kernel: which compiler pass first diverged)."""
    args = failing_args.pop(kernel.name, None)
    return kernel.diagnose(args) if args is not None else None
