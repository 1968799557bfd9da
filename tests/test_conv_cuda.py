"""Verification layer 3 for kernels/conv.cu: conv2d (im2col/col2im + cuBLAS through CuPy's matmul) and max pooling on
CuPy arrays through the kernels, against the array-API reference on the same arrays (kernels disabled), and a small
CNN training step on the GPU. Marked ``cuda``: skipped with a visible reason without CuPy or a device."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch, nn, optim
from xpnn.backend import to_numpy

cuda = pytest.mark.cuda
TOL = {"float16": dict(rtol=1e-2, atol=1e-2), "float32": dict(rtol=1e-4, atol=1e-5),
       "float64": dict(rtol=1e-11, atol=1e-12)}


def both(fn, *args):
    with _dispatch.use_kernels(True):
        got = fn(*args)
    with _dispatch.use_kernels(False):
        want = fn(*args)
    return got, want


def close(got, want, dtype):
    if isinstance(got, tuple):
        for g, w in zip(got, want):
            close(g, w, dtype)
        return
    np.testing.assert_allclose(to_numpy(got).astype(np.float64), to_numpy(want).astype(np.float64), **TOL[dtype])


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", [
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1, 1), ((2, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2, 2),
    ((1, 2, 5, 5), (2, 2, 5, 5), 1, 0, 1, 1), ((3, 6, 8, 10), (3, 2, 1, 1), 3, (1, 2), 1, 3),
    ((32, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1, 1),
])
def test_conv2d_on_the_gpu(xs, ws, stride, padding, dilation, groups, dtype):
    be = xpnn.get_backend("cuda")
    rng = np.random.default_rng(0)
    x = be.asarray(rng.standard_normal(xs), dtype=dtype)
    w = be.asarray(rng.standard_normal(ws) * 0.1, dtype=dtype)
    args = (stride, padding, dilation, groups)
    y, y_ref = both(lambda *a: F.conv2d(x, w, None, *args))
    close(y, y_ref, dtype)
    dy = be.asarray(rng.standard_normal(y.shape), dtype=dtype)
    close(*both(lambda: F.conv2d_backward(x, w, dy, *args)), dtype)


@cuda
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("xs,k,s,p,d,ceil", [((2, 3, 7, 6), (3, 2), (2, 1), 1, 1, True),
                                             ((1, 2, 9, 9), 3, 2, 1, 2, True), ((2, 2, 4, 4), 4, 1, 0, 1, False),
                                             ((64, 16, 28, 28), 2, None, 0, 1, False)])
def test_max_pool2d_on_the_gpu(xs, k, s, p, d, ceil, dtype):
    be = xpnn.get_backend("cuda")
    x = be.asarray(np.random.default_rng(1).standard_normal(xs), dtype=dtype)
    (y, arg), (y_ref, arg_ref) = both(lambda: F.max_pool2d_with_argmax(x, k, s, p, d, ceil))
    np.testing.assert_array_equal(to_numpy(y), to_numpy(y_ref))
    np.testing.assert_array_equal(to_numpy(arg), to_numpy(arg_ref))
    dy = be.asarray(np.random.default_rng(2).standard_normal(y.shape), dtype=dtype)
    close(*both(lambda: F.max_pool2d_backward(arg, dy, xs, k, s, p, d, ceil)), dtype)


@cuda
def test_lenet_step_on_the_gpu_matches_numpy():
    from xpnn.models import lenet5

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
    losses = []
    for backend in ("numpy", "cuda"):
        model = lenet5(backend=backend, dtype="float64", seed=0)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        be = xpnn.get_backend(backend)
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(model(be.asarray(x, dtype="float64")), be.asarray(y))
            model.backward(loss_fn.backward())
            opt.step()
        losses.append(float(loss))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)
