"""NumPy fast path of ``layer_norm``'s backward, registered as an override of the declaration's backward
(``xpnn.autograd.register_override``; kind ``"numpy"``).

The declaration's backward is written with ``xpnn.functional`` ops (so that it records a graph under
``create_graph``); on plain arrays that is ~12 ops, each a fresh temporary of the input's size. Here the same
formula runs on the (rows, n) view with NumPy's ufuncs in place: ``xhat`` and one product in ``_workspace``
scratch, ``dx`` the one fresh array. Values equal the declaration's up to float rounding (the per-row sums are
the same reductions of the same products). ``create_graph``, float16, non-contiguous input or a kernel provider
that answers for NumPy arrays (the tests' CPU shim) go to the declaration.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, register_override
from . import _workspace
from .normalization import LayerNorm

__all__ = ["layer_norm_backward_numpy"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def layer_norm_backward_numpy(ctx: Context, dy: Any) -> Any:
    """``LayerNorm.backward`` for C-contiguous float32/float64 NumPy arrays (else ``NotImplemented``):
    ``dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`` with ``dxhat = dy * weight``,
    ``dweight = sum(dy * xhat)``, ``dbias = sum(dy)`` over the rows."""
    if ctx.create_graph or type(dy) is not np.ndarray:
        return NotImplemented
    x, weight = ctx.saved_tensors
    if (type(x) is not np.ndarray or x.dtype not in _FLOATS or dy.dtype != x.dtype or dy.shape != x.shape
            or not (x.flags.c_contiguous and dy.flags.c_contiguous)
            or _dispatch.lookup(registry.LAYER_NORM_BACKWARD, np, x.dtype) is not None):
        return NotImplemented
    axes = ctx.axes
    shape = tuple(x.shape[x.ndim - len(axes):])
    n = math.prod(shape)
    rows = x.size // n if n else 0
    x2, dy2 = x.reshape(rows, n), dy.reshape(rows, n)
    mean, rstd = ctx.mean.reshape(rows, 1), ctx.rstd.reshape(rows, 1)
    need = ctx.needs_input_grad
    xhat = np.subtract(x2, mean, out=_workspace.buffer("layer_norm.xhat", (rows, n), x.dtype))
    xhat *= rstd
    prod = _workspace.buffer("layer_norm.prod", (rows, n), x.dtype)
    dx = dw = db = None
    if len(need) > 1 and need[1]:
        dw = np.add.reduce(np.multiply(dy2, xhat, out=prod), axis=0).reshape(shape)
    if len(need) > 2 and need[2]:
        db = np.add.reduce(dy2, axis=0).reshape(shape)
    if need[0]:
        dxhat = np.multiply(dy2, weight.reshape(n), out=np.empty_like(dy2)) if weight is not None else dy2.copy()
        m1 = np.mean(dxhat, axis=1, keepdims=True)
        m2 = np.mean(np.multiply(dxhat, xhat, out=prod), axis=1, keepdims=True)
        dxhat -= m1
        xhat *= m2
        dxhat -= xhat
        dxhat *= rstd
        dx = dxhat.reshape(x.shape)
    return dx, dw, db


register_override(LayerNorm.name, "backward", "numpy", layer_norm_backward_numpy)
