"""Counterfactuals of calling convention v1 (attention/counterfactuals.py holds the shared
ones): the per-token lengths derived wrongly from `seqused_kv`. Each mistake is another live
mask over the same entries, read through the same tables: every token of a batch given the
batch's length (the seed's own bug: `seqused_kv` read per batch), `seq_used` one short or
one long, a bound taken inclusive."""

from __future__ import annotations

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.counterfactuals import Hypothesis
from sparse_attn_conformance.attention.reference import attend
from sparse_attn_conformance.contracts.v1 import derived_lengths, gather_rows

#: The names of this convention's hypotheses (a seeded kernel's `bug_class` may be one).
NAMES = ("inclusive-bound", "length-derivation")


def _with_live(inputs, live: torch.Tensor) -> torch.Tensor:
    """The output `[B, S, H, D_v]` float64 when the entries in `live` are the live ones."""
    rows, live = gather_rows(inputs, live)
    att = Attended(q=inputs.q, rows=rows, live=live, attn_sink=inputs.attn_sink,
                   softmax_scale=inputs.softmax_scale, token_dims=("b", "s"), d_v=inputs.D_v)
    return attend(att, torch.float64)


def _mask(e: torch.Tensor, window_valid, cmp_valid, win: int, extra_w: int = 0,
          extra_c: int = 0) -> torch.Tensor:
    live_w = (e >= 0) & (e < (window_valid + extra_w)[..., None])
    live_c = (e >= win) & (e < (win + cmp_valid + extra_c)[..., None])
    return live_w | live_c


def hypotheses(inputs) -> tuple[Hypothesis, ...]:
    """The v1 hypotheses for the call `inputs`."""
    e = inputs.topk_idxs.to(torch.int64)
    win, S = inputs.window_size, inputs.S
    seqused = inputs.seqused_kv.to(torch.int64)

    def per_token(length, label):
        _, wv, cv = derived_lengths(length, S, win)
        return label, _with_live(inputs, _mask(e, wv, cv, win))

    def lengths(_att):
        # every token of batch b reads seqused_kv[b]: the derivation with s = S - 1
        _, wv, cv = derived_lengths(seqused, S, win)
        yield "every token given its batch's length seqused_kv[b] (per batch, not per token)", \
            _with_live(inputs, _mask(e, wv[:, -1:].expand_as(wv), cv[:, -1:].expand_as(cv), win))
        yield per_token(seqused - 1, "seq_used one short (the '+ 1' missing)")
        yield per_token(seqused + 1, "seq_used one long")

    def bounds(_att):
        _, wv, cv = derived_lengths(seqused, S, win)
        yield "the window bound inclusive (e <= window_valid)", \
            _with_live(inputs, _mask(e, wv, cv, win, extra_w=1))
        yield "the compressed bound inclusive (e <= window_size + cmp_valid)", \
            _with_live(inputs, _mask(e, wv, cv, win, extra_c=1))

    # an inclusive bound first: where it and "one long" explain alike, it is the likelier
    return (
        Hypothesis("inclusive-bound", "a bound is taken inclusive: {rows}", bounds, whole=True),
        Hypothesis("length-derivation", "a token's length is derived wrongly from "
                   "seqused_kv: {rows} (the contract's is seqused_kv[b] - S + 1 + s)",
                   lengths, whole=True),
    )
