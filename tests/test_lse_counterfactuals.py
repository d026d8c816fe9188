"""The diagnosis of an LSE failure (attention/lse_counterfactuals.py): an LSE made by one
hypothesis' mistake, by hand, is explained by that hypothesis first; the correct LSE has
nothing to explain and noise is explained by none; a seeded faulty LSE kernel's shrunk
failure carries the diagnosis (terminal note, the report's `counterexample.diagnosis`) with
its declared class first."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_attn_conformance.attention import lse as L
from sparse_attn_conformance.attention import lse_counterfactuals as lcf
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.conformance import recorder
from sparse_attn_conformance.contracts.lse import LSE
from sparse_attn_conformance.kernels import registry
from tests.in_profile import in_profile
from tests.test_lse import KILLS


def attended(big: bool = False) -> Attended:
    """Three tokens of two heads, token 2 empty; logits past 88 (exp overflows in fp32) when `big`."""
    g = torch.Generator().manual_seed(7)
    live = torch.tensor([[True, True, False, True], [True, False, True, True],
                         [False, False, False, False]])
    rows = torch.where(live[..., None], torch.randn(3, 4, 8, generator=g), 0.0)
    q = torch.randn(3, 2, 8, generator=g) * (60.0 if big else 1.0)
    return Attended(q=q.bfloat16(), rows=rows.bfloat16(), live=live,
                    attn_sink=torch.tensor([0.75, -0.5]), softmax_scale=0.7, token_dims=("t",))


def fp32_lse(att: Attended, with_sink: bool) -> torch.Tensor:
    return L.lse(att, torch.float32, with_sink)


def empty_as(value: torch.Tensor, att: Attended, v: float) -> torch.Tensor:
    return torch.where((~att.live.any(dim=-1))[:, None], torch.tensor(v), value)


# (name, declaration, the kernel's mistaken LSE by hand, whether the logits are large)
MISTAKES = [
    ("lse-base", LSE(base="e", with_sink=True),
     lambda a: fp32_lse(a, True) / math.log(2.0), False),
    ("lse-base", LSE(base="2", with_sink=False, empty=math.inf),
     lambda a: empty_as(fp32_lse(a, False), a, math.inf), False),
    ("lse-sink", LSE(base="e", with_sink=False, empty=math.inf),
     lambda a: empty_as(fp32_lse(a, True), a, math.inf), False),
    ("lse-sink", LSE(base="e", with_sink=True), lambda a: fp32_lse(a, False), False),
    ("lse-empty", LSE(base="e", with_sink=False, empty=math.inf),
     lambda a: fp32_lse(a, False), False),
    ("lse-empty", LSE(base="e", with_sink=True), lambda a: empty_as(fp32_lse(a, True), a, 0.0),
     False),
    ("lse-no-max-shift", LSE(base="e", with_sink=True),
     lambda a: torch.log(torch.where(a.live[:, None], torch.exp(
         a.softmax_scale * torch.einsum("thd,tld->thl", a.q.float(), a.rows.float())), 0.0)
         .sum(-1) + torch.exp(a.attn_sink)), True),
    ("lse-scale", LSE(base="e", with_sink=False),
     lambda a: L.lse(Attended(**{**a.__dict__, "softmax_scale": 1.0}), torch.float32), False),
]


@pytest.mark.parametrize("name, decl, mistake, big", MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_each_lse_mistake_is_ranked_first_by_its_hypothesis(name, decl, mistake, big):
    att = attended(big)
    found = lcf.diagnose(att, mistake(att), decl)
    assert found.failing > 0
    top = found.as_dict()["hypotheses"][0]
    assert top["hypothesis"] == name and top["rank"] == 1 and top["explains"], found.text()
    assert found.as_dict()["of"] == "lse"


@pytest.mark.parametrize("decl", [LSE(base="e"), LSE(base="2", with_sink=True),
                                  LSE(base="e", with_sink=False, empty=math.inf)])
def test_the_correct_lse_has_nothing_to_explain_and_noise_is_unexplained(decl):
    att = attended()
    right = L.expected(att, decl).float()
    found = lcf.diagnose(att, right, decl)
    assert found.failing == 0 and not found.explanations
    noise = right + torch.randn(right.shape, generator=torch.Generator().manual_seed(1))
    found = lcf.diagnose(att, noise, decl)
    assert found.failing > 0 and not found.explained, found.text()
    assert found.text().startswith("no known hypothesis explains all")


@pytest.mark.parametrize("name", ["sink-added", "empty-minus-inf", "no-max-shift",
                                  "unscaled-logits"])
def test_a_seeded_lse_kernels_failure_carries_its_diagnosis(name):
    """The kill profile's shrunk failure (what a user is shown): the note in the failure,
    the diagnosis in the report's counterexample with the kernel's declared class at rank
    1, and the picture of where it fails."""
    kernel = registry.kernel_under_test(f"mutant-lse-{name}")
    recorder.begin()
    with pytest.raises(AssertionError) as info:
        in_profile(KILLS[name], "kill")(kernel=kernel)
    counterexample = recorder.end()["counterexample"]
    assert any(n.startswith("diagnosis of the LSE") for n in info.value.__notes__)
    diagnosis = counterexample["diagnosis"]
    assert diagnosis["of"] == "lse" and diagnosis["failing_rows"] > 0
    top = next(h for h in diagnosis["hypotheses"] if h["hypothesis"] == kernel.bug_class)
    assert top["rank"] == 1, diagnosis
    assert max(max(t["ratios"]) for t in counterexample["picture"]["tokens"]) > 1


def test_the_html_page_says_the_diagnosis_is_of_the_lse():
    from sparse_attn_conformance.conformance import picture
    from sparse_attn_conformance.reports import html
    from tests.test_reports import hand_made_run

    att, decl = attended(), LSE(base="e", with_sink=False, empty=math.inf)
    actual = fp32_lse(att, False)  # the empty token left at -inf
    found = lcf.diagnose(att, actual, decl).as_dict()
    run = hand_made_run()
    failed = next(r for r in run["results"] if r["status"] == "failed")
    failed["counterexample"].update(
        diagnosis=found, picture=picture.of(att, L.ratios(actual, att, decl)[0], found))
    page = html.render([run])
    assert "diagnosis of the LSE" in page and 'data-hypothesis="lse-empty"' in page
