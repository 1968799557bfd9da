"""Softmax family, all through the log-sum-exp trick: ``lse(x) = m + log(sum(exp(x - m)))``, ``m = max(x)``.

float16 inputs are computed in float32 and cast back. Rows that are all ``-inf`` give ``lse = -inf`` (and NaN
softmax, like NumPy/PyTorch), never an overflow. Each is an op; a fused CUDA kernel (one read of each row) replaces
the forward for 2-D inputs along the last axis.

Rows containing ``+inf`` or NaN follow PyTorch, the same in every function here, in ``cross_entropy`` and in the
CUDA kernels: a row with ``+inf`` (and no NaN) has ``logsumexp = +inf``, and ``softmax``, ``log_softmax``,
``cross_entropy`` (its loss and its gradient) are NaN over the whole row; a row with a NaN is NaN everywhere,
``logsumexp`` included. (Computing through ``m = +inf`` gives exactly that: ``x - m`` is NaN at the ``+inf``
entries, so the row's sum is NaN.)

An empty ``axis`` (e.g. shape (N, 0)) has no maximum to shift by: ``logsumexp`` is then ``-inf`` (the log of an empty
sum) and ``softmax``/``log_softmax`` are empty, as in PyTorch; gradients are empty too.
"""
from __future__ import annotations

from typing import Any, Optional

from .._torch_names import axis_from_dim
from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import namespace_of
from . import _checks
from .elementwise import exp
from .reductions import sum as _sum
from .shape import reshape

__all__ = ["softmax", "log_softmax", "logsumexp", "softmax_backward"]


def _prepare(x: Any, axis: int, op: str) -> Any:
    xp = namespace_of(x, where=op)
    _checks.floating(xp, x, op)
    if x.ndim == 0:
        raise ValueError(f"{op}: input must have at least one dimension")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for input of shape {tuple(x.shape)}")
    if op != "logsumexp":
        _checks.length_one_axis(x, axis, op, "every output is 1" if op == "softmax" else "every output is 0")
    return xp


def _shifted(xp: Any, x: Any, axis: int) -> tuple[Any, Any]:
    """(z, m) with ``z = x - m`` and ``m`` the row max (keepdims), 0 where the max is -inf or NaN (+inf is kept:
    the row then becomes NaN, see the module docstring)."""
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m) | (m > 0), m, 0.0)
    return x - m, m


def _empty_axis(x: Any, axis: int) -> bool:
    """Whether ``axis`` of ``x`` has length 0 (no max to shift by: each op answers without reducing)."""
    return int(x.shape[axis]) == 0


def _upcast(xp: Any, x: Any) -> Any:
    half = getattr(xp, "float16", None)  # not every namespace has float16
    return xp.astype(x, xp.float32) if half is not None and x.dtype == half else x


def _downcast(xp: Any, out: Any, dtype: Any) -> Any:
    """``out`` rounded once to ``dtype`` (the input's: float16 after an ``_upcast`` computation), else as it is."""
    return xp.astype(out, dtype) if out.dtype != dtype else out


class LogSumExp(Op):
    name = "logsumexp"
    check = staticmethod(lambda x, *, axis=-1, keepdims=False: _prepare(x, axis, "logsumexp"))
    kernel = registry.LOGSUMEXP

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: int = -1, keepdims: bool = False) -> Any:
        """``log(sum(exp(x), axis))`` without overflow. (N, C) -> (N,) for the default axis."""
        xp = namespace_of(x)
        if _empty_axis(x, axis):  # the log of an empty sum
            shape = list(x.shape)
            shape[axis] = 1
            out = xp.full(tuple(shape), -float("inf"), dtype=x.dtype)
        else:
            xf = _upcast(xp, x)
            z, m = _shifted(xp, xf, axis)
            out = xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True)) + m
            out = xp.where(m == float("inf"), m, out)  # a +inf entry (and no NaN, else m is NaN): lse = +inf
        if not keepdims:
            out = xp.squeeze(out, axis=axis)
        out = _downcast(xp, out, x.dtype)
        LogSumExp.save(ctx, out, x, axis=axis, keepdims=keepdims)
        return out

    @staticmethod
    def save(ctx: Context, out: Any, x: Any, *, axis: int = -1, keepdims: bool = False) -> None:
        ctx.save_for_backward(x, out)
        ctx.axis, ctx.keepdims = axis, keepdims

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        x, out = ctx.saved_tensors
        shape = list(x.shape)
        shape[ctx.axis] = 1
        if not ctx.keepdims:
            g, out = reshape(g, tuple(shape)), reshape(out, tuple(shape))
        return g * exp(x - out)  # g * softmax(x)

    @staticmethod
    def onnx(g: Any, x: str, *, axis: int = -1, keepdims: bool = False) -> str:
        xf = g.cast(x, "float32") if g.dtype(x) == "float16" else x
        out = g.reduce("ReduceLogSumExp", xf, (axis,), keepdims=keepdims)
        return out if xf is x else g.cast(out, "float16")


def _save_output(ctx: Context, out: Any, x: Any, *, axis: int = -1) -> None:
    """``save`` of ``Softmax`` and ``LogSoftmax`` (their backwards read the output and the axis)."""
    ctx.save_for_backward(out)
    ctx.axis = axis


def _rowwise(ctx: Context, x: Any, axis: int, fn: Any) -> Any:
    """The forward of ``Softmax``/``LogSoftmax``: ``fn(xp, z)`` on ``z``, ``x`` shifted by its max along ``axis``
    (float16 in float32, rounded once), saved with ``_save_output``; an empty axis gives an empty output."""
    xp = namespace_of(x)
    if _empty_axis(x, axis):
        out = xp.zeros(x.shape, dtype=x.dtype)  # empty
    else:
        z, _ = _shifted(xp, _upcast(xp, x), axis)
        out = fn(xp, z)
        out = _downcast(xp, out, x.dtype)
    _save_output(ctx, out, x, axis=axis)
    return out


class Softmax(Op):
    name = "softmax"
    check = staticmethod(lambda x, *, axis=-1, keepdims=False: _prepare(x, axis, "softmax"))
    kernel = registry.SOFTMAX

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: int = -1) -> Any:
        """``exp(x - lse(x))`` along ``axis``; same shape as ``x``."""
        def normalized(xp: Any, z: Any) -> Any:
            e = xp.exp(z)
            e /= xp.sum(e, axis=axis, keepdims=True)
            return e

        return _rowwise(ctx, x, axis, normalized)

    save = staticmethod(_save_output)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (y,) = ctx.saved_tensors
        return softmax_backward(y, g, ctx.axis)

    @staticmethod
    def onnx(g: Any, x: str, *, axis: int = -1) -> str:
        return g.in_float32("Softmax", x, axis=axis)


class LogSoftmax(Op):
    name = "log_softmax"
    check = staticmethod(lambda x, *, axis=-1, keepdims=False: _prepare(x, axis, "log_softmax"))
    kernel = registry.LOG_SOFTMAX

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: int = -1) -> Any:
        """``x - lse(x)`` along ``axis``; same shape as ``x``."""
        return _rowwise(ctx, x, axis, lambda xp, z: z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True)))

    save = staticmethod(_save_output)

    @staticmethod
    def onnx(g: Any, x: str, *, axis: int = -1) -> str:
        return g.in_float32("LogSoftmax", x, axis=axis)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        """``g - softmax * sum(g)``; float16 arrays in float32 (the row sum of ``g`` overflows float16 first)."""
        (out,) = ctx.saved_tensors
        if not hasattr(g, "_node") and not hasattr(out, "_node"):
            xp = namespace_of(g, out)
            gf, of = _upcast(xp, g), _upcast(xp, out)
            if gf is not g:
                dx = gf - xp.exp(of) * xp.sum(gf, axis=ctx.axis, keepdims=True)
                return xp.astype(dx, g.dtype)
        return g - exp(out) * _sum(g, axis=ctx.axis, keepdims=True)


def logsumexp(x: Any, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None,
              keepdim: Optional[bool] = None) -> Any:
    """``log(sum(exp(x), axis))`` without overflow; ``axis`` defaults to -1 (``dim=`` and ``keepdim=`` are
    PyTorch's names for ``axis`` and ``keepdims``). (N, C) -> (N,) for the default axis."""
    if keepdim is not None:
        keepdims = keepdim
    if dim is not None:
        axis = axis_from_dim(axis, dim, "logsumexp")
    elif axis is None:
        axis = -1
    return LogSumExp.apply(x, axis=axis, keepdims=keepdims)


def softmax(x: Any, axis: Optional[int] = None, *, dim: Optional[int] = None) -> Any:
    """``exp(x - lse(x))`` along ``axis`` (default -1; ``dim=`` is PyTorch's name for it); same shape as ``x``."""
    if dim is not None:
        axis = axis_from_dim(axis, dim, "softmax")
    elif axis is None:
        axis = -1
    return Softmax.apply(x, axis=axis)


def log_softmax(x: Any, axis: Optional[int] = None, *, dim: Optional[int] = None) -> Any:
    """``x - lse(x)`` along ``axis`` (default -1; ``dim=`` is PyTorch's name for it); same shape as ``x``."""
    if dim is not None:
        axis = axis_from_dim(axis, dim, "log_softmax")
    elif axis is None:
        axis = -1
    return LogSoftmax.apply(x, axis=axis)


def softmax_backward(y: Any, dy: Any, axis: int = -1) -> Any:
    """Input gradient of ``y = softmax(x, axis)``: ``dx = y * (dy - sum(dy * y, axis))``; float16 arrays are computed
    in float32 (the sum over a row overflows or loses digits in float16) and rounded once."""
    if not hasattr(y, "_node") and not hasattr(dy, "_node"):
        xp = _checks.pair(y, dy, "softmax_backward", ("softmax output", "dy"))
        dyf = _upcast(xp, dy)
        if dyf is not dy:  # float16 (y too): in float32, where y promotes exactly, then rounded once
            dx = y * (dyf - xp.sum(dyf * y, axis=axis, keepdims=True))
            return xp.astype(dx, dy.dtype)
    return y * (dy - _sum(dy * y, axis=axis, keepdims=True))
