"""The pypto kernel's speed, in one run: ``python benchmarks/pypto_kernel.py``.

Prints, on this machine:
- per-call time through the worker, for a few shapes of the buckets (``--verify-passes``:
  with pypto's per-compiler-pass checks on);
- with ``--suite``: the dev-profile run of the conformance suite on the default kernel
  (``pytest conformance -n N``, the README's command), its wall time and examples per second
  per property, once with case packing and once with ``--no-packing``.

Times are wall clock in the caller, through the worker process (pickling included). The
first call of a shape in a fresh worker includes the program build ("compile"); the calls
after it reuse the Python-side program, but pypto 0.2.0 still re-parses, re-runs its passes,
its C++ code generation (through the g++ cache, kernels/pypto/toolchain.py) and the
tensor-graph interpreter on every call (its performance model is skipped,
kernels/pypto/compat.py).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse_attn_conformance.kernels.pypto import kernel as pypto_kernel  # noqa: E402
from sparse_attn_conformance.kernels.pypto.runtime import default_worker  # noqa: E402

H, D, WIN, BLOCK = 2, 16, 8, 4
SHAPES = [(1, 1, 8), (2, 2, 8), (4, 2, 16), (16, 2, 16)]  # (B, S, IDX_TOPK); B=16: a packed call
CALLS = 20


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


def suite_run(workers: str, packing: bool) -> None:
    """Run the conformance suite (dev profile, default kernel); print its wall time and the
    examples per second of each property."""
    out = tempfile.mkdtemp(prefix="pypto-bench-")
    cmd = [sys.executable, "-m", "pytest", "conformance", "--hypothesis-profile=dev",
           f"--report-dir={out}", "-q", "-n", workers] + ([] if packing else ["--no-packing"])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - t0
    [path] = Path(out).glob("conformance-*.json")
    results = json.loads(path.read_text())["results"]
    total_ex = total_s = 0.0
    label = "with packing" if packing else "without packing (--no-packing)"
    print(f"suite, dev profile, -n {workers}, {label}:")
    for r in results:
        n, sec = r.get("examples", 0), r["seconds"]
        total_ex, total_s = total_ex + n, total_s + sec
        rate = f"{n / sec:.2f} examples/s" if n and sec else "(explicit example or skipped)"
        print(f"  {r['property']:52} {r['status']:8} {n:4} examples {sec:7.1f} s  {rate}")
    print(f"  {total_ex:.0f} examples in {total_s:.0f} s of test time "
          f"({total_ex / total_s:.2f} examples/s per worker); dev-run wall time {wall:.1f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify-passes", action="store_true")
    ap.add_argument("--suite", action="store_true")
    ap.add_argument("-n", dest="workers", default="auto")
    args = ap.parse_args()
    VERIFY_PASSES = args.verify_passes
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
    if args.suite:
        suite_run(args.workers, packing=True)
        suite_run(args.workers, packing=False)


if __name__ == "__main__":
    main()
