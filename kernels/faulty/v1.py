"""Seeded faulty kernels: the correct device-style kernel (kernels/torch/tiled.py) with exactly one
bug each, one overridden method apiece. The list reads as a catalogue of what the suite
defends against; every one must be caught (see `python -m sparse_attn_conformance.nightly.killrate`).

The first group is the history of the seed's `seqused_kv` semantics (contract section 4);
the second, bug classes that public sparse attention kernels shipped.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.kernels.torch.tiled import NEG_INF, TiledKernel

# -- the history of the per-batch seqused_kv semantics ---------------------------------------


class PerBatchLength(TiledKernel):
    """One length per batch shared by all S tokens: token 0 sees token 1's slot."""

    bug_class = "length-derivation"  # conformance.v1.counterfactuals names it

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

    bug_class = "length-derivation"  # conformance.v1.counterfactuals names it

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

    bug_class = "ignored-lane-admitted"  # conformance.v1.counterfactuals names it

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

    bug_class = "sink-dropped"  # attention.counterfactuals names it

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

    bug_class = "scale"  # attention.counterfactuals names it

    def scale(self, inputs):
        return inputs.D ** -0.5


class ScaleNotApplied(TiledKernel):
    """The scale is never applied to the logits."""

    bug_class = "scale"  # attention.counterfactuals names it

    def scale(self, inputs):
        return 1.0


class TilePaddingUnmasked(TiledKernel):
    """The padding of the last tile is not masked: padded keys (zero rows) score 0 and
    count in the denominator."""

    bug_class = "zero-rows-admitted"  # attention.counterfactuals names it

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

    bug_class = "ignored-lane-admitted"  # conformance.v1.counterfactuals names it

    def classify(self, e, window_valid, cmp_valid, win):
        return super().classify(torch.where(e == -1, 0, e), window_valid, cmp_valid, win)

    def gather(self, inputs, e, live_window, live_cmp, dev):
        return super().gather(inputs, torch.where(e == -1, 0, e), live_window, live_cmp, dev)


class SinkWrongSign(TiledKernel):
    """The sink enters as `exp(-sink - m)`."""

    bug_class = "sink-scaled"  # attention.counterfactuals names it

    def sink_term(self, sink, m):
        return torch.exp(-sink[None, None, :, None] - m)


class SinkUnshifted(TiledKernel):
    """The sink is not shifted by the row max: `exp(sink)` beside `exp(z - m)`."""

    bug_class = "sink-unshifted"  # attention.counterfactuals names it

    def sink_term(self, sink, m):
        return torch.exp(sink[None, None, :, None]).expand_as(m)


class DuplicatesOnce(TiledKernel):
    """Repeated live entries are counted once."""

    bug_class = "duplicates-once"  # attention.counterfactuals names it

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

    bug_class = "length-derivation"  # conformance.v1.counterfactuals names it

    def seq_used(self, seqused, B, S):
        return super().seq_used(seqused[:1].expand(B), B, S)


class InclusiveWindowBound(TiledKernel):
    """`e <= window_valid`: the window slot at exactly `window_valid` is attended."""

    bug_class = "inclusive-bound"  # conformance.v1.counterfactuals names it

    def classify(self, e, window_valid, cmp_valid, win):
        live_window, live_cmp = super().classify(e, window_valid, cmp_valid, win)
        return live_window | ((e == window_valid[..., None]) & (e < win)), live_cmp


class InclusiveCmpBound(TiledKernel):
    """`e <= WIN + cmp_valid`: the compressed slot at exactly `cmp_valid` is attended."""

    bug_class = "inclusive-bound"  # conformance.v1.counterfactuals names it

    def classify(self, e, window_valid, cmp_valid, win):
        live_window, live_cmp = super().classify(e, window_valid, cmp_valid, win)
        return live_window, live_cmp | (e == win + cmp_valid[..., None])


class EmptyTokenNaN(TiledKernel):
    """No guard for a token with no live entry: the max is made "safe" (0) and the output
    is `0 / (0 + exp(sink))`, which is NaN when the sink is `-inf`."""

    bug_class = "empty-token-nan"  # attention.counterfactuals names it

    def finish(self, state, sink, rows):
        m, l, acc = state
        safe_m = torch.where(m == NEG_INF, 0.0, m)
        return acc / (l + self.sink_term(sink, safe_m))


class SanitisesIndicesInPlace(TiledKernel):
    """Writes `-1` over the caller's ignored index entries (in place): its own output is
    right, the caller's `topk_idxs` is not."""

    def __call__(self, **kw):
        out = super().__call__(**kw)
        from sparse_attn_conformance.contracts.v1 import live_mask
        live = live_mask(kw["topk_idxs"], kw["seqused_kv"], kw["window_size"])
        kw["topk_idxs"].masked_fill_(~live, -1)
        return out


class NondeterministicTileOrder(TiledKernel):
    """Key tiles are merged in whatever order they finish (here: rotated by one more tile
    each call), so repeated calls differ in their last bits. A rotation, not a random order:
    two consecutive calls always merge in different orders once there are two tiles, so the
    kill does not hang on the process's random state."""

    _calls = 0

    def run(self, inputs, dev):
        self._calls += 1
        self._order = torch.arange(-(-inputs.TOPK // self.tile)).roll(self._calls)
        return super().run(inputs, dev)

    def pad_row(self, e):
        e = super().pad_row(e)
        tiles = e.reshape(*e.shape[:-1], -1, self.tile)[..., self._order.to(e.device), :]
        return tiles.reshape(e.shape)


# -- bugs that only show beyond a threshold ---------------------------------------------------
# Each is right on every input below its threshold (within the tolerance) and wrong beyond it.
# The thresholds are deliberately not powers of two where the bug allows: the suite has to
# catch a bug wherever its threshold lies, not just at the usual tile sizes.

#: Argument tensors, for the mutants that read all of them.
_TENSOR_ARGS = ("q", "ori_kv", "ori_block_table", "cmp_kv", "cmp_block_table", "topk_idxs",
                "attn_sink", "seqused_kv")


class HeadTileRemainder(TiledKernel):
    """Heads run in tiles of 24, and the last partial tile's base head is computed as
    `(H // 24 - 1) * 24` instead of `H // 24 * 24`: for H > 24 and not a multiple of 24 the
    remainder heads `h >= H // 24 * 24` are scored with the query of head `h - 24` (their
    sink stays their own). Threshold: H = 25."""

    heads = 24

    def load_q(self, inputs, dev):
        q = super().load_q(inputs, dev)
        H = q.shape[2]
        full = H // self.heads * self.heads
        h = torch.arange(H, device=q.device)
        base = max(H // self.heads - 1, 0) * self.heads            # should be `full`
        return q[:, :, torch.where(h >= full, h - full + base, h)]


class DChunkRemainder(TiledKernel):
    """The q.k dot product runs over D in chunks of 80 and the remainder chunk is only
    handled when it is the only chunk: for D > 80 the last `D % 80` dimensions are dropped.
    Threshold: D = 81 (right for D <= 80 and for multiples of 80)."""

    chunk = 80

    def scores(self, q, k, scale):
        D = q.shape[-1]
        n = D if D <= self.chunk else D // self.chunk * self.chunk
        return super().scores(q[..., :n], k[..., :n], scale)


class IndexBufferWrap(TiledKernel):
    """The index row is staged through a 1000-entry buffer written at `p % 1000`: for
    TOPK > 1000 the entry at row position `p >= 1000` overwrites the one at `p - 1000`, and
    the kernel then reads the row through the buffer, so the overwritten entries are lost and
    the overwriting ones are read twice. Threshold: TOPK = 1001."""

    buffer = 1000

    def load_row(self, inputs, dev):
        e = super().load_row(inputs, dev)
        topk = e.shape[-1]
        p = torch.arange(topk, device=e.device)
        last = p % self.buffer + (topk - 1 - p % self.buffer) // self.buffer * self.buffer
        return e[..., last]         # position p reads the last write to slot p % 1000


class BatchGridWrap(TiledKernel):
    """The batch grid is capped at 96 programs, each looping over batches `b = pid, pid + 96,
    ...`; the per-batch metadata (`seqused_kv` and both block-table rows) is loaded once from
    `pid` before the loop, so batch `b >= 96` uses batch `b % 96`'s (its queries and index rows
    are its own). Threshold: B = 97."""

    bug_class = "other-batch-table"  # conformance.v1.counterfactuals names it

    grid = 96

    def run(self, inputs, dev):
        pid = torch.arange(inputs.B) % self.grid
        return super().run(inputs.replace(seqused_kv=inputs.seqused_kv[pid],
                                          ori_block_table=inputs.ori_block_table[pid],
                                          cmp_block_table=inputs.cmp_block_table[pid]), dev)


class TokenGroupWrap(TiledKernel):
    """MTP tokens run in groups of 6 and the per-token length uses the token's index in its
    group, `s % 6`, instead of `s`: `seqused_kv[b] - S + 1 + s % 6`. Threshold: S = 7."""

    group = 6

    def seq_used(self, seqused, B, S):
        s = torch.arange(S, device=seqused.device) % self.group
        return seqused[:, None] - S + 1 + s[None, :]


class Int16Index(TiledKernel):
    """Index entries are narrowed to int16 (wrapping): an entry `>= 32768` is misread, as a
    negative number (ignored) below 65536, as a smaller slot above. Threshold: a live entry
    `e >= 32768` (window slot or `WIN + compressed slot`)."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def load_row(self, inputs, dev):
        return super().load_row(inputs, dev).to(torch.int16).to(torch.int64)


class Uint16Slot(TiledKernel):
    """The compressed slot `e - WIN` is kept in a uint16: slot `c >= 65536` reads slot
    `c & 0xFFFF` (through the block table, as any slot). Threshold: a live compressed slot
    `c >= 65536`, i.e. `cmp_valid > 65536`."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def cmp_slot(self, e, win):
        return (e - win) & 0xFFFF


class Fp16Scores(TiledKernel):
    """q.k computed with fp16 operands into an fp16 result (the scale applied after, in fp32):
    a dot product beyond 65504 becomes inf (the contract's domain has every logit and partial
    sum representable in fp32), and so does a q or k entry beyond fp16's range. Threshold:
    `|q.k| > 65504` (or `|q|`, `|k|` entries > 65504)."""

    bug_class = "low-precision"  # attention.counterfactuals names it

    def scores(self, q, k, scale):
        return torch.einsum("bshd,bstd->bsht", q.half(), k.half()).float() * scale


class Fp16Accumulator(TiledKernel):
    """The value accumulator `acc = sum_j exp(z_j - m) v_j` is held in fp16 (rounded after
    each tile): it becomes inf once it passes 65504, e.g. one dominant live row with
    `|v| > 65504`, or weights summing to `l` over rows of `|v| > 65504 / l`. Threshold:
    `|acc| ~ 65520`."""

    bug_class = "low-precision"  # attention.counterfactuals names it

    def merge(self, state, z, v, live):
        m, l, acc = super().merge(state, z, v, live)
        return m, l, acc.half().float()


class ExpUnshifted(TiledKernel):
    """Probabilities as `exp(z)` and the sink as `exp(sink)`, with no max shift (nothing to
    rescale either): the same value in exact arithmetic, but a logit above ~88.72 overflows
    fp32 to inf and the output is inf/inf = NaN (and logits all below ~-103 underflow to 0).
    Threshold: `max z > 88.72`."""

    bug_class = "no-max-shift"  # attention.counterfactuals names it

    def tile_probs(self, z, m_new, live):
        return torch.where(live[:, :, None, :], torch.exp(z), 0.0)

    def rescale(self, m_old, m_new):
        return torch.ones_like(m_new)

    def sink_term(self, sink, m):
        return torch.exp(sink[None, None, :, None]).expand_as(m)


class StaleMax(TiledKernel):
    """The online softmax's running max is fixed after the first tile with a live key and
    never raised (so never rescaled): exact in value until a later tile's logit exceeds that
    max by more than ~88.72, when `exp(z - m)` overflows to inf and the output is NaN.
    Threshold: a later-tile logit > first non-empty tile's max + 88.72."""

    def running_max(self, m, z):
        return torch.where(m == NEG_INF, z.amax(dim=-1, keepdim=True), m)


class StridesIgnored(TiledKernel):
    """Reads every tensor argument as row-major from storage offset 0 (as a C++ kernel taking
    `data_ptr()` of the storage would): views with other strides or an offset give wrong
    numbers, and a view whose storage is smaller than its row-major size (an `expand`) fails
    to read (RuntimeError), as does a misread block id outside its pool (IndexError), as a
    device's out-of-bounds access would. Threshold: any argument not contiguous or at a
    non-zero storage offset."""

    def run(self, inputs, dev):
        def raw(t):
            strides, n = [], 1
            for size in reversed(t.shape):
                strides.insert(0, n)
                n *= size
            return t.as_strided(t.shape, strides, 0)   # RuntimeError if storage is too small
        # on the host: a misread block id outside its pool then raises IndexError (the
        # device's illegal address) instead of a CUDA assert that would poison the process
        return super().run(inputs.replace(**{a: raw(getattr(inputs, a)) for a in _TENSOR_ARGS}),
                           "cpu")


class TablePrefetch(TiledKernel):
    """Prefetches the blocks of every column of both block tables before it knows which
    slots are live, and gathers the live rows from the prefetched blocks: an out-of-pool id
    in a column no live slot uses (which the contract allows) faults (`IndexError`, as a
    device's illegal address). Threshold: any table entry outside its pool."""

    def gather(self, inputs, e, live_window, live_cmp, dev):
        block, win = inputs.BLOCK, inputs.window_size

        def prefetch(pool, table):              # [B, cols, BLOCK, D]
            # gathered on the host, so the fault is an IndexError, not a CUDA device-side
            # assert that would poison the whole process
            rows = pool.index_select(0, table.reshape(-1).cpu()).to(dev)
            return rows.reshape(*table.shape, *pool.shape[1:])

        ori = prefetch(inputs.ori_kv, self.window_table(inputs, dev))
        cmp = prefetch(inputs.cmp_kv, self.cmp_table(inputs, dev))
        b = torch.arange(inputs.B, device=dev)[:, None, None]
        wslot = torch.where(live_window, e, 0)
        cslot = torch.where(live_cmp, self.cmp_slot(e, win), 0)
        wrows = ori[b, (wslot // block).clamp(max=ori.shape[1] - 1), wslot % block]
        crows = cmp[b, (cslot // block).clamp(max=cmp.shape[1] - 1), cslot % block]
        rows = torch.where(live_cmp[..., None], crows, wrows)
        zero = torch.zeros((), dtype=rows.dtype, device=dev)
        return torch.where((live_window | live_cmp)[..., None], rows, zero)


class DropsTileLastKey(TiledKernel):
    """Key tiles of 144 row positions, and the inner loop over a full tile stops one short:
    the key at each full tile's last position (143, 287, ...) is skipped. Threshold:
    TOPK >= 144 with a live entry at such a position."""

    bug_class = "lane-dropped"  # attention.counterfactuals names it

    tile = 144

    def key_mask(self, live, topk):
        pos = torch.arange(live.shape[-1], device=live.device)
        return live & (pos % self.tile != self.tile - 1)


class MaxBeforeScale(TiledKernel):
    """FlashAttention style: the row max is taken over the unscaled q.k and the scale applied
    in the exponent, `exp(scale*qk - scale*max qk)`, sink `exp(sink - scale*max qk)`. Exact
    for scale >= 0; for scale < 0 the shift is the row's smallest logit, and `exp` overflows
    once the logits' spread exceeds ~88.72. Threshold: softmax_scale < 0 with spread > 88.72."""

    def scale(self, inputs):
        self._scale = inputs.softmax_scale
        return 1.0                  # the scores stay unscaled; the scale goes into the exp

    def tile_probs(self, z, m_new, live):
        s = self._scale
        return torch.where(live[:, :, None, :], torch.exp(s * z - s * m_new), 0.0)

    def rescale(self, m_old, m_new):
        s = self._scale
        return torch.where(m_old == NEG_INF, 0.0, torch.exp(s * m_old - s * m_new))

    def sink_term(self, sink, m):
        return torch.exp(sink[None, None, :, None] - self._scale * m)


class CandidateCap(TiledKernel):
    """Live entries are compacted into a 1500-entry candidate buffer: live entries beyond a
    row's first 1500 are dropped. Threshold: more than 1500 live entries in a row."""

    cap = 1500

    def key_mask(self, live, topk):
        return live & (live.cumsum(dim=-1) <= self.cap)


# -- integers at the edge of their types, and counts past launch limits ----------------------
# Device kernels keep lengths, slots, table columns and block ids in fixed-width fields and
# put tokens and heads on launch-grid axes; each of these is right below the edge of its
# type or limit and wrong beyond it.

INT32_MIN_, INT32_SPAN = -(2**31), 2**32
#: Programs on one launch-grid axis (CUDA's y and z).
LAUNCH_GRID = 65535


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """`x` as a wrapping int32 would hold it (two's complement), in int64."""
    return (x - INT32_MIN_) % INT32_SPAN + INT32_MIN_


class Int32LengthOverflow(TiledKernel):
    """The derived length is evaluated as `(seqused_kv[b] + 1 + s) - S` with the first sum in
    int32 (wrapping) and the subtraction in 64-bit address arithmetic, so the wrap is never
    undone: a token with `seqused_kv[b] + 1 + s > INT32_MAX` gets a hugely negative length
    and attends nothing. Threshold: `seqused_kv[b] >= INT32_MAX - s` (lengths within S of
    int32's edge)."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def seq_used(self, seqused, B, S):
        s = torch.arange(S, device=seqused.device)
        return wrap_int32(seqused[:, None] + 1 + s[None, :]) - S


class Fp32Slot(TiledKernel):
    """The compressed slot `e - WIN` is computed through fp32 (`float(e) - WIN`, as a vector
    unit without integer subtraction does): exact below 2^24, above it `e` rounds to a
    multiple of 2, 4, ... 256 and the slot reads another row. Threshold: a live compressed
    entry `e > 2^24` that fp32 does not represent."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def cmp_slot(self, e, win):
        return (e.to(torch.float32) - win).to(torch.int64)


class TokenGridLimit(TiledKernel):
    """Tokens `t = b*S + s` run on one launch-grid axis capped at 65535 programs, with no
    loop over the rest: tokens `t >= 65535` are never computed and their output stays zero.
    Threshold: `B*S > 65535`."""

    grid = LAUNCH_GRID

    def run(self, inputs, dev):
        o = super().run(inputs, dev)
        flat = o.reshape(inputs.B * inputs.S, *o.shape[2:])
        flat[self.grid:] = 0
        return flat.reshape(o.shape)


class HeadGridLimit(TiledKernel):
    """Heads run on a launch-grid axis capped at 65535 programs: heads `h >= 65535` are
    never computed and their output stays zero. Threshold: `H > 65535`."""

    grid = LAUNCH_GRID

    def finish(self, state, sink, rows):
        o = super().finish(state, sink, rows)
        o[:, :, self.grid:] = 0
        return o


class Column12Bit(TiledKernel):
    """A slot's block-table column `slot // BLOCK` is kept in a 12-bit field: column
    `j >= 4096` reads column `j & 0xFFF` (another logical block). Threshold: a live slot in
    column 4096 or later (`cmp_valid > 4096 * BLOCK`)."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def physical_block(self, table, slot, block):
        col = ((slot // block) & 0xFFF).clamp(0, table.shape[1] - 1)
        return torch.gather(table, 1, col.reshape(table.shape[0], -1)).reshape(slot.shape)


class BlockId16(TiledKernel):
    """Compressed block ids are kept in 16 bits: block `n >= 65536` reads block
    `n & 0xFFFF`. Threshold: a live compressed slot in a block with id >= 65536 (a pool of
    more than 2^16 blocks)."""

    bug_class = "integer-edge"  # conformance.v1.counterfactuals names it

    def cmp_table(self, inputs, dev):
        return inputs.cmp_block_table.to(dev, torch.int64) & 0xFFFF


class DistinctAddresses(TiledKernel):
    """Each distinct physical address gathered once: the kernel compacts the index row into
    its distinct entries with their counts (repeats of one entry still count), resolves each
    to its physical row (pool storage, block, row) and gathers each address once, keeping
    the count of the first entry that resolved to it, so a second entry naming the same row
    through another table column, or through the other pool when both pools are one
    storage, is dropped. Exposed by two live entries of one token with different values
    that resolve to one physical row (conformance/test_aliasing.py; before it only the
    integer-edge cases drew such entries)."""

    bug_class = "duplicates-once"  # attention.counterfactuals names it

    def run(self, inputs, dev):
        self._inputs = inputs
        return super().run(inputs, dev)

    def dedupe(self, e, live_window, live_cmp):
        inputs = self._inputs
        block, win = inputs.BLOCK, inputs.window_size
        live = live_window | live_cmp
        slot = torch.where(live_cmp, self.cmp_slot(e, win), torch.where(live_window, e, 0))
        wblk = self.physical_block(self.window_table(inputs, e.device), slot, block)
        cblk = self.physical_block(self.cmp_table(inputs, e.device), slot, block)
        # a pool's identity is its storage: one tensor passed as both pools is one pool
        same = inputs.cmp_kv.data_ptr() == inputs.ori_kv.data_ptr()
        pool = torch.where(live_cmp, 0 if same else 1, 0)
        blk = torch.where(live_cmp, cblk, wblk)
        address = (pool * 2**40 + blk * block + slot % block)
        n = e.shape[-1]
        lane = torch.arange(n, device=e.device).expand_as(e)
        address = torch.where(live, address, -1 - lane)       # a dead lane is its own address
        order = torch.argsort(address, dim=-1, stable=True)
        sorted_addr = torch.gather(address, -1, order)
        starts = torch.ones_like(sorted_addr, dtype=torch.bool)
        starts[..., 1:] = sorted_addr[..., 1:] != sorted_addr[..., :-1]
        first = torch.where(starts, torch.arange(n, device=e.device), 0).cummax(dim=-1).values
        owner = torch.empty_like(order).scatter_(-1, order, torch.gather(order, -1, first))
        keep = torch.gather(e, -1, owner) == e                 # the address's first entry
        return live_window & keep, live_cmp & keep


#: The finite "minus infinity" of the finite-sentinel mutants (sglang's SM120 kernel's).
FINITE_SENTINEL = -1e20


class FiniteEmptySentinel(TiledKernel):
    """An empty token recognised by a finite "minus infinity" (class: finite sentinel, issue
    #25; sglang's SM120 kernel at -1e20, vLLM's bf16 sparse MLA at -1e30): a token whose
    running max stayed at or below -1e20 returns 0, so a token whose live logits all lie
    below it (inside the domain, down to -2^120) loses its output. Exposed by such a token
    with a sink below its logits
    (conformance.logits.far_below_zero; the extreme value regime only by chance)."""

    bug_class = "finite-sentinel"  # attention.counterfactuals names it

    def finish(self, state, sink, rows):
        o = super().finish(state, sink, rows)
        return torch.where(state[0] <= FINITE_SENTINEL, 0.0, o)


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
    "head-tile-remainder": HeadTileRemainder(),
    "d-chunk-remainder": DChunkRemainder(),
    "index-buffer-wrap": IndexBufferWrap(),
    "batch-grid-wrap": BatchGridWrap(),
    "token-group-wrap": TokenGroupWrap(),
    "int16-index": Int16Index(),
    "uint16-slot": Uint16Slot(),
    "fp16-scores": Fp16Scores(),
    "fp16-accumulator": Fp16Accumulator(),
    "exp-unshifted": ExpUnshifted(),
    "stale-max": StaleMax(),
    "strides-ignored": StridesIgnored(),
    "table-prefetch": TablePrefetch(),
    "drops-tile-last-key": DropsTileLastKey(),
    "max-before-scale": MaxBeforeScale(),
    "candidate-cap": CandidateCap(),
    "int32-length-overflow": Int32LengthOverflow(),
    "fp32-slot": Fp32Slot(),
    "token-grid-limit": TokenGridLimit(),
    "head-grid-limit": HeadGridLimit(),
    "column-12bit": Column12Bit(),
    "block-id-16": BlockId16(),
    "distinct-addresses": DistinctAddresses(),
    "finite-empty-sentinel": FiniteEmptySentinel(),
}
