"""Counterfactual LSEs: what a kernel's returned LSE (attention/lse.py, docs/contract.md
section 13) would be under one named mistake, and which mistakes explain an LSE failure.

The machinery is attention/counterfactuals.py's (`Hypothesis`, `score`, the ranking and
the budget); here a variant's output is an LSE `[*tokens, H]` in the value the kernel
would return, and a row is one (token, head) entry. The mistakes are those of an LSE path:
the other base (log2 for natural, or the reverse), the sink's term added or left out
against the declaration, an empty token's value other than the declared one, no max shift,
the score scale ignored or applied twice. Each variant is the declared LSE of a changed
declaration or a changed call, so the contract's own formula gives it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace

import torch

from sparse_attn_conformance.attention import lse as lse_
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.counterfactuals import (
    BUDGET_SECONDS,
    SENTINELS,
    Diagnosis,
    Hypothesis,
    run_catalogue,
)
from sparse_attn_conformance.contracts.lse import LSE

#: The names of the LSE's hypotheses (a seeded LSE kernel's `bug_class` may be one).
NAMES = ("lse-base", "lse-sink", "lse-empty", "lse-no-max-shift", "lse-scale")


def _ratio(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """Per entry: |a - b| / tol where both are finite; else 0 where they are equal (NaN
    equal to NaN), inf where not (an infinity or a sentinel is matched exactly)."""
    same = (a == b) | (a.isnan() & b.isnan())
    finite = torch.isfinite(a) & torch.isfinite(b)
    return torch.where(finite, (a - b).abs() / tol, torch.where(same, 0.0, float("inf")))


def _slack(out: torch.Tensor) -> torch.Tensor:
    """The fp32 rounding of a variant's own value (the tolerance's floor, of its size)."""
    return lse_.FLOOR_ULPS * lse_.EPS32 * torch.where(torch.isfinite(out), out.abs(), 0.0)


def _unshifted(att: Attended, with_sink: bool) -> torch.Tensor:
    """The natural-log LSE as `log(sum_j exp(z_j) [+ exp(sink)])` in fp32, no max shift."""
    q, kv = att.q.float(), att.rows.float()
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", q, kv)
    s = torch.where(att.live.unsqueeze(-2), torch.exp(z), 0.0).sum(-1)
    if with_sink:
        s = s + torch.exp(att.attn_sink.float())
    return torch.log(s).double()


def hypotheses(decl: LSE) -> tuple[Hypothesis, ...]:
    """The LSE hypotheses for a kernel declaring `decl`."""
    other = "2" if decl.base == "e" else "e"

    def declared(att: Attended, d: LSE = decl, value: torch.Tensor | None = None):
        # the LSE a kernel declaring `d` returns for `att` (`value`: its natural-log LSE)
        return lse_.expected(att, d, value)

    def base(att):
        said = ("log2 (the final * ln 2 missing)" if other == "2"
                else "the natural log (the final / ln 2 missing)")
        yield f"{said}, where {lse_.describe(decl).split(',')[0]} is declared", \
            declared(att, replace(decl, base=other))

    def sink(att):
        label = ("the sink's exp(attn_sink[h]) added to the sum, which the declaration "
                 "leaves out (the output's denominator reused)" if not decl.with_sink else
                 "the sink's term left out of the sum, which the declaration includes")
        yield label, declared(att, replace(decl, with_sink=not decl.with_sink))

    def empty(att):
        if not bool((~att.live.any(dim=-1)).any()):
            return
        said = "the declared" if decl.empty is not None else "the formula's"
        for label, value in (("-inf (log 0)", -math.inf), ("+inf", math.inf), ("0", 0.0),
                             ("NaN", math.nan),
                             *((f"{s:g}", s) for s in SENTINELS)):
            if decl.empty is None or not (value == decl.empty or (math.isnan(value) and
                                                                  math.isnan(decl.empty))):
                yield (f"an empty token's LSE is {label}, not {said} value",
                       declared(att, replace(decl, empty=value)))
        if decl.empty is not None:
            formula = "the sink" if decl.with_sink else "-inf"
            yield (f"an empty token's LSE is the formula's ({formula}), not the declared "
                   f"{decl.empty!r}",
                   declared(att, replace(decl, empty=None)))

    def no_max_shift(att):
        yield "log(sum exp(z)) in fp32: exp overflows past 88 and underflows below -103", \
            declared(att, value=_unshifted(att, decl.with_sink))

    def scale(att):
        s = att.softmax_scale
        for label, new in (("ignored (the unscaled logits <q, k>)", 1.0),
                           ("applied twice", s * s)):
            if new != s:
                yield label, declared(replace(att, softmax_scale=new))

    return (
        Hypothesis("lse-base", "the LSE is in the wrong base: {rows}", base),
        Hypothesis("lse-sink", "the LSE's sum has the wrong terms: {rows}", sink),
        Hypothesis("lse-empty", "{rows}", empty),
        Hypothesis("lse-no-max-shift", "the LSE is computed without the max shift: {rows}",
                   no_max_shift),
        Hypothesis("lse-scale", "softmax_scale is applied wrongly on the LSE's path: {rows}",
                   scale),
    )


def diagnose(att: Attended, actual: torch.Tensor, decl: LSE,
             budget: float = BUDGET_SECONDS) -> Diagnosis:
    """Which LSE hypotheses explain the kernel's LSE `actual` `[*tokens, H]` missing the
    one `decl` promises for `att` (attention/lse.py's comparison), within `budget`
    seconds. Every token is tried (an LSE variant costs one pass over the call)."""
    start = time.perf_counter()
    ratio, want, got, _, tol, *_ = lse_.ratios(actual, att, decl)
    H = ratio.shape[-1]
    fail = (ratio > 1).reshape(-1, H)
    n_fail = int(fail.sum())
    diagnosis = Diagnosis([], n_fail, of="lse")
    if n_fail == 0:
        return diagnosis
    want, got, tol = want.reshape(-1, H), got.reshape(-1, H), tol.reshape(-1, H)

    def outputs_of(hyp) -> Iterator:
        return ((label, out.double().reshape(-1, H)) for label, out in hyp.variants(att))

    return run_catalogue(diagnosis, hypotheses(decl), outputs_of,
                         (got, want, tol, fail, n_fail, _ratio, _slack), start, budget, n_fail)
