"""The ``small_calls`` case, xpnn against the NumPy expression, interleaved in one process: each round times
``--calls`` calls of every (call, impl) in turn, so load from other processes hits both sides alike; prints the
min and median per call over the rounds and the ratios. ``--clock thread`` measures the thread's CPU time instead
of wall time (on a shared machine, time spent preempted then does not count).

    PYTHONPATH=$PWD python benchmarks/small_calls_interleaved.py [--rounds 200] [--calls 500] [--clock thread]
"""
from __future__ import annotations

import argparse
import statistics
import time

from xpnn.bench.cases import CASES, make_runner

IMPLS = ("xpnn-numpy", "numpy-plain")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--clock", choices=("wall", "thread"), default="wall")
    args = p.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    sizes = list(CASES["small_calls"].sizes)
    runners = {(s, i): make_runner("small_calls", s, i) for s in sizes for i in IMPLS}
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for r in runners.values():  # warm up
        for _ in range(args.calls):
            r.fn()
    for _ in range(args.rounds):
        for key, r in runners.items():
            fn = r.fn
            t0 = clock()
            for _ in range(args.calls):
                fn()
            times[key].append((clock() - t0) / args.calls * 1e6)
    print(f"{'call':14s} {'xpnn min':>9s} {'median':>8s} {'numpy min':>10s} {'median':>8s} {'ratio min':>10s} "
          f"{'ratio median':>13s}   (us per call, {args.clock} clock, {args.rounds} rounds x {args.calls} calls)")
    for s in sizes:
        xs, ns = sorted(times[(s, "xpnn-numpy")]), sorted(times[(s, "numpy-plain")])
        xm, nm = statistics.median(xs), statistics.median(ns)
        print(f"{s:14s} {xs[0]:9.2f} {xm:8.2f} {ns[0]:10.2f} {nm:8.2f} {xs[0] / ns[0]:10.2f} {xm / nm:13.2f}")


if __name__ == "__main__":
    main()
