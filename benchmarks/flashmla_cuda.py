"""FlashMLA's sparse attention (kernels/adapters/flashmla.py) through the suite, on a GPU: figures,
never asserts.

    python benchmarks/flashmla_cuda.py [--examples 40] [--iters 50]

1. Examples per second through the suite: drawn cases (the adapter's preconditions, the
   ci profile's work budget) through adapter, kernel and comparison with the reference;
   prints how many matched, the worst error-to-tolerance ratio among them, and the first
   mismatches (a mismatch is a finding for docs/findings/flashmla.md, not an error here).
2. The kernel's own time per call at the model's shape (B=64, S=2, H=64, D=512, WIN=128,
   IDX_TOPK=512, BLOCK=128): CUDA events around `flash_mla_sparse_fwd` on tensors already
   on the GPU, median of `--iters` after warm-up; and the whole adapter call (translation
   on the CPU, copies, kernel, copy back) and the `tiled` torch kernel on the same GPU for
   scale.

0. First, probes: hand-built calls at the places where FlashMLA's docs or its SM90 source
   predict a difference from the contract (docs/findings/flashmla.md, tests/test_flashmla.py
   emulates each), each run through the adapter and compared with the reference.

Without the package or a CUDA GPU it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
from hypothesis import HealthCheck, given, settings

from sparse_attn_conformance.attention.compare import compare, golden, tolerance
from sparse_attn_conformance.contracts.v1 import Inputs, validate
from sparse_attn_conformance.kernels.adapters import flashmla
from sparse_attn_conformance.kernels.torch import tiled
from sparse_attn_conformance.plugin.profiles import PROFILES
from sparse_attn_conformance.strategies.v1.cases import cases

MODEL_SHAPE = {"B": 64, "S": 2, "H": 64, "D": 512, "WIN": 128, "IDX_TOPK": 512, "BLOCK": 128}


def _call(H: int, D: int, rows, seqused, win, scale, sink, q=None, ori=None, cmp=None) -> Inputs:
    """A hand-built call: window block table [[1]] over 2 blocks of 4 rows, compressed
    table [[0, 1]] over 3 blocks; random values unless given."""
    gen = torch.Generator().manual_seed(0)
    B, S = len(rows), len(rows[0])
    return validate(
        q=q if q is not None else torch.randn(B, S, H, D, generator=gen).to(torch.bfloat16),
        ori_kv=ori if ori is not None else torch.randn(2, 4, D, generator=gen).to(torch.bfloat16),
        ori_block_table=torch.ones(B, -(-win // 4), dtype=torch.int32),
        cmp_kv=cmp if cmp is not None else torch.randn(3, 4, D, generator=gen).to(torch.bfloat16),
        cmp_block_table=torch.tensor([[0, 1]] * B, dtype=torch.int32),
        topk_idxs=torch.tensor(rows, dtype=torch.int32),
        attn_sink=torch.tensor([sink[h % len(sink)] for h in range(H)], dtype=torch.float32),
        seqused_kv=torch.tensor(seqused, dtype=torch.int32), softmax_scale=scale, window_size=win)


def probes() -> None:
    """The predicted differences, one call each, through the adapter (and its variants)."""
    H, D = 64, 512
    inf = math.inf
    base = dict(H=H, D=D, rows=[[[0, 1, 2, 3]]], seqused=[4], win=4, sink=[0.0])
    big_q = torch.full((1, 1, H, D), 2.0**55).to(torch.bfloat16)
    low_k = torch.full((2, 4, D), -(2.0**45))
    low_k[1, 1] = -(2.0**44)
    fma_q = torch.zeros(1, 1, H, D)
    fma_q[..., 0] = 3.0 * 2.0**36
    fma_k = torch.zeros(2, 4, D)
    fma_k[1, 0, :2] = torch.tensor([1.0, 1.0])
    fma_k[1, 1, :2] = torch.tensor([1.0 + 2.0**-7, -1.0])
    nan_cmp = torch.randn(3, 4, D).to(torch.bfloat16)
    nan_cmp[0, 1] = float("nan")
    cases = [
        ("zero scale (SM90 source: -inf * 0 = NaN)", dict(base, scale=0.0)),
        ("negative scale (SM90 source: -inf * s = +inf)", dict(base, scale=-D**-0.5)),
        ("all logits below -1e30/log2(e) (SM90 source: output 0)",
         dict(base, rows=[[[0, 1]]], seqused=[2], win=2, scale=1.0, sink=[-inf], q=big_q,
              ori=low_k.to(torch.bfloat16))),
        ("logits near 1.5e11 (SM90 source, if FFMA-fused: wrong weights)",
         dict(base, rows=[[[0, 1]]], seqused=[2], win=2, scale=0.75, sink=[-inf],
              q=fma_q.to(torch.bfloat16), ori=fma_k.to(torch.bfloat16))),
        ("NaN row behind topk_length (docs caveat: NaN; SM90 source: none)",
         dict(base, rows=[[[0, 1, 2, 5]]], seqused=[3], scale=D**-0.5, cmp=nan_cmp)),
        ("empty token, sinks +-inf, 0 (contract and docs: exactly 0)",
         dict(base, rows=[[[0, 1, 4, 5], [0, 1, 4, 5]]], seqused=[1], scale=D**-0.5,
              sink=[inf, -inf, 0.0])),
        ("sinks +-inf, +-3e38, +-1e30 (contract: exp(sink - m))",
         dict(base, scale=D**-0.5, sink=[inf, -inf, 3e38, -3e38, 1e30, -1e30, 88.0])),
    ]
    kernels = (("sparse_attn", flashmla.sparse_attn),
               ("no_topk_length", flashmla.sparse_attn_no_topk_length),
               ("positive_scale", flashmla.sparse_attn_positive_scale))
    print("probes (ok: within the tolerance of the reference):")
    for label, spec in cases:
        inputs = _call(**spec)
        gold = golden(inputs)
        tol = tolerance(inputs, gold)
        verdicts = []
        for name, kernel in kernels:
            try:
                out = kernel(**inputs.kwargs()).float()
            except Exception as exc:  # a figure, not a test: say what it raised
                verdicts.append(f"{name}: raised {type(exc).__name__}: {str(exc)[:80]}")
                continue
            result = compare(out, gold, tol)
            finite = bool(torch.isfinite(out).all())
            zero = bool((out == 0).all())
            verdicts.append(f"{name}: {'ok' if result.ok else 'MISMATCH'} (ratio "
                            f"{result.worst_ratio:.3g}{'' if finite else ', non-finite'}"
                            f"{', all zero' if zero else ''})")
        print(f"  {label}\n    " + "; ".join(verdicts))


def suite_throughput(n: int) -> None:
    stats = {"ok": 0, "mismatch": 0, "raised": 0, "worst_ok": 0.0, "kernel_s": []}
    first: list[str] = []

    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases(flashmla.PRECONDITIONS, budget=PROFILES["ci"][2]))
    def run(case):
        kw = case.inputs.kwargs()
        t0 = time.perf_counter()
        try:
            out = flashmla.sparse_attn(**kw)
            torch.cuda.synchronize()
        except Exception as exc:  # a figure, not a test: count it and go on
            stats["raised"] += 1
            first.append(f"{case!r}: raised {type(exc).__name__}: {exc}")
            return
        stats["kernel_s"].append(time.perf_counter() - t0)
        gold = golden(case.inputs)
        result = compare(out.float(), gold, tolerance(case.inputs, gold), "flashmla")
        if result.ok:
            stats["ok"] += 1
            stats["worst_ok"] = max(stats["worst_ok"], result.worst_ratio)
        else:
            stats["mismatch"] += 1
            first.append(f"{case!r} scale={case.inputs.softmax_scale:.4g}: "
                         f"{result.message.splitlines()[0]}")

    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    done = stats["ok"] + stats["mismatch"] + stats["raised"]
    print(f"suite: {done} drawn examples in {wall:.1f} s ({done / wall:.2f} examples/s, "
          f"draw + adapter + kernel + fp64 reference + comparison)")
    print(f"  matched {stats['ok']}, mismatched {stats['mismatch']}, raised {stats['raised']}; "
          f"worst matching error / tolerance {stats['worst_ok']:.3f}")
    if stats["kernel_s"]:
        print(f"  adapter call (translate, copies, kernel, copy back): median "
              f"{statistics.median(stats['kernel_s']) * 1e3:.2f} ms")
    for line in first[:5]:
        print(f"  - {line}")


def model_shape_timing(iters: int) -> None:
    holder = {}

    @settings(max_examples=1, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases(flashmla.PRECONDITIONS, fixed=MODEL_SHAPE, budget=2**30))
    def draw(case):
        holder["case"] = case

    draw()
    case = holder["case"]
    inputs = validate(**case.inputs.kwargs())
    t0 = time.perf_counter()
    translated = flashmla.translate(inputs)
    translate_ms = (time.perf_counter() - t0) * 1e3
    T, H, D = translated.q.shape
    topk = translated.indices.shape[-1]
    print(f"model shape B=64 S=2 H=64 D=512 WIN=128 IDX_TOPK=512 BLOCK=128 "
          f"({T} tokens, topk {topk} after padding); translate (CPU): {translate_ms:.1f} ms")
    # the drawn call, and every token's row full (640 live entries, the model's long-context
    # HCA/CSA case): the kernel walks ceil(topk_length / 64) blocks, so these differ
    gen = torch.Generator().manual_seed(0)
    s_kv = translated.kv.shape[0]
    full = translated._replace(
        indices=torch.randint(0, s_kv, translated.indices.shape, generator=gen,
                              dtype=torch.int32),
        topk_length=torch.full((T,), topk, dtype=torch.int32))
    for label, t in ((f"drawn call (path={case.path})", translated), ("full rows", full)):
        fn, args = flashmla.device_call(t)
        for _ in range(5):
            fn(args)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        live = int(t.topk_length.sum())
        med_ms = statistics.median(times)
        # the rows the kernel must gather at least: every live entry once per 64-head block
        gathered = live * (H // 64) * D * 2
        print(f"  flash_mla_sparse_fwd, {label}, {live} live entries: median "
              f"{med_ms * 1e3:.1f} us, min {min(times) * 1e3:.1f} us over {iters} calls; "
              f"{gathered / (med_ms * 1e-3) / 1e9:.0f} GB/s of gathered rows")
    kw = case.inputs.kwargs()
    for name, kernel in (("adapter call", flashmla.sparse_attn), ("tiled (torch)", tiled.sparse_attn)):
        kernel(**kw)
        torch.cuda.synchronize()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            kernel(**kw)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        print(f"  {name}: median {statistics.median(ts) * 1e3:.1f} ms (wall, 5 calls)")
    gold = golden(case.inputs)
    result = compare(flashmla.sparse_attn(**kw).float(), gold, tolerance(case.inputs, gold))
    print(f"  matches the reference: {result.ok} (error / tolerance {result.worst_ratio:.3f})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=40)
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    reason = flashmla.available()
    if reason is not None:
        print(f"not run: {reason}")
        return 0
    module = sys.modules[flashmla.MODULE]
    print(f"{flashmla.MODULE} {getattr(module, '__version__', '?')} from {module.__file__}")
    probes()
    model_shape_timing(args.iters)
    suite_throughput(args.examples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
