"""In-process A/B of the compiled ReLU forward and leaky ReLU forward/backward (``cpu_kernels.relu_forward``,
``leaky_relu_forward``, ``leaky_relu_backward``: "new") against the NumPy paths they replace ("old": the wrappers
refusing), alternating block by block in a shuffled order (seeded); per-call min and median:

- ``relu``: ``F.relu`` of a 256x512 float32 array (the recycled-buffer path);
- ``leaky``: ``F.leaky_relu`` then ``F.leaky_relu_backward`` of 256x512 float32 arrays;
- ``step``: the ``mlp_step batch256`` training step (784-512-512-10 ReLU MLP, Adam; explicit API), only these
  kernels switched (Adam and the ReLU backward stay compiled in both arms).

    python benchmarks/ab_relu_forward.py [relu|leaky|step ...] [--rounds R]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable

import numpy as np

from xpnn import functional as F
from xpnn.functional import cpu_kernels

_NAMES = ("relu_forward", "leaky_relu_forward", "leaky_relu_backward")
_REAL = {name: getattr(cpu_kernels, name) for name in _NAMES}


def _arm(new: bool) -> None:
    for name in _NAMES:
        setattr(cpu_kernels, name, _REAL[name] if new else (lambda *a: False))


def _ab(label: str, fn: Callable[[], object], rounds: int, calls: int) -> None:
    for _ in range(5):
        fn()
    times: dict[str, list[float]] = {"new": [], "old": []}
    order, rng = ["new", "old"], random.Random(0)
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for k in order:
                _arm(k == "new")
                fn()  # (one untimed call after the switch)
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[k].append((time.perf_counter() - t0) / calls * 1e6)
    finally:
        _arm(True)
    for k, v in times.items():
        print(f"{label} {k}: min {min(v):.1f} us  median {statistics.median(v):.1f} us")
    new, old = times["new"], times["old"]
    ratio_med = statistics.median(new) / statistics.median(old)
    print(f"{label} new/old: min {min(new) / min(old):.3f}  median {ratio_med:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cases", nargs="*", default=["relu", "leaky", "step"])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal((256, 512)).astype(np.float32) for _ in range(2))
    if "relu" in args.cases:
        _ab("relu 256x512 float32", lambda: F.relu(x), args.rounds, 50)
    if "leaky" in args.cases:
        _ab("leaky_relu fwd+bwd 256x512 float32",
            lambda: (F.leaky_relu(x, 0.01), F.leaky_relu_backward(x, dy, 0.01)), args.rounds, 50)
    if "step" in args.cases:
        from xpnn.bench.cases import make_runner

        r = make_runner("mlp_step", "batch256", "xpnn-numpy")
        _ab("mlp_step batch256 (xpnn-numpy)", r.fn, args.rounds, 3)


if __name__ == "__main__":
    main()
