"""CUDA graph capture of whole training steps (xpnn.cuda): the capture logic on a CPU stand-in runtime (CI), and on
a GPU (``cuda`` tests): graphed and eager steps agree.

The stand-in plays CuPy's part on ``array_api_strict`` arrays: warm-up runs on its "side stream"; during capture a
host read raises the error CUDA raises (and the step is recorded, not run: the stand-in puts every array back as it
was); a replay runs the recorded step again, writing into the same arrays; its "memory pool" is the most bytes a
warm-up step created, and grows when capture creates more (what a new allocation is in CuPy's pool).
"""
import contextlib

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.nn as nn
import xpnn.optim as optim
from xpnn.amp import GradScaler
from xpnn.cuda import make_graphed_step
from xpnn.errors import CaptureError
from xpnn.train import fit

ArrayType = type(array_api_strict.asarray(1.0))
READS = ("__bool__", "__float__", "__int__", "__index__", "__array__", "__dlpack__")


class StandInCaptureError(RuntimeError):
    """What the stand-in raises for a host read during capture (CUDA: cudaErrorStreamCaptureUnsupported)."""


class StandInRuntime:
    """A ``xpnn.cuda.GraphRuntime`` on the CPU. ``events`` records what happened, in order."""

    def __init__(self, model, optimizer, monkeypatch):
        self.model, self.optimizer, self.mp = model, optimizer, monkeypatch
        self.events = []
        self.capturing = False
        self.bytes_in_block = 0
        self.capacity = 0  # the pool: most bytes one warm-up step created
        self.used = 0
        self.recorded = None
        orig_new = ArrayType._new.__func__

        def counting_new(cls, *args, **kwargs):
            a = orig_new(cls, *args, **kwargs)
            self.bytes_in_block += int(np.asarray(a._array).nbytes)
            return a

        monkeypatch.setattr(ArrayType, "_new", classmethod(counting_new))
        for name in READS:
            orig = getattr(ArrayType, name)

            def guarded(arr, *args, _orig=orig, _name=name, **kwargs):
                if self.capturing:
                    self.events.append(("host_read", _name))
                    raise StandInCaptureError(f"cudaErrorStreamCaptureUnsupported: {_name} is not permitted when "
                                              "the stream is capturing")
                return _orig(arr, *args, **kwargs)

            monkeypatch.setattr(ArrayType, name, guarded)

    # --- the state a real capture leaves untouched (the stand-in runs the step, then puts it back) --------------
    def _arrays(self):
        out = [p.data for p in self.model.parameters()] + [p.grad for p in self.model.parameters()]
        opt = self.optimizer
        for slot in [*opt._layout.flat.values(), *opt._layout.per_param.values()]:
            out += list(slot.saved().values()) + ([slot.device.step, slot.device.lr] if slot.device is not None else [])
        out += [entry[0] for entry in xpnn.debug._pending.values()]  # deferred label-check flags
        return [a for a in out if a is not None]

    @contextlib.contextmanager
    def side_stream(self):
        self.events.append("side_stream")
        self.bytes_in_block = 0
        yield
        if not self.capturing:
            self.capacity = max(self.capacity, self.bytes_in_block)

    @contextlib.contextmanager
    def capture(self):
        self.events.append("begin_capture")
        arrays = self._arrays()
        saved = [np.array(a._array, copy=True) for a in arrays]
        self.bytes_in_block = 0
        self.capturing = True
        captured = type("Captured", (), {"graph": None})()
        try:
            yield captured
        finally:
            self.capturing = False
            self.used = self.bytes_in_block
            for a, v in zip(arrays, saved):  # recorded, not run
                a._array[...] = v
            self.events.append("end_capture")
        captured.graph = "graph"

    def pool_bytes(self):
        return max(self.capacity, self.used)

    def launch(self, graph):
        assert graph == "graph"
        self.events.append("launch")
        # replay: the recorded step again, through the same buffers; its Python side effects (host step counts)
        # are undone, as a real replay runs no Python
        self.recorded()

    def is_capture_error(self, exc):
        return isinstance(exc, StandInCaptureError)


def _setup(monkeypatch, opt_name="adam", seed=0):
    be = xpnn.get_backend(array_api_strict)
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(6, 16, seed=0, backend=be), nn.ReLU(), nn.Linear(16, 3, seed=1, backend=be))
    opt = {"adam": lambda ps: optim.Adam(ps, lr=1e-2),
           "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)}[opt_name](model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x = [be.asarray(rng.normal(size=(8, 6)).astype(np.float32)) for _ in range(6)]
    y = [be.asarray(rng.integers(0, 3, 8)) for _ in range(6)]
    rt = StandInRuntime(model, opt, monkeypatch)
    return be, model, opt, loss_fn, x, y, rt


def _wire_replay(rt, graphed, model, loss_fn, opt):
    """The stand-in's recorded step: the same ops on the graph's static buffers, outputs into its static outputs."""
    def replay():
        opt.zero_grad()
        logits = model(graphed.static_x)
        loss = loss_fn(logits, graphed.static_y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        opt._count_replayed_step(-1)
        graphed.loss._array[...] = loss._array
        graphed.logits._array[...] = logits._array
    rt.recorded = replay


def _eager_twin(opt_name, seed=0):
    """The same model/optimizer/data, run eagerly without any runtime (NumPy-free comparison on strict)."""
    be = xpnn.get_backend(array_api_strict)
    model = nn.Sequential(nn.Linear(6, 16, seed=0, backend=be), nn.ReLU(), nn.Linear(16, 3, seed=1, backend=be))
    opt = {"adam": lambda ps: optim.Adam(ps, lr=1e-2),
           "sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)}[opt_name](model.parameters())
    return model, opt, nn.CrossEntropyLoss()


@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_graphed_steps_match_eager_steps_on_the_stand_in(monkeypatch, opt_name):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch, opt_name)
    graphed = make_graphed_step(model, loss_fn, opt, x[0], y[0], warmup=2, runtime=rt)
    _wire_replay(rt, graphed, model, loss_fn, opt)
    assert rt.events == ["side_stream", "side_stream", "side_stream", "begin_capture", "end_capture"]
    assert not any(isinstance(e, tuple) for e in rt.events)  # no host read during capture
    static_x, static_y = graphed.static_x, graphed.static_y
    losses = []
    for xb, yb in zip(x[1:], y[1:]):
        loss, logits = graphed(xb, yb)
        assert graphed.static_x is static_x and graphed.static_y is static_y  # the same buffers every replay
        np.testing.assert_array_equal(np.asarray(static_x), np.asarray(xb))  # the batch was copied in
        losses.append(float(loss))
    assert rt.events[-5:] == ["launch"] * 5
    m2, o2, l2 = _eager_twin(opt_name)
    eager_losses = []
    for xb, yb in [(x[0], y[0])] * 2 + list(zip(x[1:], y[1:])):
        o2.zero_grad()
        loss = l2(m2(xb), yb)
        m2.backward(l2.backward(), need_input_grad=False)
        o2.step()
        eager_losses.append(float(loss))
    np.testing.assert_allclose(losses, eager_losses[2:], rtol=1e-6)
    for p, q in zip(model.parameters(), m2.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), np.asarray(q.data), rtol=1e-6, atol=1e-7)
    assert opt.state_dict()["state"][0]["step"] == o2.state_dict()["state"][0]["step"] == 7  # host counts follow


def test_lr_schedule_reaches_the_replayed_step_through_the_device_lr(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch, "sgd")
    # warmup=1 would not do for SGD with momentum: its first step (buf = g) allocates less than later ones
    graphed = make_graphed_step(model, loss_fn, opt, x[0], y[0], warmup=2, runtime=rt)
    _wire_replay(rt, graphed, model, loss_fn, opt)
    slot = opt._layout.flat[0]
    lr_array = slot.device.lr
    opt.param_groups[0]["lr"] = 0.025
    graphed(x[1], y[1])
    assert slot.device.lr is lr_array and float(lr_array) == np.float32(0.025)  # written in place, before replay


def test_host_read_during_capture_names_the_op(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)

    class Reads(nn.Module):  # a layer that reads a device value on the host
        def forward(self, h):
            self.peak = float(be.xp.max(h))
            return h

        def backward(self, dy, need_input_grad=True):
            return dy

    model.add_module("reads", Reads())
    with pytest.raises(CaptureError, match=r"forward \(.*test_cuda_graphs.py|cannot be captured"):
        make_graphed_step(model, loss_fn, opt, x[0], y[0], warmup=1, runtime=rt)
    assert ("host_read", "__float__") in rt.events
    assert opt.state_dict()["state"][0]["step"] == 1  # the failed capture left the host count as warm-up left it


def test_xpnn_host_reads_refuse_during_capture(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)
    scaler = GradScaler()

    class ScaledOptimizer:  # a step that asks the scaler to decide on the host: named in the error
        param_groups = opt.param_groups

        def __getattr__(self, name):
            return getattr(opt, name)

        def step(self):
            scaler.scale(be.asarray(np.float32(1.0)))
            scaler.step(opt)
            scaler.update()  # (one step per optimizer between updates, as in PyTorch)

    with pytest.raises(CaptureError, match="GradScaler.step"):
        make_graphed_step(model, loss_fn, ScaledOptimizer(), x[0], y[0], warmup=1, runtime=rt)


def test_graph_keeps_the_work_arrays_it_captured_alive(monkeypatch):
    """A launcher's kept work array (xpnn._cuda.scratch) that a captured step used stays alive as long as the graph,
    also after a larger call replaced it in scratch: the graph writes to its address at every replay, and freed
    memory would be handed out again by the pool (a use after free on the GPU)."""
    import gc
    import weakref

    from xpnn._cuda import scratch

    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)

    class KeepsWork(nn.Module):  # a layer whose kernel uses a kept work array, as the cross-entropy launcher does
        def forward(self, h):
            scratch.zeroed(be.xp, h, "test_cuda_graphs.work", 8, be.xp.float32)
            return h

        def backward(self, dy, need_input_grad=True):
            return dy

    model.add_module("work", KeepsWork())
    scratch.clear()
    try:
        graphed = make_graphed_step(model, loss_fn, opt, x[0], y[0], warmup=1, runtime=rt)
        key = ("array_api_strict", None, None, "test_cuda_graphs.work", str(be.xp.float32))
        captured = weakref.ref(scratch._arrays[key]._array)  # the memory the graph recorded
        assert any(a._array is captured() for a in graphed.keep_alive)
        scratch.zeroed(be.xp, x[0], "test_cuda_graphs.work", 1000, be.xp.float32)  # a larger call replaces it
        assert scratch._arrays[key]._array is not captured()
        gc.collect()
        assert captured() is not None, "the graph's work array was freed while the graph lives"
        del graphed
        gc.collect()
        assert captured() is None  # and it goes with the graph
    finally:
        scratch.clear()


def test_new_allocation_during_capture_is_refused(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)
    # no warm-up through the builder: the optimizer's state would be created during capture
    from xpnn.cuda import GraphBuilder

    builder = GraphBuilder(model, loss_fn, opt, x[0], y[0], runtime=rt)
    with pytest.raises(CaptureError, match="allocated .* bytes of new memory during capture"):
        builder.capture()


def test_shape_or_dtype_change_and_debug_mode_are_refused(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)
    graphed = make_graphed_step(model, loss_fn, opt, x[0], y[0], warmup=1, runtime=rt)
    with pytest.raises(CaptureError, match=r"x of shape \(4, 6\).*captured \(8, 6\)"):
        graphed(x[1][:4, ...], y[1][:4])
    with pytest.raises(CaptureError, match="y of shape .* dtype int32"):
        graphed(x[1], be.xp.astype(y[1], be.xp.int32))
    with xpnn.debug.debug_mode(True), pytest.raises(CaptureError, match="debug mode"):
        make_graphed_step(model, loss_fn, opt, x[0], y[0], runtime=rt)
    with pytest.raises(CaptureError, match="CUDA backend"):
        np_model = nn.Sequential(nn.Linear(6, 3, seed=0))
        make_graphed_step(np_model, loss_fn, optim.SGD(np_model.parameters(), lr=0.1),
                          np.zeros((8, 6), np.float32), np.zeros(8, np.int64))


def test_fit_with_cuda_graph_replays_full_batches_and_runs_the_partial_one_eagerly(monkeypatch):
    be, model, opt, loss_fn, x, y, rt = _setup(monkeypatch)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(60, 6)).astype(np.float32), rng.integers(0, 3, 60)
    import xpnn.cuda as xc

    real = xc.GraphBuilder.capture

    def capture_and_wire(builder):
        graphed = real(builder)
        _wire_replay(rt, graphed, model, loss_fn, opt)
        return graphed

    monkeypatch.setattr(xc.GraphBuilder, "capture", capture_and_wire)
    hist = fit(model, loss_fn, opt, X, Y, epochs=2, batch_size=8, shuffle=False, progress=False, cuda_graph=rt)
    # 7 full batches an epoch (+ one of 4 rows): 3 eager warm-ups, then one capture and 11 replays
    assert rt.events.count("begin_capture") == 1 and rt.events.count("launch") == 11
    m2, o2, l2 = _eager_twin("adam")
    hist2 = fit(m2, l2, o2, X, Y, epochs=2, batch_size=8, shuffle=False, progress=False)
    np.testing.assert_allclose(hist["loss"], hist2["loss"], rtol=1e-5)
    for p, q in zip(model.parameters(), m2.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), np.asarray(q.data), rtol=1e-5, atol=1e-6)


# --- on a GPU ----------------------------------------------------------------------------------------------------
def _cuda_or_skip():
    if not xpnn.backend.cuda_available():
        pytest.skip("needs CuPy and a CUDA device")


@pytest.mark.cuda
@pytest.mark.parametrize("opt_name", ["adam", "sgd"])
def test_graphed_and_eager_steps_agree_after_20_steps_on_cuda(opt_name):
    _cuda_or_skip()
    import cupy as cp

    def build():
        model = nn.Sequential(nn.Linear(64, 128, seed=0), nn.ReLU(), nn.Linear(128, 10, seed=1)).to("cuda")
        opt = (optim.Adam(model.parameters(), lr=1e-3) if opt_name == "adam"
               else optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        return model, opt, nn.CrossEntropyLoss()

    rng = np.random.default_rng(0)
    xs = [cp.asarray(rng.normal(size=(32, 64)).astype(np.float32)) for _ in range(20)]
    ys = [cp.asarray(rng.integers(0, 10, 32)) for _ in range(20)]
    m1, o1, l1 = build()
    graphed = make_graphed_step(m1, l1, o1, xs[0], ys[0], warmup=3)
    m2, o2, l2 = build()
    for _ in range(3):  # the graphed step's warm-up steps, eagerly
        o2.zero_grad(); l2(m2(xs[0]), ys[0]); m2.backward(l2.backward(), need_input_grad=False); o2.step()
    for xb, yb in zip(xs, ys):
        loss1, _ = graphed(xb, yb)
        o2.zero_grad()
        loss2 = l2(m2(xb), yb)
        m2.backward(l2.backward(), need_input_grad=False)
        o2.step()
    np.testing.assert_allclose(float(loss1), float(loss2), rtol=1e-4)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(cp.asnumpy(p.data), cp.asnumpy(q.data), rtol=1e-4, atol=1e-6)
    assert o1.state_dict()["state"][0]["step"] == 23


@pytest.mark.cuda
def test_graphed_step_in_fit_on_cuda():
    _cuda_or_skip()
    from xpnn.data import load_digits

    X, y = load_digits()
    model = nn.Sequential(nn.Linear(64, 64, seed=0), nn.ReLU(), nn.Linear(64, 10, seed=1)).to("cuda")
    hist = fit(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=3e-3), X, y, epochs=5,
               batch_size=64, progress=False, seed=0, cuda_graph=True)
    assert hist["accuracy"][-1] > 0.9


def test_cupy_runtime_drives_cupy_as_documented(monkeypatch):
    """CupyGraphRuntime against a recording stand-in for the few CuPy calls it makes (no GPU needed): warm-up and
    capture on its own non-blocking stream with its private pool's allocator, capture ended even when the step
    fails, replays on the current stream."""
    import sys
    import types

    calls = []

    class Stream:
        def __init__(self, non_blocking=False):
            calls.append(("Stream", non_blocking))

        def __enter__(self):
            calls.append("stream_enter")
            return self

        def __exit__(self, *exc):
            calls.append("stream_exit")

        def synchronize(self):
            calls.append("stream_sync")

        def begin_capture(self):
            calls.append("begin_capture")

        def end_capture(self):
            calls.append("end_capture")
            return Graph()

    class Graph:
        def launch(self, stream=None):
            calls.append(("launch", stream))

    class MemoryPool:
        def malloc(self, n):
            raise AssertionError("not called here")

        def total_bytes(self):
            return 4096

    current = object()

    class CurrentStream:
        def synchronize(self):
            calls.append("current_sync")

    @contextlib.contextmanager
    def using_allocator(alloc):
        calls.append(("allocator", alloc.__self__.__class__.__name__))
        yield

    cuda = types.SimpleNamespace(Stream=Stream, MemoryPool=MemoryPool, using_allocator=using_allocator,
                                 get_current_stream=lambda: current if calls and calls[-1] == "want_current"
                                 else CurrentStream())
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    from xpnn.cuda import CupyGraphRuntime

    rt = CupyGraphRuntime()
    with rt.side_stream():
        with rt.capture() as captured:
            pass
    assert isinstance(captured.graph, Graph)
    assert calls == [("Stream", True), "current_sync", ("allocator", "MemoryPool"), "stream_enter",
                     "begin_capture", "end_capture", "stream_exit", "stream_sync"]
    calls.clear()
    with pytest.raises(RuntimeError, match="boom"), rt.capture():
        raise RuntimeError("boom")
    assert calls == ["begin_capture", "end_capture"]  # the stream never stays in capture mode
    assert rt.pool_bytes() == 4096
    calls.clear()
    calls.append("want_current")
    rt.launch(captured.graph)
    assert calls[-1] == ("launch", current)
    assert rt.is_capture_error(RuntimeError("cudaErrorStreamCaptureUnsupported: operation not permitted"))
    assert not rt.is_capture_error(ValueError("shapes differ"))
