"""Counterfactuals of calling convention v2 (attention/counterfactuals.py holds the shared
ones): the compressed cut derived from another position. In v2 a position decides only the
cut (window rows are explicit), so each mistake is the contract's reading of the same call
with other positions: the cut at `floor(pos / r)` or `floor((pos + 2) / r)`, rounded up, or
taken from another token of the batch; the cut computed in fp32 or with `pos + 1` wrapped
in int32. And the addressing: another batch's `cmp_block_table` row, an ignored lane
admitted (a negative lane read Python-style, a column of `idx_topk` at or past
`index_topk`), a row, column or block id kept in a narrow field. The window has exactly
WIN columns, so there is no window column past its width to admit."""

from __future__ import annotations

from dataclasses import replace

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.attention.counterfactuals import Hypothesis
from sparse_attn_conformance.contracts.v2 import cmp_bound, gather_rows, live_lanes

#: The names of this convention's hypotheses (a seeded kernel's `bug_class` may be one).
NAMES = ("cut-off-by-one", "other-token-position", "other-batch-table",
         "ignored-lane-admitted", "integer-edge")


def _with_positions(inputs, pos: torch.Tensor) -> Attended:
    """What every token attends to when the cut is derived from `pos` `[T, 1]`."""
    return _with_bound(inputs, cmp_bound(pos, inputs.compress_ratio))


def _with_bound(inputs, bound: torch.Tensor) -> Attended:
    """What every token attends to when the cut is `bound` `[T]`."""
    w = inputs.window_swa_indices.to(torch.int64)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    return _with_lanes(inputs, (w >= 0, (c >= 0) & (c < bound[:, None])))


def _with_lanes(inputs, lanes) -> Attended:
    """What every token attends to when `lanes` (window, compressed) are the live ones."""
    rows, live = gather_rows(inputs, lanes)
    return Attended(q=inputs.q, rows=rows, live=live, attn_sink=inputs.attn_sink,
                    softmax_scale=inputs.softmax_scale, token_dims=("t",), d_v=inputs.D_v)


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """`x` as a wrapping int32 holds it (two's complement), in int64."""
    return (x + 2**31) % 2**32 - 2**31


def _first(where: torch.Tensor, what: str) -> str:
    """`token t <what> j` of the first True of a `[T, n]` mask, for sentences."""
    t, j = (int(i) for i in torch.nonzero(where)[0])
    return f"token {t} {what} {j}"


def _addressing(inputs):
    """The addressing and integer-edge hypotheses' variant generators (module docstring)."""
    w = inputs.window_swa_indices.to(torch.int64)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    block, B = inputs.BLOCK, inputs.B
    live_w, live_c = live_lanes(inputs)
    bound = cmp_bound(inputs.position_ids, inputs.compress_ratio)

    def other_batch(_att):
        # a batch's compressed slots read through another batch's table row (an off-by-one
        # or a stale batch index in the table's pointer arithmetic)
        b = torch.arange(B)
        for who, src in (("b+1", (b + 1).clamp(max=B - 1)), ("b-1", (b - 1).clamp(min=0)),
                         ("batch 0", torch.zeros_like(b)),
                         (f"batch {B - 1}", torch.full_like(b, B - 1))):
            table = inputs.cmp_block_table[src]
            reads = live_c & (src != b)[inputs.batch_of_token][:, None]
            if torch.equal(table, inputs.cmp_block_table) or not bool(reads.any()):
                continue
            yield (f"batch b reads {who}'s row of cmp_block_table ({_first(reads, 'lane')}, "
                   f"slot {int(c[reads][0])})",
                   _with_lanes(replace(inputs, cmp_block_table=table), (live_w, live_c)))

    def admitted(_att):
        rows = inputs.ori_kv.shape[0] * block
        slots = inputs.cmp_block_table.shape[1] * block
        neg_w, neg_c = w < 0, (c < 0) & (c < bound[:, None])
        if bool(neg_w.any()):
            yield (f"a negative window lane read Python-style ({_first(neg_w, 'window lane')}"
                   f": row {int(w[neg_w][0])} read as flat row {rows + int(w[neg_w][0])} of "
                   f"ori_kv's {rows}, -1 its last)",
                   _with_lanes(replace(inputs, window_swa_indices=torch.where(
                       neg_w, w + rows, w).clamp(min=0)),
                       (live_w | neg_w, live_c)))
        if bool(neg_c.any()):
            yield (f"a negative compressed lane read Python-style ({_first(neg_c, 'lane')}: "
                   f"slot {int(c[neg_c][0])} read as slot {slots + int(c[neg_c][0])} of the "
                   f"table's {slots}, -1 the last row of its last column)",
                   _with_lanes(replace(inputs, idx_topk=torch.where(
                       neg_c, c + slots, c).clamp(min=0)),
                       (live_w, live_c | neg_c)))
        if inputs.L > inputs.index_topk:
            # the row's width L read instead of index_topk: its extra columns pass the cut
            extra = inputs.idx_topk[:, inputs.index_topk:].to(torch.int64)
            more = (extra >= 0) & (extra < bound[:, None]) \
                & (extra < inputs.cmp_block_table.shape[1] * block)
            if bool(more.any()):
                t, j = (int(i) for i in torch.nonzero(more)[0])
                yield (f"columns of idx_topk at or past index_topk={inputs.index_topk} read "
                       f"(token {t} column {inputs.index_topk + j}, slot {int(extra[t, j])})",
                       _with_lanes(replace(inputs, index_topk=inputs.L),
                                   (live_w, torch.cat([live_c, more], dim=1))))

    def integer_edge(_att):
        # a field narrower than the value (or fp32 holding an integer) cuts or reads
        # elsewhere; a variant that changes nothing a live lane reads is skipped
        ratio = inputs.compress_ratio
        if ratio is not None:
            pos = inputs.position_ids.reshape(-1).to(torch.int64)
            inv = torch.tensor(1.0 / ratio, dtype=torch.float32)
            for label, new in (("the cut floor((pos + 1) / r) computed in fp32",
                                torch.trunc((pos + 1).to(torch.float32) * inv).to(torch.int64)),
                               ("pos + 1 computed in int32 (it wraps at INT32_MAX)",
                                torch.div(wrap_int32(pos + 1), ratio, rounding_mode="trunc"))):
                moved = (new != bound)
                if bool(moved.any()):
                    t = int(torch.nonzero(moved)[0])
                    yield (f"{label} (token {t} at position {int(pos[t])}: cut "
                           f"{int(bound[t])} taken as {int(new[t])})", _with_bound(inputs, new))
        col12 = ((c // block) & 0xFFF) * block + c % block
        moved = live_c & (col12 != c)
        if bool(moved.any()):
            yield (f"a cmp_block_table column slot // BLOCK kept in 12 bits "
                   f"({_first(moved, 'lane')}: slot {int(c[moved][0])} read as "
                   f"{int(col12[moved][0])})",
                   _with_lanes(replace(inputs, idx_topk=torch.where(live_c, col12, c)),
                               (live_w, live_c)))
        table16 = inputs.cmp_block_table & 0xFFFF
        if not torch.equal(table16, inputs.cmp_block_table):
            yield ("compressed block ids kept in 16 bits (block n read as n & 0xFFFF)",
                   _with_lanes(replace(inputs, cmp_block_table=table16), (live_w, live_c)))
        w16 = torch.where(live_w, w & 0xFFFF, w)
        moved = live_w & (w16 != w)
        if bool(moved.any()):
            yield (f"a window lane's flat row kept in 16 bits ({_first(moved, 'window lane')}:"
                   f" row {int(w[moved][0])} read as {int(w16[moved][0])})",
                   _with_lanes(replace(inputs, window_swa_indices=w16),
                               (live_w, live_c)))

    return other_batch, admitted, integer_edge


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

    other_batch, admitted, integer_edge = _addressing(inputs)
    return (
        Hypothesis("cut-off-by-one", "the compressed cut is derived wrongly: {rows} "
                   "(the contract's is floor((pos + 1) / r))", cut, whole=True),
        Hypothesis("other-token-position", "a token's cut is derived from another token's "
                   "position: {rows}", other_token, whole=True),
        Hypothesis("ignored-lane-admitted", "an ignored lane is attended: {rows}", admitted,
                   whole=True),
        Hypothesis("other-batch-table", "a batch's cmp_block_table row is read at another "
                   "batch's: {rows}", other_batch, whole=True),
        Hypothesis("integer-edge", "a cut or an address is computed in a narrower field "
                   "than the contract's: {rows}", integer_edge, whole=True),
    )
