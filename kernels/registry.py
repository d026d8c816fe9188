"""Kernels by name: the catalogue of built-in kernels, correct and faulty, and any
`module:callable` on the Python path; loading a kernel once per process for the suite
(`kernel_under_test`).

The catalogue (`CATALOGUE`, in `builtin_names()` order) is made from where each kernel is
defined: the correct kernels in `CORRECT` below, the seeded faulty torch kernels in
`kernels.faulty.v1.MUTANTS` (named `mutant-<bug>`), those of calling convention v2 in
`kernels.faulty.v2.MUTANTS_V2` (named `mutant-v2-<bug>`), those of the quantised (FP8)
path in `kernels.faulty.fp8.MUTANTS_FP8` (named `mutant-fp8-<bug>`), those of the LSE a
kernel returns beside its output in `kernels.faulty.lse.MUTANTS_LSE` (named
`mutant-lse-<bug>`), the seeded bugs of the pypto
program in `kernels.pypto.program.BUGS` (named `mutant-pypto-<bug>`), those of the v2
pypto program in `kernels.pypto.v2_program.BUGS` (named `mutant-pypto-v2-<bug>`) and those
of the Triton program in `kernels.triton.kernel.BUG_NAMES` (named `mutant-triton-<bug>`).
`--list-kernels`, `--kernel` globs and the kill-rate run's default
(`nightly.killrate.DEFAULT_KERNELS`) read it.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from sparse_attn_conformance.kernels.faulty.fp8 import MUTANTS_FP8
from sparse_attn_conformance.kernels.faulty.lse import MUTANTS_LSE
from sparse_attn_conformance.kernels.faulty.v1 import MUTANTS
from sparse_attn_conformance.kernels.faulty.v2 import MUTANTS_V2
from sparse_attn_conformance.kernels.interface import Kernel, KernelUnderTest
from sparse_attn_conformance.kernels.pypto.program import BUGS as PYPTO_BUGS
from sparse_attn_conformance.kernels.pypto.v2_program import BUGS as PYPTO_V2_BUGS
from sparse_attn_conformance.kernels.triton.kernel import BUG_NAMES as TRITON_BUGS

#: Correct kernels shipped with the suite: name -> "module:attribute".
CORRECT = {
    "pypto": "sparse_attn_conformance.kernels.pypto.kernel:sparse_attn",
    "pypto-passes": "sparse_attn_conformance.kernels.pypto.kernel:sparse_attn_verified_passes",
    "pypto-v2": "sparse_attn_conformance.kernels.pypto.v2_kernel:sparse_attn",
    "reference": "sparse_attn_conformance.kernels.torch.reference:sparse_attn",
    "tiled": "sparse_attn_conformance.kernels.torch.tiled:sparse_attn",
    "positional": "sparse_attn_conformance.kernels.torch.positional:sparse_attn",
    "flashmla": "sparse_attn_conformance.kernels.adapters.flashmla:sparse_attn",
    "reference-v2": "sparse_attn_conformance.kernels.torch.reference:sparse_attn_v2",
    "tiled-v2": "sparse_attn_conformance.kernels.torch.tiled_v2:sparse_attn",
    "triton": "sparse_attn_conformance.kernels.triton.kernel:sparse_attn",
    "fp8-dequant-v2": "sparse_attn_conformance.kernels.faulty.fp8:sparse_attn",
    "reference-lse": "sparse_attn_conformance.kernels.torch.reference:sparse_attn_lse",
    "reference-v2-lse": "sparse_attn_conformance.kernels.torch.reference:sparse_attn_v2_lse",
}

#: The correct kernels written in torch alone: they run on any machine, in seconds (with the
#: torch mutants, the kill-rate run's default).
TORCH = ("reference", "tiled", "positional", "reference-v2", "tiled-v2", "fp8-dequant-v2",
         "reference-lse", "reference-v2-lse")

#: The default kernel of a run, per calling convention: the project's pypto kernel of it.
DEFAULT_KERNELS = {"v1": "pypto", "v2": "pypto-v2"}
DEFAULT_KERNEL = DEFAULT_KERNELS["v1"]


@dataclass(frozen=True)
class Entry:
    """One built-in kernel."""

    name: str
    #: one of the seeded faulty kernels (each with exactly one bug), which the suite must kill
    faulty: bool
    #: written in torch alone (runs on any machine, in seconds)
    torch: bool
    #: imports and returns the kernel
    load: Callable[[], Kernel]


def _resolve(spec: str, target: str) -> Kernel:
    """The callable `module:attribute` names; `spec` is what the user asked for."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"--kernel {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    obj = module
    for piece in attr.split("."):
        if not hasattr(obj, piece):
            raise LookupError(f"--kernel {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, piece)
    if not callable(obj):
        raise LookupError(f"--kernel {spec!r}: {target} is not callable")
    return obj


def _pypto_faulty(bug: str) -> Kernel:
    from sparse_attn_conformance.kernels.pypto import kernel as pypto_kernel

    return pypto_kernel.faulty(bug)


def _pypto_v2_faulty(bug: str) -> Kernel:
    from sparse_attn_conformance.kernels.pypto import v2_kernel as pypto_v2_kernel

    return pypto_v2_kernel.faulty(bug)


def _triton_faulty(bug: str) -> Kernel:
    from sparse_attn_conformance.kernels.triton import kernel as triton_kernel

    return triton_kernel.faulty(bug)


def _catalogue() -> dict[str, Entry]:
    entries = [Entry(name, False, name in TORCH, functools.partial(_resolve, name, target))
               for name, target in CORRECT.items()]
    entries += [Entry(f"mutant-{bug}", True, True, functools.partial(MUTANTS.__getitem__, bug))
                for bug in MUTANTS]
    entries += [Entry(f"mutant-v2-{bug}", True, True, functools.partial(MUTANTS_V2.__getitem__, bug))
                for bug in MUTANTS_V2]
    entries += [Entry(f"mutant-fp8-{bug}", True, True,
                      functools.partial(MUTANTS_FP8.__getitem__, bug)) for bug in MUTANTS_FP8]
    entries += [Entry(f"mutant-lse-{bug}", True, True,
                      functools.partial(MUTANTS_LSE.__getitem__, bug)) for bug in MUTANTS_LSE]
    entries += [Entry(f"mutant-pypto-{bug}", True, False, functools.partial(_pypto_faulty, bug))
                for bug in PYPTO_BUGS]
    entries += [Entry(f"mutant-pypto-v2-{bug}", True, False,
                      functools.partial(_pypto_v2_faulty, bug)) for bug in PYPTO_V2_BUGS]
    entries += [Entry(f"mutant-triton-{bug}", True, False, functools.partial(_triton_faulty, bug))
                for bug in TRITON_BUGS]
    return {e.name: e for e in entries}


#: Every built-in kernel by name: the correct ones, the torch mutants (v1, v2, FP8, then LSE), the pypto
#: (v1, v2) and Triton mutants.
CATALOGUE = _catalogue()


def builtin_names(*, faulty: bool | None = None, torch: bool | None = None) -> list[str]:
    """Built-in kernel names in catalogue order (correct ones first), optionally only the
    faulty (or correct) ones and only those written in torch alone (or not)."""
    return [e.name for e in CATALOGUE.values()
            if faulty in (None, e.faulty) and torch in (None, e.torch)]


def is_faulty(name: str) -> bool:
    """Whether `name` is one of the built-in faulty kernels."""
    entry = CATALOGUE.get(name)
    return entry is not None and entry.faulty


def expand(spec: str) -> list[str]:
    """Kernel names from a comma-separated list of names, globs over built-in names
    (`mutant-*`) and `module:callable` specs."""
    names = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?[") and ":" not in part:
            hits = fnmatch.filter(builtin_names(), part)
            if not hits:
                raise LookupError(f"--kernel: pattern {part!r} matches no built-in kernel")
            names += hits
        else:
            names.append(part)
    if not names:
        raise LookupError(f"--kernel: expected a kernel name or module:callable, got {spec!r}")
    return names


def load(name: str) -> Kernel:
    """The callable for a built-in name or a `module:callable` spec."""
    entry = CATALOGUE.get(name)
    if entry is not None:
        return entry.load()
    if ":" not in name:
        raise LookupError(
            f"--kernel: expected a built-in name (see --list-kernels) or module:callable, "
            f"got {name!r}")
    from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

    # a user's Triton kernel under TRITON_INTERPRET=1 gets the interpreter's bf16 fix
    return triton_interpret.for_kernel_under_test(_resolve(name, name))


_loaded: dict[str, KernelUnderTest] = {}


def kernel_under_test(name: str) -> KernelUnderTest:
    """The kernel `name` (built-in or `module:callable`), loaded and its declarations read
    once per process. Raises `LookupError` for a name that loads nothing and
    `contracts.v1.ContractError` for a malformed declaration."""
    if name not in _loaded:
        _loaded[name] = KernelUnderTest.of(name, load(name), faulty=is_faulty(name))
    return _loaded[name]
