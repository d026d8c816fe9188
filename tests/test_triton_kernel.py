"""The `triton` kernel (kernels/triton/kernel.py) on the CPU through the interpreter: its
catalogue entries, its availability without triton, a direct call against the reference,
and each seeded Triton bug killed by a property's own assertion (the kill profile, as
tests/test_property_strength.py does for the torch mutants)."""

from __future__ import annotations

import pytest
import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.conformance import test_reference_match, test_sink_and_empty
from sparse_attn_conformance.conformance.v1 import test_invariance
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.triton import kernel as triton_kernel
from tests.test_property_strength import in_its_profile

needs_triton = pytest.mark.skipif(triton_kernel.sparse_attn.available() is not None,
                                  reason=str(triton_kernel.sparse_attn.available()))


def test_catalogue_lists_the_kernel_and_its_mutants():
    assert "triton" in registry.CORRECT and "triton" not in registry.TORCH
    faulty = [n for n in registry.builtin_names(faulty=True) if n.startswith("mutant-triton-")]
    assert faulty == [f"mutant-triton-{b}" for b in triton_kernel.BUG_NAMES]
    assert len(faulty) >= 3


@needs_triton
def test_bug_names_are_the_programs_bugs():
    from sparse_attn_conformance.kernels.triton.program import BUGS

    assert tuple(BUGS) == triton_kernel.BUG_NAMES
    assert sorted(code for code, _ in BUGS.values()) == list(range(1, len(BUGS) + 1))


def test_unknown_bug_is_named():
    with pytest.raises(LookupError, match="triton bug: expected one of"):
        triton_kernel.faulty("no-such-bug")


def test_without_triton_the_kernel_says_why(monkeypatch):
    monkeypatch.setattr(triton_kernel.importlib.util, "find_spec", lambda name: None)
    reason = triton_kernel.sparse_attn.available()
    assert reason is not None and "triton is not installed" in reason and triton_kernel.PACKAGE in reason


def small_call(seed=0, scale=None):
    g = torch.Generator().manual_seed(seed)
    B, S, H, D, WIN, IDX, BLOCK = 2, 3, 5, 40, 20, 13, 8
    idx = torch.cat([torch.arange(WIN).expand(B, S, WIN),
                     WIN + torch.randint(-3, 30, (B, S, IDX), generator=g)], -1).int()
    idx[0, 0, :18] = -1  # a fully dead first key tile (16 entries) in one token
    return dict(
        q=torch.randn(B, S, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(7, BLOCK, D, generator=g).bfloat16(),
        ori_block_table=torch.randint(0, 7, (B, 3), generator=g, dtype=torch.int32),
        cmp_kv=torch.randn(9, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.randint(0, 9, (B, 5), generator=g, dtype=torch.int32),
        topk_idxs=idx, attn_sink=torch.randn(H, generator=g),
        seqused_kv=torch.tensor([WIN + 25, 7], dtype=torch.int32),
        softmax_scale=D ** -0.5 if scale is None else scale, window_size=WIN)


@needs_triton
@pytest.mark.parametrize("scale", [None, -0.7, 0.0])
def test_direct_call_matches_the_reference(scale):
    from sparse_attn_conformance.contracts.v1 import validate

    kw = small_call(scale=scale)
    out = triton_kernel.sparse_attn(**kw)
    assert out.dtype == torch.bfloat16 and out.shape == kw["q"].shape
    gold = golden(validate(**kw))
    result = compare(out, gold, tolerance(validate(**kw), gold))
    assert result.ok, result.message


@needs_triton
def test_the_interpreter_run_leaves_the_environment_alone():
    import os

    before = os.environ.get("TRITON_INTERPRET")
    triton_kernel.sparse_attn(**small_call())
    assert os.environ.get("TRITON_INTERPRET") == before


#: each seeded Triton bug, and a property that must catch it by its own assertion
CATCHES = [
    (test_reference_match.test_matches_reference_on_model_rows, "mutant-triton-missing-plus-one"),
    (test_sink_and_empty.test_zero_query_closed_form, "mutant-triton-sink-dropped"),
    (test_invariance.test_index_row_order_does_not_matter, "mutant-triton-unguarded-rescale"),
    (test_reference_match.test_matches_reference, "mutant-triton-unshifted-exp"),
]


def test_every_triton_bug_has_a_catch():
    assert sorted(m for _, m in CATCHES) == sorted(f"mutant-triton-{b}" for b in triton_kernel.BUG_NAMES)


@needs_triton
@pytest.mark.parametrize("prop, mutant", CATCHES, ids=[m for _, m in CATCHES])
def test_property_catches_the_triton_mutant(prop, mutant):
    # the kill profile's examples, without shrinking: the catch is the property's assertion on
    # the first failing example; shrinking through the interpreter costs minutes a mutant
    with pytest.raises(Exception) as info:
        in_its_profile(prop, shrink=False)(kernel=registry.kernel_under_test(mutant))
    errors = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert any(isinstance(e, AssertionError) for e in errors), errors
