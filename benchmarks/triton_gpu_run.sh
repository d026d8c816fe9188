#!/usr/bin/env bash
# The `triton` kernel under the suite on one CUDA GPU (issue 18). UNVERIFIED: no GPU was lent
# to the task that wrote it. Prepared for a machine with torch (CUDA build), triton 3.9.0,
# hypothesis, pytest and jinja2; through the device tool, from the repository root:
#
#     run(command="bash benchmarks/triton_gpu_run.sh", timeout_s=600)
#
# Steps, each capped: environment; the benchmark (benchmarks/triton_kernel.py, model shape);
# the conformance suite on `triton` natively (ci profile, report under $OUT/triton-report);
# the kill-rate run over its seeded Triton bugs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-triton}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# the GPU run must compile: never the interpreter
unset TRITON_INTERPRET
exec > >(tee "$OUT/triton-gpu.log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step "environment"
nvidia-smi -L || true
timeout 60 "$PY" -c 'import torch, triton; print("torch", torch.__version__, "| triton", triton.__version__,
      "|", torch.cuda.get_device_name())' || { echo "no CUDA torch or triton: stop"; exit 0; }

step "benchmark at the model shape"
timeout -s INT 120 "$PY" benchmarks/triton_kernel.py --shape model --iters 50

step "conformance on the triton kernel (ci profile)"
timeout -s INT 240 "$PY" -m pytest conformance --kernel=triton --hypothesis-profile=ci -p no:xdist -q \
    --report-dir="$OUT/triton-report"

step "kill-rate over the seeded Triton bugs"
timeout -s INT 150 "$PY" -m sparse_attn_conformance.nightly.killrate --kernels='triton,mutant-triton-*' --out "$OUT/killrate-triton"
echo "done"
