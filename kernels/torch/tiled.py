"""A second correct kernel, written the way a device kernel is: per-token lengths derived in
the kernel, the index row read by value, a paged gather through the block tables, fixed-size
key tiles merged by an online softmax, bf16 probabilities into the value product (as the
seed kernel computes them) and a bf16 output.

Each step is one method, so that a seeded faulty kernel (kernels/faulty/v1.py) is this class
with one method overridden: one visible bug each. When torch sees a CUDA device the kernel
runs there.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, validate

NEG_INF = float("-inf")


class TiledKernel:
    """The correct device-style kernel. Call it with the contract's keyword arguments."""

    tile = 16

    def __call__(self, **kw) -> torch.Tensor:
        inputs = validate(**kw)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.run(inputs, device)

    # -- per-token lengths ---------------------------------------------------------------
    def seq_used(self, seqused: torch.Tensor, B: int, S: int) -> torch.Tensor:
        """`[B, S]`: the derived per-token sparse length `seqused_kv[b] - S + 1 + s`."""
        s = torch.arange(S, device=seqused.device)
        return seqused[:, None] - S + 1 + s[None, :]

    def valid_counts(self, seq_used: torch.Tensor, win: int):
        window_valid = seq_used.clamp(min=0).clamp(max=win)
        cmp_valid = (seq_used - window_valid).clamp(min=0)
        return window_valid, cmp_valid

    # -- reading the index row by value ---------------------------------------------------
    def load_row(self, inputs: Inputs, dev) -> torch.Tensor:
        """The token's index row `[B, S, TOPK]` as the kernel reads it (int64)."""
        return inputs.topk_idxs.to(dev, torch.int64)

    def classify(self, e: torch.Tensor, window_valid, cmp_valid, win: int):
        """Live masks `[B, S, TOPK]` for window and compressed entries."""
        wv, cv = window_valid[..., None], cmp_valid[..., None]
        live_window = (e >= 0) & (e < wv)
        live_cmp = (e >= win) & (e < win + cv)
        return live_window, live_cmp

    def cmp_slot(self, e: torch.Tensor, win: int) -> torch.Tensor:
        return e - win

    def dedupe(self, e, live_window, live_cmp):
        """Duplicates count twice: nothing to do."""
        return live_window, live_cmp

    # -- the paged gather -----------------------------------------------------------------
    def physical_block(self, table: torch.Tensor, slot: torch.Tensor, block: int):
        col = (slot // block).clamp(0, table.shape[1] - 1)
        return torch.gather(table, 1, col.reshape(table.shape[0], -1)).reshape(slot.shape)

    def window_table(self, inputs: Inputs, dev):
        return inputs.ori_block_table.to(dev, torch.int64)

    def cmp_table(self, inputs: Inputs, dev):
        return inputs.cmp_block_table.to(dev, torch.int64)

    def gather(self, inputs: Inputs, e, live_window, live_cmp, dev):
        """`[B, S, TOPK, D]` rows; a dead entry reads a safe address and gets a zero row, so
        its own address is never dereferenced (mask before gather)."""
        block, win = inputs.BLOCK, inputs.window_size
        wslot = torch.where(live_window, e, 0)
        cslot = torch.where(live_cmp, self.cmp_slot(e, win), 0)
        wblk = self.physical_block(self.window_table(inputs, dev), wslot, block)
        cblk = self.physical_block(self.cmp_table(inputs, dev), cslot, block)
        ori, cmp = inputs.ori_kv.to(dev), inputs.cmp_kv.to(dev)
        wrows = ori[torch.where(live_window, wblk, 0), wslot % block]
        crows = cmp[torch.where(live_cmp, cblk, 0), cslot % block]
        rows = torch.where(live_cmp[..., None], crows, wrows)
        zero = torch.zeros((), dtype=rows.dtype, device=dev)
        return torch.where((live_window | live_cmp)[..., None], rows, zero)

    # -- scores and the online softmax ----------------------------------------------------
    def scale(self, inputs: Inputs) -> float:
        return inputs.softmax_scale

    def load_q(self, inputs: Inputs, dev) -> torch.Tensor:
        """The query `[B, S, H, D]` each head's scores are computed with (copied to the
        device in row-major order, as a device kernel's host code does)."""
        return inputs.q.to(dev).contiguous()

    def scores(self, q, k, scale: float):
        """fp32 logits `[B, S, H, T]` from bf16 operands."""
        return torch.einsum("bshd,bstd->bsht", q.float(), k.float()) * scale

    def mask_scores(self, z, live):
        return torch.where(live[:, :, None, :], z, NEG_INF)

    def tile_probs(self, z, m_new, live):
        return torch.where(live[:, :, None, :], torch.exp(z - m_new), 0.0)

    def rescale(self, m_old, m_new):
        """`exp(m_old - m_new)`, with an empty history (`m_old = -inf`) giving 0, not NaN."""
        return torch.where(m_old == NEG_INF, 0.0, torch.exp(m_old - m_new))

    def running_max(self, m, z):
        """The running max after one more tile: the old one and the tile's own."""
        return torch.maximum(m, z.amax(dim=-1, keepdim=True))

    def merge(self, state, z, v, live):
        """Fold one key tile into the running `(m, l, acc)`."""
        m, l, acc = state
        m_new = self.running_max(m, z)
        alpha = self.rescale(m, m_new)
        p = self.tile_probs(z, m_new, live)
        l = l * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.einsum("bsht,bstd->bshd", p.to(torch.bfloat16).float(), v.float())
        return m_new, l, acc

    def sink_term(self, sink, m):
        return torch.exp(sink[None, None, :, None] - m)

    def finish(self, state, sink, rows):
        """Normalise, with the sink in the denominator only; an empty token gives 0."""
        m, l, acc = state
        o = acc / (l + self.sink_term(sink, m))
        empty = (m == NEG_INF)
        return torch.where(empty, 0.0, o)

    def key_mask(self, live, topk: int):
        """The keys the softmax sees: the live ones (tile padding is never live)."""
        return live

    def pad_row(self, e: torch.Tensor) -> torch.Tensor:
        """Pad the row with `-1` to whole tiles (a pad is never live)."""
        pad = (-e.shape[-1]) % self.tile
        return torch.nn.functional.pad(e, (0, pad), value=-1)

    def run(self, inputs: Inputs, dev) -> torch.Tensor:
        B, S, H, D, win = inputs.B, inputs.S, inputs.H, inputs.D, inputs.window_size
        seq_used = self.seq_used(inputs.seqused_kv.to(dev, torch.int64), B, S)
        window_valid, cmp_valid = self.valid_counts(seq_used, win)
        e = self.pad_row(self.load_row(inputs, dev))
        live_window, live_cmp = self.classify(e, window_valid, cmp_valid, win)
        live_window, live_cmp = self.dedupe(e, live_window, live_cmp)
        rows = self.gather(inputs, e, live_window, live_cmp, dev)
        live = self.key_mask(live_window | live_cmp, inputs.TOPK)
        q = self.load_q(inputs, dev)
        scale = self.scale(inputs)
        state = (torch.full((B, S, H, 1), NEG_INF, device=dev),
                 torch.zeros((B, S, H, 1), device=dev),
                 torch.zeros((B, S, H, D), device=dev))
        for start in range(0, e.shape[-1], self.tile):
            sl = slice(start, start + self.tile)
            z = self.mask_scores(self.scores(q, rows[:, :, sl], scale), live[:, :, sl])
            state = self.merge(state, z, rows[:, :, sl], live[:, :, sl])
        o = self.finish(state, inputs.attn_sink.to(dev), rows)
        return o.to(torch.bfloat16).cpu()


sparse_attn = TiledKernel()
