"""A Triton kernel nobody here wrote, under the suite: vLLM's bf16 sparse MLA kernel,
`triton_bf16_mla_sparse_interface` of `vllm/v1/attention/ops/xpu_mla_sparse.py` in package
`vllm` 0.34.0 (Apache-2.0; extra `vllm`, installed with `--no-deps`), under calling
convention v2 (contracts/v2.py) on bf16 pools. Verdict:
docs/findings/vllm-bf16-triton-sparse-mla.md.

What the function offers (read from the installed file): `q [T, H, dim_qk]`, one flat bf16
KV `[N, 1, dim_qk]` (key = the row, value = its first `d_v = 512` dims), `indices [T, 1,
topk]` of rows of that KV, `topk` a multiple of 16 (`BLOCK_N`), each index live iff `0 <=
index < N` (any order, holes allowed: no prefix rule, no length argument); one program per
(token, 16 heads), an online softmax in log2 units over chunks of 16 indices (bf16 `tl.dot`s,
fp32 accumulators, `p` cast to bf16 before `p @ v`), the output stored as bf16. It returns
`(out [T, H, 512] bf16, max_logits [T, H], lse [T, H])`, the LSE natural-log, *without a
sink*: the function has no sink argument (vLLM's DeepSeek-V4 XPU path calls it with
`block_dpe=0`, `dim_qk = d_v = 512`, and drops the sink). `block_dpe` splits `dim_qk` into
a power-of-two NoPE tile and a RoPE tile: `dim_qk = 512` needs `block_dpe = 0` (448 + 64
is no power-of-two tile), `576` (V3.2) gives `d_v = 512 < dim_qk`, which a bf16 pool's
contract (`D_v = D`) does not take; so D = 512 only.

The adapter (`translate`), per token `t` of a v2 call:
- `kv` = the window pool's rows then the compressed pool's, flattened (`[N_ori * BLOCK +
  N_cmp * BLOCK, 1, 512]` bf16, a copy);
- `indices[t]` = its window lanes (flat row `w`, `-1` where not live), then its compressed
  lanes (`N_ori * BLOCK + cmp_block_table[b, c // BLOCK] * BLOCK + c % BLOCK`, `-1` where
  not live: `live_lanes`, the contract's cut, which the function leaves to its caller),
  padded with `-1` to a multiple of 16 and to at least 16 (with `topk = 0` the kernel
  divides 0 by 0: vLLM's own caller pads to at least 16 too);
- **the sink is the adapter's, not the kernel's**: with `lse` the kernel's (natural log,
  no sink), the adapter returns `o * exp(lse) / (exp(lse) + exp(attn_sink[h]))`, computed
  as `o * sigmoid(lse - attn_sink[h])` in fp32 (`-inf` sink: weight 1). The kernel's `o` is
  bf16 already, so the adapter's product rounds once more (in fp32).

Loading: the module file is loaded by path. Its one vLLM import, `from vllm.triton_utils
import LOG2E, LOGE2, tl, triton`, would run `vllm/__init__` and `vllm.triton_utils` (vLLM's
env and platform machinery); the adapter puts a stub module in `sys.modules["vllm.triton_utils"]`
for that one import (removed afterwards: a real `import vllm` later is unaffected), holding
`triton`, `triton.language as tl`, `LOG2E = 1.4426950408889634` and `LOGE2 =
0.6931471805599453` (the values of vLLM's `triton_utils/__init__.py`). Nothing else of vLLM
is imported. On the CPU it runs through triton's interpreter with the suite's bf16 fix
(`kernels.triton.interpret`), as `kernels.adapters.sglang` does.

`sparse_attn` returns `(o, lse)` and declares `lse = LSE(base="e", with_sink=True)`: the
adapter's `log(exp(lse) + exp(sink))` from the kernel's sinkless LSE (the harness checks it,
docs/contract.md section 13); `sparse_attn_o` returns `o` alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch

from sparse_attn_conformance.contracts.v2 import Inputs, Preconditions, live_lanes, validate
from sparse_attn_conformance.kernels.interface import LSE
from sparse_attn_conformance.kernels.triton import kernel as triton_kernel

PACKAGE = "vllm==0.34.0"
MODULE_FILE = os.path.join("v1", "attention", "ops", "xpu_mla_sparse.py")
STUBBED = "vllm.triton_utils"
#: vLLM's constants (vllm/triton_utils/__init__.py), the stub's
LOG2E, LOGE2 = 1.4426950408889634, 0.6931471805599453
D, BLOCK_N = 512, 16

_module = None


def _module_path() -> str | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], MODULE_FILE)


def _stub():
    import triton
    import triton.language as tl

    stub = types.ModuleType(STUBBED)
    stub.triton, stub.tl, stub.LOG2E, stub.LOGE2 = triton, tl, LOG2E, LOGE2
    return stub


def _load():
    """vLLM's module, loaded from its file with `vllm.triton_utils` stubbed for its import."""
    global _module
    if _module is None:
        path = _module_path()
        if path is None or not os.path.exists(path):
            raise ImportError(f"vLLM's xpu_mla_sparse.py is not installed (pip install --no-deps {PACKAGE})")
        spec = importlib.util.spec_from_file_location("vllm_xpu_mla_sparse", path)
        module = importlib.util.module_from_spec(spec)
        before = sys.modules.get(STUBBED)
        sys.modules[STUBBED] = _stub() if before is None else before
        try:
            spec.loader.exec_module(module)
        finally:
            if before is None:
                del sys.modules[STUBBED]
        _module = module
    return _module


def _flat(pool: torch.Tensor) -> torch.Tensor:
    if pool.dtype != torch.bfloat16:
        raise ValueError(f"vLLM bf16 adapter: expected bf16 pools, got {pool.dtype}")
    return pool.reshape(-1, pool.shape[-1])


def translate(inputs: Inputs) -> dict:
    """`triton_bf16_mla_sparse_interface`'s arguments for one v2 call."""
    T, block = inputs.T, inputs.BLOCK
    live_w, live_c = live_lanes(inputs)
    ori = _flat(inputs.ori_kv)
    kv = torch.cat([ori, _flat(inputs.cmp_kv)]).unsqueeze(1).contiguous()
    w = torch.where(live_w, inputs.window_swa_indices.to(torch.int64), -1)
    c = torch.where(live_c, inputs.idx_topk[:, :inputs.index_topk].to(torch.int64), 0)
    table = inputs.cmp_block_table
    b = inputs.batch_of_token[:, None].expand_as(c)
    blk = table[b, (c // block).clamp(max=table.shape[1] - 1)].to(torch.int64)
    c = torch.where(live_c, ori.shape[0] + blk * block + c % block, -1)
    idx = torch.cat([w, c], dim=1)
    width = max(BLOCK_N, -(-idx.shape[1] // BLOCK_N) * BLOCK_N)
    idx = torch.cat([idx, torch.full((T, width - idx.shape[1]), -1, dtype=torch.int64)], 1)
    return dict(q=inputs.q.to(torch.bfloat16).contiguous(), kv=kv,
                indices=idx.to(torch.int32).unsqueeze(1).contiguous(),
                sm_scale=float(inputs.softmax_scale), d_v=D, block_dpe=0)


def run(args: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel on `args` (`translate`'s): `(o [T, H, 512] bf16, lse [T, H] fp32, no sink)`,
    on the GPU when there is one, else through triton's interpreter with the suite's bf16 fix."""
    if triton_kernel.on_gpu():
        args = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        out, _max_logits, lse = _load().triton_bf16_mla_sparse_interface(**args)
        return out.cpu(), lse.cpu()
    reason = triton_kernel._import_triton(interpret=True)
    if reason is not None:
        raise RuntimeError(f"vLLM kernel: {reason}")
    from sparse_attn_conformance.kernels.triton import interpret as triton_interpret

    triton_interpret.install()
    with triton_kernel._interpret_env(), triton_interpret.faithful():
        out, _max_logits, lse = _load().triton_bf16_mla_sparse_interface(**args)
    return out, lse


def with_sink(o: torch.Tensor, lse: torch.Tensor, sink: torch.Tensor):
    """The adapter's sink (not the kernel's): `o * exp(lse) / (exp(lse) + exp(sink))` and
    the LSE with the sink, `log(exp(lse) + exp(sink))`, from the kernel's sinkless `lse`."""
    sink = sink.float()[None, :]
    weight = torch.sigmoid(lse.float() - sink)
    return o.float() * weight[..., None], torch.logaddexp(lse.float(), sink)


def sparse_attn(**kw) -> tuple[torch.Tensor, torch.Tensor]:
    """The v2 contract call through vLLM's kernel, the sink applied by the adapter:
    `(o [T, H, 512] fp32, lse [T, H] natural log with the sink)`."""
    inputs = validate(**kw)
    o, lse = run(translate(inputs))
    return with_sink(o.cpu(), lse.cpu(), inputs.attn_sink)


def sparse_attn_o(**kw) -> torch.Tensor:
    """The same call returning `o` alone (for a harness without the LSE check)."""
    return sparse_attn(**kw)[0]


def _available() -> str | None:
    path = _module_path()
    if path is None:
        return f"vllm is not installed (pip install --no-deps {PACKAGE})"
    if not os.path.exists(path):
        return f"vllm has no {MODULE_FILE} (expected {PACKAGE})"
    return triton_kernel._import_triton(interpret=not triton_kernel.on_gpu())


_PRE = Preconditions(
    dims={"D": (D,)},
    note="D = 512 only: `d_v` must be 512 (asserted) and, with bf16 pools (D_v = D), "
         "dim_qk = d_v; block_dpe = 0 then (448 + 64 is no power-of-two tile). Nothing "
         "else: any H (programs of 16 heads, masked), any index width (the adapter pads to "
         "a multiple of 16), any BLOCK and pool size (flattened rows).")

for _fn in (sparse_attn, sparse_attn_o):
    _fn.convention = "v2"
    _fn.kv_format = "bf16"
    _fn.available = _available
    _fn.preconditions = _PRE
    #: the interpreter is slow: a tenth of each profile's examples (as the sglang adapter)
    _fn.example_fraction = triton_kernel.INTERPRETER_EXAMPLE_FRACTION
sparse_attn.lse = LSE(base="e", with_sink=True)
