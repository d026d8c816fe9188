"""The kernel catalogue (one list of built-in kernels, one naming style) and the kernel
interface (kernels/interface.py): every built-in kernel's declarations are valid, and a
malformed declaration is named."""

import re

import pytest

from sparse_attn_conformance.contracts.v1 import ContractError, Preconditions
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.faulty.fp8 import MUTANTS_FP8
from sparse_attn_conformance.kernels.faulty.lse import MUTANTS_LSE
from sparse_attn_conformance.kernels.faulty.v1 import MUTANTS
from sparse_attn_conformance.kernels.faulty.v2 import MUTANTS_V2
from sparse_attn_conformance.kernels.interface import KernelUnderTest
from sparse_attn_conformance.kernels.pypto.program import BUGS
from sparse_attn_conformance.kernels.pypto.v2_program import BUGS as V2_BUGS
from sparse_attn_conformance.kernels.triton.kernel import BUG_NAMES as TRITON_BUGS
from sparse_attn_conformance.nightly.killrate import DEFAULT_KERNELS


def test_catalogue_names_every_kernel_once_in_one_style():
    names = registry.builtin_names()
    assert len(names) == len(set(names)) == len(registry.CATALOGUE)
    assert registry.builtin_names(faulty=False) == list(registry.CORRECT)
    assert registry.builtin_names(faulty=True) == (
        [f"mutant-{bug}" for bug in MUTANTS] + [f"mutant-v2-{bug}" for bug in MUTANTS_V2]
        + [f"mutant-fp8-{bug}" for bug in MUTANTS_FP8] + [f"mutant-lse-{bug}" for bug in MUTANTS_LSE]
        + [f"mutant-pypto-{bug}" for bug in BUGS] + [f"mutant-pypto-v2-{bug}" for bug in V2_BUGS]
        + [f"mutant-triton-{bug}" for bug in TRITON_BUGS])
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names), names


def test_killrate_default_is_the_torch_kernels_of_the_catalogue():
    assert DEFAULT_KERNELS.split(",") == (
        [n for n in registry.TORCH if n != "fp8-dequant-v2"] + [f"mutant-{bug}" for bug in MUTANTS]
        + [f"mutant-v2-{bug}" for bug in MUTANTS_V2] + [f"mutant-lse-{bug}" for bug in MUTANTS_LSE])
    assert "pypto" not in DEFAULT_KERNELS.split(",")


def test_every_builtin_kernel_loads_with_valid_declarations():
    for name in registry.builtin_names():
        k = registry.kernel_under_test(name)
        assert k is registry.kernel_under_test(name)  # loaded once
        assert callable(k.fn) and isinstance(k.pre, Preconditions)
        assert 0 < k.example_fraction <= 1
        assert k.faulty == registry.is_faulty(name) == name.startswith("mutant-")
    assert registry.kernel_under_test("mutant-pypto-sink-dropped").fn.bugs == {"sink-dropped"}


def test_a_malformed_declaration_is_named():
    def attn(**kw):
        return None

    attn.example_fraction = 0
    with pytest.raises(ContractError, match=r"kernel 'mine': example_fraction: expected a "
                                            r"number in \(0, 1\], got 0"):
        KernelUnderTest.of("mine", attn)
    attn.example_fraction = 0.5
    attn.preconditions = {"H": (64,)}
    with pytest.raises(ContractError, match="kernel 'mine': kernel.preconditions: expected"):
        KernelUnderTest.of("mine", attn)


def test_diagnostics_never_hide_the_failure():
    def attn(**kw):
        return None

    assert KernelUnderTest.of("plain", attn).diagnose({"q": 1}) is None
    attn.diagnose = lambda **args: f"saw {sorted(args)}"
    assert KernelUnderTest.of("a", attn).diagnose({"q": 1}) == "saw ['q']"
    attn.diagnose = lambda **args: 1 / 0
    assert KernelUnderTest.of("b", attn).diagnose({}) == (
        "b.diagnose failed: ZeroDivisionError: division by zero")
