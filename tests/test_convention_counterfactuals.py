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


# -- addressing and integer edges: each seeded kernel's output on its exposing input (the
# bug as its code applies it), and the mistakes no seeded kernel makes, applied by hand ---


def _diagnosis(i, actual):
    att = i.attended()
    gold = golden(att)
    return cf.diagnose(att, actual, tolerance(att, gold), gold=gold,
                       catalogue=harness._convention_hypotheses(i) + cf.CATALOGUE)


def _ranked_first(found, name, variant=None):
    """`name` explains `found` among the hypotheses of rank 1 (with `variant` in a label)."""
    top = next((h for h in found.as_dict()["hypotheses"] if h["hypothesis"] == name), None)
    assert top is not None and top["rank"] == 1, found.text()
    assert variant is None or any(variant in v for v in top["variants"]), found.text()


def _v1_pads(name):
    # window entries 5.. are -1 while window_valid > 0; TOPK 8 is padded to a tile of 16
    from tests.test_mutants import make

    kw = make(B=2, S=2, H=2, WIN=8, BLOCK=4, seqused=3, seed=1)
    kw["topk_idxs"][:, :, 5:] = -1
    return kw


def _v1_batch0(name):
    from tests.test_mutants import make

    kw = make(B=2, S=1, H=2, WIN=4, IDX_TOPK=2, BLOCK=4, n_cmp=3, seqused=6, seed=2)
    kw["seqused_kv"][1] = 5
    return kw


def _v1_case(mutant):
    from tests.test_mutants import CASES

    build, _, wrong, _ = CASES[mutant]
    return lambda name: build(wrong[-1])


V1_SEEDED = [("pad-not-skipped", _v1_pads, "read Python-style"),
             ("pad-as-slot-zero", _v1_pads, "read as window slot 0"),
             ("batch0-length", _v1_batch0, "batch 0's length"),
             ("batch-grid-wrap", _v1_case("batch-grid-wrap"), "batch 0's seqused_kv and block"),
             ("int16-index", _v1_case("int16-index"), "int16"),
             ("uint16-slot", _v1_case("uint16-slot"), "uint16"),
             ("int32-length-overflow", _v1_case("int32-length-overflow"), "int32"),
             ("fp32-slot", _v1_case("fp32-slot"), "fp32"),
             ("column-12bit", _v1_case("column-12bit"), None),
             ("block-id-16", _v1_case("block-id-16"), "16 bits")]


@pytest.mark.parametrize("mutant, build, variant", V1_SEEDED, ids=[m for m, *_ in V1_SEEDED])
def test_a_v1_seeded_addressing_bug_is_named_by_its_class(mutant, build, variant):
    """The seeded kernel's output is explained by its declared class at rank 1; the correct
    tiled kernel's on the same call has nothing to explain."""
    from sparse_attn_conformance.contracts import v1
    from sparse_attn_conformance.kernels.faulty.v1 import MUTANTS
    from sparse_attn_conformance.kernels.torch.tiled import TiledKernel

    kw = build(mutant)
    i = v1.validate(**kw)
    found = _diagnosis(i, v1.validate_output(MUTANTS[mutant](**kw), i))
    _ranked_first(found, kernel_under_test(f"mutant-{mutant}").bug_class, variant)
    right = _diagnosis(i, v1.validate_output(TiledKernel()(**kw), i))
    assert right.failing == 0 and not right.explanations


def _v2_case(mutant):
    from tests.test_mutants_v2 import THRESHOLDS

    build, _, wrong = THRESHOLDS[mutant]
    return lambda: build(wrong[-1])


V2_SEEDED = [("cut-int32-overflow", "int32"), ("cmp-column-12bit", "12 bits"),
             ("cmp-block-id-16", "16 bits"), ("window-row-16bit", "16 bits"),
             ("cut-fp32", "fp32")]


@pytest.mark.parametrize("mutant, variant", V2_SEEDED, ids=[m for m, _ in V2_SEEDED])
def test_a_v2_seeded_integer_edge_bug_is_named_by_its_class(mutant, variant):
    from sparse_attn_conformance.contracts import v2
    from sparse_attn_conformance.kernels.faulty.v2 import MUTANTS_V2
    from sparse_attn_conformance.kernels.torch.tiled_v2 import sparse_attn

    kw = _v2_case(mutant)()
    i = v2.validate(**kw)
    found = _diagnosis(i, v2.validate_output(MUTANTS_V2[mutant](**kw), i))
    _ranked_first(found, kernel_under_test(f"mutant-v2-{mutant}").bug_class, variant)
    right = _diagnosis(i, v2.validate_output(sparse_attn(**kw), i))
    assert right.failing == 0 and not right.explanations


def test_v1_another_batchs_table_row_is_named():
    """Batch 0 reads batch 1's rows of both block tables (by hand: a call whose row 0 is
    row 1), batch 1 its own."""
    from sparse_attn_conformance.contracts import v1
    from tests.test_mutants import make

    kw = make(B=2, S=1, H=2, WIN=4, IDX_TOPK=2, BLOCK=4, n_cmp=2, seqused=6, seed=3)
    kw["cmp_block_table"][1, 0] = 1
    i = v1.validate(**kw)
    wrong = v1.validate(**dict(kw, ori_block_table=kw["ori_block_table"][[1, 1]],
                               cmp_block_table=kw["cmp_block_table"][[1, 1]]))
    found = _diagnosis(i, golden(wrong.attended()))
    _ranked_first(found, "other-batch-table", "b+1's row of ori_block_table and cmp_block_table")
    assert _diagnosis(i, golden(i.attended())).failing == 0


def _v2(window, idx, **kw):
    from tests.test_mutants_v2 import make

    return make(window, idx, **kw)


def test_v2_another_batchs_table_row_is_named():
    """Two batches of one token; batch 1's compressed slots read through batch 0's row."""
    kw = _v2([[0], [1]], [[0, 1], [0, 1]], table=[[0], [1]], H=2, seed=4)
    i = validate(**kw)
    wrong = validate(**dict(kw, cmp_block_table=kw["cmp_block_table"][[0, 0]]))
    found = _diagnosis(i, golden(wrong.attended()))
    _ranked_first(found, "other-batch-table", "b-1's row of cmp_block_table")
    assert "token 1 lane 0, slot 0" in found.text()
    assert _diagnosis(i, golden(i.attended())).failing == 0


@pytest.mark.parametrize("window, idx, read, variant", [
    # window lane -1 read as flat row -1: the pool's last row (pool of 2 blocks of 4 rows)
    ([[0, -1]], [[1]], dict(window_swa_indices=[[0, 7]]), "flat row 7 of ori_kv's 8"),
    # compressed lane -1 read as slot -1: the last row of the table's last column (2 x 4)
    ([[0]], [[1, -1]], dict(idx_topk=[[1, 7]]), "slot -1 read as slot 7 of the table's 8"),
    # a column past index_topk = 1 read (the row's width taken for index_topk)
    ([[0]], [[1, 2]], dict(index_topk=2), "columns of idx_topk at or past index_topk=1"),
])
def test_v2_an_ignored_lane_admitted_is_named(window, idx, read, variant):
    kw = _v2(window, idx, table=[[0, 1]], n_ori=2, H=2, seed=5,
             index_topk=1 if "index_topk" in read else None)
    i = validate(**kw)
    changed = {k: torch.tensor(v, dtype=torch.int32) if isinstance(v, list) else v
               for k, v in read.items()}
    found = _diagnosis(i, golden(validate(**dict(kw, **changed)).attended()))
    _ranked_first(found, "ignored-lane-admitted", variant)
    assert _diagnosis(i, golden(i.attended())).failing == 0
