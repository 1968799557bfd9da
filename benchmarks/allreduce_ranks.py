"""Timed under ``mpiexec -n N python benchmarks/allreduce_ranks.py WHAT [--rounds R]`` by test_bench_allreduce.py.

WHAT:
- ``allreduce``: for gradient buffers of several sizes (float32), the time of xpnn's bucketed gradient averaging
  (``GradReducer``: every parameter marked ready, buckets launched with ``MPI_Iallreduce``, waited for, divided by
  the world size) against mpi4py's plain blocking ``comm.Allreduce(IN_PLACE, buf)`` of the same bytes.
- ``mlp``: one training step of the 784-512-512-10 ReLU MLP of the benchmark suite (Adam, cross-entropy, float32,
  batch 256 per rank) wrapped in ``DistributedDataParallel``; and, to see how much of the communication backward
  hides, three backwards taking turns: local only (``no_sync``), local then an all-reduce of the whole gradient
  buffer (no overlap), and DDP's (buckets started during backward). hidden = (sequential - DDP) / (sequential -
  local): 0 when overlapping gains nothing, 1 when the communication costs nothing.

Every timed call starts after a barrier; rank 0 prints one JSON object: min and median seconds per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xpnn import distributed as dist, nn, optim  # noqa: E402
from xpnn.nn.parameter import FlatBuffer, Parameter  # noqa: E402


def timed(fns: dict[str, Callable[[], Any]], rounds: int, group: Any) -> dict[str, dict[str, float]]:
    """Seconds per call of each function, min and median over ``rounds``; the functions take turns within each
    round (on a shared machine, load that comes and goes then hits all of them alike)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            group.comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: {"min": float(np.min(t)), "median": float(np.median(t)), "rounds": rounds} for k, t in times.items()}


def bench_allreduce(group: Any, rounds: int) -> dict[str, Any]:
    MPI = group.MPI
    out: dict[str, Any] = {}
    for mib in (1, 4, 25, 100):
        n = mib * 2**20 // 4
        # a "model" of 10 equal parameters in one flat buffer, like a gradient buffer of n float32
        params = [Parameter(np.zeros(n // 10 + (i < n % 10), dtype=np.float32)) for i in range(10)]
        buf = FlatBuffer.pack(params)
        buf.grad[...] = 1.0 + group.rank
        reducer = dist.GradReducer(buf, group, 25 * 2**20)

        def xpnn_bucketed() -> None:
            for p in reversed(params):
                reducer.mark_ready(p)

        plain = np.ones(n, dtype=np.float32)

        def mpi4py_plain() -> None:
            group.comm.Allreduce(MPI.IN_PLACE, plain, op=MPI.SUM)

        r = rounds if mib < 100 else max(3, rounds // 3)
        out[f"{mib}MiB"] = {"bytes": 4 * n, "buckets": len(reducer.buckets),
                            **timed({"xpnn": xpnn_bucketed, "mpi4py": mpi4py_plain}, r, group)}
    return out


def bench_mlp(group: Any, rounds: int, cap_mb: float) -> dict[str, Any]:
    g = np.random.default_rng(group.rank)
    batch = 256
    x = g.uniform(0, 1, (batch, 784)).astype(np.float32)
    y = g.integers(0, 10, batch)
    model = nn.Sequential(nn.Linear(784, 512, seed=0), nn.ReLU(), nn.Linear(512, 512, seed=1), nn.ReLU(),
                          nn.Linear(512, 10, seed=2))
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=cap_mb)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(ddp.parameters(), lr=1e-3)
    grad = ddp.flat_buffer().grad

    def step() -> None:
        opt.zero_grad()
        loss_fn(ddp(x), y)
        ddp.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()

    def allreduce() -> None:
        group.wait([group.iall_reduce_host(grad)], "bench")

    res: dict[str, Any] = {"buckets": len(ddp.reducer.buckets), "grad_bytes": int(grad.nbytes),
                           **timed({"step": step, "allreduce": allreduce}, rounds, group)}
    secs: dict[str, list[float]] = {"backward_local": [], "backward_then_allreduce": [], "backward_ddp": []}
    for _ in range(rounds + 1):  # the two take turns; the first round is a warm-up
        for name in secs:
            opt.zero_grad()
            loss_fn(ddp(x), y)
            dy = loss_fn.backward()
            group.comm.Barrier()  # time the backward only
            t0 = time.perf_counter()
            if name == "backward_ddp":
                ddp.backward(dy, need_input_grad=False)
            else:
                with ddp.no_sync():
                    ddp.backward(dy, need_input_grad=False)
                if name == "backward_then_allreduce":
                    allreduce()
            secs[name].append(time.perf_counter() - t0)
    for name, t in secs.items():
        res[name] = {"min": float(np.min(t[1:])), "median": float(np.median(t[1:])), "rounds": rounds}
    if group.world_size > 1:
        seq, ddp_t, local = (res[k]["median"] for k in ("backward_then_allreduce", "backward_ddp", "backward_local"))
        res["hidden_share"] = float((seq - ddp_t) / (seq - local)) if seq > local else float("nan")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["allreduce", "mlp"])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cap-mb", type=float, default=25)
    args = ap.parse_args()
    group = dist.init_process_group("mpi")
    res = bench_allreduce(group, args.rounds) if args.what == "allreduce" else bench_mlp(group, args.rounds, args.cap_mb)
    if group.rank == 0:
        print(json.dumps({"world_size": group.world_size, args.what: res}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
