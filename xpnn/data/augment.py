"""Batch regularizers from the notes (003): ``cutout`` (blank a random square of each image) and ``mixup``
(train on convex combinations of pairs of examples). Random draws come from a NumPy Generator on the host (a few
numbers per batch); the arithmetic runs on the batch's own backend.
"""
from __future__ import annotations

from typing import Any, Optional

from ..backend import backend_of, namespace_of
from ..errors import DTypeError, ShapeError
from .batching import SeedLike, as_generator

__all__ = ["cutout", "mixup", "mixup_loss"]


def cutout(
    X: Any,
    size: int,
    *,
    image_shape: Optional[tuple[int, int]] = None,
    seed: SeedLike = None,
    fill: float = 0.0,
) -> Any:
    """Cutout (DeVries & Taylor, 2017): per image, set a ``size x size`` square at a random centre to ``fill``.

    X: ``(n, H, W)``, ``(n, C, H, W)`` or flat ``(n, H*W)`` rows with ``image_shape=(H, W)``. The centre is uniform
    over the image, so the square may be clipped at the border. Returns a new array of X's shape; X is not changed.
    """
    xp = namespace_of(X, where="cutout")
    if not xp.isdtype(X.dtype, "real floating"):
        raise DTypeError(f"cutout: expected floating images, got {X.dtype}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"cutout: size must be a positive int, got {size!r}")
    if X.ndim == 2:
        if image_shape is None:
            raise ShapeError(f"cutout: flat input of shape {tuple(X.shape)} needs image_shape=(H, W)")
        h, w = image_shape
        if h * w != X.shape[1]:
            raise ShapeError(f"cutout: image_shape {image_shape} does not match rows of length {X.shape[1]}")
        imgs = xp.reshape(X, (X.shape[0], h, w))
    elif X.ndim in (3, 4):
        h, w = int(X.shape[-2]), int(X.shape[-1])
        imgs = X
    else:
        raise ShapeError(f"cutout: expected X of shape (n, H, W), (n, C, H, W) or (n, H*W), got {tuple(X.shape)}")
    n = int(X.shape[0])
    rng = as_generator(seed)
    be = backend_of(X)
    top = be.asarray(rng.integers(0, h, size=n) - size // 2)[:, None, None]
    left = be.asarray(rng.integers(0, w, size=n) - size // 2)[:, None, None]
    rows = xp.arange(h, dtype=top.dtype)[None, :, None]
    cols = xp.arange(w, dtype=left.dtype)[None, None, :]
    hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (n, H, W)
    if imgs.ndim == 4:
        hole = hole[:, None, :, :]
    out = xp.where(hole, xp.asarray(fill, dtype=X.dtype), imgs)
    return xp.reshape(out, tuple(X.shape))


def mixup(X: Any, y: Any, alpha: float = 0.2, *, seed: SeedLike = None) -> tuple[Any, Any, Any, float]:
    """Mixup (Zhang et al., 2018): ``X_mix = lam * X + (1 - lam) * X[perm]`` with ``lam ~ Beta(alpha, alpha)``.

    Returns ``(X_mix, y_a, y_b, lam)`` with ``y_a = y`` and ``y_b = y[perm]``; train on
    ``lam * loss(logits, y_a) + (1 - lam) * loss(logits, y_b)`` (``mixup_loss`` does it with a loss module).
    """
    xp = namespace_of(X, y, where="mixup")
    if not xp.isdtype(X.dtype, "real floating"):
        raise DTypeError(f"mixup: expected floating X, got {X.dtype}")
    if alpha <= 0:
        raise ValueError(f"mixup: alpha must be > 0, got {alpha}")
    if X.ndim < 1 or y.shape[0] != X.shape[0]:
        raise ShapeError(f"mixup: X {tuple(X.shape)} and y {tuple(y.shape)} must have the same number of rows")
    rng = as_generator(seed)
    lam = float(rng.beta(alpha, alpha))
    perm = backend_of(X).asarray(rng.permutation(int(X.shape[0])))
    X_mix = lam * X + (1.0 - lam) * xp.take(X, perm, axis=0)
    return X_mix, y, xp.take(y, perm, axis=0), lam


def mixup_loss(loss_fn: Any, logits: Any, y_a: Any, y_b: Any, lam: float) -> tuple[Any, Any]:
    """``(loss, dlogits)`` of ``lam * loss_fn(logits, y_a) + (1 - lam) * loss_fn(logits, y_b)`` for a loss module
    following xpnn's protocol (``loss = loss_fn(logits, y)``, ``dlogits = loss_fn.backward()``)."""
    loss_a = loss_fn(logits, y_a)
    grad_a = loss_fn.backward()
    loss_b = loss_fn(logits, y_b)
    grad_b = loss_fn.backward()
    return lam * loss_a + (1.0 - lam) * loss_b, lam * grad_a + (1.0 - lam) * grad_b
