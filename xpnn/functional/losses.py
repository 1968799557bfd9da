"""Losses, each with a ``*_with_grad`` variant returning ``(loss, grad_wrt_first_argument)`` in one pass.

For ``reduction="none"`` the loss is per sample/element and the gradient is that of the summed loss.
``cross_entropy_with_grad`` is the fused hot path a CUDA kernel overrides.
"""
from __future__ import annotations

import math
from typing import Any

from .. import _dispatch
from ..backend import is_cupy_namespace, is_numpy_namespace, namespace_of
from ..debug import check_finite
from . import _checks
from .activations import sigmoid
from ._inplace import InPlace
from .softmax import _shifted, _upcast


def _reduce(xp: Any, per: Any, reduction: str) -> Any:
    if reduction == "mean":
        return xp.mean(per)
    if reduction == "sum":
        return xp.sum(per)
    return per


def _grad_scale(per: Any, reduction: str) -> float:
    return 1.0 / math.prod(per.shape) if reduction == "mean" else 1.0


def _check_ce(logits: Any, target: Any, reduction: str, ignore_index: int, label_smoothing: float, where: str) -> Any:
    xp = namespace_of(logits, target, where=where)
    _checks.reduction(reduction, where)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing}")
    _checks.class_targets(xp, logits, target, where, ignore_index)
    return xp


def _cross_entropy(xp: Any, logits: Any, target: Any, reduction: str, ignore_index: int, eps: float, with_grad: bool):
    """Reference cross-entropy from logits (N, C) and class targets (N,): loss, and the gradient if asked.

    Per row: ``nll = (m - x[t]) + log(s)`` with ``s = sum(exp(x - m))`` (this order keeps float32 digits at |x| ~ 1e4),
    ``smooth = C*log(s) - sum(x - m)`` (= -sum log p), ``loss = (1-eps)*nll + eps/C*smooth``;
    gradient ``(softmax - (1-eps)*onehot - eps/C) * scale``, zero for ignored rows.
    On NumPy/CuPy one (N, C) array is allocated: it holds ``x - m``, then ``exp(x - m)``, then the gradient.
    """
    ops = InPlace(xp)
    x = _upcast(xp, logits)
    n, c = x.shape
    z, _ = _shifted(xp, x, -1)
    valid = target != ignore_index
    t = xp.where(valid, target, xp.zeros_like(target))
    z_t = xp.reshape(xp.take_along_axis(z, xp.reshape(t, (n, 1)), axis=-1), (n,))
    sum_z = xp.sum(z, axis=-1) if eps > 0.0 else None
    e = ops.exp(z, out=z)
    s = xp.sum(e, axis=-1)
    log_s = xp.log(s)
    per = log_s - z_t
    if sum_z is not None:
        per = (1.0 - eps) * per + (eps / c) * (c * log_s - sum_z)
    per = xp.where(valid, per, 0.0)
    row_scale = xp.astype(valid, x.dtype)
    n_valid = xp.sum(row_scale)
    if reduction == "mean":
        loss = xp.sum(per) / n_valid  # NaN when every target is ignored, like PyTorch
        row_scale = row_scale / xp.maximum(n_valid, 1.0)
    else:
        loss = _reduce(xp, per, reduction)
    if not with_grad:
        return xp.astype(loss, logits.dtype) if loss.dtype != logits.dtype else loss
    grad = ops.mul(e, (row_scale / s)[:, None], out=e)  # softmax * scale; ignored rows become 0
    _sub_at_targets(xp, grad, t, (1.0 - eps) * row_scale)
    if eps > 0.0:
        grad -= ((eps / c) * row_scale)[:, None]
    if grad.dtype != logits.dtype:
        loss, grad = xp.astype(loss, logits.dtype), xp.astype(grad, logits.dtype)
    return loss, grad


def _sub_at_targets(xp: Any, grad: Any, t: Any, value: Any) -> None:
    """``grad[i, t[i]] -= value[i]`` for every row i, in place."""
    n, c = grad.shape
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):  # integer-array indexing: touches N entries, not N*C
        grad[xp.arange(n), t] -= value
    else:  # the standard has no integer-array assignment: a one-hot mask
        onehot = xp.arange(c, dtype=t.dtype)[None, :] == t[:, None]
        grad -= xp.astype(onehot, grad.dtype) * value[:, None]


def cross_entropy(
    logits: Any, target: Any, *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0
) -> Any:
    """Softmax cross-entropy of ``logits`` (N, C) against integer class ``target`` (N,), PyTorch semantics.

    Returns a 0-d array (``"mean"``/``"sum"``) or per-sample losses (N,) (``"none"``).
    """
    xp = _check_ce(logits, target, reduction, ignore_index, label_smoothing, "cross_entropy")
    return _cross_entropy(xp, logits, target, reduction, ignore_index, label_smoothing, with_grad=False)


def cross_entropy_with_grad(
    logits: Any, target: Any, *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0
) -> tuple[Any, Any]:
    """``(cross_entropy(...), d loss / d logits)`` in one pass; the gradient has the shape of ``logits`` (N, C)."""
    xp = _check_ce(logits, target, reduction, ignore_index, label_smoothing, "cross_entropy_with_grad")
    kernel = _dispatch.lookup("cross_entropy_with_grad", xp, logits.dtype)
    if kernel is not None:
        out = kernel(logits, target, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
        if out is not NotImplemented:
            return out
    return _cross_entropy(xp, logits, target, reduction, ignore_index, label_smoothing, with_grad=True)


def _check_pair(pred: Any, target: Any, reduction: str, where: str, first: str) -> Any:
    xp = _checks.pair(pred, target, where, (first, "target"))
    _checks.reduction(reduction, where)
    if pred.ndim > 0 and pred.shape[0] == 0:
        raise ValueError(f"{where}: empty batch of shape {tuple(pred.shape)}")
    check_finite(xp, pred, where, first)
    check_finite(xp, target, where, "target")
    return xp


def _down(xp: Any, like: Any, *arrays: Any) -> Any:
    """``arrays`` cast back to ``like.dtype`` (float16 losses are computed in float32); one array or a tuple."""
    out = tuple(xp.astype(a, like.dtype) if a.dtype != like.dtype else a for a in arrays)
    return out[0] if len(out) == 1 else out


def mse_loss(pred: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean squared error ``(pred - target)**2``, reduced; ``pred`` and ``target`` of one shape.
    float16 is computed in float32 (``d * d`` overflows float16 at ``|d| >= 256``, a sum sooner) and rounded once."""
    xp = _check_pair(pred, target, reduction, "mse_loss", "pred")
    d = _upcast(xp, pred) - _upcast(xp, target)
    return _down(xp, pred, _reduce(xp, d * d, reduction))


def mse_loss_with_grad(pred: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """``(mse_loss(...), 2 * (pred - target) * scale)``, scale ``1/numel`` for ``"mean"``; float16 in float32."""
    xp = _check_pair(pred, target, reduction, "mse_loss_with_grad", "pred")
    d = _upcast(xp, pred) - _upcast(xp, target)
    loss = _reduce(xp, d * d, reduction)
    d *= 2.0 * _grad_scale(d, reduction)
    return _down(xp, pred, loss, d)


def _bce_terms(xp: Any, logits: Any, target: Any) -> Any:
    # max(x, 0) - x*t + log(1 + exp(-|x|)): finite for any x
    return xp.maximum(logits, 0.0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))


def binary_cross_entropy_with_logits(logits: Any, target: Any, reduction: str = "mean") -> Any:
    """Sigmoid + binary cross-entropy on ``logits`` with probabilities ``target`` (same shape), overflow-free.
    float16 is computed in float32 (a float16 sum of the terms overflows) and rounded once."""
    xp = _check_pair(logits, target, reduction, "binary_cross_entropy_with_logits", "logits")
    x, t = _upcast(xp, logits), _upcast(xp, target)
    return _down(xp, logits, _reduce(xp, _bce_terms(xp, x, t), reduction))


def binary_cross_entropy_with_logits_with_grad(logits: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """``(loss, (sigmoid(logits) - target) * scale)``; float16 in float32, rounded once."""
    xp = _check_pair(logits, target, reduction, "binary_cross_entropy_with_logits_with_grad", "logits")
    x, t = _upcast(xp, logits), _upcast(xp, target)
    loss = _reduce(xp, _bce_terms(xp, x, t), reduction)
    grad = sigmoid(x) - t
    grad *= _grad_scale(grad, reduction)
    return _down(xp, logits, loss, grad)
