"""NumPy fast paths of the convolution and max-pooling ops, registered as overrides of their declarations
(``xpnn.autograd.register_override``; kind ``"numpy"``). Each computes what the declaration computes and fills the
same context, so the declaration's backward (or the backward override here) follows either forward.

- ``conv2d`` forward: the column tensor from a ``sliding_window_view`` of the padded input, copied once (the
  reference stacks kh*kw strided slices);
- ``max_pool2d`` forward: a running maximum over the kh*kw strided views (the reference builds the column tensor
  and takes ``argmax`` over its window axis, which NumPy does slowly for short axes);
- ``max_pool2d`` backward: per window offset, dy where the argmax is that offset added into the strided view of dx.

When a kernel provider answers for NumPy arrays (the CPU shim in tests), each returns ``NotImplemented`` so the
kernels run.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import _dispatch
from ..autograd.op import Context, register_override
from .conv import Conv2d, Conv2dGeometry, im2col
from .pooling import MaxPool2d, pool2d_geometry

__all__ = ["im2col_numpy", "max_pool2d_numpy", "max_pool2d_backward_numpy"]


def _kernels_answer(op: str, dtype: Any) -> bool:
    return _dispatch.lookup(op, np, dtype) is not None


def im2col_numpy(x: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """``conv.im2col`` for NumPy arrays (zero padding): a strided view of every window, copied once."""
    xpad = x
    if g.pt or g.pb or g.pl or g.pr:
        xpad = np.zeros((g.n, g.c, g.hp, g.wp), dtype=x.dtype)
        xpad[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x
    win = sliding_window_view(xpad, (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1), axis=(2, 3))
    win = win[:, :, :g.sh * (g.oh - 1) + 1:g.sh, :g.sw * (g.ow - 1) + 1:g.sw, ::g.dh, ::g.dw]
    return np.ascontiguousarray(win.transpose(0, 1, 4, 5, 2, 3))


def _conv2d_forward(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: Any = None, **params: Any) -> Any:
    if _kernels_answer("im2col", x.dtype):
        return NotImplemented
    return Conv2d.forward(ctx, x, weight, bias, im2col_fn=im2col_numpy, **params)


def max_pool2d_numpy(x: np.ndarray, g: Conv2dGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax int32) of max pooling: a running maximum over the kh*kw strided views of the (-inf) padded input
    (3 elementwise passes per offset), the argmax updated where a view wins. Input with a NaN (rare; one sum finds
    it) is left to the reference, which makes the NaN win its window."""
    if np.isnan(x.sum()):  # a NaN (or +inf and -inf) somewhere: `greater` would skip it, the reference does not
        cols = im2col(x, g, pad_value=-math.inf).reshape(g.n, g.c, g.offsets, g.oh, g.ow)
        return cols.max(axis=2), cols.argmax(axis=2).astype(np.int32)
    xpad = x
    if g.pt or g.pb or g.pl or g.pr:
        xpad = np.full((g.n, g.c, g.hp, g.wp), -np.inf, dtype=x.dtype)
        xpad[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x
    y = xpad[(slice(None), slice(None)) + g.window(0, 0)].copy()
    arg = np.zeros(y.shape, dtype=np.int32)
    win = np.empty(y.shape, dtype=bool)
    for k in range(1, g.offsets):
        v = xpad[(slice(None), slice(None)) + g.window(k // g.kw, k % g.kw)]
        np.greater(v, y, out=win)
        np.copyto(y, v, where=win)
        np.copyto(arg, np.int32(k), where=win)
    return y, arg


def max_pool2d_backward_numpy(argmax: np.ndarray, dy: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """dx of max pooling: for each window offset, dy where the argmax is that offset added into the strided view
    of dx it came from (one pass per offset, no (N, C, oh, ow, kh*kw) temporary)."""
    dxp = np.zeros((g.n, g.c, g.hp, g.wp), dtype=dy.dtype)
    share = np.empty(dy.shape, dtype=dy.dtype)
    for k in range(g.offsets):
        np.multiply(argmax == k, dy, out=share)
        dxp[(slice(None), slice(None)) + g.window(k // g.kw, k % g.kw)] += share
    return dxp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]


def _max_pool2d_forward(ctx: Context, x: np.ndarray, *, kernel_size: Any, stride: Any = None, padding: Any = 0,
                        dilation: Any = 1, ceil_mode: bool = False) -> Any:
    if _kernels_answer("max_pool2d", x.dtype) or x.dtype.kind != "f":
        return NotImplemented  # kernels (shim), or an error message from the reference
    g = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    y, ctx.argmax = max_pool2d_numpy(x, g)
    ctx.args = (tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
    ctx.geometry = g
    return y


def _max_pool2d_backward(ctx: Context, dy: Any) -> Any:
    g = ctx.__dict__.get("geometry")
    if g is None or type(dy) is not np.ndarray or ctx.create_graph or tuple(dy.shape) != (g.n, g.c, g.oh, g.ow) \
            or _kernels_answer("max_pool2d_backward", dy.dtype):
        return NotImplemented
    return max_pool2d_backward_numpy(ctx.argmax, dy, g)


register_override(Conv2d.name, "forward", "numpy", _conv2d_forward)
register_override(MaxPool2d.name, "forward", "numpy", _max_pool2d_forward)
register_override(MaxPool2d.name, "backward", "numpy", _max_pool2d_backward)
