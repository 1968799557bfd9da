"""``nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` against torch.nn.utils: flat buffers, loose Parameters and
Tensors, every norm order, non-finite norms, on NumPy and array_api_strict."""
import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import nn


def grads_of(rng, scale=1.0):
    return [rng.normal(size=s) * scale for s in ((3, 4), (4,), (2, 2, 2))]


def ours_params(grads, ns="numpy", packed=True, dtype="float64"):
    ps = []
    for g in grads:
        arr = np.zeros(g.shape, dtype)
        p = nn.Parameter(arr if ns == "numpy" else array_api_strict.asarray(arr))
        ps.append(p)
    if packed:
        nn.FlatBuffer.pack(ps)
    for p, g in zip(ps, grads):
        p.grad = g.astype(dtype) if ns == "numpy" else array_api_strict.asarray(g.astype(dtype))
    return ps


def torch_params(torch, grads):
    ts = []
    for g in grads:
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        ts.append(t)
    return ts


@pytest.mark.parametrize("ns", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("packed", [True, False], ids=["flat", "loose"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(ns, packed, norm_type, max_norm):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for clip_grad_norm_")
    grads = grads_of(np.random.default_rng(0))
    ps, ts = ours_params(grads, ns, packed), torch_params(torch, grads)
    if packed:
        assert nn.flat_buffer_of(ps) is not None
    total = nn.utils.clip_grad_norm_(iter(ps), max_norm, norm_type=norm_type)  # any iterable
    ref = torch.nn.utils.clip_grad_norm_(ts, max_norm, norm_type=norm_type)
    assert isinstance(total, xpnn.Tensor) and total.shape == () and not total.requires_grad
    np.testing.assert_allclose(float(total), ref.item(), rtol=1e-12)
    for p, t in zip(ps, ts):
        np.testing.assert_allclose(np.asarray(xpnn.backend.to_numpy(p.grad)), t.grad.numpy(), rtol=1e-12)
    if max_norm < 1:  # clipped: the new norm is max_norm
        new = float(nn.utils.clip_grad_norm_(ps, 1e9, norm_type=norm_type))
        assert new == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_a_model_float32_in_one_buffer():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for clip_grad_norm_")
    model = nn.Sequential(nn.Linear(3, 5, seed=0), nn.ReLU(), nn.Linear(5, 2, seed=1))
    tmodel = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32) * 10
    (model(xpnn.tensor(x)) ** 2).sum().backward()
    (tmodel(torch.from_numpy(x)) ** 2).sum().backward()
    total = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    ref = torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
    assert total.dtype == np.float32
    np.testing.assert_allclose(float(total), ref.item(), rtol=1e-5)
    for p, t in zip(model.parameters(), tmodel.parameters()):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_clip_grad_norm_tensors_without_grad_are_skipped():
    a = xpnn.tensor(np.zeros(2), requires_grad=True)
    b = xpnn.tensor(np.zeros(2), requires_grad=True)
    (a * np.array([3.0, 4.0])).sum().backward()
    assert b.grad is None
    total = nn.utils.clip_grad_norm_([a, b], 1.0)
    assert float(total) == pytest.approx(5.0) and b.grad is None
    np.testing.assert_allclose(a.grad, [0.6, 0.8], rtol=1e-6)
    single = xpnn.tensor(np.zeros(2), requires_grad=True)
    single.grad = np.array([0.0, 2.0])
    assert float(nn.utils.clip_grad_norm_(single, 1.0)) == 2.0  # one Tensor instead of an iterable
    assert float(nn.utils.clip_grad_norm_([], 1.0)) == 0.0
    with pytest.raises(ValueError, match="clip_grad_norm_: norm_type must be positive or inf, got 0.0"):
        nn.utils.clip_grad_norm_([a], 1.0, norm_type=0)
    with pytest.raises(TypeError, match="clip_grad_norm_: expected Parameters or Tensors, got ndarray"):
        nn.utils.clip_grad_norm_([np.zeros(2)], 1.0)


def test_clip_grad_norm_non_finite():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for clip_grad_norm_")
    grads = grads_of(np.random.default_rng(2))
    grads[1][0] = np.inf
    ps, ts = ours_params(grads), torch_params(torch, grads)
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm of order 2.0 .* is non-finite"):
        nn.utils.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(ts, 1.0, error_if_nonfinite=True)
    with np.errstate(invalid="ignore"):  # inf * 0
        total = nn.utils.clip_grad_norm_(ps, 1.0)  # as torch: the gradients are scaled by 1 / inf
    ref = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert float(total) == ref.item() == np.inf
    for p, t in zip(ps, ts):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())


@pytest.mark.parametrize("packed", [True, False], ids=["flat", "loose"])
def test_clip_grad_value_matches_torch(packed):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for clip_grad_value_")
    grads = grads_of(np.random.default_rng(3))
    ps, ts = ours_params(grads, packed=packed), torch_params(torch, grads)
    assert nn.utils.clip_grad_value_(ps, 0.3) is None
    torch.nn.utils.clip_grad_value_(ts, 0.3)
    for p, t in zip(ps, ts):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    assert max(float(np.abs(p.grad).max()) for p in ps) == pytest.approx(0.3)
