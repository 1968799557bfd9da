"""Class targets: one-hot encoding and accuracy (no gradients)."""
from __future__ import annotations

from typing import Any

from ..backend import dtype_name, namespace_of, resolve_dtype
from ..errors import DTypeError, ShapeError


def one_hot(labels: Any, num_classes: int, dtype: Any = None) -> Any:
    """(N,) integer labels -> (N, num_classes) array with a 1 in each label's column; ``dtype`` (a name or a
    namespace dtype) defaults to float32."""
    xp = namespace_of(labels, where="one_hot")
    if not xp.isdtype(labels.dtype, "integral"):
        raise DTypeError(f"one_hot: labels must be integers, got dtype {dtype_name(labels.dtype)}")
    if labels.ndim != 1:
        raise ShapeError(f"one_hot: labels must have shape (N,), got {tuple(labels.shape)}")
    out_dtype = resolve_dtype(xp, dtype)
    if labels.shape[0]:
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"one_hot: labels must be in [0, {num_classes}), got values in [{lo}, {hi}]")
    hot = xp.arange(num_classes, dtype=labels.dtype)[None, :] == labels[:, None]
    return xp.astype(hot, out_dtype)


def accuracy(scores: Any, labels: Any) -> float:
    """Fraction of rows of ``scores`` (N, C) whose argmax equals ``labels`` (N,)."""
    xp = namespace_of(scores, labels, where="accuracy")
    if scores.ndim != 2 or tuple(labels.shape) != (scores.shape[0],):
        raise ShapeError(f"accuracy: expected scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("accuracy: empty batch")
    if scores.shape[1] == 0:
        raise ValueError(f"accuracy: scores of shape {tuple(scores.shape)} have no class to take the argmax over")
    if not xp.isdtype(labels.dtype, "integral"):
        raise DTypeError(f"accuracy: labels must be integer class indices, got dtype {dtype_name(labels.dtype)}")
    pred = xp.argmax(scores, axis=-1)
    hits = pred == xp.astype(labels, pred.dtype)
    return float(xp.mean(xp.astype(hits, xp.float64)))
