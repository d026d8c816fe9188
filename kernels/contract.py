"""The calling convention of a sparse decode attention kernel, and its validator.

Every call into a kernel under test, and every call of the reference, goes through
`validate`: a violation raises `ContractError` naming the argument, what was expected and
what came. Nothing is clamped or dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch

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

#: Configuration dimensions a kernel may restrict with `Preconditions.dims`.
DIMS = ("B", "S", "H", "D", "WIN", "IDX_TOPK", "BLOCK")

#: The numerical domain (docs/contract.md section 5): a kernel must be exact when every
#: live key's `sum_d |q_d k_d| * max(1, |softmax_scale|)` and every `|v| * TOPK` is at most
#: 2^DOMAIN_LIMIT_LOG2, well inside fp32 (2^128), so every logit and partial sum is
#: representable in fp32 whatever the summation order.
DOMAIN_LIMIT_LOG2 = 120


class ContractError(ValueError):
    """An input that breaks the calling convention of docs/contract.md."""


@dataclass(frozen=True)
class Preconditions:
    """What a kernel requires beyond the contract; the strategies draw only inputs meeting it.

    canonical_rows: index rows only as the model writes them (window part `arange`, the
        compressed entries first and all live for the token, `-1` tail), shared by the
        batch's tokens.
    finite_sinks: no `+inf`/`-inf` sinks.
    dims: allowed values per configuration dimension (keys from `DIMS`).
    max_seqused: the largest `seqused_kv` the kernel takes (a bound on context length;
        lengths the model writes never exceed `WIN + IDX_TOPK`).
    shapes: whole shapes the kernel also takes outside `dims` (each a mapping from some
        keys of `DIMS` to one value), such as the model's attention shape for a kernel
        compiled per shape. The general strategies never draw them (one may cost minutes
        in a simulator); a property that asks for such a shape (`accepts`) gets it.
    note: why, in the kernel author's words; shown in reports.
    """

    canonical_rows: bool = False
    finite_sinks: bool = False
    dims: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    max_seqused: int | None = None
    shapes: tuple[Mapping[str, int], ...] = ()
    note: str = ""

    def __post_init__(self):
        for key, values in self.dims.items():
            if key not in DIMS:
                raise ContractError(f"Preconditions.dims: expected keys among {DIMS}, got {key!r}")
            if not values or not all(isinstance(v, int) for v in values):
                raise ContractError(
                    f"Preconditions.dims[{key!r}]: expected a non-empty tuple of ints, "
                    f"got {values!r}"
                )
        for shape in self.shapes:
            if not isinstance(shape, Mapping) or not shape or any(
                    k not in DIMS or not isinstance(v, int) for k, v in shape.items()):
                raise ContractError(f"Preconditions.shapes: expected mappings from keys among "
                                    f"{DIMS} to ints, got {shape!r}")
        if self.max_seqused is not None and (
                not isinstance(self.max_seqused, int) or self.max_seqused < 0):
            raise ContractError(f"Preconditions.max_seqused: expected None or an int >= 0, "
                                f"got {self.max_seqused!r}")

    def accepts(self, dims: Mapping[str, int]) -> bool:
        """Whether a configuration fixing `dims` (other dimensions free) meets these
        preconditions: every value within `dims`, or the values one of `shapes` names taken
        from it and the rest within `dims`."""
        def within(keys) -> bool:
            return all(k not in self.dims or dims[k] in self.dims[k] for k in keys)

        if within(dims):
            return True
        return any(all(dims.get(k) == v for k, v in shape.items())
                   and within(k for k in dims if k not in shape) for shape in self.shapes)

    def unexercised(self) -> list[str]:
        """The parts of the contract these preconditions leave out, in words."""
        out = []
        if self.canonical_rows:
            out.append("adversarial index rows (pads, shuffles, duplicates, garbage, boundaries)")
            out.append("index-row permutation invariance")
        if self.finite_sinks:
            out.append("infinite sinks")
        for key, values in self.dims.items():
            out.append(f"{key} outside {tuple(values)}")
        if self.max_seqused is not None:
            out.append(f"seqused_kv above {self.max_seqused} (long context)")
        return out


@dataclass(frozen=True)
class Inputs:
    """One kernel call's arguments (contract section 1). Tensors are CPU tensors.

    The tensors stored here are the canonical values. `layout` says how `kwargs()` presents
    each tensor argument in memory (keys from `ARGUMENTS`, values from
    `kernels.layout.KINDS`; an argument not named, or named ``"contiguous"``, is a plain
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
    layout: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        from kernels.layout import KINDS, why_not

        layout = self.layout
        if not isinstance(layout, Mapping):
            raise ContractError(f"Inputs.layout: expected a mapping from argument name to "
                                f"layout kind, got {type(layout).__name__}")
        tensors = tuple(a for a in ARGUMENTS if isinstance(getattr(self, a), torch.Tensor))
        for key, kind in layout.items():
            if key not in tensors:
                raise ContractError(f"Inputs.layout: expected keys among the tensor arguments "
                                    f"{tensors}, got {key!r}")
            if kind not in KINDS:
                raise ContractError(f"Inputs.layout[{key!r}]: expected a layout kind among "
                                    f"{KINDS}, got {kind!r}")
            reason = why_not(getattr(self, key), kind)
            if reason is not None:
                raise ContractError(f"Inputs.layout[{key!r}]: expected a kind that applies to "
                                    f"{key}, got {kind!r}: {reason}")
        normal = {a: layout[a] for a in ARGUMENTS if layout.get(a, "contiguous") != "contiguous"}
        object.__setattr__(self, "layout", normal)

    def _repr_pretty_(self, p, cycle) -> None:  # Hypothesis prints draws with this
        p.text(repr(self))

    def __repr__(self) -> str:
        laid = "".join(f", {a}: {k}" for a, k in self.layout.items())
        return (f"Inputs(B={self.B}, S={self.S}, H={self.H}, D={self.D}, WIN={self.window_size}, "
                f"TOPK={self.TOPK}, BLOCK={self.BLOCK}"
                f"{', non-contiguous' + laid if laid else ''})")

    def kwargs(self) -> dict:
        """Keyword arguments for a kernel call (exactly `ARGUMENTS`). Tensors are fresh
        buffers of their own, presented in `layout` (`kernels.layout.present`), so a kernel
        that writes into an argument changes nothing here."""
        from kernels.layout import present

        out = {}
        for name in ARGUMENTS:
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = present(value, self.layout.get(name, "contiguous"), name=name)
            out[name] = value
        return out

    def replace(self, **changes) -> Inputs:
        """A copy with `changes`. Without a new `layout` the layout is kept, except for an
        entry whose kind no longer applies to its replaced tensor (a new shape, or values no
        longer constant for ``expanded``): that argument becomes contiguous."""
        if "layout" not in changes and self.layout:
            from kernels.layout import why_not

            changes["layout"] = {
                a: k for a, k in self.layout.items()
                if a not in changes or not isinstance(changes[a], torch.Tensor)
                or why_not(changes[a], k) is None}
        return replace(self, **changes)

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


def _expect(cond: bool, name: str, expected: str, got) -> None:
    if not cond:
        raise ContractError(f"{name}: expected {expected}, got {got}")


def _tensor(name: str, value, dtype: torch.dtype, ndim: int) -> torch.Tensor:
    _expect(isinstance(value, torch.Tensor), name, "a torch.Tensor", type(value).__name__)
    _expect(value.dtype == dtype, name, f"dtype {dtype}", value.dtype)
    _expect(value.dim() == ndim, name, f"{ndim} dimensions", f"shape {tuple(value.shape)}")
    return value


def validate(**kw) -> Inputs:
    """Check one kernel call's arguments against the contract; return them as `Inputs`."""
    missing = [a for a in ARGUMENTS if a not in kw]
    extra = [a for a in kw if a not in ARGUMENTS]
    _expect(not missing and not extra, "arguments", f"exactly {ARGUMENTS}",
            f"missing {missing}, unexpected {extra}")
    q = _tensor("q", kw["q"], torch.bfloat16, 4)
    B, S, H, D = q.shape
    _expect(min(B, S, H, D) >= 1, "q", "all of B, S, H, D >= 1", f"shape {tuple(q.shape)}")

    win = kw["window_size"]
    _expect(isinstance(win, int) and not isinstance(win, bool) and win >= 1,
            "window_size", "an int >= 1", repr(win))
    scale = kw["softmax_scale"]
    _expect(isinstance(scale, (float, int)) and not isinstance(scale, bool)
            and math.isfinite(scale), "softmax_scale", "a finite python float", repr(scale))

    ori_kv = _tensor("ori_kv", kw["ori_kv"], torch.bfloat16, 3)
    block = ori_kv.shape[1]
    _expect(ori_kv.shape[0] >= 1 and block >= 1 and ori_kv.shape[2] == D, "ori_kv",
            f"shape [N_ori >= 1, BLOCK >= 1, D={D}]", f"shape {tuple(ori_kv.shape)}")
    cmp_kv = _tensor("cmp_kv", kw["cmp_kv"], torch.bfloat16, 3)
    _expect(cmp_kv.shape[0] >= 1 and cmp_kv.shape[1:] == (block, D), "cmp_kv",
            f"shape [N_cmp >= 1, BLOCK={block}, D={D}]", f"shape {tuple(cmp_kv.shape)}")

    ori_bt = _tensor("ori_block_table", kw["ori_block_table"], torch.int32, 2)
    n_win_blocks = -(-win // block)
    _expect(tuple(ori_bt.shape) == (B, n_win_blocks), "ori_block_table",
            f"shape [B={B}, ceil(WIN/BLOCK)={n_win_blocks}]", f"shape {tuple(ori_bt.shape)}")
    cmp_bt = _tensor("cmp_block_table", kw["cmp_block_table"], torch.int32, 2)
    _expect(cmp_bt.shape[0] == B and cmp_bt.shape[1] >= 1, "cmp_block_table",
            f"shape [B={B}, M >= 1]", f"shape {tuple(cmp_bt.shape)}")

    topk = _tensor("topk_idxs", kw["topk_idxs"], torch.int32, 3)
    _expect(topk.shape[0] == B and topk.shape[1] == S and topk.shape[2] >= win, "topk_idxs",
            f"shape [B={B}, S={S}, TOPK = WIN + IDX_TOPK >= WIN={win}]",
            f"shape {tuple(topk.shape)}")
    sink = _tensor("attn_sink", kw["attn_sink"], torch.float32, 1)
    _expect(tuple(sink.shape) == (H,), "attn_sink", f"shape [H={H}]", f"shape {tuple(sink.shape)}")
    _expect(not torch.isnan(sink).any().item(), "attn_sink", "no NaN (+inf/-inf are allowed)",
            sink.tolist())
    seqused = _tensor("seqused_kv", kw["seqused_kv"], torch.int32, 1)
    _expect(tuple(seqused.shape) == (B,), "seqused_kv", f"shape [B={B}] (one length per batch)",
            f"shape {tuple(seqused.shape)}")
    _expect(bool((seqused >= 0).all()), "seqused_kv", "every entry >= 0", seqused.tolist())
    for name, t in (("q", q), ("ori_kv", ori_kv), ("cmp_kv", cmp_kv)):
        _expect(t.device.type == "cpu", name, "a CPU tensor", t.device)

    # Every slot a token may read must be addressed inside its pool. The batch's last token
    # has the largest derived lengths, so checking it covers all tokens.
    _, window_valid, cmp_valid = derived_lengths(seqused, S, win)
    for b in range(B):
        wv, cv = int(window_valid[b, -1]), int(cmp_valid[b, -1])
        used = ori_bt[b, : -(-wv // block)]
        _expect(bool(((used >= 0) & (used < ori_kv.shape[0])).all()),
                f"ori_block_table[{b}]",
                f"block ids in [0, {ori_kv.shape[0]}) for the {wv} live window slots",
                used.tolist())
        n_cmp_blocks = -(-cv // block)
        _expect(n_cmp_blocks <= cmp_bt.shape[1], f"cmp_block_table[{b}]",
                f"at least ceil(cmp_valid/BLOCK) = {n_cmp_blocks} columns for cmp_valid={cv} "
                f"(seqused_kv[{b}]={int(seqused[b])}, S={S}, WIN={win})",
                f"{cmp_bt.shape[1]} columns")
        used = cmp_bt[b, :n_cmp_blocks]
        _expect(bool(((used >= 0) & (used < cmp_kv.shape[0])).all()),
                f"cmp_block_table[{b}]",
                f"block ids in [0, {cmp_kv.shape[0]}) for the {cv} live compressed slots",
                used.tolist())
    return Inputs(q=q, ori_kv=ori_kv, ori_block_table=ori_bt, cmp_kv=cmp_kv,
                  cmp_block_table=cmp_bt, topk_idxs=topk, attn_sink=sink, seqused_kv=seqused,
                  softmax_scale=float(scale), window_size=win)


def validate_output(o, inputs: Inputs) -> torch.Tensor:
    """Check a kernel's return value; return it as a CPU fp32 tensor."""
    shape = (inputs.B, inputs.S, inputs.H, inputs.D)
    _expect(isinstance(o, torch.Tensor), "kernel output", "a torch.Tensor", type(o).__name__)
    _expect(tuple(o.shape) == shape, "kernel output", f"shape {list(shape)} ([B, S, H, D])",
            f"shape {list(o.shape)}")
    _expect(o.is_floating_point(), "kernel output", "a floating dtype", o.dtype)
    return o.detach().to("cpu", torch.float32)
