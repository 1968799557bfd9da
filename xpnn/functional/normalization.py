"""Batch normalisation (Ioffe & Szegedy, 2015) over the batch axis of (N, C) input, or the batch and spatial axes of
(N, C, ...) input, with PyTorch's semantics (``torch.nn.functional.batch_norm``): biased batch variance for
normalising, unbiased variance for the running estimate, ``momentum=None`` for a cumulative average.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import namespace_of
from ..errors import ShapeError
from . import _checks
from .elementwise import sqrt
from .reductions import mean as _mean
from .reductions import sum as _sum
from .shape import reshape
from .softmax import _upcast

__all__ = ["batch_norm", "batch_norm_train", "batch_norm_eval", "batch_norm_backward"]


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
        if training:
            if n < 2:
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
