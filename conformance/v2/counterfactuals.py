"""Counterfactuals of calling convention v2 (attention/counterfactuals.py holds the shared
ones): the compressed cut derived from another position. In v2 a position decides only the
cut (window rows are explicit), so each mistake is the contract's reading of the same call
with other positions: the cut at `floor(pos / r)` or `floor((pos + 2) / r)`, rounded up, or
taken from another token of the batch."""

from __future__ import annotations

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.counterfactuals import Hypothesis
from sparse_attn_conformance.attention.reference import attend
from sparse_attn_conformance.contracts.v2 import cmp_bound, gather_rows

#: The names of this convention's hypotheses (a seeded kernel's `bug_class` may be one).
NAMES = ("cut-off-by-one", "other-token-position")


def _with_positions(inputs, pos: torch.Tensor) -> torch.Tensor:
    """The output `[T, H, D_v]` float64 when the cut is derived from `pos` `[T, 1]`."""
    w = inputs.window_swa_indices.to(torch.int64)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    lanes = (w >= 0, (c >= 0) & (c < cmp_bound(pos, inputs.compress_ratio)[:, None]))
    rows, live = gather_rows(inputs, lanes)
    att = Attended(q=inputs.q, rows=rows, live=live, attn_sink=inputs.attn_sink,
                   softmax_scale=inputs.softmax_scale, token_dims=("t",), d_v=inputs.D_v)
    return attend(att, torch.float64)


def hypotheses(inputs) -> tuple[Hypothesis, ...]:
    """The v2 hypotheses for the call `inputs`."""
    pos = inputs.position_ids.to(torch.int64)
    ratio = inputs.compress_ratio

    def cut(_att):
        if ratio is None:
            return
        for label, new in (("floor(pos / r): the cut one position early", pos - 1),
                           ("floor((pos + 2) / r): the cut inclusive", pos + 1),
                           ("ceil((pos + 1) / r)", pos + ratio - 1)):
            yield label, _with_positions(inputs, new)

    def other_token(_att):
        if ratio is None:
            return
        t = torch.arange(inputs.T)
        first = t // inputs.S * inputs.S
        last = first + inputs.S - 1
        for label, src in (("the batch's first token's", first), ("the batch's last token's", last),
                           ("the previous token's", torch.maximum(t - 1, first)),
                           ("the next token's", torch.minimum(t + 1, last))):
            if not torch.equal(src, t):
                yield f"{label} position", _with_positions(inputs, pos[src])

    return (
        Hypothesis("cut-off-by-one", "the compressed cut is derived wrongly: {rows} "
                   "(the contract's is floor((pos + 1) / r))", cut, whole=True),
        Hypothesis("other-token-position", "a token's cut is derived from another token's "
                   "position: {rows}", other_token, whole=True),
    )
