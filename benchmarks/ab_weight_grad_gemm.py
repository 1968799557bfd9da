"""In-process A/B of the ``mlp_step batch256`` training step: Linear's weight gradients added into ``.grad`` by the
BLAS GEMM with beta = 1 (``xpnn.functional.blas.gemm_accumulate``: "new") against ``np.dot`` then ``+=`` ("old",
``gemm_accumulate`` refused), alternating block by block in a shuffled order (seeded); per-step min and median.

    python benchmarks/ab_weight_grad_gemm.py [xpnn-numpy|xpnn-numpy-tape] [ROUNDS]
"""
from __future__ import annotations

import random
import statistics
import sys
import time

from xpnn.bench.cases import make_runner
from xpnn.functional import blas, cpu_threads


def main() -> None:
    impl = sys.argv[1] if len(sys.argv) > 1 else "xpnn-numpy"
    rounds, calls = int(sys.argv[2]) if len(sys.argv) > 2 else 30, 3
    r = make_runner("mlp_step", "batch256", impl)
    arms = {"new": blas.gemm_accumulate, "old": lambda a, b, out: False}
    for _ in range(5):
        r.fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    order, rng = list(arms), random.Random(0)
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for k in order:
                cpu_threads.gemm_accumulate = arms[k]
                r.fn()  # (one untimed step after the switch)
                t0 = time.perf_counter()
                for _ in range(calls):
                    r.fn()
                times[k].append((time.perf_counter() - t0) / calls * 1e3)
    finally:
        cpu_threads.gemm_accumulate = arms["new"]
    for k, v in times.items():
        print(f"{impl} {k}: min {min(v):.3f} ms  median {statistics.median(v):.3f} ms")
    new, old = times["new"], times["old"]
    print(f"new/old: min {min(new) / min(old):.3f}  median {statistics.median(new) / statistics.median(old):.3f}")


if __name__ == "__main__":
    main()
