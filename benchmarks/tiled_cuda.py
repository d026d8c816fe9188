"""Check and time the device-style torch kernel (`tiled`) where torch sees a GPU.

    python benchmarks/tiled_cuda.py [--examples 50]

Draws cases from the strategies, runs `tiled` (on CUDA when available) against the
reference, checks every output within the suite's tolerance, and prints the device and the
median per-call time of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hypothesis import HealthCheck, given, settings

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.kernels.torch import reference, tiled
from sparse_attn_conformance.strategies.v1.cases import cases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=50)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    times = {"tiled": [], "reference": []}
    worst = [0.0]

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def run(case):
        kw = case.inputs.kwargs()
        t0 = time.perf_counter()
        out = tiled.sparse_attn(**kw)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times["tiled"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference.sparse_attn(**case.inputs.kwargs())
        times["reference"].append(time.perf_counter() - t0)
        gold = golden(case.inputs)
        result = compare(out.float(), gold, tolerance(case.inputs, gold))
        assert result.ok, result.message
        worst[0] = max(worst[0], result.worst_ratio)

    run()
    if torch.cuda.is_available():
        print(f"cuda memory used by tiled: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    for name, ts in times.items():
        print(f"{name}: {len(ts)} calls, median {statistics.median(ts) * 1e3:.2f} ms, "
              f"max {max(ts) * 1e3:.1f} ms")
    print(f"largest error of tiled as a fraction of the tolerance: {worst[0]:.3f}")


if __name__ == "__main__":
    main()
