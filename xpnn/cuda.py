"""CUDA graphs for whole training steps: ``make_graphed_step`` (PyTorch's "whole-network capture" recipe from
``torch.cuda.graphs``, on CuPy's stream capture).

A captured step is recorded once -- forward, loss, backward and optimizer step, every kernel with its arguments and
buffer addresses -- and then replayed with one launch: no Python, no per-op launch cost. That requires a step which
never waits for the host (see ``xpnn.debug``: deferred label checks, device step counts and learning rates in the
optimizers) and allocates nothing new: inputs are copied into static buffers, and all temporaries come from a memory
pool private to the graph, filled during warm-up, so replays write to the addresses the graph recorded.

    step = make_graphed_step(model, loss_fn, optimizer, sample_x, sample_y)
    for xb, yb in batches:                 # every batch with sample_x's shape and dtype
        loss, logits = step(xb, yb)        # device arrays, overwritten by the next replay
    # fit(model, loss_fn, optimizer, X, y, ..., cuda_graph=True) does this for full batches

Errors (``xpnn.errors.CaptureError``) instead of CUDA errors or wrong results: a host read inside the step (named by
the xpnn function that made it), memory allocated during capture that warm-up did not allocate, debug mode (its
checks read the device), a batch of another shape or dtype at replay.

The device side is behind a small runtime object (``CupyGraphRuntime``); tests drive the same capture logic with a
stand-in runtime on the CPU (``tests/test_cuda_graphs.py``).
"""
from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Any, Callable, Iterator, Optional, Protocol

from ._cuda import scratch
from .backend import backend_of, dtype_name, is_cupy_namespace, namespace_of
from .debug import capturing, get_debug
from .errors import CaptureError
from .functional.updates import copy_into
from .nn.explicit import call_backward

__all__ = ["make_graphed_step", "GraphedStep", "GraphBuilder", "GraphRuntime", "CupyGraphRuntime"]


class GraphRuntime(Protocol):
    """What capture needs from the device (CuPy here; a stand-in in tests)."""

    def side_stream(self) -> contextlib.AbstractContextManager:
        """Make a side stream and the graph's private memory pool current (warm-up and capture run inside)."""

    def capture(self) -> contextlib.AbstractContextManager:
        """Record the work issued inside the block; the context value's ``graph`` is set on exit."""

    def pool_bytes(self) -> int:
        """Bytes held by the private pool (used or cached): growth during capture means a new allocation."""

    def launch(self, graph: Any) -> None:
        """Replay ``graph`` on the current stream."""

    def is_capture_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the device's error for an operation that cannot be captured (e.g. a sync)."""


class _Captured:
    graph: Any = None


class CupyGraphRuntime:
    """``GraphRuntime`` over CuPy: a non-blocking side stream, ``Stream.begin_capture/end_capture`` and a private
    ``cupy.cuda.MemoryPool`` made current with ``cupy.cuda.using_allocator`` during warm-up and capture."""

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()

    @contextlib.contextmanager
    def side_stream(self) -> Iterator[None]:
        cupy = self.cupy
        cupy.cuda.get_current_stream().synchronize()  # the model's state is written before the side stream reads it
        with cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            yield
        self.stream.synchronize()

    @contextlib.contextmanager
    def capture(self) -> Iterator[_Captured]:
        out = _Captured()
        self.stream.begin_capture()
        try:
            yield out
        finally:
            graph = self.stream.end_capture()  # always end the capture, also after an error
        out.graph = graph

    def pool_bytes(self) -> int:
        return int(self.pool.total_bytes())

    def launch(self, graph: Any) -> None:
        graph.launch(stream=self.cupy.cuda.get_current_stream())

    def is_capture_error(self, exc: BaseException) -> bool:
        text = f"{type(exc).__name__}: {exc}"
        return "Capture" in text or "capture" in text or "cudaErrorStreamCapture" in text


def _xpnn_frame(exc: BaseException) -> str:
    """``function (file:line)`` of the innermost xpnn frame of ``exc``'s traceback: the op that failed."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/xpnn/" in f.filename.replace("\\", "/")]
    frames = [f for f in frames if not f.filename.replace("\\", "/").endswith("/xpnn/cuda.py")] or frames
    if not frames:
        return "outside xpnn"
    f = frames[-1]
    path = f.filename.replace("\\", "/")
    return f"{f.name} ({path[path.rfind('/xpnn/') + 1:]}:{f.lineno})"


def _same_layout(name: str, static: Any, given: Any) -> None:
    if tuple(given.shape) != tuple(static.shape) or given.dtype != static.dtype:
        raise CaptureError(f"graphed step: {name} of shape {tuple(given.shape)} and dtype {dtype_name(given.dtype)} "
                           f"differs from the captured {tuple(static.shape)} {dtype_name(static.dtype)}; a graph "
                           "replays fixed shapes (run other batches eagerly, as fit does with the last partial batch)")


class GraphedStep:
    """A captured training step (made by ``make_graphed_step``). ``step(x, y)`` copies the batch into the static
    input buffers, brings the optimizer's device learning rates up to date, replays the graph and returns
    ``(loss, logits)``: the graph's static output arrays, overwritten by the next replay (copy them to keep them).
    ``keep_alive``: arrays the graph writes to that nothing else may keep (the launchers' kept work arrays,
    ``xpnn._cuda.scratch``), held as long as the graph.
    """

    def __init__(self, runtime: Any, graph: Any, static_x: Any, static_y: Any, loss: Any, logits: Any,
                 optimizer: Any, keep_alive: tuple[Any, ...] = ()) -> None:
        self.runtime = runtime
        self.graph = graph
        self.static_x, self.static_y = static_x, static_y
        self.loss, self.logits = loss, logits
        self.optimizer = optimizer
        self.keep_alive = keep_alive
        self.replays = 0

    def __call__(self, x: Any, y: Any) -> tuple[Any, Any]:
        _same_layout("x", self.static_x, x)
        _same_layout("y", self.static_y, y)
        copy_into(self.static_x, x)
        copy_into(self.static_y, y)
        self.optimizer._sync_device_hyperparameters()  # host-to-device writes of changed lrs, before the replay
        self.runtime.launch(self.graph)
        self.optimizer._count_replayed_step()  # the host step counts follow the device ones
        self.replays += 1
        return self.loss, self.logits


class GraphBuilder:
    """Warm-up steps, then capture, of one training step over static input buffers shaped like the sample
    batch (``make_graphed_step`` and ``fit(..., cuda_graph=True)`` use it; see ``make_graphed_step``)."""

    def __init__(self, model: Any, loss_fn: Any, optimizer: Any, sample_x: Any, sample_y: Any,
                 runtime: Optional[GraphRuntime] = None) -> None:
        if get_debug():
            raise CaptureError("make_graphed_step: debug mode is on (xpnn.set_debug(True)): its NaN/label checks read "
                               "the device at every op, which cannot be captured; turn it off for graphed steps")
        params = list(model.parameters())
        if not params:
            raise ValueError("make_graphed_step: the model has no parameters")
        xp = namespace_of(params[0].data, sample_x, sample_y, where="make_graphed_step")
        if runtime is None:
            if not is_cupy_namespace(xp):
                raise CaptureError("make_graphed_step: CUDA graphs need the model and data on the CUDA backend "
                                   f"(CuPy), got {backend_of(params[0].data).name}; model.to('cuda')")
            runtime = CupyGraphRuntime()
        self.model, self.loss_fn, self.optimizer, self.runtime = model, loss_fn, optimizer, runtime
        self.static_x = xp.empty(sample_x.shape, dtype=sample_x.dtype)
        self.static_y = xp.empty(sample_y.shape, dtype=sample_y.dtype)
        copy_into(self.static_x, sample_x)
        copy_into(self.static_y, sample_y)
        self.warmed = 0

    def _step(self) -> tuple[Any, Any]:
        self.optimizer.zero_grad()
        logits = self.model(self.static_x)
        loss = self.loss_fn(logits, self.static_y)
        call_backward(self.model, self.loss_fn.backward(), need_input_grad=False)
        self.optimizer.step()
        return loss, logits

    def warm(self, x: Any, y: Any) -> tuple[Any, Any]:
        """One eager (real) training step on ``(x, y)`` through the static buffers, on the side stream and pool."""
        _same_layout("x", self.static_x, x)
        _same_layout("y", self.static_y, y)
        with self.runtime.side_stream():
            copy_into(self.static_x, x)
            copy_into(self.static_y, y)
            out = self._step()
        self.warmed += 1
        return out

    def capture(self) -> GraphedStep:
        """Record one step (it does not run: replay it). Raises ``CaptureError`` as ``make_graphed_step`` says."""
        runtime, optimizer = self.runtime, self.optimizer
        optimizer._sync_device_hyperparameters()  # a changed lr is written now, not baked into the graph
        with runtime.side_stream():
            before, advanced = runtime.pool_bytes(), optimizer._steps_advanced
            try:
                with scratch.recording() as kept, capturing("make_graphed_step"), runtime.capture() as captured:
                    loss, logits = self._step()
            except CaptureError:
                raise
            except Exception as exc:
                if runtime.is_capture_error(exc):
                    raise CaptureError(
                        f"make_graphed_step: {_xpnn_frame(exc)} made a call that cannot be captured in a CUDA graph "
                        f"(a host read or synchronisation): {type(exc).__name__}: {exc}"
                    ).with_traceback(sys.exc_info()[2]) from None
                raise
            finally:
                if optimizer._steps_advanced != advanced:  # recording ran the Python, not the step: undo host counts
                    optimizer._count_replayed_step(-1)
            grown = runtime.pool_bytes() - before
        if grown > 0:
            raise CaptureError(f"make_graphed_step: the step allocated {grown} bytes of new memory during capture "
                               f"that the {self.warmed} warm-up step(s) did not; the graph would write into memory "
                               "handed out again later. Warm up first (warmup >= 1), and keep the step's shapes fixed")
        return GraphedStep(runtime, captured.graph, self.static_x, self.static_y, loss, logits, optimizer,
                           keep_alive=tuple(kept))


def make_graphed_step(model: Any, loss_fn: Any, optimizer: Any, sample_x: Any, sample_y: Any, *, warmup: int = 3,
                      runtime: Optional[GraphRuntime] = None) -> GraphedStep:
    """Capture one training step of ``model`` (zero_grad, forward, ``loss_fn``, backward, ``optimizer.step()``) in
    a CUDA graph over static copies of ``sample_x``/``sample_y``; returns a ``GraphedStep`` (call it with batches of
    the sample's shape and dtype).

    warmup: training steps run eagerly on the sample batch first, on the capture's side stream and memory pool (as
    in PyTorch's recipe they are real steps: they update the model); they compile kernels, create the optimizer's
    state and fill the private pool so that capture allocates nothing new. runtime: the device runtime (default:
    CuPy's; tests pass a stand-in).

    Raises ``CaptureError`` for debug mode, a model not on CuPy (without a ``runtime``), a host read or an
    unsupported call during capture (naming the xpnn function), or new memory allocated during capture.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"make_graphed_step: warmup must be an int >= 1, got {warmup!r}")
    builder = GraphBuilder(model, loss_fn, optimizer, sample_x, sample_y, runtime)
    model.train()
    for _ in range(warmup):
        builder.warm(sample_x, sample_y)
    return builder.capture()


FIT_WARMUP = 3  # fit's eager full-batch steps before it captures


def graph_step_runner(model: Any, loss_fn: Any, optimizer: Any, cuda_graph: Any) -> Callable[[Any, Any], Any]:
    """For ``fit``: ``run(xb, yb) -> (loss, logits)`` for full batches: the first ``FIT_WARMUP`` run eagerly on the
    graph's stream and pool, the next is captured and replayed, and every later one replays (each batch trains
    once). ``cuda_graph`` is True (CuPy) or a ``GraphRuntime``."""
    runtime = None if cuda_graph is True else cuda_graph
    state: dict[str, Any] = {}

    def run(xb: Any, yb: Any) -> tuple[Any, Any]:
        graphed = state.get("graphed")
        if graphed is not None:
            return graphed(xb, yb)
        builder = state.get("builder")
        if builder is None:
            builder = state["builder"] = GraphBuilder(model, loss_fn, optimizer, xb, yb, runtime)
        if builder.warmed < FIT_WARMUP:
            return builder.warm(xb, yb)
        graphed = state["graphed"] = builder.capture()
        return graphed(xb, yb)

    return run
