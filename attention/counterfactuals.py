"""Counterfactual references: what a kernel's output would be under one named mistake, and
which mistakes explain a failure.

A failing example holds the exact input (`Attended`: what each token attends to) and the
kernel's exact output. Each hypothesis here is a small change to what a token attends to or
to how the formula is applied (the sink dropped, another head's sink, the scale ignored, one
live lane dropped, repeated rows counted once, ...), written once over `Attended`, so both
calling conventions and every cache format get it. A hypothesis *explains* a failure when,
on every output row where the kernel misses the reference, the kernel's output matches
the hypothesis' output within that row's tolerance while the hypothesis' output itself
misses the reference there. Hypotheses with variants (which lane was dropped, which head's
sink was read) may explain each row by a different variant; the explanation names them.

Not in this catalogue (they need the calling convention's addressing, not `Attended`): the
cut at another position, another token's or batch's positions or table row, an ignored
lane read from its address, the integer-edge wraps; the conventions' modules hold them
(conformance/v1|v2/counterfactuals.py). Nor the max taken over one part only (the window
lanes or the compressed ones): `Attended` does not tell the parts apart. Nor probabilities
rounded to bf16: the tolerance is derived from that pipeline, so it is no failure. A failure none
explains is reported as unexplained, with the closest hypotheses. The LSE's hypotheses are
in attention/lse_counterfactuals.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.reference import attend

#: The most live lanes per token the lane hypotheses try one by one.
MAX_LANES = 256
#: A variant's output is matched within this share of its largest value (two bf16 ulps),
#: where that is more than the row's tolerance.
VARIANT_REL = 2.0**-7
#: Seconds a diagnosis may take; past it, the remaining hypotheses are not tried.
BUDGET_SECONDS = 5.0


@dataclass(frozen=True)
class Hypothesis:
    """One named mistake: `variants(att)` yields `(label, output)` pairs, the output
    `[*tokens, H, D_v]` float64 the kernel would give under each variant; `says` is the
    sentence a kernel author reads, `{rows}` replaced by what the variants explain."""

    name: str
    says: str
    variants: Callable[[Attended], Iterator[tuple[str, torch.Tensor]]]
    #: the variants take the whole call's `Attended` and give every token's output, or what
    #: every token attends to under the variant (an `Attended`: only the failing tokens'
    #: outputs are then computed) (a mistake that mixes tokens, or one of a convention's
    #: derivations); otherwise they get, and give, the failing tokens only
    whole: bool = False


@dataclass
class Explanation:
    """How well one hypothesis matches a failure: `tightness` is the worst, over the rows
    that fail, of the best variant's error over the tolerance (<= 1: explained)."""

    name: str
    says: str
    tightness: float
    explained: int
    failing: int
    variants: list[str]

    @property
    def explains(self) -> bool:
        return self.explained == self.failing > 0

    def sentence(self) -> str:
        which = ", ".join(self.variants[:6]) + (" ..." if len(self.variants) > 6 else "")
        return self.says.format(rows=which or "-")

    def as_dict(self) -> dict:
        return {"hypothesis": self.name, "explains": self.explains,
                "tightness": round(self.tightness, 4), "rows_explained": self.explained,
                "rows_failing": self.failing, "variants": self.variants[:32],
                "sentence": self.sentence()}


def _out(att: Attended) -> torch.Tensor:
    return attend(att, torch.float64)


def _one(label: str, att: Attended) -> Iterator[tuple[str, torch.Tensor]]:
    yield label, _out(att)


#: Finite "minus infinity" values kernels use for the running max or an empty token's LSE.
SENTINELS = (-1e20, -1e30, -1e38)
LOG2E = 1.4426950408889634


def _masked_logits(att: Attended) -> torch.Tensor:
    """The logits `[*tokens, H, L]` in float64, -inf on lanes that are not live."""
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", att.q.double(),
                                         att.rows.double())
    return torch.where(att.live.unsqueeze(-2), z, float("-inf"))


def _finite_sentinel(att):
    # a token whose largest live logit (natural or log2 units) is at or below a finite
    # sentinel is taken for empty: its output is 0
    m = _masked_logits(att).amax(dim=-1)
    has = att.live.any(dim=-1)[..., None]
    out = _out(att)
    for unit, scale in (("", 1.0), (" in log2 units", LOG2E)):
        for sentinel in SENTINELS:
            taken = has & (m * scale <= sentinel)
            if bool(taken.any()):
                yield (f"at {sentinel:g}{unit}",
                       torch.where(taken[..., None], 0.0, out))


def _sink_dropped(att):
    yield from _one("every head", replace(att, attn_sink=torch.full_like(att.attn_sink,
                                                                         float("-inf"))))


def _sink_other_head(att):
    H = att.attn_sink.shape[0]
    for shift in range(1, min(H, 4)):
        for sign in (1, -1):
            yield (f"head h reads head h{'+' if sign > 0 else '-'}{shift}'s sink",
                   _out(replace(att, attn_sink=att.attn_sink.roll(-sign * shift))))


def _sink_scaled(att):
    s = att.attn_sink.double()
    for label, sink in (("times softmax_scale", s * att.softmax_scale),
                        ("times log2(e)", s * 1.4426950408889634), ("negated", -s)):
        yield label, _out(replace(att, attn_sink=sink.float()))


def _shifted(att: Attended):
    """`(p, m, empty, v)` in float64: the max-shifted probabilities of the live lanes
    `[..., H, L]`, the shift `m` (0 for an empty token), the empty tokens, the values."""
    z = _masked_logits(att)
    empty = ~att.live.any(dim=-1)
    m = torch.where(empty[..., None, None], 0.0, z.amax(-1, keepdim=True))
    p = torch.where(att.live.unsqueeze(-2), torch.exp(z - m), 0.0)
    kv = att.rows.double()
    return p, m, empty, (kv if att.d_v is None else kv[..., :att.d_v])


def _sink_unshifted(att):
    # the sink term taken as exp(sink), not exp(sink - m): only the logits are shifted
    p, m, empty, v = _shifted(att)
    den = p.sum(-1, keepdim=True) + torch.exp(att.attn_sink.double())[:, None]
    o = torch.einsum("...ht,...td->...hd", p, v) / den
    yield "exp(sink) beside exp(z - m)", torch.where(empty[..., None, None], 0.0, o)


def _zero_rows(att):
    yield "0", torch.zeros_like(_out(att))


def _scale(att):
    s = att.softmax_scale
    for label, new in (("ignored (1)", 1.0), ("squared (applied twice)", s * s),
                       ("inverted", 1.0 / s if s else 0.0), ("negated", -s)):
        if new != s:
            yield label, _out(replace(att, softmax_scale=new))


def _lane_dropped(att):
    # closed form per lane: o_j = (sum p v - p_j v_j) / (sum p - p_j + exp(sink - m)), one
    # pass per lane instead of a reference per lane; where lane j carried most of the
    # weight (the subtraction would cancel), the rows are recomputed exactly
    kv, live = att.rows.double(), att.live
    z = _masked_logits(att)
    m = z.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, 0.0)
    p = torch.where(live.unsqueeze(-2), torch.exp(z - m), 0.0)            # [*t, H, L]
    v = kv if att.d_v is None else kv[..., :att.d_v]                       # [*t, L, Dv]
    num = torch.einsum("...ht,...td->...hd", p, v)
    den = p.sum(dim=-1) + torch.exp(att.attn_sink.double() - m.squeeze(-1))  # [*t, H]
    count = live.sum(dim=-1)
    L = live.shape[-1]
    for j in range(min(L, MAX_LANES)):
        if not bool(live[..., j].any()):
            continue
        pj = p[..., j]
        out = (num - pj[..., None] * v[..., j, None, :]) / (den - pj)[..., None]
        alone = (count - live[..., j].long() == 0)[..., None, None]
        out = torch.where(alone, 0.0, out)
        if bool((pj > 0.5 * den).any()):
            dropped = live.clone()
            dropped[..., j] = False
            exact = _out(replace(att, live=dropped))
            risky = (pj > 0.5 * den)[..., None]
            out = torch.where(risky, exact, out)
        yield f"lane {j}", out


def _duplicates_once(att):
    # per token, a live lane whose row equals an earlier live lane's is dropped
    rows, live = att.rows, att.live.clone()
    flat_rows = rows.reshape(-1, *rows.shape[-2:])
    flat_live = live.reshape(-1, live.shape[-1])
    for t in range(flat_rows.shape[0]):
        lanes = torch.nonzero(flat_live[t]).flatten()
        if lanes.numel() < 2:
            continue
        _, inverse = torch.unique(flat_rows[t, lanes].double(), dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), lanes.numel(), dtype=torch.int64)
        first = first.scatter_reduce(0, inverse, torch.arange(lanes.numel()), "amin")
        keep = first[inverse] == torch.arange(lanes.numel())
        flat_live[t, lanes[~keep]] = False
    if not torch.equal(live, att.live):
        yield "each repeated row once", _out(replace(att, live=live))


def _zero_rows_admitted(att):
    # an ignored lane masked to a zero row but left in the softmax: logit 0, value 0
    ignored = (~att.live).sum(dim=-1)
    most = int(ignored.max()) if ignored.numel() else 0
    for k in range(1, min(most, 8) + 1):
        extra = torch.zeros(*att.rows.shape[:-2], k, att.rows.shape[-1], dtype=att.rows.dtype)
        rows = torch.cat([att.rows, extra], dim=-2)
        live = torch.cat([att.live, torch.ones(*att.live.shape[:-1], k, dtype=torch.bool)], -1)
        yield f"{k} ignored lane(s) as zero rows", _out(replace(att, rows=rows, live=live))


def _bf16_accumulator(att: Attended) -> torch.Tensor:
    """The output with the value accumulator `sum_j p_j v_j` rounded to bf16 after every
    lane's product is added (lanes in order), the rest in float64."""
    p, m, empty, v = _shifted(att)
    den = p.sum(-1, keepdim=True) + torch.exp(att.attn_sink.double()[:, None] - m)
    acc = torch.zeros(*p.shape[:-1], v.shape[-1], dtype=torch.float64)
    for j in range(p.shape[-1]):
        if bool(att.live[..., j].any()):
            step = acc + p[..., j, None] * v[..., j, None, :]
            acc = step.to(torch.bfloat16).double()
    return torch.where(empty[..., None, None], 0.0, acc / den)


def _low_precision(att):
    # no "probabilities in bf16": the tolerance is derived from exactly that pipeline
    # (attention/compare.py), so a kernel rounding them to bf16 passes
    if att.live.shape[-1] <= MAX_LANES:  # a loop over lanes
        yield "the value accumulator in bf16", _bf16_accumulator(att)
    yield "probabilities in fp16", attend(att, torch.float64, prob_dtype=torch.float16)
    yield "probabilities in fp8 e4m3", attend(att, torch.float64,
                                              prob_dtype=torch.float8_e4m3fn)
    yield "everything in fp16", attend(replace(att, rows=att.rows.to(torch.float16)),
                                       torch.float16).double()


def _no_max_shift(att):
    # exp of the raw logits in fp32: overflow past 88, underflow below -103
    q, kv = att.q.float(), att.rows.float()
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", q, kv)
    p = torch.where(att.live.unsqueeze(-2), torch.exp(z), 0.0)
    den = p.sum(-1, keepdim=True) + torch.exp(att.attn_sink.float())[:, None]
    v = kv if att.d_v is None else kv[..., :att.d_v]
    o = torch.einsum("...ht,...td->...hd", p, v) / den
    empty = ~att.live.any(dim=-1)
    yield "fp32, unshifted", torch.where(empty[..., None, None], 0.0, o).double()


def _empty_nan(att):
    out = _out(att)
    empty = ~att.live.any(dim=-1)
    yield "NaN for an empty token", torch.where(empty[..., None, None], float("nan"), out)


def _token_or_head_mixed(att):
    out = _out(att)
    flat = out.reshape(-1, *out.shape[-2:])
    if flat.shape[0] > 1:
        for shift in (1, -1):
            yield (f"token t gets token t{'+' if shift > 0 else '-'}1's output",
                   flat.roll(-shift, 0).reshape(out.shape))
    if out.shape[-2] > 1:
        for shift in (1, -1):
            yield (f"head h gets head h{'+' if shift > 0 else '-'}1's output",
                   out.roll(-shift, -2))


#: In order of prior belief: where several explain a failure equally tightly, the earlier
#: is listed first.
CATALOGUE: tuple[Hypothesis, ...] = (
    Hypothesis("finite-sentinel", "a token whose live logits all lie below a finite "
               "\"minus infinity\" is taken for empty and returns 0 ({rows}); the contract's "
               "logits reach -2^120", _finite_sentinel),
    Hypothesis("sink-dropped", "the sink is left out of the denominator ({rows})",
               _sink_dropped),
    Hypothesis("sink-other-head", "a head reads another head's sink ({rows})",
               _sink_other_head),
    Hypothesis("sink-scaled", "the sink is transformed before use: {rows}", _sink_scaled),
    Hypothesis("sink-unshifted", "the sink enters as exp(sink), without the running max "
               "the logits are shifted by ({rows})", _sink_unshifted),
    Hypothesis("scale", "softmax_scale is applied wrongly: {rows}", _scale),
    Hypothesis("lane-dropped", "a live lane is left out of the softmax ({rows}; lanes "
               "counted in the token's lane order, window lanes first in v2)", _lane_dropped),
    Hypothesis("duplicates-once", "two live lanes naming the same row count once, not "
               "twice (a gather that deduplicates)", _duplicates_once),
    Hypothesis("zero-rows-admitted", "ignored lanes are masked to zero rows but left in "
               "the softmax: each adds exp(0 - m) to the denominator ({rows})",
               _zero_rows_admitted),
    Hypothesis("low-precision", "the pipeline is narrower than the contract's: {rows}",
               _low_precision),
    Hypothesis("no-max-shift", "exp is taken without subtracting the running max "
               "({rows}): logits past 88 overflow", _no_max_shift),
    Hypothesis("empty-token-nan", "a token with no live lane returns NaN, not 0",
               _empty_nan),
    Hypothesis("rows-mixed", "outputs are written to the wrong row: {rows}",
               _token_or_head_mixed, whole=True),
    Hypothesis("row-not-written", "the failing rows are exactly 0: never written, or their "
               "token taken for empty", _zero_rows),
)


@dataclass
class Diagnosis:
    explanations: list[Explanation]
    failing: int
    cut_short: bool = False
    seconds: float = 0.0
    #: the failing rows the hypotheses were tried on (those of the first MAX_TOKENS tokens)
    seen: int = 0
    #: what failed: the kernel's "output", or its "lse" (attention/lse_counterfactuals.py)
    of: str = "output"

    @property
    def explained(self) -> list[Explanation]:
        return [e for e in self.explanations if e.explains]

    def text(self) -> str:
        return text_of(self.as_dict())

    def as_dict(self) -> dict:
        """The diagnosis as data: hypotheses best first, each explaining one with its
        `rank` (hypotheses that match equally tightly share a rank: a small example may not
        tell them apart)."""
        ranked = sorted(self.explanations, key=lambda e: (not e.explains, -e.explained,
                                                          e.tightness))
        out, rank, last = [], 0, None
        for e in ranked:
            d = e.as_dict()
            if e.explains:
                if d["tightness"] != last:
                    rank, last = rank + 1, d["tightness"]
                d["rank"] = rank
            else:
                d["rank"] = None
            out.append(d)
        return {"of": self.of, "failing_rows": self.failing, "rows_tried": self.seen,
                "cut_short": self.cut_short, "seconds": round(self.seconds, 3),
                "hypotheses": out}


def text_of(diagnosis: dict) -> str:
    """The diagnosis (`Diagnosis.as_dict()`) as a failure's text: the explaining
    hypotheses ranked, or the closest ones."""
    failing = diagnosis["failing_rows"]
    if failing == 0:
        return ("the kernel's output matches the reference on this call; the failure "
                "compares it with something else (another call, a closed form)")
    hyps = diagnosis["hypotheses"]
    good = [h for h in hyps if h["explains"]]
    lines = []
    if good:
        for rank, h in enumerate(good, 1):
            lines.append(f"{h.get('rank', rank)}. {h['hypothesis']} (error / tolerance at "
                         f"most {h['tightness']:.3g} on all {failing} failing rows): "
                         f"{h['sentence']}")
        if sum(h.get("rank") == 1 for h in good) > 1:
            lines.append("(hypotheses of one rank explain this example alike: a larger one "
                         "would tell them apart)")
    else:
        lines.append(f"no known hypothesis explains all {failing} failing rows; the closest:")
        for h in hyps[:3]:
            lines.append(f"   {h['hypothesis']}: explains {h['rows_explained']} of {failing} "
                         f"rows ({h['sentence']})")
    tried = diagnosis.get("rows_tried", failing)
    if tried < failing:
        lines.append(f"(hypotheses tried on the {tried} failing rows of the first "
                     f"{MAX_TOKENS} failing tokens; the other rows count as unexplained)")
    if diagnosis["cut_short"]:
        lines.append(f"(cut short after {diagnosis['seconds']:.1f} s: later hypotheses of the "
                     f"catalogue were not tried)")
    return "\n".join(lines)


def _ratio(a: torch.Tensor, b: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """Per row `[*tokens, H]`: max |a - b| / tol, NaN equal to NaN, inf where one side
    is not finite and the other is."""
    both_nan = a.isnan() & b.isnan()
    diff = torch.where(both_nan, 0.0, (a - b).abs())
    diff = torch.where(diff.isnan(), float("inf"), diff)
    return diff.amax(dim=-1) / tol


def _on_tokens(out, sub: Attended, tokens: torch.Tensor, shape) -> torch.Tensor | None:
    """A whole-call variant's output on the failing `tokens` (whose contract reading is
    `sub`): `out` is the whole call's output, or what the whole call attends to under the
    variant (`Attended`; only the failing tokens are computed, and None where they attend
    to what the contract's reading does: such a variant cannot explain them)."""
    if not isinstance(out, Attended):
        return out.double().reshape(shape)[tokens]
    mine = _flat(out, tokens)
    if torch.equal(mine.live, sub.live) and torch.equal(mine.rows, sub.rows) \
            and torch.equal(mine.q, sub.q) and torch.equal(mine.attn_sink, sub.attn_sink) \
            and mine.softmax_scale == sub.softmax_scale:
        return None
    return _out(mine)


def _slack(out: torch.Tensor) -> torch.Tensor:
    """Per row: two bf16 ulps of a variant's output's largest value."""
    return VARIANT_REL * out.abs().amax(dim=-1).nan_to_num(0.0, posinf=0.0)


def _flat(att: Attended, tokens: torch.Tensor | None = None) -> Attended:
    """`att` with its token dims flattened to one (`t`), keeping the tokens `tokens`."""
    H, D, L = att.q.shape[-2], att.q.shape[-1], att.live.shape[-1]
    q, rows, live = att.q.reshape(-1, H, D), att.rows.reshape(-1, L, D), att.live.reshape(-1, L)
    if tokens is not None:
        q, rows, live = q[tokens], rows[tokens], live[tokens]
    return replace(att, q=q, rows=rows, live=live, token_dims=("t",))


def score(hyp: Hypothesis, outputs, actual: torch.Tensor, gold: torch.Tensor, tol: torch.Tensor,
          fail: torch.Tensor, n_fail: int, ratio, slack, late, diagnosis) -> Explanation:
    """How well `hyp`'s variants `outputs` (`(label, output)` pairs, shaped like `gold`)
    explain the rows `fail` of `actual`: `ratio(a, b, tol)` is the per-row error over the
    tolerance, `slack(output)` per row the rounding a kernel adds to a variant's own output
    (matched within the larger of it and `tol`); `late()` says the budget is spent (then
    `diagnosis.cut_short` is set and the remaining variants are not tried)."""
    best = torch.full(fail.shape, float("inf"), dtype=torch.float64)
    labels: dict[str, int] = {}
    for label, out in outputs:
        # the variant explains a row when the kernel matches it there and it misses the
        # reference there; the kernel's rounding of the variant's output is the row's
        # tolerance, or the variant's own scale's where that is larger (a row the
        # reference leaves empty has a tolerance of 1e-6, a variant that reads it does not)
        r = ratio(actual, out, torch.maximum(tol, slack(out)))
        differs = ratio(out, gold, tol) > 1
        r = torch.where(differs, r, float("inf"))
        better = fail & (r < best)
        if bool(better.any()) and bool((r[better] <= 1).any()):
            labels[label] = int((better & (r <= 1)).sum())
        best = torch.where(better, r, best)
        if late():
            diagnosis.cut_short = True
            break
    ok = fail & (best <= 1)
    worst = float(best[fail].max()) if bool(fail.any()) else float("inf")
    used = [lbl for lbl, _ in sorted(labels.items(), key=lambda kv: -kv[1])]
    # rows past MAX_TOKENS' tokens were not looked at: they count as unexplained
    return Explanation(hyp.name, hyp.says, worst, int(ok.sum()), n_fail, used)


#: The most failing tokens a diagnosis looks at (the first ones).
MAX_TOKENS = 16


def diagnose(att: Attended, actual: torch.Tensor, tol: torch.Tensor,
             catalogue: tuple[Hypothesis, ...] = CATALOGUE,
             budget: float = BUDGET_SECONDS, gold: torch.Tensor | None = None) -> Diagnosis:
    """Which hypotheses of `catalogue` explain `actual` (the kernel's output for `att`)
    missing the reference by more than `tol` (per row), within `budget` seconds. Each
    hypothesis is evaluated on the tokens with a failing row only (at most `MAX_TOKENS`),
    so its cost follows the failure, not the call. `gold`: the reference's output, when
    the caller has it."""
    start = time.perf_counter()
    H = att.q.shape[-2]
    gold_all = (_out(att) if gold is None else gold.double()).reshape(
        -1, H, *(att.rows.shape[-1:] if att.d_v is None else (att.d_v,)))
    actual_all = actual.double().reshape(gold_all.shape)
    tol_all = tol.reshape(-1, H)
    fail_all = _ratio(actual_all, gold_all, tol_all) > 1
    n_fail = int(fail_all.sum())
    diagnosis = Diagnosis([], n_fail)
    if n_fail == 0:
        return diagnosis
    tokens = torch.nonzero(fail_all.any(dim=-1)).flatten()[:MAX_TOKENS]
    sub = _flat(att, tokens)
    actual, gold, tol = actual_all[tokens], gold_all[tokens], tol_all[tokens]
    fail = fail_all[tokens]
    n_seen = int(fail.sum())

    def outputs_of(hyp: Hypothesis):
        if not hyp.whole:
            return hyp.variants(sub)
        on_tokens = ((label, _on_tokens(out, sub, tokens, gold_all.shape))
                     for label, out in hyp.variants(att))
        return ((label, out) for label, out in on_tokens if out is not None)

    return run_catalogue(diagnosis, catalogue, outputs_of,
                         (actual, gold, tol, fail, n_fail, _ratio, _slack), start, budget,
                         n_seen)


def run_catalogue(diagnosis: Diagnosis, hypotheses, outputs_of, scoring: tuple,
                  start: float, budget: float, seen: int) -> Diagnosis:
    """Score each hypothesis' variants (`outputs_of(hyp)`) with `score(hyp, outputs,
    *scoring, ...)` until `budget` seconds past `start` are spent (then `cut_short`), and
    rank the explanations into `diagnosis`, which has seen `seen` failing rows."""
    def late() -> bool:
        return time.perf_counter() - start > budget

    for hyp in hypotheses:
        if late():
            diagnosis.cut_short = True
            break
        diagnosis.explanations.append(score(hyp, outputs_of(hyp), *scoring, late, diagnosis))
    diagnosis.seen = seen
    diagnosis.seconds = time.perf_counter() - start
    diagnosis.explanations.sort(key=lambda e: (not e.explains, -e.explained, e.tightness))
    return diagnosis
