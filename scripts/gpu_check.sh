#!/usr/bin/env bash
# Verification layer 3, on a machine with an NVIDIA GPU and no internet (xpnn and its test extras installed):
#   1. `xpnn info` (CuPy/CUDA versions, device, kernels enabled),
#   2. the kernel tests: tests marked `cuda` run every kernel through CuPy against the reference (they must not
#      skip here), plus the offline-compile and CPU-shim layers,
#   3. compute-sanitizer memcheck/racecheck on the row kernels, when the CUDA toolkit provides it,
#   4. the benchmarks (`pytest benchmarks --benchmark-only`),
# and prints a short table last. Outputs (JUnit XML, benchmark JSON) go to $OUT (default: a new temp folder).
# Exit status: 0 when every step passed, 1 otherwise, 2 when no GPU is visible.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}

$PY -m xpnn info
if ! $PY -c "import sys, xpnn.backend as b; sys.exit(0 if b.cuda_available() else 1)"; then
    echo "gpu_check: CuPy sees no CUDA device; nothing to check here (CPU layers: pytest tests/test_kernels_*.py)" >&2
    exit 2
fi

declare -A STATUS
$PY -m pytest tests/test_cuda_kernels.py tests/test_kernels_compile.py tests/test_kernels_shim.py \
    tests/test_kernels_train.py -q -rs -p no:cacheprovider --junitxml="$OUT/kernel-tests.xml"
STATUS[tests]=$?

if command -v compute-sanitizer >/dev/null 2>&1; then
    compute-sanitizer --tool memcheck --error-exitcode 1 \
        $PY -m pytest tests/test_cuda_kernels.py -q -p no:cacheprovider -k "cross_entropy or row_kernels or adam"
    STATUS[memcheck]=$?
    compute-sanitizer --tool racecheck --error-exitcode 1 \
        $PY -m pytest tests/test_cuda_kernels.py -q -p no:cacheprovider -k "float32 and (4097 or 1000)"
    STATUS[racecheck]=$?
else
    echo "gpu_check: compute-sanitizer not found (part of the CUDA toolkit); sanitizer runs skipped"
    STATUS[memcheck]=skipped
    STATUS[racecheck]=skipped
fi

$PY -m pytest benchmarks --benchmark-only -q -p no:cacheprovider --benchmark-json="$OUT/bench.json"
STATUS[benchmarks]=$?

$PY - "$OUT" "${STATUS[tests]}" "${STATUS[memcheck]}" "${STATUS[racecheck]}" "${STATUS[benchmarks]}" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out, tests, memcheck, racecheck, bench = sys.argv[1:]
def word(rc): return {"0": "ok", "skipped": "skipped"}.get(rc, f"FAILED (exit {rc})")
print("\n==== xpnn GPU check " + "=" * 60)
counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
try:
    for suite in ET.parse(Path(out) / "kernel-tests.xml").getroot().iter("testsuite"):
        for k in counts:
            counts[k] += int(suite.get(k, 0))
except Exception as exc:
    print(f"(no test report: {exc})")
cuda_skips = 0
try:
    for case in ET.parse(Path(out) / "kernel-tests.xml").getroot().iter("testcase"):
        if "test_cuda_kernels" in case.get("classname", "") and case.find("skipped") is not None:
            cuda_skips += 1
except Exception:
    pass
print(f"{'step':<14}{'result':<22}detail")
print(f"{'kernel tests':<14}{word(tests):<22}{counts['tests']} run, {counts['failures'] + counts['errors']} failed, "
      f"{counts['skipped']} skipped ({cuda_skips} cuda-marked skipped: must be 0)")
print(f"{'memcheck':<14}{word(memcheck):<22}")
print(f"{'racecheck':<14}{word(racecheck):<22}")
print(f"{'benchmarks':<14}{word(bench):<22}{out}/bench.json")
try:
    rows = json.loads((Path(out) / "bench.json").read_text())["benchmarks"]
    print(f"\n{'benchmark':<60}{'mean (us)':>12}{'min (us)':>12}")
    for b in rows:
        s = b["stats"]
        print(f"{b['fullname'].split('::')[-1][:59]:<60}{s['mean'] * 1e6:>12.1f}{s['min'] * 1e6:>12.1f}")
        extra = {k: v for k, v in b.get("extra_info", {}).items() if isinstance(v, (int, float, str))}
        if extra:
            print("    " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))
except Exception as exc:
    print(f"(no benchmark report: {exc})")
failed = any(rc not in ("0", "skipped") for rc in (tests, memcheck, racecheck, bench)) or cuda_skips > 0
sys.exit(1 if failed else 0)
PYEOF
