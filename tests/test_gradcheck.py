"""Finite-difference gradient checks in float64 for every layer, activation and loss, and the ``*_with_grad``
functions: central differences of ``sum(layer(x) * g)`` against ``layer.backward(g)`` and the parameter grads."""
import numpy as np
import pytest

import xpnn.functional as F
import xpnn.nn as nn
from xpnn.functional.layers import softmax_backward
from _numgrad import numeric_grad

EPS = 1e-6
TOL = dict(rtol=1e-6, atol=1e-8)


def check_module(make, x, *, train=True):
    """Check ``make()``'s input and parameter gradients at ``x`` (float64) in train or eval mode."""
    m = make()
    m.train(train)
    rng = np.random.default_rng(0)
    y = m(x)
    g = rng.normal(size=y.shape)
    m.zero_grad()
    m(x)
    dx = m.backward(g)
    analytic = {n: np.array(p.grad) for n, p in m.named_parameters()}

    def f():
        return float(np.sum(m(x) * g))

    np.testing.assert_allclose(dx, numeric_grad(f, x), **TOL, err_msg="input gradient")
    for name, p in m.named_parameters():
        np.testing.assert_allclose(analytic[name], numeric_grad(f, p.data), **TOL, err_msg=name)


def randn(*shape, seed=1, scale=1.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


ACTIVATIONS = [
    nn.Sigmoid, nn.Tanh, nn.ReLU, lambda: nn.LeakyReLU(0.1), lambda: nn.ELU(0.7), nn.SELU, nn.Softmax,
    lambda: nn.Softmax(axis=0), lambda: nn.PReLU(dtype="float64"), lambda: nn.PReLU(5, init=0.1, dtype="float64"),
    nn.Softplus, lambda: nn.Softplus(0.5, 0.25), nn.Mish, nn.GELU, lambda: nn.GELU("tanh"), nn.SiLU,
]


@pytest.mark.parametrize("make", ACTIVATIONS)
def test_activations(make):
    x = randn(4, 5, scale=2.0)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks
    check_module(make, x)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    check_module(lambda: nn.Linear(5, 3, bias=bias, dtype="float64", seed=0), randn(4, 5))


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(bias):
    def make():
        m = nn.LayerNorm((3, 5), bias=bias, dtype="float64")
        m.weight.data[...] = randn(3, 5, seed=2)
        return m

    check_module(make, randn(4, 3, 5))


def test_maxout():
    check_module(lambda: nn.Maxout(5, 3, pieces=3, dtype="float64", seed=0), randn(4, 5))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm(train, affine):
    def make():
        bn = nn.BatchNorm1d(3, affine=affine, dtype="float64")
        if affine:
            bn.weight.data[...] = [0.5, 2.0, -1.0]
            bn.bias.data[...] = [0.1, 0.2, 0.3]
        bn.running_mean[...] = [0.3, -0.2, 0.1]
        bn.running_var[...] = [1.5, 0.5, 2.0]
        return bn

    check_module(make, randn(6, 3, scale=2.0), train=train)


def test_dropout_with_fixed_mask():
    x = randn(5, 4)

    class FixedMask(nn.Module):
        """A fresh Dropout with the same seed on every call: the same mask each evaluation."""

        def forward(self, x):
            self.d = nn.Dropout(0.4, seed=3)
            return self.d(x)

        def backward(self, dy):
            return self.d.backward(dy)

    check_module(FixedMask, x)
    y = nn.Dropout(0.4, seed=3)(x)
    assert (y == 0).any() and (y != 0).any()  # the mask is not trivial


def test_residual_and_sequential():
    check_module(lambda: nn.Residual(nn.Sequential(nn.Linear(4, 4, dtype="float64", seed=0), nn.Tanh())), randn(3, 4))
    check_module(lambda: nn.Sequential(
        nn.Linear(4, 6, dtype="float64", seed=0), nn.BatchNorm1d(6, dtype="float64"), nn.ELU(),
        nn.Maxout(6, 3, dtype="float64", seed=1), nn.Residual(nn.Linear(3, 3, dtype="float64", seed=2)),
        nn.PReLU(dtype="float64"), nn.Linear(3, 2, dtype="float64", seed=3)), randn(5, 4))


def test_softmax_backward_function():
    x, dy = randn(3, 4), randn(3, 4, seed=2)
    y = F.softmax(x)
    np.testing.assert_allclose(softmax_backward(y, dy), numeric_grad(lambda: float(np.sum(F.softmax(x) * dy)), x), **TOL)


def check_with_grad(fn, with_grad, pred, target, **kw):
    loss, grad = with_grad(pred, target, **kw)
    np.testing.assert_allclose(loss, fn(pred, target, **kw), rtol=1e-12, atol=1e-12)
    num = numeric_grad(lambda: float(np.sum(fn(pred, target, **kw))), pred)  # "none": gradient of the sum
    np.testing.assert_allclose(grad, num, **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_with_grad(reduction, smoothing):
    logits = randn(5, 4, scale=3.0)
    target = np.array([0, 3, -100, 2, 1])
    check_with_grad(F.cross_entropy, F.cross_entropy_with_grad, logits, target,
                    reduction=reduction, label_smoothing=smoothing)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_and_bce_with_grad(reduction):
    pred = randn(4, 3)
    check_with_grad(F.mse_loss, F.mse_loss_with_grad, pred, randn(4, 3, seed=5), reduction=reduction)
    probs = np.random.default_rng(6).uniform(size=(4, 3))
    check_with_grad(F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_with_grad,
                    randn(4, 3, scale=4.0), probs, reduction=reduction)


@pytest.mark.parametrize("loss_fn,target", [
    (nn.CrossEntropyLoss(label_smoothing=0.1), np.array([1, 0, 2, 2])),
    (nn.MSELoss(reduction="sum"), randn(4, 3, seed=8)),
    (nn.BCEWithLogitsLoss(), np.random.default_rng(9).uniform(size=(4, 3))),
])
def test_loss_modules(loss_fn, target):
    pred = randn(4, 3)
    loss_fn(pred, target)
    np.testing.assert_allclose(loss_fn.backward(), numeric_grad(lambda: float(loss_fn(pred, target)), pred), **TOL)
