"""Benchmark case of the recurrent layers (registered into ``xpnn.bench.cases.CASES``):

- ``lstm_step``: a training step of a 2-layer LSTM (input 64, hidden 256, T 50, batch 32, float32): zero_grad,
  forward, mean squared error against a fixed target of the output's shape, backward, Adam step.

Implementations: xpnn through autograd (NumPy; CUDA with the fused gate kernels; CUDA with kernels off, the
generic path) and PyTorch (CPU, CUDA). The recurrent layers have no explicit-API step (``m.backward(dy)`` has no rule
for several outputs), so ``xpnn-numpy`` runs the same autograd step as ``xpnn-numpy-tape``.
"""
from __future__ import annotations

from typing import Any, Callable

from .cases import CASES, IMPLS, Case, Runner, _backend, _Data, _torch_device, _torch_optimizer_arrays

# (input_size, hidden_size, num_layers, T, batch)
LSTM_SIZES = {"h256-T50-batch32": (64, 256, 2, 50, 32), "h16-T5-batch4": (8, 16, 2, 5, 4)}  # (the second: smoke runs)


def _lstm_xpnn(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        from .. import functional as F
        from .. import nn, optim
        from .._tensor import tensor

        n_in, hidden, layers, steps, batch = size
        d = _Data(impl)
        x, target = tensor(d.normal((steps, batch, n_in))), d.normal((steps, batch, hidden))
        model = nn.LSTM(n_in, hidden, layers, backend=_backend(impl), seed=0)
        opt = optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad()
            out, _ = model(x)
            F.mse_loss(out, target).backward()
            opt.step()

        return Runner(step, IMPLS[impl].device, lambda: [p.data for p in model.parameters()], keep=[model])
    return build


def _lstm_torch(impl: str) -> Callable[[Any], Runner]:
    def build(size: Any) -> Runner:
        import torch

        n_in, hidden, layers, steps, batch = size
        torch.manual_seed(0)
        d = _Data(impl)
        x, target = d.normal((steps, batch, n_in)), d.normal((steps, batch, hidden))
        model = torch.nn.LSTM(n_in, hidden, layers).to(_torch_device(impl))
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad()
            out, _ = model(x)
            torch.nn.functional.mse_loss(out, target).backward()
            opt.step()

        return Runner(step, IMPLS[impl].device, lambda: list(model.parameters()) + _torch_optimizer_arrays(opt),
                      keep=[model])
    return build


RNN_CASES: dict[str, Case] = {c.name: c for c in (
    Case("lstm_step", "training step of a 2-layer LSTM (input 64, hidden 256, T 50, batch 32), MSE, Adam, float32",
         LSTM_SIZES, frozenset(), lambda s: None,
         {"xpnn-numpy": _lstm_xpnn("xpnn-numpy"), "xpnn-numpy-tape": _lstm_xpnn("xpnn-numpy-tape"), "torch-cpu": _lstm_torch("torch-cpu"),
          "xpnn-cuda-tape": _lstm_xpnn("xpnn-cuda-tape"), "xpnn-cuda-generic": _lstm_xpnn("xpnn-cuda-generic"),
          "torch-cuda": _lstm_torch("torch-cuda")}),
)}

CASES.update(RNN_CASES)  # one table for the suite and xpnn bench
