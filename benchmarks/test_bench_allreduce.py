"""Data-parallel benchmarks, each one ``mpiexec`` job of benchmarks/allreduce_ranks.py (see its docstring):

- ``test_allreduce``: xpnn's bucketed gradient averaging vs mpi4py's plain ``Allreduce`` of the same bytes (2 ranks;
  goal: xpnn's throughput >= 90% of mpi4py's);
- ``test_mlp_ranks``: the 784-512-512-10 MLP step on 1 and 2 ranks (batch 256 per rank), and the share of the
  gradient all-reduce hidden behind backward.

The numbers are measured inside the job (min and median over rounds, the implementations taking turns) and printed
as a table; pytest-benchmark's own columns time the whole job once (start-up included) and mean little. With
``--benchmark-disable`` (the CI smoke run) each job runs 2 rounds. OpenBLAS uses one thread per rank, so that
1 and 2 ranks use the same number of cores per rank.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "allreduce_ranks.py")


def _mpiexec() -> str | None:
    here = os.path.join(sysconfig.get_path("scripts"), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


pytestmark = pytest.mark.skipif(_mpiexec() is None or importlib.util.find_spec("mpi4py") is None,
                                reason='needs mpi4py and mpiexec: pip install "xpnn[mpi]"')


def _job(n: int, *args: str, rounds: int) -> dict[str, Any]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [_mpiexec(), "-n", str(n), sys.executable, PROGRAM, *args, "--rounds", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ms(t: dict[str, float]) -> str:
    return f"{t['min'] * 1e3:8.2f} {t['median'] * 1e3:8.2f}"


def _rounds(benchmark: Any, full: int) -> int:
    return 2 if getattr(benchmark, "disabled", False) else full


def test_allreduce(benchmark, capsys):
    rounds = _rounds(benchmark, 60)
    res: dict[str, Any] = {}
    benchmark.pedantic(lambda: res.update(_job(2, "allreduce", rounds=rounds)), rounds=1, iterations=1)
    lines = ["", "allreduce, 2 ranks, float32 gradient buffer; ms per call (min, median); throughput ratio = "
                 "mpi4py median / xpnn median (>= 0.9: goal met)",
             f"{'bytes':>8} {'buckets':>7} {'xpnn min':>8} {'median':>8} {'mpi4py min':>10} {'median':>8} "
             f"{'ratio':>6}"]
    for size, r in res["allreduce"].items():
        ratio = r["mpi4py"]["median"] / r["xpnn"]["median"]
        lines.append(f"{size:>8} {r['buckets']:>7} {_ms(r['xpnn'])} {_ms(r['mpi4py']):>19} {ratio:6.2f}")
        benchmark.extra_info[size] = {"xpnn": r["xpnn"], "mpi4py": r["mpi4py"], "ratio_median": ratio}
    with capsys.disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("cap_mb", ["25", "1"])
def test_mlp_ranks(benchmark, capsys, cap_mb):
    rounds = _rounds(benchmark, 30)
    res: dict[int, Any] = {}

    def run() -> None:
        for n in (1, 2):
            res[n] = _job(n, "mlp", "--cap-mb", cap_mb, rounds=rounds)["mlp"]

    benchmark.pedantic(run, rounds=1, iterations=1)
    one, two = res[1], res[2]
    speedup = 2 * one["step"]["median"] / two["step"]["median"]  # samples per second, 2 ranks over 1
    lines = ["", f"MLP 784-512-512-10 step, batch 256 per rank, bucket_cap_mb={cap_mb} ({two['buckets']} buckets, "
                 f"{two['grad_bytes'] / 2**20:.1f} MiB of gradients); ms (min, median)",
             f"  1 rank : step {_ms(one['step'])}   backward {_ms(one['backward_local'])}",
             f"  2 ranks: step {_ms(two['step'])}   all-reduce alone {_ms(two['allreduce'])}",
             f"           backward: local {_ms(two['backward_local'])}   then all-reduce "
             f"{_ms(two['backward_then_allreduce'])}   DDP (overlapped) {_ms(two['backward_ddp'])}",
             f"  throughput 2 ranks / 1 rank: {speedup:.2f}x (ideal 2); share of the all-reduce hidden behind "
             f"backward (medians): {two['hidden_share']:.0%}"]
    benchmark.extra_info.update(one_rank=one, two_ranks=two, throughput_ratio=speedup)
    with capsys.disabled():
        print("\n".join(lines))
