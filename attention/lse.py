"""The log-sum-exp (LSE) of a token's scaled logits, as kernels that return it beside the
output define it (docs/contract.md section 13), and the comparison of a kernel's LSE with it.

Per token and head, over the token's live rows (`z_j = softmax_scale * <q[t, h], k_j>`):

    lse[t, h] = log(sum_j exp(z_j) [+ exp(attn_sink[h])])

natural log, the sink's term only for a kernel that declares it (`LSE.with_sink`), computed
with the max shift `m = max(max_j z_j [, attn_sink[h]])`: `lse = m + log(sum_j exp(z_j - m)
[+ exp(sink - m)])`. So a token with no live row has `log(0) = -inf` without the sink and
exactly `attn_sink[h]` with it; a sink of `+inf` (with the sink) gives `+inf`, and one of
`-inf` gives the LSE without the sink. A kernel keeping log2 (`LSE.base == "2"`) returns
`lse / ln 2`.

The tolerance, derived as attention/compare.py derives the output's (FlashAttention's rule):
a kernel's error against the fp64 golden LSE may be `K` times the error of a baseline, plus
a floor.

- The baseline is the same LSE computed in fp32 from the rows rounded to bf16 (what a
  device kernel's matmul reads; exact for bf16 pools): its error against the golden is the
  fp32 rounding a device kernel makes too, of the logits' dot products, the scale's
  product, the exps, their sum and the log. A kernel may make `K = 3` times as much.
- The floor covers what one baseline's error can miss, because an LSE is one number per
  (token, head) and a single rounding error may happen to be near zero where a kernel with
  another summation order (tiles, an online softmax, exp2 with a `log2 e` product) is not:
  `FLOOR_ULPS` fp32 ulps (`2**-23` each) of
  - `|lse|`: the rounding of the result itself and of `m + log(s)`;
  - the logit magnitude `|softmax_scale| * max_j sum_d |q_d k_jd|`: an fp32 dot product's
    rounding (q and k are bf16, so each product is exact in fp32 and only the sum rounds,
    by about an ulp of the sum of magnitudes in a typical order), the scale's product and a
    `log2 e` product; the LSE is a convex combination of its logits' errors
    (`d lse / d z_j = p_j`, summing to at most 1), so the largest logit's bound bounds it;
  - 1: `log s` has an absolute error equal to the relative error of the sum `s`, an ulp or
    a few for the exps and their sum whatever the magnitudes.
  A few ulps of each would do for one rounding; `FLOOR_ULPS = 16` leaves room for a sum of
  thousands of rows in another order, and is still far below any error that changes how a
  split-KV merge weighs its parts (the first relative error that matters there is ~1e-3).
- In base 2 the golden and the tolerance are divided by `ln 2`.
- Exact where there is nothing to round: an infinite golden LSE (an empty token without
  the sink, a `+inf` sink) must be returned exactly, and an empty token must return the
  declared `LSE.empty` exactly (rounded to the kernel's dtype) when one is declared. Without
  a declared value an empty token's LSE is the formula's (`-inf`, or the sink: the max shift
  makes it `sink + log(1)`, exact in base e, within the floor in base 2). A finite LSE past
  the range of the kernel's dtype (a log2 LSE of a sink near fp32's edge, `3e38 / ln 2`)
  must be that dtype's infinity of its sign. NaN always fails.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.compare import Comparison
from sparse_attn_conformance.contracts.lse import LSE
from sparse_attn_conformance.contracts.preconditions import DOMAIN_LIMIT_LOG2

#: Multiple of the fp32 baseline's error a kernel may make (as attention/compare.py's K).
K = 3.0
#: fp32 ulps (of |lse|, of the logit magnitude and of 1) in the floor.
FLOOR_ULPS = 16
EPS32 = 2.0**-23
LN2 = math.log(2.0)


def lse(att: Attended, dtype: torch.dtype = torch.float64, with_sink: bool = False) -> torch.Tensor:
    """The natural-log LSE `[*tokens, H]` of the scaled logits over the live rows, computed
    in `dtype` with the max shift (module docstring)."""
    q = att.q.to(dtype)
    kv = att.rows.to(dtype)
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", q, kv)
    live_h = att.live.unsqueeze(-2)
    ninf = torch.tensor(float("-inf"), dtype=dtype)
    z = torch.where(live_h, z, ninf)
    m = z.amax(dim=-1) if z.shape[-1] else torch.full(z.shape[:-1], float("-inf"), dtype=dtype)
    sink = att.attn_sink.to(dtype)
    if with_sink:
        m = torch.maximum(m, sink)
    finite = torch.isfinite(m)
    m0 = torch.where(finite, m, torch.zeros((), dtype=dtype))
    s = torch.where(live_h, torch.exp(z - m0[..., None]), torch.zeros((), dtype=dtype)).sum(-1)
    if with_sink:
        s = s + torch.exp(sink - m0)  # a -inf sink adds 0
    # m = -inf: no live row and no sink term (log 0); m = +inf: a +inf sink
    return torch.where(finite, m0 + torch.log(s), m)


def in_base(value: torch.Tensor, base: str) -> torch.Tensor:
    """A natural-log LSE (or a tolerance on one) in `base` ("e" or "2")."""
    return value / LN2 if base == "2" else value


def logit_magnitude(att: Attended) -> torch.Tensor:
    """`[*tokens, H]`: `|softmax_scale| * max_j sum_d |q_d k_jd|` over the live rows (0 for a
    token with none), fp64. Summed in fp32 (a scale for the floor needs no more, and it
    costs a quarter of an fp64 product); the contract's domain keeps it finite there."""
    q = att.q.float().abs()
    kv = att.rows.float().abs()
    a = torch.einsum("...hd,...td->...ht", q, kv).double() * abs(att.softmax_scale)
    a = torch.where(att.live.unsqueeze(-2), a, torch.zeros((), dtype=a.dtype))
    return a.amax(dim=-1) if a.shape[-1] else torch.zeros(a.shape[:-1], dtype=a.dtype)


def tolerance(att: Attended, gold: torch.Tensor, with_sink: bool) -> torch.Tensor:
    """Natural-log tolerance `[*tokens, H]` for a finite golden LSE `gold` (module docstring)."""
    as_bf16 = replace(att, rows=att.rows.to(torch.bfloat16))
    base = lse(as_bf16, torch.float32, with_sink).double()
    both = torch.isfinite(base) & torch.isfinite(gold)
    err = torch.where(both, (base - gold).abs(), torch.zeros((), dtype=gold.dtype))
    mag = torch.where(torch.isfinite(gold), gold.abs(), torch.zeros((), dtype=gold.dtype))
    return K * err + FLOOR_ULPS * EPS32 * (mag + logit_magnitude(att) + 1.0)


def expected(att: Attended, decl: LSE, gold: torch.Tensor | None = None) -> torch.Tensor:
    """The LSE `[*tokens, H]` a kernel declaring `decl` must return, in its base, fp64 (an
    empty token's: the declared value where there is one)."""
    gold = lse(att, torch.float64, decl.with_sink) if gold is None else gold
    want = in_base(gold, decl.base)
    if decl.empty is not None:
        empty = ~att.live.any(dim=-1)
        want = torch.where(empty.unsqueeze(-1), torch.tensor(float(decl.empty), dtype=want.dtype),
                           want)
    return want


def in_domain(att: Attended) -> torch.Tensor:
    """`[*tokens, H]` bool: whether a (token, head) lies in the contract's numerical domain
    (docs/contract.md section 5): finite query and live rows, every live key's
    `sum_d |q_d k_d| * max(1, |softmax_scale|)` and every live `|v| * L` within
    `2^DOMAIN_LIMIT_LOG2`. A derived call's poisoned rows (NaN, inf, or finite values near
    fp32's edge) put the tokens that read them outside it; no LSE is claimed there, as
    their output is not compared either."""
    limit = 2.0 ** DOMAIN_LIMIT_LOG2
    rows = torch.where(att.live.unsqueeze(-1), att.rows.double(), 0.0)
    q = att.q.double()
    finite = (torch.isfinite(rows).all(dim=-1).all(dim=-1).unsqueeze(-1)
              & torch.isfinite(q).all(dim=-1))
    rows, q = rows.abs().nan_to_num(nan=math.inf), q.abs().nan_to_num(nan=math.inf)
    logits = torch.einsum("...hd,...ld->...hl", q, rows) * max(1.0, abs(att.softmax_scale))
    keys = (logits <= limit).all(dim=-1)
    v = rows[..., :att.d_v or rows.shape[-1]]
    v_max = v.flatten(-2).max(dim=-1).values if v.shape[-2] * v.shape[-1] else \
        torch.zeros(v.shape[:-2], dtype=v.dtype)
    values = (v_max * max(1, v.shape[-2]) <= limit).unsqueeze(-1)
    return finite & keys & values


def ratios(actual: torch.Tensor, att: Attended, decl: LSE):
    """Per (token, head) `[*tokens, H]` the error of a kernel's LSE over its tolerance (0
    outside the domain, inf where an exact value is missed), with what the comparison
    needs besides: `(ratio, want, got, err, tol, empty, sentinel, exact)`, fp64 where
    numeric."""
    gold = lse(att, torch.float64, decl.with_sink)
    want = expected(att, decl, gold)
    tol = in_base(tolerance(att, gold, decl.with_sink), decl.base)
    empty = (~att.live.any(dim=-1)).unsqueeze(-1).expand_as(want)
    got = actual.detach().to("cpu")
    sentinel = empty if decl.empty is not None else torch.zeros_like(empty)
    if decl.empty is not None and got.is_floating_point():
        # the declared value as the kernel's dtype holds it
        want = torch.where(sentinel, torch.tensor(float(decl.empty), dtype=got.dtype).double(),
                           want)
    if got.is_floating_point():
        # a finite LSE beyond the range of the kernel's dtype (a log2 LSE of a sink near
        # fp32's edge) is that dtype's infinity
        held = want.to(got.dtype).double()
        want = torch.where(torch.isfinite(want) & torch.isinf(held), held, want)
    got = got.double()
    domain = in_domain(att)
    exact = sentinel | ~torch.isfinite(want)
    err = (got - want).abs()
    err = torch.where(exact, torch.where(got == want, 0.0, float("inf")), err)
    err = torch.where(got.isnan(), float("inf"), err)
    ratio = torch.where(exact | torch.isinf(err), torch.where(err == 0, 0.0, float("inf")),
                        err / tol)
    ratio = torch.where(domain, ratio, 0.0)
    return ratio, want, got, err, tol, empty, sentinel, exact


def compare_lse(actual: torch.Tensor, att: Attended, decl: LSE, what: str = "kernel lse",
                against: str = "the reference") -> Comparison:
    """Check a kernel's LSE `[*tokens, H]` (any floating dtype) against the reference's for
    what it attends to `att`, under its declaration `decl` (module docstring)."""
    ratio, want, got, err, tol, empty, sentinel, exact = ratios(actual, att, decl)
    worst = float(ratio.max()) if ratio.numel() else 0.0
    if worst <= 1.0:
        return Comparison(True, worst, "")
    dims = att.row_dims
    at = tuple(int(i) for i in torch.nonzero(ratio == ratio.max())[0])
    bad = int((ratio > 1).sum())
    where = " ".join(f"{n}={i}" for n, i in zip(dims, at, strict=True))
    kind = ("an empty token (no live row)" if bool(empty[at]) else
            "a token with live rows")
    rule = ("must equal the declared empty value exactly" if bool(sentinel[at]) else
            "must match exactly (an infinity)" if bool(exact[at]) else
            f"tolerance {float(tol[at]):.4g}")
    msg = (f"{what} differs from {against} in {bad} of {ratio.numel()} ({', '.join(dims)}) "
           f"entries; worst at {where}, {kind}: expected {float(want[at]):.9g}, actual "
           f"{float(got[at]):.9g}, error {float(err[at]):.4g} ({rule})\n"
           f"  declared {decl!r}: {describe(decl)}")
    return Comparison(False, worst, msg)


def describe(decl: LSE) -> str:
    """`decl` in words, for messages."""
    base = "log2" if decl.base == "2" else "natural log"
    sink = "with the sink's term" if decl.with_sink else "without the sink"
    empty = (f"an empty token returns {decl.empty!r}" if decl.empty is not None else
             "an empty token returns the formula's value (" +
             ("the sink" if decl.with_sink else "-inf") + ")")
    return f"{base}, {sink}, {empty}"
