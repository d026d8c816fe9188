"""A Triton kernel nobody here wrote, under the suite: sglang's SM120 FlashMLA sparse decode
kernel, `flash_mla_sparse_decode_triton` of `sglang/kernels/ops/attention/flash_mla_sm120_triton.py`
in package `sglang` 0.5.23 (Apache-2.0; extra `sglang`, installed with `--no-deps`). Verdict:
docs/findings/sglang-sm120-triton.md.

What the module offers (read from the installed file): DeepSeek-V4 decode over two paged FP8
caches, the window cache (`k_cache`) and the compressed one (`extra_k_cache`), each
`[num_pages, page_size, 1, 584]` bytes per token: 448 "nope" dims as float8_e4m3fn with one
UE8M0 (power-of-two) scale per 64 dims, then 64 "rope" dims in bf16; `indices [T, 1, topk]`
address token slots `page * page_size + row`, `topk_length [T]` counts the valid ones (a
negative index is skipped); the two caches' outputs are merged by their LSEs and the sink
applied as `exp(lse) / (exp(lse) + exp(sink))`. `D = 512`, `q [T, 1, H, 512]` bf16.

The adapter (`translate`): tokens flatten as `t = b*S + s`; per token its live window
entries (contract section 3) first, in row order, into the window cache's indices, its live
compressed entries into the extra cache's, each counted in its `topk_length`, `-1` behind;
the pools are the contract's own pages (`page_size = BLOCK`, a slot's page from its block
table); every row quantized to the cache format as sglang's cache writer stores it (the
adapter's `quantize`, written here from the layout above). The module file is loaded by
path: importing the `sglang` package itself pulls its serving stack (transformers, ...),
and the file needs only torch and triton. On the CPU it runs through triton's interpreter
with the suite's bf16 fix, as the `triton` kernel does.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from sparse_attn_conformance.contracts.v1 import Inputs, Preconditions, live_mask, validate
from sparse_attn_conformance.kernels.triton import kernel as triton_kernel

PACKAGE = "sglang==0.5.23"
MODULE_FILE = os.path.join("kernels", "ops", "attention", "flash_mla_sm120_triton.py")
NOPE, ROPE, GROUP = 448, 64, 64
TOKEN_BYTES, SCALE_BYTES = 576, 8
FP8_MAX = 448.0

_module = None


def _load():
    """sglang's module, loaded from its file (not through `import sglang`)."""
    global _module
    if _module is None:
        spec = importlib.util.find_spec("sglang")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"sglang is not installed (pip install --no-deps {PACKAGE})")
        path = os.path.join(list(spec.submodule_search_locations)[0], MODULE_FILE)
        file_spec = importlib.util.spec_from_file_location("sglang_flash_mla_sm120_triton", path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        if not triton_kernel.on_gpu():
            # the interpreter cannot time the autotuner's configs (no driver): keep its first
            # (BLOCK_T=16) in this private copy of the module, so nothing needs benchmarking
            tuner = module._tiled_sparse_decode_kernel
            tuner.configs = tuner.configs[:1]
        _module = module
    return _module


def quantize(rows: torch.Tensor) -> torch.Tensor:
    """`[N, BLOCK, 512]` bf16 rows -> the cache `[N, BLOCK, 1, 584]` uint8 (page-major: a
    page's BLOCK token records of 576 bytes, then its BLOCK scale records of 8 bytes)."""
    N, block, D = rows.shape
    x = rows.float()
    nope = x[..., :NOPE].reshape(N, block, NOPE // GROUP, GROUP)
    amax = nope.abs().amax(dim=-1).clamp(min=2.0**-126)
    # UE8M0: the smallest power of two that brings the group into fp8's range
    exp = torch.ceil(torch.log2(amax / FP8_MAX)).clamp(-127, 127)
    fp8 = (nope / torch.exp2(exp)[..., None]).reshape(N, block, NOPE).to(torch.float8_e4m3fn)
    data = torch.cat([fp8.view(torch.uint8), rows[..., NOPE:].contiguous().view(torch.uint8)], dim=-1)
    scales = torch.zeros(N, block, SCALE_BYTES, dtype=torch.uint8)
    scales[..., : NOPE // GROUP] = (exp + 127).to(torch.uint8)
    page = torch.cat([data.reshape(N, block * TOKEN_BYTES), scales.reshape(N, block * SCALE_BYTES)], -1)
    return page.reshape(N, block, 1, TOKEN_BYTES + SCALE_BYTES)


def _slots(e, table, block, live):
    """Token slot `page * BLOCK + row` of each live entry (slot numbers `e` in this pool)."""
    B = table.shape[0]
    safe = torch.where(live, e, 0)
    col = (safe // block).clamp(max=table.shape[1] - 1)
    page = torch.gather(table.to(torch.int64), 1, col.reshape(B, -1)).reshape(e.shape)
    return torch.where(live, page * block + safe % block, -1)


def _packed(slots, live):
    """Live slots first (row order kept), `-1` behind; and their count."""
    order = torch.sort((~live).to(torch.int8), dim=-1, stable=True).indices
    packed = torch.gather(torch.where(live, slots, -1), -1, order)
    return packed.to(torch.int32), live.sum(-1).to(torch.int32)


def translate(inputs: Inputs) -> dict:
    """`flash_mla_sparse_decode_triton`'s keyword arguments for one contract call."""
    B, S, H, D, win = inputs.B, inputs.S, inputs.H, inputs.D, inputs.window_size
    e = inputs.topk_idxs.to(torch.int64)
    live = live_mask(inputs.topk_idxs, inputs.seqused_kv, win)
    live_w, live_c = live & (e < win), live & (e >= win)
    w_idx, w_len = _packed(_slots(e, inputs.ori_block_table, inputs.BLOCK, live_w), live_w)
    c_idx, c_len = _packed(_slots(e - win, inputs.cmp_block_table, inputs.BLOCK, live_c), live_c)
    T = B * S
    return dict(q=inputs.q.reshape(T, 1, H, D).contiguous(), k_cache=quantize(inputs.ori_kv),
                indices=w_idx.reshape(T, 1, -1), topk_length=w_len.reshape(T),
                attn_sink=inputs.attn_sink.contiguous(), head_dim_v=D,
                softmax_scale=float(inputs.softmax_scale), extra_k_cache=quantize(inputs.cmp_kv),
                extra_indices=c_idx.reshape(T, 1, -1), extra_topk_length=c_len.reshape(T))


def sparse_attn(**kw) -> torch.Tensor:
    """The contract call through sglang's kernel (CPU: triton's interpreter, bf16 made faithful)."""
    inputs = validate(**kw)
    args = translate(inputs)
    gpu = triton_kernel.on_gpu()
    if gpu:
        args = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        out, _ = _load().flash_mla_sparse_decode_triton(**args)
    else:
        reason = triton_kernel._import_triton(interpret=True)
        if reason is not None:
            raise RuntimeError(f"sglang kernel: {reason}")
        from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

        triton_interpret.install()
        with triton_kernel._interpret_env(), triton_interpret.faithful():
            out, _ = _load().flash_mla_sparse_decode_triton(**args)
    return out.reshape(inputs.B, inputs.S, inputs.H, inputs.D).cpu()


def _available() -> str | None:
    if importlib.util.find_spec("sglang") is None:
        return f"sglang is not installed (pip install --no-deps {PACKAGE})"
    return triton_kernel._import_triton(interpret=not triton_kernel.on_gpu())


sparse_attn.available = _available
#: the kernel's one head dim (448 FP8 + 64 bf16); a tenth of each profile's examples (interpreter)
sparse_attn.preconditions = Preconditions(dims={"D": (512,)})
sparse_attn.example_fraction = 0.1
