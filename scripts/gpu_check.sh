#!/usr/bin/env bash
# Verification layer 3, on a machine with an NVIDIA GPU and no internet:
#   scripts/gpu_check.sh [tests] [sanitizer] [graphs] [bench]        (no argument: all four)
#   tests      tests marked `cuda` run every kernel through CuPy against the reference (they must not skip here;
#              the transformer kernels' in tests/test_kernels_transformer.py),
#              plus the CPU layers (offline compile: skipped with the reason when nvcc / CuPy's pinned private
#              helpers are missing; CPU shim and its sanitizer build: skipped with the reason without g++/libasan)
#   sanitizer  compute-sanitizer memcheck (CuPy's memory pool disabled: small overruns would land in pool slack)
#              and racecheck on the row kernels and the transformer kernels (layer norm, attention, embedding
#              backward, GELU), when the CUDA toolkit provides it
#   graphs     CUDA-graph capture tests (graphed vs eager after 20 steps, fit(cuda_graph=True)) and a table of
#              training steps: eager xpnn vs graphed xpnn vs PyTorch CUDA (`xpnn bench --preset graphs`)
#   bench      the benchmarks (`pytest benchmarks --benchmark-only`; the transformer kernels vs the generic path,
#              layer_norm's fraction of the copy floor: benchmarks/test_bench_transformer_kernels.py)
# Python: $PYTHON, else `python`, else `python3`. Setup it does when needed, offline: array-api-compat from a wheel
# folder ($WHEELS, else ./wheels or ./.wheels), xpnn with `pip install --no-deps --no-build-isolation -e .`.
# It stops early, saying why, when CuPy or NVRTC is unusable (what `xpnn info` reports).
# Outputs go to $OUT (default: a new temp folder), at most 9 files: info.txt, info.json, tests.xml, tests.log,
# sanitizer.log, graphs.log, bench.json, bench.log, summary.txt. Each step runs under `timeout $STEP_TIMEOUT`
# (default 540 s). A short table is printed last (scripts/gpu_check_summary.py). Exit status: 0 when every step run
# passed, 1 otherwise, 2 when no GPU is visible, 3 when the setup failed, 4 when NVRTC (or CuPy) is unusable.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif command -v python >/dev/null 2>&1; then
    PY=python
elif command -v python3 >/dev/null 2>&1; then
    PY=python3
else
    echo "gpu_check: neither python nor python3 is on PATH (set PYTHON=<interpreter>)" >&2
    exit 3
fi
STEP_TIMEOUT=${STEP_TIMEOUT:-540}
unset CI  # under CI=true the offline-compile and shim layers fail instead of skipping when their toolchain is missing
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests sanitizer graphs bench)
wants() { local s; for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# ---- setup (offline) ---------------------------------------------------------------------------------------------
if ! $PY -c "import array_api_compat" 2>/dev/null; then
    found=""
    for d in "${WHEELS:-}" wheels .wheels; do
        if [ -n "$d" ] && ls "$d"/array_api_compat-*.whl >/dev/null 2>&1; then found=$d; break; fi
    done
    if [ -z "$found" ]; then
        echo "gpu_check: array-api-compat is not installed and no wheel was found (set WHEELS=<folder>)" >&2
        exit 3
    fi
    $PY -m pip install -q --no-index --find-links "$found" array-api-compat || exit 3
fi
if ! $PY -c "import importlib.metadata as m; m.distribution('xpnn')" 2>/dev/null; then
    $PY -m pip install -q --no-deps --no-build-isolation -e . \
        || echo "gpu_check: 'pip install -e .' failed; running xpnn from the source tree" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, also under compute-sanitizer

$PY -m xpnn info 2>&1 | tee "$OUT/info.txt"
$PY - "$OUT/info.json" <<'PYEOF'
import json, sys
from importlib import metadata

import xpnn._cuda

info = xpnn._cuda.info()
for dist in ("xpnn", "numpy", "torch", "array-api-compat"):
    try:
        info[dist.replace("-", "_")] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        info[dist.replace("-", "_")] = None
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=1, default=str)
PYEOF
nvrtc_problem=$($PY - <<'PYEOF'
import xpnn._cuda

info = xpnn._cuda.info()
cupy, nvrtc = str(info.get("cupy")), str(info.get("nvrtc"))
if cupy.startswith("not installed") or info.get("cupy") is None:
    print(f"CuPy is {cupy}: pip install cupy-cuda13x (or cupy-cuda12x, matching the driver)")
elif nvrtc.startswith("unavailable") or info.get("nvrtc") is None:
    print(f"NVRTC is {nvrtc}: CuPy compiles every kernel with it; install the CUDA toolkit's NVRTC "
          f"(pip install nvidia-cuda-nvrtc-cu13, or -cu12 for cupy-cuda12x)")
PYEOF
)
if [ -n "$nvrtc_problem" ]; then
    echo "gpu_check: stopping early: $nvrtc_problem (see 'xpnn info' above)" >&2
    exit 4
fi
if ! $PY -c "import sys, xpnn.backend as b; sys.exit(0 if b.cuda_available() else 1)"; then
    echo "gpu_check: CuPy sees no CUDA device; nothing to check here (CPU layers: pytest tests/test_kernels_*.py)" >&2
    exit 2
fi

# ---- steps -------------------------------------------------------------------------------------------------------
declare -A STATUS=([tests]="not run" [memcheck]="not run" [racecheck]="not run" [graphs]="not run" [bench]="not run")
run_step() {  # run_step NAME LOG COMMAND...: status = exit code (124: timed out)
    local name=$1 log=$2
    shift 2
    echo "==== gpu_check: $name: $*" | tee -a "$log"
    timeout "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$log"
    STATUS[$name]=${PIPESTATUS[0]}
}

if wants tests; then
    run_step tests "$OUT/tests.log" $PY -m pytest tests/test_cuda_kernels.py tests/test_kernels_*.py \
        -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml"
fi

# pytest with CuPy's device and pinned memory pools disabled: every allocation is its own cudaMalloc, so
# compute-sanitizer sees an overrun by a few bytes (inside a pool block it would land in the block's slack).
NO_POOL='import sys, cupy, pytest; cupy.cuda.set_allocator(None); cupy.cuda.set_pinned_memory_allocator(None); sys.exit(pytest.main(sys.argv[1:]))'
if wants sanitizer; then
    SANITIZER=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer 2>/dev/null)
    if [ -n "$SANITIZER" ]; then
        run_step memcheck "$OUT/sanitizer.log" "$SANITIZER" --tool memcheck --error-exitcode 1 \
            $PY -c "$NO_POOL" tests/test_cuda_kernels.py tests/test_kernels_transformer.py -q -p no:cacheprovider \
            -k "((cross_entropy or row_kernels or adam or inf_and_nan) and not float64 and not beyond_32bit and not deterministic) or (on_gpu and float32)"
        run_step racecheck "$OUT/sanitizer.log" "$SANITIZER" --tool racecheck --error-exitcode 1 \
            $PY -c "$NO_POOL" tests/test_cuda_kernels.py tests/test_kernels_transformer.py -q -p no:cacheprovider \
            -k "float32 and (((cross_entropy or row_kernels) and (64-7 or 300-1000 or 9-4097)) or (on_gpu and (37 or 4097 or 17)))"
    else
        echo "gpu_check: compute-sanitizer not found (part of the CUDA toolkit); sanitizer runs skipped" \
            | tee -a "$OUT/sanitizer.log"
        STATUS[memcheck]=skipped
        STATUS[racecheck]=skipped
    fi
fi

if wants graphs; then
    run_step graphs "$OUT/graphs.log" bash -c "$PY -m pytest tests/test_cuda_graphs.py tests/test_amp.py \
        tests/test_no_host_reads.py -q -rs -p no:cacheprovider && \
        $PY -m xpnn bench --preset graphs --impls xpnn-cuda xpnn-cuda-graph torch-cuda --reference xpnn-cuda"
fi

if wants bench; then
    if [ -d benchmarks ] && $PY -c "import pytest_benchmark" 2>/dev/null; then
        run_step bench "$OUT/bench.log" $PY -m pytest benchmarks --benchmark-only -q -p no:cacheprovider \
            --benchmark-json="$OUT/bench.json"
    else
        echo "gpu_check: no benchmarks/ folder or no pytest-benchmark; benchmarks skipped" | tee -a "$OUT/bench.log"
        STATUS[bench]=skipped
    fi
fi

# ---- table -------------------------------------------------------------------------------------------------------
$PY scripts/gpu_check_summary.py "$OUT" tests="${STATUS[tests]}" memcheck="${STATUS[memcheck]}" \
    racecheck="${STATUS[racecheck]}" graphs="${STATUS[graphs]}" bench="${STATUS[bench]}" | tee "$OUT/summary.txt"
exit "${PIPESTATUS[0]}"
