"""flashinfer's torch reference for DeepSeek-V4 compressed sparse MLA, run as a kernel: a
second, independent oracle for the fp8_ds_v4 cache format (contracts/formats.py, docs/contract.md
section 12). `compressed_sparse_mla_reference` of
`flashinfer/experimental/b12x/attention/_shared/mla/compressed_reference.py`, package
`flashinfer-python` 0.7.4 (Apache-2.0; extra `flashinfer`, installed with `--no-deps`).
Verdict: docs/findings/flashinfer-v4-reference.md.

What the function takes (read from the installed file): `q [rows, heads, 512]`; a window
("swa") cache and an optional extra (compressed) cache, each a flat `uint8 [pages,
page_nbytes]` buffer whose page holds `page_size` token records of 576 data bytes (448 e4m3
NoPE, 64 bf16 RoPE), then `page_size` scale records of 8 bytes (7 UE8M0 + pad), padded to a
multiple of 576 bytes (`compressed_sparse_mla_page_nbytes`: `_validate_flat_cache` rejects
any other width); `indices [rows, width]` of flat slots `page * page_size + row` with a
`topk_lengths [rows]` each, read with PREFIX semantics (the first negative index within the
length ends the list); the sink in the softmax's denominator; fp32 math (`q @ k.T * sm_scale`,
rows dequantised in fp32), output cast to q's dtype, the LSE natural-log with the sink; a
row with no key gives 0 and LSE `attn_sink` (or `-inf` without one).

The adapter (`translate`), per token `t` of a v2 call:
- each pool's blocks copied into a `[N, page_nbytes(BLOCK)]` buffer (block `n`'s
  `BLOCK * 584` bytes, then zero padding): the same bytes at the stride the function needs;
  `page_size = BLOCK` for both caches;
- window cache: the live window lanes (`window_swa_indices[t, k] >= 0`), flat row `w` is the
  function's slot `w` itself;
- extra cache: the live compressed lanes (`live_lanes`: the contract's cut by position and
  ratio, which the function leaves to its caller), slot `cmp_block_table[b, c // BLOCK] *
  BLOCK + c % BLOCK`;
each packed live-first with `-1` behind (prefix semantics make the order the adapter's
job) and counted in its topk length.

The module file is loaded by path (importing `flashinfer` runs its package `__init__`,
which loads its JIT/CUDA machinery); the file imports only `math` and `torch`, so nothing
is stubbed.

`sparse_attn` returns `(o, lse)` and declares `lse = LSE(base="e", with_sink=True)` (the
harness checks it against the reference's, docs/contract.md section 13); `sparse_attn_o` is
the same call returning `o` alone.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from sparse_attn_conformance.contracts.v2 import Inputs, Preconditions, live_lanes, validate
from sparse_attn_conformance.kernels.interface import LSE

PACKAGE = "flashinfer-python==0.7.4"
MODULE_FILE = os.path.join("experimental", "b12x", "attention", "_shared", "mla",
                           "compressed_reference.py")
KV_FORMAT = "fp8_ds_v4"
ROW_BYTES = 584
DATA_BYTES = 576

_module = None


def _module_path() -> str | None:
    spec = importlib.util.find_spec("flashinfer")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], MODULE_FILE)


def _load():
    """flashinfer's reference module, loaded from its file (not through `import flashinfer`)."""
    global _module
    if _module is None:
        path = _module_path()
        if path is None or not os.path.exists(path):
            raise ImportError(f"flashinfer's V4 reference is not installed "
                              f"(pip install --no-deps {PACKAGE})")
        spec = importlib.util.spec_from_file_location("flashinfer_compressed_reference", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _module = module
    return _module


def page_nbytes(block: int) -> int:
    """The function's page width for `page_size = block`: `block * 584` rounded up to 576s."""
    return -(-block * ROW_BYTES // DATA_BYTES) * DATA_BYTES


def _cache(pool: torch.Tensor) -> torch.Tensor:
    """A fp8_ds_v4 pool `[N, BLOCK, 584]` as the function's flat `[N, page_nbytes]` buffer."""
    n, block, width = pool.shape
    if width != ROW_BYTES or pool.dtype != torch.uint8:
        raise ValueError(f"flashinfer V4 reference adapter: expected {KV_FORMAT} pools (uint8 "
                         f"rows of {ROW_BYTES} bytes), got {pool.dtype} rows of {width}")
    flat = torch.zeros(n, page_nbytes(block), dtype=torch.uint8)
    flat[:, :block * ROW_BYTES] = pool.reshape(n, block * ROW_BYTES)
    return flat


def _packed(slots: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Live slots first (lane order kept), `-1` behind; and their count per token."""
    order = torch.sort((~live).to(torch.int8), dim=-1, stable=True).indices
    packed = torch.gather(torch.where(live, slots, -1), -1, order)
    return packed.to(torch.int32), live.sum(-1).to(torch.int32)


def translate(inputs: Inputs) -> dict:
    """`compressed_sparse_mla_reference`'s arguments for one v2 call."""
    block = inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    w_idx, w_len = _packed(inputs.window_swa_indices.to(torch.int64), live_w)
    c = torch.where(live_c, inputs.idx_topk[:, :inputs.index_topk].to(torch.int64), 0)
    table = inputs.cmp_block_table
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = table[b, (c // block).clamp(max=table.shape[1] - 1)].to(torch.int64)
    c_idx, c_len = _packed(torch.where(live_c, blk * block + c % block, -1), live_c)
    return dict(q=inputs.q.contiguous(), swa_k_cache=_cache(inputs.ori_kv),
                swa_indices=w_idx, swa_topk_lengths=w_len,
                sm_scale=float(inputs.softmax_scale),
                attn_sink=inputs.attn_sink.float().contiguous(),
                extra_k_cache=_cache(inputs.cmp_kv), extra_indices=c_idx,
                extra_topk_lengths=c_len, swa_page_size=block, extra_page_size=block,
                return_lse=True, cache_format="deepseek_v4")


def run(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """`(o [T, H, 512] in q's dtype, lse [T, H] fp32)` of flashinfer's reference."""
    args = translate(inputs)
    q, swa, swa_idx, swa_len = (args.pop(k) for k in
                                ("q", "swa_k_cache", "swa_indices", "swa_topk_lengths"))
    return _load().compressed_sparse_mla_reference(q, swa, swa_idx, swa_len, **args)


def sparse_attn(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """The v2 contract call through flashinfer's V4 reference: `(o, lse)`, `lse` natural-log,
    the sink included."""
    return run(validate(**kw))


def sparse_attn_o(**kw) -> torch.Tensor:
    """The same call returning `o` alone (for a harness without the LSE check)."""
    return run(validate(**kw))[0]


def _available() -> str | None:
    path = _module_path()
    if path is None:
        return f"flashinfer is not installed (pip install --no-deps {PACKAGE})"
    if not os.path.exists(path):
        return f"flashinfer has no {MODULE_FILE} (expected {PACKAGE})"
    return None


_PRE = Preconditions(
    dims={"D": (512,)},
    note="D = 512 only: the function's row is 448 e4m3 NoPE dims + 64 bf16 RoPE dims "
         "(its constants). Nothing else: rows, heads, page_size (BLOCK) and index widths are "
         "runtime values; ignored lanes are never gathered (the adapter packs live lanes "
         "first and counts them).")



def sparse_attn_finite_sinks(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """`sparse_attn` declaring finite sinks only: the function turns a `+inf` sink into NaN
    (`exp(sink - max) = exp(inf - inf)`; docs/findings/flashinfer-v4-reference.md), which
    every property then shrinks to; this variant shows what else the suite finds."""
    return run(validate(**kw))


for _fn in (sparse_attn, sparse_attn_o, sparse_attn_finite_sinks):
    _fn.convention = "v2"
    _fn.kv_format = KV_FORMAT
    _fn.available = _available
    _fn.preconditions = _PRE
sparse_attn.lse = sparse_attn_finite_sinks.lse = LSE(base="e", with_sink=True)
sparse_attn_finite_sinks.preconditions = Preconditions(
    dims=_PRE.dims, finite_sinks=True,
    note=_PRE.note + " Finite sinks only: a +inf sink gives NaN (the max shift's inf - inf).")
