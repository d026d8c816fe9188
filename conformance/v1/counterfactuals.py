"""Counterfactuals of calling convention v1 (attention/counterfactuals.py holds the shared
ones): the per-token lengths derived wrongly from `seqused_kv`, and the addressing. Each
length mistake is another live mask over the same entries, read through the same tables:
every token of a batch given the batch's length (the seed's own bug: `seqused_kv` read per
batch), batch 0's length, `seq_used` one short or one long, a bound taken inclusive. Each
addressing mistake reads other rows for the same live entries: another batch's block table
row, a negative entry admitted and read Python-style (or as slot 0), a slot, column or block
id through a narrow or fp32 field. v1 reads every column of `topk_idxs`, so there is no
column past the index width to admit."""

from __future__ import annotations

from dataclasses import replace

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.counterfactuals import Hypothesis
from sparse_attn_conformance.contracts.v1 import derived_lengths, gather_rows, live_mask

#: The names of this convention's hypotheses (a seeded kernel's `bug_class` may be one).
NAMES = ("inclusive-bound", "length-derivation", "other-batch-table", "ignored-lane-admitted",
         "integer-edge")


def _with_live(inputs, live: torch.Tensor, slot: torch.Tensor | None = None) -> Attended:
    """What every token attends to when the entries in `live` are the live ones
    (each read at `slot`, if given: the slot in the pool its entry names)."""
    rows, live = gather_rows(inputs, live, slot)
    return Attended(q=inputs.q, rows=rows, live=live, attn_sink=inputs.attn_sink,
                    softmax_scale=inputs.softmax_scale, token_dims=("b", "s"), d_v=inputs.D_v)


def _mask(e: torch.Tensor, window_valid, cmp_valid, win: int, extra_w: int = 0,
          extra_c: int = 0) -> torch.Tensor:
    live_w = (e >= 0) & (e < (window_valid + extra_w)[..., None])
    live_c = (e >= win) & (e < (win + cmp_valid + extra_c)[..., None])
    return live_w | live_c


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """`x` as a wrapping int32 holds it (two's complement), in int64."""
    return (x + 2**31) % 2**32 - 2**31


def _first_live(where: torch.Tensor) -> str:
    """`b=.., s=.., entry k` of the first True of a `[B, S, TOPK]` mask, for sentences."""
    b, s, k = (int(i) for i in torch.nonzero(where)[0])
    return f"b={b} s={s} entry {k}"


def _addressing(inputs):
    """The addressing hypotheses' variant generators (module docstring)."""
    e = inputs.topk_idxs.to(torch.int64)
    win, block, B, S = inputs.window_size, inputs.BLOCK, inputs.B, inputs.S
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    is_cmp = e >= win
    slot = torch.where(is_cmp, e - win, e)

    def other_batch(_att):
        # a batch's rows of a block table read at another batch's row (an off-by-one or a
        # stale batch index in the table's pointer arithmetic)
        b = torch.arange(B)
        sources = (("b+1", (b + 1).clamp(max=B - 1)), ("b-1", (b - 1).clamp(min=0)),
                   ("batch 0", torch.zeros_like(b)), (f"batch {B - 1}", torch.full_like(b, B - 1)))
        for who, src in sources:
            if torch.equal(src, b):
                continue
            moved = (b != src)[:, None, None]
            for tables, pool in ((("ori_block_table", "cmp_block_table"), None),
                                 (("ori_block_table",), ~is_cmp), (("cmp_block_table",), is_cmp)):
                reads = live & moved & (True if pool is None else pool)
                changed = {n: getattr(inputs, n)[src] for n in tables}
                if not bool(reads.any()) or all(torch.equal(t, getattr(inputs, n))
                                                for n, t in changed.items()):
                    continue
                yield (f"batch b reads {who}'s row of {' and '.join(tables)} (first at "
                       f"{_first_live(reads)}, slot {int(slot[reads][0])})",
                       _with_live(replace(inputs, **changed), live))
            # all of the batch's metadata loaded from another batch (a grid that loops
            # over batches with what it loaded for its first): lengths and both tables
            other = live_mask(inputs.topk_idxs, inputs.seqused_kv[src], win)
            reads = other & moved
            if bool(reads.any()):
                yield (f"batch b reads {who}'s seqused_kv and block table rows (first at "
                       f"{_first_live(reads)}, slot {int(slot[reads][0])})",
                       _with_live(replace(inputs, ori_block_table=inputs.ori_block_table[src],
                                          cmp_block_table=inputs.cmp_block_table[src]), other))

    def admitted(_att):
        # a negative entry passes the window test `e < window_valid` when `e >= 0` is
        # missing; a kernel that pads the row with -1 to whole tiles admits its pads too
        cols = inputs.ori_block_table.shape[1]
        seen = (derived_lengths(inputs.seqused_kv, S, win)[1] > 0)[..., None]
        topk = e.shape[-1]
        for pad in sorted({0} | {-topk % tile for tile in (16, 32, 64, 128)}):
            ep = torch.nn.functional.pad(e, (0, pad), value=-1)
            padded = replace(inputs, topk_idxs=ep.to(torch.int32)) if pad else inputs
            live_p = torch.nn.functional.pad(live, (0, pad), value=False)
            slot_p = torch.nn.functional.pad(slot, (0, pad), value=0)
            tail = f", and the {pad} -1 pads of the row to {topk + pad} lanes" if pad else ""
            neg = (ep < 0) & seen
            for which, take in (("-1", neg & (ep == -1)), ("a negative entry", neg)):
                if not bool(take.any()) or (which != "-1" and torch.equal(take, neg & (ep == -1))):
                    continue
                at = _first_live(take)
                yield (f"{which} admitted as a window slot and read Python-style{tail} (at "
                       f"{at}: slot {cols * block} + e = {cols * block + int(ep[take][0])} "
                       f"of the window table's {cols * block}, e.g. -1 its last row)",
                       _with_live(padded, live_p | take,
                                  torch.where(take, ep + cols * block, slot_p)))
                yield (f"{which} admitted and read as window slot 0{tail} (first at {at})",
                       _with_live(padded, live_p | take, torch.where(take, 0, slot_p)))

    def integer_edge(_att):
        # a field narrower than the value (or fp32 holding an integer) reads another slot
        # or block; a variant that changes no live entry's address is skipped
        c = e - win
        fp32 = (e.to(torch.float32) - win).to(torch.int64)
        col12 = ((slot // block) & 0xFFF) * block + slot % block
        for label, new in (("the compressed slot e - WIN computed through fp32",
                            torch.where(is_cmp, fp32, slot)),
                           ("the compressed slot e - WIN kept in a uint16",
                            torch.where(is_cmp, c & 0xFFFF, slot)),
                           ("a block-table column slot // BLOCK kept in 12 bits", col12)):
            moved = live & (new != slot)
            if bool(moved.any()):
                at = _first_live(moved)
                yield (f"{label} ({at}: slot {int(slot[moved][0])} read as "
                       f"{int(new[moved][0])})", _with_live(inputs, live, new))
        table16 = inputs.cmp_block_table & 0xFFFF
        if not torch.equal(table16, inputs.cmp_block_table):
            yield ("compressed block ids kept in 16 bits (block n read as n & 0xFFFF)",
                   _with_live(replace(inputs, cmp_block_table=table16), live))
        e16 = e.to(torch.int16).to(torch.int64)
        if not torch.equal(e16, e):
            narrowed = replace(inputs, topk_idxs=e16.to(torch.int32))
            yield ("index entries narrowed to int16 (an entry >= 32768 wraps)",
                   _with_live(narrowed, live_mask(e16, inputs.seqused_kv, win)))
        s = torch.arange(S)
        seq = wrap_int32(inputs.seqused_kv.to(torch.int64)[:, None] + 1 + s) - S
        if not torch.equal(seq, derived_lengths(inputs.seqused_kv, S, win)[0]):
            wv = seq.clamp(min=0).clamp(max=win)
            cv = (seq - wv).clamp(min=0)
            yield ("seqused_kv[b] + 1 + s summed in int32 (it wraps past INT32_MAX)",
                   _with_live(inputs, _mask(e, wv, cv, win)))

    return other_batch, admitted, integer_edge


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
        if inputs.B > 1 and not bool((seqused == seqused[0]).all()):
            _, wv, cv = derived_lengths(seqused[:1].expand_as(seqused), S, win)
            yield "every batch given batch 0's length seqused_kv[0]", \
                _with_live(inputs, _mask(e, wv, cv, win))
        yield per_token(seqused - 1, "seq_used one short (the '+ 1' missing)")
        yield per_token(seqused + 1, "seq_used one long")

    def bounds(_att):
        _, wv, cv = derived_lengths(seqused, S, win)
        yield "the window bound inclusive (e <= window_valid)", \
            _with_live(inputs, _mask(e, wv, cv, win, extra_w=1))
        yield "the compressed bound inclusive (e <= window_size + cmp_valid)", \
            _with_live(inputs, _mask(e, wv, cv, win, extra_c=1))

    other_batch, admitted, integer_edge = _addressing(inputs)
    # an inclusive bound first: where it and "one long" explain alike, it is the likelier
    return (
        Hypothesis("inclusive-bound", "a bound is taken inclusive: {rows}", bounds, whole=True),
        Hypothesis("length-derivation", "a token's length is derived wrongly from "
                   "seqused_kv: {rows} (the contract's is seqused_kv[b] - S + 1 + s)",
                   lengths, whole=True),
        Hypothesis("ignored-lane-admitted", "an ignored entry is attended: {rows}",
                   admitted, whole=True),
        Hypothesis("other-batch-table", "a batch's block table row (or all its metadata) is "
                   "read at another batch's: {rows}", other_batch, whole=True),
        Hypothesis("integer-edge", "an address is computed in a narrower field than the "
                   "contract's: {rows}", integer_edge, whole=True),
    )
