"""End to end on the CPU shim: models built with get_backend("numpy") train through the CUDA kernels.

The shim provider routes NumPy arrays through the same launch code and kernel sources a GPU runs (what
``get_backend("cuda")`` does on a device); the run must match the generic path step by step and use the kernels.
"""
from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import _dispatch, nn, optim
from xpnn._cuda import make_provider

from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader


class Recording:
    """A provider that remembers which ops it served (the kernels the training step really used)."""

    def __init__(self, provider):
        self.provider, self.served = provider, set()

    def __call__(self, op, xp, dtype):
        fn = self.provider(op, xp, dtype)
        if fn is not None:
            self.served.add(op)
        return fn


def _data(n=96, d=12, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def _train(act, make_opt, use_shim, steps=25, tape=False):
    backend = xpnn.get_backend("numpy")
    X, y = (backend.asarray(a) for a in _data())
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(12, 16, seed=rng), act(), nn.Linear(16, 5, seed=rng)).to(backend)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    opt = make_opt(model.parameters())
    recording = Recording(make_provider(ShimLoader()))
    losses = []
    with _dispatch.use_provider(recording if use_shim else None), _dispatch.use_kernels(use_shim):
        for _ in range(steps):
            model.zero_grad()
            if tape:  # autograd: the same kernels run under the tape
                loss = loss_fn(model(xpnn.tensor(X)), y)
                loss.backward()
            else:
                loss = loss_fn(model(X), y)
                model.backward(loss_fn.backward())
            losses.append(float(loss))
            opt.step()
    return np.array(losses), recording.served


@pytest.mark.parametrize("act,make_opt,ops", [
    (nn.Sigmoid, lambda p: optim.Adam(p, lr=0.05), {"sigmoid_backward", "adam_update"}),
    (nn.Tanh, lambda p: optim.AdamW(p, lr=0.05, weight_decay=0.01, amsgrad=True), {"tanh_backward", "adam_update"}),
    (nn.ReLU, lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), {"relu_backward", "sgd_update"}),
    (nn.ELU, lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True), {"elu_backward", "rmsprop_update"}),
    (nn.LeakyReLU, lambda p: optim.Adagrad(p, lr=0.1), {"leaky_relu_backward", "adagrad_update"}),
], ids=["sigmoid-adam", "tanh-adamw", "relu-sgd", "elu-rmsprop", "leaky-adagrad"])
def test_model_trains_through_the_kernels(act, make_opt, ops):
    ref, _ = _train(act, make_opt, use_shim=False)
    got, served = _train(act, make_opt, use_shim=True)
    assert ops | {"cross_entropy_with_grad"} <= served
    assert got[-1] < got[0] * 0.5, f"no learning through the kernels: {got[0]:.3f} -> {got[-1]:.3f}"
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act,make_opt,ops", [
    (nn.Sigmoid, lambda p: optim.Adam(p, lr=0.05), {"sigmoid_backward", "adam_update"}),
    (nn.ReLU, lambda p: optim.SGD(p, lr=0.1, momentum=0.9), {"relu_backward", "sgd_update"}),
], ids=["sigmoid-adam", "relu-sgd"])
def test_tape_model_trains_through_the_kernels(act, make_opt, ops):
    ref, _ = _train(act, make_opt, use_shim=False, tape=True)
    got, served = _train(act, make_opt, use_shim=True, tape=True)
    assert ops | {"cross_entropy_with_grad"} <= served
    assert got[-1] < got[0] * 0.5, f"no learning through the kernels: {got[0]:.3f} -> {got[-1]:.3f}"
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    explicit, _ = _train(act, make_opt, use_shim=True)
    np.testing.assert_allclose(got, explicit, rtol=1e-5, atol=1e-6)
