"""xpnn and PyTorch timed the way a user runs them: one fresh process, the libraries' default threads (set
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` to compare single-threaded), no allocator tuning (no
``settle_allocator``), wall clock, the implementations alternating call by call so both see the same load, in an order shuffled each round
(seeded): the implementation timed right after another library's calls starts with its buffers out of cache (and,
after PyTorch's allocator returned memory, page-faults again): 0.3-0.9 ms of a one-thread LeNet-5 step, which a
fixed order charged to the same implementation every round.

    python benchmarks/interleaved.py lenet_step batch64 [--rounds 40] [--calls 5] [--impls xpnn-numpy torch-cpu]
        [--settle 0.3]

``--settle S``: before each implementation's calls, sleep S seconds and run one untimed call. A library's idle
threads keep spinning after its calls (OpenBLAS's ~0.1 s, PyTorch's OpenMP threads a while) on the cores the next
implementation needs: without it, each library's times include the other's spinning threads (on 2 cores,
2026-12-06: PyTorch's LeNet-5 step 5.2 ms after a pause, 6.8-21 ms right after xpnn's calls), so the ratios
compare each as it runs alone in a process, the way a user runs one of them.

Prints, per implementation, min and median of the per-call wall time (each round times ``--calls`` calls in a row)
and the process's minor page faults per call, then the ratio of the first implementation to the last (min, median,
median of the per-round ratios).
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

import xpnn.bench.conv_cases  # noqa: F401  (registers the conv cases)
import xpnn.bench.rnn_cases  # noqa: F401  (registers the recurrent case)
from xpnn.bench.cases import CASES, make_runner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("size")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--impls", nargs="+", default=["xpnn-numpy", "torch-cpu"])
    p.add_argument("--settle", type=float, default=0.0,
                   help="seconds to sleep (then one untimed call) before each implementation's calls")
    a = p.parse_args()
    runners = {i: make_runner(a.case, a.size, i) for i in a.impls}
    for r in runners.values():
        for _ in range(3):  # warm-up: optimizer state, first-touch pages
            r.fn()
    times: dict[str, list[float]] = {i: [] for i in a.impls}
    faults = dict.fromkeys(a.impls, 0)
    order, rng = list(runners.items()), random.Random(0)
    for _ in range(a.rounds):
        rng.shuffle(order)
        for impl, r in order:
            if a.settle > 0:
                time.sleep(a.settle)
                r.fn()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for _ in range(a.calls):
                r.fn()
            times[impl].append((time.perf_counter() - t0) / a.calls)
            faults[impl] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    for impl in a.impls:
        t = times[impl]
        print(f"{a.case} {a.size} {impl:<16} min {min(t) * 1e3:9.2f} ms  median {statistics.median(t) * 1e3:9.2f} ms"
              f"  page faults/call {faults[impl] / (a.rounds * a.calls):8.1f}")
    first, last = times[a.impls[0]], times[a.impls[-1]]
    per_round = statistics.median(x / y for x, y in zip(first, last))
    print(f"ratio {a.impls[0]} / {a.impls[-1]}: min {min(first) / min(last):.2f}, median "
          f"{statistics.median(first) / statistics.median(last):.2f}, median of per-round ratios {per_round:.2f}")


if __name__ == "__main__":
    main()
