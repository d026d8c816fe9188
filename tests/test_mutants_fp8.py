"""The quantised-path kernels (kernels/faulty/fp8.py): the correct FP8 scaffold decodes
every record exactly as the contract does and passes the reference property, and each of
its seeded faulty kernels (one bug switch apiece) is killed by a property's own assertion
in the kill-rate run's profile, not by a crash.

The properties run without shrinking (the verdict is the generate phase's; shrinking only
makes the counterexample smaller) and without Hypothesis' too-slow health check (an FP8
pool's bytes take seconds to draw on a loaded 2-core machine; the examples are the same)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sparse_attn_conformance.conformance import test_dequantisation, test_reference_match
from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.faulty.fp8 import (
    BUGS,
    MUTANTS_FP8,
    Fp8DequantV2,
    dequantise,
    sparse_attn,
)
from sparse_attn_conformance.nightly.killrate import DEFAULT_KERNELS, FP8_PATH
from sparse_attn_conformance.strategies.formats import quantise, raw_groups

#: bug -> the property that kills it (the cheapest: every one dies in its first examples)
KILLED_BY = {bug: test_reference_match.test_matches_reference for bug in BUGS}
#: examples of the scaffold's own run: the kill profile's first three, those on which the
#: mutants reading both formats die (the first, or the third for subnormal-flush and
#: masked-multiply); all 30 pass too, in about a minute of CPU time
SCAFFOLD_EXAMPLES = 3


def in_kill_profile(prop, max_examples: int | None = None):
    """`prop` under the kill profile (derandomized: the kill-rate run's examples), without
    shrinking or the too-slow health check (tests/in_profile.py, with those two off)."""
    profile = settings.get_profile("kill")
    overrides = {"phases": [p for p in Phase if p is not Phase.shrink],
                 "suppress_health_check": [HealthCheck.too_slow]}
    if max_examples is not None:
        overrides["max_examples"] = min(max_examples, profile.max_examples)
    wrapped = settings(profile, **overrides)(given(data=st.data())(prop.hypothesis.inner_test))

    def run(**fixtures) -> None:
        before = settings.get_current_profile_name()
        settings.load_profile("kill")
        try:
            wrapped(**fixtures)
        finally:
            settings.load_profile(before)

    return run


# -- the catalogue ----------------------------------------------------------------------------

def test_scaffold_and_mutants_are_registered_torch_kernels():
    assert registry.CORRECT["fp8-dequant-v2"] == "sparse_attn_conformance.kernels.faulty.fp8:sparse_attn"
    assert "fp8-dequant-v2" in registry.TORCH
    assert registry.load("fp8-dequant-v2") is sparse_attn
    assert sparse_attn.bug is None and sparse_attn.convention == "v2"
    # the FP8 path's kill-rate runs apart from the default one (nightly/killrate.py FP8_PATH)
    default = DEFAULT_KERNELS.split(",")
    assert "fp8-dequant-v2" not in default and "fp8-dequant-v2".startswith(FP8_PATH)
    assert len(MUTANTS_FP8) >= 10 and set(MUTANTS_FP8) == set(BUGS)
    for bug, kernel in MUTANTS_FP8.items():
        name = f"mutant-fp8-{bug}"
        entry = registry.CATALOGUE[name]
        assert entry.faulty and entry.torch and name not in default and name.startswith(FP8_PATH), name
        assert entry.load() is kernel
        # the scaffold with exactly one switch set, reading the formats its bug touches
        assert type(kernel) is Fp8DequantV2 and kernel.bug == bug
        assert kernel.convention == "v2"
        declared = registry.kernel_under_test(name).kv_formats
        assert declared == BUGS[bug][0] and formats.BF16 not in declared, (bug, declared)


# -- the scaffold's decoder is the contract's -------------------------------------------------

def _records(name: str, seed: int = 0) -> torch.Tensor:
    """64 records of format `name`: 32 quantised from random rows, 32 with every group raw
    (every finite code, scales over their whole range)."""
    fmt = formats.FORMATS[name]
    gen = torch.Generator().manual_seed(seed)
    rows = (torch.randn(64, fmt.D, generator=gen) * 4).bfloat16()
    recs = quantise(fmt, rows, power_of_two=False)
    which = torch.arange(64)[:, None].expand(64, fmt.groups) >= 32
    return raw_groups(fmt, recs, which, cap=16.0, gen=gen)


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_scaffold_decodes_every_record_as_the_contract(name):
    fmt = formats.FORMATS[name]
    recs = _records(name)
    key, value = dequantise(fmt, recs)
    exact = fmt.decode(recs)
    assert torch.equal(key, exact.float())
    assert torch.equal(value, exact[..., :fmt.d_v].float())


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_decoder_bugs_change_the_rows(name):
    """Every bug of the decoder itself (all but the addressing ones) changes some row of
    its formats: the switch is live."""
    fmt = formats.FORMATS[name]
    recs = _records(name)
    right = dequantise(fmt, recs)
    for bug, (fmts, _) in BUGS.items():
        if name not in fmts or bug in ("masked-multiply", "v4-row-interleaved"):
            continue
        wrong = dequantise(fmt, recs, bug)
        assert not all(torch.equal(a, b) for a, b in zip(right, wrong, strict=True)), bug


# -- the properties ---------------------------------------------------------------------------

def test_scaffold_passes_the_reference_property():
    in_kill_profile(test_reference_match.test_matches_reference, SCAFFOLD_EXAMPLES)(
        kernel=registry.kernel_under_test("fp8-dequant-v2"))


@pytest.mark.parametrize("name", ["fp8_ds_mla_fnuz", "fp8_ds_v4_fnuz"])
def test_scaffold_passes_on_each_fnuz_layout(name):
    """The fnuz layouts (pools typed float8_e4m3fnuz) through the whole property path: the
    drawing, the call, the reference and the dequantisation property (the CI's FP8 step
    draws only their e4m3fn twins; the dev and ci runs of them are apart)."""
    kernel = dataclasses.replace(registry.kernel_under_test("fp8-dequant-v2"), kv_formats=(name,))
    for prop in (test_reference_match.test_matches_reference,
                 test_dequantisation.test_one_live_lane_returns_its_dequantised_value):
        in_kill_profile(prop, SCAFFOLD_EXAMPLES)(kernel=kernel)


@pytest.mark.parametrize("bug", list(BUGS))
def test_mutant_is_killed_by_a_property_assertion(bug):
    with pytest.raises(Exception) as info:
        in_kill_profile(KILLED_BY[bug])(kernel=registry.kernel_under_test(f"mutant-fp8-{bug}"))
    # the property's own check, not a crash (a KernelFailure) alone
    errors = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert any(isinstance(e, AssertionError) for e in errors), errors
