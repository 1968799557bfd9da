"""The activations: their backward ops' declarations and checks, kernels, and values at the edges.

- The backward ops declared through ``_ActivationBackward``: a subclass declared here (as a new activation would
  be) gets the argument check that names it and its saved input, and the kernel of its name replaces its forward.
- Second and third derivatives in float64 against closed forms, with PyTorch's conventions at ``x = 0`` (the first
  derivative takes the ``x <= 0`` branch, ELU's second derivative is 0 there), their dtypes, and no ``inf * 0``
  from the unused branch.
- PReLU and Maxout: values, gradients of every input (alone or together), higher-order gradients, ``prelu_backward``
  / ``maxout_backward`` called directly, and the errors, which name the op.
"""
from __future__ import annotations

import re

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
from xpnn import _dispatch
from xpnn import functional as F
from xpnn.autograd import register_override
from xpnn.errors import DTypeError, NamespaceMismatchError, ShapeError
from xpnn.functional.activations import SELU_ALPHA, SELU_SCALE, _ActivationBackward

# --- an activation backward declared as a new activation would be -------------------------------------------------


def _softsign_backward(**attrs):
    """``dx = scale * dy / (1 + |x|)^2`` declared through ``_ActivationBackward`` (``attrs``: class attributes such
    as ``saved_what``); its forward checks nothing itself."""

    def forward(ctx, x, dy, *, scale=1.0):
        _ActivationBackward.save(ctx, None, x, dy, scale=scale)
        return scale * dy / (1.0 + np.abs(x)) ** 2

    def backward(ctx, g):
        x, _ = ctx.saved_tensors
        return None, op.apply(x, g, scale=ctx.scale)

    op = type("SoftsignBackward", (_ActivationBackward,),
              {"name": "softsign_backward", "forward": staticmethod(forward), "backward": staticmethod(backward),
               **attrs})
    return op


def test_declared_activation_backward_checks_its_pair_naming_the_op_and_the_saved_input():
    op = _softsign_backward(saved_what="softsign input")
    with pytest.raises(ShapeError, match=r"^softsign_backward: dy must have the shape of softsign input \(3,\), "
                                         r"got \(4,\)$"):
        op.apply(np.zeros(3), np.zeros(4))
    with pytest.raises(DTypeError, match=r"^softsign_backward: dy dtype float32 differs from softsign input dtype "
                                         r"float64$"):
        op.apply(np.zeros(3), np.zeros(3, np.float32))
    with pytest.raises(DTypeError, match=r"^softsign_backward: softsign input must be a floating array"):
        op.apply(np.zeros(3, np.int64), np.zeros(3))
    with pytest.raises(NamespaceMismatchError, match=r"^softsign_backward: arrays from different libraries"):
        op.apply(np.zeros(3), xs.zeros(3, dtype=xs.float64))
    # keyword parameters go to the forward, not to the check
    np.testing.assert_allclose(op.apply(np.array([-1.0, 0.0, 3.0]), np.ones(3), scale=2.0), [0.5, 2.0, 0.125])


def test_declared_activation_backward_names_a_saved_input_by_default():
    op = _softsign_backward()
    with pytest.raises(ShapeError, match=r"^softsign_backward: dy must have the shape of saved input \(2,\)"):
        op.apply(np.zeros(2), np.zeros(5))


def test_declared_activation_backward_is_replaced_by_the_kernel_of_its_name():
    op = _softsign_backward()
    calls = []

    def kernel(x, dy, *, scale=1.0):
        calls.append(scale)
        return scale * dy / (1.0 + np.abs(x)) ** 2

    def provider(name, xp, dtype):
        return kernel if name == "softsign_backward" else None

    x, dy, g = np.array([-1.0, 0.0, 3.0]), np.array([1.0, 2.0, 4.0]), np.array([1.0, -1.0, 2.0])
    X, DY = xpnn.tensor(x), xpnn.tensor(dy, requires_grad=True)
    with _dispatch.use_kernels(True), _dispatch.use_provider(provider):
        out = op.apply(X, DY, scale=3.0)
        assert calls == [3.0]
        np.testing.assert_allclose(out.numpy(), [0.75, 6.0, 0.75])
        with pytest.raises(ShapeError, match="softsign_backward"):  # the check runs before the kernel
            op.apply(np.zeros(3), np.zeros(2))
        assert calls == [3.0]
    out.backward(g)  # the backward reads what save() kept from the kernel's call: x and scale
    np.testing.assert_allclose(DY.grad, 3.0 * g / (1.0 + np.abs(x)) ** 2)


# --- higher derivatives of the elementwise activations -------------------------------------------------------------

_ACTS = {"sigmoid": F.sigmoid, "tanh": F.tanh, "relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.3),
         "elu": lambda t: F.elu(t, 1.7), "selu": F.selu}


def _d123(name, x):
    """(f', f'', f''') in float64, with PyTorch's values at x = 0."""
    a = {"elu": 1.7, "selu": SELU_SCALE * SELU_ALPHA}.get(name)
    if name == "sigmoid":
        y = 1 / (1 + np.exp(-x))
        d1 = y * (1 - y)
        return d1, d1 * (1 - 2 * y), d1 * (1 - 6 * y + 6 * y * y)
    if name == "tanh":
        t = np.tanh(x)
        return 1 - t * t, -2 * t * (1 - t * t), -2 * (1 - t * t) * (1 - 3 * t * t)
    zero = np.zeros_like(x)
    if name == "relu":
        return (x > 0) * 1.0, zero, zero
    if name == "leaky_relu":
        return np.where(x > 0, 1.0, 0.3), zero, zero
    scale = SELU_SCALE if name == "selu" else 1.0
    curved = np.where(x < 0, a * np.exp(np.minimum(x, 0.0)), 0.0)  # f'' = f''' = 0 at x = 0 (PyTorch)
    return np.where(x > 0, scale, a * np.exp(np.minimum(x, 0.0))), curved, curved


def _grads(name, x, s, v, w, seed_needs_grad=True):
    """f'(x) s, then d/dx and d/ds of sum(v * f'(x) s), then d/dx of sum(w * d/dx sum(v * f'(x) s))."""
    X = xpnn.tensor(x, requires_grad=True)
    S = xpnn.tensor(s, requires_grad=True) if seed_needs_grad else s
    (g1,) = xpnn.grad(_ACTS[name](X), [X], grad_outputs=[S], create_graph=True)
    ins = [X, S] if seed_needs_grad else [X]
    g2 = xpnn.grad((g1 * v).sum(), ins, create_graph=True, allow_unused=True)
    if g2[0] is None:  # relu, leaky_relu: f'' = 0, x is not used
        return g1, g2, None
    (g3,) = xpnn.grad((g2[0] * w).sum(), [X], allow_unused=True)
    return g1, g2, g3


def _data(rng, shape=(4, 5)):
    x = rng.normal(size=shape) * 2
    x[0, :3] = [0.0, 40.0, -40.0]
    return x, rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("name", list(_ACTS))
def test_first_second_and_third_derivatives(name):
    x, s, v, w = _data(np.random.default_rng(1))
    d1, d2, d3 = _d123(name, x)
    g1, (gx, gs), g3 = _grads(name, x, s, v, w)
    np.testing.assert_allclose(g1.numpy(), d1 * s, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(0.0 if gx is None else gx.numpy(), d2 * s * v, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(gs.numpy(), d1 * v, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(0.0 if g3 is None else g3.numpy(), d3 * s * v * w, rtol=1e-11, atol=1e-300)


@pytest.mark.parametrize("name", list(_ACTS))
def test_second_derivative_with_a_constant_seed(name):
    x, s, v, w = _data(np.random.default_rng(2))
    _, d2, _ = _d123(name, x)
    _, (gx,), _ = _grads(name, x, s, v, w, seed_needs_grad=False)
    np.testing.assert_allclose(0.0 if gx is None else gx.numpy(), d2 * s * v, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", list(_ACTS))
def test_second_order_pass_does_not_differentiate_a_constant_seed(name):
    # d/d(seed) of the backward op is one more elementwise pass (a kernel launch on CUDA): skipped when the seed is a
    # constant. Sigmoid and tanh run their backward once anyway: their x-term flows back through y = f(x).
    calls = []

    def count(ctx, *args, **params):
        calls.append(name)
        return NotImplemented  # then the declaration runs

    x, s, v, _ = _data(np.random.default_rng(9))
    X = xpnn.tensor(x, requires_grad=True)
    (g1,) = xpnn.grad(_ACTS[name](X), [X], grad_outputs=[s], create_graph=True)
    with _dispatch.use_kernels(True):
        register_override(f"{name}_backward", "forward", "numpy", count)
        try:
            (gx,) = xpnn.grad((g1 * v).sum(), [X], allow_unused=True)
        finally:
            register_override(f"{name}_backward", "forward", "numpy", None)
    assert len(calls) == (1 if name in ("sigmoid", "tanh") else 0)
    _, d2, _ = _d123(name, x)
    np.testing.assert_allclose(0.0 if gx is None else gx.numpy(), d2 * s * v, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "selu"])
def test_float32_higher_derivatives_stay_float32(name):
    x, s, v, w = (a.astype(np.float32) for a in _data(np.random.default_rng(3), (3, 4)))
    g1, (gx, gs), g3 = _grads(name, x, s, v, w)
    assert g1.dtype == gx.dtype == gs.dtype == g3.dtype == np.float32
    _, d2, d3 = _d123(name, x.astype(np.float64))
    np.testing.assert_allclose(gx.numpy(), d2 * s * v, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(g3.numpy(), d3 * s * v * w, rtol=2e-5, atol=1e-6)


def test_float16_sigmoid_is_the_float32_result_rounded_once():
    x = (np.random.default_rng(10).normal(size=(64, 64)) * 4).astype(np.float16)
    out = F.sigmoid(x)
    assert out.dtype == np.float16
    assert np.array_equal(out, F.sigmoid(x.astype(np.float32)).astype(np.float16))
    with np.errstate(over="ignore"):
        native = np.float16(1) / (np.float16(1) + np.exp(-x))
    assert not np.array_equal(out, native)  # the test data tells the two apart


def test_float16_tanh_backward_is_the_float32_result_rounded_once():
    rng = np.random.default_rng(11)
    y = np.tanh(rng.normal(size=(64, 64)) * 2).astype(np.float16)
    dy = (rng.normal(size=(64, 64)) * 100).astype(np.float16)
    y32, dy32 = y.astype(np.float32), dy.astype(np.float32)
    out = F.tanh_backward(y, dy)
    assert out.dtype == np.float16 and np.array_equal(out, ((1 - y32 * y32) * dy32).astype(np.float16))
    assert not np.array_equal(out, (np.float16(1) - y * y) * dy)  # the test data tells the two apart


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_second_derivative_of_elu_is_zero_not_nan_in_the_linear_part(name):
    # f'' = 0 for x >= 0: the exp of the unused branch must not reach inf and meet the 0 of the mask
    x = np.array([1000.0, 3.0, 0.0, -1.0])
    _, (gx, _), g3 = _grads(name, x, np.ones(4), np.ones(4), np.ones(4))
    a = 1.7 if name == "elu" else SELU_SCALE * SELU_ALPHA
    np.testing.assert_allclose(gx.numpy(), [0.0, 0.0, 0.0, a * np.exp(-1.0)], rtol=1e-14)
    np.testing.assert_allclose(g3.numpy(), [0.0, 0.0, 0.0, a * np.exp(-1.0)], rtol=1e-14)
    # float16: a large g * dy times exp(x) overflows where exp(x) is not clipped at 0
    x16 = np.array([2.0], np.float16)
    big = np.array([200.0], np.float16)
    _, (gx16, _), _ = _grads(name, x16, big, big, np.ones(1, np.float16))
    assert gx16.dtype == np.float16 and gx16.numpy().tolist() == [0.0]


@pytest.mark.parametrize("ns", [np, xs], ids=["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "selu", "prelu"])
def test_gradient_at_nan_input_matches_pytorch(name, ns):
    """PyTorch's backwards test ``x > 0`` (or ``x <= 0``) on the saved input, so a NaN takes one branch: ELU's
    gradient there is ``dy`` (was NaN: ``dy * alpha * exp(NaN)``), SELU's ``scale * dy``, PReLU's ``weight * dy``
    (was ``dy``); ReLU and leaky ReLU already agreed."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for gradients at NaN")
    tf = torch.nn.functional
    values, w0 = [float("nan"), -1.5, 0.0, 2.0], [0.25]
    x, w = xpnn.tensor(ns.asarray(values), requires_grad=True), xpnn.tensor(ns.asarray(w0), requires_grad=True)
    tx = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    ours = {"relu": lambda: F.relu(x), "leaky_relu": lambda: F.leaky_relu(x, 0.1), "elu": lambda: F.elu(x),
            "selu": lambda: F.selu(x), "prelu": lambda: F.prelu(x, w)}[name]
    theirs = {"relu": lambda: tf.relu(tx), "leaky_relu": lambda: tf.leaky_relu(tx, 0.1), "elu": lambda: tf.elu(tx),
              "selu": lambda: tf.selu(tx), "prelu": lambda: tf.prelu(tx, tw)}[name]
    dy = [3.0, 5.0, 7.0, 11.0]
    ours().backward(xpnn.tensor(ns.asarray(dy)))
    theirs().backward(torch.tensor(dy, dtype=torch.float64))
    np.testing.assert_allclose(np.asarray(x.grad), tx.grad.numpy(), rtol=1e-14)
    assert np.isfinite(np.asarray(x.grad)[0])
    if name == "prelu":
        np.testing.assert_allclose(np.asarray(w.grad), tw.grad.numpy())  # NaN: the NaN entry's x * dy


def test_float16_selu_backward_does_not_overflow_in_the_unused_branch():
    dy = np.array([30000.0, 30000.0], np.float16)
    x = np.array([2.0, -0.5], np.float16)
    with np.errstate(over="raise", invalid="raise"):
        dx = F.selu_backward(x, dy)
    want = [30000.0 * SELU_SCALE, 30000.0 * SELU_SCALE * SELU_ALPHA * np.exp(-0.5)]
    np.testing.assert_allclose(dx.astype(np.float64), want, rtol=1e-3)


# --- PReLU ---------------------------------------------------------------------------------------------------------


def _prelu64(x, w):
    wb = w.reshape((-1,) + (1,) * (x.ndim - 2)) if w.shape[0] > 1 else w[0]
    return np.where(x > 0, x, wb * x), wb


@pytest.mark.parametrize("shape,c", [((4, 3), 3), ((2, 3, 4), 3), ((2, 3, 4, 5), 3), ((2, 3, 4), 1), ((5,), 1),
                                     ((), 1)])
def test_prelu_values_and_gradients(shape, c):
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape)
    x.reshape(-1)[:1] = 0.0  # PyTorch: prelu'(0) = weight
    w, dy = rng.normal(size=(c,)), rng.normal(size=shape)
    want, wb = _prelu64(x, w)
    np.testing.assert_allclose(F.prelu(x, w), want, rtol=1e-15)
    neg = x <= 0
    want_dx = np.where(neg, wb * dy, dy)
    axes = tuple(i for i in range(x.ndim) if i != 1) if c > 1 else None
    want_dw = np.sum(np.where(neg, x * dy, 0.0), axis=axes).reshape(c)
    dx, dw = F.prelu_backward(x, w, dy)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-13)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-12)
    assert dw.shape == (c,)
    X, W = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
    F.prelu(X, W).backward(dy)
    np.testing.assert_allclose(X.grad, want_dx, rtol=1e-13)
    np.testing.assert_allclose(W.grad, want_dw, rtol=1e-12)


def test_prelu_at_zero_takes_the_weight_branch_like_pytorch():
    # x = 0 gives weight * 0: a NaN weight shows, a negative weight gives -0.0 (torch.nn.functional.prelu)
    x = np.array([0.0, 1.0, -1.0])
    out = F.prelu(x, np.array([np.nan]))
    assert np.isnan(out[0]) and out[1] == 1.0 and np.isnan(out[2])
    out = F.prelu(x, np.array([-0.5]))
    assert out.tolist() == [0.0, 1.0, 0.5] and np.signbit(out[0])


def test_prelu_gradient_of_one_input_alone():
    rng = np.random.default_rng(5)
    x, w, dy = rng.normal(size=(4, 3)), np.array([0.1, -0.2, 0.3]), rng.normal(size=(4, 3))
    want_dx = np.where(x > 0, dy, w * dy)
    X = xpnn.tensor(x, requires_grad=True)
    F.prelu(X, w).backward(dy)
    np.testing.assert_allclose(X.grad, want_dx, rtol=1e-13)
    W = xpnn.tensor(w, requires_grad=True)
    F.prelu(x, W).backward(dy)
    np.testing.assert_allclose(W.grad, np.sum(np.where(x > 0, 0.0, x * dy), axis=0), rtol=1e-14)


def test_float32_prelu_gradients_stay_float32():
    rng = np.random.default_rng(6)
    x, dy = rng.normal(size=(4, 3, 2)).astype(np.float32), rng.normal(size=(4, 3, 2)).astype(np.float32)
    w = np.array([0.1, -0.2, 0.3], np.float32)
    dx, dw = F.prelu_backward(x, w, dy)
    assert dx.dtype == dw.dtype == np.float32
    X, W = xpnn.tensor(x, requires_grad=True), xpnn.tensor(w, requires_grad=True)
    F.prelu(X, W).backward(dy)
    assert X.grad.dtype == W.grad.dtype == np.float32


@pytest.mark.parametrize("c", [1, 3])
def test_prelu_second_derivatives(c):
    # d/dx prelu = where(x > 0, 1, w): d2/dx2 = 0, d2/dx dw = [x <= 0], d/ds of the seeded gradient = prelu'
    rng = np.random.default_rng(7)
    x, s, v = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    x[0, 0, 0] = 0.0
    w = rng.normal(size=(c,))
    _, wb = _prelu64(x, w)
    X, W, S = (xpnn.tensor(a, requires_grad=True) for a in (x, w, s))
    (g1,) = xpnn.grad(F.prelu(X, W), [X], grad_outputs=[S], create_graph=True)
    np.testing.assert_allclose(g1.numpy(), np.where(x > 0, s, wb * s), rtol=1e-15)
    gx, gw, gs = xpnn.grad((g1 * v).sum(), [X, W, S], allow_unused=True)
    assert gx is None or not gx.numpy().any()
    np.testing.assert_allclose(gw.numpy(), np.sum(np.where(x <= 0, s * v, 0.0), axis=None if c == 1 else (0, 2))
                               .reshape(c), rtol=1e-13)
    np.testing.assert_allclose(gs.numpy(), np.where(x > 0, v, wb * v), rtol=1e-15)
    # and the weight's gradient is differentiable in x: d/dx sum(u * dL/dw) with dL/dw = sum(dy * x * [x <= 0])
    (gw1,) = xpnn.grad((F.prelu(X, W) * S).sum(), [W], create_graph=True)
    u = rng.normal(size=(c,))
    (gxx,) = xpnn.grad((gw1 * u).sum(), [X])
    ub = u.reshape(-1, 1) if c > 1 else u[0]
    np.testing.assert_allclose(gxx.numpy(), np.where(x <= 0, s * ub, 0.0), rtol=1e-15)


@pytest.mark.parametrize("fn", ["prelu", "prelu_backward"])
def test_prelu_errors_name_the_op(fn):
    f = getattr(F, fn)

    def call(x, w):
        return f(x, w) if fn == "prelu" else f(x, w, x)

    x = np.zeros((2, 3, 4))
    for w in (np.zeros(()), np.zeros((3, 1)), np.zeros(4), np.zeros(2)):
        msg = (f"{fn}: weight of shape {tuple(w.shape)} does not fit input (2, 3, 4) "
               "(expected (1,) or (C,) for input (N, C))")
        with pytest.raises(ShapeError, match="^" + re.escape(msg) + "$"):
            call(x, w)
    with pytest.raises(ShapeError, match=rf"^{fn}: weight of shape \(3,\) does not fit input \(3,\)"):
        call(np.zeros(3), np.zeros(3))
    with pytest.raises(DTypeError, match=rf"^{fn}: input dtype float32 differs from weight dtype float64$"):
        call(x.astype(np.float32), np.zeros(3))
    with pytest.raises(DTypeError, match=rf"^{fn}: input must be a floating array \(float16/32/64\), got dtype int64"):
        call(np.zeros((2, 3), np.int64), np.zeros(3, np.int64))
    with pytest.raises(NamespaceMismatchError, match=rf"^{fn}: arrays from different libraries"):
        call(x, xs.zeros(3, dtype=xs.float64))
    with pytest.raises(NamespaceMismatchError, match=rf"^{fn}: arrays from different libraries"):
        call(xs.zeros((2, 3), dtype=xs.float64), np.zeros(3))


def test_prelu_backward_checks_dy():
    with pytest.raises(ShapeError, match=r"^prelu_backward: dy must have the shape of input \(2, 3\), got \(3, 2\)$"):
        F.prelu_backward(np.zeros((2, 3)), np.zeros(3), np.zeros((3, 2)))
    with pytest.raises(DTypeError, match=r"^prelu_backward: dy dtype float32 differs from input dtype float64$"):
        F.prelu_backward(np.zeros((2, 3)), np.zeros(3), np.zeros((2, 3), np.float32))
    with pytest.raises(NamespaceMismatchError, match=r"^prelu_backward: arrays from different libraries"):
        F.prelu_backward(np.zeros((2, 3)), np.zeros(3), xs.zeros((2, 3), dtype=xs.float64))


def test_prelu_on_array_api_strict():
    x = xs.asarray([[-2.0, 1.0], [0.0, -1.0]], dtype=xs.float64)
    w = xs.asarray([0.5, -0.25], dtype=xs.float64)
    assert np.asarray(F.prelu(x, w)).tolist() == [[-1.0, 1.0], [0.0, 0.25]]
    dx, dw = F.prelu_backward(x, w, xs.ones((2, 2), dtype=xs.float64))
    assert np.asarray(dx).tolist() == [[0.5, 1.0], [0.5, -0.25]]
    assert np.asarray(dw).tolist() == [-2.0, -1.0]


# --- Maxout --------------------------------------------------------------------------------------------------------


def test_maxout_values_and_indices():
    z = np.array([[1.0, 5.0, 2.0, -1.0, -3.0, -2.0], [0.0, 0.0, 9.0, 4.0, 4.0, 3.0]])
    y, idx = F.maxout(z, 3)
    assert y.tolist() == [[5.0, -1.0], [9.0, 4.0]] and idx.tolist() == [[1, 0], [2, 0]]
    y, idx = F.maxout(z, 1)  # one piece per group: the identity
    assert np.array_equal(y, z) and not idx.any()
    y, idx = F.maxout(z, 6)
    assert y.tolist() == [[5.0], [9.0]] and idx.tolist() == [[1], [2]]


def test_maxout_errors_name_the_op():
    for z, pieces in ((np.zeros(6), 2), (np.zeros((2, 4, 1)), 2), (np.zeros((2, 6)), 4), (np.zeros((2, 6)), 0),
                      (np.zeros((2, 6)), -2)):
        msg = f"maxout: expected input of shape (N, out_features * {pieces}), got {tuple(z.shape)}"
        with pytest.raises(ShapeError, match="^" + re.escape(msg) + "$"):
            F.maxout(z, pieces)
    with pytest.raises(TypeError, match=r"^maxout: expected arrays, got list"):
        F.maxout([[1.0, 2.0]], 2)


def test_maxout_backward_routes_dy_to_the_winners():
    idx = np.array([[1, 0], [2, 2]])
    dy = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    dz = F.maxout_backward(idx, dy, 3)
    assert dz.dtype == np.float32
    assert dz.tolist() == [[0.0, 1.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0, 4.0]]
    with pytest.raises(ShapeError, match=r"^maxout_backward: dy must have shape \(2, 2\), got \(2, 3\)$"):
        F.maxout_backward(idx, np.zeros((2, 3)), 3)
    with pytest.raises(NamespaceMismatchError, match=r"^maxout_backward: arrays from different libraries"):
        F.maxout_backward(idx, xs.asarray(dy), 3)
    with pytest.raises(NamespaceMismatchError, match=r"^maxout_backward: arrays from different libraries"):
        F.maxout_backward(xs.asarray(idx), dy, 3)


def test_maxout_backward_accepts_unsigned_indices_on_array_api_strict():
    # int64 (arange's default) and uint64 do not promote together in the array API
    idx = xs.asarray([[1, 0], [2, 2]], dtype=xs.uint64)
    dz = F.maxout_backward(idx, xs.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=xs.float32), 3)
    assert dz.dtype == xs.float32
    assert np.asarray(dz).tolist() == [[0.0, 1.0, 0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0, 0.0, 4.0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_maxout_second_derivatives(dtype):
    # dz = route(dy): d/dz of sum(v * dz) is 0 and d/ds is v gathered at the winners (maxout_backward's backward)
    rng = np.random.default_rng(8)
    z, s, v = rng.normal(size=(3, 8)).astype(dtype), rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=(3, 8))
    v = v.astype(dtype)
    Z, S = xpnn.tensor(z, requires_grad=True), xpnn.tensor(s, requires_grad=True)
    y, idx = F.maxout(Z, 2)
    (g1,) = xpnn.grad(y, [Z], grad_outputs=[S], create_graph=True)
    win = np.arange(2) == idx.numpy()[..., None]
    np.testing.assert_allclose(g1.numpy(), (s[..., None] * win).reshape(3, 8), rtol=1e-6)
    gz, gs = xpnn.grad((g1 * v).sum(), [Z, S], create_graph=True, allow_unused=True)
    assert gz is None or not gz.numpy().any()
    assert gs.dtype == dtype and gs.shape == (3, 4)
    np.testing.assert_allclose(gs.numpy(), (v.reshape(3, 4, 2) * win).sum(-1), rtol=1e-6)
    # and once more: d/dv of sum(u * gs), through the backward of maxout_backward's backward
    V = xpnn.tensor(v, requires_grad=True)
    (g1,) = xpnn.grad(F.maxout(Z, 2)[0], [Z], grad_outputs=[S], create_graph=True)
    (gs,) = xpnn.grad((g1 * V).sum(), [S], create_graph=True)
    u = rng.normal(size=(3, 4)).astype(dtype)
    (gv,) = xpnn.grad((gs * u).sum(), [V])
    np.testing.assert_allclose(gv.numpy(), (u[..., None] * win).reshape(3, 8), rtol=1e-6)
