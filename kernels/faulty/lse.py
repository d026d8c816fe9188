"""Seeded faulty LSE kernels (docs/contract.md section 13): the reference kernels that return
`(o, lse)` (kernels/torch/reference.py) with exactly one bug each in the LSE, the output left
correct, so only the suite's check of the LSE (conformance/harness.py `call`) can kill them.
Each is a bug a device kernel's LSE path can have: the wrong base or the wrong terms for
what the kernel declares, the wrong sentinel for an empty token, or an LSE computed without
the max shift or from unscaled logits.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from sparse_attn_conformance.attention import lse as lse_
from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.contracts import v1, v2
from sparse_attn_conformance.kernels.interface import LSE
from sparse_attn_conformance.kernels.torch.reference import _contiguous, with_lse


def _kernel(convention: str, decl: LSE, body, bug_class: str):
    """A kernel of `convention` declaring `decl` whose `(o, lse)` is `body(att, decl)`;
    `bug_class`: the hypothesis of attention/lse_counterfactuals.py that names its bug."""
    front = v2 if convention == "v2" else v1

    def sparse_attn(**kw):
        return body(front.validate(**_contiguous(kw)).attended(), decl)

    sparse_attn.convention = convention
    sparse_attn.lse = decl
    sparse_attn.bug_class = bug_class
    sparse_attn.__doc__ = body.__doc__
    return sparse_attn


# -- LSE ------------------------------------------------------------------------------------

def log2_declared_natural(att: Attended, decl: LSE):
    """The LSE in log2 (as the kernel keeps it internally for exp2) returned while the kernel
    declares the natural log: the final `* ln 2` is missing. Wrong by a factor 1.44 wherever
    the LSE is not 0."""
    return with_lse(att, replace(decl, base="2"))


def sink_added(att: Attended, decl: LSE):
    """The sink's `exp(attn_sink[h])` added to the LSE's sum while the kernel declares an LSE
    without it (the output's denominator reused as the LSE's). Wrong wherever a sink is not
    negligible beside the live logits."""
    return with_lse(att, replace(decl, with_sink=True))


def empty_minus_inf(att: Attended, decl: LSE):
    """An empty token's LSE left at `log(0) = -inf` where the kernel declares FlashMLA's
    `+inf` sentinel (a split-KV merge then weighs that split as dominant instead of absent
    or the reverse). Wrong on every token with no live row."""
    return with_lse(att, replace(decl, empty=None))


def _unshifted(att: Attended, dtype: torch.dtype, with_sink: bool) -> torch.Tensor:
    q, kv = att.q.to(dtype), att.rows.to(dtype)
    z = att.softmax_scale * torch.einsum("...hd,...td->...ht", q, kv)
    s = torch.where(att.live.unsqueeze(-2), torch.exp(z), torch.zeros((), dtype=dtype)).sum(-1)
    if with_sink:
        s = s + torch.exp(att.attn_sink.to(dtype))
    return torch.log(s)


def no_max_shift(att: Attended, decl: LSE):
    """The LSE as `log(sum_j exp(z_j))` in fp32, without the max shift: `exp` overflows to
    `inf` for a logit above ~88.7 (and underflows to 0, a `-inf` LSE, for every logit below
    ~-103), where the shifted form stays exact."""
    return with_lse(att, decl, lse=_unshifted)


def _unscaled(att: Attended, dtype: torch.dtype, with_sink: bool) -> torch.Tensor:
    return lse_.lse(replace(att, softmax_scale=1.0), dtype, with_sink)


def unscaled_logits(att: Attended, decl: LSE):
    """The LSE of the unscaled logits `<q, k_j>`: `softmax_scale` applied to the scores that
    feed the output but dropped on the LSE's path. Wrong wherever the scale is not 1."""
    return with_lse(att, decl, lse=_unscaled)


#: short name -> kernel; registered as `mutant-lse-<name>` (kernels/registry.py). Each
#: declares what its correct counterpart does; the bug is in what it returns.
MUTANTS_LSE = {
    "log2-declared-natural": _kernel("v1", LSE(base="e", with_sink=True), log2_declared_natural,
                                     "lse-base"),
    "sink-added": _kernel("v2", LSE(base="e", with_sink=False, empty=math.inf), sink_added,
                          "lse-sink"),
    "empty-minus-inf": _kernel("v2", LSE(base="e", with_sink=False, empty=math.inf),
                               empty_minus_inf, "lse-empty"),
    "no-max-shift": _kernel("v1", LSE(base="2", with_sink=True), no_max_shift,
                            "lse-no-max-shift"),
    "unscaled-logits": _kernel("v2", LSE(base="e", with_sink=False), unscaled_logits,
                               "lse-scale"),
}
