"""The counterfactuals of each calling convention (conformance/v1/counterfactuals.py,
conformance/v2/counterfactuals.py): a seeded kernel whose bug is one of them is explained
by it, on drawn calls, with the variant that names its mistake."""

import pytest
import torch

from sparse_attn_conformance.attention import counterfactuals as cf
from sparse_attn_conformance.attention.compare import golden, tolerance
from sparse_attn_conformance.conformance import harness, recorder, test_reference_match
from sparse_attn_conformance.contracts.v2 import validate
from sparse_attn_conformance.kernels.registry import kernel_under_test
from tests.in_profile import in_profile

CASES = [("mutant-per-batch-length", "length-derivation", "per batch"),
         ("mutant-missing-plus-one", "length-derivation", "one short"),
         ("mutant-inclusive-window-bound", "inclusive-bound", "window bound")]


@pytest.mark.parametrize("mutant, name, variant", CASES)
def test_a_derivation_mistake_is_named(mutant, name, variant):
    """The shrunk failure of the kill profile (what a user is shown) is diagnosed with the
    mistake's own variant first."""
    recorder.begin()
    with pytest.raises(AssertionError):
        in_profile(test_reference_match.test_matches_reference, "kill")(
            kernel=kernel_under_test(mutant))
    diagnosis = recorder.end()["counterexample"]["diagnosis"]
    # among the best-ranked (a minimal example may not tell two mistakes apart)
    top = next(h for h in diagnosis["hypotheses"] if h["hypothesis"] == name)
    assert top["rank"] == 1 and any(variant in v for v in top["variants"]), diagnosis


def _v2_call(pos: int, ratio: int):
    """One token at `pos`, compressed slots 0..3 of one block, ratio `ratio`."""
    g = torch.Generator().manual_seed(0)
    return dict(q=torch.randn(1, 2, 8, generator=g).bfloat16(),
                ori_kv=torch.randn(1, 4, 8, generator=g).bfloat16(),
                window_swa_indices=torch.tensor([[0, -1]], dtype=torch.int32),
                cmp_kv=torch.randn(1, 4, 8, generator=g).bfloat16(),
                cmp_block_table=torch.tensor([[0]], dtype=torch.int32),
                idx_topk=torch.tensor([[0, 1, 2, 3]], dtype=torch.int32),
                position_ids=torch.tensor([[pos]], dtype=torch.int32),
                attn_sink=torch.zeros(2), softmax_scale=0.5, seq_per_batch=1,
                index_topk=4, compress_ratio=ratio)


@pytest.mark.parametrize("pos, shift, variant", [(4, 1, "the cut inclusive"),
                                                 (5, -1, "the cut one position early")])
def test_a_cut_off_by_one_is_named(pos, shift, variant):
    """A kernel that derives the cut from pos + shift, ratio 2: at pos 4 the contract's cut
    is 2 slots, the inclusive one 3; at pos 5 the contract's is 3, the early one 2."""
    kw = _v2_call(pos, 2)
    i = validate(**kw)
    wrong = validate(**dict(kw, position_ids=kw["position_ids"] + shift))
    att = i.attended()
    gold = golden(att)
    found = cf.diagnose(att, golden(wrong.attended()), tolerance(att, gold), gold=gold,
                        catalogue=harness._convention_hypotheses(i) + cf.CATALOGUE)
    top = found.explained[0]
    assert top.name == "cut-off-by-one" and any(variant in v for v in top.variants), \
        found.text()
