"""FlashMLA's sparse attention under the suite: an adapter from the contract to
`flash_mla.flash_mla_sparse_fwd`, the prebuilt sparse kernel of package `sgl-flash-mla`
1.0.0 (MIT; module `flash_mla`; docs/findings/flashmla.md).

What the wheel offers (read from its `flash_mla/flash_mla_interface.py` and the checks
compiled into its extensions):

    flash_mla_sparse_fwd(q [s_q, h_q, d_qk] bf16, kv [s_kv, h_kv, d_qk] bf16,
                         indices [s_q, h_kv, topk] int32, sm_scale: float, d_v=512,
                         attn_sink=[h_q] fp32 | None, topk_length=[s_q] int32 | None,
                         use_legacy=False, return_log2_lse=None) -> (out, max_logits, lse)

`d_qk` is 512 or 576 on the legacy (SM90) kernels and 512 on the current (SM100) ones;
`d_v` is 512 and a row is both key and value (`out` reads `kv[..., :d_v]`), so the
contract's `D = 512` maps onto `d_qk = d_v = 512` directly, without padding. `h_q` is 64
or 128 and `h_kv` 1. An index `< 0` or `>= s_kv` is invalid (ignored); with
`topk_length`, token `i` attends only `indices[i, :, :topk_length[i]]`. The sink scales the
output by `exp(lse) / (exp(lse) + exp(attn_sink))`. The SM90 kernel (`use_legacy=True`, the
only one built for Hopper) walks indices in blocks of 64, two blocks per step, and asserts
`topk % 128 == 0`.

The translation (`translate`, pure torch, tested on CPU in tests/test_flashmla.py):

- tokens flatten as `t = b*S + s`: `q [B, S, H, D] -> [B*S, H, D]`;
- ONE flat KV: the window pool, then the compressed pool, each flattened to rows:
  `kv = cat(ori_kv.reshape(-1, D), cmp_kv.reshape(-1, D))[:, None, :]`; window slot `w` of
  batch `b` is row `ori_block_table[b, w // BLOCK] * BLOCK + w % BLOCK`, compressed slot `c`
  row `N_ori*BLOCK + cmp_block_table[b, c // BLOCK] * BLOCK + c % BLOCK`;
- per token, its live entries (contract section 3, from the derived lengths) first, in
  index-row order, and their count as `topk_length`; the dead entries behind them, still
  pointing at the rows they would address when that address is inside the flat KV (so a
  kernel that reads past `topk_length` reads rows the suite poisons), `-1` where an entry
  addresses nothing (a negative entry, a block-table column past the table, a block id
  outside its pool); `-1` padding up to a multiple of 128 (`TOPK_ALIGN`);
- `attn_sink` and `softmax_scale` unchanged.

The kernel itself decides everything else: which entries count (through `topk_length`),
the softmax, the sink, the empty token. The adapter's `.contiguous()` copies take the
suite's strided layouts away from the kernel (it needs a contiguous last dimension and 16 B
alignment anyway).

Variants, for separating findings (same preconditions, reachable as
`--kernel=sparse_attn_conformance.kernels.adapters.flashmla:NAME`):
`sparse_attn_no_topk_length` (no `topk_length`, every
dead entry `-1`: the kernel's other compiled instantiation, which masks by index only) and
`sparse_attn_positive_scale` (a non-positive scale folded into `q`: `-s * <-q, k>` for a
negative `s`, `q = 0` and scale 1 for zero, both exact).
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, Preconditions, live_mask, validate

#: The module the wheel `sgl-flash-mla` installs.
MODULE = "flash_mla"
PACKAGE = "sgl-flash-mla==1.0.0"
#: The SM90 kernel asserts `topk % (2 * B_TOPK) == 0` with `B_TOPK = 64` (it walks two
#: 64-entry blocks per step); the SM100 kernels check `topk % B_TOPK` (not read here).
TOPK_ALIGN = 128
#: Head dims the kernel takes: `d_qk = d_v = 512` (576 is `d_qk` with 64 RoPE dims, not a
#: contract shape: the contract's row is both key and value).
D_KERNEL = 512
#: Where the kernel runs (a test points it at the CPU with a stand-in for the package).
DEVICE = "cuda"


class FlashMLAUnavailable(RuntimeError):
    """FlashMLA cannot run here (no package, no CUDA GPU, an unsupported GPU)."""


class Translated(NamedTuple):
    """`flash_mla_sparse_fwd`'s arguments for one contract call (CPU tensors)."""

    q: torch.Tensor            # [B*S, H, D] bf16
    kv: torch.Tensor           # [(N_ori + N_cmp) * BLOCK, 1, D] bf16
    indices: torch.Tensor      # [B*S, 1, TOPK padded to TOPK_ALIGN] int32
    topk_length: torch.Tensor | None  # [B*S] int32: live entries per token
    attn_sink: torch.Tensor    # [H] fp32
    scale: float


def flat_rows(inputs: Inputs) -> torch.Tensor:
    """Per index entry, the row of the flat KV it addresses, `[B, S, TOPK]` int64, or -1
    where it addresses nothing (whether it is live or not)."""
    win, block = inputs.window_size, inputs.BLOCK
    n_ori, n_cmp = inputs.ori_kv.shape[0], inputs.cmp_kv.shape[0]
    e = inputs.topk_idxs.to(torch.int64)
    B = inputs.B
    bidx = torch.arange(B)[:, None, None].expand_as(e)

    ori_bt = inputs.ori_block_table.to(torch.int64)
    in_win = (e >= 0) & (e < win)
    w = torch.where(in_win, e, 0)
    ori_col = (w // block).clamp(max=ori_bt.shape[1] - 1)  # always in range for e < WIN
    ori_blk = ori_bt[bidx, ori_col]
    ori_ok = in_win & (ori_blk >= 0) & (ori_blk < n_ori)
    ori_row = ori_blk * block + w % block

    cmp_bt = inputs.cmp_block_table.to(torch.int64)
    in_cmp = e >= win
    c = torch.where(in_cmp, e - win, 0)
    cmp_col = c // block
    col_ok = cmp_col < cmp_bt.shape[1]
    cmp_blk = cmp_bt[bidx, cmp_col.clamp(max=cmp_bt.shape[1] - 1)]
    cmp_ok = in_cmp & col_ok & (cmp_blk >= 0) & (cmp_blk < n_cmp)
    cmp_row = n_ori * block + cmp_blk * block + c % block

    rows = torch.full_like(e, -1)
    rows = torch.where(ori_ok, ori_row, rows)
    return torch.where(cmp_ok, cmp_row, rows)


def translate(inputs: Inputs, *, dead: str = "address", topk_length: bool = True,
              positive_scale: bool = False) -> Translated:
    """The contract call `inputs` as `flash_mla_sparse_fwd`'s arguments (see the module
    docstring). `dead="address"` keeps dead entries' addresses behind `topk_length`;
    `dead="invalid"` makes them -1. `topk_length=False` passes none (then dead entries
    must be invalid). `positive_scale` folds a non-positive scale into `q`."""
    if dead not in ("address", "invalid"):
        raise ValueError(f"dead: expected 'address' or 'invalid', got {dead!r}")
    if not topk_length and dead != "invalid":
        raise ValueError("without topk_length every dead entry must be invalid (dead='invalid')")
    B, S, H, D = inputs.B, inputs.S, inputs.H, inputs.D
    T, topk = B * S, inputs.TOPK
    n_rows = (inputs.ori_kv.shape[0] + inputs.cmp_kv.shape[0]) * inputs.BLOCK
    if n_rows >= 2**31:
        raise ValueError(f"flat KV of {n_rows} rows: int32 indices address at most 2^31 - 1")

    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, inputs.window_size)
    rows = flat_rows(inputs)
    rows = torch.where(live, rows, rows if dead == "address" else torch.full_like(rows, -1))
    # live entries first, each group in index-row order (a stable sort on "is dead")
    order = torch.sort((~live).to(torch.int8), dim=-1, stable=True).indices
    rows = torch.gather(rows, -1, order).reshape(T, topk)
    padded = -(-topk // TOPK_ALIGN) * TOPK_ALIGN
    indices = torch.full((T, 1, padded), -1, dtype=torch.int32)
    indices[:, 0, :topk] = rows.to(torch.int32)

    q = inputs.q.reshape(T, H, D).contiguous()
    scale = float(inputs.softmax_scale)
    if positive_scale and scale < 0:
        q, scale = (-q).contiguous(), -scale
    elif positive_scale and scale == 0:
        q, scale = torch.zeros_like(q), 1.0
    kv = torch.cat([inputs.ori_kv.reshape(-1, D), inputs.cmp_kv.reshape(-1, D)])
    kv = kv[:, None, :].contiguous()
    lengths = live.sum(dim=-1).reshape(T).to(torch.int32) if topk_length else None
    return Translated(q=q, kv=kv, indices=indices, topk_length=lengths,
                      attn_sink=inputs.attn_sink.contiguous(), scale=scale)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, object, bool]:
    """`(reason or None, the module, use_legacy)`, once per process."""
    reasons = []
    module = None
    try:
        module = importlib.import_module(MODULE)
    except ModuleNotFoundError:
        reasons.append(f"the package {PACKAGE} (module {MODULE!r}) is not installed")
    except (ImportError, OSError, RuntimeError) as exc:  # present but its extension won't load
        reasons.append(f"module {MODULE!r} does not load with torch {torch.__version__}: "
                       f"{type(exc).__name__}: {exc}")
    if not torch.cuda.is_available():
        reasons.append("no CUDA GPU (torch.cuda.is_available() is False)")
        return "FlashMLA unavailable: " + "; ".join(reasons), None, False
    major, minor = torch.cuda.get_device_capability()
    legacy = major == 9
    if major not in (9, 10):
        reasons.append(f"flash_mla_sparse_fwd runs on SM90a and SM100f only, this GPU "
                       f"({torch.cuda.get_device_name()}) is sm_{major}{minor}")
    elif legacy and module is not None and not module.has_legacy():
        reasons.append("this build has no legacy (SM90) kernels (FLASH_MLA_BUILD_LEGACY=0)")
    if reasons:
        return "FlashMLA unavailable: " + "; ".join(reasons), None, False
    return None, module, legacy


def available() -> str | None:
    """None if FlashMLA can run here, else why not (every missing piece, in words)."""
    return _probe()[0]


def device_call(t: Translated):
    """`(fn, args)`: the translation moved to the GPU once, and `fn(args)` the bare kernel
    call returning its output `[B*S, H, 512]` bf16 on the GPU (the legacy SM90 kernel on
    Hopper, the current one on SM100). For timing the kernel alone."""
    reason, module, legacy = _probe()
    if reason is not None:
        raise FlashMLAUnavailable(reason)
    dev = torch.device(DEVICE)
    args = dict(q=t.q.to(dev), kv=t.kv.to(dev), indices=t.indices.to(dev), sm_scale=t.scale,
                d_v=D_KERNEL, attn_sink=t.attn_sink.to(dev),
                topk_length=None if t.topk_length is None else t.topk_length.to(dev),
                use_legacy=legacy)

    def fn(a: dict) -> torch.Tensor:
        return module.flash_mla_sparse_fwd(**a)[0]

    return fn, args


def run_translated(t: Translated) -> torch.Tensor:
    """Call `flash_mla_sparse_fwd` on a translation; its output on the GPU."""
    fn, args = device_call(t)
    return fn(args)


def _adapter(**options):
    def sparse_attn(**kw) -> torch.Tensor:
        inputs = validate(**kw)
        out = run_translated(translate(inputs, **options))
        return out.reshape(inputs.B, inputs.S, inputs.H, inputs.D).cpu()

    sparse_attn.preconditions = PRECONDITIONS
    sparse_attn.available = available
    return sparse_attn


PRECONDITIONS = Preconditions(
    dims={"H": (64, 128), "D": (D_KERNEL,)},
    note=("FlashMLA's sparse kernel (sgl-flash-mla 1.0.0) through kernels/adapters/flashmla.py: "
          "h_q must be 64 or 128 and d_qk = d_v = 512 (the kernel asserts both). Everything "
          "else is translated: pools flattened into one KV, live entries first with their "
          "count as topk_length, TOPK padded to 128 with -1, tokens flattened b*S + s."))

#: The adapter (registered as `flashmla`): live entries first, `topk_length`, dead entries
#: still addressing their rows.
sparse_attn = _adapter()
#: No `topk_length`; every dead entry -1 (the kernel masks by index validity alone).
sparse_attn_no_topk_length = _adapter(dead="invalid", topk_length=False)
#: As `sparse_attn`, with a negative or zero scale folded into `q` (exact).
sparse_attn_positive_scale = _adapter(positive_scale=True)
