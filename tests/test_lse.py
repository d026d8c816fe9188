"""The LSE a kernel returns beside its output (docs/contract.md section 13): the reference's
LSE (attention/lse.py) on cases worked out by hand, its comparison's rules (base, empty
tokens, infinities, NaN, the tolerance), the harness' handling of a kernel's `(o, lse)`
(conformance/harness.py `call`), and the seeded faulty LSE kernels (kernels/faulty/lse.py),
each killed by a property's assertion in the kill profile while the correct LSE kernels
pass."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_attn_conformance.attention import lse as L
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.conformance import harness
from sparse_attn_conformance.conformance import test_reference_match as reference_match
from sparse_attn_conformance.conformance import test_sink_and_empty as sink_and_empty
from sparse_attn_conformance.contracts import v1
from sparse_attn_conformance.kernels import registry
from sparse_attn_conformance.kernels.faulty.lse import MUTANTS_LSE
from sparse_attn_conformance.kernels.interface import LSE, KernelUnderTest
from sparse_attn_conformance.kernels.torch import reference
from sparse_attn_conformance.kernels.torch.tiled import TiledKernel
from tests.in_profile import in_profile
from tests.test_contract_validation import valid_kwargs

INF = math.inf


def att(q, rows, live, sink=(0.0,), scale=0.5) -> Attended:
    """One token (`[T=1]`) from python lists: q `[H][D]`, rows `[L][D]`, live `[L]`."""
    return Attended(q=torch.tensor([q]).bfloat16(), rows=torch.tensor([rows]).bfloat16(),
                    live=torch.tensor([live]), attn_sink=torch.tensor(sink, dtype=torch.float32),
                    softmax_scale=scale, token_dims=("t",))


ONE = dict(q=[[1.0, 0.0]], rows=[[1.0, 0.0], [2.0, 0.0], [1e4, 0.0]], live=[True, True, False])


# -- the reference's LSE ---------------------------------------------------------------------

def test_known_small_case_with_and_without_the_sink():
    a = att(**ONE, sink=(0.25,))
    # z = 0.5 * (1, 2): the dead lane's huge row is not in the sum
    plain = math.log(math.exp(0.5) + math.exp(1.0))
    assert L.lse(a, torch.float64).item() == pytest.approx(plain, rel=1e-15)
    assert L.lse(a, torch.float64, with_sink=True).item() == pytest.approx(
        math.log(math.exp(0.5) + math.exp(1.0) + math.exp(0.25)), rel=1e-15)
    assert L.lse(a, torch.float32).dtype == torch.float32
    assert L.lse(a, torch.float32).item() == pytest.approx(plain, rel=1e-6)


def test_duplicates_count_twice_and_the_max_shift_keeps_large_logits_finite():
    a = att([[1.0, 0.0]], [[2048.0, 0.0], [2048.0, 0.0]], [True, True], scale=1.0)
    for dtype in (torch.float32, torch.float64):
        assert L.lse(a, dtype).item() == pytest.approx(2048 + math.log(2), rel=1e-7)
    small = att([[1.0, 0.0]], [[-2048.0, 0.0]], [True], scale=1.0)
    assert L.lse(small, torch.float32).item() == -2048.0


def test_empty_token_sink_and_infinities():
    empty = dict(q=[[1.0, 0.0]], rows=[[5.0, 0.0]], live=[False])
    assert L.lse(att(**empty, sink=(0.75,)), torch.float64).item() == -INF
    for dtype in (torch.float32, torch.float64):
        assert L.lse(att(**empty, sink=(0.75,)), dtype, with_sink=True).item() == 0.75
        assert L.lse(att(**empty, sink=(3e38,)), dtype, with_sink=True).item() == pytest.approx(3e38)
    assert L.lse(att(**empty, sink=(-INF,)), torch.float64, with_sink=True).item() == -INF
    assert L.lse(att(**empty, sink=(INF,)), torch.float64, with_sink=True).item() == INF
    assert L.lse(att(**ONE, sink=(INF,)), torch.float32, with_sink=True).item() == INF
    # a -inf sink is the LSE without the sink
    assert L.lse(att(**ONE, sink=(-INF,)), torch.float64, with_sink=True).item() == \
        L.lse(att(**ONE), torch.float64).item()
    # several heads, one per sink kind, one call
    heads = att([[1.0, 0.0]] * 3, ONE["rows"], ONE["live"], sink=(INF, -INF, 0.0))
    got = L.lse(heads, torch.float64, with_sink=True)[0]
    assert got[0] == INF and got[1] == L.lse(att(**ONE), torch.float64).item()


# -- the comparison ----------------------------------------------------------------------------

def test_base_2_is_the_natural_lse_over_ln2():
    a = att(**ONE)
    nat = L.lse(a, torch.float32)
    e, two = LSE(base="e"), LSE(base="2")
    assert L.compare_lse(nat, a, e).ok and L.compare_lse(nat / math.log(2), a, two).ok
    assert not L.compare_lse(nat, a, two).ok and not L.compare_lse(nat / math.log(2), a, e).ok
    gold = L.lse(a)
    assert torch.allclose(L.in_base(L.tolerance(a, gold, False), "2") * math.log(2),
                          L.tolerance(a, gold, False))


def test_tolerance_is_k_baselines_plus_a_floor_of_ulps():
    a = att(**ONE)
    gold = L.lse(a)
    tol = L.tolerance(a, gold, False)
    floor = L.FLOOR_ULPS * 2.0**-23 * (gold.abs() + 1.0 + 1.0)  # logit magnitude 0.5 * 2
    assert bool((tol >= floor).all()) and float(tol) < 1e-4
    nat = gold.float()
    assert L.compare_lse(nat + float(floor) / 2, a, LSE()).ok
    assert not L.compare_lse(nat + 1e-3, a, LSE()).ok


def test_empty_token_must_be_the_declared_value_exactly():
    a = att(q=[[1.0, 0.0]], rows=[[5.0, 0.0]], live=[False], sink=(0.75,))
    flashmla = LSE(base="e", with_sink=False, empty=INF)
    assert L.compare_lse(torch.tensor([[INF]]), a, flashmla).ok
    result = L.compare_lse(torch.tensor([[-INF]]), a, flashmla)
    assert not result.ok
    assert "t=0 h=0, an empty token" in result.message
    assert "expected inf, actual -inf" in result.message and "declared empty value" in result.message
    assert "LSE(base='e', with_sink=False, empty=inf)" in result.message
    # no declared value: the formula's, -inf without the sink, the sink with it
    assert L.compare_lse(torch.tensor([[-INF]]), a, LSE()).ok
    assert not L.compare_lse(torch.tensor([[0.75]]), a, LSE()).ok
    assert L.compare_lse(torch.tensor([[0.75]]), a, LSE(with_sink=True)).ok
    assert L.compare_lse(torch.tensor([[0.75 / math.log(2)]]), a, LSE(base="2", with_sink=True)).ok
    assert not L.compare_lse(torch.tensor([[-INF]]), a, LSE(with_sink=True)).ok


def test_infinities_must_match_and_nan_always_fails():
    a = att(**ONE, sink=(INF,))
    assert L.compare_lse(torch.tensor([[INF]]), a, LSE(with_sink=True)).ok
    assert not L.compare_lse(torch.tensor([[3e38]]), a, LSE(with_sink=True)).ok
    b = att(**ONE)
    assert not L.compare_lse(torch.tensor([[INF]]), b, LSE()).ok
    assert not L.compare_lse(torch.tensor([[float("nan")]]), b, LSE()).ok
    nan_empty = att(q=[[1.0, 0.0]], rows=[[5.0, 0.0]], live=[False])
    assert not L.compare_lse(torch.tensor([[float("nan")]]), nan_empty, LSE()).ok
    assert not L.compare_lse(torch.tensor([[float("nan")]]), nan_empty, LSE(empty=float("nan"))).ok
    # a finite log2 LSE past fp32's range is fp32's infinity
    edge = att(**ONE, sink=(3e38,))
    assert L.compare_lse(torch.tensor([[INF]]), edge, LSE(base="2", with_sink=True)).ok
    assert L.compare_lse(torch.tensor([[3e38]], dtype=torch.float32), edge,
                         LSE(with_sink=True)).ok


def test_no_claim_outside_the_numerical_domain():
    """A token reading a poisoned row (NaN, inf, or finite past the domain's 2^120: what the
    properties' derived calls write into rows other tokens read) gets no LSE claim, as its
    output gets no comparison; a token in the domain beside it still does."""
    for poison in (float("nan"), INF, 3e38):
        a = att(q=[[1.0, 0.0]], rows=[[5.0, 0.0], [poison, 1.0]], live=[True, True])
        assert not bool(L.in_domain(a).all())
        assert L.compare_lse(torch.tensor([[float("nan")]]), a, LSE()).ok, poison
    clean = att(**ONE)
    assert bool(L.in_domain(clean).all())
    assert not L.compare_lse(torch.tensor([[float("nan")]]), clean, LSE()).ok


# -- the harness -------------------------------------------------------------------------------

def v1_inputs():
    kw = valid_kwargs(B=1, S=1, H=2, D=8, WIN=4, IDX_TOPK=2, BLOCK=2)
    kw["q"] = torch.randn(1, 1, 2, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    kw["ori_kv"][:] = torch.randn(kw["ori_kv"].shape, generator=torch.Generator().manual_seed(1))
    kw["topk_idxs"][0, 0, :3] = torch.tensor([0, 2, 1])
    kw["seqused_kv"] = torch.tensor([3], dtype=torch.int32)
    return v1.validate(**kw)


def kernel(returns, lse: LSE | None = LSE(base="e")) -> KernelUnderTest:
    def fn(**kw):
        return returns(kw)

    if lse is not None:
        fn.lse = lse
    return KernelUnderTest.of("mine", fn)


def test_harness_checks_and_strips_the_lse():
    inputs = v1_inputs()
    o = reference.sparse_attn(**inputs.kwargs())
    lse = L.lse(inputs.attended(), torch.float32)
    assert tuple(lse.shape) == (1, 1, 2)
    out = harness.call(kernel(lambda kw: (o, lse)), inputs)
    assert torch.equal(out, o)
    assert torch.equal(harness.call(registry.kernel_under_test("reference-lse"), inputs), o)


def test_a_tuple_without_a_declared_lse_is_a_kernel_failure():
    inputs = v1_inputs()
    o = reference.sparse_attn(**inputs.kwargs())
    with pytest.raises(harness.KernelFailure, match=r"kernel 'mine': returned a tuple of 2, but "
                                                    r"it declares no LSE"):
        harness.call(kernel(lambda kw: (o, o[..., 0]), lse=None), inputs)
    with pytest.raises(harness.KernelFailure, match=r"declares an LSE .* must return a 2-tuple "
                                                    r"\(o, lse\); got a Tensor"):
        harness.call(kernel(lambda kw: o), inputs)


@pytest.mark.parametrize("lse, message", [
    (torch.zeros(1, 2), r"kernel lse: expected shape \[1, 1, 2\] \(\[B, S, H\]\), got shape \[1, 2\]"),
    (torch.zeros(1, 2, 1), r"kernel lse: expected shape \[1, 1, 2\] \(\[B, S, H\]\), got shape \[1, 2, 1\]"),
    (torch.zeros(1, 1, 2, dtype=torch.int32), r"kernel lse: expected a floating dtype, got torch.int32"),
    ([0.0, 0.0], r"kernel lse: expected a torch.Tensor, got list"),
])
def test_a_malformed_lse_is_named(lse, message):
    inputs = v1_inputs()
    o = reference.sparse_attn(**inputs.kwargs())
    with pytest.raises(harness.KernelFailure, match=r"kernel 'mine': " + message):
        harness.call(kernel(lambda kw: (o, lse)), inputs)


def test_a_wrong_lse_fails_the_property_naming_the_worst_entry():
    inputs = v1_inputs()
    o = reference.sparse_attn(**inputs.kwargs())
    lse = L.lse(inputs.attended(), torch.float32)
    lse[0, 0, 1] += 0.5
    with pytest.raises(AssertionError) as info:
        harness.call(kernel(lambda kw: (o, lse)), inputs)
    msg = str(info.value)
    assert "kernel 'mine': kernel lse differs from the reference in 1 of 2 (b, s, h)" in msg
    assert "worst at b=0 s=0 h=1" in msg and "expected " in msg and "actual " in msg
    assert "tolerance " in msg and "declared LSE(base='e'" in msg


# -- the catalogue and the kill profile --------------------------------------------------------

def test_lse_kernels_are_registered():
    assert registry.CORRECT["reference-lse"] == "sparse_attn_conformance.kernels.torch.reference:sparse_attn_lse"
    assert registry.CORRECT["reference-v2-lse"] == "sparse_attn_conformance.kernels.torch.reference:sparse_attn_v2_lse"
    assert {"reference-lse", "reference-v2-lse"} <= set(registry.TORCH)
    assert registry.kernel_under_test("reference-lse").lse == LSE(base="2", with_sink=True)
    assert registry.kernel_under_test("reference-v2-lse").lse == LSE(
        base="e", with_sink=False, empty=INF)
    for name, fn in MUTANTS_LSE.items():
        entry = registry.CATALOGUE[f"mutant-lse-{name}"]
        assert entry.faulty and entry.torch and entry.load() is fn
        assert isinstance(fn.lse, LSE) and fn.__doc__, name


#: per seeded faulty LSE kernel, the property that kills it (any property calling the
#: kernel checks its LSE; an empty token's needs a case with one)
KILLS = {
    "log2-declared-natural": reference_match.test_matches_reference,
    "sink-added": reference_match.test_matches_reference,
    "empty-minus-inf": sink_and_empty.test_empty_tokens_return_exact_zero,
    "no-max-shift": reference_match.test_matches_reference,
    "unscaled-logits": reference_match.test_matches_reference,
}


def test_every_lse_mutant_has_its_property():
    assert set(KILLS) == set(MUTANTS_LSE)


@pytest.mark.parametrize("name", list(KILLS))
def test_lse_mutant_is_killed_by_a_property(name):
    with pytest.raises(Exception) as info:
        in_profile(KILLS[name], "kill", shrink=False)(
            kernel=registry.kernel_under_test(f"mutant-lse-{name}"))
    errors = info.value.exceptions if isinstance(info.value, ExceptionGroup) else [info.value]
    assert any(isinstance(e, AssertionError) and "kernel lse differs" in str(e)
               for e in errors), errors


@pytest.mark.parametrize("name", ["reference-lse", "reference-v2-lse"])
def test_correct_lse_kernels_pass(name):
    k = registry.kernel_under_test(name)
    in_profile(reference_match.test_matches_reference, "kill", max_examples=5)(kernel=k)
    in_profile(sink_and_empty.test_empty_tokens_return_exact_zero, "kill", max_examples=3)(kernel=k)


class TiledLSE(TiledKernel):
    """The v1 tiled kernel (kernels/torch/tiled.py: 64-key tiles, an online softmax) returning the
    LSE of its own running state, `m + log(l)` with the sink folded in under the max shift:
    another summation order than the reference's, which the tolerance must admit."""

    lse = LSE(base="e", with_sink=True)

    def __call__(self, **kw):
        o = super().__call__(**kw)
        return o, self._lse

    def finish(self, state, sink, rows):
        m, l, _ = state
        s = sink[None, None, :, None]
        top = torch.maximum(m, s)
        shift = torch.where(torch.isfinite(top), top, 0.0)
        total = l * torch.where(m == -INF, 0.0, torch.exp(m - shift)) + torch.exp(s - shift)
        self._lse = torch.where(torch.isfinite(top), shift + torch.log(total), top)[..., 0]
        return super().finish(state, sink, rows)


def test_another_summation_order_is_within_the_tolerance():
    k = KernelUnderTest.of("tiled-lse", TiledLSE())
    in_profile(reference_match.test_matches_reference, "kill", max_examples=6)(kernel=k)
