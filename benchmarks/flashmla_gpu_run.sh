#!/usr/bin/env bash
# FlashMLA's sparse attention (sgl-flash-mla 1.0.0) under the suite, on one H100 or H200
# (issue 11; docs/findings/flashmla.md): the bf16 sparse prefill adapter (kernels/adapters/flashmla.py)
# and the FP8 sparse decode adapters (kernels/adapters/flashmla_fp8.py, V4 and V3.2 caches).
# NOT YET RUN ON A GPU: this script has only been read and shell-checked on a machine
# without one; no result in the findings comes from it. Prepared for a machine without registry access
# (torch 2.11+cu130, python3 3.12 with hypothesis, pytest, jinja2): the wheel travels in the
# working tree under the ignored .carry/. Here, once:
#
#     pip download --no-deps sgl-flash-mla==1.0.0 -d .carry
#
# then, through the device tool, from the repository root:
#
#     run(command="bash benchmarks/flashmla_gpu_run.sh", carry=[".carry"], timeout_s=600)
#
# Steps, each under its own time cap (about 9 minutes in all, under the device tool's 10
# minutes a command; the device budget is 15 minutes a session, machine start included):
# environment (30 s); install the wheel (--no-deps, --no-index, into /tmp); does it load
# with this torch (60 s; stop here, exit 0, if not); probes and benchmark (60 s,
# benchmarks/flashmla_cuda.py); the conformance suite on the bf16 adapter (140 s, ci
# profile, report under $OUT/flashmla-report); on the FP8 decode adapters, V4 (120 s,
# $OUT/flashmla-fp8-v4-report) and V3.2 (90 s, $OUT/flashmla-fp8-v32-report), skipped
# with the reason if kernels.adapters.flashmla_fp8.available() says no; the kill-rate command
# (50 s, under $OUT/killrate-flashmla). A capped step is interrupted with SIGINT, so pytest
# still writes its report of what ran. At the end $OUT is trimmed to at most 8 files
# (what the device tool brings back): the log, the JSON reports, the kill-rate pytest log
# and one archive of everything.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-flashmla}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
# the suite run as the issue asks (serial, so replay lines apply as printed); "-n 8" would
# get through more properties inside the cap
XDIST=${XDIST:--p no:xdist}
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/flashmla-gpu.log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }

step "environment"
nvidia-smi -L || true
timeout 60 "$PY" -c 'import sys, torch, hypothesis, pytest
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| hypothesis", hypothesis.__version__, "| pytest", pytest.__version__)
print(torch.cuda.get_device_name(), "sm_%d%d" % torch.cuda.get_device_capability())'

step "install the wheel (no deps, no index) into /tmp/flashmla-site"
WHEEL=$(ls .carry/sgl_flash_mla-1.0.0-*.whl 2>/dev/null | head -1)
if [ -z "$WHEEL" ]; then
    echo "stop: no .carry/sgl_flash_mla-1.0.0-*.whl (pip download --no-deps sgl-flash-mla==1.0.0 -d .carry, and carry .carry)"
    exit 1
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/flashmla-site "$WHEEL" || exit 1
export PYTHONPATH=/tmp/flashmla-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
# the suite's pytest plugin is an entry point of the pip-installed project; not installed here
if ! "$PY" -c 'import sys, importlib.metadata as m
sys.exit(0 if any(e.value == "plugin.entry" for e in m.entry_points(group="pytest11")) else 1)'; then
    export PYTEST_PLUGINS=plugin.entry  # the entry point sparse_attn_conformance
fi

step "does flash_mla load with this torch?"
timeout 120 "$PY" -c 'import torch
try:
    import flash_mla
    print("flash_mla", flash_mla.__version__, "from", flash_mla.__file__, "| has_legacy:", flash_mla.has_legacy())
except BaseException as exc:
    print("import flash_mla FAILED:", type(exc).__name__, exc)
from kernels import flashmla, flashmla_fp8
print("kernels.adapters.flashmla.available():", flashmla.available())
print("kernels.adapters.flashmla_fp8.available():", flashmla_fp8.available())'
REASON=$(timeout 120 "$PY" -c 'from kernels import flashmla; print(flashmla.available() or "")' 2>&1 | tail -1)
if [ -n "$REASON" ]; then
    echo "stop: $REASON"
    exit 0
fi

step "probes and benchmark (benchmarks/flashmla_cuda.py)"
timeout -s INT -k 20 60 "$PY" benchmarks/flashmla_cuda.py --examples 30 --iters 50
echo "benchmark exit: $?"

step "conformance suite: pytest conformance --kernel=flashmla --hypothesis-profile=ci $XDIST"
# shellcheck disable=SC2086
timeout -s INT -k 20 140 "$PY" -m pytest conformance --kernel=flashmla --hypothesis-profile=ci \
    $XDIST --report-dir="$OUT/flashmla-report" -q -rfEs --no-header
echo "pytest exit: $?"

FP8_REASON=$(timeout 60 "$PY" -c 'from kernels import flashmla_fp8; print(flashmla_fp8.available() or "")' 2>&1 | tail -1)
for v in v4:120 v32:90; do
    name=${v%%:*} cap=${v##*:}
    step "FP8 decode: pytest conformance --kernel=sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_$name --hypothesis-profile=ci $XDIST"
    if [ -n "$FP8_REASON" ]; then
        echo "skipped: $FP8_REASON"
        continue
    fi
    # shellcheck disable=SC2086
    timeout -s INT -k 20 "$cap" "$PY" -m pytest conformance \
        --kernel=sparse_attn_conformance.kernels.adapters.flashmla_fp8:sparse_attn_$name --hypothesis-profile=ci \
        $XDIST --report-dir="$OUT/flashmla-fp8-$name-report" -q -rfEs --no-header
    echo "pytest exit: $?"
done

step "kill-rate: python -m sparse_attn_conformance.nightly.killrate --kernels flashmla --profile ci"
timeout -s INT -k 20 50 "$PY" -m sparse_attn_conformance.nightly.killrate --kernels flashmla --profile ci \
    --out "$OUT/killrate-flashmla" -n 0
echo "killrate exit: $?"

step "pack \$OUT (the device tool brings back at most 8 files)"
cd "$OUT" || exit 0
REPORTS="flashmla-report flashmla-fp8-v4-report flashmla-fp8-v32-report killrate-flashmla"
# shellcheck disable=SC2086
tar czf flashmla-results.tgz $REPORTS 2>/dev/null
# shellcheck disable=SC2086
find $REPORTS -type f ! -name '*.json' ! -name pytest.log -delete 2>/dev/null
# shellcheck disable=SC2086
ls -la "$OUT" $REPORTS 2>/dev/null
echo "done ($(date +%T))"
sleep 1  # let tee finish the log
