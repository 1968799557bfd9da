"""End to end: a 784-512-512-10 MLP trained with Adam. The same script runs on NumPy and, unchanged, on
``array_api_strict`` (proof that the generic path uses only the Array API standard), with matching results."""
import array_api_strict
import numpy as np
import pytest

import xpnn
import xpnn.functional as F
import xpnn.nn as nn
import xpnn.optim as optim


def make_data(n=64, seed=0):
    """Inputs in [0, 1) like scaled MNIST pixels; labels from a fixed random linear teacher (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    teacher = rng.normal(size=(784, 10)).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int64)
    return x, y


def training_script(steps=20, batch=32):
    """Written once: uses the active backend for the model and the data."""
    backend = xpnn.get_backend()
    x_np, y_np = make_data()
    x, y = backend.asarray(x_np), backend.asarray(y_np)
    model = nn.Sequential(
        nn.Linear(784, 512, seed=0), nn.ReLU(),
        nn.Linear(512, 512, seed=1), nn.ReLU(),
        nn.Linear(512, 10, seed=2),
    )
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        lo = (step * batch) % x.shape[0]
        xb, yb = x[lo:lo + batch, ...], y[lo:lo + batch]
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
        losses.append(float(loss))
    model.eval()
    acc = F.accuracy(model(x), y)
    return model, losses, acc


@pytest.fixture(scope="module")
def numpy_run():
    with xpnn.use_backend("numpy"):
        return training_script()


def test_mlp_trains_with_adam_on_numpy(numpy_run):
    model, losses, acc = numpy_run
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert acc > 0.8
    assert isinstance(model[0].weight.data, np.ndarray) and model[0].weight.dtype == np.float32
    assert nn.flat_buffer_of(model.parameters()) is not None


def test_same_script_runs_unchanged_on_array_api_strict(numpy_run):
    with xpnn.use_backend(array_api_strict):
        model, losses, acc = training_script()
    w = model[0].weight.data
    assert type(w).__module__.startswith("array_api_strict") and w.dtype == array_api_strict.float32
    _, np_losses, np_acc = numpy_run
    np.testing.assert_allclose(losses, np_losses, rtol=2e-4, atol=1e-5)
    assert acc == pytest.approx(np_acc, abs=1 / 64 + 1e-9)
