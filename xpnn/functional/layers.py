"""Forward/backward math of the parametrised layers of ``xpnn.nn``: linear backward, softmax backward, PReLU,
Maxout, batch normalisation and dropout masks. Pure functions on arrays of one namespace (array-API code only).

Backward functions return gradients; the layers add them into their parameters' ``.grad``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..backend import dtype_name, is_cupy_namespace, is_numpy_namespace, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks
from .softmax import _upcast

__all__ = [
    "linear_backward",
    "softmax_backward",
    "prelu",
    "prelu_backward",
    "maxout",
    "maxout_backward",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
    "dropout_mask",
    "make_rng",
]


def linear_backward(
    x: Any, weight: Any, dy: Any, *, need_input_grad: bool = True, need_bias_grad: bool = True
) -> tuple[Optional[Any], Any, Optional[Any]]:
    """Gradients of ``y = x @ weight.T + bias``: x (N, in), weight (out, in), dy (N, out) ->
    ``(dx = dy @ weight, dweight = dy.T @ x, dbias = sum(dy, axis=0))``; ``dx``/``dbias`` are ``None`` when not needed.
    """
    xp = namespace_of(x, weight, dy, where="linear_backward")
    if dy.ndim != 2 or x.ndim != 2 or dy.shape[0] != x.shape[0] or dy.shape[1] != weight.shape[0]:
        raise ShapeError(
            f"linear_backward: expected dy of shape ({x.shape[0]}, {weight.shape[0]}), got {tuple(dy.shape)}"
        )
    _checks.same_dtype(weight, dy, "linear_backward", ("weight", "dy"))
    dweight = dy.T @ x
    dbias = xp.sum(dy, axis=0) if need_bias_grad else None
    dx = dy @ weight if need_input_grad else None
    return dx, dweight, dbias


def softmax_backward(y: Any, dy: Any, axis: int = -1) -> Any:
    """Input gradient of ``y = softmax(x, axis)``: ``dx = y * (dy - sum(dy * y, axis))``; float16 is computed in
    float32 (the sum over a row overflows or loses digits in float16) and rounded once."""
    xp = _checks.pair(y, dy, "softmax_backward", ("softmax output", "dy"))
    yf, dyf = _upcast(xp, y), _upcast(xp, dy)
    dx = yf * (dyf - xp.sum(dyf * yf, axis=axis, keepdims=True))
    return xp.astype(dx, dy.dtype) if dx.dtype != dy.dtype else dx


def _prelu_check(x: Any, weight: Any, where: str) -> Any:
    xp = namespace_of(x, weight, where=where)
    _checks.floating(xp, x, where)
    _checks.same_dtype(weight, x, where, ("weight", "input"))
    n = weight.shape[0] if weight.ndim == 1 else -1
    if weight.ndim != 1 or (n != 1 and (x.ndim < 2 or x.shape[1] != n)):
        raise ShapeError(f"{where}: weight of shape {tuple(weight.shape)} does not fit input {tuple(x.shape)} "
                         "(expected (1,) or (C,) for input (N, C))")
    return xp


def _per_channel(weight: Any, x: Any) -> Any:
    """The weight shaped to broadcast over x: 0-d when shared (so x of any shape, 0-d included, keeps its shape),
    (C,) for x (N, C), (C, 1, ...) for x (N, C, ...)."""
    if weight.shape[0] == 1:
        return weight[0]
    if x.ndim == 2:
        return weight
    return weight[(slice(None),) + (None,) * (x.ndim - 2)]


def prelu(x: Any, weight: Any) -> Any:
    """``x`` where ``x > 0`` else ``weight * x``; weight (1,) shared or (C,) per channel of x (N, C, ...)."""
    xp = _prelu_check(x, weight, "prelu")
    return xp.where(x > 0, x, _per_channel(weight, x) * x)


def prelu_backward(x: Any, weight: Any, dy: Any) -> tuple[Any, Any]:
    """``(dx, dweight)`` of PReLU: ``dx = dy`` where ``x > 0`` else ``weight * dy``;
    ``dweight = sum(dy * x)`` over the entries with ``x <= 0`` (per channel, or all for a shared weight)."""
    xp = _prelu_check(x, weight, "prelu_backward")
    _checks.same_shape(x, dy, "prelu_backward", ("input", "dy"))
    w = _per_channel(weight, x)
    pos = x > 0
    dx = xp.where(pos, dy, w * dy)
    contrib = xp.where(pos, 0.0, dy * x)
    if weight.shape[0] == 1:
        dweight = xp.reshape(xp.sum(contrib), (1,))
    else:
        axes = (0,) + tuple(range(2, x.ndim))
        dweight = xp.sum(contrib, axis=axes)
    return dx, dweight


def maxout(z: Any, pieces: int) -> tuple[Any, Any]:
    """Max over groups of ``pieces`` consecutive columns: z (N, out * pieces) -> ``(y (N, out), argmax (N, out))``."""
    xp = namespace_of(z, where="maxout")
    if z.ndim != 2 or pieces < 1 or z.shape[1] % pieces:
        raise ShapeError(f"maxout: expected input of shape (N, out_features * {pieces}), got {tuple(z.shape)}")
    z3 = xp.reshape(z, (z.shape[0], z.shape[1] // pieces, pieces))
    idx = xp.argmax(z3, axis=-1)
    return xp.max(z3, axis=-1), idx


def maxout_backward(idx: Any, dy: Any, pieces: int) -> Any:
    """Gradient of ``maxout``: ``dy`` routed to the winning column of each group -> dz (N, out * pieces)."""
    xp = namespace_of(idx, dy, where="maxout_backward")
    if tuple(idx.shape) != tuple(dy.shape):
        raise ShapeError(f"maxout_backward: dy must have shape {tuple(idx.shape)}, got {tuple(dy.shape)}")
    winner = xp.arange(pieces, dtype=idx.dtype) == idx[..., None]  # (N, out, pieces)
    dz = xp.where(winner, dy[..., None], xp.zeros((), dtype=dy.dtype))
    return xp.reshape(dz, (dy.shape[0], dy.shape[1] * pieces))


def _bn_check(x: Any, weight: Any, where: str) -> Any:
    xp = namespace_of(x, weight, where=where)
    _checks.floating(xp, x, where)
    if x.ndim != 2:
        raise ShapeError(f"{where}: expected input of shape (N, C), got {tuple(x.shape)}")
    if weight is not None:
        if tuple(weight.shape) != (x.shape[1],):
            raise ShapeError(f"{where}: expected input of shape (N, {weight.shape[0]}), got {tuple(x.shape)}")
        _checks.same_dtype(weight, x, where, ("weight", "input"))
    return xp


def batch_norm_train(
    x: Any, weight: Optional[Any], bias: Optional[Any], eps: float = 1e-5
) -> tuple[Any, Any, Any, Any, Any]:
    """Batch normalisation with batch statistics: x (N, C) ->
    ``(y, xhat, invstd, mean, var)`` with ``mean``/``var`` (biased) over the batch, ``invstd = 1/sqrt(var + eps)``,
    ``xhat = (x - mean) * invstd``, ``y = weight * xhat + bias`` (affine part skipped when weight is None).
    float16 input: the statistics are computed in float32 (``(x - mean)**2`` overflows float16 beyond |x - mean|
    ~ 256) and returned in float32; ``y``, ``xhat``, ``invstd`` have x's dtype."""
    xp = _bn_check(x, weight, "batch_norm")
    if x.shape[0] < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input {tuple(x.shape)}")
    xf = _upcast(xp, x)
    mean = xp.mean(xf, axis=0)
    xhat = xf - mean
    var = xp.mean(xhat * xhat, axis=0)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat *= invstd
    if xf is not x:
        xhat, invstd = xp.astype(xhat, x.dtype), xp.astype(invstd, x.dtype)
    y = xhat * weight if weight is not None else xp.asarray(xhat, copy=True)
    if bias is not None:
        y += bias
    return y, xhat, invstd, mean, var


def batch_norm_eval(
    x: Any, running_mean: Any, running_var: Any, weight: Optional[Any], bias: Optional[Any], eps: float = 1e-5
) -> tuple[Any, Any, Any]:
    """Batch normalisation with stored statistics: ``(y, xhat, invstd)``, ``xhat = (x - running_mean) * invstd``."""
    xp = _bn_check(x, weight, "batch_norm")
    if tuple(running_mean.shape) != (x.shape[1],):
        raise ShapeError(f"batch_norm: expected input of shape (N, {running_mean.shape[0]}), got {tuple(x.shape)}")
    invstd = 1.0 / xp.sqrt(running_var + eps)
    xhat = (x - running_mean) * invstd
    y = xhat * weight if weight is not None else xp.asarray(xhat, copy=True)
    if bias is not None:
        y += bias
    return y, xhat, invstd


def batch_norm_backward(
    dy: Any, xhat: Any, invstd: Any, weight: Optional[Any], training: bool
) -> tuple[Any, Any, Any]:
    """``(dx, dweight, dbias)`` of batch normalisation (``dweight = sum(dy * xhat)``, ``dbias = sum(dy)``).

    Training (batch statistics): ``dx = weight * invstd * (dy - dbias/N - xhat * dweight/N)``.
    Eval (fixed statistics): ``dx = weight * invstd * dy``.
    """
    xp = _checks.pair(xhat, dy, "batch_norm_backward", ("input", "dy"))
    dbias = xp.sum(dy, axis=0)
    dweight = xp.sum(dy * xhat, axis=0)
    scale = invstd * weight if weight is not None else invstd
    if training:
        n = dy.shape[0]
        dx = dy - dbias / n
        dx -= xhat * (dweight / n)
        dx *= scale
    else:
        dx = dy * scale
    return dx, dweight, dbias


def make_rng(xp: Any, seed: Any = None) -> Any:
    """A random generator for masks on ``xp``: CuPy's generator for CuPy, else a NumPy ``Generator``."""
    if is_cupy_namespace(xp):
        import cupy

        return cupy.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def dropout_mask(xp: Any, shape: tuple[int, ...], p: float, dtype: Any, rng: Any) -> Any:
    """Inverted-dropout mask of ``shape``: ``1/(1-p)`` with probability ``1-p``, else 0, in ``dtype`` on ``xp``.

    ``rng`` comes from ``make_rng(xp, seed)``; for namespaces other than NumPy/CuPy the mask is drawn with NumPy
    and copied in.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not xp.isdtype(dtype, "real floating"):
        raise DTypeError(f"dropout: dtype must be floating, got {dtype_name(dtype)}")
    draw_dtype = xp.float64 if dtype == xp.float64 else xp.float32
    if is_cupy_namespace(xp):
        u = rng.random(shape, dtype=draw_dtype)
    else:
        u = rng.random(shape, dtype=np.float64 if draw_dtype == xp.float64 else np.float32)
        if not is_numpy_namespace(xp):
            u = xp.asarray(u)
    return xp.where(u >= p, xp.asarray(1.0 / (1.0 - p), dtype=dtype), xp.asarray(0.0, dtype=dtype))
