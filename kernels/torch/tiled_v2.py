"""The correct device-style kernel for calling convention v2 (contracts/v2.py), written the
way upstream's pro CSA kernel is (docs: /work/shared/upstream-v2.md section 1): the per-token
compressed cut computed in the kernel (in int64: no fp32 rounding of positions or ids), the
window lanes and the compressed lanes concatenated into fixed-size key blocks, per-block live
masks and a block-validity flag, a gather through safe addresses (an ignored lane is masked
before its row is read, and its row is zeroed), an online softmax over the key blocks with
bf16 probabilities into the value product and an fp32 running sum, the sink in the
denominator only, and a bf16 output. Tokens run in tiles of `token_tile`.

Each step is one method, so that a seeded faulty kernel (kernels/faulty/v2.py) is this class
with one method overridden. When torch sees a CUDA device the kernel runs there.
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v2 import Inputs, validate

NEG_INF = float("-inf")
#: The cut bound without a compress ratio: past any int32 slot id.
NO_CUT = 2**40


class TiledKernelV2:
    """The correct v2 device-style kernel. Call it with the v2 keyword arguments."""

    convention = "v2"
    #: key lanes per block (upstream: ATTN_K_TILE = 128)
    tile = 16
    #: tokens per program (upstream: 8 since #634)
    token_tile = 8
    #: token tiles computed in one vectorised step
    tiles_per_step = 2048

    def __call__(self, **kw) -> torch.Tensor:
        inputs = validate(**kw)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.run(inputs, device)

    # -- the token grid -------------------------------------------------------------------
    def token_tiles(self, T: int, dev) -> list[torch.Tensor]:
        """The token ids of each program: whole tiles, then the remainder."""
        return list(torch.arange(T, device=dev).split(self.token_tile))

    def store(self, o: torch.Tensor, toks: torch.Tensor, out: torch.Tensor, inputs: Inputs):
        """Write a token tile's output rows into `o` `[T, H, D]`."""
        o[toks] = out
        return o

    # -- which lanes are live -------------------------------------------------------------
    def cmp_bound(self, pos: torch.Tensor, ratio: int | None) -> torch.Tensor:
        """`floor((pos + 1) / r)` in int64 (no cut without a ratio)."""
        if ratio is None:
            return torch.full_like(pos, NO_CUT)
        return torch.div(pos + 1, ratio, rounding_mode="floor")

    def stage_window(self, w: torch.Tensor) -> torch.Tensor:
        """The window row `[n, WIN]` as staged for the kernel: every lane."""
        return w

    def classify_window(self, w: torch.Tensor) -> torch.Tensor:
        """A window lane is live iff its own value is a row (`>= 0`)."""
        return w >= 0

    def classify_cmp(self, c: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """A compressed lane is live iff `0 <= c < cmp_bound` (its own value)."""
        return (c >= 0) & (c < bound[:, None])

    # -- addresses ------------------------------------------------------------------------
    def window_address(self, w: torch.Tensor, pos: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        """The flat `ori_kv` row of each window lane: the lane's own value."""
        return w

    def cmp_slot(self, c: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        """The compressed slot of a raw id: the id itself (no offset since #728)."""
        return c

    def cmp_block(self, inputs: Inputs, table: torch.Tensor, b: torch.Tensor,
                  slot: torch.Tensor) -> torch.Tensor:
        """The physical block of compressed slot `slot` of batch `b`, through the table."""
        col = (slot // inputs.BLOCK).clamp(0, table.shape[1] - 1)
        return table[b[:, None].expand_as(col), col]

    def gather(self, inputs: Inputs, waddr, live_w, cslot, live_c, b, dev) -> torch.Tensor:
        """`[n, WIN + IDX_TOPK, D]` rows, window lanes first. An ignored lane reads a safe
        address (mask before gather) and gets a zero row, so its own address is never read.

        Addresses are taken modulo the pool: a no-op for the valid addresses of live lanes,
        and what keeps a faulty variant's wrong address a wrong read (a device reads
        whatever lies there) instead of a Python IndexError."""
        ori = inputs.ori_kv.to(dev).reshape(-1, inputs.D)
        wrows = ori[torch.where(live_w, waddr, 0) % ori.shape[0]]
        slot = torch.where(live_c, cslot, 0)
        blk = self.cmp_block(inputs, inputs.cmp_block_table.to(dev, torch.int64), b, slot)
        cmp = inputs.cmp_kv.to(dev)
        crows = cmp[torch.where(live_c, blk, 0) % cmp.shape[0], slot % inputs.BLOCK]
        rows = torch.cat([wrows, crows], dim=1)
        live = torch.cat([live_w, live_c], dim=1)
        return torch.where(live[..., None], rows, torch.zeros((), dtype=rows.dtype, device=dev))

    # -- key blocks -----------------------------------------------------------------------
    def pad_lanes(self, x: torch.Tensor, value) -> torch.Tensor:
        """Pad the lane axis (dim 1) to whole key blocks with `value` (a pad is never live)."""
        pad = (-x.shape[1]) % self.tile
        if pad == 0:
            return x
        fill = torch.full((x.shape[0], pad, *x.shape[2:]), value, dtype=x.dtype, device=x.device)
        return torch.cat([x, fill], dim=1)

    def block_valid(self, live_w, live_c, live) -> torch.Tensor:
        """`[n, blocks]`: whether a key block holds a live lane (else it is skipped). `live`
        is the padded lane mask, window lanes first."""
        return live.reshape(live.shape[0], live.shape[1] // self.tile, self.tile).any(dim=-1)

    # -- scores and the online softmax ----------------------------------------------------
    def load_q(self, inputs: Inputs, toks: torch.Tensor, dev) -> torch.Tensor:
        """The tile's queries `[n, H, D]`."""
        return inputs.q.to(dev)[toks]

    def scores(self, q, k, scale: float):
        """fp32 logits `[n, H, tile]` from bf16 operands."""
        return torch.einsum("thd,tkd->thk", q.float(), k.float()) * scale

    def mask_scores(self, z, live):
        return torch.where(live[:, None, :], z, NEG_INF)

    def rescale(self, m_old, m_new):
        """`exp(m_old - m_new)`, with an empty history (`m_old = -inf`) giving 0, not NaN."""
        return torch.where(m_old == NEG_INF, 0.0, torch.exp(m_old - m_new))

    def merge(self, state, z, v, live):
        """One key block folded into the running `(m, l, acc)`: fp32 sum of the unrounded
        weights, bf16 weights into the value product (as upstream's `oi`)."""
        m, l, acc = state
        m_new = torch.maximum(m, z.amax(dim=-1, keepdim=True))
        alpha = self.rescale(m, m_new)
        p = torch.where(live[:, None, :], torch.exp(z - m_new), 0.0)
        l = l * alpha + p.sum(dim=-1, keepdim=True)
        acc = acc * alpha + torch.einsum("thk,tkd->thd", p.to(torch.bfloat16).float(), v.float())
        return m_new, l, acc

    def fold(self, state, merged, valid):
        """Keep the merged state where the block is valid; a skipped block leaves the running
        state as it was (its neutral partial changes nothing)."""
        keep = valid[:, None, None]
        return tuple(torch.where(keep, new, old) for new, old in zip(merged, state, strict=True))

    def merge_blocks(self, state, q, rows, live, valid, scale: float):
        """The online softmax over every key block, in lane order."""
        for i in range(valid.shape[1]):
            sl = slice(i * self.tile, (i + 1) * self.tile)
            z = self.mask_scores(self.scores(q, rows[:, sl], scale), live[:, sl])
            state = self.fold(state, self.merge(state, z, rows[:, sl], live[:, sl]), valid[:, i])
        return state

    def finish(self, state, sink):
        """Normalise, with the sink in the denominator only; an empty token gives 0."""
        m, l, acc = state
        o = acc / (l + torch.exp(sink[None, :, None] - m))
        return torch.where(m == NEG_INF, 0.0, o)

    # -- one token tile, and the call -----------------------------------------------------
    def attend_tokens(self, inputs: Inputs, toks: torch.Tensor, dev) -> torch.Tensor:
        """The output `[n, H, D]` bf16 of the tokens `toks`."""
        b = toks // inputs.S
        pos = inputs.position_ids.to(dev, torch.int64)[toks, 0]
        bound = self.cmp_bound(pos, inputs.compress_ratio)
        w = self.stage_window(inputs.window_swa_indices.to(dev, torch.int64)[toks])
        c = inputs.idx_topk.to(dev, torch.int64)[toks, :inputs.index_topk]
        live_w, live_c = self.classify_window(w), self.classify_cmp(c, bound)
        rows = self.gather(inputs, self.window_address(w, pos, inputs), live_w,
                           self.cmp_slot(c, inputs), live_c, b, dev)
        rows = self.pad_lanes(rows, 0.0)
        live = self.pad_lanes(torch.cat([live_w, live_c], dim=1), False)
        valid = self.block_valid(live_w, live_c, live)
        q = self.load_q(inputs, toks, dev)
        n, H, D = q.shape
        state = (torch.full((n, H, 1), NEG_INF, device=dev), torch.zeros((n, H, 1), device=dev),
                 torch.zeros((n, H, D), device=dev))
        state = self.merge_blocks(state, q, rows, live, valid, inputs.softmax_scale)
        return self.finish(state, inputs.attn_sink.to(dev)).to(torch.bfloat16)

    def run(self, inputs: Inputs, dev) -> torch.Tensor:
        o = torch.zeros((inputs.T, inputs.H, inputs.D), dtype=torch.bfloat16, device=dev)
        tiles = self.token_tiles(inputs.T, dev)
        # tiles run side by side, as a device runs programs: per-token work is the same, and
        # 2^16 tokens do not cost 2^13 Python steps
        for k in range(0, len(tiles), self.tiles_per_step):
            toks = torch.cat(tiles[k:k + self.tiles_per_step])
            o = self.store(o, toks, self.attend_tokens(inputs, toks, dev), inputs)
        return o.cpu()


sparse_attn = TiledKernelV2()
