"""Seeded faulty v2 kernels: the correct v2 device-style kernel (kernels/torch/tiled_v2.py) with
exactly one bug each, one overridden method apiece, each from upstream pypto-lib's bug
history since the seed (/work/shared/upstream-v2.md section 2; the pull request is named in
each docstring). Where upstream's bug sits behind a production-sized threshold, the threshold
here is scaled down so that small inputs reach it (said in the docstring). The last group
holds integer-edge bugs (issue #19): a fixed-width or fp32 integer path, an int32 overflow,
a launch-grid limit, each wrong only past its type's edge (strategies/v2/edges.py reaches
them).
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.kernels.faulty.v1 import FINITE_SENTINEL, LAUNCH_GRID, wrap_int32
from sparse_attn_conformance.kernels.torch.tiled_v2 import TiledKernelV2


class EmptyTileMerge(TiledKernelV2):
    """Merge run over empty tiles (upstream #448): the merge loop runs over every key block
    and a block without a live lane writes its neutral partial `(-inf, 0, 0)` into the
    loop-carried state instead of leaving it, so everything merged before an empty block is
    lost. Exposed by a token whose live lanes end before its last key block."""

    def fold(self, state, merged, valid):
        keep = valid[:, None, None]
        neutral = (torch.full_like(state[0], float("-inf")), torch.zeros_like(state[1]),
                   torch.zeros_like(state[2]))
        return tuple(torch.where(keep, new, zero) for new, zero in zip(merged, neutral, strict=True))


class WindowByCount(TiledKernelV2):
    """Entries read by position instead of by value (upstream #476, the seed's reading): the
    window is taken as its first `n` lanes, `n` the count of non-negative lanes, so a
    negative lane before a live one is read (its address wraps) and the last live one is
    dropped. Exposed by a window row whose live lanes are not a prefix."""

    def classify_window(self, w):
        n = (w >= 0).sum(dim=-1, keepdim=True)
        return torch.arange(w.shape[-1], device=w.device) < n


class SingleWindowPage(TiledKernelV2):
    """Window read through a single ring page (upstream #486, removed by #722): every
    window lane is read from the page of lane 0, `(w0 // BLOCK) * BLOCK + w % BLOCK` (the v2
    form of `ori_block_table[b, 0] * BLOCK + raw`; a row past the pool wraps, as a device
    reads whatever lies there). Exposed by a window that spans two pages."""

    def window_address(self, w, pos, inputs):
        block, rows = inputs.BLOCK, inputs.ori_kv.shape[0] * inputs.BLOCK
        page = w[:, :1].clamp(min=0) // block
        return (page * block + w % block) % rows


class SingleBlockTokenMix(TiledKernelV2):
    """Cross-token output mix-up with a single key block (upstream #516): a build whose
    `WIN + IDX_TOPK` fits one key tile writes token `s` of each batch's `S` tokens to the
    row of token `(s + 1) % S` (the S-stride miscompile upstream worked around by flooring
    the block count to 2). Exposed by S >= 2 tokens with different outputs and one key
    block."""

    bug_class = "rows-mixed"  # attention.counterfactuals names it

    def store(self, o, toks, out, inputs):
        if inputs.WIN + inputs.IDX_TOPK <= self.tile:
            S = inputs.S
            toks = toks // S * S + (toks % S + 1) % S
        o[toks] = out
        return o


class WindowTailDropped(TiledKernelV2):
    """Tail lanes dropped when WIN is not a multiple of the tile (upstream #571): the window
    is staged in whole fill tiles of `tile` lanes, so lanes `k >= WIN // tile * tile` never
    reach the kernel (read as empty). Exposed by a live lane past the last whole tile (any
    live lane when WIN < 16)."""

    bug_class = "lane-dropped"  # attention.counterfactuals names it

    def stage_window(self, w):
        staged = w.shape[-1] // self.tile * self.tile
        return torch.where(torch.arange(w.shape[-1], device=w.device) < staged, w, -1)


class IgnoredReadsRowZero(TiledKernelV2):
    """Ignored lanes gather flat row 0 (upstream #615): a masked lane (window, compressed or
    tile pad) reads `ori_kv` flat row 0 and is left out only by its score mask (upstream's
    `-1e20` bias), not by a zero row, so a NaN or inf in row 0 reaches the value product
    (`0 * NaN`). Exposed by a non-finite flat row 0 beside an ignored lane."""

    def gather(self, inputs, waddr, live_w, cslot, live_c, b, dev):
        ori = inputs.ori_kv.to(dev).reshape(-1, inputs.D)
        wrows = ori[torch.where(live_w, waddr, 0)]
        slot = torch.where(live_c, cslot, 0)
        blk = self.cmp_block(inputs, inputs.cmp_block_table.to(dev, torch.int64), b, slot)
        blk = torch.where(live_c, blk, 0)  # the ignored lane's own block is not read: row 0 is
        crows = torch.where(live_c[..., None], inputs.cmp_kv.to(dev)[blk, slot % inputs.BLOCK],
                            ori[0])
        rows = torch.cat([wrows, crows], dim=1)
        pad = (-rows.shape[1]) % self.tile        # the pads of the last block read row 0 too
        return torch.cat([rows, ori[0].expand(rows.shape[0], pad, -1)], dim=1)


class BlockFlagColumns(TiledKernelV2):
    """A block-skip flag that disagrees with the lanes (upstream #641 with the flag rule of
    #734): block 0 is taken as exactly the window and compressed column `j` as lane
    `WIN + j` of block `1 + j // tile`, which holds only when WIN == tile; otherwise a block
    holding a live compressed lane can be flagged empty and skipped. Exposed by WIN != 16
    with the live compressed lanes in columns whose assumed block differs from their real
    one."""

    def block_valid(self, live_w, live_c, live):
        n, blocks = live.shape[0], live.shape[1] // self.tile
        pad = (-live_c.shape[1]) % self.tile
        cmp = torch.nn.functional.pad(live_c, (0, pad))
        cmp = cmp.reshape(n, cmp.shape[1] // self.tile, self.tile).any(dim=-1)
        valid = torch.ones(n, blocks, dtype=torch.bool, device=live.device)  # block 0: always
        k = min(blocks - 1, cmp.shape[1])
        valid[:, 1:1 + k] = cmp[:, :k]
        valid[:, 1 + k:] = False
        return valid


class LastBlockNotMerged(TiledKernelV2):
    """A computed block never merged (upstream #631): the merge loop runs over one block
    fewer than the blocks computed (a one-block merge kept beside a two-block score pass), so
    the last key block is dropped whenever there is more than one. Exposed by a live lane in
    the last of several key blocks."""

    def merge_blocks(self, state, q, rows, live, valid, scale):
        blocks = valid.shape[1]
        for i in range(max(blocks - 1, 1)):
            sl = slice(i * self.tile, (i + 1) * self.tile)
            z = self.mask_scores(self.scores(q, rows[:, sl], scale), live[:, sl])
            state = self.fold(state, self.merge(state, z, rows[:, sl], live[:, sl]), valid[:, i])
        return state


class TokenTileRemainder(TiledKernelV2):
    """Token tiles that do not divide T (upstream #634): the grid runs `T // 8` whole tiles
    of 8 tokens and drops the remainder, whose outputs stay as the zeroed buffer. Exposed by
    T not a multiple of 8 (T = 9, or T < 8) with a live lane in a remainder token."""

    def token_tiles(self, T, dev):
        whole = T // self.token_tile * self.token_tile
        return list(torch.arange(whole, device=dev).split(self.token_tile))


class OverlayOffset(TiledKernelV2):
    """An index offset that producer and kernel disagree on (upstream #728): producers now
    write raw compressed slot ids, and the kernel still removes the `S`-row MTP overlay
    offset of the #476 encoding, reading slot `c - S` (liveness is still tested on the raw
    id; a negative slot wraps to the last row of the first column's block). Exposed by any
    live compressed lane."""

    def cmp_slot(self, c, inputs):
        return c - inputs.S


class IdentityBlockTable(TiledKernelV2):
    """An identity block-table assumption (upstream #779): compressed slot `c` of batch `b`
    is read from physical block `b * M + c // BLOCK`, the fixtures' old identity layout,
    instead of through `cmp_block_table` (out-of-pool ids wrap). Exposed by an interleaved
    (non-identity) table with a live compressed lane."""

    def cmp_block(self, inputs, table, b, slot):
        M = table.shape[1]
        col = (slot // inputs.BLOCK).clamp(0, M - 1)
        return (b[:, None] * M + col) % inputs.cmp_kv.shape[0]


class CmpTailCap(TiledKernelV2):
    """The newest compressed slots dropped past a tail cap (upstream #874): the cut bound is
    capped at a fixed slot count, `min(floor((pos + 1) / r), cap)`, so live slots `>= cap`
    (the newest) are ignored. Upstream's cap is `MAX_SEQ_LEN // 128` rows; here `cap = 12`
    so that a small pool reaches it. Exposed by a live compressed slot `>= 12`."""

    cap = 12

    def cmp_bound(self, pos, ratio):
        return super().cmp_bound(pos, ratio).clamp(max=self.cap)


class PageRunWindow(TiledKernelV2):
    """A page-run window gather that needs canonical windows (upstream #919): the window is
    split into runs at the page boundaries of the token's logical positions
    `max(0, pos - WIN + 1) + k`, and each lane's row is the run's first row plus its offset
    in the run; `window_swa_indices` is read only at each run start. Right for canonical
    windows (consecutive rows within a page), wrong for any other. Exposed by non-consecutive
    window rows within one logical page."""

    def window_address(self, w, pos, inputs):
        block, rows = inputs.BLOCK, inputs.ori_kv.shape[0] * inputs.BLOCK
        k = torch.arange(w.shape[-1], device=w.device)
        p = (pos[:, None] - w.shape[-1] + 1).clamp(min=0) + k
        start = torch.where((p % block == 0) | (k == 0), k, 0).cummax(dim=-1).values
        return (torch.gather(w, 1, start) + (k - start)) % rows


class FirstHeadOfTile(TiledKernelV2):
    """The first head of each 16-head tile corrupted (upstream #569): the queries of the
    next head tile are prefetched into the same 16-slot buffer and land in slot 0 before it
    is read, so head `h` with `h % 16 == 0` is scored with head `h + 16`'s query (its own
    when there is no next tile). Exposed by H > 16."""

    heads = 16

    def load_q(self, inputs, toks, dev):
        q = super().load_q(inputs, toks, dev)
        H = q.shape[1]
        h = torch.arange(H, device=q.device)
        src = torch.where((h % self.heads == 0) & (h + self.heads < H), h + self.heads, h)
        return q[:, src]


class CutFp32(TiledKernelV2):
    """The cut `floor((pos + 1) / r)` computed in fp32, as upstream's kernel does today (the
    kernel after #728; /work/shared/upstream-v2.md section 1.3):
    `trunc(float(pos + 1) * float(1 / r))`. Exact for small positions; from 2^24 on
    `pos + 1` rounds (and the product rounds too), so the bound moves and an id at the true
    cut is read, or one just below it dropped. Exposed by positions near and past 2^24
    with a compressed id at or beside the cut."""

    bug_class = "integer-edge"  # conformance.v2.counterfactuals names it

    def cmp_bound(self, pos, ratio):
        if ratio is None:
            return super().cmp_bound(pos, ratio)
        inv = torch.tensor(1.0 / ratio, dtype=torch.float32, device=pos.device)
        return torch.trunc((pos + 1).to(torch.float32) * inv).to(torch.int64)


# -- integers at the edge of their types (issue #19) ------------------------------------------

class CutInt32Overflow(TiledKernelV2):
    """The cut's `pos + 1` computed in int32 (class: int32 overflow, issue #19): at
    `pos = INT32_MAX` it wraps to `INT32_MIN`, and C's truncating division gives a negative
    cut, so the token attends no compressed slot. Exposed by a token at position INT32_MAX
    with a live compressed id."""

    bug_class = "integer-edge"  # conformance.v2.counterfactuals names it

    def cmp_bound(self, pos, ratio):
        if ratio is None:
            return super().cmp_bound(pos, ratio)
        return torch.div(wrap_int32(pos + 1), ratio, rounding_mode="trunc")


class CmpColumn12Bit(TiledKernelV2):
    """The `cmp_block_table` column `slot // BLOCK` kept in a 12-bit field (class: narrow
    column field, issue #19): column `j >= 4096` reads column `j & 0xFFF`, another page.
    Exposed by a live compressed slot in column 4096 or later."""

    bug_class = "integer-edge"  # conformance.v2.counterfactuals names it

    def cmp_block(self, inputs, table, b, slot):
        col = ((slot // inputs.BLOCK) & 0xFFF).clamp(0, table.shape[1] - 1)
        return table[b[:, None].expand_as(col), col]


class CmpBlockId16(TiledKernelV2):
    """Compressed block ids kept in 16 bits (class: narrow id field, issue #19): block
    `n >= 65536` reads block `n & 0xFFFF`. Exposed by a live compressed slot in a block with
    id 65536 or more (a pool of more than 2^16 blocks)."""

    bug_class = "integer-edge"  # conformance.v2.counterfactuals names it

    def cmp_block(self, inputs, table, b, slot):
        return super().cmp_block(inputs, table, b, slot) & 0xFFFF


class WindowRow16Bit(TiledKernelV2):
    """A window lane's flat `ori_kv` row kept in 16 bits (class: narrow index field, issue
    #19; a uint16 gather offset): row `w >= 65536` reads row `w & 0xFFFF`. Exposed by a live
    window lane naming a row past 2^16 (a pool of more than 2^16 rows)."""

    bug_class = "integer-edge"  # conformance.v2.counterfactuals names it

    def window_address(self, w, pos, inputs):
        return w & 0xFFFF


class TokenGridLimit(TiledKernelV2):
    """Token tiles on one launch-grid axis capped at 65535 programs, with no loop over the
    rest (class: grid limit, issue #19; one token a program, as upstream's decode grids):
    tokens `t >= 65535` are never computed and their output stays zero. Exposed by
    T > 65535 with a live lane in a token past the limit."""

    def token_tiles(self, T, dev):
        return list(torch.arange(min(T, LAUNCH_GRID), device=dev).split(self.token_tile))


class HeadGridLimit(TiledKernelV2):
    """Heads on a launch-grid axis capped at 65535 programs (class: grid limit, issue #19):
    heads `h >= 65535` are never computed and their output stays zero. Exposed by
    H > 65535 with a non-zero output in a head past the limit."""

    def finish(self, state, sink):
        o = super().finish(state, sink)
        o[:, LAUNCH_GRID:] = 0
        return o


class DistinctAddressesV2(TiledKernelV2):
    """Each distinct physical address gathered once (class: aliasing; before
    conformance/test_aliasing.py only the integer-edge cases of issue #19 drew two entries on
    one row): a host-side compaction keeps each lane's entry (a window flat row, a
    compressed slot id) with its repeats, resolves it to its physical row (pool storage,
    block, row) and keeps each address for the first entry (window lanes first) that
    resolved to it, so a second compressed slot naming the same row through another table
    column, or a lane of the other pool when both pools are one storage, is dropped (made an
    empty lane). Exposed by two live lanes of one token with different entries that resolve
    to one physical row."""

    bug_class = "duplicates-once"  # attention.counterfactuals names it

    def run(self, inputs, dev):
        block, n = inputs.BLOCK, inputs.index_topk
        w = inputs.window_swa_indices.to(torch.int64)
        c = inputs.idx_topk[:, :n].to(torch.int64)
        live_w = self.classify_window(w)
        live_c = self.classify_cmp(c, self.cmp_bound(inputs.position_ids.to(torch.int64)[:, 0],
                                                     inputs.compress_ratio))
        slot = torch.where(live_c, c, 0)
        blk = self.cmp_block(inputs, inputs.cmp_block_table.to(torch.int64),
                             inputs.batch_of_token, slot)
        # a pool's identity is its storage: one tensor passed as both pools is one pool
        same = inputs.cmp_kv.data_ptr() == inputs.ori_kv.data_ptr()
        address = torch.cat([w, (0 if same else 2**40) + blk * block + slot % block], dim=1)
        entry = torch.cat([2 * w, 2 * c + 1], dim=1)          # window row or compressed slot
        live = torch.cat([live_w, live_c], dim=1)
        lanes = address.shape[1]
        lane = torch.arange(lanes).expand_as(address)
        address = torch.where(live, address, -1 - lane)       # a dead lane is its own address
        order = torch.argsort(address, dim=-1, stable=True)
        sorted_addr = torch.gather(address, -1, order)
        starts = torch.ones_like(sorted_addr, dtype=torch.bool)
        starts[:, 1:] = sorted_addr[:, 1:] != sorted_addr[:, :-1]
        first = torch.where(starts, torch.arange(lanes), 0).cummax(dim=-1).values
        owner = torch.empty_like(order).scatter_(-1, order, torch.gather(order, -1, first))
        keep = torch.gather(entry, -1, owner) == entry        # the address's first entry
        win = torch.where(keep[:, :w.shape[1]], w, -1).to(torch.int32)
        idx = inputs.idx_topk.clone()
        idx[:, :n] = torch.where(keep[:, w.shape[1]:], c, -1).to(idx.dtype)
        return super().run(inputs.replace(window_swa_indices=win, idx_topk=idx), dev)


class FiniteEmptySentinelV2(TiledKernelV2):
    """An empty token recognised by a finite "minus infinity" (class: finite sentinel, issue
    #25; sglang's SM120 kernel at -1e20, vLLM's bf16 sparse MLA at -1e30): a token whose
    running max stayed at or below -1e20 returns 0, so a token whose live logits all lie
    below it (inside the domain, down to -2^120) loses its output. Exposed by such a token
    with a sink below its logits
    (conformance.logits.far_below_zero; the extreme value regime only by chance)."""

    bug_class = "finite-sentinel"  # attention.counterfactuals names it

    def finish(self, state, sink):
        o = super().finish(state, sink)
        return torch.where(state[0] <= FINITE_SENTINEL, 0.0, o)


#: short name -> kernel; registered as `mutant-v2-<name>` (kernels/registry.py)
MUTANTS_V2 = {
    "empty-tile-merge": EmptyTileMerge(),
    "window-by-count": WindowByCount(),
    "single-window-page": SingleWindowPage(),
    "single-block-token-mix": SingleBlockTokenMix(),
    "window-tail-dropped": WindowTailDropped(),
    "ignored-reads-row-zero": IgnoredReadsRowZero(),
    "block-flag-columns": BlockFlagColumns(),
    "last-block-not-merged": LastBlockNotMerged(),
    "token-tile-remainder": TokenTileRemainder(),
    "overlay-offset": OverlayOffset(),
    "identity-block-table": IdentityBlockTable(),
    "cmp-tail-cap": CmpTailCap(),
    "page-run-window": PageRunWindow(),
    "first-head-of-tile": FirstHeadOfTile(),
    "cut-fp32": CutFp32(),
    "cut-int32-overflow": CutInt32Overflow(),
    "cmp-column-12bit": CmpColumn12Bit(),
    "cmp-block-id-16": CmpBlockId16(),
    "window-row-16bit": WindowRow16Bit(),
    "token-grid-limit": TokenGridLimit(),
    "head-grid-limit": HeadGridLimit(),
    "distinct-addresses": DistinctAddressesV2(),
    "finite-empty-sentinel": FiniteEmptySentinelV2(),
}
