"""Inverted dropout (Srivastava et al., 2014): masks and the ``dropout`` op."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.op import Context, Op
from ..backend import dtype_name, is_cupy_namespace, is_numpy_namespace, namespace_of
from ..errors import DTypeError
from ..random import device_generator

__all__ = ["dropout", "dropout_mask", "make_rng"]


def make_rng(xp: Any, seed: Any = None) -> Any:
    """A random generator for masks on ``xp``: CuPy's generator for CuPy, else a NumPy ``Generator``."""
    return device_generator(xp, seed)


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


class Dropout(Op):
    name = "dropout"

    @staticmethod
    def forward(ctx: Context, x: Any, *, mask: Any) -> Any:
        namespace_of(x, mask, where="dropout")
        ctx.mask = mask
        return x * mask

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        return dy * ctx.mask


def dropout(x: Any, p: float = 0.5, training: bool = True, *, rng: Any = None, seed: Any = None) -> Any:
    """Zero each element of ``x`` with probability ``p`` and scale the rest by ``1/(1-p)`` when ``training``;
    ``x`` unchanged otherwise (``torch.nn.functional.dropout``). ``rng`` (from ``make_rng``) or ``seed`` draws the
    mask."""
    if not training or p == 0.0:
        return x
    data = x.data if hasattr(x, "_node") else x
    xp = namespace_of(data, where="dropout")
    mask = dropout_mask(xp, tuple(data.shape), p, data.dtype, rng if rng is not None else make_rng(xp, seed))
    return Dropout.apply(x, mask=mask)


dropout.__wrapped_op__ = Dropout  # type: ignore[attr-defined]  (nn.Dropout draws its own masks)
