"""F.layer_norm / nn.LayerNorm: values, gradients and second derivatives against PyTorch in float64, float64 finite
differences, float16 statistics in float32 (mean and rstd kept), the array-API path, torch state_dicts, bad input."""
from __future__ import annotations

import array_api_strict as xs
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError
from _numgrad import numeric_grad

# (input shape, normalized_shape, weight, bias)
CASES = {
    "affine": ((4, 6), (6,), True, True),
    "3d-two-axes": ((2, 3, 4, 5), (4, 5), True, True),
    "weight-only": ((3, 5), 5, True, False),
    "plain": ((2, 3, 4), (4,), False, False),
    "whole-sample": ((7,), (7,), True, True),
}


def _arrays(case, seed=0):
    shape, ns, w, b = CASES[case]
    ns = (ns,) if isinstance(ns, int) else ns
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape) * 3 + 1
    return x, ns, rng.normal(size=ns) if w else None, rng.normal(size=ns) if b else None


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_gradients_and_second_derivatives_match_torch(case):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for layer_norm")
    x, ns, w, b = _arrays(case)
    rng = np.random.default_rng(1)
    g = rng.normal(size=x.shape)
    arrays = [a for a in (x, w, b) if a is not None]
    ggs = [rng.normal(size=a.shape) for a in arrays]

    ts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    it = iter(ts[1:])
    X, W, B = ts[0], next(it) if w is not None else None, next(it) if b is not None else None
    y = F.layer_norm(X, ns, W, B, eps=1e-5)
    d = xpnn.grad(y, ts, grad_outputs=[g], create_graph=True)
    dd = xpnn.grad(list(d), ts, grad_outputs=ggs, allow_unused=True)

    tts = [torch.tensor(a, requires_grad=True) for a in arrays]
    it = iter(tts[1:])
    TX, TW, TB = tts[0], next(it) if w is not None else None, next(it) if b is not None else None
    ty = torch.nn.functional.layer_norm(TX, ns, TW, TB, eps=1e-5)
    td = torch.autograd.grad(ty, tts, torch.tensor(g), create_graph=True)
    tdd = torch.autograd.grad(td, tts, [torch.tensor(a) for a in ggs], allow_unused=True)

    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-12)
    for got, want in zip(d, td):
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-12)
    for got, want in zip(dd, tdd):
        if want is None:  # (the bias does not reach the first derivatives)
            assert got is None or not np.any(got.numpy())
        else:
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(case):
    x, ns, w, b = _arrays(case, seed=2)
    g = np.random.default_rng(3).normal(size=x.shape)
    arrays = [a for a in (x, w, b) if a is not None]
    ts = [xpnn.tensor(a, requires_grad=True) for a in arrays]
    it = iter(ts[1:])
    y = F.layer_norm(ts[0], ns, next(it) if w is not None else None, next(it) if b is not None else None)
    (y * g).sum().backward()

    def loss():
        return float(np.sum(F.layer_norm(x, ns, w, b) * g))

    for a, t in zip(arrays, ts):
        np.testing.assert_allclose(t.grad, numeric_grad(loss, a), rtol=1e-6, atol=1e-8)


def test_second_derivative_matches_finite_differences():
    """d/dx of the first derivative (recorded with create_graph: statistics as expressions of x)."""
    x, ns, w, b = _arrays("3d-two-axes", seed=4)
    g = np.random.default_rng(5).normal(size=x.shape)
    gg = np.random.default_rng(6).normal(size=x.shape)

    def dx_of(xv):
        X = xpnn.tensor(xv, requires_grad=True)
        (dx,) = xpnn.grad(F.layer_norm(X, ns, w, b), [X], grad_outputs=[g])
        return dx.numpy()

    X = xpnn.tensor(x, requires_grad=True)
    (dx,) = xpnn.grad(F.layer_norm(X, ns, w, b), [X], grad_outputs=[g], create_graph=True)
    (d2,) = xpnn.grad(dx, [X], grad_outputs=[gg])
    np.testing.assert_allclose(d2.numpy(), numeric_grad(lambda: float(np.sum(dx_of(x) * gg)), x),
                               rtol=1e-6, atol=1e-8)


def test_float16_statistics_in_float32_and_saved():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for layer_norm")
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(3, 5, 64)) * 50 + 300).astype(np.float16)  # (x - mean)**2 > float16's max of 65504
    w, b = rng.normal(size=64).astype(np.float16), rng.normal(size=64).astype(np.float16)
    X = xpnn.tensor(x, requires_grad=True)
    y = F.layer_norm(X, 64, xpnn.tensor(w), xpnn.tensor(b))
    assert y.dtype == np.float16 and np.all(np.isfinite(y.numpy()))
    ty, tmean, trstd = torch.native_layer_norm(torch.tensor(x.astype(np.float32)), (64,),
                                               torch.tensor(w.astype(np.float32)), torch.tensor(b.astype(np.float32)),
                                               1e-5)
    np.testing.assert_allclose(y.numpy().astype(np.float32), ty.numpy().astype(np.float16).astype(np.float32),
                               rtol=2e-3, atol=2e-3)
    ctx = y.grad_fn.ctx
    assert ctx.mean.dtype == ctx.rstd.dtype == np.float32 and ctx.mean.shape == ctx.rstd.shape == (3, 5)
    np.testing.assert_allclose(ctx.mean, tmean.numpy().reshape(3, 5), rtol=1e-6)
    np.testing.assert_allclose(ctx.rstd, trstd.numpy().reshape(3, 5), rtol=1e-5)
    y.backward(np.ones(x.shape, np.float16))
    assert X.grad.dtype == np.float16 and np.all(np.isfinite(X.grad))


def test_array_api_strict_matches_numpy():
    x, ns, w, b = _arrays("3d-two-axes")
    g = np.random.default_rng(8).normal(size=x.shape)
    grads = []
    for conv in (lambda a: a, xs.asarray):
        ts = [xpnn.tensor(conv(a), requires_grad=True) for a in (x, w, b)]
        y = F.layer_norm(ts[0], ns, ts[1], ts[2])
        (y * conv(g)).sum().backward()
        grads.append([np.asarray(y.numpy())] + [np.asarray(t.grad) for t in ts])
    for a, s in zip(*grads):
        np.testing.assert_allclose(s, a, rtol=1e-12, atol=1e-14)


def test_module_loads_torch_state_dict_and_matches():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for LayerNorm")
    for kw in ({}, {"bias": False}, {"elementwise_affine": False}, {"eps": 1e-3}):
        tm = torch.nn.LayerNorm((3, 4), dtype=torch.float64, **kw)
        with torch.no_grad():
            for p in tm.parameters():
                p.copy_(torch.randn(p.shape, dtype=torch.float64))
        m = nn.LayerNorm((3, 4), dtype="float64", **kw)
        assert list(m.state_dict()) == list(tm.state_dict())
        m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
        x = np.random.default_rng(9).normal(size=(2, 3, 4))
        np.testing.assert_allclose(m(x), tm(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-12)


def test_module_defaults_and_training():
    m = nn.LayerNorm(8)
    assert m.normalized_shape == (8,) and m.eps == 1e-5 and m.elementwise_affine
    assert m.weight.dtype == np.float32 and np.all(m.weight.numpy() == 1) and np.all(m.bias.numpy() == 0)
    assert m.bias is not None and nn.LayerNorm(8, bias=False).bias is None
    assert list(nn.LayerNorm(8, elementwise_affine=False).parameters()) == []
    x = np.random.default_rng(10).normal(size=(5, 8)).astype(np.float32)
    y = m(xpnn.tensor(x))
    (y * y * np.arange(8, dtype=np.float32)).sum().backward()
    assert m.weight.grad is not None and m.weight.grad.shape == (8,)
    dx = m(x)  # the explicit API on arrays
    assert isinstance(dx, np.ndarray)


def test_bad_input():
    m = nn.LayerNorm((3, 4))
    with pytest.raises(ShapeError, match=r"LayerNorm\(\(3, 4\).*expected input with trailing dimensions \(3, 4\) "
                                         r"\(normalized_shape\), got shape \(2, 4, 3\)"):
        m(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ShapeError, match="trailing dimensions"):
        m(np.zeros((4,), np.float32))
    with pytest.raises(DTypeError, match=r"LayerNorm.*expected input of dtype float32 \(the weight's dtype\), got "
                                         "float64"):
        m(np.zeros((2, 3, 4)))
    with pytest.raises(DTypeError, match="layer_norm: input must be a floating array"):
        F.layer_norm(np.zeros((2, 3), np.int64), 3)
    with pytest.raises(ShapeError, match=r"layer_norm: expected weight of shape \(3,\)"):
        F.layer_norm(np.zeros((2, 3)), 3, np.ones(4))
    with pytest.raises(ValueError, match="LayerNorm: normalized_shape must be"):
        nn.LayerNorm(())


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"elementwise_affine": False}])
def test_layer_norm_repr_matches_torch(kw):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for LayerNorm's repr")
    assert repr(nn.LayerNorm((3, 4), eps=1e-3, **kw)) == repr(torch.nn.LayerNorm((3, 4), eps=1e-3, **kw))
