"""What the suite expects of a kernel under test, written once: the call (docs/contract.md)
and the optional attributes a kernel may carry, and `KernelUnderTest`, the suite's view of
a loaded kernel (built by `kernels.registry.kernel_under_test`).

A kernel is any callable with the contract's keyword arguments; a plain function does, and
it declares an optional attribute by setting it::

    def sparse_attn(*, q, ori_kv, ..., window_size):
        ...
    sparse_attn.preconditions = Preconditions(dims={"H": (64,)})
    sparse_attn.example_fraction = 0.2
    sparse_attn.diagnose = lambda **args: "first divergent pass: ..."

The suite reads each attribute through one function here (`preconditions_of`,
`example_fraction_of`, `shrink_seconds_of`, `KernelUnderTest.diagnose`), which supplies
the default for a kernel that does not declare it and rejects a malformed declaration with a `ContractError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from sparse_attn_conformance.contracts import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    ContractError,
    Preconditions,
    formats,
)
from sparse_attn_conformance.contracts.lse import LSE


class Kernel(Protocol):
    """A sparse decode attention kernel, as the suite calls it. Only the call is required;
    the attributes below are optional (a kernel that leaves one out gets its default)."""

    def __call__(self, *, q: torch.Tensor, ori_kv: torch.Tensor,
                 ori_block_table: torch.Tensor, cmp_kv: torch.Tensor,
                 cmp_block_table: torch.Tensor, topk_idxs: torch.Tensor,
                 attn_sink: torch.Tensor, seqused_kv: torch.Tensor, softmax_scale: float,
                 window_size: int) -> torch.Tensor:
        """`o` `[B, S, H, D]` for one call (docs/contract.md sections 1-3), any floating dtype
        on any device. The arguments are the kernel's to read (fresh buffers each call, CPU
        tensors, in the layouts `contracts.layout` describes); it must not modify them."""

    convention: str
    """The calling convention the kernel is written against (`contracts.CONVENTIONS`):
    "v1", the seed's (`seqused_kv`, docs/contract.md sections 1-7), or "v2", upstream's
    today (per-token window rows and positions, sections 8-11). It decides the keyword
    arguments of a call, the properties that run and the strategies that feed them; a run's
    `--contract` overrides it. Default: "v1"."""

    preconditions: Preconditions
    """What the kernel takes beyond the contract (a compiled shape, model-written index
    rows only, a bound on context length). The strategies draw only inputs meeting it, and
    the report lists what that left out. Default: `Preconditions()`, the whole contract."""

    example_fraction: float
    """The share, in (0, 1], of each Hypothesis profile's `max_examples` that every property
    runs for this kernel (at least 3 examples), for a kernel whose calls are too slow for
    the full count even with `max_packed_batch` (the simulated pypto kernel runs the full
    count). The report header names it. Default: 1.0."""

    max_packed_batch: int
    """The largest `B` of a call the suite may assemble from several independent calls
    concatenated along `B` (`conformance.packing`: pools and tables offset, rows and tables
    widened with `-1`), for a kernel whose calls have a large fixed cost. The contract makes
    batches independent, so a conforming kernel gives each part its own call's output; the
    properties then make one call where they would make several, and the report still
    compares every part on its own. Default: 0, no packing."""

    kv_format: str | tuple[str, ...]
    """The cache format(s) the kernel reads (`contracts.formats.NAMES`, docs/contract.md
    section 12): "bf16" (rows `[N, BLOCK, D]` bf16), "fp8_ds_mla" (V3.2, 656-byte rows) or
    "fp8_ds_v4" (V4, 584-byte rows), or a tuple of them (each example draws one; the
    kernel tells which it got from the pool's dtype and row size). A run's `--kv-format`
    overrides it. Default: "bf16"."""

    shrink_seconds: float
    """How long Hypothesis may shrink one failure of this kernel, in seconds, for a kernel
    whose calls are slow (Hypothesis' own bound is 300 s a failure): past it the failure
    is reported as shrunk so far, and the report says shrinking was cut short. A run's
    `--shrink-seconds` overrides it. Default: Hypothesis' bound."""

    bug_class: str
    """For a seeded faulty kernel: the hypothesis that names its bug (of
    `attention.counterfactuals.CATALOGUE`, its convention's
    `conformance.v1|v2.counterfactuals.NAMES`, or for an LSE bug
    `attention.lse_counterfactuals.NAMES`), which the kill-rate's diagnosis column checks
    the top-ranked hypothesis against. Default: none (a bug the catalogue does not hold)."""

    lse: LSE
    """For a kernel that returns `(o, lse)`: what its LSE is (`LSE`: natural log or log2,
    with or without the sink, the value of an empty token). The suite checks it against
    the reference's on every call (docs/contract.md section 13). Default: none, the kernel
    returns `o` alone."""

    def available(self) -> str | None:
        """None when the kernel can run on this machine, else why not (a missing package,
        no GPU): its tests are then skipped with that reason instead of failing. Default:
        always available."""

    def diagnose(self, **args) -> str:
        """Called, with the arguments of the kernel's last call in a failing example, after
        a property failed: the kernel's own account of that call (the pypto kernel reruns
        it with pypto's per-pass verification and names the first divergent compiler pass).
        Its text is the failure's "kernel diagnostics" section and is in the report. An
        exception it raises is reported in that text; it never hides the failure. Default:
        no diagnostics."""


def kv_formats_of(kernel) -> tuple[str, ...]:
    """The cache formats a kernel declares (attribute `kv_format`), or ("bf16",)."""
    declared = getattr(kernel, "kv_format", formats.BF16)
    names = (declared,) if isinstance(declared, str) else declared
    if not isinstance(names, tuple) or not names \
            or not all(isinstance(n, str) and n in formats.NAMES for n in names):
        raise ContractError(f"kv_format: expected one of {formats.NAMES} or a non-empty tuple "
                            f"of them, got {declared!r}")
    return tuple(dict.fromkeys(names))


def lse_of(kernel) -> LSE | None:
    """What a kernel's LSE is (attribute `lse`), or None for a kernel returning `o` only."""
    lse = getattr(kernel, "lse", None)
    if lse is not None and not isinstance(lse, LSE):
        raise ContractError(f"kernel.lse: expected a sparse_attn_conformance.kernels.interface.LSE "
                            f"or None, got {lse!r}")
    return lse


def preconditions_of(kernel) -> Preconditions:
    """The preconditions a kernel declares (attribute `preconditions`), or none."""
    pre = getattr(kernel, "preconditions", None)
    if pre is None:
        return Preconditions()
    if not isinstance(pre, Preconditions):
        raise ContractError(
            f"kernel.preconditions: expected a contracts.v1.Preconditions, got {type(pre)!r}")
    return pre


def convention_of(kernel) -> str:
    """The calling convention a kernel declares (attribute `convention`), or the default."""
    name = getattr(kernel, "convention", DEFAULT_CONVENTION)
    if name not in CONVENTIONS:
        raise ContractError(f"kernel.convention: expected one of {CONVENTIONS}, got {name!r}")
    return name


def unavailable_reason(kernel) -> str | None:
    """Why `kernel` cannot run here (its optional `available()`), or None."""
    check = getattr(kernel, "available", None)
    if check is None:
        return None
    reason = check()
    if reason is not None and not isinstance(reason, str):
        raise ContractError(f"kernel.available(): expected None or a reason (str), got {reason!r}")
    return reason


def max_packed_batch_of(kernel) -> int:
    """The packed-call limit a kernel declares (attribute `max_packed_batch`), or 0."""
    limit = getattr(kernel, "max_packed_batch", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ContractError(
            f"max_packed_batch: expected an integer >= 0 (0: no packing), got {limit!r}")
    return limit


def example_fraction_of(kernel) -> float:
    """The share of each profile's examples a kernel asks for (attribute `example_fraction`)."""
    fraction = getattr(kernel, "example_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 < fraction <= 1:
        raise ContractError(
            f"example_fraction: expected a number in (0, 1], got {fraction!r}")
    return float(fraction)


def shrink_seconds_of(kernel) -> float | None:
    """The shrink budget a kernel asks for (attribute `shrink_seconds`), or None."""
    seconds = getattr(kernel, "shrink_seconds", None)
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not 0 < seconds < float("inf"):
        raise ContractError(
            f"shrink_seconds: expected a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


@dataclass(frozen=True)
class KernelUnderTest:
    """A kernel as the properties receive it: its name (built-in or `module:callable`), the
    callable, its declarations (its convention among them) read once, and whether it is
    one of the seeded faulty kernels."""

    name: str
    fn: Kernel
    pre: Preconditions
    example_fraction: float
    faulty: bool
    max_packed_batch: int = 0
    convention: str = DEFAULT_CONVENTION
    #: the cache formats its examples are drawn in (section 12)
    kv_formats: tuple[str, ...] = (formats.BF16,)
    #: what its returned LSE is, or None: it returns `o` alone (section 13)
    lse: LSE | None = None
    #: how long one failure may shrink (seconds), or None: Hypothesis' own bound
    shrink_seconds: float | None = None
    #: the counterfactual hypothesis naming a seeded kernel's bug, or None
    bug_class: str | None = None

    @classmethod
    def of(cls, name: str, fn, faulty: bool = False) -> KernelUnderTest:
        """Read `fn`'s declarations; a malformed one raises `ContractError` naming the kernel."""
        try:
            return cls(name=name, fn=fn, pre=preconditions_of(fn),
                       example_fraction=example_fraction_of(fn), faulty=faulty,
                       max_packed_batch=max_packed_batch_of(fn), convention=convention_of(fn),
                       kv_formats=kv_formats_of(fn), lse=lse_of(fn),
                       shrink_seconds=shrink_seconds_of(fn),
                       bug_class=getattr(fn, "bug_class", None))
        except ContractError as exc:
            raise ContractError(f"kernel {name!r}: {exc}") from exc

    def diagnose(self, args: dict) -> str | None:
        """What the kernel's optional `diagnose(**args)` says about a call, or None."""
        fn = getattr(self.fn, "diagnose", None)
        if fn is None:
            return None
        try:
            return str(fn(**args))
        except Exception as exc:  # diagnostics must never hide the failure itself
            return f"{self.name}.diagnose failed: {type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"KernelUnderTest({self.name!r})"

    def _repr_pretty_(self, p, cycle) -> None:  # Hypothesis prints a failing test's arguments
        p.text(repr(self))
