"""Convolution and pooling: xpnn.functional against torch.nn.functional on the same inputs, float64
finite-difference gradchecks over stride/padding/dilation/groups/ceil_mode/count_include_pad, the array-API
reference on array_api_strict, and argument errors."""
import re

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import _dispatch, nn
from xpnn.errors import DTypeError, ShapeError
from xpnn.functional import conv as C, cpu_kernels
from _numgrad import numeric_grad

try:
    import torch
    TF = torch.nn.functional
except ImportError:  # the comparisons with PyTorch are optional; the finite-difference checks are not
    torch = TF = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed; the comparison with it is optional")

EPS = 1e-6


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# (x shape, weight shape, stride, padding, dilation, groups)
CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 2), 1, 0, 1, 1),             # non-square kernel
    ((2, 4, 9, 8), (6, 2, 3, 3), 2, 1, 2, 2),             # stride, padding, dilation, groups
    ((1, 2, 5, 5), (2, 2, 5, 5), 1, 0, 1, 1),             # kernel = input size
    ((3, 6, 8, 10), (3, 2, 1, 1), 3, (1, 2), 1, 3),       # 1x1, stride > kernel, pair padding
    ((2, 2, 6, 7), (4, 1, 2, 3), 1, "same", (1, 2), 2),   # "same" with an even kernel: extra pad bottom/right
    ((2, 3, 5, 6), (2, 3, 3, 3), (2, 1), "valid", 1, 1),
    ((1, 4, 6, 6), (4, 1, 3, 3), 1, 1, 1, 4),             # depthwise
    ((2, 3, 6, 9), (4, 3, 3, 3), (1, 2), 1, (2, 1), 1),   # stride 1 in height only, dilated rows
]


@needs_torch
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_matches_torch(xs, ws, stride, padding, dilation, groups):
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = randn(*y.shape, seed=4)
    ty.backward(torch.tensor(dy))
    dx, dw, db = F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)
    for got, t in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES[:5])
def test_conv2d_gradcheck(xs, ws, stride, padding, dilation, groups):
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    g = randn(*F.conv2d(x, w, b, stride, padding, dilation, groups).shape, seed=5)

    def f():
        return float(np.sum(F.conv2d(x, w, b, stride, padding, dilation, groups) * g))

    dx, dw, db = F.conv2d_backward(x, w, g, stride, padding, dilation, groups)
    for got, arr in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, numeric_grad(f, arr), rtol=1e-6, atol=1e-8)


@pytest.fixture(params=["compiled", "numpy"])
def pool_path(request, monkeypatch):
    """Max pooling's NumPy override both ways: through the compiled kernels (``cpu_kernels``, where built) and
    through its NumPy passes."""
    from xpnn.functional import cpu_kernels

    if request.param == "numpy":
        monkeypatch.setattr(cpu_kernels, "pooling_applies", lambda *a: False)
    return request.param


def test_numpy_overrides_equal_the_reference(pool_path):
    """The NumPy fast paths registered as overrides (conv_numpy) compute what the array-API declarations compute:
    the same columns, the same pooled values and argmax, the same pooling gradient."""
    from xpnn.autograd.op import override_for
    from xpnn.functional import conv_numpy, pooling

    x = randn(2, 3, 5, 5)
    assert override_for("conv2d", "forward", x) is not None
    assert override_for("max_pool2d", "forward", x) is not None
    assert override_for("max_pool2d", "backward", x) is not None
    assert override_for("conv2d", "backward", x) is not None
    for xs, ws, stride, padding, dilation, groups in CONV_CASES:
        x, w = randn(*xs), randn(*ws, seed=2)
        g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
        np.testing.assert_array_equal(conv_numpy.im2col_numpy(x, g), C.im2col(x, g))
        dy = randn(g.n, ws[0], g.oh, g.ow, seed=5)
        want = F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)[0]
        np.testing.assert_allclose(conv_numpy.conv2d_input_grad_numpy(w, dy, g, groups), want, rtol=1e-12,
                                   atol=1e-12)
        # the NCHW col2im path and dW: the reference's products and summation order, so bit for bit
        np.testing.assert_array_equal(conv_numpy.conv2d_input_grad_cols_numpy(w, dy, g, groups), want)
        if g.sh == 1:  # the two-pass scatter: the same terms, summed over kernel rows first
            np.testing.assert_allclose(conv_numpy.conv2d_input_grad_rows_numpy(w, dy, g, groups), want,
                                       rtol=1e-12, atol=1e-12)
        if g.sh == g.sw == 1:  # channels-last's terms in a batch-last layout
            np.testing.assert_allclose(conv_numpy.conv2d_input_grad_batch_last_numpy(w, dy, g, groups), want,
                                       rtol=1e-12, atol=1e-12)
        cols = conv_numpy.im2col_numpy(x, g).reshape(g.n, groups, -1, g.oh * g.ow)
        np.testing.assert_array_equal(conv_numpy.conv2d_weight_grad_numpy(dy, cols, g, groups, ws),
                                      F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)[1])
    for xs, k, s, p, d, ceil in POOL_CASES:
        x = randn(*xs, seed=3)
        g = pooling.pool2d_geometry(xs, k, s, p, d, ceil, "test")
        y, arg = conv_numpy.max_pool2d_numpy(x, g)
        y_ref, arg_ref = F.max_pool2d_with_argmax(x, k, s, p, d, ceil)  # the declaration's array code
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(arg, arg_ref)
        dy = randn(*y.shape, seed=4)
        np.testing.assert_allclose(conv_numpy.max_pool2d_backward_numpy(arg, dy, g),
                                   F.max_pool2d_backward(arg, dy, xs, k, s, p, d, ceil), rtol=1e-15)


@pytest.mark.parametrize("case", CONV_CASES[:3])
def test_conv2d_runs_on_array_api_strict(case):
    xps = pytest.importorskip("array_api_strict")
    xs, ws, stride, padding, dilation, groups = case
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    ys = F.conv2d(xps.asarray(x), xps.asarray(w), xps.asarray(b), stride, padding, dilation, groups)
    assert isinstance(ys, type(xps.asarray(0.0)))
    np.testing.assert_allclose(np.asarray(ys), y, rtol=1e-12)
    dy = randn(*y.shape, seed=4)
    want = F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)
    got = F.conv2d_backward(xps.asarray(x), xps.asarray(w), xps.asarray(dy), stride, padding, dilation, groups)
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b_, rtol=1e-12, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("dtype,tol", [("float16", 2e-2), ("float32", 1e-5)])
def test_conv2d_low_precision_dtypes(dtype, tol):
    x, w = randn(2, 3, 6, 6).astype(dtype), (randn(4, 3, 3, 3) * 0.3).astype(dtype)
    y = F.conv2d(x, w, padding=1)
    assert y.dtype == np.dtype(dtype)
    want = TF.conv2d(torch.tensor(x.astype(np.float64)), torch.tensor(w.astype(np.float64)), padding=1).numpy()
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol)


def test_conv2d_errors():
    x, w = randn(2, 3, 5, 5), randn(4, 3, 3, 3)
    with pytest.raises(ShapeError, match=r"conv2d: expected input with 3 channels .*got input of shape \(2, 2, 5, 5\)"):
        F.conv2d(randn(2, 2, 5, 5), w)
    for bad in ((5, 5), (1, 2, 3, 5, 5)):  # (a 3-D (C, H, W) sample is taken, as torch's conv2d does)
        with pytest.raises(ShapeError, match=rf"conv2d: expected 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, "
                                             rf"got shape {re.escape(str(bad))}"):
            F.conv2d(randn(*bad), w)
    with pytest.raises(ShapeError, match="smaller than the kernel"):
        F.conv2d(randn(2, 3, 2, 5), w)
    with pytest.raises(ValueError, match="divisible by groups"):
        F.conv2d(randn(2, 4, 5, 5), randn(3, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="'same' is not supported for strided"):
        F.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="stride must be >= 1"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(DTypeError, match="differs from weight dtype"):
        F.conv2d(x.astype(np.float32), w)
    with pytest.raises(ShapeError, match="bias must have shape"):
        F.conv2d(x, w, randn(3))
    with pytest.raises(ShapeError, match="dy must have shape"):
        F.conv2d_backward(x, w, randn(2, 4, 4, 4))


def torch_result(fn, x, dy_seed):
    """(y, dx) of ``fn`` (a torch.nn.functional call) at x for a random dy, or None without torch."""
    if torch is None:
        return None
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(tx)
    ty.backward(torch.tensor(randn(*ty.shape, seed=dy_seed)))
    return ty.detach().numpy(), tx.grad.numpy()


# ---- pooling -------------------------------------------------------------------------------------------------------

# (x shape, kernel_size, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((2, 3, 7, 6), 3, None, 0, 1, False),
    ((2, 3, 7, 6), (3, 2), (2, 1), 1, 1, True),
    ((1, 2, 9, 9), 3, 2, 1, 2, True),
    ((2, 2, 5, 5), 2, 3, 0, 1, False),        # stride > kernel
    ((1, 1, 6, 6), 2, 2, 1, 1, True),
    ((2, 2, 4, 4), 4, 1, 0, 1, False),        # kernel = input size
    ((1, 3, 8, 7), (2, 3), (3, 2), (1, 1), (2, 1), True),
    ((1, 2, 5, 5), 1, 2, 0, 1, False),        # 1x1
    ((2, 3, 8, 6), 2, None, 0, 1, False),     # windows tile the input (the NumPy backward's direct write)
    ((1, 2, 6, 4), (3, 2), None, 0, 1, False),
]


@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOL_CASES)
def test_max_pool2d_matches_torch_and_gradcheck(xs, k, s, p, d, ceil):
    x = randn(*xs, seed=7)
    y, arg = F.max_pool2d_with_argmax(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil), y)
    dy = randn(*y.shape, seed=8)
    dx = F.max_pool2d_backward(arg, dy, xs, k, s, p, d, ceil)
    want = torch_result(lambda t: TF.max_pool2d(t, k, s, p, d, ceil), x, 8)
    if want is not None:
        np.testing.assert_array_equal(y, want[0])
        np.testing.assert_allclose(dx, want[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float(np.sum(F.max_pool2d(x, k, s, p, d, ceil) * dy)), x),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("xs,k,s,p,d,ceil", [c for c in POOL_CASES if c[4] == 1])
def test_avg_pool2d_matches_torch_and_gradcheck(xs, k, s, p, d, ceil, include_pad):
    x = randn(*xs, seed=9)
    y = F.avg_pool2d(x, k, s, p, ceil, include_pad)
    dy = randn(*y.shape, seed=10)
    dx = F.avg_pool2d_backward(dy, xs, k, s, p, ceil, include_pad)
    want = torch_result(lambda t: TF.avg_pool2d(t, k, s, p, ceil, include_pad), x, 10)
    if want is not None:
        np.testing.assert_allclose(y, want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx, want[1], rtol=1e-12, atol=1e-14)
    f = lambda: float(np.sum(F.avg_pool2d(x, k, s, p, ceil, include_pad) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("xs,out", [((2, 3, 7, 6), 3), ((2, 3, 7, 6), (2, 4)), ((1, 2, 5, 9), (None, 4)),
                                    ((1, 1, 4, 4), 1), ((1, 1, 3, 3), 5)])
def test_adaptive_avg_pool2d_matches_torch_and_gradcheck(xs, out):
    x = randn(*xs, seed=11)
    y = F.adaptive_avg_pool2d(x, out)
    dy = randn(*y.shape, seed=12)
    dx = F.adaptive_avg_pool2d_backward(dy, xs, out)
    want = torch_result(lambda t: TF.adaptive_avg_pool2d(t, out), x, 12)
    if want is not None:
        np.testing.assert_allclose(y, want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx, want[1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, numeric_grad(lambda: float(np.sum(F.adaptive_avg_pool2d(x, out) * dy)), x),
                               rtol=1e-6, atol=1e-8)


UNBATCHED_OPS = [  # (xpnn op, torch op) on one (C, H, W) sample; conv2d's weight is the second argument
    (lambda x, w: F.conv2d(x, w, w[:, 0, 0, 0], 2, 1, 2, 2), lambda x, w: TF.conv2d(x, w, w[:, 0, 0, 0], 2, 1, 2, 2)),
    (lambda x, w: F.conv2d(x, w, None, 1, "same", 1, 2),
     lambda x, w: TF.conv2d(x, w, None, 1, "same", 1, 2)),
    (lambda x, w: F.max_pool2d(x, 3, 2, 1, 1, True), lambda x, w: TF.max_pool2d(x, 3, 2, 1, 1, True)),
    (lambda x, w: F.avg_pool2d(x, 3, 2, 1, True, False), lambda x, w: TF.avg_pool2d(x, 3, 2, 1, True, False)),
    (lambda x, w: F.adaptive_avg_pool2d(x, (3, 2)), lambda x, w: TF.adaptive_avg_pool2d(x, (3, 2))),
]


@pytest.mark.parametrize("op,ref", UNBATCHED_OPS)
def test_image_ops_take_an_unbatched_sample_like_torch(op, ref):
    """A 3-D (C, H, W) input (torch's unbatched form; refused before) gives torch's (C_out, OH, OW) output and, on
    the tape, torch's gradients (float64); on arrays, the batch of one's output without its batch axis."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the ops' unbatched input")
    x, w = randn(4, 7, 6, seed=1), randn(6, 2, 3, 3, seed=2)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = ref(xt, wt)
    dy = randn(*yt.shape, seed=3)
    yt.backward(torch.tensor(dy))
    tx, tw = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
    y = op(tx, tw)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-14)
    F.sum(y * xpnn.tensor(dy)).backward()
    np.testing.assert_allclose(tx.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    if wt.grad is not None:
        np.testing.assert_allclose(tw.grad, wt.grad.numpy(), rtol=1e-12, atol=1e-14)
    y_arr = op(x, w)
    assert isinstance(y_arr, np.ndarray)
    np.testing.assert_array_equal(y_arr, op(x[None], w)[0])


@pytest.mark.parametrize("op", [o for o, _ in UNBATCHED_OPS])
def test_image_ops_of_an_unbatched_sample_gradcheck(op):
    """Finite differences of sum(op(x, w) * g) against the tape's gradients for a (C, H, W) x (float64)."""
    x, w = randn(4, 6, 5, seed=1), randn(6, 2, 3, 3, seed=2)
    g = randn(*op(x, w).shape, seed=3)
    tx, tw = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
    F.sum(op(tx, tw) * xpnn.tensor(g)).backward()
    f = lambda: float(np.sum(op(x, w) * g))  # noqa: E731
    np.testing.assert_allclose(tx.grad, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    if tw.grad is not None:
        np.testing.assert_allclose(tw.grad, numeric_grad(f, w), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("op", [o for o, _ in UNBATCHED_OPS])
def test_image_ops_of_an_unbatched_sample_run_on_array_api_strict(op):
    xps = pytest.importorskip("array_api_strict")
    x, w = randn(4, 7, 6, seed=1), randn(6, 2, 3, 3, seed=2)
    ys = op(xps.asarray(x), xps.asarray(w))
    assert isinstance(ys, type(xps.asarray(0.0)))
    np.testing.assert_allclose(np.asarray(ys), op(x, w), rtol=1e-12, atol=1e-14)
    tx = xpnn.tensor(xps.asarray(x), requires_grad=True)
    F.sum(op(tx, xps.asarray(w))).backward()
    tn = xpnn.tensor(x, requires_grad=True)
    F.sum(op(tn, w)).backward()
    assert tuple(tx.grad.shape) == x.shape
    np.testing.assert_allclose(np.asarray(tx.grad), tn.grad, rtol=1e-12, atol=1e-14)


def test_pooling_runs_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    x = randn(2, 3, 7, 6)
    xs = xps.asarray(x)
    y, arg = F.max_pool2d_with_argmax(xs, 3, 2, 1, 1, True)
    np.testing.assert_array_equal(np.asarray(y), F.max_pool2d(x, 3, 2, 1, 1, True))
    dy = xps.asarray(randn(*y.shape))
    np.testing.assert_allclose(np.asarray(F.max_pool2d_backward(arg, dy, x.shape, 3, 2, 1, 1, True)),
                               F.max_pool2d_backward(np.asarray(arg), np.asarray(dy), x.shape, 3, 2, 1, 1, True))
    np.testing.assert_allclose(np.asarray(F.avg_pool2d(xs, 3, 2, 1, True, False)), F.avg_pool2d(x, 3, 2, 1, True, False))
    np.testing.assert_allclose(np.asarray(F.adaptive_avg_pool2d(xs, (2, 4))), F.adaptive_avg_pool2d(x, (2, 4)))


# stride-1 cases the transposed-convolution dx takes (odd sizes, asymmetric "same" padding, dilation, groups)
TRANSPOSED_CASES = [
    ((2, 3, 7, 7), (3, 3, 3, 3), 1, 1, 1, 1),
    ((2, 4, 6, 5), (4, 2, 3, 2), 1, (1, 0), (2, 1), 2),
    ((1, 2, 5, 6), (2, 2, 2, 3), 1, "same", 1, 1),
]


@pytest.mark.parametrize("path", ["transposed", "channels_last", "cols", "rows", "batch_last"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES + TRANSPOSED_CASES)
def test_conv2d_numpy_backward_override_matches_the_reference(monkeypatch, xs, ws, stride, padding, dilation,
                                                               groups, path):
    """Gradients through the tape (the NumPy backward override, each dx path; the transposed one where it applies)
    equal the array-API reference's in float64; each case twice, so the second call runs on recycled buffers."""
    import xpnn
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    if path == "transposed" and conv_numpy._transposed_padding(g) is None:
        assert conv_numpy.input_grad_path(g, ws[0], groups) != "transposed"  # falls back
        with pytest.raises(ValueError, match="stride 1"):
            conv_numpy.conv2d_input_grad_transposed_numpy(randn(*ws), randn(g.n, ws[0], g.oh, g.ow), g, groups)
        return
    if path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        assert conv_numpy.input_grad_path(g, ws[0], groups) != path
        with pytest.raises(ValueError, match="stride 1"):
            conv_numpy.INPUT_GRAD_PATHS[path](randn(*ws), randn(g.n, ws[0], g.oh, g.ow), g, groups)
        return
    monkeypatch.setattr(conv_numpy, "input_grad_path", lambda *_: path)
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    want = None
    for _ in range(2):
        xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (x, w, b))
        y = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
        dy = randn(*y.shape, seed=4)
        F.sum(y * xpnn.tensor(dy)).backward()
        want = want or F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)
        np.testing.assert_allclose(xt.grad, want[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(wt.grad, want[1])
        np.testing.assert_array_equal(bt.grad, want[2])


# stride-1 cases for the column-free NumPy path (conv_numpy.shift_add_product): above its default threshold (>= 16
# channels per group), groups below it, a dilated kernel reaching past the input's columns, asymmetric padding, 1x1
SHIFT_CASES = [
    ((2, 32, 6, 5), (32, 32, 3, 3), 1, 1, 1, 1),
    ((2, 8, 5, 7), (12, 2, 3, 2), 1, (2, 0), (1, 2), 4),
    ((1, 2, 7, 8), (2, 2, 3, 3), 1, (0, 2), 3, 1),
    ((2, 2, 6, 3), (3, 2, 1, 3), 1, (0, 1), (1, 2), 1),
    ((2, 3, 6, 6), (4, 3, 1, 1), 1, 0, 1, 1),
    ((2, 3, 6, 7), (4, 3, 3, 4), 1, "same", 1, 1),        # pl 1, pr 2: the pitch shares one column
    ((2, 3, 5, 6), (4, 3, 2, 2), 1, 2, 1, 1),             # padding beyond the kernel's reach: pitch = ow
]


def _conv_through_tape(x, w, b, dy_seed, *args):
    """(y, dx, dW, db) of conv2d through the tape (the NumPy overrides) for dy = randn(seed=dy_seed)."""
    import xpnn

    xt, wt, bt = (xpnn.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, *args)
    dy = randn(*y.shape, seed=dy_seed).astype(x.dtype)
    y.backward(xpnn.tensor(dy))
    return np.asarray(y.data), xt.grad, wt.grad, bt.grad, dy


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES + TRANSPOSED_CASES + SHIFT_CASES)
def test_conv2d_numpy_shift_add_path_matches_the_reference(monkeypatch, xs, ws, stride, padding, dilation, groups):
    """The column-free NumPy path (kn2row forward, dx as its transposed convolution, dW from shifted copies of
    dy) equals the array-API reference in float64 to rounding, through the tape, twice (the second time on
    recycled buffers); forced onto few channels. Strided convolutions keep im2col."""
    from xpnn.functional import conv_numpy

    monkeypatch.setattr(conv_numpy, "SHIFT_MIN_CHANNELS", 1)
    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    assert conv_numpy.shift_apply(g, ws[0], groups) == (g.sh == g.sw == 1)
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    for _ in range(2):
        y, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, stride, padding, dilation, groups)
        np.testing.assert_allclose(y, C.conv2d_forward(x, w, b, g, groups)[0], rtol=1e-12, atol=1e-12)
        for got, want in zip((dx, dw, db), F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_conv2d_numpy_shift_add_path_matches_torch(dtype, tol):
    """3x3 with 64 channels, "same" padding (the shape of the benchmark case, small): the default NumPy path is
    the column-free one, and equals PyTorch."""
    from xpnn.functional import conv_numpy

    xs, ws = (3, 64, 6, 5), (64, 64, 3, 3)
    assert conv_numpy.shift_apply(C.conv2d_geometry(xs, ws, 1, 1), 64, 1)
    x, w, b = (randn(*s, seed=i).astype(dtype) for i, s in enumerate((xs, ws, (64,))))
    y, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, 1, 1)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, 1, 1)
    ty.backward(torch.tensor(dy))
    scale = float(np.abs(ty.detach().numpy()).max())
    for got, t in ((y, ty.detach()), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, t.numpy(), rtol=tol, atol=tol * scale)


def test_conv2d_numpy_shift_add_dw_of_inf_and_nan_inputs_is_the_references():
    """The shift-add dW multiplies padding zeros by input values (0 * inf is NaN); where dW comes out non-finite
    it is recomputed from im2col columns, so exactly the reference's entries are inf/NaN."""
    from xpnn.functional import conv_numpy

    x, w, b = randn(2, 32, 5, 5, seed=1), randn(32, 32, 3, 3, seed=2), randn(32, seed=3)
    x[0, 3, 0, 4] = np.inf  # right edge: the reference's dW[:, 3, :, 0] never reads it
    x[1, 5, 2, 0] = np.nan  # left edge: nor dW[:, 5, :, 2]
    assert conv_numpy.shift_apply(C.conv2d_geometry(x.shape, w.shape, 1, 1), 32, 1)
    _, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, 1, 1)
    want = F.conv2d_backward(x, w, dy, 1, 1)[1]
    assert np.isfinite(want[:, 3, :, 0]).all() and np.isfinite(want[:, 5, :, 2]).all()
    np.testing.assert_array_equal(dw, want)



@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", SHIFT_CASES)
def test_conv2d_numpy_padded_shifts_are_the_shifted_padded_planes(xs, ws, stride, padding, dilation, groups):
    """``padded_shifts`` (built one sample at a time, zeroed planes) is its definition ``X[n, c, j, t] =
    xpad[n, c].flat[t + j*dw]`` (0 past the plane's end), also on a recycled buffer holding an earlier call's
    values."""
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    x = randn(*xs, seed=1)
    xpad = np.pad(x, ((0, 0), (0, 0), (g.pt, g.pb), (g.pl, g.pr))).reshape(g.n, g.c, -1)
    want = np.zeros((g.n, g.c, g.kw, g.hp * g.wp))
    for j in range(g.kw):
        want[:, :, j, :g.hp * g.wp - j * g.dw] = xpad[:, :, j * g.dw:]
    conv_numpy.padded_shifts(x + 1, g, "test.shifts")
    np.testing.assert_array_equal(conv_numpy.padded_shifts(x, g, "test.shifts"), want)


def test_conv2d_numpy_shift_geometry_shares_the_padding_between_rows():
    """The column-free path's planes have ``max(pl, pr)`` zero columns between two rows (at most ``dw*(kw-1)``,
    so dy's rows fit): 3x3 "same" at 32x32 has a 33-column pitch, not 34; oh, ow stay."""
    from xpnn.functional import conv_numpy

    for ws, padding, dilation, wp in (((64, 64, 3, 3), 1, 1, 33), ((4, 3, 3, 4), "same", 1, 34),
                                      ((4, 3, 2, 2), 2, 1, 35), ((4, 3, 3, 3), 0, 1, 32), ((4, 3, 3, 3), 3, 2, 35)):
        g = C.conv2d_geometry((2, ws[1], 32, 32), ws, 1, padding, dilation)
        gs = conv_numpy.shift_geometry(g)
        assert (gs.wp, gs.hp, gs.oh, gs.ow, gs.pl) == (wp, g.hp, g.oh, g.ow, g.pl)
        assert gs.wp >= max(gs.ow, g.w + max(g.pl, g.pr))


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 3, 300, 300), (0, 4, 3, 3), (2, 3, 0, 5)])
def test_conv2d_numpy_channel_sums_are_the_bias_gradient(shape):
    """``channel_sums`` (the NumPy backward's db) is ``dy.sum(axis=(0, 2, 3))``: float32 by blocked products with a
    ones vector (one row per block where a plane exceeds the block; non-contiguous dy) to float32 rounding, float64
    exactly NumPy's sum."""
    from xpnn.functional import conv_numpy

    dy = randn(*shape, seed=5)
    np.testing.assert_array_equal(conv_numpy.channel_sums(dy), dy.sum(axis=(0, 2, 3)))
    for d in (dy.astype(np.float32), dy.astype(np.float32).transpose(0, 1, 3, 2)):
        got = conv_numpy.channel_sums(d)
        assert got.dtype == np.float32 and got.shape == (shape[1],)
        want = d.astype(np.float64).sum(axis=(0, 2, 3))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(d).sum(axis=(0, 2, 3)).max(initial=1))


@pytest.mark.parametrize("channels", [4, 32])
def test_conv2d_numpy_transposed_dx_of_inf_and_nan_weights_is_the_references(channels):
    """dx as a transposed convolution multiplies dy's padding zeros by the weights (0 * inf is NaN): with an inf or
    NaN weight the NumPy backward takes the scatter path, so dx has inf/NaN exactly where the reference and
    PyTorch have them (the transposed product put NaN on border pixels the weight never reaches), both for the
    column-free (32 channels) and the im2col (4 channels) transposed products."""
    from xpnn.functional import conv_numpy

    x, w, b = randn(2, channels, 5, 5, seed=1), randn(channels, channels, 3, 3, seed=2), randn(channels, seed=3)
    w[0, 1, 0, 0] = np.inf
    w[1, 0, 2, 2] = np.nan
    assert conv_numpy.input_grad_path(C.conv2d_geometry(x.shape, w.shape, 1, 1), channels, 1) == "transposed"
    with np.errstate(invalid="ignore"):
        _, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, 1, 1)
        want = F.conv2d_backward(x, w, dy, 1, 1)[0]
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want))
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12)
    if torch is not None:
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w)
        TF.conv2d(tx, tw, None, 1, 1).backward(torch.tensor(dy))
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [4, 32])
def test_conv2d_of_an_empty_batch_has_zero_weight_and_bias_gradients(channels):
    """F.conv2d of an empty batch (N = 0; PyTorch allows it) gives an empty output and dx and all-zero dW and db,
    also right after a call of the same shapes left values in the recycled buffers (the column-free dW returned
    its uninitialised accumulator)."""
    from xpnn.functional import conv_numpy

    x, w, b = randn(2, channels, 6, 6, seed=1), randn(channels, channels, 3, 3, seed=2), randn(channels, seed=3)
    assert conv_numpy.shift_apply(C.conv2d_geometry(x.shape, w.shape, 1, 1), channels, 1) == (channels >= 16)
    _conv_through_tape(x, w, b, 4, 1, 1)
    y, dx, dw, db, _ = _conv_through_tape(x[:0], w, b, 4, 1, 1)
    assert y.shape == (0, channels, 6, 6) and dx.shape == (0, channels, 6, 6)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))
    if torch is not None:
        tw = torch.tensor(w, requires_grad=True)
        TF.conv2d(torch.zeros((0, channels, 6, 6), dtype=torch.float64), tw, None, 1, 1).sum().backward()
        np.testing.assert_array_equal(tw.grad.numpy(), dw)


@pytest.fixture
def split_loops(monkeypatch):
    """``split_loops(threads)`` sets ``cpu_threads.set_num_threads(threads)`` (None again after the test) and returns
    the list into which each ``parallel_for`` of the NumPy fast paths appends its number of chunks. Loops split
    however small their work (``CHUNK_MIN_ELEMENTS`` 1)."""
    from xpnn.functional import conv_numpy, cpu_threads

    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    real, seen = cpu_threads.parallel_for, []

    def recording(n, body, min_chunk=1):
        seen.append(real(n, body, min_chunk))
        return seen[-1]

    monkeypatch.setattr(cpu_threads, "parallel_for", recording)

    def split(threads):
        cpu_threads.set_num_threads(threads)
        seen.clear()
        return seen

    yield split
    cpu_threads.set_num_threads(None)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_conv2d_numpy_shift_add_path_split_over_threads_gives_the_same_results(split_loops, monkeypatch, dtype,
                                                                                tol):
    """The column-free path's loops split over 2 and 3 threads (``cpu_threads.parallel_for``): the forward output and dx
    (per-sample products) are bit-identical to one thread's; dW (accumulated per chunk, the chunks then added)
    equal to rounding, bit-identical from run to run at a thread count (chunks follow the batch size only) and
    exactly the chunks' sums added in chunk order."""
    import xpnn
    from xpnn.functional import conv_numpy

    monkeypatch.setattr(conv_numpy, "WINOGRAD_MIN_CHANNELS", 1 << 30)  # (3x3, 16 channels: else Winograd's path)
    xs, ws = (5, 16, 7, 6), (24, 16, 3, 3)
    assert conv_numpy.shift_apply(C.conv2d_geometry(xs, ws, 1, 1), 24, 1)
    x, w, b = (randn(*s, seed=i).astype(dtype) for i, s in enumerate((xs, ws, (24,))))
    runs = {}
    for threads in (1, 2, 2, 3, 3):
        seen = split_loops(threads)
        runs.setdefault(threads, []).append(_conv_through_tape(x, w, b, 4, 1, 1)[:4])
        assert len(seen) >= 3 and set(seen) == {threads}  # forward, dx and dW all split
    y1, dx1, dw1, db1 = runs[1][0]
    for threads in (2, 3):
        y, dx, dw, db = runs[threads][0]
        np.testing.assert_array_equal(y, y1)
        np.testing.assert_array_equal(dx, dx1)
        np.testing.assert_array_equal(db, db1)
        np.testing.assert_allclose(dw, dw1, rtol=tol, atol=tol * float(np.abs(dw1).max()))
        for a, c in zip(runs[threads][0], runs[threads][1]):
            np.testing.assert_array_equal(a, c)
    # at 3 threads, dW is exactly the chunks' dWs (samples 0-1, 2-3, 4) added in chunk order
    dy = randn(*y1.shape, seed=4).astype(dtype)
    split_loops(1)
    parts = []
    for lo, hi in ((0, 2), (2, 4), (4, 5)):
        wt = xpnn.tensor(w, requires_grad=True)
        F.conv2d(xpnn.tensor(x[lo:hi]), wt, xpnn.tensor(b), 1, 1).backward(xpnn.tensor(dy[lo:hi]))
        parts.append(wt.grad)
    np.testing.assert_array_equal(runs[3][0][2], (parts[0] + parts[1]) + parts[2])


def test_conv2d_numpy_shift_add_path_split_over_threads_gradcheck(split_loops):
    """float64 finite differences of the column-free path with its loops split over 2 threads (2 samples)."""
    from xpnn.functional import conv_numpy

    x, w, b = randn(2, 16, 3, 4, seed=1), randn(16, 16, 3, 3, seed=2), randn(16, seed=3)
    assert conv_numpy.shift_apply(C.conv2d_geometry(x.shape, w.shape, 1, 1), 16, 1)
    seen = split_loops(2)
    _, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, 1, 1)
    assert set(seen) == {2}

    def f():
        return float(np.sum(F.conv2d(x, w, b, 1, 1) * dy))

    for got, arr in ((dx, x), (dw[:2], w[:2]), (db, b)):
        np.testing.assert_allclose(got, numeric_grad(f, arr), rtol=1e-6, atol=1e-8)


def test_conv2d_numpy_shift_add_dw_of_inf_and_nan_inputs_split_over_threads(split_loops):
    """With the dW loop split over 2 threads, a non-finite dW (0 * inf from the padding) is still recomputed the
    reference's way: exactly the reference's entries are inf/NaN."""
    x, w, b = randn(2, 32, 5, 5, seed=1), randn(32, 32, 3, 3, seed=2), randn(32, seed=3)
    x[0, 3, 0, 4] = np.inf
    x[1, 5, 2, 0] = np.nan
    seen = split_loops(2)
    _, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, 1, 1)
    assert set(seen) == {2}
    want = F.conv2d_backward(x, w, dy, 1, 1)[1]
    assert np.isfinite(want[:, 3, :, 0]).all() and not np.isfinite(want).all()
    np.testing.assert_array_equal(dw, want)


def test_conv2d_numpy_shift_add_path_of_an_empty_batch_split_over_threads(split_loops):
    """N = 0 with 2 threads: no chunk runs, dW and db are zeros (after a split call of the same shapes left values
    in every thread's recycled buffers)."""
    x, w, b = randn(3, 16, 6, 6, seed=1), randn(16, 16, 3, 3, seed=2), randn(16, seed=3)
    seen = split_loops(2)
    _conv_through_tape(x, w, b, 4, 1, 1)
    assert set(seen) == {2}
    y, dx, dw, db, _ = _conv_through_tape(x[:0], w, b, 4, 1, 1)
    assert y.shape == (0, 16, 6, 6) and dx.shape == (0, 16, 6, 6)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))


def test_max_pool2d_numpy_ties_and_signed_zeros_follow_the_reference(pool_path):
    """The branch-free updates of the NumPy max pooling (separable: row maxima, then the maximum of those) keep the
    window's first maximum in row-major order on ties (-0.0 against +0.0 included: y is that element, as with
    ``copyto(y, v, where=v > y)``; a tie between a later column of an earlier row and an earlier column of a later
    row goes to the earlier row) and route dy like the reference, in the tiling backward and the general one, for
    square and rectangular kernels, strides, padding, dilation and ceil_mode."""
    from xpnn.functional import conv_numpy, pooling

    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-0.0, 0.0, 1.0, -1.0]), size=(2, 3, 8, 8))
    x[0, 0, :2, :2] = [[0.0, 1.0], [1.0, 0.0]]  # first maximum: row 0, column 1 (offset 1), not row 1 (offset 2)
    for k, s, p, d, ceil in ((2, None, 0, 1, False), (3, 2, 1, 1, False), ((2, 3), 1, (1, 1), 1, False),
                             (3, 2, 1, 2, True), ((3, 1), (2, 1), (1, 0), (2, 1), True), ((1, 3), (1, 2), (0, 1), 1,
                                                                                          False)):
        g = pooling.pool2d_geometry(x.shape, k, s, p, d, ceil, "test")
        y, arg = conv_numpy.max_pool2d_numpy(x, g)
        y_ref, arg_ref = F.max_pool2d_with_argmax(x, k, s, p, d, ceil)
        np.testing.assert_array_equal(arg, arg_ref)
        np.testing.assert_array_equal(y, y_ref)
        cols = C.im2col(x, g, pad_value=-np.inf).reshape(g.n, g.c, g.offsets, g.oh, g.ow)
        first = np.take_along_axis(cols, arg[:, :, None].astype(np.intp), axis=2)[:, :, 0]
        np.testing.assert_array_equal(np.signbit(y), np.signbit(first))  # y is the winning element, sign included
        dy = rng.standard_normal(y.shape)
        np.testing.assert_array_equal(conv_numpy.max_pool2d_backward_numpy(arg, dy, g),
                                      F.max_pool2d_backward(arg_ref, dy, x.shape, k, s, p, d, ceil))
    assert conv_numpy.max_pool2d_numpy(x, pooling.pool2d_geometry(x.shape, 2, None, 0, 1, False, "test"))[1][
        0, 0, 0, 0] == 1


def test_max_pool2d_numpy_with_a_nan_elsewhere_keeps_the_winning_element(pool_path):
    """A NaN in one window sends the NumPy max pooling to the reference for the argmax (the last NaN); y stays the
    winning element in every window: that NaN (its sign included), and the signed zero of a +0.0/-0.0 tie's first
    element, as without the NaN (the reference's y there is NumPy's max: the first NaN, the last of the zeros)."""
    from xpnn.functional import conv_numpy, pooling

    x = np.zeros((1, 2, 4, 4))
    x[0, 0, :2, :2] = [[0.0, -0.0], [-0.0, -1.0]]  # winner: +0.0 at offset 0
    x[0, 1, 0, 0], x[0, 1, 1, 1] = np.nan, -np.nan  # two NaNs in one window: argmax the last
    g = pooling.pool2d_geometry(x.shape, 2, None, 0, 1, False, "test")
    y, arg = conv_numpy.max_pool2d_numpy(x, g)
    assert arg[0, 0, 0, 0] == 0 and y[0, 0, 0, 0] == 0 and not np.signbit(y[0, 0, 0, 0])
    assert arg[0, 1, 0, 0] == 3 and np.isnan(y[0, 1, 0, 0]) and np.signbit(y[0, 1, 0, 0])
    y_ref, arg_ref = F.max_pool2d_with_argmax(x, 2)
    np.testing.assert_array_equal(arg, arg_ref)
    np.testing.assert_array_equal(y, y_ref)


@pytest.mark.parametrize("k, s, p", [(2, None, 0), (3, 2, 1), (2, 1, 0)])
def test_max_pool2d_backward_of_inf_and_nan_dy_routes_zeros_elsewhere(k, s, p, pool_path):
    """An inf or NaN in dy goes to the pixel that won its window only; the other pixels of the window get 0, as
    the reference (``where(hit, dy, 0)``) and PyTorch (the NumPy path multiplied ``hit * dy``: ``0 * inf`` is NaN),
    in the tiling backward and the general one."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for max pooling's gradient")
    from xpnn.functional import conv_numpy, pooling

    x = randn(2, 3, 8, 8, seed=1)
    g = pooling.pool2d_geometry(x.shape, k, s, p, 1, False, "test")
    y, arg = conv_numpy.max_pool2d_numpy(x, g)
    dy = randn(*y.shape, seed=2)
    dy[0, 0, 0, :3] = [np.inf, -np.inf, np.nan]
    dy[1, 2, 1, 1] = np.nan
    with np.errstate(invalid="ignore"):  # (overlapping windows: a pixel that won two can sum inf and -inf)
        dx = conv_numpy.max_pool2d_backward_numpy(arg, dy, g)
        np.testing.assert_array_equal(dx, F.max_pool2d_backward(arg, dy, x.shape, k, s, p))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, k, s, p).backward(torch.tensor(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-15, atol=0)  # (overlaps: another summation order)


def test_max_pool2d_numpy_of_huge_values_warns_nothing(pool_path):
    """The NumPy max pooling's NaN and inf checks (dot products of y and dy with themselves) overflow silently: large
    finite float32 values pool and route their gradient without a RuntimeWarning, like the reference."""
    import warnings

    x = np.full((2, 3, 8, 8), 3e38, np.float32)
    x[0, 0, 0, 0] = -3e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = nn.MaxPool2d(2)
        y = layer(x)
        dx = layer.backward(np.full(y.shape, 3e38, np.float32))
    np.testing.assert_array_equal(y, np.full(y.shape, 3e38, np.float32))
    assert np.count_nonzero(dx) == y.size


def test_max_pool2d_propagates_nan_and_takes_the_first_maximum():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, 1, 2] = np.nan
    y, arg = F.max_pool2d_with_argmax(x, 2)
    assert y[0, 0, 0, 0] == 0 and np.isnan(y[0, 0, 0, 1])
    assert arg[0, 0, 0, 0] == 0 and arg[0, 0, 0, 1] == 2  # ties: the first offset; NaN wins its window
    assert arg.dtype == np.int32


def test_pooling_errors():
    x = randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match="at most half of the kernel size"):
        F.max_pool2d(x, 2, padding=2)
    for name, fn in (("max_pool2d", F.max_pool2d), ("avg_pool2d", F.avg_pool2d),
                     ("adaptive_avg_pool2d", F.adaptive_avg_pool2d)):
        for bad in ((5, 5), (1, 2, 3, 5, 5)):  # (a 3-D (C, H, W) sample is taken, as torch's pools do)
            with pytest.raises(ShapeError, match=rf"{name}: expected 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, "
                                                 rf"got shape {re.escape(str(bad))}"):
                fn(randn(*bad), 2)
    with pytest.raises(ShapeError, match="too small for kernel"):
        F.max_pool2d(randn(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match="output_size"):
        F.adaptive_avg_pool2d(x, 0)
    with pytest.raises(DTypeError, match="floating"):
        F.max_pool2d(np.ones((1, 1, 4, 4), np.int64), 2)
    y, arg = F.max_pool2d_with_argmax(x, 2)
    with pytest.raises(ShapeError, match="dy must have shape"):
        F.max_pool2d_backward(arg, randn(2, 3, 3, 3), x.shape, 2)


def test_kernels_disabled_gives_the_same_conv():
    x, w = randn(2, 3, 6, 6), randn(4, 3, 3, 3)
    with _dispatch.use_kernels(False):
        ref = F.conv2d(x, w, padding=1)
    np.testing.assert_array_equal(F.conv2d(x, w, padding=1), ref)


# (x shape, kernel_size, stride, padding, dilation, ceil_mode) with windows that reach into the padding
POOL_EDGE_CASES = [((1, 1, 2, 2), 2, 1, 1, 1, False), ((2, 3, 5, 6), 3, 2, 1, 1, True),
                   ((1, 2, 7, 7), (3, 2), (1, 2), (1, 1), (2, 1), True), ((1, 1, 5, 5), 2, 2, 1, 2, False)]


def _max_pool_paths(x, dy, args):
    """(y, dx) of max pooling through the Tensor op (NumPy fast path), the array-API reference on NumPy and the
    reference on array_api_strict."""
    import xpnn
    from xpnn.functional import pooling

    t = xpnn.tensor(x, requires_grad=True)
    yt = F.max_pool2d(t, *args)
    yt.backward(xpnn.tensor(dy))
    out = {"numpy fast path": (np.asarray(yt.data), np.asarray(t.grad))}
    y, arg = pooling.max_pool2d_with_argmax(x, *args)
    out["reference (numpy)"] = (y, F.max_pool2d_backward(arg, dy, x.shape, *args))
    xps = pytest.importorskip("array_api_strict")
    y, arg = pooling.max_pool2d_with_argmax(xps.asarray(x), *args)
    out["reference (array_api_strict)"] = (np.asarray(y), np.asarray(
        F.max_pool2d_backward(arg, xps.asarray(dy), x.shape, *args)))
    return out


def _torch_max_pool(x, dy, args):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for max pooling's argmax rule")
    t = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.max_pool2d(t, *args)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOL_EDGE_CASES)
def test_max_pool2d_windows_of_only_minus_inf_route_into_the_input_like_torch(xs, k, s, p, d, ceil, pool_path):
    """A window whose elements are all -inf (padding included) takes its first in-bounds element as the argmax, so
    dx sums to dy.sum() (pytorch#23161); routing into the padding lost the gradient."""
    args = (k, s, p, d, ceil)
    x = np.full(xs, -np.inf)
    x.reshape(-1)[::3] = randn(x.size, seed=3)[::3] if xs != (1, 1, 2, 2) else -np.inf
    y_ref, dx_ref = _torch_max_pool(x, np.ones(F.max_pool2d(x, *args).shape), args)
    dy = np.ones(y_ref.shape)
    for path, (y, dx) in _max_pool_paths(x, dy, args).items():
        np.testing.assert_array_equal(y, y_ref, err_msg=path)
        np.testing.assert_array_equal(dx, dx_ref, err_msg=path)
        assert dx.sum() == dy.size, path
    if xs == (1, 1, 2, 2):
        np.testing.assert_array_equal(dx_ref[0, 0], [[4, 2], [2, 1]])


@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOL_EDGE_CASES[1:])
def test_max_pool2d_nan_windows_like_torch(xs, k, s, p, d, ceil, pool_path):
    """NaN propagates to every window holding one and, as in PyTorch (``val > maxval || isnan(val)``), the last NaN
    of a window gets its gradient; -inf and +inf mixed in."""
    args = (k, s, p, d, ceil)
    x = randn(*xs, seed=4)
    flat = x.reshape(-1)
    flat[::4], flat[1::7], flat[2::9] = np.nan, -np.inf, np.inf
    y_ref, dx_ref = _torch_max_pool(x, randn(*F.max_pool2d(x, *args).shape, seed=5), args)
    dy = randn(*y_ref.shape, seed=5)
    for path, (y, dx) in _max_pool_paths(x, dy, args).items():
        np.testing.assert_array_equal(y, y_ref, err_msg=path)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12, err_msg=path)


def test_integer_scalars_of_numpy_are_ints_for_window_arguments():
    """``np.int64`` / ``np.int32`` / 0-d integer arrays (what NumPy code computes sizes with) are accepted for kernel
    size, stride, padding and dilation, as PyTorch accepts them, and give the same result as Python ints; bools and
    floats are refused with the argument's name."""
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7))
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    want = F.conv2d(x, w, stride=2, padding=1, dilation=1)
    got = F.conv2d(x, w, stride=np.int64(2), padding=(np.int32(1), np.array(1)), dilation=np.uint8(1))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(F.max_pool2d(x, np.int64(2), stride=np.int16(2)), F.max_pool2d(x, 2, stride=2))
    layer = nn.Conv2d(3, 4, np.int64(3), dtype="float64")
    assert layer.kernel_size == (3, 3) and type(layer.kernel_size[0]) is int
    for bad in (True, np.True_, 2.0, (2, 2.0)):
        with pytest.raises(ValueError, match="max_pool2d: kernel_size must be an int or a pair of ints"):
            F.max_pool2d(x, bad)


@pytest.fixture
def split_batches(monkeypatch):
    """Every batch of two or more samples split over two threads (``cpu_threads``) however small its work; records
    the chunk counts of the splits that ran."""
    from xpnn.functional import conv_numpy, cpu_threads

    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    counts = []
    run = cpu_threads.parallel_for

    def spy(n, body, min_chunk=1):
        counts.append(run(n, body, min_chunk))
        return counts[-1]

    monkeypatch.setattr(cpu_threads, "parallel_for", spy)
    cpu_threads.set_num_threads(2)
    yield counts
    cpu_threads.set_num_threads(None)


@pytest.mark.parametrize("path", ["transposed", "channels_last", "cols", "rows", "batch_last"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups",
                         [c for c in CONV_CASES + TRANSPOSED_CASES if c[0][0] >= 2])
def test_conv2d_numpy_split_over_threads_matches_the_reference(split_batches, monkeypatch, xs, ws, stride, padding,
                                                               dilation, groups, path):
    """The im2col path split over two threads (each chunk of the batch's columns and products in its own thread;
    dx by the path chosen for the whole batch, per chunk; dW summed over the chunks) equals the array-API reference
    in float64, through the tape, twice (the second time on recycled buffers)."""
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    if path == "transposed" and conv_numpy._transposed_padding(g) is None \
            or path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        return  # the path does not apply (test_conv2d_numpy_backward_override_matches_the_reference)
    monkeypatch.setattr(conv_numpy, "input_grad_path", lambda *_: path)
    x, w, b = randn(*xs, seed=1), randn(*ws, seed=2), randn(ws[0], seed=3)
    for _ in range(2):
        split_batches.clear()
        y, dx, dw, db, dy = _conv_through_tape(x, w, b, 4, stride, padding, dilation, groups)
        assert split_batches and all(c == 2 for c in split_batches)  # forward, dx and dW each ran in two chunks
        np.testing.assert_allclose(y, C.conv2d_forward(x, w, b, g, groups)[0], rtol=1e-12, atol=1e-12)
        for got, want in zip((dx, dw, db), F.conv2d_backward(x, w, dy, stride, padding, dilation, groups)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_numpy_split_over_threads_is_deterministic_and_keeps_outputs(split_batches):
    """Split over two threads, float32 at LeNet's second layer: the output and dx equal the one-thread run's bit for
    bit (each sample's products are the same), dW to rounding (summed per chunk), and two runs are identical; an
    output held by the caller keeps its values while later steps run (recycled buffers stay out of reuse)."""
    from xpnn.functional import cpu_threads

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 14, 14), dtype=np.float32)
    w = rng.standard_normal((16, 6, 5, 5), dtype=np.float32)
    b = rng.standard_normal(16, dtype=np.float32)
    split = [_conv_through_tape(x, w, b, 4) for _ in range(2)]
    assert split_batches and all(c == 2 for c in split_batches)
    for got, again in zip(split[0], split[1]):
        np.testing.assert_array_equal(got, again)
    kept = [a.copy() for a in split[0]]
    cpu_threads.set_num_threads(1)
    one = _conv_through_tape(x, w, b, 4)
    np.testing.assert_array_equal(split[0][0], one[0])
    np.testing.assert_array_equal(split[0][1], one[1])
    np.testing.assert_allclose(split[0][2], one[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split[0][3], one[3])
    for got, want in zip(split[0], kept):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("xs,k,s,p,d,ceil", [c for c in POOL_CASES + POOL_EDGE_CASES if c[0][0] >= 2])
def test_max_pool2d_split_over_threads_matches_the_reference(split_batches, xs, k, s, p, d, ceil):
    """Max pooling split over two threads (per chunk of the batch: the pooled values and argmax, then the routed
    gradient) equals the array code of the declaration, through the tape, with -inf, +inf and NaN mixed in."""
    import xpnn

    x = randn(*xs, seed=3)
    flat = x.reshape(-1)
    flat[::5], flat[1::7], flat[2::11] = -np.inf, np.inf, np.nan
    y_ref, arg = F.max_pool2d_with_argmax(x, k, s, p, d, ceil)
    dy = randn(*y_ref.shape, seed=4)
    for _ in range(2):
        split_batches.clear()
        xt = xpnn.tensor(x, requires_grad=True)
        y = F.max_pool2d(xt, k, s, p, d, ceil)
        y.backward(xpnn.tensor(dy))
        assert split_batches and all(c == 2 for c in split_batches)
        np.testing.assert_array_equal(np.asarray(y.data), y_ref)
        np.testing.assert_array_equal(xt.grad, F.max_pool2d_backward(arg, dy, xs, k, s, p, d, ceil))


# the column-free path's compiled loops (kernels/cpu/conv.cpp: shifted planes, kernel-row sums, dW's shifted dy
# copies): groups, dilation, asymmetric padding, with and without bias, kh == 1, on top of the stride-1 cases above
SHIFT_KERNEL_CASES = [
    ((2, 32, 6, 5), (32, 32, 3, 3), 1, 1, 1, 1),
    ((2, 32, 7, 6), (48, 16, 3, 2), 1, (2, 0), (1, 2), 2),
    ((2, 16, 6, 7), (16, 16, 3, 4), 1, "same", 1, 1),
    ((1, 16, 5, 6), (16, 16, 2, 2), 1, 2, 1, 1),
    ((2, 16, 8, 8), (24, 16, 1, 1), 1, 0, 1, 1),
    ((3, 16, 9, 8), (32, 16, 3, 3), 1, (0, 1), (2, 1), 1),
]


needs_cpu_kernels = pytest.mark.skipif(cpu_kernels.library() is None,
                                       reason=f"the CPU kernels are not built here: {cpu_kernels.status()}")


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", ["finite", "non-finite", "no bias", "strided input"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups",
                         [c for c in CONV_CASES + TRANSPOSED_CASES if c[2] == 1] + SHIFT_KERNEL_CASES)
def test_conv2d_numpy_shift_add_compiled_loops_equal_the_numpy_passes_bit_for_bit(
        monkeypatch, xs, ws, stride, padding, dilation, groups, dtype, special):
    """y, dx and dW (and db) of the column-free path with the compiled loops equal its NumPy passes' (no loop
    applying, as where the library is not built; ``use_kernels(False)`` would run the reference, not this path) bit
    for bit, each loop having run; also with inf/NaN in x and dy (in
    shifted sums and products), without bias, for a non-contiguous input, split into one-sample chunks, twice
    (recycled buffers)."""
    from xpnn.functional import conv_numpy

    monkeypatch.setattr(conv_numpy, "SHIFT_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv_numpy, "WINOGRAD_MIN_CHANNELS", 1 << 30)  # (3x3 with 16+ channels: else Winograd's)
    ran, compiled = {}, [True]  # compiled[0] False: no compiled loop applies, so the NumPy passes run
    for name in ("shift_planes_fn", "shift_row_sum_fn", "shift_dw_rows_fn"):
        def spy(*args, _make=getattr(cpu_kernels, name), _name=name):
            loop = _make(*args) if compiled[0] else None
            if loop is None:
                return None

            def run_loop(*where):
                ran[_name] = True
                loop(*where)
            return run_loop
        monkeypatch.setattr(cpu_kernels, name, spy)
    x, w, b = (randn(*s, seed=i + 1).astype(dtype) for i, s in enumerate((xs, ws, (ws[0],))))
    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    dy = randn(g.n, ws[0], g.oh, g.ow, seed=4).astype(dtype)
    if special == "non-finite":
        x[0, 0, 0, -1], x[-1, -1, -1, 0], x[0, -1, xs[2] // 2, xs[3] // 2] = np.inf, np.nan, -np.inf
        dy[0, 0, 0, 0], dy[-1, -1, -1, -1] = np.nan, np.inf
    if special == "strided input":
        x = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)  # the same values, column-major planes
        assert not x.flags.c_contiguous
    bias = None if special == "no bias" else b

    def run():
        xt, wt = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
        bt = None if bias is None else xpnn.tensor(bias, requires_grad=True)
        with np.errstate(all="ignore"):
            y = F.conv2d(xt, wt, bt, stride, padding, dilation, groups)
            y.backward(xpnn.tensor(dy))
        return [np.array(y.data), xt.grad, wt.grad] + ([] if bt is None else [bt.grad])

    for _ in range(2):
        compiled[0] = False
        want = run()
        assert not ran
        compiled[0] = True
        got = run()
        assert ran == dict.fromkeys(("shift_planes_fn", "shift_row_sum_fn", "shift_dw_rows_fn"), True)
        ran.clear()
        for a, e in zip(got, want):
            _same_bits(a, e)


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_numpy_padded_shifts_compiled_equals_the_numpy_copies(dtype):
    """``padded_shifts`` from the compiled loop (a range of samples per call) equals its NumPy copies byte for byte,
    NaN payloads, -0.0 and the zeros included, for a strided input (every other column) on a buffer full of NaN."""
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry((3, 5, 6, 7), (4, 5, 3, 3), 1, (1, 2), (1, 2))
    x = randn(3, 5, 6, 14, seed=1).astype(dtype)[..., ::2]
    x[0, 0, 0, :3] = (np.nan, -0.0, np.inf)
    ints = np.uint32 if dtype == np.float32 else np.uint64
    with _dispatch.use_kernels(False):
        want = conv_numpy.padded_shifts(x, g, "test.shifts").copy()
    dirty = conv_numpy.padded_shifts(x, g, "test.shifts")
    dirty.fill(np.nan)  # every entry the loop must write (the zeros included) stale
    address = dirty.ctypes.data
    del dirty
    got = conv_numpy.padded_shifts(x, g, "test.shifts")
    assert got.ctypes.data == address  # (the recycled buffer)
    np.testing.assert_array_equal(got.view(ints), want.view(ints))


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("groups,cog,kh,dh,at", [(1, 5, 3, 1, 8), (3, 1, 2, 2, 0), (2, 4, 3, 1, 30)])
def test_conv2d_numpy_dw_rows_compiled_writes_exactly_the_shifted_copies(dtype, groups, cog, kh, dh, at):
    """``cpu_kernels.shift_dw_rows_fn`` writes ``est[gi, i, o, s:s+m] = pg[n, gi, o, at:at+m]`` (s = i*dh*wp,
    m = plane - max(s, at)) and nothing else, from dy's planes inside a (N, C, kw, plane) shifts buffer (rows
    kw*plane apart), every sample."""
    wp, plane = 6, 42
    planes = randn(2, groups * cog, 3, plane, seed=1).astype(dtype)[:, :, 0]
    pg = planes.reshape(2, groups, cog, plane)
    for n in range(2):
        want = np.full((groups, kh, cog, plane), np.nan, dtype)
        for i in range(kh):
            s = i * dh * wp
            m = plane - max(s, at)
            want[:, i, :, s:s + m] = pg[n, :, :, at:at + m]
        est = np.full_like(want, np.nan)
        cpu_kernels.shift_dw_rows_fn(est, pg, at, dh, wp)(n)
        np.testing.assert_array_equal(est, want)
# cases for the compiled im2col kernels (kernels/cpu/im2col.cpp): LeNet's two layers (small batch) besides the
# strides, paddings, dilations and groups above
COMPILED_CASES = CONV_CASES + TRANSPOSED_CASES + [
    ((2, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1),
    ((3, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),
    ((2, 4, 11, 10), (4, 2, 3, 3), (2, 3), (2, 1), (2, 1), 2),
]


def _same_bits(got, want, what=""):
    """Equal bit for bit, but for the sign and payload of NaNs: NaN where ``want`` is NaN. (Which operand's NaN a
    sum of two NaNs keeps depends on the instruction and the compiler's operand order: NumPy's own additions
    keep the first operand's in their vector loops and the second's in their scalar loops.)"""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
    bits = np.dtype(f"u{want.itemsize}")
    np.testing.assert_array_equal(np.where(nan, 0, got).view(bits), np.where(nan, 0, want).view(bits), err_msg=what)


def _non_finite(a):
    """a with NaN, inf, -inf and -0.0 spread over it."""
    a = a.copy()
    a.flat[::7], a.flat[3::11], a.flat[5::13], a.flat[2::17] = np.nan, np.inf, -np.inf, -0.0
    return a


@pytest.fixture
def compiled_calls(monkeypatch):
    """The return values of every ``cpu_kernels.im2col`` / ``col2im`` call (so a test sees the kernels ran); skips
    where the CPU kernels are not built."""
    from xpnn.functional import cpu_kernels

    if cpu_kernels.library() is None:
        pytest.skip(f"the CPU kernels are not built here: {cpu_kernels.status()}")
    calls = []
    for name in ("im2col", "col2im"):
        real = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *a, _real=real, _name=name: calls.append(
            (_name, _real(*a))) or calls[-1][1])
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["channels_last", "cols", "rows", "batch_last"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", COMPILED_CASES)
def test_conv2d_numpy_compiled_col2im_equals_the_numpy_scatter(compiled_calls, xs, ws, stride, padding, dilation,
                                                              groups, path, dtype):
    """Each scatter dx path with the compiled gather-form col2im gives the NumPy scatter's dx bit for bit (the same
    terms summed in the same order from 0; NaN where it has NaN), for dy with NaN, inf and -0.0, returned and
    written into ``out`` (a slice of a larger batch, as a chunk of a split backward writes)."""
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    if path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        return  # the path does not apply (test_conv2d_numpy_backward_override_matches_the_reference)
    fn = conv_numpy.INPUT_GRAD_PATHS[path]
    w = randn(*ws, seed=2).astype(dtype)
    dy = _non_finite(randn(g.n, ws[0], g.oh, g.ow, seed=4).astype(dtype))
    with _dispatch.use_kernels(False), np.errstate(all="ignore"):
        want = np.array(fn(w, dy, g, groups))
    assert not any(ran for _, ran in compiled_calls)  # kernels off: the NumPy scatter
    compiled_calls.clear()
    with np.errstate(all="ignore"):
        got = fn(w, dy, g, groups)
        _same_bits(got, want, path)
        big = np.full((g.n + 2,) + want.shape[1:], 7, dtype)
        fn(w, dy, g, groups, out=big[1:-1])
        _same_bits(big[1:-1], want, path + " (out)")
    assert compiled_calls == [("col2im", True)] * 2
    np.testing.assert_array_equal(big[[0, -1]], 7)  # nothing written outside out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", COMPILED_CASES)
def test_conv2d_numpy_compiled_im2col_equals_the_numpy_copies(compiled_calls, xs, ws, stride, padding, dilation,
                                                             groups, dtype):
    """The compiled column tensor is ``im2col_numpy``'s NumPy copies exactly (NaN, inf and -0.0 copied, zeros in
    the padding), in its recycled buffer."""
    from xpnn.functional import conv_numpy

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    x = _non_finite(randn(*xs, seed=1).astype(dtype))
    with _dispatch.use_kernels(False):
        want = conv_numpy.im2col_numpy(x, g).copy()
    got = conv_numpy.im2col_numpy(x, g)
    assert compiled_calls == [("im2col", False), ("im2col", True)]  # kernels off, then on
    bits = np.dtype(f"u{want.itemsize}")
    np.testing.assert_array_equal(got.view(bits), want.view(bits))
    np.testing.assert_array_equal(got, C.im2col(x, g))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", ["channels_last", "cols", "rows", "batch_last"])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", [c for c in COMPILED_CASES if c[0][0] >= 2])
def test_conv2d_numpy_compiled_kernels_give_the_numpy_step(compiled_calls, monkeypatch, xs, ws, stride, padding,
                                                           dilation, groups, path, threads):
    """Through the tape in float32, whole and split over two threads (each chunk's columns and dx scatter one
    compiled call): y, dx, dW and db with the compiled kernels equal those with the kernels off bit for bit."""
    from xpnn.functional import conv_numpy, cpu_threads

    g = C.conv2d_geometry(xs, ws, stride, padding, dilation, groups)
    if path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        return
    monkeypatch.setattr(conv_numpy, "input_grad_path", lambda *_: path)
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    x, w, b = (randn(*s, seed=k).astype(np.float32) for k, s in enumerate((xs, ws, (ws[0],)), 1))
    cpu_threads.set_num_threads(threads)
    try:
        with _dispatch.use_kernels(False):
            want = _conv_through_tape(x, w, b, 4, stride, padding, dilation, groups)
        assert not any(ran for _, ran in compiled_calls)
        compiled_calls.clear()
        got = _conv_through_tape(x, w, b, 4, stride, padding, dilation, groups)
    finally:
        cpu_threads.set_num_threads(None)
    assert compiled_calls.count(("im2col", True)) == threads and compiled_calls.count(("col2im", True)) == threads
    for a, b_, what in zip(got, want, ("y", "dx", "dW", "db", "dy")):
        _same_bits(a, b_, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "nhwc-view"])
@pytest.mark.parametrize("threads,n", [(3, 5), (3, 7), (4, 5), (4, 7)])
def test_compiled_conv_and_max_pool_split_unevenly_give_the_numpy_step(monkeypatch, threads, n, layout, dtype):
    """A small CNN (im2col conv, overlapping ceil-mode pooling, grouped strided 1x5 conv, 2x2 pooling, column-free
    conv) through the tape with its batch split unevenly over 3 and 4 threads (chunks of 1-2 samples, one compiled
    call each), its input contiguous or an NCHW view of NHWC data: the loss and every gradient equal those of the
    NumPy passes (the compiled wrappers left out) bit for bit, and the compiled kernels ran on more than one chunk."""
    import xpnn
    from xpnn.functional import conv_numpy, cpu_threads

    if cpu_kernels.library() is None:
        pytest.skip(f"the CPU kernels are not built here: {cpu_kernels.status()}")
    monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
    monkeypatch.setattr(conv_numpy, "SHIFT_MIN_CHANNELS", 16)  # the last conv only (16 -> 16 channels)
    x = randn(n, 11, 13, 3, seed=1).astype(dtype).transpose(0, 3, 1, 2)
    if layout == "contiguous":
        x = np.ascontiguousarray(x)
    ws = [randn(*s, seed=k).astype(dtype) for k, s in enumerate(((8, 3, 3, 3), (16, 4, 1, 5), (16, 16, 3, 3)), 2)]
    bs = [randn(s, seed=k).astype(dtype) for k, s in enumerate((8, 16, 16), 5)]

    def step():
        xt = xpnn.tensor(x, requires_grad=True)
        params = [xpnn.tensor(a, requires_grad=True) for a in ws + bs]
        h = F.relu(F.conv2d(xt, params[0], params[3], 1, 1))
        h = F.max_pool2d(h, 3, 2, 1, ceil_mode=True)
        h = F.relu(F.conv2d(h, params[1], params[4], (1, 2), (0, 2), 1, 2))
        h = F.max_pool2d(h, 2)
        h = F.conv2d(h, params[2], params[5], 1, 1)
        loss = (h * h).sum()
        loss.backward()
        return [np.array(loss.data), np.array(xt.grad)] + [np.array(p.grad) for p in params]

    ran = []
    cpu_threads.set_num_threads(threads)
    try:
        with monkeypatch.context() as m:  # the NumPy passes
            for name in ("im2col", "col2im", "im2col_ready", "max_pool2d", "max_pool2d_backward", "pooling_applies"):
                m.setattr(cpu_kernels, name, lambda *a: False)
            for name in ("shift_planes_fn", "shift_row_sum_fn", "shift_dw_rows_fn"):
                m.setattr(cpu_kernels, name, lambda *a: None)
            want = step()
        for name in ("im2col", "max_pool2d"):
            real = getattr(cpu_kernels, name)
            monkeypatch.setattr(cpu_kernels, name, lambda *a, _real=real, _name=name: ran.append(
                (_name, _real(*a))) or ran[-1][1])
        got = step()
    finally:
        cpu_threads.set_num_threads(None)
    for a, b, what in zip(got, want, ("loss", "dx", "dW1", "dW2", "dW3", "db1", "db2", "db3")):
        _same_bits(a, b, what)
    assert ran.count(("max_pool2d", True)) == 2 * threads
    # conv1's columns compiled per chunk where its chunks are C-contiguous; conv2's always
    assert ran.count(("im2col", True)) == (1 if layout == "nhwc-view" else 2) * threads


@pytest.mark.parametrize("path", ["channels_last", "cols"])
@pytest.mark.parametrize("stride", [(2**63 - 1, 2**63 - 1), (2**62 + 1, 3), (2, 2**63 - 2)])
def test_conv2d_numpy_compiled_kernels_with_strides_near_the_int64_limit(compiled_calls, monkeypatch, stride, path):
    """A stride so large that one window fits in its axis (up to 2^63 - 1, the geometry's int64): the compiled
    columns and col2im give the reference's y and dx (their index math must not overflow: a ceiling division as
    (a + s - 1) / s wrapped and left output rows and dx zero)."""
    from xpnn.functional import conv_numpy

    monkeypatch.setattr(conv_numpy, "input_grad_path", lambda *_: path)
    x, w, b = randn(2, 3, 9, 10, seed=1), randn(4, 3, 2, 3, seed=2), randn(4, seed=3)
    with _dispatch.use_kernels(False):  # the array-API reference
        want = _conv_through_tape(x, w, b, 4, stride, 1, 1, 1)
    compiled_calls.clear()
    got = _conv_through_tape(x, w, b, 4, stride, 1, 1, 1)
    assert compiled_calls == [("im2col", True), ("col2im", True)]
    for a, b_, what in zip(got, want, ("y", "dx", "dW", "db")):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12, err_msg=what)
