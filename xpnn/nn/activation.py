"""Activation layers: each calls its ``xpnn.functional`` op (whose declaration holds the backward)."""
from __future__ import annotations

from typing import Any, Optional

from .. import functional as F
from .._torch_names import axis_from_dim
from ..backend import BackendLike
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU", "SELU", "Softplus", "Mish", "GELU", "SiLU", "Softmax",
           "LogSoftmax", "PReLU"]


class _Inplace(Module):
    """A layer with PyTorch's ``inplace`` flag. xpnn records no in-place op: ``inplace=True`` is accepted so that
    ported code runs, and the output is computed out of place (the same values; the input is left unchanged)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""



class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``."""

    def forward(self, x: Any) -> Any:
        return F.sigmoid(x)


class Tanh(Module):
    """``y = tanh(x)``."""

    def forward(self, x: Any) -> Any:
        return F.tanh(x)


class ReLU(_Inplace):
    """``y = max(x, 0)``."""

    def forward(self, x: Any) -> Any:
        return F.relu(x)


class LeakyReLU(_Inplace):
    """``y = x`` for ``x > 0`` else ``negative_slope * x``."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")

    def forward(self, x: Any) -> Any:
        return F.leaky_relu(x, self.negative_slope)


class ELU(_Inplace):
    """``y = x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")

    def forward(self, x: Any) -> Any:
        return F.elu(x, self.alpha)


class SELU(_Inplace):
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


class Mish(_Inplace):
    """``y = x * tanh(softplus(x))`` (Misra 2019, ``torch.nn.Mish``)."""

    def forward(self, x: Any) -> Any:
        return F.mish(x)


class GELU(Module):
    """``y = x * Phi(x)``, ``Phi`` the standard normal CDF; ``approximate="tanh"`` for the tanh form
    (``torch.nn.GELU``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x: Any) -> Any:
        return F.gelu(x, self.approximate)


class SiLU(_Inplace):
    """``y = x * sigmoid(x)`` (``torch.nn.SiLU``)."""

    def forward(self, x: Any) -> Any:
        return F.silu(x)


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
