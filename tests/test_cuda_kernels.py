"""Verification layer 3: every kernel through real CuPy on a GPU against the array-API reference (same functions,
kernels disabled). Marked ``cuda``: skipped with a visible reason without CuPy or a device, never skipped with one.
Two tests at the top need no GPU: importing xpnn never touches it, and ``info()`` never raises.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch, nn, optim
from xpnn._cuda import info, registry
from xpnn.functional import updates

from _row_accuracy import check_exponent_term, check_row_entries


def test_import_does_not_touch_the_gpu():
    code = ("import sys, xpnn, xpnn.functional, xpnn.nn, xpnn.optim, xpnn._cuda; "
            "assert 'cupy' not in sys.modules, 'importing xpnn imported cupy'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_never_raises():
    d = info()
    assert {"cupy", "cuda_runtime", "cuda_driver", "device"} <= set(d)


# ---- on the GPU -------------------------------------------------------------------------------------------------

cuda = pytest.mark.cuda
TOL = {"float16": dict(rtol=5e-3, atol=5e-3), "float32": dict(rtol=1e-5, atol=1e-6),
       "float64": dict(rtol=1e-12, atol=1e-13)}


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def both(fn, *args, **kwargs):
    """(kernel result, reference result) of ``fn`` on the same CuPy arrays, as host arrays."""
    with _dispatch.use_kernels(True):
        got = fn(*args, **kwargs)
    with _dispatch.use_kernels(False):
        want = fn(*args, **kwargs)
    return _host(got), _host(want)


def _host(v):
    if isinstance(v, tuple):
        return tuple(_host(a) for a in v)
    return xpnn.backend.to_numpy(v)


def close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **TOL[dtype])


@cuda
def test_info_names_the_device():
    d = info()
    assert isinstance(d["device"], str) and not d["device"].startswith("none")


@cuda
def test_provider_serves_cupy_arrays(cp):
    from xpnn._cuda import provider

    xp = xpnn.get_backend("cuda").xp
    for row in registry.RAW + registry.elementwise():
        for dt in row.dtypes:
            served = provider(row.name, xp, getattr(cp, dt))
            assert (served is None) == getattr(row, "helper", False), row.name


@cuda
def test_kernels_fit_their_largest_block(cp):
    """As NVRTC compiled them here: every kernel can launch with the largest block the launcher may use (registers
    within __launch_bounds__) and uses no local memory (no spills)."""
    from xpnn._cuda.loader import CupyLoader

    loader, device = CupyLoader(), cp.cuda.runtime.getDevice()
    for row in registry.RAW:
        for dt in row.dtypes:
            fn = loader._module(device, row.source).get_function(row.name_expression(dt))
            assert fn.max_threads_per_block >= loader.raw(row, dt).max_block, (row.name, dt, fn.attributes)
            assert fn.local_size_bytes == 0, (row.name, dt, fn.attributes)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("fn,extra", [
    (F.sigmoid_backward, ()), (F.tanh_backward, ()), (F.relu_backward, ()), (F.leaky_relu_backward, (0.2,)),
    (F.elu_backward, (0.7,)), (F.selu_backward, ()), (F.softplus_backward, ()), (F.softplus_backward, (0.5, 0.25)),
    (F.mish_backward, ()),
], ids=lambda v: getattr(v, "__name__", None))
def test_activation_backward(cp, fn, extra, dtype):
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.99, 0.99, (257, 129))
    s[0, :4] = [1e4, -1e4, 0.0, 50.0]
    s = cp.asarray(s.astype(dtype))
    dy = cp.asarray(rng.standard_normal((257, 129)).astype(dtype))
    got, want = both(fn, s, dy, *extra)
    assert got.dtype == want.dtype
    close(got, want, dtype)


def _rows(cp, n, width, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)) * 3
    x[:, 0] += np.arange(n)
    if n > 2:
        x[1] *= 3e3
        if width > 1:
            x[2, ::3] = -np.inf
    return cp.asarray(x.astype(dtype))


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("n,width", [(7, 1), (64, 7), (300, 1000), (9, 4097), (3, 100_000), (70_000, 10),
                                     (1000, 3), (513, 33), (129, 200)])
@pytest.mark.parametrize("fn", [F.logsumexp, F.softmax, F.log_softmax], ids=lambda f: f.__name__)
def test_row_kernels(cp, fn, n, width, dtype):
    x = _rows(cp, n, width, dtype)
    if dtype == "float16":
        x = cp.clip(x, -6e4, 6e4)
    got, want = both(fn, x)
    close(got, want, dtype)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("n,width", [(7, 1), (64, 7), (300, 1000), (9, 4097), (3, 100_000), (70_000, 10)])
def test_cross_entropy(cp, n, width, dtype):
    x = _rows(cp, n, width, dtype, seed=1)
    if dtype == "float16":
        x = cp.clip(x, -6e4, 6e4)
    rng = np.random.default_rng(width)
    t = rng.integers(0, width, n)
    t[2 % n] = 0
    t[n // 2] = -100
    t = cp.asarray(t)
    for reduction in ("mean", "sum", "none"):
        for eps in (0.0, 0.1):
            got, want = both(F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=eps)
            close(got[0], want[0], dtype)
            close(got[1], want[1], dtype)


@cuda
@pytest.mark.parametrize("n,width", [(70_000, 10), (4096, 1000), (300, 5000)])
def test_cross_entropy_loss_is_deterministic(cp, n, width):
    """The loss is summed over blocks by the last block in a fixed order: bit-identical from run to run."""
    x = _rows(cp, n, width, "float32", seed=2)
    t = cp.asarray(np.random.default_rng(0).integers(0, width, n))
    first = [F.cross_entropy_with_grad(x, t, reduction=r)[0].get() for r in ("mean", "sum")]
    for _ in range(5):
        again = [F.cross_entropy_with_grad(x, t, reduction=r)[0].get() for r in ("mean", "sum")]
        assert [a.tobytes() for a in again] == [f.tobytes() for f in first]


@cuda
def test_cross_entropy_beyond_32bit_indices(cp):
    """More than 2**31 logits (float16, 65540 x 32768): rows past the 32-bit index range are right."""
    n, width = 65540, 32768
    if cp.cuda.Device().mem_info[0] < 16 * 2**30:
        pytest.skip("needs 16 GiB of free device memory")
    x = cp.zeros((n, width), cp.float16)
    tail = _rows(cp, 4, width, "float16", seed=3)
    x[-4:] = tail
    t = cp.asarray(np.array([0] * (n - 4) + [1, width - 1, 7, 12345]))
    loss, grad = F.cross_entropy_with_grad(x, t, reduction="none")
    want_loss, want_grad = both(F.cross_entropy_with_grad, tail, t[-4:], reduction="none")[1]
    close(loss[-4:].get(), want_loss, "float16")
    close(grad[-4:].get(), want_grad, "float16")
    del x, grad


def _steps(cp, fn, dtype, n_states, optional, kwargs_for_step, steps=5, n=1_000_003):
    results = []
    for use_kernel in (True, False):
        rng = np.random.default_rng(0)
        param = cp.asarray(rng.standard_normal(n).astype(dtype))
        grads = [cp.asarray(rng.standard_normal(n).astype(dtype)) for _ in range(steps)]
        states = [cp.zeros(n, dtype) if keep else None for keep in optional[:n_states]]
        with _dispatch.use_kernels(use_kernel):
            for i in range(steps):
                fn(param, grads[i], *states, **kwargs_for_step(i + 1))
        results.append([param.get()] + [s.get() for s in states if s is not None])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [dict(), dict(weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True),
                                  dict(weight_decay=0.01, maximize=True)], ids=str)
def test_adam(cp, opts, dtype):
    _steps(cp, updates.adam_update, dtype, 3, (True, True, opts.get("amsgrad", False)),
           lambda s: dict(step=s, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **opts))


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opts", [dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
                                  dict(momentum=0.8, dampening=0.3, maximize=True)], ids=str)
def test_sgd(cp, opts, dtype):
    _steps(cp, updates.sgd_update, dtype, 1, (opts.get("momentum", 0) != 0,),
           lambda s: dict(lr=0.05, first_step=s == 1, **opts))


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adagrad(cp, dtype):
    _steps(cp, updates.adagrad_update, dtype, 1, (True,),
           lambda s: dict(step=s, lr=0.1, lr_decay=0.01, weight_decay=0.01))


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("centered,momentum", [(False, 0.0), (True, 0.9)])
def test_rmsprop(cp, dtype, centered, momentum):
    _steps(cp, updates.rmsprop_update, dtype, 3, (True, centered, momentum > 0),
           lambda s: dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=momentum, centered=centered))


@cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_model_trains_through_the_kernels(cp, dtype):
    backend = xpnn.get_backend("cuda")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 12)) * 2
    y = rng.integers(0, 5, 256)
    X = backend.asarray((centers[y] + rng.standard_normal((256, 12))).astype(np.float32))
    y = backend.asarray(y)
    results = []
    for use_kernels in (True, False):
        r = np.random.default_rng(1)
        model = nn.Sequential(nn.Linear(12, 32, seed=r), nn.Sigmoid(), nn.Linear(32, 5, seed=r)).to(backend,
                                                                                                       dtype=dtype)
        loss_fn, opt = nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=0.05)
        losses = []
        with _dispatch.use_kernels(use_kernels):
            for _ in range(30):
                model.zero_grad()
                losses.append(float(loss_fn(model(backend.asarray(X, dtype=dtype)), y)))
                model.backward(loss_fn.backward())
                opt.step()
        results.append(np.array(losses))
    got, want = results
    assert got[-1] < got[0] * 0.5
    np.testing.assert_allclose(got, want, rtol=1e-3 if dtype == "float32" else 3e-2, atol=1e-3)


# ---- +inf rows, NaN semantics, alignment, mixed precision, scratch -------------------------------------

def _special_rows(cp, width, dtype):
    """Rows: finite; one +inf; two +inf; +inf and NaN; NaN; -inf but one +inf; finite."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((7, width)) * 2 + np.arange(7)[:, None]
    x[1, width // 2] = np.inf
    x[2, 0] = x[2, -1] = np.inf
    x[3, 0], x[3, -1] = np.inf, np.nan
    x[4, width // 3] = np.nan
    x[5, :] = -np.inf
    x[5, -1] = np.inf
    return cp.asarray(x.astype(dtype))


def _same_specials(got, want, dtype):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    close(np.nan_to_num(got, nan=0, posinf=0), np.nan_to_num(want, nan=0, posinf=0), dtype)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", [1, 7, 100, 4097])
def test_inf_and_nan_rows(cp, width, dtype):
    """logsumexp +inf for a row with +inf (no NaN); softmax, log_softmax, cross-entropy NaN over such rows."""
    x = _special_rows(cp, width, dtype)
    for fn in (F.logsumexp, F.softmax, F.log_softmax):
        got, want = both(fn, x)
        _same_specials(got, want, dtype)
    t = cp.asarray(np.array([0, width // 2, 0, width - 1, 0, width - 1, -100]))
    for reduction in ("none", "sum"):
        got, want = both(F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=0.1)
        _same_specials(got[0], want[0], dtype)
        _same_specials(got[1], want[1], dtype)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("width", [7, 1000, 4097])
def test_row_kernels_unaligned_input(cp, width, dtype):
    """An input starting off a 16-byte boundary (a slice of a larger buffer): scalar heads, packs, scalar stores."""
    base = _rows(cp, 41, width, dtype, seed=4).ravel()
    for offset in (1, 3):
        x = base[offset:offset + 40 * width].reshape(40, width)
        for fn in (F.softmax, F.log_softmax, F.logsumexp):
            got, want = both(fn, x)
            close(got, want, dtype)
        t = cp.asarray(np.arange(40) % width)
        got, want = both(F.cross_entropy_with_grad, x, t, reduction="mean")
        close(got[0], want[0], dtype)
        close(got[1], want[1], dtype)


@cuda
@pytest.mark.parametrize("capturable", [False, True], ids=["host-step", "device-step"])
def test_amsgrad_propagates_nan(cp, capturable):
    """Both Adam kernels (host step/lr: optimizers.cu; device step/lr: capturable.cu) keep a NaN in max_exp_avg_sq."""
    n = 1000
    results = []
    for use_kernel in (True, False):
        rng = np.random.default_rng(0)
        param = cp.asarray(rng.standard_normal(n).astype(np.float32))
        m, v, vmax = (cp.zeros(n, cp.float32) for _ in range(3))
        with _dispatch.use_kernels(use_kernel):
            for step in (1, 2):
                g = rng.standard_normal(n).astype(np.float32)
                if step == 2:
                    g[[3, 500]] = np.nan
                t, lr = (cp.asarray(step, cp.float32), cp.asarray(1e-2, cp.float32)) if capturable else (step, 1e-2)
                updates.adam_update(param, cp.asarray(g), m, v, vmax, step=t, lr=lr, beta1=0.9, beta2=0.999,
                                    eps=1e-8, amsgrad=True)
        results.append(vmax.get())
    assert np.isnan(results[0][[3, 500]]).all()
    np.testing.assert_array_equal(np.isnan(results[0]), np.isnan(results[1]))


@cuda
def test_softmax_exponent_term_within_2_ulp(cp):
    """The bounds of tests/_row_accuracy.py (stated in kernels/common.cuh) with the GPU's expf."""
    check_exponent_term(lambda fn, *a, **k: _host(fn(*(cp.asarray(v) for v in a), **k)))


@cuda
@pytest.mark.parametrize("width", [10, 1000, 4097, 40000])
def test_row_entries_within_the_stated_ulp_bound(cp, width):
    check_row_entries(lambda fn, *a, **k: _host(fn(*(cp.asarray(v) for v in a), **k)), width)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_relu_backward_nan_semantics(cp, dtype):
    x = cp.asarray(np.array([0.0, -1.0, 2.0, np.nan, np.nan, -np.inf], dtype))
    dy = cp.asarray(np.array([np.nan, np.nan, np.nan, 3.0, np.nan, 1.0], dtype))
    got, want = both(F.relu_backward, x, dy)
    np.testing.assert_array_equal(got.astype(np.float64), [0.0, 0.0, np.nan, 3.0, np.nan, 0.0])
    np.testing.assert_array_equal(want.astype(np.float64), [0.0, 0.0, np.nan, 3.0, np.nan, 0.0])


@cuda
@pytest.mark.parametrize("n", [1, 7, 1_000_003])
def test_adam_update_mixed(cp, n):
    from xpnn.functional.mixed_precision import adam_update_mixed

    results = []
    for use_kernel in (True, False):
        rng = np.random.default_rng(0)
        master = cp.asarray(rng.standard_normal(n).astype(np.float32))
        param = master.astype(cp.float16)
        states = [cp.zeros(n, cp.float32) for _ in range(3)]
        with _dispatch.use_kernels(use_kernel):
            for step in (1, 2, 3):
                g = cp.asarray(rng.standard_normal(n).astype(np.float16))
                adam_update_mixed(param, master, g, *states, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                  weight_decay=0.01, amsgrad=True)
        results.append([param.get(), master.get()] + [s.get() for s in states])
    for got, want in zip(*results):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-5)


@cuda
def test_cross_entropy_scratch_is_kept_and_clean(cp):
    """Counters and partials are allocated once per stream; the counters are zero after every call."""
    from xpnn._cuda import scratch

    scratch.clear()
    x = _rows(cp, 300, 1000, "float32", seed=5)
    t = cp.asarray(np.arange(300) % 1000)
    for reduction in ("mean", "sum", "mean"):
        got, want = both(F.cross_entropy_with_grad, x, t, reduction=reduction)
        close(got[0], want[0], "float32")
        counters = [v for k, v in scratch._arrays.items() if "counters" in k[-2]]
        assert len(counters) == 1 and not bool(counters[0].any())
