"""Compile time and per-call time of the pypto kernel: ``python benchmarks/pypto_kernel.py``
(``--verify-passes``: with pypto's per-compiler-pass checks on).

Times are wall clock in the caller, through the worker process (pickling included). The
first call of a shape in a fresh worker includes the program build ("compile"); the calls
after it reuse the Python-side program but pypto 0.2.0 still re-parses, re-runs its passes,
its C++ codegen (g++), the tensor-graph interpreter and the cost model on every call.
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels import pypto_kernel  # noqa: E402
from kernels.pypto_runtime import default_worker  # noqa: E402

H, D, WIN, BLOCK = 2, 16, 8, 4
SHAPES = [(1, 1, 8), (2, 2, 8), (4, 2, 16)]  # (B, S, IDX_TOPK)
CALLS = 20
VERIFY_PASSES = bool(sys.argv[1:] == ["--verify-passes"])


def inputs(B, S, idx_topk, seed):
    g = torch.Generator().manual_seed(seed)
    topk = WIN + idx_topk
    m = (idx_topk + BLOCK - 1) // BLOCK
    return dict(
        q=torch.randn(B, S, H, D, generator=g).bfloat16(),
        ori_kv=torch.randn(2 * B, BLOCK, D, generator=g).bfloat16(),
        ori_block_table=torch.arange(2 * B, dtype=torch.int32).reshape(B, 2),
        cmp_kv=torch.randn(m * B, BLOCK, D, generator=g).bfloat16(),
        cmp_block_table=torch.arange(m * B, dtype=torch.int32).reshape(B, m),
        topk_idxs=torch.randint(-1, topk, (B, S, topk), generator=g, dtype=torch.int32),
        attn_sink=torch.randn(H, generator=g),
        seqused_kv=torch.randint(0, WIN + idx_topk + 1, (B,), generator=g, dtype=torch.int32),
        softmax_scale=D ** -0.5, window_size=WIN)


def main():
    t0 = time.perf_counter()
    default_worker().call(("ping",))
    print(f"worker start: {time.perf_counter() - t0:.2f} s")
    for B, S, k in SHAPES:
        t0 = time.perf_counter()
        pypto_kernel.run(frozenset(), inputs(B, S, k, 0), verify_passes=VERIFY_PASSES)
        first = time.perf_counter() - t0
        times = []
        for i in range(CALLS):
            kw = inputs(B, S, k, i + 1)
            t0 = time.perf_counter()
            pypto_kernel.run(frozenset(), kw, verify_passes=VERIFY_PASSES)
            times.append(time.perf_counter() - t0)
        times.sort()
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"B={B} S={S} IDX_TOPK={k}: first call (compile + run) {first:.2f} s, "
              f"per call median {statistics.median(times):.3f} s, p90 {p90:.3f} s "
              f"over {CALLS} calls")


if __name__ == "__main__":
    main()
