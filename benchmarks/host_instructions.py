"""Host cost of the tiny training step (16-32-32-4 ReLU MLP, batch 8, Adam, cross-entropy, float32): instructions
per step under callgrind, or thread CPU time per step with implementations interleaved in one process.

Instructions per step: run the script twice under callgrind, with 0 and N timed steps (after the same build and
warm-up), and divide the difference of the two totals by N:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p.out python benchmarks/host_instructions.py --steps 0
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p.out python benchmarks/host_instructions.py --steps 200
    callgrind_annotate /tmp/cg.<pid>.out | head -20      # "PROGRAM TOTALS": (Ir(200) - Ir(0)) / 200

``--impls xpnn-numpy`` measures the explicit API (``model.backward(loss_fn.backward())``) instead of the tape
(``xpnn-numpy-tape``, the default); ``--instructions`` does both runs and prints the result itself.

Times (thread CPU time, ``time.thread_time``, per block of ``--steps`` steps; min and median over ``--blocks``):

    python benchmarks/host_instructions.py --time --blocks 200 --steps 20 --impls xpnn-numpy-tape torch-cpu

After the warm-up the objects made so far are frozen (``gc.freeze``), so that a full collection's cost does not
fall into one of the two runs at random (it moved the per-step figure by ~10% without it); ``--instructions``
runs both with ``PYTHONHASHSEED=0``. Several ``--impls`` take turns block by block (PyTorch runs with one thread); the ratios of each to the last are
printed. Point PYTHONPATH at another tree to measure it with the same script.
"""
from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def build(impl: str):  # noqa: ANN201
    if impl.startswith("torch"):
        import torch

        torch.set_num_threads(1)
    from xpnn.bench.cases import make_runner

    r = make_runner("tiny_step", "batch8", impl)
    for _ in range(20):  # warm-up: optimizer state, caches, first-touch pages
        r.fn()
    # the objects made so far are never scanned again: a full collection's cost does not land in the timed steps
    # at random (the collections of what the steps make still do)
    gc.collect()
    gc.freeze()
    return r


def count(impl: str, steps: int) -> int:
    """Total instructions (callgrind's Ir) of this script run with ``steps`` timed steps."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                        "--impls", impl, "--steps", str(steps)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})  # (the same dict layouts in both runs)
        text = subprocess.run(["callgrind_annotate", out], check=True, capture_output=True, text=True).stdout
    m = re.search(r"([\d,]+)\s+(?:\(100\.0%\)\s+)?PROGRAM TOTALS", text)
    assert m is not None, text[:2000]
    return int(m.group(1).replace(",", ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impls", nargs="+", default=["xpnn-numpy-tape"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--time", action="store_true", help="time blocks of --steps steps instead of just running them")
    p.add_argument("--blocks", type=int, default=100)
    p.add_argument("--instructions", action="store_true", help="run callgrind at 0 and --steps steps, print Ir/step")
    a = p.parse_args()
    if a.instructions:
        for impl in a.impls:
            i0, i1 = count(impl, 0), count(impl, a.steps)
            print(f"{impl:<16} Ir(0) {i0:,}  Ir({a.steps}) {i1:,}  per step {(i1 - i0) / a.steps:,.0f}")
        return
    runners = {impl: build(impl) for impl in a.impls}
    if not a.time:
        for r in runners.values():
            for _ in range(a.steps):
                r.fn()
        return
    times: dict[str, list[float]] = {impl: [] for impl in a.impls}
    for _ in range(a.blocks):
        for impl, r in runners.items():
            fn = r.fn
            t0 = time.thread_time()
            for _ in range(a.steps):
                fn()
            times[impl].append((time.thread_time() - t0) / a.steps)
    last = times[a.impls[-1]]
    for impl in a.impls:
        t = times[impl]
        print(f"tiny_step {impl:<16} min {min(t) * 1e6:8.1f} us  median {statistics.median(t) * 1e6:8.1f} us"
              + (f"  / {a.impls[-1]}: min {min(t) / min(last):.3f}  median "
                 f"{statistics.median(t) / statistics.median(last):.3f}" if impl != a.impls[-1] else ""))


if __name__ == "__main__":
    main()
