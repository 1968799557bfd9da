"""Batch normalisation (Ioffe & Szegedy, 2015) over the batch axis of (N, C) input, or the batch and spatial axes of
(N, C, ...) input, with PyTorch's semantics (``torch.nn.functional.batch_norm``): biased batch variance for
normalising, unbiased variance for the running estimate, ``momentum=None`` for a cumulative average.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks
from .elementwise import astype, sqrt
from .reductions import mean as _mean
from .reductions import sum as _sum
from .elementwise import _values
from .shape import reshape
from .softmax import _upcast

__all__ = ["batch_norm", "batch_norm_train", "batch_norm_eval", "batch_norm_backward", "layer_norm"]


def _check(x: Any, weight: Optional[Any], where: str) -> Any:
    xp = namespace_of(x, weight, where=where)
    _checks.floating(xp, x, where)
    if x.ndim < 2:
        raise ShapeError(f"{where}: expected input of shape (N, C) or (N, C, ...), got {tuple(x.shape)}")
    if weight is not None:
        if tuple(weight.shape) != (x.shape[1],):
            raise ShapeError(f"{where}: expected input of shape (N, {weight.shape[0]}, ...), got {tuple(x.shape)}")
        _checks.same_dtype(weight, x, where, ("weight", "input"))
    return xp


def _layout(x_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(reduced axes, per-channel broadcast shape, number of values per channel) for x (N, C, ...)."""
    axes = (0,) + tuple(range(2, len(x_shape)))
    bshape = (x_shape[1],) + (1,) * (len(x_shape) - 2)
    n = 1
    for a in axes:
        n *= x_shape[a]
    return axes, bshape, n


def _stats(xp: Any, x: Any, eps: float) -> tuple[Any, Any, Any, Any]:
    """(xhat, invstd, mean, var) with batch statistics; float16 statistics in float32 (``(x - mean)**2`` overflows
    float16 beyond |x - mean| ~ 256), xhat/invstd returned in x's dtype, mean/var in the compute dtype."""
    axes, bshape, _ = _layout(tuple(x.shape))
    xf = _upcast(xp, x)
    mean = xp.mean(xf, axis=axes)
    xhat = xf - xp.reshape(mean, bshape)
    var = xp.mean(xhat * xhat, axis=axes)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat *= xp.reshape(invstd, bshape)
    if xf is not x:
        xhat, invstd = xp.astype(xhat, x.dtype), xp.astype(invstd, x.dtype)
    return xhat, invstd, mean, var


def _affine(xp: Any, xhat: Any, weight: Optional[Any], bias: Optional[Any], bshape: tuple[int, ...]) -> Any:
    y = xhat * xp.reshape(weight, bshape) if weight is not None else xp.asarray(xhat, copy=True)
    if bias is not None:
        y += xp.reshape(bias, bshape)
    return y


class BatchNorm(Op):
    name = "batch_norm"

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Optional[Any] = None, bias: Optional[Any] = None, *,
                running_mean: Optional[Any] = None, running_var: Optional[Any] = None, training: bool = True,
                momentum: Optional[float] = 0.1, eps: float = 1e-5, num_batches_tracked: Optional[Any] = None) -> Any:
        xp = _check(x, weight, "batch_norm")
        axes, bshape, n = _layout(tuple(x.shape))
        ctx.save_for_backward(x, weight)
        ctx.batch_stats, ctx.eps = training, eps
        if training and n == 0:  # an empty batch, as torch.batch_norm: an empty output (weight and bias get zero
            # gradients), the running statistics unchanged (num_batches_tracked counts the call, as nn.BatchNorm*'s)
            if num_batches_tracked is not None:
                num_batches_tracked += 1
            ctx.batch_stats = False  # (no statistics: dx = dy * weight, empty)
            xhat, invstd = x, xp.ones((x.shape[1],), dtype=x.dtype)
        elif training:
            if n == 1:
                raise ShapeError(f"batch_norm: expected more than 1 value per channel when training, got input "
                                 f"{tuple(x.shape)}")
            xhat, invstd, mean, var = _stats(xp, x, eps)
            if running_mean is not None and running_var is not None:
                _update_running(xp, running_mean, running_var, mean, var, n, momentum, num_batches_tracked)
        else:
            if running_mean is None or running_var is None:
                raise ValueError("batch_norm: running_mean and running_var are needed when training=False")
            if tuple(running_mean.shape) != (x.shape[1],):
                raise ShapeError(f"batch_norm: expected input of shape (N, {running_mean.shape[0]}, ...), "
                                 f"got {tuple(x.shape)}")
            invstd = 1.0 / xp.sqrt(running_var + eps)
            xhat = (x - xp.reshape(running_mean, bshape)) * xp.reshape(invstd, bshape)
        ctx.xhat, ctx.invstd = xhat, invstd
        return _affine(xp, xhat, weight, bias, bshape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight = ctx.saved_tensors
        if tuple(dy.shape) != tuple(x.shape):
            raise ShapeError(f"batch_norm backward: expected dy of shape {tuple(x.shape)}, got {tuple(dy.shape)}")
        axes, bshape, n = _layout(tuple(x.shape))
        if ctx.create_graph and ctx.batch_stats:  # recorded: the statistics as expressions of x
            mu = _mean(x, axis=axes, keepdims=True)
            xc = x - mu
            invstd = 1.0 / sqrt(_mean(xc * xc, axis=axes, keepdims=True) + ctx.eps)
            xhat = xc * invstd
        else:
            xhat, invstd = ctx.xhat, reshape(ctx.invstd, bshape)
        need = ctx.needs_input_grad
        dbias = _sum(dy, axis=axes)
        dweight = _sum(dy * xhat, axis=axes)
        dx = None
        if need[0]:
            scale = invstd * reshape(weight, bshape) if weight is not None else invstd
            if ctx.batch_stats:  # dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
                dx = (dy - reshape(dbias, bshape) * (1.0 / n) - xhat * reshape(dweight, bshape) * (1.0 / n)) * scale
            else:
                dx = dy * scale
        return dx, (dweight if len(need) > 1 and need[1] else None), (dbias if len(need) > 2 and need[2] else None)

    @staticmethod
    def onnx(g: Any, x: str, weight: Optional[str] = None, bias: Optional[str] = None, *,
             running_mean: Any = None, running_var: Any = None, training: bool = True,
             eps: float = 1e-5, **_: Any) -> str:
        """Running statistics: ``BatchNormalization`` (ones/zeros for a missing weight/bias). Batch statistics
        (``track_running_stats=False``): the mean and biased variance over (N, ...) as nodes, in float32 for float16
        input (as ``_stats``); the running statistics are not updated (an exported model is for inference)."""
        shape = g.shape(x)
        c = shape[1]
        dt = g.dtype(x)
        if weight is None:
            weight = g.const(np.ones(c), dtype=dt)
        if bias is None:
            bias = g.const(np.zeros(c), dtype=dt)
        if not training:
            return g.op("BatchNormalization", x, weight, bias, g.const(running_mean), g.const(running_var),
                        epsilon=float(eps))
        axes, bshape, _ = _layout(tuple(shape))
        xf = g.cast(x, np.float32) if dt == np.float16 else x
        xc = g.op("Sub", xf, g.reduce("ReduceMean", xf, axes))
        var = g.reduce("ReduceMean", g.op("Mul", xc, xc), axes)
        xhat = g.op("Div", xc, g.op("Sqrt", g.op("Add", var, g.const(eps, dtype=g.dtype(xf)))))
        if dt == np.float16:
            xhat = g.cast(xhat, dt)
        scale = g.op("Reshape", weight, g.ints(bshape))
        return g.op("Add", g.op("Mul", xhat, scale), g.op("Reshape", bias, g.ints(bshape)))


def _update_running(xp: Any, rm: Any, rv: Any, mean: Any, var: Any, n: int, momentum: Optional[float],
                    num_batches_tracked: Optional[Any]) -> None:
    """In place: ``running = (1 - f) * running + f * stat`` with the unbiased variance; ``f = momentum``, or
    ``1 / num_batches_tracked`` (cumulative average) when ``momentum`` is None."""
    if num_batches_tracked is not None:
        num_batches_tracked += 1
    if momentum is None:
        f = 1.0 / float(num_batches_tracked) if num_batches_tracked is not None else 1.0
    else:
        f = float(momentum)
    rm *= 1.0 - f
    rm += xp.astype(f * mean, rm.dtype)
    rv *= 1.0 - f
    rv += xp.astype((f * n / (n - 1)) * var, rv.dtype)  # unbiased variance, like PyTorch


def batch_norm(x: Any, running_mean: Optional[Any], running_var: Optional[Any], weight: Optional[Any] = None,
               bias: Optional[Any] = None, training: bool = False, momentum: Optional[float] = 0.1,
               eps: float = 1e-5, num_batches_tracked: Optional[Any] = None) -> Any:
    """Batch normalisation of x (N, C) or (N, C, ...) per channel, ``torch.nn.functional.batch_norm``'s arguments:
    with ``training`` the batch statistics normalise and update ``running_mean``/``running_var`` in place (if
    given); otherwise the running statistics normalise. ``y = (x - mean) / sqrt(var + eps) * weight + bias``.
    The running statistics may be Tensors: their arrays are used and updated (they get no gradient)."""
    if isinstance(running_mean, _op.TensorBase) or isinstance(running_var, _op.TensorBase):  # (rebound, not updated)
        running_mean = running_mean.data if isinstance(running_mean, _op.TensorBase) else running_mean
        running_var = running_var.data if isinstance(running_var, _op.TensorBase) else running_var
    return BatchNorm.apply(x, weight, bias, running_mean=running_mean, running_var=running_var, training=training,
                           momentum=momentum, eps=eps, num_batches_tracked=num_batches_tracked)


# --- the (N, C) array functions of the first version, on the same math ----------------------------------------
def batch_norm_train(
    x: Any, weight: Optional[Any], bias: Optional[Any], eps: float = 1e-5
) -> tuple[Any, Any, Any, Any, Any]:
    """Batch normalisation with batch statistics: x (N, C) ->
    ``(y, xhat, invstd, mean, var)`` with ``mean``/``var`` (biased) over the batch, ``invstd = 1/sqrt(var + eps)``,
    ``xhat = (x - mean) * invstd``, ``y = weight * xhat + bias`` (affine part skipped when weight is None).
    float16 input: the statistics are computed in float32 and returned in float32."""
    xp = _check(x, weight, "batch_norm")
    if x.ndim != 2:
        raise ShapeError(f"batch_norm: expected input of shape (N, C), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input {tuple(x.shape)}")
    xhat, invstd, mean, var = _stats(xp, x, eps)
    return _affine(xp, xhat, weight, bias, (x.shape[1],)), xhat, invstd, mean, var


def batch_norm_eval(
    x: Any, running_mean: Any, running_var: Any, weight: Optional[Any], bias: Optional[Any], eps: float = 1e-5
) -> tuple[Any, Any, Any]:
    """Batch normalisation with stored statistics: ``(y, xhat, invstd)``, ``xhat = (x - running_mean) * invstd``."""
    _check(x, weight, "batch_norm")
    if x.ndim != 2:
        raise ShapeError(f"batch_norm: expected input of shape (N, C), got {tuple(x.shape)}")
    ctx = Context((False, False, False), (x,))
    y = BatchNorm.forward(ctx, x, weight, bias, running_mean=running_mean, running_var=running_var, training=False,
                          eps=eps)
    return y, ctx.xhat, ctx.invstd


def batch_norm_backward(
    dy: Any, xhat: Any, invstd: Any, weight: Optional[Any], training: bool
) -> tuple[Any, Any, Any]:
    """``(dx, dweight, dbias)`` of batch normalisation of (N, C) input (``dweight = sum(dy * xhat)``,
    ``dbias = sum(dy)``). Training (batch statistics): ``dx = weight * invstd * (dy - dbias/N - xhat * dweight/N)``.
    Eval (fixed statistics): ``dx = weight * invstd * dy``."""
    _checks.pair(xhat, dy, "batch_norm_backward", ("input", "dy"))
    ctx = Context((True, True, True), (dy,))
    ctx.save_for_backward(xhat, weight)  # only the shape of the saved input is used
    ctx.batch_stats, ctx.xhat, ctx.invstd, ctx.eps = training, xhat, invstd, 0.0
    return BatchNorm.backward(ctx, dy)


# --- layer normalisation ------------------------------------------------------------------------------------------
def _layer_norm_check(x: Any, weight: Optional[Any], bias: Optional[Any], *, normalized_shape: tuple[int, ...],
                      eps: float) -> None:
    where = "layer_norm"
    arrays = [a for a in (x, weight, bias) if a is not None]
    xp = namespace_of(*arrays, where=where)
    _checks.floating(xp, x, where)
    k = len(normalized_shape)
    if k == 0 or tuple(x.shape[x.ndim - k:]) != normalized_shape or x.ndim < k:
        raise ShapeError(f"{where}: expected input with trailing dimensions {normalized_shape} (normalized_shape), "
                         f"got shape {tuple(x.shape)}")
    for name, a in (("weight", weight), ("bias", bias)):
        if a is not None:
            if tuple(a.shape) != normalized_shape:
                raise ShapeError(f"{where}: expected {name} of shape {normalized_shape} (normalized_shape), got "
                                 f"{tuple(a.shape)}")
            if a.dtype != x.dtype:
                raise DTypeError(f"{where}: expected input of dtype {dtype_name(a.dtype)} (the {name}'s dtype), got "
                                 f"{dtype_name(x.dtype)}")


class LayerNorm(Op):
    """Layer normalisation (Ba, Kiros & Hinton 2016; ``torch.nn.functional.layer_norm``) over the trailing
    ``normalized_shape`` axes. The forward keeps ``ctx.mean`` and ``ctx.rstd`` (``1/sqrt(var + eps)``, biased
    variance), of the input's leading shape, in float32 for float16 input; a fused kernel's forward override sets
    the same. The backward uses them, or (``create_graph``) recomputes them as expressions of ``x`` so that second
    derivatives are exact."""

    name = "layer_norm"
    check = staticmethod(_layer_norm_check)

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Optional[Any] = None, bias: Optional[Any] = None, *,
                normalized_shape: tuple[int, ...], eps: float = 1e-5) -> Any:
        xp = ctx.xp
        axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        lead = tuple(x.shape[:x.ndim - len(normalized_shape)])
        ctx.axes, ctx.eps = axes, eps
        fused = _dispatch.lookup(registry.LAYER_NORM, xp, x.dtype)  # kernels/layer_norm.cu: one read of x
        res = NotImplemented if fused is None else fused(x, weight, bias, math.prod(normalized_shape), eps)
        if res is not NotImplemented:
            y, mean, rstd = res
            ctx.mean, ctx.rstd = xp.reshape(mean, lead), xp.reshape(rstd, lead)
            ctx.save_for_backward(x, weight)
            return y
        xf = _upcast(xp, x)  # float16: statistics and normalisation in float32
        mean = xp.mean(xf, axis=axes, keepdims=True)
        y = xf - mean
        rstd = 1.0 / xp.sqrt(xp.mean(y * y, axis=axes, keepdims=True) + eps)
        y *= rstd
        if weight is not None:
            y *= weight if xf is x else xp.astype(weight, xf.dtype)
        if bias is not None:
            y += bias if xf is x else xp.astype(bias, xf.dtype)
        ctx.mean, ctx.rstd = xp.reshape(mean, lead), xp.reshape(rstd, lead)
        ctx.save_for_backward(x, weight)
        return xp.astype(y, x.dtype) if y.dtype != x.dtype else y

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        """With ``xhat = (x - mean) * rstd`` and ``dxhat = dy * weight``, per row of ``n`` values:
        ``dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``, ``dweight = sum(dy * xhat)`` and
        ``dbias = sum(dy)`` over the leading axes (float16 computed in float32)."""
        x, weight = ctx.saved_tensors
        axes = ctx.axes
        need = ctx.needs_input_grad
        if not ctx.create_graph:  # arrays: the fused kernels (dx; dweight / dbias summed without atomics)
            fused = _dispatch.lookup(registry.LAYER_NORM_BACKWARD, ctx.xp, x.dtype)
            res = NotImplemented if fused is None else fused(
                x, dy, ctx.xp.reshape(ctx.mean, (-1,)), ctx.xp.reshape(ctx.rstd, (-1,)), weight,
                math.prod(x.shape[x.ndim - len(axes):]), need_weight=len(need) > 1 and need[1],
                need_bias=len(need) > 2 and need[2])
            if res is not NotImplemented:
                dx, dw, db = res
                shape = tuple(x.shape[x.ndim - len(axes):])
                return (dx if need[0] else None, None if dw is None else ctx.xp.reshape(dw, shape),
                        None if db is None else ctx.xp.reshape(db, shape))
        half = _values(x).dtype == getattr(ctx.xp, "float16", None)  # computed in float32, as the forward
        xf = astype(x, "float32") if half else x
        dyf = astype(dy, "float32") if half else dy
        if ctx.create_graph:  # recorded: the statistics as expressions of x
            xc = xf - _mean(xf, axis=axes, keepdims=True)
            rstd = 1.0 / sqrt(_mean(xc * xc, axis=axes, keepdims=True) + ctx.eps)
            xhat = xc * rstd
        else:
            keep = tuple(x.shape[:x.ndim - len(axes)]) + (1,) * len(axes)
            rstd = reshape(ctx.rstd, keep)
            xhat = (xf - reshape(ctx.mean, keep)) * rstd
        lead = tuple(range(x.ndim - len(axes)))
        dx = dw = db = None
        if need[0]:
            dxhat = dyf * (astype(weight, "float32") if half else weight) if weight is not None else dyf
            dx = (dxhat - _mean(dxhat, axis=axes, keepdims=True)
                  - xhat * _mean(dxhat * xhat, axis=axes, keepdims=True)) * rstd
            dx = astype(dx, x.dtype) if half else dx
        if len(need) > 1 and need[1]:
            dw = _sum(dyf * xhat, axis=lead) if lead else dyf * xhat
            dw = astype(dw, x.dtype) if half else dw
        if len(need) > 2 and need[2]:
            db = _sum(dyf, axis=lead) if lead else dyf
            db = astype(db, x.dtype) if half else db
        return dx, dw, db

    @staticmethod
    def onnx(g: Any, x: str, weight: Optional[str] = None, bias: Optional[str] = None, *,
             normalized_shape: tuple[int, ...], eps: float = 1e-5) -> str:
        """``LayerNormalization`` (opset 17; statistics in float32 for float16 input), ones/zeros for a missing
        weight/bias; before opset 17 the formula over the trailing axes."""
        dt = g.dtype(x)
        k = len(normalized_shape)
        if weight is None:
            weight = g.const(np.ones(normalized_shape), dtype=x)
        if bias is None:
            bias = g.const(np.zeros(normalized_shape), dtype=x)
        if g.opset >= 17:
            return g.op("LayerNormalization", x, weight, bias, axis=-k, epsilon=float(eps))
        nd = len(g.shape(x))
        axes = list(range(nd - k, nd))
        xf = g.cast(x, np.float32) if dt == np.float16 else x
        xc = g.op("Sub", xf, g.reduce("ReduceMean", xf, axes))
        var = g.reduce("ReduceMean", g.op("Mul", xc, xc), axes)
        xhat = g.op("Div", xc, g.op("Sqrt", g.op("Add", var, g.const(eps, dtype=xf))))
        if dt == np.float16:
            xhat = g.cast(xhat, dt)
        return g.op("Add", g.op("Mul", xhat, weight), bias)


def layer_norm(input: Any, normalized_shape: Any, weight: Optional[Any] = None, bias: Optional[Any] = None,  # noqa: A002
               eps: float = 1e-5) -> Any:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape`` axes (an int or a
    tuple), with the biased variance (``torch.nn.functional.layer_norm``); ``weight``/``bias`` of shape
    ``normalized_shape`` or ``None``. float16 input: statistics and normalisation in float32, the result rounded
    once. Raises ``ShapeError`` when the input's trailing dimensions (or weight/bias) do not match
    ``normalized_shape``, ``DTypeError`` for a non-floating input or a weight of another dtype."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    return LayerNorm.apply(input, weight, bias, normalized_shape=shape, eps=float(eps))
