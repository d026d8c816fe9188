"""Calling convention v2 (what upstream kernels take today: hw-native-sys/pypto-lib
`models/deepseek_v4_pro/decode_sparse_attn.py` at 634e77bd, FlashMLA's sparse kernels,
vLLM's): per token, physical window rows, and compressed slot ids cut by the token's
position and the compress ratio (docs/contract.md sections 8-11). Its validator, and its
front end onto the shared reference: what each token attends to (`Inputs.attended`).

Token `t` of a call belongs to batch `b = t // S`. Window lane `k` of token `t` is live iff
`window_swa_indices[t, k] >= 0`, and reads flat row `w` of `ori_kv` (`ori_kv[w // BLOCK,
w % BLOCK]`); compressed lane `j < IDX_TOPK` is live iff `0 <= c < cmp_bound[t]` with
`c = idx_topk[t, j]` and `cmp_bound[t] = (position_ids[t] + 1) // compress_ratio` (no cut
when `compress_ratio` is None), and reads row `c % BLOCK` of block
`cmp_block_table[b, c // BLOCK]`. Everything else is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.contracts import checks, formats
from sparse_attn_conformance.contracts.checks import ContractError, expect, python_int, tensor
from sparse_attn_conformance.contracts.inputs import LaidOut
from sparse_attn_conformance.contracts.preconditions import DIMS, DOMAIN_LIMIT_LOG2, Preconditions

#: The keyword arguments of a kernel call, in contract order (section 8).
ARGUMENTS = (
    "q",
    "ori_kv",
    "window_swa_indices",
    "cmp_kv",
    "cmp_block_table",
    "idx_topk",
    "position_ids",
    "attn_sink",
    "softmax_scale",
    "seq_per_batch",
    "index_topk",
    "compress_ratio",
)

#: The largest value an int32 argument holds; positions and slot ids may reach it.
INT32_MAX = 2**31 - 1

__all__ = ["ARGUMENTS", "DIMS", "DOMAIN_LIMIT_LOG2", "INT32_MAX", "ContractError", "Inputs",
           "Preconditions", "addressed_rows", "cmp_bound", "gather_rows", "live_lanes", "validate",
           "validate_output"]


@dataclass(frozen=True)
class Inputs(LaidOut):
    """One v2 kernel call's arguments (contract section 8). Tensors are CPU tensors; `layout`
    as in v1 (`contracts.inputs.LaidOut`)."""

    q: torch.Tensor
    ori_kv: torch.Tensor
    window_swa_indices: torch.Tensor
    cmp_kv: torch.Tensor
    cmp_block_table: torch.Tensor
    idx_topk: torch.Tensor
    position_ids: torch.Tensor
    attn_sink: torch.Tensor
    softmax_scale: float
    seq_per_batch: int
    index_topk: int
    compress_ratio: int | None
    #: each pool's scale, float32 `[1]`, where the pools are per-tensor FP8 (section 12)
    ori_kv_scale: torch.Tensor | None = None
    cmp_kv_scale: torch.Tensor | None = None
    layout: Mapping[str, str] = field(default_factory=dict, hash=False)

    CONVENTION: ClassVar[str] = "v2"
    ARGUMENTS: ClassVar[tuple[str, ...]] = ARGUMENTS

    def __post_init__(self):
        self._normalise_layout()

    def __repr__(self) -> str:
        return (f"InputsV2(T={self.T}, B={self.B}, S={self.S}, H={self.H}, D={self.D}, "
                f"WIN={self.WIN}, IDX_TOPK={self.IDX_TOPK}, L={self.L}, BLOCK={self.BLOCK}, "
                f"r={self.compress_ratio}{self._laid()})")

    def attended(self) -> Attended:
        """What each token attends to (`attention.Attended`), for the shared reference."""
        rows, live = gather_rows(self)
        return Attended(q=self.q, rows=rows, live=live, attn_sink=self.attn_sink,
                        softmax_scale=self.softmax_scale, token_dims=("t",), d_v=self.D_v)

    @property
    def T(self) -> int:
        return self.q.shape[0]

    @property
    def S(self) -> int:
        return self.seq_per_batch

    @property
    def B(self) -> int:
        return self.T // self.seq_per_batch

    @property
    def H(self) -> int:
        return self.q.shape[1]

    @property
    def D(self) -> int:
        return self.q.shape[2]

    @property
    def BLOCK(self) -> int:
        return self.ori_kv.shape[1]

    @property
    def WIN(self) -> int:
        return self.window_swa_indices.shape[1]

    @property
    def IDX_TOPK(self) -> int:
        return self.index_topk

    @property
    def L(self) -> int:
        """Columns of `idx_topk` (`>= IDX_TOPK`; the rest are never read)."""
        return self.idx_topk.shape[1]

    @property
    def batch_of_token(self) -> torch.Tensor:
        """`[T]` int64: `b = t // S`."""
        return torch.arange(self.T, dtype=torch.int64) // self.seq_per_batch


def cmp_bound(position_ids: torch.Tensor, compress_ratio: int | None) -> torch.Tensor:
    """`[T]` int64: how many compressed entries exist after each token's position,
    `floor((pos + 1) / r)` (section 9), computed in int64 so that a position at the edge of
    int32 does not overflow. Without a ratio (the caller pre-cut the lists) every slot id
    passes: the bound is past any int32."""
    pos = position_ids.reshape(-1).to(torch.int64)
    if compress_ratio is None:
        return torch.full_like(pos, 2**40)
    return torch.div(pos + 1, compress_ratio, rounding_mode="floor")


def live_lanes(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean `[T, WIN]` and `[T, IDX_TOPK]`: the live window and compressed lanes."""
    w = inputs.window_swa_indices.to(torch.int64)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    bound = cmp_bound(inputs.position_ids, inputs.compress_ratio)
    return w >= 0, (c >= 0) & (c < bound[:, None])


def gather_rows(inputs: Inputs, lanes: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of every lane, `[T, WIN + IDX_TOPK, D]` (window lanes first; bf16, or float64
    dequantised from a byte pool: `contracts.formats.values`), and the live
    mask `[T, WIN + IDX_TOPK]`. An ignored lane gets a zero row; its own address is never
    dereferenced (it reads through a safe address, then `where` discards it). `lanes`:
    other live lanes `(window, compressed)` than the contract's (a counterfactual; a lane
    past its pool or table reads inside it, at its last row, column or block)."""
    block = inputs.BLOCK
    live_w, live_c = live_lanes(inputs) if lanes is None else lanes
    w = torch.where(live_w, inputs.window_swa_indices.to(torch.int64), 0)
    w = w.clamp(max=inputs.ori_kv.shape[0] * block - 1)  # a no-op for the contract's lanes
    wrows = formats.read_rows(inputs.ori_kv, w // block, w % block)
    c = torch.where(live_c, inputs.idx_topk[:, :inputs.index_topk].to(torch.int64), 0)
    # index the table before widening it: memory follows the entries a call reads, not
    # the table's size (an expanded [70000, 70000] table would be 39 GB as int64)
    table = inputs.cmp_block_table
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = table[b, (c // block).clamp(max=table.shape[1] - 1)].to(torch.int64)
    blk = torch.where(live_c, blk, 0).clamp(0, inputs.cmp_kv.shape[0] - 1)
    crows = formats.read_rows(inputs.cmp_kv, blk, c % block)
    scale = None  # a per-tensor FP8 pool's scale, per lane (section 12)
    if inputs.ori_kv_scale is not None:
        scale = torch.cat([inputs.pool_scale("ori_kv").expand(wrows.shape[:-1]),
                           inputs.pool_scale("cmp_kv").expand(crows.shape[:-1])], dim=1)
    rows = formats.values(torch.cat([wrows, crows], dim=1), scale)
    live = torch.cat([live_w, live_c], dim=1)
    rows = torch.where(live[..., None], rows, torch.zeros((), dtype=rows.dtype))
    return rows, live


def addressed_rows(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean `[N_ori, BLOCK]` and `[N_cmp, BLOCK]` masks of the pool rows some live lane
    of some token addresses."""
    live_w, live_c = live_lanes(inputs)
    block = inputs.BLOCK
    ori = torch.zeros(inputs.ori_kv.shape[0] * block, dtype=torch.bool)
    ori[inputs.window_swa_indices.to(torch.int64)[live_w]] = True
    cmp = torch.zeros(inputs.cmp_kv.shape[0] * block, dtype=torch.bool)
    c = inputs.idx_topk[:, :inputs.index_topk].to(torch.int64)
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = inputs.cmp_block_table[b[live_c], c[live_c] // block].to(torch.int64)
    cmp[blk * block + c[live_c] % block] = True
    return ori.reshape(-1, block), cmp.reshape(-1, block)


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0])


def validate(**kw) -> Inputs:
    """Check one v2 kernel call's arguments against the contract; return them as `Inputs`."""
    checks.call_arguments(kw, ARGUMENTS)
    q = tensor("q", kw["q"], torch.bfloat16, 3)
    T, H, D = q.shape
    expect(min(T, H, D) >= 1, "q", "shape [T >= 1, H >= 1, D >= 1]", f"shape {tuple(q.shape)}")
    S = python_int("seq_per_batch", kw["seq_per_batch"], 1)
    expect(T % S == 0, "seq_per_batch", f"a divisor of T={T} (T = B * S)", S)
    B = T // S
    idx_topk_n = python_int("index_topk", kw["index_topk"], 0)
    ratio = kw["compress_ratio"]
    expect(ratio is None or (isinstance(ratio, int) and not isinstance(ratio, bool)
                             and ratio >= 1), "compress_ratio",
           "an int >= 1, or None (no cut: the caller pre-cut the compressed lists)", repr(ratio))
    scale = checks.softmax_scale(kw["softmax_scale"])
    ori_kv, cmp_kv, block = checks.pools(kw, D)
    ori_scale, cmp_scale = checks.pool_scales(kw, formats.of_pool(ori_kv))
    win = tensor("window_swa_indices", kw["window_swa_indices"], torch.int32, 2)
    expect(win.shape[0] == T and win.shape[1] >= 1, "window_swa_indices",
           f"shape [T={T}, WIN >= 1]", f"shape {tuple(win.shape)}")
    cmp_bt = tensor("cmp_block_table", kw["cmp_block_table"], torch.int32, 2)
    expect(cmp_bt.shape[0] == B and cmp_bt.shape[1] >= 1, "cmp_block_table",
           f"shape [B={B}, M >= 1]", f"shape {tuple(cmp_bt.shape)}")
    idx = tensor("idx_topk", kw["idx_topk"], torch.int32, 2)
    expect(idx.shape[0] == T and idx.shape[1] >= idx_topk_n, "idx_topk",
           f"shape [T={T}, L >= index_topk={idx_topk_n}]", f"shape {tuple(idx.shape)}")
    pos = tensor("position_ids", kw["position_ids"], torch.int32, 2)
    expect(tuple(pos.shape) == (T, 1), "position_ids", f"shape [T={T}, 1]",
           f"shape {tuple(pos.shape)}")
    expect(bool((pos >= 0).all()), "position_ids", "every position >= 0",
           f"{int(pos.min())} at token {_first_bad(pos < 0)[0]}" if bool((pos < 0).any()) else "")
    sink = checks.attn_sink(kw, H)
    checks.on_cpu(q=q, ori_kv=ori_kv, cmp_kv=cmp_kv)

    # Every live lane must address inside its pool (section 9); ignored lanes may hold
    # anything.
    rows = ori_kv.shape[0] * block
    w = win.to(torch.int64)
    past = w >= rows
    if bool(past.any()):
        t, k = _first_bad(past)
        raise ContractError(f"window_swa_indices[{t}, {k}]: expected a flat row of ori_kv in "
                            f"[0, N_ori * BLOCK = {rows}) or a negative (empty) lane, got "
                            f"{int(w[t, k])}")
    c = idx[:, :idx_topk_n].to(torch.int64)
    live_c = (c >= 0) & (c < cmp_bound(pos, ratio)[:, None])
    cols = c // block
    past = live_c & (cols >= cmp_bt.shape[1])
    if bool(past.any()):
        t, j = _first_bad(past)
        raise ContractError(f"idx_topk[{t}, {j}]: expected a live compressed slot inside "
                            f"cmp_block_table's {cmp_bt.shape[1]} columns (slot < "
                            f"{cmp_bt.shape[1] * block}), got slot {int(c[t, j])} "
                            f"(position {int(pos[t, 0])}, compress_ratio {ratio})")
    b = (torch.arange(T, dtype=torch.int64) // S)[:, None].expand_as(c)
    blk = cmp_bt[b, cols.clamp(0, cmp_bt.shape[1] - 1)].to(torch.int64)
    outside = live_c & ((blk < 0) | (blk >= cmp_kv.shape[0]))
    if bool(outside.any()):
        t, j = _first_bad(outside)
        col = int(cols[t, j])
        raise ContractError(f"cmp_block_table[{int(b[t, j])}, {col}]: expected a block id in "
                            f"[0, {cmp_kv.shape[0]}) for live compressed slot {int(c[t, j])} "
                            f"of token {t}, got {int(blk[t, j])}")
    return Inputs(q=q, ori_kv=ori_kv, window_swa_indices=win, cmp_kv=cmp_kv,
                  cmp_block_table=cmp_bt, idx_topk=idx, position_ids=pos, attn_sink=sink,
                  softmax_scale=scale, seq_per_batch=S, index_topk=idx_topk_n,
                  compress_ratio=ratio, ori_kv_scale=ori_scale, cmp_kv_scale=cmp_scale)


def validate_output(o, inputs: Inputs) -> torch.Tensor:
    """Check a v2 kernel's return value; return it as a CPU fp32 tensor."""
    return checks.output(o, (inputs.T, inputs.H, inputs.D_v), "[T, H, D_v]")
