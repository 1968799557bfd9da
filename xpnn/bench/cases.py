"""Benchmark cases: each (case, size, implementation) builds a ``Runner`` whose ``fn()`` is one timed unit.

Implementations ("impls"), compared side by side for every case and size:

==================== ============ ==========================================================================
impl                 device       what runs
==================== ============ ==========================================================================
``xpnn-numpy``       cpu          xpnn on the NumPy backend (explicit API: ``model.backward(dy)``)
``xpnn-numpy-tape``  cpu          xpnn on the NumPy backend, autograd (``loss.backward()``; training steps only)
``numpy-plain``      cpu          the straightforward NumPy version (``xpnn.bench.numpy_reference``)
``torch-cpu``        cpu          PyTorch on the CPU (default optimizer settings)
``xpnn-cuda``        cuda         xpnn on the CUDA backend with its fused kernels
``xpnn-cuda-tape``   cuda         the same, autograd (training steps only)
``xpnn-cuda-generic`` cuda        xpnn on the CUDA backend with kernels off (the array-API path on CuPy)
``xpnn-cuda-graph``  cuda         the step captured once in a CUDA graph and replayed (``xpnn.cuda``; steps only)
``torch-cuda``       torch-cuda   PyTorch on the GPU (``Adam(fused=True)`` for the Adam case)
==================== ============ ==========================================================================

Benchmark data is float32 drawn from normal/uniform distributions scaled so that no value, intermediate or
optimizer state comes near the subnormal range (|x| < 1.2e-38), where NumPy arithmetic runs several times slower;
``subnormal_count`` checks that after a run.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import array_api_compat
import numpy as np

from . import numpy_reference as ref

__all__ = ["IMPLS", "CASES", "Impl", "Case", "Runner", "Unavailable", "make_runner", "unavailable_reason",
           "subnormal_count"]


class Unavailable(Exception):
    """This (case, size, impl) cannot run here; the message says why (the suite turns it into a skip)."""


@dataclass(frozen=True)
class Impl:
    name: str
    device: str  # "cpu", "cuda" (CuPy) or "torch-cuda": how to synchronize and time it
    label: str


IMPLS: dict[str, Impl] = {i.name: i for i in (
    Impl("xpnn-numpy", "cpu", "xpnn, NumPy backend"),
    Impl("xpnn-numpy-tape", "cpu", "xpnn, NumPy backend, autograd"),
    Impl("numpy-plain", "cpu", "straightforward NumPy"),
    Impl("torch-cpu", "cpu", "PyTorch CPU"),
    Impl("xpnn-cuda", "cuda", "xpnn, CUDA backend (fused kernels)"),
    Impl("xpnn-cuda-tape", "cuda", "xpnn, CUDA backend, autograd"),
    Impl("xpnn-cuda-generic", "cuda", "xpnn, CUDA backend, kernels off"),
    Impl("xpnn-cuda-graph", "cuda", "xpnn, CUDA backend, step replayed from a CUDA graph"),
    Impl("torch-cuda", "torch-cuda", "PyTorch CUDA"),
)}


@dataclass
class Runner:
    """``fn()`` runs one unit of work (asynchronously on GPUs: the caller synchronizes); ``state()`` lists the arrays
    to scan for subnormals afterwards; ``keep`` holds whatever must stay alive while ``fn`` is timed."""

    fn: Callable[[], Any]
    device: str
    state: Callable[[], list[Any]]
    keep: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """A benchmark case: sizes by label, bytes a memory-bound implementation must move (``None`` if compute-bound),
    and one builder per implementation: ``builder(size) -> Runner``."""

    name: str
    title: str
    sizes: dict[str, Any]
    gpu_only: frozenset[str]  # size labels too large for the CPU (skipped there)
    bytes_moved: Callable[[Any], Optional[int]]
    builders: dict[str, Callable[[Any], Runner]]


# --- availability ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _torch_reason() -> Optional[str]:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install torch to compare against it)"
    return None


@functools.lru_cache(maxsize=None)
def _cuda_reason() -> Optional[str]:
    from ..backend import cuda_available

    if not cuda_available():
        return "no CUDA device (CuPy sees none): GPU implementations are skipped"
    return None


@functools.lru_cache(maxsize=None)
def _torch_cuda_reason() -> Optional[str]:
    r = _torch_reason()
    if r is not None:
        return r
    import torch

    return None if torch.cuda.is_available() else "PyTorch sees no CUDA device"


def unavailable_reason(impl: str) -> Optional[str]:
    """Why ``impl`` cannot run on this machine, or ``None`` when it can."""
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {', '.join(IMPLS)}")
    if impl == "torch-cpu":
        return _torch_reason()
    if impl == "torch-cuda":
        return _torch_cuda_reason()
    if impl.startswith("xpnn-cuda"):
        return _cuda_reason()
    return None


def make_runner(case: str, size: str, impl: str) -> Runner:
    """Build the runner of ``case`` at size label ``size`` for ``impl``; raises ``Unavailable`` with the reason."""
    c = CASES[case]
    if size not in c.sizes:
        raise ValueError(f"{case}: unknown size {size!r}; expected one of {', '.join(c.sizes)}")
    reason = unavailable_reason(impl)
    if reason is not None:
        raise Unavailable(reason)
    if size in c.gpu_only and IMPLS[impl].device == "cpu":
        raise Unavailable(f"{case} at {size} runs on CUDA only (too large for the CPU suite)")
    builder = c.builders.get(impl)
    if builder is None:
        raise Unavailable(f"{case}: no {impl} implementation")
    if impl == "xpnn-cuda-generic":  # build and run with kernels off: the generic array-API path on CuPy
        from .._dispatch import use_kernels

        with use_kernels(False):
            r = builder(c.sizes[size])
        inner = r.fn

        def generic() -> Any:
            with use_kernels(False):
                return inner()

        r.fn = generic
        return r
    return builder(c.sizes[size])


# --- data -----------------------------------------------------------------------------------------------------
class _Data:
    """Random float32 data made directly in one library: NumPy, CuPy or torch (CPU/GPU)."""

    def __init__(self, impl: str, seed: int = 0):
        self.lib = "torch" if impl.startswith("torch") else ("cupy" if impl.startswith("xpnn-cuda") else "numpy")
        if self.lib == "numpy":
            self.rng = np.random.default_rng(seed)
        elif self.lib == "cupy":
            import cupy

            self.rng = cupy.random.default_rng(seed)
        else:
            import torch

            self.device = "cuda" if impl == "torch-cuda" else "cpu"
            self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def normal(self, shape: tuple[int, ...], scale: float = 1.0) -> Any:
        if self.lib == "torch":
            import torch

            return torch.randn(shape, generator=self.gen, device=self.device) * scale
        x = self.rng.standard_normal(shape, dtype=np.float32)
        x *= np.float32(scale)
        return x

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> Any:
        if self.lib == "torch":
            import torch

            return torch.empty(shape, device=self.device).uniform_(low, high, generator=self.gen)
        x = self.rng.random(shape, dtype=np.float32)
        x *= np.float32(high - low)
        x += np.float32(low)
        return x

    def labels(self, n: int, classes: int) -> Any:
        if self.lib == "torch":
            import torch

            return torch.randint(0, classes, (n,), generator=self.gen, device=self.device)
        return self.rng.integers(0, classes, n, dtype=np.int64)


def subnormal_count(arrays: list[Any]) -> int:
    """Number of nonzero values with magnitude below the smallest normal float of their dtype (NumPy/CuPy/torch)."""
    total = 0
    for a in arrays:
        if a is None:
            continue
        if type(a).__module__.startswith("torch"):
            import torch

            t = a.detach()
            if not t.is_floating_point():
                continue
            tiny = torch.finfo(t.dtype).tiny
            total += int(((t != 0) & (t.abs() < tiny)).sum().item())
            continue
        xp = array_api_compat.array_namespace(a)
        if not xp.isdtype(a.dtype, "real floating"):
            continue
        tiny = float(xp.finfo(a.dtype).smallest_normal)
        total += int(xp.sum(xp.astype((a != 0) & (xp.abs(a) < tiny), xp.int64)))
    return total


def _xpnn_optimizer_arrays(opt: Any) -> list[Any]:
    """The arrays in an xpnn optimizer's state (moments, ...), for the subnormal scan."""
    arrays: list[Any] = []
    for s in opt.state_dict().get("state", {}).values():
        arrays += [v for v in (s.values() if isinstance(s, dict) else []) if hasattr(v, "shape")]
    return arrays


def _torch_optimizer_arrays(opt: Any) -> list[Any]:
    """The tensors in a torch optimizer's state (not the 0-d step counters), for the subnormal scan."""
    import torch

    return [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]


def _backend(impl: str) -> str:
    return "cuda" if impl.startswith("xpnn-cuda") else "numpy"


def _torch_device(impl: str) -> str:
    return "cuda" if impl == "torch-cuda" else "cpu"


# --- sigmoid backward: dx = dy * y * (1 - y) --------------------------------------------------------------------
def _sigmoid_inputs(impl: str, n: int) -> tuple[Any, Any]:
    d = _Data(impl)
    # y in [0.05, 0.95] like a sigmoid output, dy ~ N(0, 1): products stay far from subnormals
    return d.uniform((n,), 0.05, 0.95), d.normal((n,))


def _sigmoid_xpnn(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        from .. import functional as F

        y, dy = _sigmoid_inputs(impl, n)
        out: list[Any] = [None]

        def fn() -> None:
            out[0] = F.sigmoid_backward(y, dy)

        return Runner(fn, IMPLS[impl].device, lambda: [y, dy, out[0]])
    return build


def _sigmoid_plain(n: int) -> Runner:
    y, dy = _sigmoid_inputs("numpy-plain", n)
    out: list[Any] = [None]

    def fn() -> None:
        out[0] = ref.sigmoid_backward(y, dy)

    return Runner(fn, "cpu", lambda: [y, dy, out[0]])


def _sigmoid_torch(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        import torch

        y, dy = _sigmoid_inputs(impl, n)
        out: list[Any] = [None]

        def fn() -> None:  # the op torch's autograd runs for sigmoid's backward
            out[0] = torch.ops.aten.sigmoid_backward(dy, y)

        return Runner(fn, IMPLS[impl].device, lambda: [y, dy, out[0]])
    return build


# --- softmax cross-entropy, forward + gradient -------------------------------------------------------------------
def _ce_inputs(impl: str, shape: tuple[int, int]) -> tuple[Any, Any]:
    n, c = shape
    d = _Data(impl)
    return d.normal((n, c), scale=2.0), d.labels(n, c)


def _ce_xpnn(impl: str) -> Callable[[tuple[int, int]], Runner]:
    def build(shape: tuple[int, int]) -> Runner:
        from .. import functional as F

        logits, target = _ce_inputs(impl, shape)
        out: list[Any] = [None, None]

        def fn() -> None:
            out[:] = F.cross_entropy_with_grad(logits, target)

        return Runner(fn, IMPLS[impl].device, lambda: [logits, out[1]])
    return build


def _ce_plain(shape: tuple[int, int]) -> Runner:
    logits, target = _ce_inputs("numpy-plain", shape)
    out: list[Any] = [None, None]

    def fn() -> None:
        out[:] = ref.cross_entropy_with_grad(logits, target)

    return Runner(fn, "cpu", lambda: [logits, out[1]])


def _ce_torch(impl: str) -> Callable[[tuple[int, int]], Runner]:
    def build(shape: tuple[int, int]) -> Runner:
        import torch
        import torch.nn.functional as TF

        logits, target = _ce_inputs(impl, shape)
        logits.requires_grad_(True)
        out: list[Any] = [None, None]

        def fn() -> None:
            loss = TF.cross_entropy(logits, target)
            (grad,) = torch.autograd.grad(loss, logits)
            out[:] = [loss, grad]

        return Runner(fn, IMPLS[impl].device, lambda: [logits, out[1]])
    return build


# --- Adam step over a flat buffer, or over a model of 200 small tensors -----------------------------------------
ADAM_LR = 1e-3
MANY_TENSORS = "200-tensors"  # 100 Linear(64, 64) layers: 100 weights (64, 64) + 100 biases (64,)


def _adam_shapes(size: Any) -> list[tuple[int, ...]]:
    if size == MANY_TENSORS:
        return [(64, 64), (64,)] * 100
    return [(int(size),)]


def _adam_bytes(size: Any) -> int:
    return 28 * sum(math.prod(s) for s in _adam_shapes(size))  # read p, g, m, v; write p, m, v (float32)


def _optimizer_xpnn(make: Callable[[Any, list[Any]], Any]) -> Callable[[str], Callable[[Any], Runner]]:
    """Runners of one ``opt.step()`` of the xpnn optimizer ``make(optim, params)`` over ``_adam_shapes(size)`` (the
    200 tensors: one flat buffer), gradients set once."""
    def per_impl(impl: str) -> Callable[[Any], Runner]:
        def build(size: Any) -> Runner:
            from .. import nn, optim

            d = _Data(impl)
            backend = _backend(impl)
            if size == MANY_TENSORS:
                model = nn.Sequential(*[nn.Linear(64, 64, backend=backend, seed=i) for i in range(100)])
                params = list(model.parameters())  # one flat buffer holds all 200 tensors
            else:
                params = [nn.Parameter(d.normal((int(size),), scale=0.1))]
            for p in params:
                p.grad = d.normal(p.shape, scale=1e-2)
            opt = make(optim, params)

            def state() -> list[Any]:
                return [p.data for p in params] + [p.grad for p in params] + _xpnn_optimizer_arrays(opt)

            return Runner(opt.step, IMPLS[impl].device, state, keep=[params])
        return build
    return per_impl


def _optimizer_plain(make: Callable[[list[Any]], Any]) -> Callable[[Any], Runner]:
    """Runners of one step of the plain-NumPy optimizer ``make(params)`` (``numpy_reference``), one tensor at a
    time."""
    def build(size: Any) -> Runner:
        d = _Data("numpy-plain")
        params = [d.normal(s, scale=0.1) for s in _adam_shapes(size)]
        grads = [d.normal(s, scale=1e-2) for s in _adam_shapes(size)]
        opt = make(params)
        return Runner(lambda: opt.step(grads), "cpu", lambda: params + grads + opt.state())
    return build


def _optimizer_torch(make: Callable[[Any, list[Any], str], Any]) -> Callable[[str], Callable[[Any], Runner]]:
    """Runners of one ``opt.step()`` of the PyTorch optimizer ``make(torch, params, impl)``."""
    def per_impl(impl: str) -> Callable[[Any], Runner]:
        def build(size: Any) -> Runner:
            import torch

            d = _Data(impl)
            params = [torch.nn.Parameter(d.normal(s, scale=0.1)) for s in _adam_shapes(size)]
            for p in params:
                p.grad = d.normal(tuple(p.shape), scale=1e-2)
            opt = make(torch, params, impl)

            def state() -> list[Any]:
                return list(params) + [p.grad for p in params] + _torch_optimizer_arrays(opt)

            return Runner(opt.step, IMPLS[impl].device, state, keep=[params])
        return build
    return per_impl


_adam_xpnn = _optimizer_xpnn(lambda optim, params: optim.Adam(params, lr=ADAM_LR))
_adam_plain = _optimizer_plain(lambda params: ref.Adam(params, lr=ADAM_LR))
# the GPU target compares with torch's fused Adam; the CPU one with torch's default Adam
_adam_torch = _optimizer_torch(lambda torch, params, impl: torch.optim.Adam(
    params, lr=ADAM_LR, fused=True if impl == "torch-cuda" else None))

# SGD with momentum (``torch.optim.SGD(lr, momentum=0.9)``'s defaults otherwise): read p, g, buf; write p, buf
SGD_LR, SGD_MOMENTUM = 1e-2, 0.9
_sgd_xpnn = _optimizer_xpnn(lambda optim, params: optim.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM))
_sgd_plain = _optimizer_plain(lambda params: ref.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM))
_sgd_torch = _optimizer_torch(lambda torch, params, impl: torch.optim.SGD(params, lr=SGD_LR, momentum=SGD_MOMENTUM))


def _sgd_bytes(size: Any) -> int:
    return 20 * sum(math.prod(s) for s in _adam_shapes(size))  # read p, g, buf; write p, buf (float32)


# --- one training step of a 784-512-512-10 ReLU MLP: Adam, softmax cross-entropy, float32 ----------------------
MLP_SIZES = (784, 512, 512, 10)


def _mlp_inputs(impl: str, batch: int) -> tuple[Any, Any]:
    d = _Data(impl)
    return d.uniform((batch, MLP_SIZES[0]), 0.0, 1.0), d.labels(batch, MLP_SIZES[-1])  # pixel-like inputs


def step_runner(impl: str, model: Any, loss_fn: Any, opt: Any, x: Any, y: Any) -> Runner:
    """One training step of ``model`` (zero_grad, forward, backward, optimizer step) as ``impl`` runs it: the
    explicit API (``xpnn-*``), autograd (``xpnn-*-tape``: ``loss_fn(model(tensor(x)), y).backward()``) or a captured
    CUDA graph (``xpnn-cuda-graph``: each call copies the batch in and replays)."""
    from .._tensor import tensor

    if impl.endswith("-tape"):
        xt = tensor(x)

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(xt), y).backward()
            opt.step()
    else:
        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), need_input_grad=False)  # no gradient for the data, like torch
            opt.step()

    def state() -> list[Any]:
        params = list(model.parameters())
        return [p.data for p in params] + [p.grad for p in params] + _xpnn_optimizer_arrays(opt)

    if impl == "xpnn-cuda-graph":  # warm-up and capture here; each timed call copies the batch in and replays
        from ..cuda import make_graphed_step

        graphed = make_graphed_step(model, loss_fn, opt, x, y)

        def graph_step() -> None:
            graphed(x, y)

        return Runner(graph_step, IMPLS[impl].device, state, keep=[model, graphed])
    return Runner(step, IMPLS[impl].device, state, keep=[model])


def _step_xpnn(impl: str, sizes: tuple[int, ...], inputs: Callable[[str, int], tuple[Any, Any]],
               lr: float = 1e-3) -> Callable[[int], Runner]:
    """One Adam training step of a ReLU MLP of layer widths ``sizes`` (``step_runner`` says how ``impl`` runs it)."""
    def build(batch: int) -> Runner:
        from .. import nn, optim

        backend = _backend(impl)
        x, y = inputs(impl, batch)
        layers: list[Any] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b, backend=backend, seed=i))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        loss_fn = nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=lr)
        return step_runner(impl, model, loss_fn, opt, x, y)
    return build


def _mlp_xpnn(impl: str) -> Callable[[int], Runner]:
    return _step_xpnn(impl, MLP_SIZES, _mlp_inputs)


def _mlp_plain(batch: int) -> Runner:
    x, y = _mlp_inputs("numpy-plain", batch)
    net = ref.MLP(MLP_SIZES, seed=0, lr=1e-3)
    return Runner(lambda: net.train_step(x, y), "cpu", net.state)


def _mlp_torch(impl: str, sizes: tuple[int, ...] = MLP_SIZES,
               inputs: Optional[Callable[[str, int], tuple[Any, Any]]] = None, lr: float = 1e-3
               ) -> Callable[[int], Runner]:
    def build(batch: int) -> Runner:
        import torch

        dev = _torch_device(impl)
        torch.manual_seed(0)
        x, y = (inputs or _mlp_inputs)(impl, batch)
        layers: list[Any] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers).to(dev)
        loss_fn = torch.nn.CrossEntropyLoss()
        opt = torch.optim.Adam(model.parameters(), lr=lr)  # torch's default Adam

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        def state() -> list[Any]:
            return list(model.parameters()) + _torch_optimizer_arrays(opt)

        return Runner(step, IMPLS[impl].device, state, keep=[model])
    return build


# --- one training step of a tiny 16-32-32-4 ReLU MLP, batch 8: host overhead (Python calls, launches) -----------
TINY_SIZES = (16, 32, 32, 4)
TINY_LR = 1e-7  # thousands of timed steps on one batch: a tiny rate keeps the model from fitting it (gradients
#                 of a fitted model decay into subnormals, which would slow every implementation)


def _tiny_inputs(impl: str, batch: int) -> tuple[Any, Any]:
    d = _Data(impl)
    return d.normal((batch, TINY_SIZES[0])), d.labels(batch, TINY_SIZES[-1])


def _tiny_plain(batch: int) -> Runner:
    x, y = _tiny_inputs("numpy-plain", batch)
    net = ref.MLP(TINY_SIZES, seed=0, lr=TINY_LR)
    return Runner(lambda: net.train_step(x, y), "cpu", net.state)


# --- the source notes' two-layer sigmoid network (64 x 1000 -> 100 -> 10), summed squared error, SGD ------------
SEED_SHAPE = (64, 1000, 100, 10)
SEED_LR = 1e-4


def _seed_data() -> dict[str, np.ndarray]:
    return ref.seed_net_data(*SEED_SHAPE)


def _seed_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(_: Any) -> Runner:
        from .. import nn, optim
        from ..backend import get_backend

        be = get_backend(_backend(impl))
        data = _seed_data()
        x, y = be.asarray(data["x"]), be.asarray(data["y"])
        n, d_in, h, d_out = SEED_SHAPE
        model = nn.Sequential(nn.Linear(d_in, h, bias=False, backend=be), nn.Sigmoid(),
                              nn.Linear(h, d_out, bias=False, backend=be))
        model[0].weight.data = be.asarray(data["w1"].T.copy())  # Linear keeps weight as (out, in)
        model[2].weight.data = be.asarray(data["w2"].T.copy())
        loss_fn = nn.MSELoss(reduction="sum")
        opt = optim.SGD(model.parameters(), lr=SEED_LR)

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), need_input_grad=False)  # no gradient for the data, like torch
            opt.step()

        return Runner(step, IMPLS[impl].device, lambda: [p.data for p in model.parameters()], keep=[model])
    return build


def _seed_plain(_: Any) -> Runner:
    net = ref.SeedNet(_seed_data(), lr=SEED_LR)
    return Runner(net.train_step, "cpu", net.state)


def _seed_torch(impl: str) -> Callable[[Any], Runner]:
    def build(_: Any) -> Runner:
        import torch

        dev = _torch_device(impl)
        data = {k: torch.from_numpy(v).to(dev) for k, v in _seed_data().items()}
        n, d_in, h, d_out = SEED_SHAPE
        model = torch.nn.Sequential(torch.nn.Linear(d_in, h, bias=False), torch.nn.Sigmoid(),
                                    torch.nn.Linear(h, d_out, bias=False)).to(dev)
        with torch.no_grad():
            model[0].weight.copy_(data["w1"].T)
            model[2].weight.copy_(data["w2"].T)
        loss_fn = torch.nn.MSELoss(reduction="sum")
        opt = torch.optim.SGD(model.parameters(), lr=SEED_LR)
        x, y = data["x"], data["y"]

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        return Runner(step, IMPLS[impl].device, lambda: list(model.parameters()), keep=[model])
    return build


# --- the table of cases -------------------------------------------------------------------------------------------
# --- row kernels: softmax and logsumexp over the rows of a float32 (N, C) matrix ------------------------------
def _rows_xpnn(op: str) -> Callable[[str], Callable[[tuple[int, int]], Runner]]:
    def per_impl(impl: str) -> Callable[[tuple[int, int]], Runner]:
        def build(shape: tuple[int, int]) -> Runner:
            from .. import functional as F

            x = _Data(impl).normal(shape, scale=2.0)
            f = getattr(F, op)
            out: list[Any] = [None]

            def fn() -> None:
                out[0] = f(x)

            return Runner(fn, IMPLS[impl].device, lambda: [x, out[0]])
        return build
    return per_impl


def _rows_plain(op: str) -> Callable[[tuple[int, int]], Runner]:
    def build(shape: tuple[int, int]) -> Runner:
        x = _Data("numpy-plain").normal(shape, scale=2.0)
        f = getattr(ref, op)
        out: list[Any] = [None]

        def fn() -> None:
            out[0] = f(x)

        return Runner(fn, "cpu", lambda: [x, out[0]])
    return build


def _rows_torch(op: str) -> Callable[[str], Callable[[tuple[int, int]], Runner]]:
    def per_impl(impl: str) -> Callable[[tuple[int, int]], Runner]:
        def build(shape: tuple[int, int]) -> Runner:
            import torch

            x = _Data(impl).normal(shape, scale=2.0)
            f = {"softmax": lambda a: torch.softmax(a, dim=1), "logsumexp": lambda a: torch.logsumexp(a, dim=1)}[op]
            out: list[Any] = [None]

            def fn() -> None:
                out[0] = f(x)

            return Runner(fn, IMPLS[impl].device, lambda: [x, out[0]])
        return build
    return per_impl


# --- Adam step of a float16 model with float32 master copies ---------------------------------------------------
# float16 subnormals start below 6.1e-5: parameters in [256, 512] (a step moves them by about lr = 1e-3, so even
# 1e5 timed rounds never bring one near 0) and gradients in [0.01, 0.02] stay normal; the time does not depend on
# the values otherwise.
def _adam_fp16_xpnn(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        from .. import nn, optim

        d = _Data(impl)
        xp = array_api_compat.array_namespace(d.uniform((1,), 0, 1))
        p = nn.Parameter(xp.astype(d.uniform((n,), 256.0, 512.0), xp.float16))
        p.grad = xp.astype(d.uniform((n,), 0.01, 0.02), xp.float16)
        opt = optim.Adam([p], lr=ADAM_LR)
        return Runner(opt.step, IMPLS[impl].device, lambda: [p.data, p.grad] + _xpnn_optimizer_arrays(opt),
                      keep=[p])
    return build


def _adam_fp16_plain(n: int) -> Runner:
    d = _Data("numpy-plain")
    param16 = d.uniform((n,), 256.0, 512.0).astype(np.float16)
    grad16 = d.uniform((n,), 0.01, 0.02).astype(np.float16)
    master = [param16.astype(np.float32)]
    opt = ref.Adam(master, lr=ADAM_LR)

    def step() -> None:  # the textbook mixed-precision step: cast the gradient up, update the master, cast down
        opt.step([grad16.astype(np.float32)])
        param16[...] = master[0]

    return Runner(step, "cpu", lambda: [param16, master[0]] + opt.state())


def _adam_fp16_torch(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        import torch

        d = _Data(impl)
        param16 = d.uniform((n,), 256.0, 512.0).half()
        grad16 = d.uniform((n,), 0.01, 0.02).half()
        master = torch.nn.Parameter(param16.float())
        opt = torch.optim.Adam([master], lr=ADAM_LR, fused=True if impl == "torch-cuda" else None)

        def step() -> None:  # PyTorch's usual mixed-precision step: float32 master, cast in and out
            master.grad = grad16.float()
            opt.step()
            param16.copy_(master.detach())

        return Runner(step, IMPLS[impl].device, lambda: [param16, master] + _torch_optimizer_arrays(opt),
                      keep=[master])
    return build


# --- small calls from NumPy code: what one call costs next to the NumPy expression it replaces -------------------
SMALL_CALLS = {"sigmoid": "F.sigmoid on (30, 1)", "cross_entropy": "F.cross_entropy_with_grad on (1, 65)",
               "linear": "nn.Linear(64, 30) forward + backward (explicit API), batch 10"}


def _small_inputs(call: str) -> dict[str, np.ndarray]:
    """float64 NumPy arrays (what NumPy code passes) for one of ``SMALL_CALLS``."""
    rng = np.random.default_rng(0)
    if call == "sigmoid":
        return {"x": rng.standard_normal((30, 1))}
    if call == "cross_entropy":
        return {"logits": rng.standard_normal((1, 65)) * 2.0, "target": np.array([3])}
    return {"x": rng.standard_normal((10, 64)), "dy": rng.standard_normal((10, 30)) * 0.1}


def _small_xpnn(impl: str) -> Callable[[str], Runner]:
    def build(call: str) -> Runner:
        from .. import functional as F
        from .. import nn

        a = _small_inputs(call)
        out: list[Any] = [None]
        if call == "sigmoid":
            def fn() -> None:
                out[0] = F.sigmoid(a["x"])
            return Runner(fn, "cpu", lambda: [out[0]])
        if call == "cross_entropy":
            def fn() -> None:
                out[0] = F.cross_entropy_with_grad(a["logits"], a["target"])[1]
            return Runner(fn, "cpu", lambda: [out[0]])
        layer = nn.Linear(64, 30, dtype="float64", seed=0)

        def fn() -> None:  # (the gradients accumulate, as they would between two zero_grad calls)
            layer(a["x"])
            out[0] = layer.backward(a["dy"])
        return Runner(fn, "cpu", lambda: [out[0], layer.weight.grad], keep=[layer])
    return build


def _small_plain(call: str) -> Runner:
    a = _small_inputs(call)
    out: list[Any] = [None]
    if call == "sigmoid":
        def fn() -> None:
            out[0] = ref.sigmoid(a["x"])
    elif call == "cross_entropy":
        def fn() -> None:
            out[0] = ref.cross_entropy_with_grad(a["logits"], a["target"])[1]
    else:
        w, b = np.random.default_rng(1).uniform(-0.125, 0.125, (30, 64)), np.zeros(30)

        def fn() -> None:
            out[0] = ref.linear_forward_backward(a["x"], w, b, a["dy"])[1]
    return Runner(fn, "cpu", lambda: [out[0]])
# --- loss scaling: unscale a float16 gradient buffer in place and flag inf/NaN (GradScaler.unscale_) -------------
# inv_scale = 1: every call still reads and writes the whole buffer, and repeated calls leave the values (and no
# subnormals) as they were.
def _amp_unscale_xpnn(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        from ..amp import unscale_and_check_

        d = _Data(impl)
        xp = array_api_compat.array_namespace(d.uniform((1,), 0, 1))
        grad = xp.astype(d.uniform((n,), 0.5, 1.0), xp.float16)
        inv_scale = xp.ones((), dtype=xp.float32)
        found_inf = xp.zeros((), dtype=xp.float32)
        return Runner(lambda: unscale_and_check_(grad, inv_scale, found_inf), IMPLS[impl].device,
                      lambda: [grad, found_inf], keep=[grad])
    return build


def _amp_unscale_plain(n: int) -> Runner:
    grad = _Data("numpy-plain").uniform((n,), 0.5, 1.0).astype(np.float16)
    found = [False]

    def fn() -> None:
        found[0] = found[0] or not bool(np.isfinite(grad).all())
        np.multiply(grad, np.float16(1.0), out=grad)

    return Runner(fn, "cpu", lambda: [grad])


def _amp_unscale_torch(impl: str) -> Callable[[int], Runner]:
    def build(n: int) -> Runner:
        import torch

        d = _Data(impl)
        grad = d.uniform((n,), 0.5, 1.0).half()
        inv_scale = torch.ones((), device=grad.device)
        found_inf = torch.zeros((), device=grad.device)
        return Runner(lambda: torch._amp_foreach_non_finite_check_and_unscale_([grad], found_inf, inv_scale),
                      IMPLS[impl].device, lambda: [grad, found_inf], keep=[grad])
    return build


def _per_impl(xpnn: Callable[[str], Callable[[Any], Runner]], plain: Callable[[Any], Runner],
              torch: Callable[[str], Callable[[Any], Runner]], tape: bool = False) -> dict[str, Callable[[Any], Runner]]:
    out = _impls(xpnn, plain, torch)
    if tape:  # training steps: the autograd path beside the explicit one, and the step replayed from a CUDA graph
        out["xpnn-numpy-tape"] = xpnn("xpnn-numpy-tape")
        out["xpnn-cuda-tape"] = xpnn("xpnn-cuda-tape")
        out["xpnn-cuda-graph"] = xpnn("xpnn-cuda-graph")
    return out


def _impls(xpnn: Callable[[str], Callable[[Any], Runner]], plain: Callable[[Any], Runner],
           torch: Callable[[str], Callable[[Any], Runner]]) -> dict[str, Callable[[Any], Runner]]:
    return {
        "xpnn-numpy": xpnn("xpnn-numpy"),
        "numpy-plain": plain,
        "torch-cpu": torch("torch-cpu"),
        "xpnn-cuda": xpnn("xpnn-cuda"),
        "xpnn-cuda-generic": xpnn("xpnn-cuda-generic"),
        "torch-cuda": torch("torch-cuda"),
    }


CASES: dict[str, Case] = {c.name: c for c in (
    Case("sigmoid_backward", "sigmoid backward dx = dy*y*(1-y), float32",
         {"1e4": 10**4, "1e6": 10**6, "1e7": 10**7, "1e8": 10**8}, frozenset({"1e8"}),
         lambda n: 12 * n, _per_impl(_sigmoid_xpnn, _sigmoid_plain, _sigmoid_torch)),
    Case("cross_entropy", "softmax cross-entropy, loss + gradient, float32 logits (N, C)",
         {"256x10": (256, 10), "4096x1000": (4096, 1000), "65536x10": (65536, 10), "8192x32768": (8192, 32768)},
         frozenset({"8192x32768"}),
         lambda s: 2 * 4 * s[0] * s[1], _per_impl(_ce_xpnn, _ce_plain, _ce_torch)),
    Case("adam", "Adam step, float32 (flat buffer of n parameters, or 100 Linear(64, 64) layers)",
         {"1e4": 10**4, "1e6": 10**6, "1e7": 10**7, "1e8": 10**8, MANY_TENSORS: MANY_TENSORS}, frozenset({"1e8"}),
         _adam_bytes, _per_impl(_adam_xpnn, _adam_plain, _adam_torch)),
    Case("sgd", "SGD step with momentum 0.9, float32 (flat buffer of n parameters, or 100 Linear(64, 64) layers)",
         {"1e4": 10**4, "1e6": 10**6, "1e7": 10**7, "1e8": 10**8, MANY_TENSORS: MANY_TENSORS}, frozenset({"1e8"}),
         _sgd_bytes, _per_impl(_sgd_xpnn, _sgd_plain, _sgd_torch)),
    Case("softmax", "softmax over the rows of float32 (N, C)",
         {"256x10": (256, 10), "4096x1000": (4096, 1000), "65536x10": (65536, 10), "8192x32768": (8192, 32768),
          "8x262144": (8, 262144)},  # few wide rows: split across blocks (kernels/row_split.cu)
         frozenset({"8192x32768", "8x262144"}),
         lambda s: 2 * 4 * s[0] * s[1], _per_impl(_rows_xpnn("softmax"), _rows_plain("softmax"),
                                                  _rows_torch("softmax"))),
    Case("logsumexp", "log-sum-exp of the rows of float32 (N, C)",
         {"256x10": (256, 10), "4096x1000": (4096, 1000), "65536x10": (65536, 10), "8192x32768": (8192, 32768),
          "8x262144": (8, 262144)},
         frozenset({"8192x32768", "8x262144"}),
         lambda s: 4 * s[0] * s[1] + 4 * s[0], _per_impl(_rows_xpnn("logsumexp"), _rows_plain("logsumexp"),
                                                          _rows_torch("logsumexp"))),
    Case("adam_fp16", "Adam step of n float16 parameters with float32 master copies (read g16, p32, m, v; write "
         "p32, m, v, p16)",
         {"1e4": 10**4, "1e6": 10**6, "1e7": 10**7, "1e8": 10**8}, frozenset({"1e8"}),
         lambda n: 28 * n, _per_impl(_adam_fp16_xpnn, _adam_fp16_plain, _adam_fp16_torch)),
    Case("amp_unscale", "loss-scaling unscale of n float16 gradients in place, with the inf/NaN flag (read and write "
         "the buffer)",
         {"1e4": 10**4, "1e6": 10**6, "1e7": 10**7, "1e8": 10**8}, frozenset({"1e8"}),
         lambda n: 4 * n, _per_impl(_amp_unscale_xpnn, _amp_unscale_plain, _amp_unscale_torch)),
    Case("mlp_step", "training step of a 784-512-512-10 ReLU MLP, Adam, cross-entropy, float32",
         {"batch16": 16, "batch256": 256, "batch4096": 4096}, frozenset(),
         lambda b: None, _per_impl(_mlp_xpnn, _mlp_plain, _mlp_torch, tape=True)),
    Case("tiny_step", "training step of a 16-32-32-4 ReLU MLP, Adam, cross-entropy, float32 (host overhead)",
         {"batch8": 8}, frozenset(),
         lambda b: None, _per_impl(lambda i: _step_xpnn(i, TINY_SIZES, _tiny_inputs, TINY_LR), _tiny_plain,
                                   lambda i: _mlp_torch(i, TINY_SIZES, _tiny_inputs, TINY_LR), tape=True)),
    Case("small_calls", "one small float64 call from NumPy code (" + "; ".join(SMALL_CALLS.values()) + ")",
         {k: k for k in SMALL_CALLS}, frozenset(),
         lambda _: None, {"xpnn-numpy": _small_xpnn("xpnn-numpy"), "numpy-plain": _small_plain}),
    Case("seed_net", "source notes' 2-layer sigmoid net 64x1000-100-10, squared error, SGD",
         {"64x1000": None}, frozenset(),
         lambda _: None, _per_impl(_seed_xpnn, _seed_plain, _seed_torch)),
)}

# the convolutional cases live in xpnn/bench/conv_cases.py, which builds on the helpers above and adds its cases
# to CASES when the package is imported (xpnn/bench/__init__.py imports it)
