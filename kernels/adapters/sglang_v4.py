"""sglang's SM120 FlashMLA sparse decode Triton kernel (`flash_mla_sparse_decode_triton`,
package `sglang` 0.5.23, the kernel of `kernels/adapters/sglang.py`) under calling convention
v2 (contracts/v2.py) on its own cache format, fp8_ds_v4 (contracts/formats.py, section 12).
Verdict: docs/findings/sglang-sm120-triton-fp8.md.

The v1 adapter had to quantise the contract's bf16 rows into the kernel's FP8 cache, so every
comparison failed on FP8 rounding. Here the suite draws the pools as fp8_ds_v4 bytes, which
is exactly the kernel's cache (`[N, BLOCK, 584]` uint8, split by block: every token's 576
data bytes, then every token's 8 scale bytes), and the reference dequantises the same
bytes: the adapter passes them as they are (a view `[N, BLOCK, 1, 584]`, `page_size =
BLOCK`), nothing is quantised.

The translation (`translate`), per token `t`:
- window cache `k_cache = ori_kv`: the live window lanes (`window_swa_indices[t, k] >= 0`)
  in lane order; flat row `w` is page `w // BLOCK`, row `w % BLOCK`, i.e. the kernel's
  slot `w` itself;
- extra cache `extra_k_cache = cmp_kv`: the live compressed lanes (`j < index_topk`,
  `0 <= c < (position + 1) // compress_ratio`; in sglang the caller cuts the lists, so the
  adapter applies the contract's rule), slot `cmp_block_table[b, c // BLOCK] * BLOCK +
  c % BLOCK`;
each packed live-first with `-1` behind (at least one column: the kernel reshapes the
indices to `[T, -1]`) and counted in its `topk_length`. The kernel also returns an LSE
(natural log, `[T, H, 1]`, the sink included, `-inf` for an empty token with a finite
sink); the adapter returns `o` alone.

Loading (by file path) and the CPU interpreter (triton's, with the suite's bf16 fix) are
the v1 adapter's (`kernels.adapters.sglang`).
"""

from __future__ import annotations

import torch

from sparse_attn_conformance.contracts.v2 import Inputs, Preconditions, live_lanes, validate
from sparse_attn_conformance.kernels.adapters import sglang as triton_sglang
from sparse_attn_conformance.kernels.adapters.sglang import _load, _packed
from sparse_attn_conformance.kernels.triton import kernel as triton_kernel

#: The cache format the kernel reads, and its row size in bytes.
KV_FORMAT = "fp8_ds_v4"
ROW_BYTES = 584


def _cache(pool: torch.Tensor) -> torch.Tensor:
    """The kernel's `[num_pages, page_size, 1, 584]` view of a fp8_ds_v4 pool (same bytes)."""
    n, block, width = pool.shape
    if width != ROW_BYTES or pool.dtype != torch.uint8:
        raise ValueError(f"sglang v4 adapter: expected {KV_FORMAT} pools (uint8 rows of "
                         f"{ROW_BYTES} bytes), got {pool.dtype} rows of {width}")
    return pool.contiguous().reshape(n, block, 1, width)


def _at_least_one_column(idx: torch.Tensor) -> torch.Tensor:
    if idx.shape[1] >= 1:
        return idx
    return torch.full((idx.shape[0], 1), -1, dtype=idx.dtype)


def translate(inputs: Inputs) -> dict:
    """`flash_mla_sparse_decode_triton`'s keyword arguments for one v2 call."""
    T, H, D, block = inputs.T, inputs.H, inputs.D, inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    w = inputs.window_swa_indices.to(torch.int64)
    w_idx, w_len = _packed(torch.where(live_w, w, -1), live_w)
    c = torch.where(live_c, inputs.idx_topk[:, :inputs.index_topk].to(torch.int64), 0)
    table = inputs.cmp_block_table.to(torch.int64)
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = table[b, (c // block).clamp(max=table.shape[1] - 1)]
    c_idx, c_len = _packed(torch.where(live_c, blk * block + c % block, -1), live_c)
    w_idx, c_idx = _at_least_one_column(w_idx), _at_least_one_column(c_idx)
    return dict(q=inputs.q.reshape(T, 1, H, D).contiguous(), k_cache=_cache(inputs.ori_kv),
                indices=w_idx.reshape(T, 1, -1), topk_length=w_len.reshape(T),
                attn_sink=inputs.attn_sink.float().contiguous(), head_dim_v=D,
                softmax_scale=float(inputs.softmax_scale),
                extra_k_cache=_cache(inputs.cmp_kv), extra_indices=c_idx.reshape(T, 1, -1),
                extra_topk_length=c_len.reshape(T))


def run(args: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel on `args` (`translate`'s): `(o [T, 1, H, D] bf16, lse [T, H, 1] fp32)`, on
    the GPU when there is one, else through triton's interpreter with the suite's bf16 fix."""
    if triton_kernel.on_gpu():
        args = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        out, lse = _load().flash_mla_sparse_decode_triton(**args)
        return out.cpu(), lse.cpu()
    reason = triton_kernel._import_triton(interpret=True)
    if reason is not None:
        raise RuntimeError(f"sglang kernel: {reason}")
    from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

    triton_interpret.install()
    with triton_kernel._interpret_env(), triton_interpret.faithful():
        return _load().flash_mla_sparse_decode_triton(**args)


def sparse_attn(**kw) -> torch.Tensor:
    """The v2 contract call through sglang's kernel on the suite's fp8_ds_v4 bytes."""
    inputs = validate(**kw)
    out, _lse = run(translate(inputs))
    return out.reshape(inputs.T, inputs.H, inputs.D).cpu()


sparse_attn.convention = "v2"
sparse_attn.kv_format = KV_FORMAT
sparse_attn.available = triton_sglang.sparse_attn.available
sparse_attn.example_fraction = triton_sglang.sparse_attn.example_fraction
sparse_attn.preconditions = Preconditions(
    dims={"D": (512,)},
    note="D = 512 only: the kernel's row is 448 e4m3 NoPE dims + 64 bf16 RoPE dims "
         "(NOPE_PAD=512, ROPE_DIM=64 and the 576/8-byte strides are constants). Nothing "
         "else: the grid is (T, H) with one program per (token, head), so any H; page_size "
         "(BLOCK), the index widths (WIN, IDX_TOPK) and the token count are runtime values, "
         "and masked loads never touch an ignored lane's row.")
