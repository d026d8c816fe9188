"""Kernels by name: the built-in ones, or any `module:callable` on the Python path."""

from __future__ import annotations

import fnmatch
import importlib

from kernels.mutants import MUTANTS

#: Correct kernels shipped with the suite: name -> "module:attribute".
CORRECT = {
    "pypto": "kernels.pypto_kernel:sparse_attn",
    "reference": "kernels.reference:sparse_attn",
    "tiled": "kernels.tiled:sparse_attn",
    "positional": "kernels.positional:sparse_attn",
}

#: Seeded faulty kernels, each with exactly one bug.
FAULTY = {f"mutant-{name}": f"kernels.mutants:MUTANTS[{name}]" for name in MUTANTS}

#: Faulty variants of the pypto kernel, when it is available.
FAULTY_PYPTO = {
    "mutant-pypto-missing-plus-one": "kernels.pypto_kernel:mutant_missing_plus_one",
    "mutant-pypto-sink-dropped": "kernels.pypto_kernel:mutant_sink_dropped",
}

DEFAULT_KERNEL = "pypto"


def builtin_names() -> list[str]:
    """Every built-in kernel name: correct ones first, then the faulty ones."""
    return list(CORRECT) + list(FAULTY) + list(FAULTY_PYPTO)


def is_faulty(name: str) -> bool:
    """Built-in faulty kernels are named `mutant-*`."""
    return name.startswith("mutant-")


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


def load(name: str):
    """The callable for a built-in name or a `module:callable` spec."""
    target = CORRECT.get(name) or FAULTY.get(name) or FAULTY_PYPTO.get(name)
    if target is None:
        if ":" not in name:
            raise LookupError(
                f"--kernel: expected a built-in name (see --list-kernels) or module:callable, "
                f"got {name!r}")
        target = name
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"--kernel {name!r}: cannot import module {module_name!r}: {exc}") from exc
    if attr.startswith("MUTANTS["):
        return module.MUTANTS[attr[len("MUTANTS["):-1]]
    obj = module
    for piece in attr.split("."):
        if not hasattr(obj, piece):
            raise LookupError(f"--kernel {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, piece)
    if not callable(obj):
        raise LookupError(f"--kernel {name!r}: {target} is not callable")
    return obj
