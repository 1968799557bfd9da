"""Activations and their backwards: ``f(x)`` and ``f_backward(saved, dy) -> dx`` (elementwise, any shape).

Each backward takes what its derivative needs: the output ``y`` for sigmoid/tanh, the input ``x`` otherwise.
Backwards are the hot path a fused CUDA kernel overrides (one read of each input, one write).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _dispatch
from ..backend import namespace_of
from . import _checks
from ._inplace import InPlace
from ._masking import zero_where

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _unary(x: Any, where: str) -> Any:
    xp = namespace_of(x, where=where)
    _checks.floating(xp, x, where)
    return xp


def _backward(op: str, saved: Any, dy: Any, *args: Any) -> tuple[Any, Any]:
    """Validate a backward call; return (xp, kernel result or None)."""
    xp = _checks.pair(saved, dy, op, ("saved input", "dy"))
    kernel = _dispatch.lookup(op, xp, dy.dtype)
    if kernel is not None:
        out = kernel(saved, dy, *args)
        if out is not NotImplemented:
            return xp, out
    return xp, None


def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))``; for very negative ``x`` ``exp(-x)`` overflows to inf and the result is exactly 0."""
    xp = _unary(x, "sigmoid")
    ops = InPlace(xp)
    out = ops.mul(x, -1.0, out=xp.empty_like(x))
    with np.errstate(over="ignore"):  # NumPy only: exp(large) = inf is the intended limit here
        ops.exp(out, out=out)
    ops.add(out, 1.0, out=out)
    return ops.div(1.0, out, out=out)


def sigmoid_backward(y: Any, dy: Any) -> Any:
    """``dx = dy * y * (1 - y)`` where ``y = sigmoid(x)``."""
    xp, out = _backward("sigmoid_backward", y, dy)
    if out is not None:
        return out
    ops = InPlace(xp)
    dx = ops.sub(1.0, y, out=xp.empty_like(y))  # one allocation: (1 - y), then * y, then * dy
    ops.mul(dx, y, out=dx)
    return ops.mul(dx, dy, out=dx)


def tanh(x: Any) -> Any:
    return _unary(x, "tanh").tanh(x)


def tanh_backward(y: Any, dy: Any) -> Any:
    """``dx = dy * (1 - y**2)`` where ``y = tanh(x)``."""
    xp, out = _backward("tanh_backward", y, dy)
    if out is not None:
        return out
    ops = InPlace(xp)
    dx = ops.mul(y, y, out=xp.empty_like(y))
    ops.sub(1.0, dx, out=dx)
    return ops.mul(dx, dy, out=dx)


def relu(x: Any) -> Any:
    return _unary(x, "relu").maximum(x, 0.0)


def relu_backward(x: Any, dy: Any) -> Any:
    """``dx = 0`` where ``x <= 0`` else ``dy``: PyTorch's ``threshold_backward`` semantics, so a NaN in ``dy`` at
    ``x <= 0`` gives 0 and a NaN ``x`` passes ``dy`` through (the CUDA kernel does the same)."""
    xp, out = _backward("relu_backward", x, dy)
    return out if out is not None else zero_where(xp, x <= 0, dy)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    xp = _unary(x, "leaky_relu")
    return xp.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(x: Any, dy: Any, negative_slope: float = 0.01) -> Any:
    """``dx = dy`` where ``x > 0`` else ``negative_slope * dy``."""
    xp, out = _backward("leaky_relu_backward", x, dy, negative_slope)
    return out if out is not None else xp.where(x > 0, dy, dy * negative_slope)


def elu(x: Any, alpha: float = 1.0) -> Any:
    """``x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    xp = _unary(x, "elu")
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0.0)))  # minimum: no overflow in the unused branch


def elu_backward(x: Any, dy: Any, alpha: float = 1.0) -> Any:
    """``dx = dy`` where ``x > 0`` else ``dy * alpha * exp(x)``."""
    xp, out = _backward("elu_backward", x, dy, alpha)
    return out if out is not None else xp.where(x > 0, dy, dy * (alpha * xp.exp(xp.minimum(x, 0.0))))


def selu(x: Any) -> Any:
    """``scale * elu(x, alpha)`` with the self-normalising constants of Klambauer et al. (2017)."""
    return SELU_SCALE * elu(x, SELU_ALPHA)


def selu_backward(x: Any, dy: Any) -> Any:
    """``dx = scale * dy`` where ``x > 0`` else ``dy * scale * alpha * exp(x)``."""
    xp, out = _backward("selu_backward", x, dy)
    if out is not None:
        return out
    return xp.where(x > 0, dy * SELU_SCALE, dy * (SELU_SCALE * SELU_ALPHA * xp.exp(xp.minimum(x, 0.0))))
