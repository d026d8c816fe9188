"""The counterfactual diagnosis (attention/counterfactuals.py): an output made by one
hypothesis' own mistake is explained by that hypothesis; the correct output has nothing to
explain; noise is explained by none; the diagnosis respects its time budget."""

from dataclasses import replace

import pytest
import torch

from sparse_attn_conformance.attention import counterfactuals as cf
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.compare import golden, tolerance


def attended(seed: int = 0) -> Attended:
    g = torch.Generator().manual_seed(seed)
    T, H, L, D = 3, 3, 6, 8
    live = torch.rand(T, L, generator=g) < 0.7
    live[:, 0] = True
    rows = torch.where(live[..., None], torch.randn(T, L, D, generator=g), 0.0)
    rows[:, 1] = rows[:, 0]          # a repeated row in every token
    live[:, 1] = True
    return Attended(q=(torch.randn(T, H, D, generator=g) * 2).bfloat16(),
                    rows=rows.bfloat16(), live=live,
                    attn_sink=torch.tensor([0.5, -1.0, 2.0]), softmax_scale=0.7,
                    token_dims=("t",))


def diagnosis_of(att: Attended, actual: torch.Tensor):
    return cf.diagnose(att, actual, tolerance(att, golden(att)))


def mistaken(att: Attended, name: str, label: str | None = None) -> torch.Tensor:
    """The output hypothesis `name` gives (its variant `label`, else its first)."""
    hyp = next(h for h in cf.CATALOGUE if h.name == name)
    return next(out for lbl, out in hyp.variants(att) if label is None or lbl == label)


@pytest.mark.parametrize("name, label", [
    ("sink-dropped", None), ("sink-other-head", None), ("sink-scaled", "negated"),
    ("sink-unshifted", None), ("scale", "ignored (1)"), ("scale", "squared (applied twice)"),
    ("lane-dropped", "lane 0"), ("duplicates-once", None), ("rows-mixed", None),
    ("row-not-written", None)])
def test_each_mistake_is_explained_by_its_hypothesis(name, label):
    att = attended()
    found = diagnosis_of(att, mistaken(att, name, label))
    assert found.failing > 0
    names = [e.name for e in found.explained]
    assert name in names, found.text()
    if label is not None:
        e = next(e for e in found.explained if e.name == name)
        assert label in e.variants
    assert found.as_dict()["hypotheses"][0]["explains"]


def test_a_lane_dropped_in_one_token_only_names_that_lane():
    att = attended(1)
    live = att.live.clone()
    j = int(torch.nonzero(live[1]).flatten()[-1])
    live[1, j] = False
    found = diagnosis_of(att, golden(replace(att, live=live)))
    top = found.explained[0]
    assert top.name == "lane-dropped" and top.variants == [f"lane {j}"], found.text()
    assert f"lane {j}" in found.text()


def test_the_correct_output_and_noise():
    att = attended(2)
    assert diagnosis_of(att, golden(att)).failing == 0
    noise = golden(att) + torch.randn(golden(att).shape, generator=torch.Generator()
                                      .manual_seed(3), dtype=torch.float64) * 10
    found = diagnosis_of(att, noise)
    assert found.failing > 0 and not found.explained
    assert found.text().startswith("no known hypothesis explains all")


def test_the_budget_cuts_the_catalogue_short():
    att = attended(4)
    found = cf.diagnose(att, mistaken(att, "row-not-written"),
                        tolerance(att, golden(att)), budget=0.0)
    assert found.cut_short and len(found.explanations) < len(cf.CATALOGUE)
    assert "cut short" in found.text()


def test_picture_of_a_failure():
    from sparse_attn_conformance.attention.compare import row_errors
    from sparse_attn_conformance.conformance import picture

    att = attended(1)
    live = att.live.clone()
    j = int(torch.nonzero(live[1]).flatten()[-1])
    live[1, j] = False
    actual = golden(replace(att, live=live))
    tol = tolerance(att, golden(att))
    found = cf.diagnose(att, actual, tol).as_dict()
    pic = picture.of(att, row_errors(actual, golden(att), tol)[1], found)
    assert [t["token"] for t in pic["tokens"]] == ["t=0", "t=1", "t=2"]
    assert pic["heads"] == [0, 1, 2] and not pic["cut"]
    assert max(pic["tokens"][1]["ratios"]) > 1 and max(pic["tokens"][0]["ratios"]) == 0
    assert pic["tokens"][1]["lanes"] == "".join("1" if x else "0" for x in att.live[1].tolist())
    assert pic["blamed_lanes"] == [j]


def test_picture_of_a_wide_failure_keeps_the_worst_heads():
    from sparse_attn_conformance.conformance import picture

    att = attended(2)
    ratio = torch.zeros(3, 40, dtype=torch.float64)
    ratio[2, 37] = 5.0
    ratio[0, 3] = float("nan")
    att = replace(att, q=torch.zeros(3, 40, att.q.shape[-1], dtype=torch.bfloat16),
                  attn_sink=torch.zeros(40))
    pic = picture.of(att, ratio)
    assert pic["cut"] and len(pic["heads"]) == picture.MAX_HEADS
    assert 37 in pic["heads"] and 3 in pic["heads"] and pic["heads"] == sorted(pic["heads"])
    assert pic["tokens"][2]["ratios"][pic["heads"].index(37)] == 5.0
    assert pic["tokens"][0]["ratios"][pic["heads"].index(3)] == 1e30  # NaN drawn as 1e30


def test_a_finite_sentinel_is_named_with_its_value():
    """Token 0's logits lie near -2^100 (below -1e30), token 1's near 0: a kernel that
    takes a token below -1e20 for empty zeroes token 0 only."""
    rows = torch.ones(2, 2, 4, dtype=torch.bfloat16)
    q = torch.zeros(2, 1, 4)
    q[0, 0, 0] = -(2.0**100)
    att = Attended(q=q.bfloat16(), rows=rows, live=torch.ones(2, 2, dtype=torch.bool),
                   attn_sink=torch.tensor([float("-inf")]), softmax_scale=1.0,
                   token_dims=("t",))
    actual = golden(att).clone()
    actual[0] = 0
    found = diagnosis_of(att, actual)
    top = found.explained[0]
    assert top.name == "finite-sentinel" and "at -1e+20" in top.variants, found.text()


def test_every_declared_bug_class_is_a_hypothesis_of_the_catalogue():
    from sparse_attn_conformance.attention import lse_counterfactuals as lse
    from sparse_attn_conformance.conformance.v1 import counterfactuals as v1
    from sparse_attn_conformance.conformance.v2 import counterfactuals as v2
    from sparse_attn_conformance.kernels import registry

    names = {h.name for h in cf.CATALOGUE} | set(v1.NAMES) | set(v2.NAMES) | set(lse.NAMES)
    declared = {n: registry.kernel_under_test(n).bug_class
                for n in registry.builtin_names(faulty=True, torch=True)}
    assert {c for c in declared.values() if c is not None} <= names
    assert sum(c is not None for c in declared.values()) >= 42
    # each convention's classes on its own kernels only; the LSE's on the LSE kernels
    for n, c in declared.items():
        if c in set(v1.NAMES) - set(v2.NAMES):
            assert registry.kernel_under_test(n).convention == "v1", n
        if c in set(v2.NAMES) - set(v1.NAMES):
            assert registry.kernel_under_test(n).convention == "v2", n
        if c in lse.NAMES:
            assert registry.kernel_under_test(n).lse is not None, n


def test_a_bf16_value_accumulator_is_named_and_the_correct_output_is_not():
    """200 live rows of values in [1, 2) and equal weights: a bf16 accumulator stops
    growing by each row's exact product (its ulp reaches 1 at 256) and the output drifts
    past the tolerance; the reference's own output has nothing to explain."""
    g = torch.Generator().manual_seed(0)
    L = 200
    att = Attended(q=torch.zeros(1, 2, 4).bfloat16(),
                   rows=(1 + torch.rand(1, L, 4, generator=g)).bfloat16(),
                   live=torch.ones(1, L, dtype=torch.bool), attn_sink=torch.tensor([0.0, -1.0]),
                   softmax_scale=0.5, token_dims=("t",))
    acc = torch.zeros(2, 4, dtype=torch.float64)
    for j in range(L):  # the mistake by hand: round the running sum after every row
        acc = (acc + att.rows[0, j].double()).bfloat16().double()
    actual = (acc / (L + torch.exp(att.attn_sink.double()))[:, None])[None]
    found = diagnosis_of(att, actual)
    top = found.as_dict()["hypotheses"][0]
    assert top["hypothesis"] == "low-precision" and top["rank"] == 1, found.text()
    assert top["variants"] == ["the value accumulator in bf16"]
    assert diagnosis_of(att, golden(att)).failing == 0
