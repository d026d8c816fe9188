"""FlashMLA's FP8 sparse decode under the suite, calling convention v2 (contracts/v2.py) on
the suite's FP8 cache bytes (contracts/formats.py, docs/contract.md section 12): an
adapter from the contract to `flash_mla.flash_mla_with_kvcache` of the wheel
`sgl-flash-mla` 1.0.0 (MIT; module `flash_mla`; docs/findings/flashmla.md, section "FP8
sparse decode"). Not registered in the catalogue; reachable as

    # fp8_ds_v4 (V4), then fp8_ds_mla (V3.2)
    pytest conformance --kernel=sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_v4
    pytest conformance --kernel=sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_v32

NOT RUN ON A GPU: the translation is tested on the CPU against an emulation of FlashMLA's
documented semantics (tests/test_flashmla_fp8.py); the kernel itself has not been called.

What the wheel offers (read from its `flash_mla/flash_mla_interface.py`, its `_loader.py`
and the checks compiled into `_C_legacy.abi3.so`; upstream deepseek-ai/FlashMLA's
`csrc/api/sparse_decode.h` for the same API before upstream dropped these formats):

    sched, _ = get_mla_metadata()          # an empty FlashMLASchedMeta, filled on first call
    out, lse = flash_mla_with_kvcache(
        q [b, s_q, h_q, d_qk] bf16, k_cache [num_blocks, page_block_size, 1, bytes] uint8,
        block_table=None, cache_seqlens=None, head_dim_v=512, tile_scheduler_metadata=sched,
        softmax_scale=s, is_fp8_kvcache=True, indices [b, s_q, topk] int32,
        attn_sink [h_q] fp32 | None, extra_k_cache | None, extra_indices_in_kvcache
        [b, s_q, extra_topk] | None, topk_length [b] | None, extra_topk_length [b] | None,
        use_legacy=..., kv_format="V32" | "V4" | ...)
    -> out [b, s_q, h_q, 512] bf16, lse [b, h_q, s_q] fp32 (natural log, no sink)

- The wheel has two extensions. Its current kernels (`use_legacy=False`, SM100 only) read
  only the V4.1 caches (528 or 288 bytes per token), which are not contract formats. The
  V3.2 cache (656 bytes, d_qk = 576: the suite's fp8_ds_mla) and the V4 "MODEL1" cache
  (584 bytes, d_qk = 512: the suite's fp8_ds_v4) live in the frozen legacy extension,
  `use_legacy=True`, on SM90a (Hopper) and SM100f. `kv_format` is a hint the legacy op
  checks against the format it detects from the row size ("V32", "V4"); the adapter
  passes it, so a mismatch fails loudly.
- An index is `page * page_block_size + row` into its cache; only exactly `-1` is invalid
  (the decode kernel makes no bounds check: any other out-of-range index is an illegal
  address). `topk` must be a multiple of the kernel's index block (`B_TOPK = 64` on SM90;
  "a multiple of %d when the extra KV cache is used" for the extra cache, value not read),
  so the adapter pads to 128 (`TOPK_ALIGN`). `topk_length` is per batch (`[b]`) and "V3.2
  does not support dynamic topk length" nor an extra cache.
- `h_q` is 64 or 128, `h_kv` 1, `d_v` 512; a page must be contiguous
  (`k_cache.stride(1) == bytes`), and the SM100 kernels want `k_cache.stride(0)` a multiple
  of their TMA row (576 for V4: "Padding might be necessary"). The suite's pools are drawn
  with BLOCK free; FlashMLA's tests and callers use page_block_size 64 and a compiled check
  "Currently page_block_size must be 64" is in the extension, so the adapter declares
  BLOCK = 64 (conservative: which kernels that check guards was not read).
- The sink scales the output by `exp(lse) / (exp(lse) + exp(attn_sink))` and is not in
  `lse`; a query with no valid index gets `o = 0`, `lse = +inf`.

The translation (`translate`, pure torch, tested on CPU):

- every contract token is its own batch entry: `q [T, H, D] -> [T, 1, H, D]` (`b = T`,
  `s_q = 1`), so nothing per batch (the scheduler's `topk_length`) couples tokens;
- the pools' bytes are passed unchanged, each block's `BLOCK * row_bytes` bytes copied into
  a buffer whose block stride is padded to a multiple of `STRIDE_ALIGN[format]` and viewed
  as `[num_blocks, BLOCK, 1, row_bytes]` (fp8_ds_v4 stays split by block: the view is
  FlashMLA's own);
- `sparse_attn_v4`: two caches, `k_cache` = the window pool with the window lanes as
  `indices` (flat row `w` is already `page * BLOCK + row`), `extra_k_cache` = the
  compressed pool with the compressed lanes as `extra_indices_in_kvcache`
  (`cmp_block_table[b, c // BLOCK] * BLOCK + c % BLOCK`);
- `sparse_attn_v32` (and `sparse_attn_v4_one_cache`): one cache, the two pools concatenated
  block by block (window blocks first; a block-level concat keeps the block-split layout
  valid) and the compressed entries offset by `N_ori * BLOCK`, window lanes then
  compressed lanes in one index row;
- live lanes (contract section 9) keep their lane order; every other lane is `-1`; each
  index row is padded with `-1` to a multiple of `TOPK_ALIGN`; no `topk_length`;
- `attn_sink`, `softmax_scale` unchanged; the returned `lse` reshaped to `[T, H]`.

The adapters declare `lse = LSE(base="e", with_sink=False, empty=inf)` and return
`(o [T, H, 512], lse [T, H])`.
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

import torch

from sparse_attn_conformance.contracts import formats
from sparse_attn_conformance.contracts.v2 import Inputs, Preconditions, live_lanes, validate
from sparse_attn_conformance.kernels.interface import LSE

#: The module the wheel `sgl-flash-mla` installs.
MODULE = "flash_mla"
PACKAGE = "sgl-flash-mla==1.0.0"
#: Index rows are padded with -1 to a multiple of this (SM90: `topk % B_TOPK == 0` with
#: `B_TOPK = 64`; with an extra cache a multiple whose value was not read: 128 covers 64
#: and 2 * 64).
TOPK_ALIGN = 128
#: The legacy op's `kv_format` hint per suite format.
KV_FORMAT_HINT = {"fp8_ds_mla": "V32", "fp8_ds_v4": "V4"}
#: A cache's block stride (bytes) is padded to a multiple of this: the SM100 V4 kernels
#: address the block in 576-byte TMA rows (`stride(0) % 576 == 0`).
STRIDE_ALIGN = {"fp8_ds_mla": 1, "fp8_ds_v4": 576}
#: The page size the adapters declare (see the module docstring).
PAGE_BLOCK_SIZE = 64
D_V = 512
#: Where the kernel runs (a test points it at the CPU with a stand-in for the package).
DEVICE = "cuda"

LSE_DECL = LSE(base="e", with_sink=False, empty=float("inf"))


class FlashMLAUnavailable(RuntimeError):
    """FlashMLA cannot run here (no package, no CUDA GPU, an unsupported GPU)."""


class Translated(NamedTuple):
    """`flash_mla_with_kvcache`'s arguments for one contract call (CPU tensors)."""

    q: torch.Tensor                      # [T, 1, H, D] bf16
    k_cache: torch.Tensor                # [N, BLOCK, 1, row_bytes] uint8 (padded stride)
    indices: torch.Tensor                # [T, 1, topk] int32, -1 invalid
    extra_k_cache: torch.Tensor | None   # as k_cache, or None (one cache)
    extra_indices: torch.Tensor | None   # [T, 1, extra_topk] int32, or None
    attn_sink: torch.Tensor              # [H] fp32
    scale: float
    kv_format: str                       # the legacy op's hint: "V32" or "V4"


def kv_cache(pools: list[torch.Tensor], fmt_name: str) -> torch.Tensor:
    """The pools' blocks, in order, as one FlashMLA cache `[N, BLOCK, 1, row_bytes]` uint8:
    each block's bytes unchanged, at a block stride padded to `STRIDE_ALIGN[fmt_name]`."""
    fmt = formats.FORMATS[fmt_name]
    block = pools[0].shape[1]
    width = block * fmt.row_bytes
    stride = -(-width // STRIDE_ALIGN[fmt_name]) * STRIDE_ALIGN[fmt_name]
    blocks = torch.cat([p.reshape(p.shape[0], width) for p in pools])  # a block's bytes in order
    n = blocks.shape[0]
    buf = torch.zeros(max(n, 1), stride, dtype=torch.uint8)
    buf[:n, :width] = blocks
    return buf.as_strided((n, block, 1, fmt.row_bytes), (stride, fmt.row_bytes, fmt.row_bytes, 1))


def _padded(rows: torch.Tensor) -> torch.Tensor:
    """`[T, k]` int64 rows (-1 invalid) as int32 `[T, 1, k']`, `k'` the next multiple of
    `TOPK_ALIGN` (at least one)."""
    T, k = rows.shape
    width = max(1, -(-k // TOPK_ALIGN)) * TOPK_ALIGN
    out = torch.full((T, 1, width), -1, dtype=torch.int32)
    out[:, 0, :k] = rows.to(torch.int32)
    return out


def lane_rows(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per lane, its flat row `page * BLOCK + row` in its own pool (`[T, WIN]` for the window
    pool, `[T, IDX_TOPK]` for the compressed pool, int64), `-1` for every ignored lane."""
    block = inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    w = torch.where(live_w, inputs.window_swa_indices.to(torch.int64), -1)
    c = torch.where(live_c, inputs.idx_topk[:, :inputs.index_topk].to(torch.int64), 0)
    table = inputs.cmp_block_table
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = table[b, (c // block).clamp(max=table.shape[1] - 1)].to(torch.int64)
    crow = torch.where(live_c, blk * block + c % block, -1)
    return w, crow


def translate(inputs: Inputs, *, two_caches: bool) -> Translated:
    """The contract call `inputs` as `flash_mla_with_kvcache`'s arguments (see the module
    docstring). `two_caches`: the window pool as `k_cache` and the compressed pool as
    `extra_k_cache`; else one concatenated cache."""
    name = inputs.kv_format
    if name not in KV_FORMAT_HINT:
        raise ValueError(f"FlashMLA FP8 adapter: expected pools in {tuple(KV_FORMAT_HINT)}, "
                         f"got {name!r}")
    T, H, D, block = inputs.T, inputs.H, inputs.D, inputs.BLOCK
    n_ori, n_cmp = inputs.ori_kv.shape[0], inputs.cmp_kv.shape[0]
    if (n_ori + n_cmp) * block >= 2**31:
        raise ValueError(f"{(n_ori + n_cmp) * block} cache rows: int32 indices address at "
                         f"most 2^31 - 1")
    w, c = lane_rows(inputs)
    q = inputs.q.reshape(T, 1, H, D).to(torch.bfloat16).contiguous()
    common = dict(q=q, attn_sink=inputs.attn_sink.to(torch.float32).contiguous(),
                  scale=float(inputs.softmax_scale), kv_format=KV_FORMAT_HINT[name])
    if two_caches:
        return Translated(k_cache=kv_cache([inputs.ori_kv], name), indices=_padded(w),
                          extra_k_cache=kv_cache([inputs.cmp_kv], name),
                          extra_indices=_padded(c), **common)
    c = torch.where(c >= 0, c + n_ori * block, -1)
    return Translated(k_cache=kv_cache([inputs.ori_kv, inputs.cmp_kv], name),
                      indices=_padded(torch.cat([w, c], dim=1)), extra_k_cache=None,
                      extra_indices=None, **common)


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[str | None, object]:
    """`(reason or None, the module)`, once per process."""
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
    else:
        major, minor = torch.cuda.get_device_capability()
        if major not in (9, 10):
            reasons.append(f"the legacy sparse FP8 decode runs on SM90a and SM100f only, this "
                           f"GPU ({torch.cuda.get_device_name()}) is sm_{major}{minor}")
    if module is not None and not getattr(module, "has_legacy", lambda: False)():
        reasons.append("this build has no legacy kernels (FLASH_MLA_BUILD_LEGACY=0): the "
                       "V3.2 and V4 caches are legacy-only")
    if reasons:
        return "FlashMLA FP8 unavailable: " + "; ".join(reasons), None
    return None, module


def available() -> str | None:
    """None if FlashMLA's FP8 sparse decode can run here, else why not (in words)."""
    return _probe()[0]


def device_call(t: Translated):
    """`(fn, args)`: the translation moved to the device once, and `fn(args)` the kernel call
    returning `(out [T, 1, H, 512] bf16, lse)`. A fresh scheduler metadata per call."""
    reason, module = _probe()
    if reason is not None:
        raise FlashMLAUnavailable(reason)
    dev = torch.device(DEVICE)

    def to(x):
        return None if x is None else x.to(dev)

    args = dict(q=to(t.q), k_cache=_to_device_cache(t.k_cache, dev), block_table=None,
                cache_seqlens=None, head_dim_v=D_V, softmax_scale=t.scale, causal=False,
                is_fp8_kvcache=True, indices=to(t.indices), attn_sink=to(t.attn_sink),
                extra_k_cache=None if t.extra_k_cache is None
                else _to_device_cache(t.extra_k_cache, dev),
                extra_indices_in_kvcache=to(t.extra_indices), use_legacy=True,
                kv_format=t.kv_format)

    def fn(a: dict):
        sched, _ = module.get_mla_metadata()
        return module.flash_mla_with_kvcache(tile_scheduler_metadata=sched, **a)

    return fn, args


def _to_device_cache(cache: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """`cache` (a padded-stride view) on `dev` with the same strides (`.to` would compact
    it and lose the padding)."""
    n, block, one, width = cache.shape
    stride = cache.stride(0)
    base = torch.as_strided(cache, (n, stride), (stride, 1)) if n else cache.new_zeros(0, stride)
    moved = base.to(dev).contiguous()
    return moved.as_strided((n, block, one, width), (stride, width, width, 1))


def run_translated(t: Translated) -> tuple[torch.Tensor, torch.Tensor]:
    """`(o [T, H, 512], lse [T, H])` on the CPU."""
    fn, args = device_call(t)
    out, lse = fn(args)
    T, _, H, _ = t.q.shape
    return out.reshape(T, H, D_V).cpu(), lse.reshape(T, H).float().cpu()


def _adapter(fmt: str, two_caches: bool, note: str):
    D = formats.FORMATS[fmt].D

    def sparse_attn(**kw):
        inputs = validate(**kw)
        return run_translated(translate(inputs, two_caches=two_caches))

    sparse_attn.convention = "v2"
    sparse_attn.kv_format = fmt
    sparse_attn.lse = LSE_DECL
    sparse_attn.available = available
    sparse_attn.preconditions = Preconditions(
        dims={"H": (64, 128), "D": (D,), "BLOCK": (PAGE_BLOCK_SIZE,)}, note=note)
    return sparse_attn


_NOTE = ("FlashMLA's legacy sparse FP8 decode (sgl-flash-mla 1.0.0, flash_mla_with_kvcache, "
         "use_legacy=True) through kernels/adapters/flashmla_fp8.py: h_q must be 64 or 128 and d_qk "
         "{D} (the op checks both; d_v = 512); page_block_size 64 (FlashMLA's callers and "
         "tests, and a compiled 'page_block_size must be 64' check). Everything else is "
         "translated: one batch entry per token, {caches}, dead lanes -1, index rows padded "
         "to 128 with -1.")

#: fp8_ds_v4 (V4 "MODEL1", 584-byte rows): window pool as `k_cache`, compressed pool as
#: `extra_k_cache`.
sparse_attn_v4 = _adapter("fp8_ds_v4", True, _NOTE.format(
    D=512, caches="window pool as k_cache, compressed pool as extra_k_cache"))
#: fp8_ds_v4 through one cache (the pools concatenated by block), for separating findings.
sparse_attn_v4_one_cache = _adapter("fp8_ds_v4", False, _NOTE.format(
    D=512, caches="both pools concatenated by block into one k_cache"))
#: fp8_ds_mla (V3.2, 656-byte rows): one cache (V3.2 takes no extra cache).
sparse_attn_v32 = _adapter("fp8_ds_mla", False, _NOTE.format(
    D=576, caches="both pools concatenated by block into one k_cache (V3.2 takes no extra "
                  "cache)"))
