"""Benchmark cases of the convolutional layers (registered into ``xpnn.bench.cases.CASES``):

- ``conv2d``: one Conv2d layer's forward + backward (input, weight and bias gradients), float32, at LeNet-5's two
  layers (batch 64) and a 3x3 64->64 layer at 32x32 (batch 32);
- ``lenet_step``: a LeNet-5 training step (1x28x28, batch 64, Adam, cross-entropy, float32).

Implementations: xpnn (NumPy, CUDA, CUDA with kernels off; the LeNet step also through autograd, ``*-tape``) and
PyTorch (CPU, CUDA); there is no straightforward-NumPy version, so compare with
``xpnn bench --preset conv --reference torch-cpu``.
"""
from __future__ import annotations

from typing import Any, Callable

from .cases import (CASES, IMPLS, Case, Runner, _backend, _Data, _torch_device, _torch_optimizer_arrays,
                    step_runner)

# (N, C_in, H, W, C_out, k, padding)
CONV_SIZES = {
    "lenet1": (64, 1, 28, 28, 6, 5, 2),
    "lenet2": (64, 6, 14, 14, 16, 5, 0),
    "3x3-64": (32, 64, 32, 32, 64, 3, 1),
}


def _conv_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        from .. import nn

        n, c, h, w, o, k, p = size
        d = _Data(impl)
        x = d.normal((n, c, h, w))
        layer = nn.Conv2d(c, o, k, padding=p, backend=_backend(impl), seed=0)
        dy = d.normal((n, o, h + 2 * p - k + 1, w + 2 * p - k + 1))

        def step() -> None:
            layer(x)
            layer.backward(dy)

        return Runner(step, IMPLS[impl].device, lambda: [layer.weight.data, layer.weight.grad], keep=[layer])
    return build


def _conv_torch(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        import torch

        n, c, h, w, o, k, p = size
        dev = _torch_device(impl)
        d = _Data(impl)
        torch.manual_seed(0)
        x = d.normal((n, c, h, w)).requires_grad_(True)
        layer = torch.nn.Conv2d(c, o, k, padding=p).to(dev)
        dy = d.normal((n, o, h + 2 * p - k + 1, w + 2 * p - k + 1))

        def step() -> None:
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).backward(dy)

        return Runner(step, IMPLS[impl].device, lambda: [layer.weight, layer.weight.grad], keep=[layer, x])
    return build


LENET_BATCH = {"batch64": 64}


def _lenet_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(batch: int) -> Runner:
        from .. import nn, optim
        from ..models import lenet5

        d = _Data(impl)
        x, y = d.uniform((batch, 1, 28, 28), 0.0, 1.0), d.labels(batch, 10)
        model = lenet5(10, backend=_backend(impl), seed=0)
        loss_fn = nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=1e-3)
        return step_runner(impl, model, loss_fn, opt, x, y)
    return build


def _lenet_torch(impl: str) -> Callable[[Any], Runner]:
    def build(batch: int) -> Runner:
        import torch

        dev = _torch_device(impl)
        torch.manual_seed(0)
        d = _Data(impl)
        x, y = d.uniform((batch, 1, 28, 28), 0.0, 1.0), d.labels(batch, 10)
        nn = torch.nn
        model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        ).to(dev)
        loss_fn = nn.CrossEntropyLoss()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        return Runner(step, IMPLS[impl].device, lambda: list(model.parameters()) + _torch_optimizer_arrays(opt),
                      keep=[model])
    return build


def _impls(xpnn: Callable[[str], Callable[[Any], Runner]], torch: Callable[[str], Callable[[Any], Runner]],
           tape: bool = False) -> dict[str, Callable[[Any], Runner]]:
    out = {"xpnn-numpy": xpnn("xpnn-numpy"), "torch-cpu": torch("torch-cpu"), "xpnn-cuda": xpnn("xpnn-cuda"),
           "xpnn-cuda-generic": xpnn("xpnn-cuda-generic"), "torch-cuda": torch("torch-cuda")}
    if tape:
        out["xpnn-numpy-tape"], out["xpnn-cuda-tape"] = xpnn("xpnn-numpy-tape"), xpnn("xpnn-cuda-tape")
    return out


CONV_CASES: dict[str, Case] = {c.name: c for c in (
    Case("conv2d", "Conv2d forward + backward (dx, dW, db), float32", CONV_SIZES, frozenset(),
         lambda s: None, _impls(_conv_xpnn, _conv_torch)),
    Case("lenet_step", "training step of LeNet-5 (1x28x28), Adam, cross-entropy, float32", LENET_BATCH,
         frozenset(), lambda b: None, _impls(_lenet_xpnn, _lenet_torch, tape=True)),
)}

CASES.update(CONV_CASES)  # one table for the suite and xpnn bench
