"""Verification layer 2 for kernels/conv.cu: im2col, col2im and max-pool forward/backward run on the CPU shim through
the same launch code as on a GPU (xpnn._cuda.launch), and match the reference in xpnn.functional (kernels off) on
random and edge shapes: kernel = input size, 1x1 kernels, stride > kernel, dilation, groups, ceil_mode, padding."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn.functional as F
from xpnn import _dispatch
from xpnn._cuda import make_provider

from shim import ShimLoader

TOL = {"float16": dict(rtol=5e-3, atol=5e-3), "float32": dict(rtol=1e-5, atol=1e-5),
       "float64": dict(rtol=1e-12, atol=1e-12)}
DTYPES = ("float16", "float32", "float64")


@pytest.fixture(scope="module")
def loader():
    return ShimLoader()


def reference(fn, *args, **kwargs):
    with _dispatch.use_kernels(False):
        return fn(*args, **kwargs)


def through_kernel(loader, fn, *args, **kwargs):
    before = loader.launches
    with _dispatch.use_provider(make_provider(loader)):
        out = fn(*args, **kwargs)
    assert loader.launches > before, f"{fn.__name__} did not run a shim kernel"
    return out


def close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), **TOL[dtype])


def randn(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# (x shape, weight shape, stride, padding, dilation, groups)
CONV = [
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1, 1),
    ((2, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2, 2),
    ((1, 2, 5, 5), (2, 2, 5, 5), 1, 0, 1, 1),          # kernel = input size
    ((3, 6, 8, 10), (3, 2, 1, 1), 3, (1, 2), 1, 3),    # 1x1, stride > kernel
    ((2, 2, 6, 7), (4, 1, 2, 3), 1, "same", (1, 2), 2),
    ((1, 1, 1, 1), (1, 1, 1, 1), 1, 0, 1, 1),          # a single pixel
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV)
def test_conv2d_forward_backward(loader, xs, ws, stride, padding, dilation, groups, dtype):
    x, w, b = randn(xs, dtype, 1), (randn(ws, dtype, 2) * 0.5).astype(dtype), randn(ws[:1], dtype, 3)
    args = (stride, padding, dilation, groups)
    y = through_kernel(loader, F.conv2d, x, w, b, *args)
    close(y, reference(F.conv2d, x, w, b, *args), dtype)
    dy = randn(y.shape, dtype, 4)
    got = through_kernel(loader, F.conv2d_backward, x, w, dy, *args)
    want = reference(F.conv2d_backward, x, w, dy, *args)
    for a, b_ in zip(got, want):
        close(a, b_, dtype)


def test_im2col_col2im_are_adjoint(loader):
    """<im2col(x), c> == <x, col2im(c)> for the kernels themselves (exact inputs, float64)."""
    from xpnn.functional.conv import col2im, conv2d_geometry, im2col

    g = conv2d_geometry((2, 3, 7, 9), (4, 3, 3, 2), (2, 1), (1, 2), (2, 1), 1)
    x = randn((2, 3, 7, 9), "float64", 5)
    c = randn((g.n, g.c, g.kh, g.kw, g.oh, g.ow), "float64", 6)
    cx = through_kernel(loader, im2col, x, g)
    xc = through_kernel(loader, col2im, c, g)
    np.testing.assert_allclose(np.sum(cx * c), np.sum(x * xc), rtol=1e-12)
    np.testing.assert_array_equal(cx, reference(im2col, x, g))


# (x shape, kernel_size, stride, padding, dilation, ceil_mode)
POOL = [
    ((2, 3, 7, 6), 3, None, 0, 1, False),
    ((2, 3, 7, 6), (3, 2), (2, 1), 1, 1, True),
    ((1, 2, 9, 9), 3, 2, 1, 2, True),
    ((2, 2, 5, 5), 2, 3, 0, 1, False),     # stride > kernel
    ((2, 2, 4, 4), 4, 1, 0, 1, False),     # kernel = input size
    ((1, 2, 5, 5), 1, 2, 0, 1, False),     # 1x1
    ((1, 3, 8, 7), (2, 3), (3, 2), (1, 1), (2, 1), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOL)
def test_max_pool2d(loader, xs, k, s, p, d, ceil, dtype):
    x = randn(xs, dtype, 7)
    y, arg = through_kernel(loader, F.max_pool2d_with_argmax, x, k, s, p, d, ceil)
    y_ref, arg_ref = reference(F.max_pool2d_with_argmax, x, k, s, p, d, ceil)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert arg.dtype == np.int32
    dy = randn(y.shape, dtype, 8)
    close(through_kernel(loader, F.max_pool2d_backward, arg, dy, xs, k, s, p, d, ceil),
          reference(F.max_pool2d_backward, arg, dy, xs, k, s, p, d, ceil), dtype)


def test_max_pool2d_ties_nan_and_inf(loader):
    x = np.zeros((1, 2, 4, 4), np.float32)  # all ties: the first offset wins
    x[0, 1] = -np.inf
    x[0, 1, 1, 1] = np.nan
    x[0, 1, 2, 3] = np.nan
    for k, p in ((2, 0), (3, 1)):
        y, arg = through_kernel(loader, F.max_pool2d_with_argmax, x, k, 1, p)
        y_ref, arg_ref = reference(F.max_pool2d_with_argmax, x, k, 1, p)
        np.testing.assert_array_equal(y, y_ref)
        # windows of only padding/-inf: the first in-bounds offset in both; several NaN: the last one
        np.testing.assert_array_equal(arg, arg_ref)


@pytest.mark.parametrize("xs,k,s,p,d,ceil", [((1, 1, 2, 2), 2, 1, 1, 1, False), ((2, 3, 5, 6), 3, 2, 1, 1, True),
                                             ((1, 2, 7, 7), (3, 2), (1, 2), (1, 1), (2, 1), True)])
def test_max_pool2d_minus_inf_and_nan_windows_like_torch(loader, xs, k, s, p, d, ceil):
    """The kernel picks PyTorch's winner: a window of only -inf (padding included) routes dy to its first in-bounds
    element, not into the padding (pytorch#23161); the last NaN of a window wins."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for max pooling's argmax rule")
    args = (k, s, p, d, ceil)
    for fill in ("-inf", "nan"):
        x = np.full(xs, -np.inf, np.float32)
        if fill == "nan":
            x = randn(xs, "float32", 9)
            x.reshape(-1)[::3] = np.nan
            x.reshape(-1)[1::5] = -np.inf
        y, arg = through_kernel(loader, F.max_pool2d_with_argmax, x, *args)
        dy = np.ones(y.shape, np.float32)
        dx = through_kernel(loader, F.max_pool2d_backward, arg, dy, xs, *args)
        t = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.max_pool2d(t, *args)
        ty.sum().backward()
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(dx, t.grad.numpy())


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("xs,k,s,p,d,ceil", [c for c in POOL if c[4] == 1])
def test_avg_pool2d_uses_im2col_col2im(loader, xs, k, s, p, d, ceil, include_pad):
    x = randn(xs, "float32", 9)
    y = through_kernel(loader, F.avg_pool2d, x, k, s, p, ceil, include_pad)
    close(y, reference(F.avg_pool2d, x, k, s, p, ceil, include_pad), "float32")
    dy = randn(y.shape, "float32", 10)
    close(through_kernel(loader, F.avg_pool2d_backward, dy, xs, k, s, p, ceil, include_pad),
          reference(F.avg_pool2d_backward, dy, xs, k, s, p, ceil, include_pad), "float32")


def test_more_elements_than_the_grid(loader, monkeypatch):
    """The grid-stride loops cover more elements than grid * block threads."""
    from xpnn._cuda import launch

    monkeypatch.setattr(launch, "MAX_GRID", 2)
    x = randn((2, 3, 12, 11), "float64", 11)
    w = randn((5, 3, 3, 3), "float64", 12)
    close(through_kernel(loader, F.conv2d, x, w, None, 1, 1), reference(F.conv2d, x, w, None, 1, 1), "float64")
    y, arg = through_kernel(loader, F.max_pool2d_with_argmax, x, 2)
    np.testing.assert_array_equal(y, reference(F.max_pool2d, x, 2))


@pytest.mark.parametrize("max_grid", [1, 3, 7, 65535])
def test_im2col_steps_its_index_across_grid_strides(loader, monkeypatch, max_grid):
    """im2col decodes its first flat index once and then steps by the grid's stride with carries through
    (ow, oh, kw, kh): grids of 1, 3 and 7 blocks make strides (256, 768, 1792 elements) that wrap several digits at
    once and cross planes; the results equal the reference exactly (a copy; col2im's sums are exact too)."""
    from xpnn._cuda import launch
    from xpnn.functional.conv import col2im, conv2d_geometry, im2col

    monkeypatch.setattr(launch, "MAX_GRID", max_grid)
    g = conv2d_geometry((3, 2, 11, 13), (4, 2, 3, 2), (2, 1), (1, 2), (2, 1), 1)
    x = randn((3, 2, 11, 13), "float64", 7)
    c = np.round(randn((g.n, g.c, g.kh, g.kw, g.oh, g.ow), "float64", 8) * 64) / 64  # sums exact in any order
    np.testing.assert_array_equal(through_kernel(loader, im2col, x, g), reference(im2col, x, g))
    np.testing.assert_array_equal(through_kernel(loader, col2im, c, g), reference(col2im, c, g))


@pytest.mark.parametrize("max_grid", [1, 3, 65535])
@pytest.mark.parametrize("kernel,stride,padding,dilation", [
    ((3, 2), (2, 1), (1, 1), (2, 1)),   # dilation a multiple of the stride
    ((3, 4), (2, 3), (1, 2), (3, 2)),   # dilation % stride != 0 in both axes, dilation > stride
    ((2, 3), (3, 2), (1, 1), (5, 1)),   # stride > kernel, dilation > stride
    ((4, 1), (1, 4), (2, 0), (1, 1)),
])
def test_gathers_step_offsets_with_a_borrow(loader, monkeypatch, max_grid, kernel, stride, padding, dilation):
    """col2im and max-pool backward share one gather (xpnn_for_each_window_reading): each pixel's (p, remainder)
    along an axis is divided once and stepped from offset to offset by subtracting divmod(dilation, stride) with a
    borrow, and the pixel itself steps by the grid's stride through (w, h) digits. Geometries where the dilation is
    not a multiple of the stride, exceeds it, or the stride exceeds the kernel; grids of 1 and 3 blocks (strides of
    256 and 768 pixels that wrap rows and planes). Exact inputs: the sums equal the reference bit for bit."""
    from xpnn._cuda import launch
    from xpnn.functional.conv import col2im, conv2d_geometry

    monkeypatch.setattr(launch, "MAX_GRID", max_grid)
    xs = (2, 3, 13, 14)
    g = conv2d_geometry(xs, (1, 3, *kernel), stride, padding, dilation, 1)
    c = np.round(randn((g.n, g.c, g.kh, g.kw, g.oh, g.ow), "float64", 13) * 64) / 64
    np.testing.assert_array_equal(through_kernel(loader, col2im, c, g), reference(col2im, c, g))
    x = randn(xs, "float32", 14)
    args = (kernel, stride, padding, dilation, True)
    y, arg = through_kernel(loader, F.max_pool2d_with_argmax, x, *args)
    np.testing.assert_array_equal(arg, reference(F.max_pool2d_with_argmax, x, *args)[1])
    dy = np.round(randn(y.shape, "float32", 15) * 64) / 64
    np.testing.assert_array_equal(through_kernel(loader, F.max_pool2d_backward, arg, dy, xs, *args),
                                  reference(F.max_pool2d_backward, arg, dy, xs, *args))


def test_an_empty_batch_through_the_kernel_launchers(loader):
    """N = 0 (the layers take it, as PyTorch's): the launch code (conv through im2col/col2im, max pooling with int32
    argmax, average pooling) launches nothing and gives the reference's empty outputs and zero dW/db."""
    x, w, b = np.zeros((0, 3, 6, 6), np.float32), randn((4, 3, 3, 3), "float32", 1), randn((4,), "float32", 2)
    with _dispatch.use_provider(make_provider(loader)):
        before = loader.launches
        y = F.conv2d(x, w, b, 1, 1)
        dx, dw, db = F.conv2d_backward(x, w, np.zeros(y.shape, np.float32), 1, 1)
        yp, arg = F.max_pool2d_with_argmax(x, 2)
        dxp = F.max_pool2d_backward(arg, yp, x.shape, 2)
        ya = F.avg_pool2d(x, 2)
        assert loader.launches == before
    assert y.shape == (0, 4, 6, 6) and dx.shape == x.shape and yp.shape == ya.shape == (0, 3, 3, 3)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))
    assert arg.dtype == np.int32 and dxp.shape == x.shape  # (the kernel's argmax dtype: its path was taken)
