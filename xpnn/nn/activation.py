"""Activation layers: each calls its ``xpnn.functional`` op (whose declaration holds the backward)."""
from __future__ import annotations

from typing import Any, Optional

from .. import functional as F
from .._torch_names import axis_from_dim
from ..backend import BackendLike
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "SELU", "Softplus", "Mish", "Softmax", "LogSoftmax",
           "PReLU"]


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``."""

    def forward(self, x: Any) -> Any:
        return F.sigmoid(x)


class Tanh(Module):
    """``y = tanh(x)``."""

    def forward(self, x: Any) -> Any:
        return F.tanh(x)


class ReLU(Module):
    """``y = max(x, 0)``."""

    def forward(self, x: Any) -> Any:
        return F.relu(x)


class LeakyReLU(Module):
    """``y = x`` for ``x > 0`` else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, x: Any) -> Any:
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    """``y = x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, x: Any) -> Any:
        return F.elu(x, self.alpha)


class SELU(Module):
    """``y = scale * elu(x, alpha)`` with the fixed self-normalising constants."""

    def forward(self, x: Any) -> Any:
        return F.selu(x)


class Softplus(Module):
    """``y = log(1 + exp(beta * x)) / beta``, ``x`` where ``beta * x > threshold`` (``torch.nn.Softplus``)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = float(beta), float(threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

    def forward(self, x: Any) -> Any:
        return F.softplus(x, self.beta, self.threshold)


class Mish(Module):
    """``y = x * tanh(softplus(x))`` (Misra 2019, ``torch.nn.Mish``)."""

    def forward(self, x: Any) -> Any:
        return F.mish(x)


class _AlongAxis(Module):
    """A layer applied along ``axis`` (default -1; ``dim=`` is PyTorch's name for it, ``.dim`` reads it)."""

    def __init__(self, axis: Optional[int] = None, *, dim: Optional[int] = None) -> None:
        super().__init__()
        if dim is not None:
            axis = axis_from_dim(axis, dim, type(self).__name__)
        self.axis = -1 if axis is None else int(axis)

    @property
    def dim(self) -> int:
        return self.axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class Softmax(_AlongAxis):
    """``y = softmax(x, axis)`` (``torch.nn.Softmax``); backward ``dx = y * (dy - sum(dy * y, axis))``."""

    def forward(self, x: Any) -> Any:
        return F.softmax(x, axis=self.axis)


class LogSoftmax(_AlongAxis):
    """``y = log_softmax(x, axis) = x - logsumexp(x, axis)`` (``torch.nn.LogSoftmax``)."""

    def forward(self, x: Any) -> Any:
        return F.log_softmax(x, axis=self.axis)


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

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"

    def forward(self, x: Any) -> Any:
        return F.prelu(x, self.weight)
