"""xpnn.distributed: the bucket plan and data sharding in this process; everything that needs several ranks under
``mpiexec -n 2`` / ``-n 3`` (the cases in tests/distributed_worker.py), each with a timeout so that a hang fails
the test instead of stalling CI."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from xpnn import nn
from xpnn.data import batches
from xpnn.distributed import DistributedError, plan_buckets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
TIMEOUT = 120  # seconds for one mpiexec job (they take 1-5 s)


def _mpiexec() -> str | None:
    here = os.path.join(sysconfig.get_path("scripts"), "mpiexec")  # the mpich wheel's, next to this Python
    return here if os.path.exists(here) else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    _mpiexec() is None or not __import__("importlib").util.find_spec("mpi4py"),
    reason='needs mpi4py and mpiexec: pip install "xpnn[mpi]"')


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_ranks(n: int, *args: str, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    cmd = [_mpiexec(), "-n", str(n), sys.executable, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s (a hang):\n{exc.stdout}\n{exc.stderr}")


# --- in this process -------------------------------------------------------------------------------------------

def test_bucket_plan_covers_the_buffer_backwards_and_splits_parameters():
    model = nn.Sequential(nn.Linear(5, 7, seed=0), nn.ReLU(), nn.Linear(7, 3, seed=1))  # 42 + 24 = 66 floats
    buf = model.flat_buffer()
    w0, b0, w1, b1 = buf.params
    # offsets are 64-byte aligned (16 float32): w0 [0, 35), b0 [48, 55), w1 [64, 85), b1 [96, 99); zero padding
    assert [(p._offset, p._offset + p.size) for p in buf.params] == [(0, 35), (48, 55), (64, 85), (96, 99)]
    buckets = plan_buckets(buf, 10 * 4)  # 10 float32 elements per bucket
    assert [(b.start, b.stop) for b in buckets] == [(89, 99), (79, 89), (69, 79), (59, 69), (49, 59), (39, 49),
                                                    (29, 39), (19, 29), (9, 19), (0, 9)]
    assert buckets[0].params == [b1]  # the last parameters' gradients come first in backward
    assert buckets[-1].params == [w0]
    for b in buckets:  # each bucket holds the parameters it overlaps
        want = [p for p in buf.params if p._offset < b.stop and p._offset + p.size > b.start]
        assert [id(p) for p in b.params] == [id(p) for p in want]
    assert buckets[1].params == [w1] and buckets[5].params == [b0] and buckets[6].params == [w0]
    split = [p for p in buf.params if sum(any(q is p for q in b.params) for b in buckets) > 1]
    assert [id(p) for p in split] == [id(w0), id(b0), id(w1)]  # w0, b0 and w1 straddle bucket boundaries
    one = plan_buckets(buf, 25 * 2**20)
    assert len(one) == 1 and (one[0].start, one[0].stop) == (0, 99) and one[0].params == buf.params
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        plan_buckets(buf, 0)


def test_bucket_plan_leaves_out_parameters_that_do_not_require_grad():
    """PyTorch's DDP reduces only parameters that require grad: no bucket reaches into a frozen one."""
    model = nn.Sequential(nn.Linear(5, 7, seed=0), nn.ReLU(), nn.Linear(7, 3, seed=1), nn.Linear(3, 2, seed=2))
    buf = model.flat_buffer()
    w0, b0, w1, b1, w2, b2 = buf.params  # [0, 35) [48, 55) [64, 85) [96, 99) [112, 118) [128, 130)
    for p in (w0, b0, b1):
        p.requires_grad_(False)
    buckets = plan_buckets(buf, 10 * 4)
    assert [(b.start, b.stop) for b in buckets] == [(120, 130), (112, 120), (75, 85), (65, 75), (64, 65)]
    assert [[id(p) for p in b.params] for b in buckets] == [[id(b2)], [id(w2)], [id(w1)], [id(w1)], [id(w1)]]
    one = plan_buckets(buf, 25 * 2**20)
    assert [(b.start, b.stop) for b in one] == [(112, 130), (64, 85)]
    assert plan_buckets(buf, 40, params=list(buf.params))[0].stop == 130  # an explicit list: every parameter
    for p in buf.params:
        p.requires_grad_(False)
    assert plan_buckets(buf, 40) == []


def test_shards_are_distributed_sampler_shards():
    X = np.arange(10)[:, None]
    plain = np.concatenate([xb[:, 0] for xb, _ in batches(X, None, 3, seed=4)])
    for world in (2, 3, 4):
        shards = [[xb[:, 0] for xb, _ in batches(X, None, 3, seed=4, rank=r, world_size=world)] for r in range(world)]
        rows = [np.concatenate(s) for s in shards]
        per_rank = -(-10 // world)
        assert all(r.size == per_rank for r in rows)  # padded to equal length
        assert len({len(s) for s in shards}) == 1  # the same number of batches (steps) on every rank
        padded = np.resize(plain, per_rank * world)
        for r in range(world):
            assert np.array_equal(rows[r], padded[r::world])
        # batch k of all ranks together = batch k of the unsharded order with world x the batch size
        together = np.sort(np.concatenate([s[0] for s in shards]))
        assert np.array_equal(together, np.sort(padded[: 3 * world]))
    ordered = [xb[:, 0].tolist() for xb, _ in batches(X, None, 2, shuffle=False, rank=1, world_size=3)]
    assert ordered == [[1, 4], [7, 0]]


def test_sharding_errors():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="same way"):
        next(batches(X, None, 2, rank=0, world_size=2))  # no seed: ranks would shuffle differently
    with pytest.raises(ValueError, match="rank must be"):
        next(batches(X, None, 2, seed=0, rank=2, world_size=2))
    with pytest.raises(ValueError, match="world_size"):
        next(batches(X, None, 2, seed=0, world_size=0))


def test_no_group_defaults_and_errors():
    from xpnn import distributed as dist

    assert not dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    with pytest.raises(DistributedError, match="init_process_group"):
        dist.DistributedDataParallel(nn.Linear(2, 2))
    with pytest.raises(DistributedError, match="no process group"):
        dist.barrier()


def test_import_does_not_start_mpi():
    code = "import sys, xpnn, xpnn.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# --- one process, real MPI (no mpiexec: world size 1) ----------------------------------------------------------

@needs_mpi
def test_single_process_group_runs_the_same_code():
    out = subprocess.run([sys.executable, WORKER, "fit"], capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert out.returncode == 0 and "fit ok (world size 1)" in out.stdout, out.stderr


@needs_mpi
def test_single_process_frozen_and_unused_parameters():
    """World size 1 runs the same bookkeeping: a frozen layer or an unused parameter must not stop training."""
    cases = ["frozen_parameters", "find_unused_parameters", "unused_parameter"]
    out = subprocess.run([sys.executable, WORKER, *cases], capture_output=True, text=True, env=_env(),
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    for case in cases:
        assert f"{case} ok (world size 1)" in out.stdout, out.stdout


@needs_mpi
def test_nccl_without_gpus_is_a_clear_error():
    from xpnn.backend import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU")
    code = "import xpnn.distributed as d\ntry:\n d.init_process_group('nccl')\nexcept d.DistributedError as e:\n print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert "cannot use NCCL" in out.stdout and "no CUDA device" in out.stdout, out.stdout + out.stderr


# --- several ranks ---------------------------------------------------------------------------------------------

CASES = ["collectives", "parity_explicit", "parity_tape", "parity_float32", "buckets_split", "no_sync",
         "tape_no_sync", "unused_parameter", "frozen_parameters", "find_unused_parameters", "frozen_mismatch",
         "hand_written_backward", "fit", "batchnorm_buffers"]


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_ranks(n):
    """Parity with one process (float64, 1e-10 relative) and bit-identical ranks after every step, for each case
    of the worker (one mpiexec job runs them all, in order)."""
    out = run_ranks(n, WORKER, *CASES)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for case in CASES:
        assert f"{case} ok (world size {n})" in out.stdout, out.stdout[-3000:]


@needs_mpi
def test_readme_data_parallel_example_on_two_ranks(tmp_path):
    """The README's "Data-parallel training" Python block, as written, under mpiexec -n 2: it learns digits (its
    input is load_digits() as it comes, already in [0, 1])."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Data-parallel training", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_ddp.py"
    script.write_text(block, encoding="utf-8")
    cmd = [_mpiexec(), "-n", "2", sys.executable, str(script)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the README example did not finish in {TIMEOUT} s (a hang):\n{exc.stdout}\n{exc.stderr}")
    assert out.returncode == 0, out.stderr[-3000:]
    accuracy = float(out.stdout.split("2 ranks: loss ")[1].split("accuracy ")[1].split()[0])
    assert accuracy > 0.93, out.stdout  # 0.96; 0.81 when the block divided the [0, 1] pixels by 16 again
    assert (tmp_path / "model.npz").exists()


@needs_mpi
def test_mismatched_models_fail_on_every_rank():
    out = run_ranks(2, WORKER, "mismatch")
    assert out.returncode != 0
    assert "the ranks built different models" in out.stderr and "rank 1 has (17, 6)" in out.stderr


@needs_mpi
def test_fit_with_different_data_on_the_ranks_fails_on_every_rank():
    out = run_ranks(2, WORKER, "fit_mismatch")
    assert out.returncode != 0
    assert "every rank must pass the same data" in out.stderr and "'n': (20, 21)" in out.stderr


@needs_mpi
def test_a_failing_rank_stops_all_ranks():
    t0 = time.perf_counter()
    out = run_ranks(2, WORKER, "fail", timeout=60)
    assert out.returncode != 0
    assert "planted failure on rank 1" in out.stderr and "aborting all ranks" in out.stderr
    assert time.perf_counter() - t0 < 30  # not the 60 s the other rank would sleep, nor the 1800 s timeout


@needs_mpi
def test_a_stalled_rank_times_out():
    out = run_ranks(3, WORKER, "stall", timeout=60, XPNN_DIST_TIMEOUT="2")
    assert out.returncode != 0
    assert "DistributedTimeoutError" in out.stderr and "waited more than 2 s" in out.stderr


@needs_mpi
def test_ctrl_c_stops_all_ranks():
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, WORKER, "spin"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "spinning"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # what the terminal sends to mpiexec on Ctrl-C; mpiexec forwards it
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


@needs_mpi
def test_cli_distributed_trains_and_saves_once(tmp_path):
    path = tmp_path / "ck.npz"
    out = run_ranks(2, "-m", "xpnn", "train", "--distributed", "--epochs", "2", "--no-progress", "--save", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("saved checkpoint") == 1 and out.stdout.count("test accuracy") == 1
    assert out.stdout.count("epoch 2/2") == 1 and "x 2 ranks (mpi)" in out.stdout
    import xpnn
    from xpnn.cli import build_model

    ck = xpnn.load(path)
    assert ck["config"]["world_size"] == 2
    model = build_model(ck["config"]["sizes"])
    model.load_state_dict(ck["model"])  # the module's keys, no "module." prefix
    acc = float(out.stdout.split("test accuracy: ")[1].split()[0])
    assert acc > 0.85, out.stdout


@needs_mpi
def test_cli_distributed_without_mpiexec_says_so_and_trains():
    out = subprocess.run([sys.executable, "-m", "xpnn", "train", "--distributed", "--epochs", "1", "--no-progress"],
                         capture_output=True, text=True, env=_env(), timeout=TIMEOUT, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "world size 1" in out.stderr and "test accuracy" in out.stdout


@needs_mpi
def test_cli_error_stops_every_rank(tmp_path):
    out = run_ranks(2, "-m", "xpnn", "train", "--distributed", "--dataset", "mnist:" + str(tmp_path / "none"),
                    timeout=60)
    assert out.returncode != 0 and "xpnn train: error" in out.stderr


@needs_mpi
def test_info_shows_mpi_and_nccl():
    out = subprocess.run([sys.executable, "-m", "xpnn", "info"], capture_output=True, text=True, env=_env(),
                         timeout=60)
    assert out.returncode == 0
    assert "distributed: mpi4py" in out.stdout and "NCCL" in out.stdout


# --- NCCL (needs a GPU) ----------------------------------------------------------------------------------------

@pytest.mark.cuda
@needs_mpi
def test_nccl_ddp_on_one_gpu():
    """World size 1 on NCCL: the communicator, the side stream and the bucketed path on CuPy gradients."""
    code = (
        "import numpy as np, cupy as cp, xpnn\n"
        "from xpnn import nn, distributed as dist\n"
        "g = dist.init_process_group('nccl'); assert g.backend == 'nccl', g\n"
        "a = cp.arange(5, dtype=cp.float32); dist.all_reduce(a); assert cp.allclose(a, cp.arange(5))\n"
        "m = nn.Sequential(nn.Linear(4, 8, backend='cuda', seed=0), nn.ReLU(), nn.Linear(8, 2, backend='cuda', seed=1))\n"
        "ddp = dist.DistributedDataParallel(m, bucket_cap_mb=16 * 4 / 2**20)\n"
        "x = cp.ones((3, 4), dtype=cp.float32); y = ddp(x); ddp.backward(cp.ones_like(y))\n"
        "ref = np.array(m.flat_buffer().grad.get()); m.zero_grad(); y = m(x); m.backward(cp.ones_like(y))\n"
        "assert np.allclose(ref, m.flat_buffer().grad.get()); print('nccl ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert "nccl ok" in out.stdout, out.stderr
