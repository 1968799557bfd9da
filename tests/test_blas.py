"""``xpnn.functional.blas.gemm_accumulate`` (``out += a @ b`` by NumPy's BLAS GEMM with beta = 1) and Linear's
backward adding the weight gradient into ``.grad`` with it: the same gradients as ``.grad += dy.T @ x`` (the path
with kernels off), and the old path wherever the in-place add would not be exactly that."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import xpnn
from xpnn import _dispatch, nn, optim
from xpnn.functional import blas, cpu_threads
from xpnn.functional.linear import linear_backward

needs_blas = pytest.mark.skipif(not blas._find()[0], reason="no CBLAS gemm of NumPy's BLAS found: "
                                                             + blas.status())


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _close(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


# --- gemm_accumulate ------------------------------------------------------------------------------------------------
@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_accumulate_adds_the_product(dtype, ta, tb):
    rng = np.random.default_rng(0)
    m, k, n = 37, 300, 29
    a = _rand(rng, (k, m), dtype).T if ta else _rand(rng, (m, k), dtype)  # (a transposed view: F-contiguous)
    b = _rand(rng, (n, k), dtype).T if tb else _rand(rng, (k, n), dtype)
    out = _rand(rng, (m, n), dtype)
    want = out + a @ b
    assert blas.gemm_accumulate(a, b, out)
    np.testing.assert_allclose(out, want, **_close(dtype))


@needs_blas
def test_gemm_accumulate_refuses_what_it_cannot_do_exactly():
    rng = np.random.default_rng(1)
    a, b = _rand(rng, (8, 6), np.float64), _rand(rng, (6, 5), np.float64)
    out = _rand(rng, (8, 5), np.float64)
    before = out.copy()
    big = _rand(rng, (8, 10), np.float64)
    ro = out.copy()
    ro.flags.writeable = False
    refused = [
        (a, b, big[:, :5]),                               # out not C-contiguous
        (a, b, ro),                                       # read-only
        (a, b, out.astype(np.float32)),                   # dtype differs
        (a.astype(np.float32), b.astype(np.float32), out.astype(np.float32).astype(">f4")),  # byte order
        (a[:, ::2], b[::2], out),                         # a strided: neither C- nor F-contiguous
        (a, b[:, :4], out),                               # shapes do not match
        (a[:, :0], b[:0], out),                           # K = 0 (+= 0 would turn -0.0 into 0.0)
        (a.astype(np.int64), b.astype(np.int64), out.astype(np.int64)),
        (a, b, [[0.0] * 5] * 8),
    ]
    for args in refused:
        assert blas.gemm_accumulate(*args) is False
    square = _rand(rng, (6, 6), np.float64)
    assert blas.gemm_accumulate(square, square[:, :6], square) is False  # out overlaps an operand
    np.testing.assert_array_equal(out, before)
    with _dispatch.use_kernels(False):
        assert blas.gemm_accumulate(a, b, out) is False
    np.testing.assert_array_equal(out, before)
    assert blas.gemm_accumulate(a, b, out) is True  # (the same call applies with kernels on)



@needs_blas
@pytest.mark.parametrize("kind", ["invalid", "over", "under"])
def test_gemm_accumulate_reports_floating_point_exceptions_as_np_dot(kind):
    """np.dot reports the exceptions its GEMM raised (inf * 0, an overflow, an underflow) as ``np.errstate`` says;
    the GEMM through ctypes raised them unseen: a Linear forward or weight gradient with kernels on gave NaN without
    the warning, or without the FloatingPointError asked for, that the kernels-off path gives."""
    value = {"invalid": np.inf, "over": 1e300, "under": 1e-300}[kind]
    a = np.full((16, 8), value)
    b = np.zeros((8, 12)) if kind == "invalid" else np.full((8, 12), value)
    message = {"invalid": "invalid value", "over": "overflow", "under": "underflow"}[kind] + " encountered in dot"
    for run in (lambda: np.dot(a, b), lambda: blas.gemm_accumulate(a, b, np.zeros((16, 12)))):
        with np.errstate(all="ignore", **{kind: "raise"}), pytest.raises(FloatingPointError, match=message):
            run()
        with np.errstate(all="ignore", **{kind: "warn"}), pytest.warns(RuntimeWarning, match=message):
            run()
        calls = []
        with np.errstate(all="ignore", **{kind: "call"}):
            old = np.seterrcall(lambda *args: calls.append(args))
            try:
                run()
            finally:
                np.seterrcall(old)
        assert calls and calls[0][0] == message.split(" encountered")[0]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            run()
    out = np.zeros((16, 12))
    with np.errstate(all="ignore"):
        assert blas.gemm_accumulate(a, b, out)
        np.testing.assert_array_equal(out, a @ b)


def test_status_names_the_gemm_or_says_why_not():
    text = blas.status()
    assert ("gemm" in text) if blas._find()[0] else ("no CBLAS" in text)


# --- Linear's backward ---------------------------------------------------------------------------------------------
@pytest.fixture
def gemm_calls(monkeypatch):
    """Count the GEMMs that added a weight gradient into .grad (the old path calls none)."""
    calls = [0]
    real = cpu_threads.gemm_accumulate

    def counted(a, b, out):
        done = real(a, b, out)
        calls[0] += done
        return done
    monkeypatch.setattr(cpu_threads, "gemm_accumulate", counted)
    return calls


SIZES = (96, 80, 64, 10)  # (products of 64 x 96 x 80 and 64 x 80 x 64 multiply-adds: past Linear's _THREADED)
BATCH = 64


def _mlp(dtype):
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(nn.Linear(a, b, seed=i))
        if i < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    return model.to(dtype=dtype) if dtype != np.float32 else model


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return _rand(rng, (BATCH, SIZES[0]), dtype), rng.integers(0, SIZES[-1], BATCH)


def _steps(kernels, api, dtype, backwards=2, steps=2, scaler=None, set_to_none=False):
    """Gradients after each step's ``backwards`` backwards (accumulated, grad not zero before the second) and the
    parameters after the run."""
    model = _mlp(dtype)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    grads = []
    with _dispatch.use_kernels(kernels):
        for s in range(steps):
            opt.zero_grad(set_to_none=set_to_none)
            for k in range(backwards):
                x, y = _data(dtype, seed=10 * s + k)
                if api == "explicit":
                    loss_fn(model(x), y)
                    dy = loss_fn.backward()
                    model.backward(scaler.scale(dy) if scaler else dy, need_input_grad=False)
                else:
                    loss = loss_fn(model(xpnn.Tensor(x)), xpnn.Tensor(y))
                    (scaler.scale(loss) if scaler else loss).backward()
            grads.append([np.array(p.grad, copy=True) for p in model.parameters()])
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
    return grads, [np.array(p.data, copy=True) for p in model.parameters()]


def _assert_same(got, want, dtype):
    for g_step, w_step in zip(got[0], want[0]):
        for g, w in zip(g_step, w_step):
            np.testing.assert_allclose(g, w, **_close(dtype))
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, **_close(dtype))


@needs_blas
@pytest.mark.parametrize("api", ["explicit", "tape"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_steps_accumulate_weight_gradients_as_before(api, dtype, gemm_calls):
    got = _steps(True, api, dtype)
    assert gemm_calls[0] == 2 * 2 * 2  # the two large weight gradients of both steps' two backwards (the
    # 64 -> 10 layer's product is below the threshold: np.dot and +=)
    _assert_same(got, _steps(False, api, dtype), dtype)


@needs_blas
@pytest.mark.parametrize("api", ["explicit", "tape"])
def test_grad_scaler_steps_match(api, gemm_calls):
    from xpnn.amp import GradScaler

    got = _steps(True, api, np.float64, scaler=GradScaler(init_scale=2.0 ** 8))
    assert gemm_calls[0] > 0
    _assert_same(got, _steps(False, api, np.float64, scaler=GradScaler(init_scale=2.0 ** 8)), np.float64)


def _lone(rng, dtype=np.float64):
    """A lone Linear layer's parameters (no flat buffer), an input and dy past the GEMM threshold."""
    w = nn.Parameter(_rand(rng, (80, 96), dtype))
    b = nn.Parameter(_rand(rng, (80,), dtype))
    return w, b, _rand(rng, (BATCH, 96), dtype), _rand(rng, (BATCH, 80), dtype)


@needs_blas
def test_lone_parameter_without_grad_takes_the_old_path_then_accumulates(gemm_calls):
    rng = np.random.default_rng(2)
    w, b, x, dy = _lone(rng)
    want = dy.T @ x
    out = xpnn.functional.linear(xpnn.Tensor(x), w, b)
    out.backward(dy, retain_graph=True)  # .grad None before: stored (a copy of dw)
    assert gemm_calls[0] == 0
    np.testing.assert_allclose(w.grad, want, rtol=1e-12, atol=1e-12)
    out.backward(dy)  # .grad exists now: added by the GEMM (retain_graph kept the graph)
    assert gemm_calls[0] == 1
    np.testing.assert_allclose(w.grad, 2 * want, rtol=1e-12, atol=1e-12)
    w.grad = None  # (set_to_none: the next backward stores a fresh array again)
    xpnn.functional.linear(xpnn.Tensor(x), w, b).backward(dy)
    assert gemm_calls[0] == 1
    np.testing.assert_allclose(w.grad, want, rtol=1e-12, atol=1e-12)


@needs_blas
def test_set_to_none_zero_grad_steps_match(gemm_calls):
    got = _steps(True, "tape", np.float64, set_to_none=True)
    _assert_same(got, _steps(False, "tape", np.float64, set_to_none=True), np.float64)


@needs_blas
def test_one_layer_explicit_call_adds_into_grad(gemm_calls):
    rng = np.random.default_rng(3)
    layer = nn.Linear(96, 80, seed=0).to(dtype=np.float64)
    x, dy = _rand(rng, (BATCH, 96), np.float64), _rand(rng, (BATCH, 80), np.float64)
    start = _rand(rng, (80, 96), np.float64)
    layer.weight.grad = start.copy()  # (not zero before)
    layer(x)
    dx = layer.backward(dy)
    assert gemm_calls[0] == 1
    np.testing.assert_allclose(layer.weight.grad, start + dy.T @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dy @ layer.weight.data, rtol=1e-12, atol=1e-12)


@needs_blas
def test_hooks_see_the_complete_gradient_and_keep_the_old_path(gemm_calls):
    rng = np.random.default_rng(4)
    w, b, x, dy = _lone(rng)
    w.grad = np.ones_like(w.data)
    seen = []
    w.register_post_accumulate_grad_hook(lambda p: seen.append(np.array(p.grad, copy=True)))
    xpnn.functional.linear(xpnn.Tensor(x), w, b).backward(dy)
    assert gemm_calls[0] == 0
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 1 + dy.T @ x, rtol=1e-12, atol=1e-12)


@needs_blas
def test_parameter_used_twice_in_one_call_keeps_the_old_path(gemm_calls):
    rng = np.random.default_rng(5)
    w = nn.Parameter(_rand(rng, (96, 96), np.float64))
    w.grad = np.zeros_like(w.data)
    dy = _rand(rng, (96, 96), np.float64)
    xpnn.functional.linear(w, w).backward(dy)  # y = w @ w.T: dw = dy @ w + dy.T @ w
    assert gemm_calls[0] == 0
    np.testing.assert_allclose(w.grad, dy @ w.data + dy.T @ w.data, rtol=1e-12, atol=1e-12)


@needs_blas
def test_layer_used_twice_adds_both_gradients(gemm_calls):
    rng = np.random.default_rng(6)
    layer = nn.Linear(96, 96, seed=0).to(dtype=np.float64)
    layer.weight.grad = np.zeros((96, 96))
    x = _rand(rng, (BATCH, 96), np.float64)
    h = layer(xpnn.Tensor(x))
    y = layer(h)
    dy = _rand(rng, (BATCH, 96), np.float64)
    y.backward(dy)
    assert gemm_calls[0] == 2
    wd = layer.weight.data
    dh = dy @ wd
    np.testing.assert_allclose(layer.weight.grad, dy.T @ h.data + dh.T @ x, rtol=1e-12, atol=1e-12)


@needs_blas
def test_grad_and_create_graph_leave_grad_alone(gemm_calls):
    rng = np.random.default_rng(7)
    w, b, x, dy = _lone(rng)
    w.grad = np.zeros_like(w.data)
    out = xpnn.functional.linear(xpnn.Tensor(x), w, b)
    out.backward(dy, retain_graph=True)  # (keeps the graph: the next backwards reuse the node's context)
    assert gemm_calls[0] == 1
    (dw,) = xpnn.grad(out, [w], grad_outputs=[dy], retain_graph=True)  # returned, .grad untouched
    np.testing.assert_allclose(dw.data, dy.T @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad, dy.T @ x, rtol=1e-12, atol=1e-12)
    out.backward(xpnn.Tensor(dy), create_graph=True)  # recorded backward: the old path
    assert gemm_calls[0] == 1
    np.testing.assert_allclose(w.grad, 2 * (dy.T @ x), rtol=1e-12, atol=1e-12)


def test_linear_backward_function_returns_dweight():
    rng = np.random.default_rng(8)
    w, _, x, dy = _lone(rng)
    _, dw, _ = linear_backward(x, w.data, dy)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-12, atol=1e-12)


@needs_blas
def test_no_gemm_into_grad_while_loops_split(gemm_calls, monkeypatch):
    """After a split loop ``cpu_threads.dot`` keeps OpenBLAS off its own threads: the weight gradient keeps that
    path (``np.dot`` by rows on the split's threads, then ``+=``)."""
    import time

    monkeypatch.setattr(cpu_threads, "_last_split", time.monotonic() + 60.0)
    monkeypatch.setattr(cpu_threads, "get_num_threads", lambda: 2)
    rng = np.random.default_rng(9)
    w, b, x, dy = _lone(rng)
    w.grad = np.ones_like(w.data)
    xpnn.functional.linear(xpnn.Tensor(x), w, b).backward(dy)
    assert gemm_calls[0] == 0
    np.testing.assert_allclose(w.grad, 1 + dy.T @ x, rtol=1e-12, atol=1e-12)


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [96, 128, 129, 512, 784])
def test_linear_forward_equals_the_kernels_off_path_bit_for_bit(dtype, k):
    """Linear's forward gives the same bits with the kernels on and off (the product, then ``+= bias``). A GEMM
    adding the product onto the bias (beta = 1, as ``torch.addmm``) would not: OpenBLAS adds each K-block's partial
    sums onto the output in turn, which past one block (K = 400 float64 / 464 float32 on this machine's OpenBLAS)
    rounds otherwise, and an MLP's outputs and gradients then changed with the kernels turned off."""
    rng = np.random.default_rng(k)
    x, w, b = _rand(rng, (256, k), dtype), _rand(rng, (512, k), dtype), _rand(rng, (512,), dtype)
    x[0, :3] = [np.inf, -0.0, np.nan]
    b[:2] = [-0.0, -np.inf]
    with np.errstate(invalid="ignore"):
        got = xpnn.functional.linear(x, w, b)
        with _dispatch.use_kernels(False):
            want = xpnn.functional.linear(x, w, b)
    assert got.tobytes() == want.tobytes()


def test_linear_forward_of_a_vector_fills_no_matrix_with_the_bias():
    """x of shape (in,) is one matrix-vector product: no (in, out) output is made and filled with the bias first
    (a 4096 x 256 float64 one, 8 MiB, was)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    x, w, b = _rand(rng, (4096,), np.float64), _rand(rng, (256, 4096), np.float64), _rand(rng, (256,), np.float64)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        got = xpnn.functional.linear(x, w, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.shape == (256,)
    np.testing.assert_allclose(got, w @ x + b, rtol=1e-12, atol=1e-12)
    assert peak < 1 << 20, f"peak {peak} bytes for a (256,) output"
