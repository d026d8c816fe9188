"""The `triton` kernel (kernels/triton/kernel.py) timed against the reference: figures, never
asserts. On a CUDA GPU it runs compiled; elsewhere through triton's interpreter.

    python benchmarks/triton_kernel.py [--iters 20] [--shape model|small]

At the model's shape (B=64, S=2, H=64, D=512, WIN=128, IDX_TOPK=512, BLOCK=128; `small`
for a CPU) it prints: where the kernel ran, its median time per call (CUDA events around
the launch on tensors already on the GPU; wall time through the interpreter), the `tiled`
torch kernel's and the fp64 reference's on the same inputs, and the worst error-to-
tolerance ratio of the kernel's output. Unverified on a GPU (benchmarks/triton_gpu_run.sh).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts.v1 import validate
from sparse_attn_conformance.kernels.torch import reference, tiled
from sparse_attn_conformance.kernels.triton import kernel as triton_kernel

SHAPES = {"model": dict(B=64, S=2, H=64, D=512, WIN=128, IDX_TOPK=512, BLOCK=128),
          "small": dict(B=2, S=2, H=16, D=64, WIN=32, IDX_TOPK=64, BLOCK=16)}


def model_call(B, S, H, D, WIN, IDX_TOPK, BLOCK, seed=0) -> dict:
    """An HCA-style call: window rows then compressed rows, every batch at long context."""
    g = torch.Generator().manual_seed(seed)
    n_cmp = -(-IDX_TOPK // BLOCK)
    nw = -(-WIN // BLOCK)
    rows = torch.cat([torch.arange(WIN), WIN + torch.arange(IDX_TOPK)]).int()
    return dict(
        q=torch.randn(B, S, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(B * nw, BLOCK, D, generator=g).bfloat16(),
        ori_block_table=torch.randperm(B * nw, generator=g).int().reshape(B, nw),
        cmp_kv=torch.randn(B * n_cmp, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.randperm(B * n_cmp, generator=g).int().reshape(B, n_cmp),
        topk_idxs=rows.expand(B, S, -1).contiguous(), attn_sink=torch.randn(H, generator=g),
        seqused_kv=torch.full((B,), WIN + IDX_TOPK, dtype=torch.int32),
        softmax_scale=D ** -0.5, window_size=WIN)


def timed(fn, iters: int, cuda: bool) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="model")
    args = ap.parse_args()
    reason = triton_kernel.sparse_attn.available()
    if reason is not None:
        print(f"triton kernel unavailable: {reason}")
        return 0
    gpu = triton_kernel.on_gpu()
    kw = model_call(**SHAPES[args.shape])
    inputs = validate(**kw)
    print(f"shape {args.shape} {SHAPES[args.shape]}; triton kernel on "
          f"{torch.cuda.get_device_name() if gpu else 'the CPU (interpreter)'}")
    out = triton_kernel.sparse_attn(**kw)
    gold = golden(inputs)
    result = compare(out, gold, tolerance(inputs, gold))
    print(f"worst error/tolerance {result.worst_ratio:.3f} ({'ok' if result.ok else 'MISMATCH'})")
    kernel = triton_kernel.sparse_attn
    if gpu:
        program = kernel._program(True)
        dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        # the launch alone on device tensors: run() moves nothing that is already there
        t_kernel = timed(lambda: kernel.run(validate_on_device(dev)), args.iters, True)
        del program
    else:
        t_kernel = timed(lambda: kernel(**kw), max(1, args.iters // 10), False)
    t_tiled = timed(lambda: tiled.sparse_attn(**kw), args.iters, gpu)
    t_ref = timed(lambda: reference.sparse_attn(**kw), max(1, args.iters // 10), False)
    print(f"triton kernel {t_kernel * 1e3:.3f} ms/call | tiled (torch) {t_tiled * 1e3:.3f} ms/call | "
          f"reference (fp64, CPU) {t_ref * 1e3:.3f} ms/call")
    return 0


def validate_on_device(kw: dict):
    """`validate` checks CPU tensors; on the GPU the call is already checked once above, so
    the device tensors go to the launch as they are."""
    from sparse_attn_conformance.contracts.v1 import Inputs

    return Inputs(**kw)


if __name__ == "__main__":
    raise SystemExit(main())
