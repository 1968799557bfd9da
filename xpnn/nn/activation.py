"""Activation layers: each calls its ``xpnn.functional`` forward and ``*_backward`` (no parameters, except PReLU)."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..backend import BackendLike
from ..functional.layers import prelu, prelu_backward, softmax_backward
from .module import Module, layer_namespace
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "SELU", "Softmax", "PReLU"]


class _Activation(Module):
    """Elementwise activation keeping what its backward needs (the input, or the output for sigmoid/tanh)."""

    def __init__(self) -> None:
        super().__init__()
        self._saved: Any = None

    def _forward(self, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, saved: Any, dy: Any) -> Any:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        y = self._forward(x)
        self._saved = y if self._saves_output else x
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._saved is None:
            raise self._no_forward()
        if not need_input_grad:
            return None
        return self._backward(self._saved, dy)

    _saves_output = False

    def _moved(self) -> None:
        self._saved = None


class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``."""

    _saves_output = True

    def _forward(self, x: Any) -> Any:
        return F.sigmoid(x)

    def _backward(self, y: Any, dy: Any) -> Any:
        return F.sigmoid_backward(y, dy)


class Tanh(_Activation):
    """``y = tanh(x)``."""

    _saves_output = True

    def _forward(self, x: Any) -> Any:
        return F.tanh(x)

    def _backward(self, y: Any, dy: Any) -> Any:
        return F.tanh_backward(y, dy)


class ReLU(_Activation):
    """``y = max(x, 0)``."""

    def _forward(self, x: Any) -> Any:
        return F.relu(x)

    def _backward(self, x: Any, dy: Any) -> Any:
        return F.relu_backward(x, dy)


class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0`` else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x: Any) -> Any:
        return F.leaky_relu(x, self.negative_slope)

    def _backward(self, x: Any, dy: Any) -> Any:
        return F.leaky_relu_backward(x, dy, self.negative_slope)


class ELU(_Activation):
    """``y = x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def _forward(self, x: Any) -> Any:
        return F.elu(x, self.alpha)

    def _backward(self, x: Any, dy: Any) -> Any:
        return F.elu_backward(x, dy, self.alpha)


class SELU(_Activation):
    """``y = scale * elu(x, alpha)`` with the fixed self-normalising constants."""

    def _forward(self, x: Any) -> Any:
        return F.selu(x)

    def _backward(self, x: Any, dy: Any) -> Any:
        return F.selu_backward(x, dy)


class Softmax(_Activation):
    """``y = softmax(x, axis)``; backward ``dx = y * (dy - sum(dy * y, axis))``."""

    _saves_output = True

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = int(axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def _forward(self, x: Any) -> Any:
        return F.softmax(x, axis=self.axis)

    def _backward(self, y: Any, dy: Any) -> Any:
        return softmax_backward(y, dy, axis=self.axis)


class PReLU(Module):
    """``y = x`` for ``x > 0`` else ``weight * x``, with a learned slope: one shared (``num_parameters=1``)
    or one per channel of x (N, C) (``num_parameters=C``), initialised to ``init``.
    (``seed`` is accepted for a uniform constructor signature; the initialisation is deterministic.)"""

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        if not isinstance(num_parameters, int) or num_parameters < 1:
            raise ValueError(f"PReLU: num_parameters must be a positive integer, got {num_parameters!r}")
        self.num_parameters = num_parameters
        be, dt, _ = factory(backend, dtype, seed)
        self.weight = Parameter(be.xp.full((num_parameters,), float(init), dtype=dt))
        FlatBuffer.pack(self.parameters())
        self._x: Any = None

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"

    def forward(self, x: Any) -> Any:
        layer_namespace(self, x, self.weight.data)
        y = prelu(x, self.weight.data)
        self._x = x
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._x is None:
            raise self._no_forward()
        dx, dw = prelu_backward(self._x, self.weight.data, dy)
        g = self.weight.grad
        g += dw
        return dx if need_input_grad else None

    def _moved(self) -> None:
        self._x = None
