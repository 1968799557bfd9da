"""Softmax family, all through the log-sum-exp trick: ``lse(x) = m + log(sum(exp(x - m)))``, ``m = max(x)``.

float16 inputs are computed in float32 and cast back. Rows that are all ``-inf`` give ``lse = -inf`` (and NaN
softmax, like NumPy/PyTorch), never an overflow.

Rows containing ``+inf`` or NaN follow PyTorch, the same in every function here, in ``cross_entropy`` and in the
CUDA kernels: a row with ``+inf`` (and no NaN) has ``logsumexp = +inf``, and ``softmax``, ``log_softmax``,
``cross_entropy`` (its loss and its gradient) are NaN over the whole row; a row with a NaN is NaN everywhere,
``logsumexp`` included. (Computing through ``m = +inf`` gives exactly that: ``x - m`` is NaN at the ``+inf``
entries, so the row's sum is NaN.)
"""
from __future__ import annotations

from typing import Any

from .. import _dispatch
from ..backend import namespace_of
from . import _checks


def _prepare(x: Any, axis: int, op: str) -> tuple[Any, Any]:
    """(xp, kernel or None) after checking x. Kernels are looked up for the last axis of 2-D arrays only."""
    xp = namespace_of(x, where=op)
    _checks.floating(xp, x, op)
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have at least one dimension")
    kernel = None
    if x.ndim == 2 and axis in (-1, 1):
        kernel = _dispatch.lookup(op, xp, x.dtype)
    return xp, kernel


def _shifted(xp: Any, x: Any, axis: int) -> tuple[Any, Any]:
    """(z, m) with ``z = x - m`` and ``m`` the row max (keepdims), 0 where the max is -inf or NaN (+inf is kept:
    the row then becomes NaN, see the module docstring)."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m) | (m > 0), m, 0.0)
    return x - m, m


def _upcast(xp: Any, x: Any) -> Any:
    half = getattr(xp, "float16", None)  # not every namespace has float16
    return xp.astype(x, xp.float32) if half is not None and x.dtype == half else x


def logsumexp(x: Any, axis: int = -1, keepdims: bool = False) -> Any:
    """``log(sum(exp(x), axis))`` without overflow. (N, C) -> (N,) for the default axis."""
    xp, kernel = _prepare(x, axis, "logsumexp")
    if kernel is not None and not keepdims:
        out = kernel(x, axis)
        if out is not NotImplemented:
            return out
    xf = _upcast(xp, x)
    z, m = _shifted(xp, xf, axis)
    out = xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True)) + m
    out = xp.where(m == float("inf"), m, out)  # a +inf entry (and no NaN, else m is NaN): lse = +inf
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
    return xp.astype(out, x.dtype) if out.dtype != x.dtype else out


def softmax(x: Any, axis: int = -1) -> Any:
    """``exp(x - lse(x))`` along ``axis``; same shape as ``x``."""
    xp, kernel = _prepare(x, axis, "softmax")
    if kernel is not None:
        out = kernel(x, axis)
        if out is not NotImplemented:
            return out
    xf = _upcast(xp, x)
    z, _ = _shifted(xp, xf, axis)
    e = xp.exp(z)
    e /= xp.sum(e, axis=axis, keepdims=True)
    return xp.astype(e, x.dtype) if e.dtype != x.dtype else e


def log_softmax(x: Any, axis: int = -1) -> Any:
    """``x - lse(x)`` along ``axis``; same shape as ``x``."""
    xp, kernel = _prepare(x, axis, "log_softmax")
    if kernel is not None:
        out = kernel(x, axis)
        if out is not NotImplemented:
            return out
    xf = _upcast(xp, x)
    z, _ = _shifted(xp, xf, axis)
    out = z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))
    return xp.astype(out, x.dtype) if out.dtype != x.dtype else out
