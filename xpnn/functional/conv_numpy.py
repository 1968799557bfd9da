"""NumPy fast paths of the convolution and max-pooling ops, registered as overrides of their declarations
(``xpnn.autograd.register_override``; kind ``"numpy"``). Each computes what the declaration computes and fills the
same context, so the declaration's backward (or the backward override here) follows either forward.

- ``conv2d`` forward: the column tensor from a ``sliding_window_view`` of the padded input, copied once (the
  reference stacks kh*kw strided slices);
- ``conv2d`` backward: dx accumulated channels-last (``conv2d_input_grad_numpy``), dW/db as the reference;
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
from .conv import Conv2d, Conv2dGeometry, conv2d_backward, conv2d_geometry, im2col
from .pooling import MaxPool2d, first_inbounds_offset, pool2d_geometry, window_max

__all__ = ["im2col_numpy", "conv2d_input_grad_numpy", "max_pool2d_numpy", "max_pool2d_backward_numpy"]


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


# N * C_in/groups from which dx is accumulated channels-last (measured at LeNet sizes: N*C = 64 (one input channel)
# is 1.5x slower channels-last, N*C = 384 1.4x faster)
CHANNELS_LAST_MIN = 256


def conv2d_input_grad_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry, groups: int) -> np.ndarray:
    """dx of ``conv2d`` for dy (N, C_out, oh, ow): per group and kernel offset (i, j), the product
    ``dy (oh*ow*N, C_out/G) @ W[:, :, i, j] (C_out/G, C_in/G)`` (one batched matmul over the offsets) added into the
    strided window view of a channels-last (H, W, N, C) dx. Channels-last makes each addition run over contiguous
    N*C blocks; the reference's NCHW ``col2im`` adds rows of only ow contiguous values (3x slower at LeNet sizes)."""
    c_out = weight.shape[0]
    cog, cg = c_out // groups, g.c // groups
    dyt = np.ascontiguousarray(dy.transpose(2, 3, 0, 1))  # (oh, ow, N, C_out)
    dxp = np.zeros((g.hp, g.wp, g.n, g.c), dtype=dy.dtype)
    for gi in range(groups):
        wk = weight[gi * cog:(gi + 1) * cog].transpose(2, 3, 0, 1).reshape(g.offsets, cog, cg)  # (K, C_out/G, C_in/G)
        dyg = dyt[..., gi * cog:(gi + 1) * cog].reshape(-1, cog)
        parts = np.matmul(dyg, wk).reshape(g.offsets, g.oh, g.ow, g.n, cg)
        for k in range(g.offsets):
            hs, ws = g.window(k // g.kw, k % g.kw)
            dxp[hs, ws, :, gi * cg:(gi + 1) * cg] += parts[k]
    return np.ascontiguousarray(dxp[g.pt:g.pt + g.h, g.pl:g.pl + g.w].transpose(2, 3, 0, 1))


def _conv2d_backward(ctx: Context, dy: Any) -> Any:
    if type(dy) is not np.ndarray or ctx.create_graph or _kernels_answer("col2im", dy.dtype):
        return NotImplemented
    x, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    stride, padding, dilation, groups = ctx.params
    _, dw, db = conv2d_backward(x, weight, dy, *ctx.params, cols=ctx.cols, need_input_grad=False,
                                need_bias_grad=ctx.has_bias and len(need) > 2 and need[2])
    dx = None
    if need[0]:
        g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        if g.n * (g.c // groups) >= CHANNELS_LAST_MIN:
            dx = conv2d_input_grad_numpy(weight, dy, g, groups)
        else:  # short channels-last rows (e.g. one input channel): the reference's NCHW col2im is faster
            dx = conv2d_backward(x, weight, dy, *ctx.params, cols=ctx.cols, need_bias_grad=False)[0]
    return dx, (dw if need[1] else None), db


def max_pool2d_numpy(x: np.ndarray, g: Conv2dGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax int32) of max pooling: a running maximum over the kh*kw strided views of the (-inf) padded input
    (3 elementwise passes per offset), the argmax updated where a view wins. Input with a NaN (rare; one sum finds
    it) is left to the reference, which makes the NaN win its window. A window of only -inf (padding included)
    picks its first in-bounds element, as the reference (``pooling.window_max``)."""
    with np.errstate(invalid="ignore"):  # +inf + -inf is NaN too, without a warning
        any_nan = np.isnan(x.sum())
    if any_nan:  # a NaN (or +inf and -inf) somewhere: `greater` would skip it, the reference does not
        return window_max(np, im2col(x, g, pad_value=-math.inf).reshape(g.n, g.c, g.offsets, g.oh, g.ow), g)
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
    if g.pt or g.pl:  # only top/left padding can come first in a window (every window starts in it or the input)
        np.copyto(arg, first_inbounds_offset(np, g), where=y == -np.inf)
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
register_override(Conv2d.name, "backward", "numpy", _conv2d_backward)
register_override(MaxPool2d.name, "forward", "numpy", _max_pool2d_forward)
register_override(MaxPool2d.name, "backward", "numpy", _max_pool2d_backward)
