"""Softplus and Mish: forward, backward and double backward against PyTorch, float64 finite differences, float16
computed in float32, no overflow at large |x|, the array-API path (array_api_strict), and the layers."""
from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn._cuda import registry
from xpnn.functional.activations import MishBackward, SoftplusBackward
from _numgrad import numeric_grad

EXTREMES = [-1e4, -800.0, -80.0, -20.0, -1.0, -0.0, 0.0, 1e-3, 1.0, 5.9, 6.0, 6.1, 19.9, 20.0, 20.1, 80.0, 800.0,
            1e4]
CASES = [("softplus", {}), ("softplus", {"beta": 0.5, "threshold": 3.0}), ("softplus", {"beta": 2.0, "threshold": 1.0}),
         ("mish", {})]
IDS = ["softplus", "softplus-beta0.5-threshold3", "softplus-beta2-threshold1", "mish"]


def _xs(dtype, seed=0):
    x = np.concatenate([np.array(EXTREMES), np.random.default_rng(seed).normal(size=30) * 4])
    return x.astype(dtype)


def _torch_fn(torch, name, kw):
    return lambda t: getattr(torch.nn.functional, name)(t, **kw)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_backward_and_double_backward_match_torch(name, kw, dtype):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for softplus and mish")
    x = _xs(dtype)
    rng = np.random.default_rng(1)
    g, gg = rng.normal(size=x.shape).astype(dtype), rng.normal(size=x.shape).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-300) if dtype == "float64" else dict(rtol=2e-6, atol=1e-30)

    X = xpnn.tensor(x, requires_grad=True)
    y = getattr(F, name)(X, **kw)
    (dx,) = xpnn.grad(y, [X], grad_outputs=[g], create_graph=True)
    (ddx,) = xpnn.grad(dx, [X], grad_outputs=[gg])

    T = torch.tensor(x, requires_grad=True)
    ty = _torch_fn(torch, name, kw)(T)
    (tdx,) = torch.autograd.grad(ty, T, torch.tensor(g), create_graph=True)
    (tddx,) = torch.autograd.grad(tdx, T, torch.tensor(gg))

    for got, want, what in ((y, ty, "forward"), (dx, tdx, "backward"), (ddx, tddx, "double backward")):
        got, want = got.numpy(), want.detach().numpy()
        assert got.dtype == np.dtype(dtype), what
        # PyTorch's mish double backward is NaN from x ~ 710 (float64) / 89 (float32) on (exp overflows): the
        # limit there is 0
        lost = np.isnan(want) & ~np.isnan(x)
        assert not lost.any() or (name == "mish" and what == "double backward" and np.all(x[lost] > 80)), what
        np.testing.assert_array_equal(got[lost], 0.0)
        if what == "double backward" and name == "mish":  # 1 - tanh(softplus(x))**2 cancels for x > 5, in both:
            # each is ~1.7e-3 (float32) / 1e-12 (float64) from the exact value at x = 6, in slightly different ways
            tol = dict(rtol=2e-4, atol=1e-30) if dtype == "float32" else dict(rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(got[~lost], want[~lost], **tol, err_msg=what)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_float16_computes_in_float32_and_rounds_once(name, kw):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for softplus and mish")
    x = _xs("float16")
    dy = np.random.default_rng(2).normal(size=x.shape).astype(np.float16)
    T = torch.tensor(x.astype(np.float32), requires_grad=True)
    ty = _torch_fn(torch, name, kw)(T)
    (tdx,) = torch.autograd.grad(ty, T, torch.tensor(dy.astype(np.float32)))
    y = getattr(F, name)(x, **kw)
    dx = getattr(F, name + "_backward")(x, dy, **kw)
    assert y.dtype == dx.dtype == np.float16
    # the float32 result rounded once to float16: exactly the rounding of PyTorch's float32 value, but for a tie
    np.testing.assert_allclose(y.astype(np.float32), ty.detach().numpy().astype(np.float16).astype(np.float32),
                               rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(dx.astype(np.float32), tdx.numpy().astype(np.float16).astype(np.float32),
                               rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_no_overflow_warning_at_large_inputs(name, kw):
    x = np.array([-1e300, -1e30, -1e4, 1e4, 1e30, 1e300])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (exp(-|x|) underflowing to 0 is the point)
        y = getattr(F, name)(x, **kw)
        dx = getattr(F, name + "_backward")(x, np.ones_like(x), **kw)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_array_equal(y[3:], x[3:])  # x above the threshold (mish: tanh(x) = 1)
    np.testing.assert_array_equal(dx[3:], 1.0)
    np.testing.assert_array_equal(y[:3], 0.0)
    np.testing.assert_array_equal(dx[:3], 0.0)


@pytest.mark.parametrize("name,kw", [("softplus", {}), ("softplus", {"beta": 0.5, "threshold": 3.0}), ("mish", {})],
                         ids=["softplus", "softplus-beta0.5-threshold3", "mish"])
def test_second_derivative_by_finite_differences(name, kw):
    """``*_backward(x, dy)`` differentiated in x and dy (float64 central differences) against its own backward."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4)) * 3
    x[np.abs(x * kw.get("beta", 1.0) - kw.get("threshold", 20.0)) < 0.1] = 0.5  # away from the threshold's kink
    dy, g = rng.normal(size=x.shape), rng.normal(size=x.shape)
    bwd = getattr(F, name + "_backward")
    X, DY = xpnn.tensor(x, requires_grad=True), xpnn.tensor(dy, requires_grad=True)
    gx, gdy = xpnn.grad(bwd(X, DY, **kw), [X, DY], grad_outputs=[g])

    def f():
        return float(np.sum(bwd(x, dy, **kw) * g))

    np.testing.assert_allclose(gx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gdy, numeric_grad(f, dy), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_array_api_strict_runs_the_generic_path(name, kw):
    x = _xs("float64")
    dy = np.random.default_rng(4).normal(size=x.shape)
    y = getattr(F, name)(xs.asarray(x), **kw)
    dx = getattr(F, name + "_backward")(xs.asarray(x), xs.asarray(dy), **kw)
    assert type(y) is type(xs.asarray(x))
    np.testing.assert_allclose(np.asarray(y), getattr(F, name)(x, **kw), rtol=1e-15, atol=0)
    np.testing.assert_allclose(np.asarray(dx), getattr(F, name + "_backward")(x, dy, **kw), rtol=1e-15, atol=0)


def test_layers_call_the_ops_and_show_their_parameters():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for nn.Softplus and nn.Mish")
    x = _xs("float64")
    np.testing.assert_allclose(nn.Softplus(0.5, 3.0)(x), torch.nn.Softplus(0.5, 3.0)(torch.tensor(x)).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(nn.Mish()(x), torch.nn.Mish()(torch.tensor(x)).numpy(), rtol=1e-12, atol=1e-300)
    assert repr(nn.Softplus(0.5, 3.0)) == "Softplus(beta=0.5, threshold=3.0)" and repr(nn.Mish()) == "Mish()"
    assert {"Softplus", "Mish"} <= set(nn.__all__) and {"softplus", "mish", "softplus_backward",
                                                          "mish_backward"} <= set(F.__all__)


def test_backwards_declare_their_kernel_rows():
    """Each backward op holds its kernel's row (the recipe: op, kernel source, module); the registry lists the row
    under its name for the providers, the compile checks and the shim."""
    sp, mi = SoftplusBackward.kernel, MishBackward.kernel
    assert isinstance(sp, registry.ElementwiseKernel) and isinstance(mi, registry.ElementwiseKernel)
    assert registry.row("softplus_backward") is sp and registry.row("mish_backward") is mi
    assert {sp, mi} <= set(registry.elementwise())
    assert sp.scalars == ("beta", "threshold")
    assert sp.operation == "dx = (T)xpnn_softplus_backward((A)x, (A)dy, (A)beta, (A)threshold);"


def test_bad_arguments_name_the_op():
    from xpnn.errors import DTypeError, ShapeError

    with pytest.raises(DTypeError, match="^softplus"):
        F.softplus(np.arange(3))
    with pytest.raises(DTypeError, match="^mish"):
        F.mish(np.arange(3))
    with pytest.raises(ShapeError, match="^softplus_backward"):
        F.softplus_backward(np.zeros(3), np.zeros(4))
    with pytest.raises(ShapeError, match="^mish_backward"):
        F.mish_backward(np.zeros(3), np.zeros(4))
