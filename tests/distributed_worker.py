"""Programs run under ``mpiexec -n N python tests/distributed_worker.py CASE [CASE ...]`` by tests/test_distributed.py.

Each case raises (so the abort hook takes the whole job down with a non-zero status) when a check fails, and
prints ``CASE ok`` on rank 0 when all passed. Rank 0 also trains an unwrapped copy of the model on the whole
global batches (the single-process reference) and compares.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xpnn  # noqa: E402
from xpnn import distributed as dist, nn, optim  # noqa: E402
from xpnn.data import batches  # noqa: E402
from xpnn.train import fit  # noqa: E402

RTOL64 = 1e-10


def make_model(dtype: str = "float64", hidden: int = 16, seed: int | None = None) -> nn.Sequential:
    r = dist.get_rank()
    s = 100 + r if seed is None else seed  # different per rank: DDP must broadcast rank 0's values
    return nn.Sequential(nn.Linear(6, hidden, dtype=dtype, seed=s), nn.Tanh(), nn.Linear(hidden, hidden, dtype=dtype,
                         seed=s + 1), nn.ReLU(), nn.Linear(hidden, 3, dtype=dtype, seed=s + 2))


def data(n: int = 60, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(7)
    return g.normal(size=(n, 6)).astype(dtype), g.integers(0, 3, size=n)


def reference_copy(ddp: dist.DistributedDataParallel, dtype: str = "float64") -> nn.Sequential:
    ref = make_model(dtype, hidden=ddp.module[0].out_features, seed=0)
    ref.load_state_dict(ddp.state_dict())
    return ref


def check_same_on_all_ranks(model: nn.Module, what: str) -> None:
    flat = np.asarray(model.flat_buffer().data)
    every = dist.get_process_group().allgather_object(flat)
    for r, other in enumerate(every):
        if not np.array_equal(other, every[0]):
            raise AssertionError(f"{what}: rank {r} parameters differ from rank 0's "
                                 f"(max diff {np.max(np.abs(other - every[0]))})")


def check_close(a: np.ndarray, b: np.ndarray, rtol: float, what: str) -> None:
    err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)
    if not err <= rtol:
        raise AssertionError(f"{what}: relative difference {err:.3g} > {rtol:g}")


def explicit_steps(ddp: dist.DistributedDataParallel, opt: optim.Optimizer, X: np.ndarray, y: np.ndarray,
                   B: int, rank: int, world: int, loss_fn: nn.Module) -> None:
    for xb, yb in batches(X, y, B, seed=3, rank=rank, world_size=world):
        opt.zero_grad()
        loss_fn(ddp(xb), yb)
        ddp.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        check_same_on_all_ranks(ddp, "explicit step")


def reference_steps(ref: nn.Module, X: np.ndarray, y: np.ndarray, B: int, loss_fn: nn.Module) -> nn.Module:
    opt = optim.Adam(ref.parameters(), lr=1e-2)
    for xb, yb in batches(X, y, B, seed=3):
        opt.zero_grad()
        loss_fn(ref(xb), yb)
        ref.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    return ref


def case_parity_explicit(cap_mb: float = 25) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(12 * world)
    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=cap_mb)
    check_same_on_all_ranks(ddp, "after wrapping")
    ref = reference_copy(ddp) if rank == 0 else None
    opt = optim.Adam(ddp.parameters(), lr=1e-2)
    explicit_steps(ddp, opt, X, y, 4, rank, world, nn.CrossEntropyLoss())
    if rank == 0:
        reference_steps(ref, X, y, 4 * world, nn.CrossEntropyLoss())
        check_close(ddp.flat_buffer().data, ref.flat_buffer().data, RTOL64, "parameters vs one process")


def tape_steps(ddp: dist.DistributedDataParallel, opt: optim.Optimizer, X: np.ndarray, y: np.ndarray, B: int,
               rank: int, world: int, loss_fn: nn.Module) -> None:
    """The same steps on the tape: ``loss_fn(ddp(tensor), y).backward()``."""
    for xb, yb in batches(X, y, B, seed=3, rank=rank, world_size=world):
        opt.zero_grad()
        loss = loss_fn(ddp(xpnn.tensor(xb)), yb)
        loss.backward()
        opt.step()
        check_same_on_all_ranks(ddp, "tape step")


def case_parity_tape() -> None:
    """``loss.backward()``: the hooks alone start and finish the reduction (no ddp.backward call)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(12 * world)
    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=100 * 8 / 2**20)
    ref = reference_copy(ddp) if rank == 0 else None
    tape_steps(ddp, optim.Adam(ddp.parameters(), lr=1e-2), X, y, 4, rank, world, nn.CrossEntropyLoss())
    if rank == 0:
        reference_steps(ref, X, y, 4 * world, nn.CrossEntropyLoss())
        check_close(ddp.flat_buffer().data, ref.flat_buffer().data, RTOL64, "tape parameters vs one process")


def case_tape_no_sync() -> None:
    """Two micro-batches under no_sync on the tape, the third synchronised: the average of the sums."""
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(9 * world)
    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=0.0005)
    ref = reference_copy(ddp) if rank == 0 else None
    loss_fn = nn.CrossEntropyLoss()
    parts = list(batches(X, y, 3, seed=1, rank=rank, world_size=world))
    ddp.zero_grad()
    with ddp.no_sync():
        for xb, yb in parts[:2]:
            loss_fn(ddp(xpnn.tensor(xb)), yb).backward()
    xb, yb = parts[2]
    loss_fn(ddp(xpnn.tensor(xb)), yb).backward()
    grads = dist.get_process_group().allgather_object(np.array(ddp.flat_buffer().grad))
    if any(not np.array_equal(g, grads[0]) for g in grads):
        raise AssertionError("tape no_sync: ranks have different gradients after the synchronised backward")
    if rank == 0:
        ref.zero_grad()
        for xb, yb in batches(X, y, 3 * world, seed=1):
            loss_fn(ref(xb), yb)
            ref.backward(loss_fn.backward(), need_input_grad=False)
        check_close(grads[0], ref.flat_buffer().grad, RTOL64, "tape accumulated gradient vs one process")


def case_unused_parameter() -> None:
    """A parameter outside the loss on the tape: its bucket never completes; the next forward says which."""
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(6, 4, dtype="float64", seed=0)
            self.unused = nn.Linear(4, 2, dtype="float64", seed=1)

        def forward(self, x):
            return self.body(x)

    ddp = dist.DistributedDataParallel(TwoHeads())
    X, y = data(8)
    nn.CrossEntropyLoss()(ddp(xpnn.tensor(X)), y % 4).backward()
    try:
        ddp(X)
    except dist.DistributedError as exc:
        if "unused.weight" not in str(exc) or "find_unused_parameters=True" not in str(exc):
            raise AssertionError(f"the error should name unused.weight and find_unused_parameters: {exc}") from None
    else:
        raise AssertionError("a forward after an incomplete reduction should raise")


def local_grads(model: nn.Module, xb: np.ndarray, loss) -> list[np.ndarray]:
    """This rank's gradients of ``loss(model(xb))`` on an unwrapped model (the tape), and their average over the
    ranks: what DDP must give."""
    model.zero_grad()
    loss(model(xpnn.tensor(xb))).backward()
    mine = [np.array(p.grad) for p in model.parameters()]
    every = dist.get_process_group().allgather_object(mine)
    return [sum(g[i] for g in every) / len(every) for i in range(len(mine))]


def frozen_first_layer(seed: int = 0) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, dtype="float64", seed=seed), nn.Linear(2, 1, dtype="float64", seed=seed + 1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    return model


def case_frozen_parameters() -> None:
    """A frozen first layer: only the head is reduced (averaged over ranks after the first backward, on the tape and
    the explicit API), the next forward runs, the frozen gradients stay zero; unfreezing on every rank plans new
    buckets that reduce the first layer too."""
    rank, world = dist.get_rank(), dist.get_world_size()
    g = np.random.default_rng(10 + rank)  # different data per rank
    xs = [g.normal(size=(4, 2)) for _ in range(4)]
    loss = lambda out: (out ** 2).mean()  # noqa: E731
    ddp = dist.DistributedDataParallel(frozen_first_layer(), bucket_cap_mb=3 * 8 / 2**20)
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    for step, xb in enumerate(xs):
        if step == 2:  # unfreeze on every rank: the next forward plans buckets over every parameter
            for p in ddp.module[0].parameters():
                p.requires_grad_(True)
        twin = frozen_first_layer()
        twin.load_state_dict(ddp.state_dict())
        for p, q in zip(twin.parameters(), ddp.parameters()):
            p.requires_grad_(q.requires_grad)
        want = local_grads(twin, xb, loss)
        opt.zero_grad()
        if step % 2 == 0:
            loss(ddp(xpnn.tensor(xb))).backward()
        else:
            out = ddp(xb)
            ddp.backward(2.0 * out / out.size, need_input_grad=False)  # d mean(out**2) / d out
        for (name, p), w in zip(ddp.named_parameters(), want):
            check_close(np.array(p.grad), w, RTOL64, f"step {step}: averaged gradient of {name}")
        if step < 2 and (np.any(ddp.module[0].weight.grad != 0) or np.any(ddp.module[0].bias.grad != 0)):
            raise AssertionError("a frozen parameter got a gradient")
        opt.step()
        check_same_on_all_ranks(ddp, f"frozen layer, step {step}")
    if len(ddp.reducer.params) != 4:
        raise AssertionError("after unfreezing, every parameter should be reduced")


class Heads(nn.Module):
    """A body and two heads: ``head`` is used on rank 1 only, ``never`` on no rank."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4, dtype="float64", seed=0)
        self.head = nn.Linear(4, 4, dtype="float64", seed=1)
        self.never = nn.Linear(4, 2, dtype="float64", seed=2)
        self.use_head = False

    def forward(self, x):
        h = self.body(x)
        return h + self.head(h) if self.use_head else h


def case_find_unused_parameters() -> None:
    """find_unused_parameters=True on the tape: a head used on rank 1 only gets (0 + rank 1's gradient) / world on
    every rank (PyTorch's semantics), a head used nowhere keeps a zero gradient, and training goes on."""
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(8 * world)
    model = Heads()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=10 * 8 / 2**20, find_unused_parameters=True)
    twin = Heads()
    twin.load_state_dict(ddp.state_dict())
    model.use_head = twin.use_head = rank == 1
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(ddp.parameters(), lr=0.1)
    for step, (xb, yb) in enumerate(batches(X, y, 4, seed=0, rank=rank, world_size=world)):
        twin.load_state_dict(ddp.state_dict())
        want = local_grads(twin, xb, lambda out: loss_fn(out, yb % 4))
        opt.zero_grad()
        loss_fn(ddp(xpnn.tensor(xb)), yb % 4).backward()
        for (name, p), w in zip(ddp.named_parameters(), want):
            check_close(np.array(p.grad), w, RTOL64, f"step {step}: gradient of {name}")
        if np.any(model.never.weight.grad != 0):
            raise AssertionError("a parameter unused on every rank should keep a zero gradient")
        opt.step()
        check_same_on_all_ranks(ddp, f"find_unused_parameters, step {step}")


class Scale(nn.Module):
    """A layer in the first version's protocol (its own backward, adding into .grad itself): no hooks fire."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(np.linspace(0.5, 1.5, 6))

    def forward(self, x):
        self._x = x
        return x * self.w.data

    def backward(self, dy, need_input_grad=True):
        self.w.grad += (dy * self._x).sum(axis=0)
        return dy * self.w.data if need_input_grad else None


def case_hand_written_backward() -> None:
    """fit on a model with a hand-written backward (explicit path): the parameters without hooks are reduced by
    ``finish`` at the end of ``ddp.backward``."""
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(8 * world)

    def model() -> nn.Sequential:
        return nn.Sequential(Scale(), nn.Linear(6, 3, dtype="float64", seed=rank))

    ddp = dist.DistributedDataParallel(model(), bucket_cap_mb=10 * 8 / 2**20)
    ref = model() if rank == 0 else None
    if ref is not None:
        ref.load_state_dict(ddp.state_dict())
    fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1), X, y, epochs=2, batch_size=4, seed=2,
        progress=False)
    check_same_on_all_ranks(ddp, "hand-written backward")
    if rank == 0:
        fit(ref, nn.CrossEntropyLoss(), optim.SGD(ref.parameters(), lr=0.1), X, y, epochs=2, batch_size=4 * world,
            seed=2, progress=False)
        check_close(ddp.flat_buffer().data, ref.flat_buffer().data, RTOL64, "hand-written backward vs one process")


def case_parity_float32() -> None:
    """float32: 1e-5 relative to one process; ranks still bit-identical."""
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(12 * world, "float32")
    ddp = dist.DistributedDataParallel(make_model("float32"), bucket_cap_mb=0.0001)
    ref = reference_copy(ddp, "float32") if rank == 0 else None
    explicit_steps(ddp, optim.Adam(ddp.parameters(), lr=1e-2), X, y, 4, rank, world, nn.CrossEntropyLoss())
    if rank == 0:
        reference_steps(ref, X, y, 4 * world, nn.CrossEntropyLoss())
        check_close(ddp.flat_buffer().data, ref.flat_buffer().data, 1e-5, "float32 parameters vs one process")


def case_batchnorm_buffers() -> None:
    """BatchNorm running statistics: rank 0's at wrap time and before every training forward."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = nn.Sequential(nn.Linear(6, 8, dtype="float64", seed=rank), nn.BatchNorm1d(8, dtype="float64"),
                          nn.ReLU(), nn.Linear(8, 3, dtype="float64", seed=rank + 5))
    model[1].running_mean[...] = rank  # different on every rank before wrapping
    ddp = dist.DistributedDataParallel(model)
    if not np.all(model[1].running_mean == 0):
        raise AssertionError("BatchNorm running_mean was not broadcast from rank 0 at wrap time")
    X, y = data(10 * world)
    fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1), X, y, epochs=2, batch_size=5, seed=0,
        progress=False)
    before = dist.get_process_group().allgather_object(np.asarray(model[1].running_mean))
    if world > 1 and all(np.array_equal(b, before[0]) for b in before):
        raise AssertionError("the ranks' running statistics should differ after their last (sharded) batch")
    ddp(X[:5])  # the same rows on every rank: equal statistics after it only if it started from rank 0's
    stats = dist.get_process_group().allgather_object([np.asarray(b) for _, b in ddp.named_buffers()])
    if any(not all(np.array_equal(a, b) for a, b in zip(s, stats[0])) for s in stats):
        raise AssertionError("BatchNorm buffers differ across ranks")
    check_same_on_all_ranks(ddp, "BatchNorm model after fit")


def case_buckets_split() -> None:
    # 40 float64 elements per bucket: boundaries fall inside the 16x16 weight and elsewhere
    ddp_probe = dist.DistributedDataParallel(make_model(), bucket_cap_mb=40 * 8 / 2**20)
    buckets = ddp_probe.reducer.buckets
    split = [p for p in ddp_probe.parameters() if sum(any(q is p for q in b.params) for b in buckets) > 1]
    if len(buckets) < 5 or not split:
        raise AssertionError(f"expected many buckets splitting parameters, got {len(buckets)}, split {len(split)}")
    # overlap: the first buckets start while backward still has parameters to do
    reducer, ready_at_launch = ddp_probe.reducer, []
    launch = reducer._launch
    reducer._launch = lambda b: (ready_at_launch.append(len(reducer._ready)), launch(b))[-1]
    X, y = data(8)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(ddp_probe(X), y)
    ddp_probe.backward(loss_fn.backward())
    n_params = len(list(ddp_probe.parameters()))
    if len(ready_at_launch) != len(buckets) or ready_at_launch[0] >= n_params:
        raise AssertionError(f"buckets should launch during backward: ready counts at launch {ready_at_launch}")
    case_parity_explicit(cap_mb=40 * 8 / 2**20)


def case_fit() -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(15 * world)
    Xv, yv = data(11)
    ddp = dist.DistributedDataParallel(make_model())
    ref = reference_copy(ddp) if rank == 0 else None
    h = fit(ddp, nn.CrossEntropyLoss(), optim.Adam(ddp.parameters(), lr=1e-2), X, y, epochs=3, batch_size=4,
            seed=5, validation_data=(Xv, yv), progress=True)
    check_same_on_all_ranks(ddp, "after fit")
    logs = dist.get_process_group().allgather_object({k: v for k, v in h.history.items() if k != "time"})
    if any(lg != logs[0] for lg in logs):
        raise AssertionError(f"ranks report different metrics: {logs}")
    if rank == 0:
        hr = fit(ref, nn.CrossEntropyLoss(), optim.Adam(ref.parameters(), lr=1e-2), X, y, epochs=3,
                 batch_size=4 * world, seed=5, validation_data=(Xv, yv), progress=False)
        check_close(ddp.flat_buffer().data, ref.flat_buffer().data, RTOL64, "fit parameters vs one process")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            check_close(np.array(h[key]), np.array(hr[key]), 1e-9, f"fit metric {key}")


def case_no_sync() -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y = data(9 * world)
    ddp = dist.DistributedDataParallel(make_model(), bucket_cap_mb=0.0005)
    ref = reference_copy(ddp) if rank == 0 else None
    loss_fn = nn.CrossEntropyLoss()
    parts = list(batches(X, y, 3, seed=1, rank=rank, world_size=world))  # 3 micro-batches of 3 rows per rank
    ddp.zero_grad()
    with ddp.no_sync():
        for xb, yb in parts[:2]:
            loss_fn(ddp(xb), yb)
            ddp.backward(loss_fn.backward(), need_input_grad=False)
    local = np.array(ddp.flat_buffer().grad)
    every = dist.get_process_group().allgather_object(local)
    if world > 1 and all(np.array_equal(e, every[0]) for e in every):
        raise AssertionError("no_sync: gradients were averaged inside no_sync")
    xb, yb = parts[2]
    loss_fn(ddp(xb), yb)
    ddp.backward(loss_fn.backward(), need_input_grad=False)
    grads = dist.get_process_group().allgather_object(np.array(ddp.flat_buffer().grad))
    if any(not np.array_equal(g, grads[0]) for g in grads):
        raise AssertionError("no_sync: ranks have different gradients after the synchronised backward")
    if rank == 0:
        ref.zero_grad()
        for xb, yb in batches(X, y, 3 * world, seed=1):
            loss_fn(ref(xb), yb)
            ref.backward(loss_fn.backward(), need_input_grad=False)
        check_close(grads[0], ref.flat_buffer().grad, RTOL64, "accumulated gradient vs one process")


def case_collectives() -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    a = np.arange(6, dtype=np.float32).reshape(2, 3) + rank
    dist.all_reduce(a)
    expect = world * np.arange(6, dtype=np.float32).reshape(2, 3) + sum(range(world))
    assert np.array_equal(a, expect), (a, expect)
    m = np.array([float(rank)])
    dist.all_reduce(m, op="max")
    assert m[0] == world - 1
    strided = np.zeros((4, 4))[:, 1]  # not contiguous: staged and written back
    strided[...] = rank + 1
    dist.all_reduce(strided, op="mean")
    assert np.allclose(strided, (world + 1) / 2), strided
    b = np.full(3, rank, dtype=np.int64)
    dist.broadcast(b, src=world - 1)
    assert np.array_equal(b, np.full(3, world - 1))
    dist.barrier()
    assert dist.is_initialized() and dist.get_world_size() == world


def case_mismatch() -> None:
    make = make_model(hidden=16 + dist.get_rank())  # rank 1 builds a wider model
    dist.DistributedDataParallel(make)


def case_frozen_mismatch() -> None:
    """Ranks that froze different parameters would plan different buckets (a hang or mixed-up sums): refused at
    wrap time and when requires_grad changes between steps, on every rank."""
    rank = dist.get_rank()
    model = frozen_first_layer()
    if rank == 1:
        model[0].bias.requires_grad_(True)
    try:
        dist.DistributedDataParallel(model)
    except dist.DistributedError as exc:
        if "0.bias: rank 0 has (2,) float64 (frozen), rank 1 has (2,) float64" not in str(exc):
            raise AssertionError(f"the error should name 0.bias and which rank froze it: {exc}") from None
    else:
        raise AssertionError("wrapping models frozen differently should raise")
    ddp = dist.DistributedDataParallel(frozen_first_layer())
    (ddp.module[0].weight if rank == 0 else ddp.module[0].bias).requires_grad_(True)
    try:
        ddp(np.ones((1, 2)))
    except dist.DistributedError as exc:
        if "changed requires_grad differently" not in str(exc) or "'0.bias'" not in str(exc):
            raise AssertionError(f"the error should say the ranks froze differently: {exc}") from None
    else:
        raise AssertionError("unfreezing different parameters on the ranks should raise")


def case_fit_mismatch() -> None:
    X, y = data(20 + dist.get_rank())  # rank 1 loaded one row more: its shard would have more steps
    ddp = dist.DistributedDataParallel(make_model())
    fit(ddp, nn.CrossEntropyLoss(), optim.SGD(ddp.parameters(), lr=0.1), X, y, epochs=1, batch_size=4, seed=0,
        progress=False)


def case_fail() -> None:
    ddp = dist.DistributedDataParallel(make_model())
    X, y = data(40)
    loss_fn = nn.CrossEntropyLoss()
    for step, (xb, yb) in enumerate(batches(X, y, 4, seed=0, rank=dist.get_rank(), world_size=dist.get_world_size())):
        if step == 2 and dist.get_rank() == 1:
            raise ValueError("planted failure on rank 1")
        loss_fn(ddp(xb), yb)
        ddp.backward(loss_fn.backward())
    time.sleep(60)  # never reached on the other ranks' side: they are stuck in the all-reduce until aborted


def case_stall() -> None:
    if dist.get_rank() == 1:
        time.sleep(120)  # never joins the barrier: the others must time out and abort the job
    dist.barrier()


def case_spin() -> None:
    """Train until interrupted (the Ctrl-C test sends SIGINT to mpiexec)."""
    ddp = dist.DistributedDataParallel(make_model())
    X, y = data(40)
    loss_fn = nn.CrossEntropyLoss()
    if dist.get_rank() == 0:
        print("spinning", flush=True)
    while True:
        for xb, yb in batches(X, y, 4, seed=0, rank=dist.get_rank(), world_size=dist.get_world_size()):
            loss_fn(ddp(xb), yb)
            ddp.backward(loss_fn.backward())


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dist.init_process_group("mpi")
    for case in sys.argv[1:]:  # several cases share one job (mpiexec and imports cost a second or two)
        CASES[case]()
        dist.barrier()
        if dist.get_rank() == 0:
            print(f"{case} ok (world size {dist.get_world_size()})", flush=True)
    dist.destroy_process_group()
