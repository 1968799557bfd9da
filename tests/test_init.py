"""xpnn.init: PyTorch's gains, fans and distributions; in place on arrays and Parameters, on any namespace."""
import math

import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.init as init
import xpnn.nn as nn
from xpnn.backend import to_numpy
from xpnn.errors import ShapeError


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1.0 and init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported"):
        init.calculate_gain("swish")


def test_fans():
    assert init.calculate_fan_in_and_fan_out(np.empty((30, 20))) == (20, 30)
    assert init.calculate_fan_in_and_fan_out(np.empty((8, 4, 3, 3))) == (36, 72)
    with pytest.raises(ShapeError, match="2 dimensions"):
        init.calculate_fan_in_and_fan_out(np.empty(5))


@pytest.mark.parametrize("fn,bound_or_std,kind", [
    (lambda w, s: init.xavier_uniform(w, gain=2.0, seed=s), 2.0 * math.sqrt(6 / (300 + 200)), "uniform"),
    (lambda w, s: init.xavier_normal(w, seed=s), math.sqrt(2 / (300 + 200)), "normal"),
    (lambda w, s: init.kaiming_uniform(w, nonlinearity="relu", seed=s), math.sqrt(2) * math.sqrt(3 / 200), "uniform"),
    (lambda w, s: init.kaiming_uniform(w, mode="fan_out", nonlinearity="relu", seed=s), math.sqrt(6 / 300), "uniform"),
    (lambda w, s: init.kaiming_normal(w, nonlinearity="relu", seed=s), math.sqrt(2 / 200), "normal"),
    (lambda w, s: init.kaiming_normal(w, a=0.1, mode="fan_out", seed=s), math.sqrt(2 / 1.01) / math.sqrt(300), "normal"),
    (lambda w, s: init.uniform(w, -0.3, 0.3, seed=s), 0.3, "uniform"),
    (lambda w, s: init.normal(w, 0.0, 0.05, seed=s), 0.05, "normal"),
])
def test_distributions(fn, bound_or_std, kind):
    w = np.empty((300, 200))
    assert fn(w, 0) is w
    if kind == "uniform":
        assert np.abs(w).max() <= bound_or_std
        assert w.std() == pytest.approx(bound_or_std / math.sqrt(3), rel=0.02)
    else:
        assert w.std() == pytest.approx(bound_or_std, rel=0.02)
    assert abs(w.mean()) < 0.02 * (bound_or_std + 1e-12) * 3
    w2 = np.empty((300, 200))
    fn(w2, 0)
    np.testing.assert_array_equal(w, w2)  # seeded
    fn(w2, 1)
    assert not np.array_equal(w, w2)


def test_constants_and_generator_seed():
    w = np.empty((3, 4), np.float32)
    assert init.zeros(w) is w and not w.any()
    init.ones(w)
    assert (w == 1).all()
    init.constant(w, 0.5)
    assert (w == 0.5).all()
    g = np.random.default_rng(4)
    a, b = init.normal(np.empty(5), seed=g), init.normal(np.empty(5), seed=g)
    assert not np.array_equal(a, b)  # a Generator advances


def test_parameter_in_place_keeps_flat_view_and_works_on_strict():
    lin = nn.Linear(50, 40, seed=0, backend=array_api_strict)
    buf = nn.flat_buffer_of(lin.parameters())
    view = lin.weight.data
    assert init.xavier_uniform(lin.weight, seed=3) is lin.weight
    assert lin.weight.data is view and nn.flat_buffer_of(lin.parameters()) is buf
    ref = init.xavier_uniform(np.empty((40, 50)), seed=3).astype(np.float32)
    np.testing.assert_array_equal(to_numpy(buf.data)[:2000].reshape(40, 50), ref)
    init.zeros_(lin.bias)
    assert float(array_api_strict.sum(array_api_strict.abs(lin.bias.data))) == 0.0
    # PyTorch spellings are the same functions
    assert init.kaiming_uniform_ is init.kaiming_uniform and init.normal_ is init.normal


def test_linear_default_init_equals_kaiming_uniform_sqrt5():
    lin = nn.Linear(30, 20, seed=7, dtype="float64")
    rng = np.random.default_rng(7)
    w = init.kaiming_uniform(np.empty((20, 30)), a=math.sqrt(5), seed=rng)
    b = rng.uniform(-1 / math.sqrt(30), 1 / math.sqrt(30), size=20)
    np.testing.assert_array_equal(lin.weight.data, w)
    np.testing.assert_array_equal(lin.bias.data, b)


def test_init_writes_into_a_tensor_and_bumps_its_version(torch):
    """``xpnn.init`` on a plain Tensor (as ``torch.nn.init`` on any tensor) writes in place and counts as an in-place
    write: a backward through an op that saved the old values raises."""
    w = xpnn.tensor(np.ones((2, 3)), requires_grad=True)
    y = (w ** 2).sum()  # saves w
    with xpnn.no_grad():
        init.zeros(w)
    assert float(np.abs(w.numpy()).sum()) == 0.0 and w._version == 1
    tw = torch.ones((2, 3), dtype=torch.float64, requires_grad=True)
    ty = (tw ** 2).sum()
    with torch.no_grad():
        torch.nn.init.zeros_(tw)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward()
    with pytest.raises(xpnn.InplaceModifiedError):
        y.backward()


@pytest.mark.parametrize("shape", [(12, 3), (3, 12), (8, 2, 3), (5, 5)])
def test_orthogonal_gives_orthonormal_rows_or_columns_like_pytorch(shape, torch):
    """``init.orthogonal_`` (the usual init of an LSTM's ``weight_hh``): the (shape[0], rest) view has orthonormal
    rows or columns, whichever are fewer, times ``gain``, as ``torch.nn.init.orthogonal_`` gives."""
    lstm = nn.LSTM(3, 4)
    assert init.orthogonal_(lstm.weight_hh_l0, seed=0) is lstm.weight_hh_l0
    w = np.zeros(shape)
    init.orthogonal_(w, gain=2.0, seed=0)
    ref = torch.nn.init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain=2.0).numpy()
    for m in (w, ref):
        flat = m.reshape(shape[0], -1)
        small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        np.testing.assert_allclose(small, 4.0 * np.eye(small.shape[0]), atol=1e-12)
    s = array_api_strict.zeros(shape, dtype=array_api_strict.float32)
    init.orthogonal(s, seed=0)
    np.testing.assert_allclose(to_numpy(s), init.orthogonal(np.zeros(shape), seed=0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ShapeError, match=r"init.orthogonal: expected an array of 2 or more axes, got shape \(4,\)"):
        init.orthogonal_(np.zeros(4))


def test_nn_init_is_the_init_module_as_in_pytorch():
    """PyTorch code writes ``nn.init.xavier_uniform_(layer.weight)`` after ``from torch import nn``."""
    assert nn.init is init
    layer = nn.Linear(4, 3)
    nn.init.zeros_(layer.bias)
    np.testing.assert_array_equal(to_numpy(layer.bias.data), np.zeros(3))
