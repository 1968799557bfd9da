"""GELU (exact and tanh) and SiLU: forward, backward and double backward against PyTorch, float64 finite
differences, float16 computed in float32, the erf behind exact GELU, the array-API path (array_api_strict), the
layers and bad arguments."""
from __future__ import annotations

import math

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError
from xpnn.functional.activations import _erf
from _numgrad import numeric_grad

CASES = [("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {})]
IDS = ["gelu", "gelu-tanh", "silu"]


def _xs(seed=0):
    extremes = [-40.0, -9.0, -6.0, -3.0, -1.0, -1e-3, -0.0, 0.0, 1e-3, 0.7, 1.0, 3.0, 6.0, 9.0, 40.0]
    return np.concatenate([np.array(extremes), np.random.default_rng(seed).normal(size=40) * 3])


def _torch_fn(torch, name, kw):
    return lambda t: getattr(torch.nn.functional, name)(t, **kw)


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-8, 8, 40001), [-1e4, 1e4, -1.0, 1.0, -6.0, 6.0, 0.0]])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(_erf(np, x), want, rtol=0, atol=1e-15)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(_erf(np, x32), np.array([math.erf(v) for v in x32.astype(float)]), rtol=0, atol=4e-7)
    assert _erf(np, x32).dtype == np.float32
    assert np.isnan(_erf(np, np.array([np.nan]))[0])


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_forward_backward_and_double_backward_match_torch(name, kw):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for gelu and silu")
    x = _xs()
    rng = np.random.default_rng(1)
    g, gg = rng.normal(size=x.shape), rng.normal(size=x.shape)
    X = xpnn.tensor(x, requires_grad=True)
    y = getattr(F, name)(X, **kw)
    (dx,) = xpnn.grad(y, [X], grad_outputs=[g], create_graph=True)
    (ddx,) = xpnn.grad(dx, [X], grad_outputs=[gg])
    T = torch.tensor(x, requires_grad=True)
    ty = _torch_fn(torch, name, kw)(T)
    (tdx,) = torch.autograd.grad(ty, T, torch.tensor(g), create_graph=True)
    (tddx,) = torch.autograd.grad(tdx, T, torch.tensor(gg))
    for got, want, what in ((y, ty, "forward"), (dx, tdx, "backward"), (ddx, tddx, "double backward")):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_double_backward_through_dy_matches_torch(name, kw):
    """The second derivative's other half: d(dx)/d(dy), with dy a Tensor that requires grad."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for gelu and silu")
    x, rng = _xs(2), np.random.default_rng(3)
    dy, gg = rng.normal(size=x.shape), rng.normal(size=x.shape)
    X, DY = xpnn.tensor(x, requires_grad=True), xpnn.tensor(dy, requires_grad=True)
    dx = getattr(F, name + "_backward")(X, DY, **kw)
    gx, gdy = xpnn.grad(dx, [X, DY], grad_outputs=[gg])
    T, TDY = torch.tensor(x, requires_grad=True), torch.tensor(dy, requires_grad=True)
    (tdx,) = torch.autograd.grad(_torch_fn(torch, name, kw)(T), T, TDY, create_graph=True)
    tgx, tgdy = torch.autograd.grad(tdx, [T, TDY], torch.tensor(gg))
    np.testing.assert_allclose(dx.numpy(), tdx.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(gx.numpy(), tgx.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(gdy.numpy(), tgdy.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_gradients_match_finite_differences(name, kw):
    x = np.random.default_rng(4).normal(size=(3, 7)) * 2
    g = np.random.default_rng(5).normal(size=x.shape)
    fn, back = getattr(F, name), getattr(F, name + "_backward")
    np.testing.assert_allclose(back(x, g, **kw), numeric_grad(lambda: float(np.sum(fn(x, **kw) * g)), x),
                               rtol=1e-6, atol=1e-8)
    # the backward's own derivative in x (what create_graph differentiates)
    X = xpnn.tensor(x, requires_grad=True)
    (d2,) = xpnn.grad(back(X, xpnn.tensor(g), **kw), [X], grad_outputs=[g])
    np.testing.assert_allclose(d2.numpy(), numeric_grad(lambda: float(np.sum(back(x, g, **kw) * g)), x),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_float16_computes_in_float32_and_rounds_once(name, kw):
    """float16 in, float16 out, within 2 float16 ulps of the exact (float64) values: computed in float32 (in float16
    itself exact GELU's ``1 + erf(x / sqrt(2))`` would cancel to 0 from x ~ -3); float32 cancellation there costs
    up to ~4e-4 relative, so the float32 results of PyTorch's vectorised CPU code and of xpnn can round to
    neighbouring float16 values."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for gelu and silu")
    x = _xs().astype(np.float16)
    dy = np.random.default_rng(6).normal(size=x.shape).astype(np.float16)
    T = torch.tensor(x.astype(np.float64), requires_grad=True)
    ty = _torch_fn(torch, name, kw)(T)
    (tdx,) = torch.autograd.grad(ty, T, torch.tensor(dy.astype(np.float64)))
    y, dx = getattr(F, name)(x, **kw), getattr(F, name + "_backward")(x, dy, **kw)
    assert y.dtype == dx.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), ty.detach().numpy(), rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(dx.astype(np.float64), tdx.numpy(), rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_array_api_strict_matches_numpy(name, kw):
    x = _xs()
    g = np.random.default_rng(7).normal(size=x.shape)
    X, S = xpnn.tensor(x, requires_grad=True), xpnn.tensor(xs.asarray(x), requires_grad=True)
    (getattr(F, name)(X, **kw) * g).sum().backward()
    ys = getattr(F, name)(S, **kw)
    (ys * xs.asarray(g)).sum().backward()
    assert isinstance(ys.data, type(xs.asarray(1.0)))
    np.testing.assert_allclose(np.asarray(ys.numpy()), getattr(F, name)(x, **kw), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(np.asarray(S.grad), X.grad, rtol=1e-14, atol=1e-300)


def test_layers_match_torch_modules():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for GELU and SiLU")
    x = _xs()
    for mine, theirs in ((nn.GELU(), torch.nn.GELU()), (nn.GELU("tanh"), torch.nn.GELU("tanh")),
                         (nn.SiLU(), torch.nn.SiLU())):
        np.testing.assert_allclose(mine(x), theirs(torch.tensor(x)).numpy(), rtol=1e-6, atol=1e-12)
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')" and nn.GELU().state_dict() == {}


def test_bad_arguments():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'erf'"):
        nn.GELU("erf")
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh'"):
        F.gelu(np.zeros(3), approximate="fast")
    with pytest.raises(DTypeError, match="gelu: input must be a floating array"):
        F.gelu(np.arange(3))
    with pytest.raises(DTypeError, match="silu: input must be a floating array"):
        F.silu(np.arange(3))
    with pytest.raises(ShapeError, match="silu_backward"):
        F.silu_backward(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("name, args", [("SiLU", (True,)), ("ReLU", (True,)), ("LeakyReLU", (0.2, True)),
                                        ("ELU", (0.5, True)), ("SELU", (True,)), ("Mish", (True,)),
                                        ("Dropout", (0.3, True)), ("SiLU", ()), ("Dropout", ())])
def test_activation_layers_take_torch_inplace_flag(name, args):
    """``nn.SiLU(inplace=True)``, ``nn.ReLU(inplace=True)`` ... as ported PyTorch code writes them: accepted (the
    output computed out of place, the same values; the input left as it was), with PyTorch's repr."""
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the layers' signatures")
    mine, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(mine) == repr(theirs)
    mine.eval(), theirs.eval()
    x = _xs()
    before = x.copy()
    np.testing.assert_allclose(mine(xpnn.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(x, before)
