"""Calling convention v1 (the seed's: `seqused_kv` per batch, lengths derived per token,
one index row read by value), its validator, and its front end onto the shared reference:
what each token attends to (`Inputs.attended`).

Every call into a kernel under test, and every call of the reference, goes through
`validate`: a violation raises `ContractError` naming the argument, what was expected and
what came. Nothing is clamped or dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from sparse_attn_conformance.attention.attended import Attended
from sparse_attn_conformance.contracts import checks, formats
from sparse_attn_conformance.contracts.checks import ContractError, expect, tensor
from sparse_attn_conformance.contracts.inputs import LaidOut
from sparse_attn_conformance.contracts.preconditions import DIMS, DOMAIN_LIMIT_LOG2, Preconditions

#: The keyword arguments of a kernel call, in contract order.
ARGUMENTS = (
    "q",
    "ori_kv",
    "ori_block_table",
    "cmp_kv",
    "cmp_block_table",
    "topk_idxs",
    "attn_sink",
    "seqused_kv",
    "softmax_scale",
    "window_size",
)

__all__ = ["ARGUMENTS", "DIMS", "DOMAIN_LIMIT_LOG2", "ContractError", "Inputs", "Preconditions",
           "addressed_rows", "derived_lengths", "gather_rows", "live_mask", "mark_rows", "validate",
           "validate_output"]


@dataclass(frozen=True)
class Inputs(LaidOut):
    """One kernel call's arguments (contract section 1). Tensors are CPU tensors.

    The tensors stored here are the canonical values. `layout` says how `kwargs()` presents
    each tensor argument in memory (keys from `ARGUMENTS`, values from
    `contracts.layout.KINDS`; an argument not named, or named ``"contiguous"``, is a plain
    contiguous copy). ``"contiguous"`` entries are dropped, so the default, all contiguous,
    is the empty mapping.
    """

    q: torch.Tensor
    ori_kv: torch.Tensor
    ori_block_table: torch.Tensor
    cmp_kv: torch.Tensor
    cmp_block_table: torch.Tensor
    topk_idxs: torch.Tensor
    attn_sink: torch.Tensor
    seqused_kv: torch.Tensor
    softmax_scale: float
    window_size: int
    #: each pool's scale, float32 `[1]`, where the pools are per-tensor FP8 (section 12)
    ori_kv_scale: torch.Tensor | None = None
    cmp_kv_scale: torch.Tensor | None = None
    layout: Mapping[str, str] = field(default_factory=dict, hash=False)

    CONVENTION: ClassVar[str] = "v1"
    ARGUMENTS: ClassVar[tuple[str, ...]] = ARGUMENTS

    def __post_init__(self):
        self._normalise_layout()

    def __repr__(self) -> str:
        return (f"Inputs(B={self.B}, S={self.S}, H={self.H}, D={self.D}, WIN={self.window_size}, "
                f"TOPK={self.TOPK}, BLOCK={self.BLOCK}{self._laid()})")

    def attended(self) -> Attended:
        """What each token attends to (`attention.Attended`), for the shared reference."""
        rows, live = gather_rows(self)
        return Attended(q=self.q, rows=rows, live=live, attn_sink=self.attn_sink,
                        softmax_scale=self.softmax_scale, token_dims=("b", "s"), d_v=self.D_v)

    @property
    def B(self) -> int:
        return self.q.shape[0]

    @property
    def S(self) -> int:
        return self.q.shape[1]

    @property
    def H(self) -> int:
        return self.q.shape[2]

    @property
    def D(self) -> int:
        return self.q.shape[3]

    @property
    def BLOCK(self) -> int:
        return self.ori_kv.shape[1]

    @property
    def TOPK(self) -> int:
        return self.topk_idxs.shape[2]

    @property
    def IDX_TOPK(self) -> int:
        return self.TOPK - self.window_size


def derived_lengths(seqused_kv: torch.Tensor, S: int, window_size: int):
    """Per-token `(seq_used, window_valid, cmp_valid)`, each `[B, S]` int64 (contract section 2)."""
    s = torch.arange(S, dtype=torch.int64)
    seq_used = seqused_kv.to(torch.int64)[:, None] - S + 1 + s[None, :]
    window_valid = torch.clamp(seq_used, min=0).clamp(max=window_size)
    cmp_valid = torch.clamp(seq_used - window_valid, min=0)
    return seq_used, window_valid, cmp_valid


def live_mask(topk_idxs: torch.Tensor, seqused_kv: torch.Tensor, window_size: int):
    """Boolean `[B, S, TOPK]`: which index entries are live (contract section 3)."""
    S = topk_idxs.shape[1]
    _, window_valid, cmp_valid = derived_lengths(seqused_kv, S, window_size)
    e = topk_idxs.to(torch.int64)
    live_window = (e >= 0) & (e < window_valid[..., None])
    live_cmp = (e >= window_size) & (e < window_size + cmp_valid[..., None])
    return live_window | live_cmp


def gather_rows(inputs: Inputs, live: torch.Tensor | None = None,
                slot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows addressed by every index entry, `[B, S, TOPK, D]` (bf16, or float64 dequantised
    from a byte pool: `contracts.formats.values`), and the live mask.

    Ignored entries get a zero row, whatever their address would hold. `live`: another
    live mask than the contract's (a counterfactual: what a kernel with a wrong length
    reads; an entry past its table reads the table's last column). `slot`: another slot
    per entry than its own (a counterfactual's address arithmetic), in the pool its entry
    names.
    """
    win, block = inputs.window_size, inputs.BLOCK
    if live is None:
        live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    e = inputs.topk_idxs.to(torch.int64)
    is_cmp = e >= win
    slot = (torch.where(is_cmp, e - win, e) if slot is None else slot).clamp(min=0)
    safe_slot = torch.where(live, slot, torch.zeros_like(slot))
    col = safe_slot // block
    row = safe_slot % block
    B = inputs.B
    bidx = torch.arange(B)[:, None, None].expand_as(col)
    ori_cols = inputs.ori_block_table.shape[1]
    cmp_cols = inputs.cmp_block_table.shape[1]
    ori_block = inputs.ori_block_table.to(torch.int64)[bidx, col.clamp(max=ori_cols - 1)]
    cmp_block = inputs.cmp_block_table.to(torch.int64)[bidx, col.clamp(max=cmp_cols - 1)]
    # a no-op for the contract's live entries; a counterfactual's may name any block
    ori_block = torch.where(live & ~is_cmp, ori_block, 0).clamp(0, inputs.ori_kv.shape[0] - 1)
    cmp_block = torch.where(live & is_cmp, cmp_block, 0).clamp(0, inputs.cmp_kv.shape[0] - 1)
    ori_rows = formats.read_rows(inputs.ori_kv, ori_block, row)
    cmp_rows = formats.read_rows(inputs.cmp_kv, cmp_block, row)
    scale = None  # a per-tensor FP8 pool's scale, per entry (section 12)
    if inputs.ori_kv_scale is not None:
        scale = torch.where(is_cmp, inputs.pool_scale("cmp_kv"), inputs.pool_scale("ori_kv"))
    rows = formats.values(torch.where(is_cmp[..., None], cmp_rows, ori_rows), scale)
    rows = torch.where(live[..., None], rows, torch.zeros((), dtype=rows.dtype))
    return rows, live


def mark_rows(mask: torch.Tensor, table: torch.Tensor, b, slots: torch.Tensor,
              block: int) -> None:
    """Set `mask[table[b, slot // block], slot % block]` for each `(b, slot)` pair (`b` an
    int or a tensor like `slots`). A slot whose column is past the table or whose block id
    is outside the pool is skipped: garbage in a column no live slot uses addresses
    nothing."""
    b = torch.as_tensor(b).expand_as(slots)
    cols = slots // block
    inside = cols < table.shape[1]
    b, slots, cols = b[inside], slots[inside], cols[inside]
    ids = table.to(torch.int64)[b, cols]
    ok = (ids >= 0) & (ids < mask.shape[0])
    mask.view(-1)[ids[ok] * block + slots[ok] % block] = True


def addressed_rows(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean `[N, BLOCK]` masks of the window and compressed pool rows that some live
    entry of some token addresses."""
    win, block = inputs.window_size, inputs.BLOCK
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    e = inputs.topk_idxs.to(torch.int64)
    b = torch.arange(inputs.B)[:, None, None].expand_as(e)
    ori = torch.zeros(inputs.ori_kv.shape[:2], dtype=torch.bool)
    cmp = torch.zeros(inputs.cmp_kv.shape[:2], dtype=torch.bool)
    w, c = live & (e < win), live & (e >= win)
    mark_rows(ori, inputs.ori_block_table, b[w], e[w], block)
    mark_rows(cmp, inputs.cmp_block_table, b[c], e[c] - win, block)
    return ori, cmp


def validate(**kw) -> Inputs:
    """Check one kernel call's arguments against the contract; return them as `Inputs`."""
    checks.call_arguments(kw, ARGUMENTS)
    q = tensor("q", kw["q"], torch.bfloat16, 4)
    B, S, H, D = q.shape
    expect(min(B, S, H, D) >= 1, "q", "all of B, S, H, D >= 1", f"shape {tuple(q.shape)}")
    win = checks.python_int("window_size", kw["window_size"], 1)
    scale = checks.softmax_scale(kw["softmax_scale"])
    ori_kv, cmp_kv, block = checks.pools(kw, D)
    ori_scale, cmp_scale = checks.pool_scales(kw, formats.of_pool(ori_kv))

    ori_bt = tensor("ori_block_table", kw["ori_block_table"], torch.int32, 2)
    n_win_blocks = -(-win // block)
    expect(tuple(ori_bt.shape) == (B, n_win_blocks), "ori_block_table",
            f"shape [B={B}, ceil(WIN/BLOCK)={n_win_blocks}]", f"shape {tuple(ori_bt.shape)}")
    cmp_bt = tensor("cmp_block_table", kw["cmp_block_table"], torch.int32, 2)
    expect(cmp_bt.shape[0] == B and cmp_bt.shape[1] >= 1, "cmp_block_table",
            f"shape [B={B}, M >= 1]", f"shape {tuple(cmp_bt.shape)}")

    topk = tensor("topk_idxs", kw["topk_idxs"], torch.int32, 3)
    expect(topk.shape[0] == B and topk.shape[1] == S and topk.shape[2] >= win, "topk_idxs",
            f"shape [B={B}, S={S}, TOPK = WIN + IDX_TOPK >= WIN={win}]",
            f"shape {tuple(topk.shape)}")
    sink = checks.attn_sink(kw, H)
    seqused = tensor("seqused_kv", kw["seqused_kv"], torch.int32, 1)
    expect(tuple(seqused.shape) == (B,), "seqused_kv", f"shape [B={B}] (one length per batch)",
            f"shape {tuple(seqused.shape)}")
    expect(bool((seqused >= 0).all()), "seqused_kv", "every entry >= 0", seqused.tolist())
    checks.on_cpu(q=q, ori_kv=ori_kv, cmp_kv=cmp_kv)

    # Every slot a token may read must be addressed inside its pool. The batch's last token
    # has the largest derived lengths, so checking it covers all tokens.
    _, window_valid, cmp_valid = derived_lengths(seqused, S, win)
    for b in range(B):
        wv, cv = int(window_valid[b, -1]), int(cmp_valid[b, -1])
        used = ori_bt[b, : -(-wv // block)]
        expect(bool(((used >= 0) & (used < ori_kv.shape[0])).all()),
                f"ori_block_table[{b}]",
                f"block ids in [0, {ori_kv.shape[0]}) for the {wv} live window slots",
                used.tolist())
        n_cmp_blocks = -(-cv // block)
        expect(n_cmp_blocks <= cmp_bt.shape[1], f"cmp_block_table[{b}]",
                f"at least ceil(cmp_valid/BLOCK) = {n_cmp_blocks} columns for cmp_valid={cv} "
                f"(seqused_kv[{b}]={int(seqused[b])}, S={S}, WIN={win})",
                f"{cmp_bt.shape[1]} columns")
        used = cmp_bt[b, :n_cmp_blocks]
        expect(bool(((used >= 0) & (used < cmp_kv.shape[0])).all()),
                f"cmp_block_table[{b}]",
                f"block ids in [0, {cmp_kv.shape[0]}) for the {cv} live compressed slots",
                used.tolist())
    return Inputs(q=q, ori_kv=ori_kv, ori_block_table=ori_bt, cmp_kv=cmp_kv,
                  cmp_block_table=cmp_bt, topk_idxs=topk, attn_sink=sink, seqused_kv=seqused,
                  softmax_scale=scale, window_size=win, ori_kv_scale=ori_scale,
                  cmp_kv_scale=cmp_scale)


def validate_output(o, inputs: Inputs) -> torch.Tensor:
    """Check a kernel's return value; return it as a CPU fp32 tensor."""
    return checks.output(o, (inputs.B, inputs.S, inputs.H, inputs.D_v), "[B, S, H, D_v]")
