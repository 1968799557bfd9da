"""The softmax family, the losses and the activations: float16 paths, options and checks.

float16 inputs are computed in float32 and rounded once at the end: results must equal the float32 computation on the
same (exactly widened) values, cast to float16 — not a computation in native float16, which rounds every step.
"""
from __future__ import annotations

import warnings

import array_api_strict as xs
import numpy as np
import pytest

from xpnn import functional as F
from xpnn.errors import DTypeError, ShapeError


def _half(shape=(64, 257), scale=4.0, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float16)


def _native_softmax(x):
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# --- softmax family ------------------------------------------------------------------------------------------------

def test_float16_softmax_is_the_float32_result_rounded_once():
    x = _half()
    out = F.softmax(x)
    assert out.dtype == np.float16
    assert np.array_equal(out, F.softmax(x.astype(np.float32)).astype(np.float16))
    assert not np.array_equal(out, _native_softmax(x))  # the test data tells the two apart


def test_float16_log_softmax_is_the_float32_result_rounded_once():
    x = _half(seed=1)
    out = F.log_softmax(x)
    assert out.dtype == np.float16
    assert np.array_equal(out, F.log_softmax(x.astype(np.float32)).astype(np.float16))
    z = x - x.max(-1, keepdims=True)
    assert not np.array_equal(out, z - np.log(np.exp(z).sum(-1, keepdims=True)))


@pytest.mark.parametrize("keepdims", [False, True])
def test_float16_logsumexp_is_the_float32_result_rounded_once(keepdims):
    x = _half(shape=(256, 1000), scale=8.0, seed=2)
    out = F.logsumexp(x, keepdims=keepdims)
    assert out.dtype == np.float16 and out.shape == ((256, 1) if keepdims else (256,))
    assert np.array_equal(out, F.logsumexp(x.astype(np.float32), keepdims=keepdims).astype(np.float16))
    m = x.max(-1, keepdims=True)
    native = np.log(np.exp(x - m).sum(-1, keepdims=True)) + m
    assert not np.array_equal(out.reshape(256, 1), native)


def test_float16_softmax_along_axis_0_and_3d():
    x = _half(shape=(5, 7, 9), seed=3)
    for axis in (0, 1, -1):
        out = F.softmax(x, axis=axis)
        assert out.dtype == np.float16
        assert np.array_equal(out, F.softmax(x.astype(np.float32), axis=axis).astype(np.float16))
        assert np.array_equal(F.log_softmax(x, axis=axis),
                              F.log_softmax(x.astype(np.float32), axis=axis).astype(np.float16))


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_softmax_family_dtype_is_kept_for_float32_and_float64(f):
    for dt in (np.float32, np.float64):
        assert f(np.zeros((2, 3), dt)).dtype == dt


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_softmax_family_needs_one_dimension_and_accepts_1d(f):
    with pytest.raises(ValueError, match="at least one dimension"):
        f(np.float64(1.0) * np.ones(()))
    x = np.array([1.0, 2.0, 3.0])
    lse = np.log(np.exp(x).sum())
    want = {F.softmax: np.exp(x - lse), F.log_softmax: x - lse, F.logsumexp: lse}[f]
    np.testing.assert_allclose(f(x), want, rtol=1e-14)


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_softmax_family_rejects_integers_and_lists_naming_the_function(f):
    name = f.__name__
    with pytest.raises(DTypeError, match=rf"{name}: input must be a floating array"):
        f(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match=rf"{name}: expected arrays, got list"):
        f([[1.0, 2.0]])
    with pytest.raises(ValueError, match=rf"{name}: input must have at least one dimension"):
        f(np.ones(()))


def test_softmax_of_huge_equal_logits_is_uniform():
    x = np.full((2, 4), 1e308)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.array_equal(F.softmax(x), np.full((2, 4), 0.25))
        assert np.array_equal(F.log_softmax(x), np.full((2, 4), -np.log(4.0)))
        np.testing.assert_allclose(F.logsumexp(x), 1e308, rtol=1e-15)


# --- losses --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float16_cross_entropy_is_the_float32_result_rounded_once(reduction):
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(300, 50)) * 3).astype(np.float16)
    t = rng.integers(0, 50, size=300)
    t[::7] = -100
    x32 = x.astype(np.float32)
    loss = F.cross_entropy(x, t, reduction=reduction)
    want = F.cross_entropy(x32, t, reduction=reduction)
    assert loss.dtype == np.float16 and loss.shape == want.shape
    assert np.array_equal(loss, want.astype(np.float16))
    loss2, grad = F.cross_entropy_with_grad(x, t, reduction=reduction)
    want2, want_grad = F.cross_entropy_with_grad(x32, t, reduction=reduction)
    assert loss2.dtype == np.float16 and grad.dtype == np.float16
    assert np.array_equal(loss2, want2.astype(np.float16))
    assert np.array_equal(grad, want_grad.astype(np.float16))


def test_cross_entropy_float32_result_dtypes():
    x = np.zeros((3, 4), np.float32)
    t = np.array([0, 1, 2])
    assert F.cross_entropy(x, t).dtype == np.float32
    loss, grad = F.cross_entropy_with_grad(x, t)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-6)


def test_cross_entropy_label_smoothing_bounds():
    x, t = np.zeros((2, 3)), np.array([0, 1])
    for ok in (0.0, 1.0):
        F.cross_entropy(x, t, label_smoothing=ok)
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
            F.cross_entropy(x, t, label_smoothing=bad)
        with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
            F.cross_entropy_with_grad(x, t, label_smoothing=bad)


def test_cross_entropy_full_label_smoothing_is_the_uniform_target():
    x = np.array([[1.0, 2.0, 4.0]])
    lsm = x - np.log(np.exp(x).sum())
    loss, grad = F.cross_entropy_with_grad(x, np.array([2]), label_smoothing=1.0)
    np.testing.assert_allclose(loss, -lsm.mean(), rtol=1e-14)
    np.testing.assert_allclose(grad, np.exp(lsm) - 1 / 3, rtol=1e-13)


def test_cross_entropy_sum_and_none_ignore_rows():
    x = np.array([[0.0, 1.0], [2.0, 0.0], [5.0, 5.0]])
    t = np.array([1, -100, 0])
    per = F.cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(per, [np.log1p(np.exp(-1.0)), 0.0, np.log(2.0)], rtol=1e-14)
    np.testing.assert_allclose(F.cross_entropy(x, t, reduction="sum"), per.sum(), rtol=1e-14)
    np.testing.assert_allclose(F.cross_entropy(x, t), per.sum() / 2, rtol=1e-14)  # mean over the 2 kept rows
    _, g = F.cross_entropy_with_grad(x, t)
    assert np.array_equal(g[1], [0.0, 0.0])
    np.testing.assert_allclose(g[2], [0.5 / 2 - 1 / 2, 0.5 / 2], rtol=1e-14)


@pytest.mark.parametrize("shape", [(0, 3), (0,), (2, 0)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fn,layer", [("mse_loss", "MSELoss"),
                                      ("binary_cross_entropy_with_logits", "BCEWithLogitsLoss")])
def test_pair_losses_of_an_empty_batch_give_pytorchs_nan_mean_zero_sum_and_empty_none(fn, layer, reduction, shape):
    """An empty input (refused before, as cross_entropy's was): PyTorch's NaN for "mean", 0 for "sum", an empty
    array for "none", and an empty gradient; from F.<fn> (arrays, Tensors, array_api_strict), F.<fn>_with_grad and
    nn.<layer> (both APIs), with no warning (neither torch nor NumPy's 0/0)."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the losses' empty batch")
    import xpnn
    from xpnn import nn

    p, y = np.zeros(shape), np.zeros(shape)
    pt = torch.tensor(p, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want_t = getattr(torch.nn.functional, fn)(pt, torch.tensor(y), reduction=reduction)
        want_t.sum().backward()
    want = want_t.detach().numpy()
    assert want.shape == (shape if reduction == "none" else ())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no "Mean of empty slice" / 0/0 RuntimeWarning)
        got = getattr(F, fn)(p, y, reduction=reduction)
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape and got.dtype == np.float64
        loss, grad = getattr(F, fn + "_with_grad")(p, y, reduction=reduction)
        np.testing.assert_array_equal(loss, want)
        assert grad.shape == shape
        x = xpnn.tensor(p, requires_grad=True)
        out = getattr(F, fn)(x, y, reduction=reduction)
        np.testing.assert_array_equal(out.numpy(), want)
        out.sum().backward()
        assert x.grad.shape == tuple(pt.grad.shape) == shape
        np.testing.assert_array_equal(np.asarray(getattr(F, fn)(xs.asarray(p), xs.asarray(y), reduction=reduction)),
                                      want)
        m = getattr(nn, layer)(reduction=reduction)
        np.testing.assert_array_equal(m(p, y), want)  # the explicit API
        assert m.backward().shape == shape


@pytest.mark.parametrize("fn", ["mse_loss", "binary_cross_entropy_with_logits"])
def test_pair_losses_accept_a_batch_of_one(fn):
    f, fg = getattr(F, fn), getattr(F, fn + "_with_grad")
    p, y = np.array([[0.5, -1.0, 2.0]]), np.array([[1.0, 0.0, 1.0]])
    if fn == "mse_loss":
        want = ((p - y) ** 2).mean()
        want_grad = 2 * (p - y) / 3
    else:
        want = (np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p)))).mean()
        want_grad = (1 / (1 + np.exp(-p)) - y) / 3
    np.testing.assert_allclose(f(p, y), want, rtol=1e-14)
    loss, grad = fg(p, y)
    np.testing.assert_allclose(loss, want, rtol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-14)


def test_pair_losses_on_0d_arrays():
    p, y = np.array(3.0), np.array(1.0)
    assert F.mse_loss(p, y) == 4.0
    loss, grad = F.mse_loss_with_grad(p, y)
    assert loss == 4.0 and grad == 4.0
    loss, grad = F.binary_cross_entropy_with_logits_with_grad(np.array(0.0), np.array(1.0))
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-15)
    assert grad == -0.5


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_pair_loss_gradients_are_unscaled_for_sum_and_none(reduction):
    p, y = np.array([[1.0, 2.0], [3.0, 5.0]]), np.zeros((2, 2))
    _, g = F.mse_loss_with_grad(p, y, reduction=reduction)
    assert np.array_equal(g, 2 * p)
    _, g = F.binary_cross_entropy_with_logits_with_grad(p, y, reduction=reduction)
    np.testing.assert_allclose(g, 1 / (1 + np.exp(-p)), rtol=1e-15)


def test_pair_loss_checks():
    with pytest.raises(ShapeError):
        F.mse_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(DTypeError):
        F.mse_loss(np.zeros((2, 3)), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.mse_loss(np.zeros((2, 3)), np.zeros((2, 3)), reduction="avg")


def test_bce_with_logits_is_finite_for_huge_logits():
    x = np.array([-1e4, 1e4, 0.0])
    t = np.array([1.0, 0.0, 0.5])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        per = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        _, g = F.binary_cross_entropy_with_logits_with_grad(x, t, reduction="none")
    np.testing.assert_allclose(per, [1e4, 1e4, np.log(2.0)], rtol=1e-15)
    assert np.array_equal(g, [-1.0, 1.0, 0.0])


# --- activations ---------------------------------------------------------------------------------------------------

def test_leaky_relu_default_slope_is_0_01():
    x = np.array([-3.0, -0.5, 0.0, 2.0])
    dy = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.array_equal(F.leaky_relu(x), [-0.03, -0.005, 0.0, 2.0])
    assert np.array_equal(F.leaky_relu_backward(x, dy), [0.01, 0.02, 0.03, 4.0])


def test_elu_default_alpha_is_1():
    x = np.array([-3.0, -0.5, 0.0, 2.0])
    dy = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(F.elu(x), [np.expm1(-3.0), np.expm1(-0.5), 0.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(F.elu_backward(x, dy), [np.exp(-3.0), 2 * np.exp(-0.5), 3.0, 4.0], rtol=1e-15)


def test_activation_layers_use_the_same_defaults():
    from xpnn import nn

    x = np.array([[-2.0, 3.0]])
    assert np.array_equal(nn.LeakyReLU()(x), [[-0.02, 3.0]])
    np.testing.assert_allclose(nn.ELU()(x), [[np.expm1(-2.0), 3.0]], rtol=1e-15)


def test_sigmoid_of_very_negative_input_is_exactly_zero_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="warn", invalid="warn", divide="warn", under="ignore"):
            out = F.sigmoid(np.array([-1000.0, 1000.0, 0.0]))
            out16 = F.sigmoid(np.array([-100.0], np.float16))
    assert np.array_equal(out, [0.0, 1.0, 0.5])
    assert out16.dtype == np.float16 and out16[0] == 0


def test_sigmoid_on_array_api_strict():
    y = F.sigmoid(xs.asarray([-1000.0, 0.0, 2.0]))
    np.testing.assert_allclose(np.asarray(y), [0.0, 0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-15)


def test_activation_backwards_check_their_inputs():
    for f in (F.sigmoid_backward, F.tanh_backward, F.relu_backward, F.leaky_relu_backward, F.elu_backward,
              F.selu_backward):
        with pytest.raises(ShapeError):
            f(np.zeros(3), np.zeros(4))
        with pytest.raises(DTypeError):
            f(np.zeros(3), np.zeros(3, np.float32))


def test_activations_reject_integers_naming_the_function():
    for f in (F.sigmoid, F.tanh, F.relu, F.leaky_relu, F.elu):
        with pytest.raises(DTypeError, match=rf"^{f.__name__}: input must be a floating array"):
            f(np.arange(3))
        # a list was a TypeError; NumPy code passes lists, so it now becomes an array (tests/test_functional.py)
        np.testing.assert_array_equal(f([1.0, 2.0]), f(np.array([1.0, 2.0])))
    with pytest.raises(DTypeError, match="input must be a floating array"):  # (named "elu": selu runs the elu op)
        F.selu(np.arange(3))


def test_cross_entropy_on_a_batch_of_one():
    x = np.array([[0.5, -1.0, 2.0, 0.0]])
    p = np.exp(x - np.log(np.exp(x).sum()))
    for reduction in ("mean", "sum"):
        loss, grad = F.cross_entropy_with_grad(x, np.array([1]), reduction=reduction)
        np.testing.assert_allclose(loss, -np.log(p[0, 1]), rtol=1e-14)
        np.testing.assert_allclose(grad, p - np.array([[0.0, 1.0, 0.0, 0.0]]), rtol=1e-14, atol=1e-16)
    # one kept row among ignored ones: the mean is over that row alone
    x3 = np.vstack([x, x * 3, x - 1])
    loss, grad = F.cross_entropy_with_grad(x3, np.array([-100, 1, -100]))
    p1 = np.exp(3 * x - np.log(np.exp(3 * x).sum()))
    np.testing.assert_allclose(loss, -np.log(p1[0, 1]), rtol=1e-14)
    np.testing.assert_allclose(grad[1], p1[0] - [0.0, 1.0, 0.0, 0.0], rtol=1e-13, atol=1e-16)
    assert not grad[0].any() and not grad[2].any()


@pytest.mark.parametrize("name,first", [("mse_loss", "pred"), ("binary_cross_entropy_with_logits", "logits")])
def test_pair_losses_check_finite_values_in_debug_mode(name, first):
    import xpnn

    good, bad = np.zeros((2, 3)), np.zeros((2, 3))
    bad[0, 1] = np.inf
    for fn in (name, name + "_with_grad"):
        f = getattr(F, fn)
        with np.errstate(invalid="ignore"):  # inf * 0 in the BCE terms
            f(bad, good)  # off by default
        with xpnn.debug.debug_mode(True):
            with pytest.raises(xpnn.NonFiniteError, match=rf"{fn}: {first} contains 0 NaN and 1 inf"):
                f(bad, good)
            with pytest.raises(xpnn.NonFiniteError, match=rf"{fn}: target contains 0 NaN and 1 inf"):
                f(good, bad)


def test_activation_derivatives_at_exactly_zero_take_the_left_branch():
    x, dy = np.array([0.0]), np.array([3.0])
    from xpnn.functional.activations import SELU_ALPHA, SELU_SCALE

    assert F.relu_backward(x, dy).tolist() == [0.0]  # PyTorch: relu'(0) = 0
    assert F.leaky_relu_backward(x, dy, 0.2).tolist() == [3.0 * 0.2]
    assert F.elu_backward(x, dy, 2.0).tolist() == [6.0]  # alpha * exp(0) * dy
    np.testing.assert_allclose(F.selu_backward(x, dy), [3.0 * SELU_SCALE * SELU_ALPHA], rtol=1e-15)
    assert F.relu(x).tolist() == [0.0] and F.elu(x, 2.0).tolist() == [0.0] and F.selu(x).tolist() == [0.0]


def test_elu_and_selu_never_overflow_in_the_unused_branch():
    x = np.array([1000.0, -1000.0, 0.5])
    dy = np.ones(3)
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_allclose(F.elu(x, 1.5), [1000.0, -1.5, 0.5], rtol=1e-15)
        np.testing.assert_allclose(F.elu_backward(x, dy, 1.5), [1.0, 0.0, 1.0], rtol=1e-15)
        assert np.isfinite(F.selu(x)).all() and np.isfinite(F.selu_backward(x, dy)).all()
        np.testing.assert_allclose(F.tanh_backward(F.tanh(x), dy), [0.0, 0.0, 1 - np.tanh(0.5) ** 2], rtol=1e-12)


# --- gradients of the softmax family (through xpnn.Tensor) ---------------------------------------------------------

def _grad_of(f, x, g, **kw):
    import xpnn

    t = xpnn.tensor(x, requires_grad=True)
    f(t, **kw).backward(g)
    return t.grad


def _softmax64(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_family_gradients_along_any_axis(axis):
    rng = np.random.default_rng(20)
    x = rng.normal(size=(4, 5))
    p = _softmax64(x, axis)
    g = rng.normal(size=(4, 5))
    np.testing.assert_allclose(_grad_of(F.softmax, x, g, axis=axis), p * (g - (g * p).sum(axis, keepdims=True)),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(_grad_of(F.log_softmax, x, g, axis=axis), g - p * g.sum(axis, keepdims=True),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(F.softmax_backward(p, g, axis), p * (g - (g * p).sum(axis, keepdims=True)),
                               rtol=1e-12, atol=1e-15)
    for keepdims in (False, True):
        gl = rng.normal(size=(1, 5) if axis == 0 else (4, 1))
        if not keepdims:
            gl = gl.reshape(-1)
        want = (gl if keepdims else np.expand_dims(gl, axis)) * p
        np.testing.assert_allclose(_grad_of(F.logsumexp, x, gl, axis=axis, keepdims=keepdims), want,
                                   rtol=1e-10, atol=1e-14)


def test_float16_softmax_backward_is_computed_in_float32_and_rounded_once():
    rng = np.random.default_rng(21)
    y = F.softmax((rng.normal(size=(16, 300)) * 3).astype(np.float16))
    dy = rng.normal(size=(16, 300)).astype(np.float16)
    y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
    want = (y32 * (dy32 - (dy32 * y32).sum(-1, keepdims=True))).astype(np.float16)
    out = F.softmax_backward(y, dy)
    assert out.dtype == np.float16 and np.array_equal(out, want)
    assert _grad_of(F.softmax, (y * 0).astype(np.float16), dy).dtype == np.float16
    for axis in (0, 1):
        w = (y32 * (dy32 - (dy32 * y32).sum(axis, keepdims=True))).astype(np.float16)
        assert np.array_equal(F.softmax_backward(y, dy, axis), w)


def test_float16_log_softmax_backward_is_computed_in_float32_and_rounded_once():
    rng = np.random.default_rng(22)
    x = (rng.normal(size=(16, 300)) * 3).astype(np.float16)
    g = rng.normal(size=(16, 300)).astype(np.float16)
    out32 = F.log_softmax(x).astype(np.float32)
    g32 = g.astype(np.float32)
    want = (g32 - np.exp(out32) * g32.sum(-1, keepdims=True)).astype(np.float16)
    got = _grad_of(F.log_softmax, x, g)
    assert got.dtype == np.float16 and np.array_equal(got, want)


def test_softmax_backward_checks_its_arrays():
    with pytest.raises(ShapeError, match="softmax_backward"):
        F.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(DTypeError, match="softmax_backward"):
        F.softmax_backward(np.ones((2, 3)), np.ones((2, 3), np.float32))


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_softmax_family_axis_out_of_range(f):
    with pytest.raises(ValueError, match=rf"{f.__name__}: axis 2 is out of range for input of shape \(2, 3\)"):
        f(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="out of range"):
        f(np.ones((2, 3)), axis=-3)
    assert f(np.ones((2, 3)), axis=-2).shape == ((3,) if f is F.logsumexp else (2, 3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_gradient_recorded_for_higher_orders_has_the_plain_value(reduction, eps):
    # create_graph builds d loss / d logits as an expression of the logits: its value is the fused gradient's,
    # including a mean over a single kept row and ignored rows
    import xpnn

    rng = np.random.default_rng(23)
    x = rng.normal(size=(4, 5))
    for t in (np.array([1, -100, 4, 0]), np.array([-100, 3, -100, -100])):
        X = xpnn.tensor(x, requires_grad=True)
        loss = F.cross_entropy(X, t, reduction=reduction, label_smoothing=eps)
        seed = np.ones(4) if reduction == "none" else None
        (g,) = xpnn.grad(loss, [X], grad_outputs=None if seed is None else [seed], create_graph=True)
        _, want = F.cross_entropy_with_grad(x, t, reduction=reduction, label_smoothing=eps)
        np.testing.assert_allclose(np.asarray(g.data), want, rtol=1e-12, atol=1e-15)
        # and it is differentiable: cross-entropy is convex in the logits, so v' H v >= 0
        v = rng.normal(size=(4, 5))
        (hv,) = xpnn.grad((g * v).sum(), [X])
        assert float(np.sum(np.asarray(hv.data) * v)) >= -1e-12


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float16_pair_losses_are_the_float32_result_rounded_once(reduction):
    rng = np.random.default_rng(24)
    p = (rng.normal(size=(64, 33)) * 4).astype(np.float16)
    y = rng.uniform(size=(64, 33)).astype(np.float16)
    p32, y32 = p.astype(np.float32), y.astype(np.float32)
    for name in ("mse_loss", "binary_cross_entropy_with_logits"):
        f, fg = getattr(F, name), getattr(F, name + "_with_grad")
        loss = f(p, y, reduction=reduction)
        assert loss.dtype == np.float16
        assert np.array_equal(loss, f(p32, y32, reduction=reduction).astype(np.float16)), name
        loss, grad = fg(p, y, reduction=reduction)
        want_loss, want_grad = fg(p32, y32, reduction=reduction)
        assert loss.dtype == np.float16 and grad.dtype == np.float16
        assert np.array_equal(loss, want_loss.astype(np.float16)), name
        assert np.array_equal(grad, want_grad.astype(np.float16)), name


# --- second derivatives of the activations (the backward ops are differentiable too) ------------------------------

def _second_order(f, x, s, v):
    """(d/dx and d/ds of sum(v * grad(f(x), x, seed s))) through xpnn.grad with create_graph."""
    import xpnn

    X, S = xpnn.tensor(x, requires_grad=True), xpnn.tensor(s, requires_grad=True)
    (g1,) = xpnn.grad(f(X), [X], grad_outputs=[S], create_graph=True)
    gx, gs = xpnn.grad((g1 * v).sum(), [X, S], allow_unused=True)  # relu'' = 0: x may not be used at all
    gx = np.zeros_like(x) if gx is None else np.asarray(gx.data)
    return np.asarray(g1.data), gx, np.asarray(gs.data)


def _derivatives(name, x):
    """(f'(x), f''(x)) for x away from 0."""
    from xpnn.functional.activations import SELU_ALPHA as A, SELU_SCALE as SC

    if name == "sigmoid":
        y = 1 / (1 + np.exp(-x))
        return y * (1 - y), y * (1 - y) * (1 - 2 * y)
    if name == "tanh":
        t = np.tanh(x)
        return 1 - t * t, -2 * t * (1 - t * t)
    if name == "relu":
        return (x > 0) * 1.0, np.zeros_like(x)
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, 0.3), np.zeros_like(x)
    if name == "elu":
        return np.where(x > 0, 1.0, 1.7 * np.exp(x)), np.where(x > 0, 0.0, 1.7 * np.exp(x))
    return np.where(x > 0, SC, SC * A * np.exp(x)), np.where(x > 0, 0.0, SC * A * np.exp(x))  # selu


_ACTS = {"sigmoid": lambda t: F.sigmoid(t), "tanh": lambda t: F.tanh(t), "relu": lambda t: F.relu(t),
         "leaky_relu": lambda t: F.leaky_relu(t, 0.3), "elu": lambda t: F.elu(t, 1.7), "selu": lambda t: F.selu(t)}


@pytest.mark.parametrize("name", list(_ACTS))
def test_activation_second_derivatives(name):
    rng = np.random.default_rng(25)
    x = rng.normal(size=(5, 6)) * 2
    x[np.abs(x) < 0.05] = 0.5  # away from the kink at 0
    s, v = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    d1, d2 = _derivatives(name, x)
    g1, gx, gs = _second_order(_ACTS[name], x, s, v)
    np.testing.assert_allclose(g1, d1 * s, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gx, d2 * s * v, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gs, d1 * v, rtol=1e-10, atol=1e-14)


def test_float16_sigmoid_backward_is_computed_in_float32_and_rounded_once():
    rng = np.random.default_rng(26)
    y = F.sigmoid(rng.normal(size=(64, 64)).astype(np.float16) * 4)
    dy = rng.normal(size=(64, 64)).astype(np.float16)
    y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
    got = F.sigmoid_backward(y, dy)
    assert got.dtype == np.float16 and np.array_equal(got, ((1 - y32) * y32 * dy32).astype(np.float16))


# --- the cross-entropy gradient recorded for higher orders (create_graph) ------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float32_cross_entropy_recorded_gradient_stays_float32(reduction):
    import xpnn

    rng = np.random.default_rng(27)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    t = np.array([1, -100, 4, 0])
    X = xpnn.tensor(x, requires_grad=True)
    loss = F.cross_entropy(X, t, reduction=reduction, label_smoothing=0.1)
    (g,) = xpnn.grad(loss, [X], grad_outputs=[np.ones(4, np.float32)] if reduction == "none" else None,
                     create_graph=True)
    _, want = F.cross_entropy_with_grad(x, t, reduction=reduction, label_smoothing=0.1)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g.numpy(), want, rtol=1e-5, atol=1e-7)
    (hv,) = xpnn.grad((g * x).sum(), [X])
    assert hv.dtype == np.float32


def test_cross_entropy_recorded_gradient_on_array_api_strict_with_unsigned_targets():
    # uint64 class indices (ignore_index in their range): int64, arange's default, does not promote with uint64
    import xpnn

    x = np.random.default_rng(28).normal(size=(3, 4))
    for t in (xs.asarray([1, 3, 2], dtype=xs.uint64), xs.asarray([1, 3, 2], dtype=xs.int32)):
        X = xpnn.tensor(xs.asarray(x), requires_grad=True)
        (g,) = xpnn.grad(F.cross_entropy(X, t, ignore_index=3), [X], create_graph=True)
        _, want = F.cross_entropy_with_grad(x, np.array([1, 3, 2]), ignore_index=3)
        np.testing.assert_allclose(np.asarray(g.data), want, rtol=1e-12, atol=1e-15)
        assert not np.asarray(g.data)[1].any()


# --- softmax_backward and the float16 gradients, seen from outside the graph ---------------------------------------

def test_softmax_backward_of_a_tensor_and_an_array_is_a_differentiable_tensor():
    import xpnn

    rng = np.random.default_rng(29)
    y, dy = _softmax64(rng.normal(size=(3, 4)), -1), rng.normal(size=(3, 4))
    want = y * (dy - (dy * y).sum(-1, keepdims=True))
    for Y, DY in ((xpnn.tensor(y, requires_grad=True), dy), (y, xpnn.tensor(dy, requires_grad=True))):
        dx = F.softmax_backward(Y, DY)
        assert isinstance(dx, xpnn.Tensor)
        np.testing.assert_allclose(dx.numpy(), want, rtol=1e-12, atol=1e-15)
        src = Y if isinstance(Y, xpnn.Tensor) else DY
        (g,) = xpnn.grad(dx.sum(), [src])
        assert g.shape == (3, 4)


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_float16_gradients_of_the_softmax_family_are_float16(f):
    # xpnn.grad hands the gradient out as the backward made it (no cast at a leaf's .grad)
    import xpnn

    rng = np.random.default_rng(30)
    x = (rng.normal(size=(8, 50)) * 3).astype(np.float16)
    X = xpnn.tensor(x, requires_grad=True)
    out = f(X)
    g = rng.normal(size=out.shape).astype(np.float16)
    (gx,) = xpnn.grad(out, [X], grad_outputs=[g])
    assert gx.dtype == np.float16
    X32 = xpnn.tensor(x.astype(np.float32), requires_grad=True)
    (want,) = xpnn.grad(f(X32), [X32], grad_outputs=[g.astype(np.float32)])
    np.testing.assert_allclose(gx.numpy().astype(np.float32), want.numpy(), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax, F.logsumexp])
def test_softmax_family_shifts_each_row_by_its_own_max(f):
    # rows 1000 apart: a shift by one max for the whole array underflows the other row to exp(-1000) = 0
    x = np.array([[0.0, 1.0], [-1000.0, -999.0]])
    lse = np.log1p(np.exp(-1.0)) + np.array([1.0, -999.0])
    want = {F.softmax: np.exp(x - lse[:, None]), F.log_softmax: x - lse[:, None], F.logsumexp: lse}[f]
    np.testing.assert_allclose(f(x), want, rtol=1e-12)
