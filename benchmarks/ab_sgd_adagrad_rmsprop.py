"""In-process A/B of the compiled SGD, Adagrad and RMSprop updates (``cpu_kernels.sgd_update`` / ``adagrad_update``
/ ``rmsprop_update``: "new") against the NumPy passes they replace ("old": the wrapper refused), alternating block by
block in a shuffled order (seeded); per-call min and median.

    python benchmarks/ab_sgd_adagrad_rmsprop.py updates [ROUNDS]   # each update over 669,706 float32
    python benchmarks/ab_sgd_adagrad_rmsprop.py step [ROUNDS]      # a 784-512-512-10 MLP step, SGD(momentum=0.9)

669,706 is the parameter count of the 784-512-512-10 MLP (the ``mlp_step`` case), updated as one flat buffer.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

from xpnn.functional import cpu_kernels, updates

N = 669_706


def _updates() -> dict[str, Callable[[], Any]]:
    """One call per update variant over fresh float32 arrays of N elements (the same arrays each call)."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal(N).astype(np.float32) * 1e-3
    scratch: list = []

    def arrays(k: int) -> list[np.ndarray]:  # a parameter and k states of its own per variant (no NaN from another)
        return [rng.standard_normal(N).astype(np.float32)] + [np.zeros(N, np.float32) for _ in range(k)]

    sgd, mom, nes, ada, rms, rmc = arrays(0), arrays(1), arrays(1), arrays(1), arrays(1), arrays(3)
    return {
        "sgd": lambda: updates.sgd_update(sgd[0], g, lr=1e-3, scratch=scratch),
        "sgd momentum=0.9": lambda: updates.sgd_update(mom[0], g, mom[1], lr=1e-3, momentum=0.9, scratch=scratch),
        "sgd nesterov wd": lambda: updates.sgd_update(nes[0], g, nes[1], lr=1e-3, momentum=0.9, nesterov=True,
                                                      weight_decay=1e-4, scratch=scratch),
        "adagrad": lambda: updates.adagrad_update(ada[0], g, ada[1], step=3, lr=1e-3, scratch=scratch),
        "rmsprop": lambda: updates.rmsprop_update(rms[0], g, rms[1], lr=1e-3, alpha=0.99, eps=1e-8,
                                                  weight_decay=0.0, momentum=0.0, centered=False, scratch=scratch),
        "rmsprop centered momentum": lambda: updates.rmsprop_update(
            rmc[0], g, rmc[1], rmc[2], rmc[3], lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9,
            centered=True, scratch=scratch),
    }


def _step() -> dict[str, Callable[[], Any]]:
    """One training step (zero_grad, forward, backward, SGD step) of the 784-512-512-10 ReLU MLP, batch 256."""
    from xpnn import nn, optim

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    model = nn.Sequential(nn.Linear(784, 512, seed=0), nn.ReLU(), nn.Linear(512, 512, seed=1), nn.ReLU(),
                          nn.Linear(512, 10, seed=2))
    assert sum(q.data.size for q in model.parameters()) == N
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    return {"mlp step sgd momentum=0.9": step}


def _ab(name: str, fn: Callable[[], Any], rounds: int, calls: int) -> None:
    real = {k: getattr(cpu_kernels, k) for k in ("sgd_update", "adagrad_update", "rmsprop_update")}
    arms = {"new": real, "old": {k: (lambda *a, **kw: False) for k in real}}
    for _ in range(3):
        fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    order, rng = list(arms), random.Random(0)
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for k in order:
                for attr, f in arms[k].items():
                    setattr(cpu_kernels, attr, f)
                fn()  # (one untimed call after the switch)
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                times[k].append((time.perf_counter() - t0) / calls * 1e3)
    finally:
        for attr, f in real.items():
            setattr(cpu_kernels, attr, f)
    new, old = times["new"], times["old"]
    print(f"{name}: new min {min(new):.3f} ms median {statistics.median(new):.3f} ms | old min {min(old):.3f} ms "
          f"median {statistics.median(old):.3f} ms | new/old min {min(new) / min(old):.3f} median "
          f"{statistics.median(new) / statistics.median(old):.3f}")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "updates"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    assert cpu_kernels.library() is not None, cpu_kernels.status()
    cases = _updates() if what == "updates" else _step()
    for name, fn in cases.items():
        _ab(name, fn, rounds, 10 if what == "updates" else 3)


if __name__ == "__main__":
    main()
