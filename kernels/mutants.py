"""Seeded faulty kernels: the correct device-style kernel (kernels/tiled.py) with exactly one
bug each, one overridden method apiece. The list reads as a catalogue of what the suite
defends against; every one must be caught (see `python -m conformance.killrate`).

The first group is the history of the seed's `seqused_kv` semantics (contract section 4);
the second, bug classes that public sparse attention kernels shipped.
"""

from __future__ import annotations

import torch

from kernels.tiled import NEG_INF, TiledKernel

# -- the history of the per-batch seqused_kv semantics ---------------------------------------


class PerBatchLength(TiledKernel):
    """One length per batch shared by all S tokens: token 0 sees token 1's slot."""

    def seq_used(self, seqused, B, S):
        return seqused[:, None].expand(B, S)


class FlattenedPerTokenRead(TiledKernel):
    """Reads `seqused[t]` with `t = b*S + s`, as when callers passed `[B, S]`; reads past the
    `[B]` buffer see zeros."""

    def seq_used(self, seqused, B, S):
        flat = torch.cat([seqused, torch.zeros(B * S, dtype=seqused.dtype, device=seqused.device)])
        t = torch.arange(B * S, device=seqused.device)
        return flat[t].reshape(B, S)


class MissingPlusOne(TiledKernel):
    """`seqused_kv[b] - S + s`: every token one slot short."""

    def seq_used(self, seqused, B, S):
        s = torch.arange(S, device=seqused.device)
        return seqused[:, None] - S + s[None, :]


class ReversedStep(TiledKernel):
    """`seqused_kv[b] - s`: the step runs the wrong way."""

    def seq_used(self, seqused, B, S):
        s = torch.arange(S, device=seqused.device)
        return seqused[:, None] - s[None, :]


class FlattenStride(TiledKernel):
    """Token `t = b*S + s` split as `b = t % B, s = t // B` (a flatten stride of `s*B + b`)."""

    def seq_used(self, seqused, B, S):
        t = torch.arange(B * S, device=seqused.device).reshape(B, S)
        b, s = t % B, t // B
        return seqused[b] - S + 1 + s


class CmpValidUnclamped(TiledKernel):
    """`cmp_valid` not clamped at 0; the negative count is then read as unsigned (huge)."""

    def valid_counts(self, seq_used, win):
        window_valid = seq_used.clamp(min=0).clamp(max=win)
        cmp_valid = seq_used - window_valid
        return window_valid, torch.where(cmp_valid < 0, cmp_valid + 2**32, cmp_valid)


class PadNotSkipped(TiledKernel):
    """`-1` is not skipped: it passes the window test and wraps to the table's last block."""

    def classify(self, e, window_valid, cmp_valid, win):
        live_window, live_cmp = super().classify(e, window_valid, cmp_valid, win)
        return live_window | ((e == -1) & (window_valid[..., None] > 0)), live_cmp

    def physical_block(self, table, slot, block):
        col = torch.where(slot < 0, table.shape[1] - 1, (slot // block).clamp(0, table.shape[1] - 1))
        return torch.gather(table, 1, col.reshape(table.shape[0], -1)).reshape(slot.shape)


class RawCmpSlot(TiledKernel):
    """A compressed entry's slot taken as the raw index `e`, not `e - WIN`."""

    def cmp_slot(self, e, win):
        return e


class SinkDropped(TiledKernel):
    """The sink is left out of the denominator."""

    def sink_term(self, sink, m):
        return torch.zeros_like(m)


class SinkValueRow(TiledKernel):
    """The sink is given a value row (the row of the token's first index entry) instead of
    none, as when a sink column is appended to the scores and V is gathered with it."""

    def finish(self, state, sink, rows):
        m, l, acc = state
        sink_p = self.sink_term(sink, m)
        o = (acc + sink_p * rows[:, :, None, 0, :].float()) / (l + sink_p)
        return torch.where(m == NEG_INF, 0.0, o)


class DefaultScale(TiledKernel):
    """A default `1/sqrt(D)` instead of the given `softmax_scale`."""

    def scale(self, inputs):
        return inputs.D ** -0.5


class ScaleNotApplied(TiledKernel):
    """The scale is never applied to the logits."""

    def scale(self, inputs):
        return 1.0


class TilePaddingUnmasked(TiledKernel):
    """The padding of the last tile is not masked: padded keys (zero rows) score 0 and
    count in the denominator."""

    def key_mask(self, live, topk):
        pos = torch.arange(live.shape[-1], device=live.device)
        return live | (pos >= topk)


class FirstTileNaN(TiledKernel):
    """The online rescale `exp(m_old - m_new)` is not guarded: a fully masked first tile
    (`-1` pads at the front of a row) gives `exp(-inf + inf) = NaN`."""

    def rescale(self, m_old, m_new):
        return torch.exp(m_old - m_new)


class NormalisedTileMerge(TiledKernel):
    """Split-K style: each tile's partial output is normalised (`acc / l`) before the
    merge, so an empty tile contributes `0 / 0 = NaN`."""

    def merge(self, state, z, v, live):
        m, l, acc = state
        tm = z.amax(dim=-1, keepdim=True)
        p = torch.where(live[:, :, None, :], torch.exp(z - tm), 0.0)
        tl = p.sum(dim=-1, keepdim=True)
        to = torch.einsum("bsht,bstd->bshd", p.to(torch.bfloat16).float(), v.float()) / tl
        m_new = torch.maximum(m, tm)
        a_old, a_new = self.rescale(m, m_new), self.rescale(tm, m_new)
        return m_new, l * a_old + tl * a_new, acc * a_old + to * tl * a_new


# -- classes of bugs that public sparse attention kernels shipped -------------------------


class GatherBeforeMask(TiledKernel):
    """Every entry's row is gathered from its own address and the mask is applied by
    multiplying, so a NaN in an unread row leaks through `0 * NaN`."""

    def gather(self, inputs, e, live_window, live_cmp, dev):
        block, win = inputs.BLOCK, inputs.window_size
        is_cmp = e >= win
        slot = torch.where(is_cmp, e - win, e)
        wblk = self.physical_block(self.window_table(inputs, dev), slot.clamp(min=0), block)
        cblk = self.physical_block(self.cmp_table(inputs, dev), slot.clamp(min=0), block)
        ori, cmp = inputs.ori_kv.to(dev), inputs.cmp_kv.to(dev)
        row = slot.clamp(min=0) % block
        wrows = ori[wblk.clamp(0, ori.shape[0] - 1), row]
        crows = cmp[cblk.clamp(0, cmp.shape[0] - 1), row]
        rows = torch.where(is_cmp[..., None], crows, wrows)
        return rows * (live_window | live_cmp)[..., None].to(rows.dtype)


class PadAsSlotZero(TiledKernel):
    """`-1` is read as window slot 0."""

    def classify(self, e, window_valid, cmp_valid, win):
        return super().classify(torch.where(e == -1, 0, e), window_valid, cmp_valid, win)

    def gather(self, inputs, e, live_window, live_cmp, dev):
        return super().gather(inputs, torch.where(e == -1, 0, e), live_window, live_cmp, dev)


class SinkWrongSign(TiledKernel):
    """The sink enters as `exp(-sink - m)`."""

    def sink_term(self, sink, m):
        return torch.exp(-sink[None, None, :, None] - m)


class SinkUnshifted(TiledKernel):
    """The sink is not shifted by the row max: `exp(sink)` beside `exp(z - m)`."""

    def sink_term(self, sink, m):
        return torch.exp(sink[None, None, :, None]).expand_as(m)


class DuplicatesOnce(TiledKernel):
    """Repeated live entries are counted once."""

    def dedupe(self, e, live_window, live_cmp):
        live = live_window | live_cmp
        key = torch.where(live, e, -2)
        earlier = (key[..., :, None] == key[..., None, :]).tril(diagonal=-1).any(dim=-1)
        first = live & ~earlier
        return live_window & first, live_cmp & first


class BlockTableIgnored(TiledKernel):
    """The block tables are ignored: logical block `j` of batch `b` is assumed to be
    physical block `b * cols + j`."""

    def physical_block(self, table, slot, block):
        B, cols = table.shape
        col = (slot // block).clamp(0, cols - 1)
        return torch.arange(B, device=slot.device).reshape(B, *([1] * (slot.dim() - 1))) * cols + col


class BlockTablesSwapped(TiledKernel):
    """The window pool is addressed through the compressed block table and vice versa;
    out-of-pool block ids wrap (a device reads whatever lies there)."""

    def window_table(self, inputs, dev):
        return inputs.cmp_block_table.to(dev, torch.int64) % inputs.ori_kv.shape[0]

    def cmp_table(self, inputs, dev):
        return inputs.ori_block_table.to(dev, torch.int64) % inputs.cmp_kv.shape[0]


class Batch0Length(TiledKernel):
    """Batch 0's `seqused_kv` is used for every batch."""

    def seq_used(self, seqused, B, S):
        return super().seq_used(seqused[:1].expand(B), B, S)


class InclusiveWindowBound(TiledKernel):
    """`e <= window_valid`: the window slot at exactly `window_valid` is attended."""

    def classify(self, e, window_valid, cmp_valid, win):
        live_window, live_cmp = super().classify(e, window_valid, cmp_valid, win)
        return live_window | ((e == window_valid[..., None]) & (e < win)), live_cmp


class InclusiveCmpBound(TiledKernel):
    """`e <= WIN + cmp_valid`: the compressed slot at exactly `cmp_valid` is attended."""

    def classify(self, e, window_valid, cmp_valid, win):
        live_window, live_cmp = super().classify(e, window_valid, cmp_valid, win)
        return live_window, live_cmp | (e == win + cmp_valid[..., None])


class EmptyTokenNaN(TiledKernel):
    """No guard for a token with no live entry: the max is made "safe" (0) and the output
    is `0 / (0 + exp(sink))`, which is NaN when the sink is `-inf`."""

    def finish(self, state, sink, rows):
        m, l, acc = state
        safe_m = torch.where(m == NEG_INF, 0.0, m)
        return acc / (l + self.sink_term(sink, safe_m))


class SanitisesIndicesInPlace(TiledKernel):
    """Writes `-1` over the caller's ignored index entries (in place): its own output is
    right, the caller's `topk_idxs` is not."""

    def __call__(self, **kw):
        out = super().__call__(**kw)
        from kernels.contract import live_mask
        live = live_mask(kw["topk_idxs"], kw["seqused_kv"], kw["window_size"])
        kw["topk_idxs"].masked_fill_(~live, -1)
        return out


class NondeterministicTileOrder(TiledKernel):
    """Key tiles are merged in whatever order they finish (here: a fresh random order each
    call), so repeated calls differ in their last bits."""

    def run(self, inputs, dev):
        self._order = torch.randperm(-(-inputs.TOPK // self.tile))
        return super().run(inputs, dev)

    def pad_row(self, e):
        e = super().pad_row(e)
        tiles = e.reshape(*e.shape[:-1], -1, self.tile)[..., self._order.to(e.device), :]
        return tiles.reshape(e.shape)


#: name (without the `mutant-` prefix) -> kernel instance
MUTANTS = {
    "per-batch-length": PerBatchLength(),
    "flattened-per-token-read": FlattenedPerTokenRead(),
    "missing-plus-one": MissingPlusOne(),
    "reversed-step": ReversedStep(),
    "flatten-stride": FlattenStride(),
    "cmp-valid-unclamped": CmpValidUnclamped(),
    "pad-not-skipped": PadNotSkipped(),
    "raw-cmp-slot": RawCmpSlot(),
    "sink-dropped": SinkDropped(),
    "sink-value-row": SinkValueRow(),
    "default-scale": DefaultScale(),
    "scale-not-applied": ScaleNotApplied(),
    "tile-padding-unmasked": TilePaddingUnmasked(),
    "first-tile-nan": FirstTileNaN(),
    "normalised-tile-merge": NormalisedTileMerge(),
    "gather-before-mask": GatherBeforeMask(),
    "pad-as-slot-zero": PadAsSlotZero(),
    "sink-wrong-sign": SinkWrongSign(),
    "sink-unshifted": SinkUnshifted(),
    "duplicates-once": DuplicatesOnce(),
    "block-table-ignored": BlockTableIgnored(),
    "block-tables-swapped": BlockTablesSwapped(),
    "batch0-length": Batch0Length(),
    "inclusive-window-bound": InclusiveWindowBound(),
    "inclusive-cmp-bound": InclusiveCmpBound(),
    "empty-token-nan": EmptyTokenNaN(),
    "sanitises-indices-in-place": SanitisesIndicesInPlace(),
    "nondeterministic-tile-order": NondeterministicTileOrder(),
}
