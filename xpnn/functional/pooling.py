"""2-D pooling (NCHW) with PyTorch's arguments and output sizes: ``max_pool2d``, ``avg_pool2d``,
``adaptive_avg_pool2d`` and their backwards.

Output size (``torch.nn.MaxPool2d`` docs): ``OH = floor_or_ceil((H + 2*pad - dilation*(k-1) - 1) / stride) + 1``;
with ``ceil_mode`` the last window must start inside the input or the left padding (else OH -= 1). Padding is at
most half the kernel. Windows are the column tensor of ``conv.im2col`` (padded with -inf for max, 0 for average).
Max: the first maximum of each window wins, a NaN propagates (the last NaN wins), and a window of only -inf picks its
first in-bounds element, never padding (all as PyTorch); backward routes dy to the winner.
Average: the divisor is the window clipped to the padded input (``count_include_pad``) or to the input itself.
Adaptive average: output cell o covers rows ``floor(o*H/OH) .. ceil((o+1)*H/OH)``; written as ``A_h @ x @ A_w.T``
with averaging matrices, so backward is ``A_h.T @ dy @ A_w``.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import namespace_of
from ..errors import ShapeError
from . import _checks
from .conv import (Conv2dGeometry, IntPair, col2im, im2col, is_unbatched_image, no_higher_order, pair_arg,
                   per_sample)

__all__ = ["pool2d_geometry", "window_max", "first_inbounds_offset", "max_pool2d", "max_pool2d_with_argmax",
           "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
           "adaptive_avg_pool2d_backward"]


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window would start in the right padding
        out -= 1
    return out


def pool2d_geometry(x_shape: Sequence[int], kernel_size: IntPair, stride: Optional[IntPair], padding: IntPair,
                    dilation: IntPair, ceil_mode: bool, where: str) -> Conv2dGeometry:
    """Validate pooling arguments for input of ``x_shape`` (N, C, H, W); ``stride=None`` means ``kernel_size``."""
    if len(x_shape) != 4:
        raise ShapeError(f"{where}: expected 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    kh, kw = pair_arg(kernel_size, "kernel_size", where)
    sh, sw = (kh, kw) if stride is None else pair_arg(stride, "stride", where)
    ph, pw = pair_arg(padding, "padding", where, minimum=0)
    dh, dw = pair_arg(dilation, "dilation", where)
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{where}: padding should be at most half of the kernel size, got padding={padding!r} "
                         f"for kernel_size={kernel_size!r}")
    oh, ow = _pool_out(h, kh, sh, ph, dh, ceil_mode), _pool_out(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ShapeError(f"{where}: input of shape {tuple(x_shape)} is too small for kernel {(kh, kw)} "
                         f"(dilation {(dh, dw)}, padding {(ph, pw)}): output would be {oh}x{ow}")
    # bottom/right padding: at least the symmetric one, more when ceil_mode lets the last window run past it
    pb = max(ph, (oh - 1) * sh + dh * (kh - 1) + 1 - h - ph)
    pr = max(pw, (ow - 1) * sw + dw * (kw - 1) + 1 - w - pw)
    return Conv2dGeometry(n, c, h, w, kh, kw, sh, sw, dh, dw, ph, pb, pw, pr, oh, ow)


def _input(x: Any, where: str) -> Any:
    xp = namespace_of(x, where=where)
    _checks.floating(xp, x, where)
    return xp


def _grad(xp: Any, dy: Any, g: Conv2dGeometry, where: str) -> None:
    if tuple(dy.shape) != (g.n, g.c, g.oh, g.ow):
        raise ShapeError(f"{where}: dy must have shape {(g.n, g.c, g.oh, g.ow)}, got {tuple(dy.shape)}")
    _checks.floating(xp, dy, where, "dy")


# ---- max ----------------------------------------------------------------------------------------------------------

def max_pool2d_with_argmax(x: Any, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                           dilation: IntPair = 1, ceil_mode: bool = False) -> tuple[Any, Any]:
    """``(y, argmax)``: y (N, C, OH, OW) the window maxima, argmax (N, C, OH, OW) int32 the winning offset
    ``i * kW + j`` inside each window (what ``max_pool2d_backward`` needs)."""
    xp = _input(x, "max_pool2d")
    g = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    kernel = _dispatch.lookup(registry.MAX_POOL2D, xp, x.dtype)
    if kernel is not None:
        out = kernel(x, g)
        if out is not NotImplemented:
            return out
    return window_max(xp, xp.reshape(im2col(x, g, pad_value=-math.inf), (g.n, g.c, g.offsets, g.oh, g.ow)), g)


def first_inbounds_offset(xp: Any, g: Conv2dGeometry) -> Any:
    """(OH, OW) int32: the offset ``i * kW + j`` of each window's first element inside the input (not padding);
    0 for a window that has none (dilation can step over a small input)."""
    def first(out: int, k: int, s: int, d: int, pad: int, size: int) -> Any:
        pos = xp.arange(out, dtype=xp.int32)[:, None] * s + xp.arange(k, dtype=xp.int32)[None, :] * d - pad
        inside = xp.logical_and(pos >= 0, pos < size)
        return xp.astype(xp.argmax(xp.astype(inside, xp.int32), axis=1), xp.int32)

    fi = first(g.oh, g.kh, g.sh, g.dh, g.pt, g.h)
    fj = first(g.ow, g.kw, g.sw, g.dw, g.pl, g.w)
    return fi[:, None] * g.kw + fj[None, :]


def window_max(xp: Any, cols: Any, g: Conv2dGeometry) -> tuple[Any, Any]:
    """(y, argmax int32) over the window axis 2 of ``cols`` (N, C, kH*kW, OH, OW), padding = -inf, with PyTorch's
    choice of the winner (``max_pool2d_with_indices``: ``val > maxval || isnan(val)`` from the window's first
    in-bounds element): the first maximum; the last NaN of a window that has one (max propagates NaN); and a window
    of only -inf (padding included) picks its first in-bounds element, never the padding (pytorch#23161), so backward
    routes dy into the input."""
    y = xp.max(cols, axis=2)
    arg = xp.astype(xp.argmax(cols, axis=2), xp.int32)  # the first maximum (NumPy/CuPy: the first NaN)
    nan = xp.astype(xp.isnan(cols), xp.int32)
    last_nan = (g.offsets - 1) - xp.astype(xp.argmax(xp.flip(nan, axis=2), axis=2), xp.int32)
    arg = xp.where(xp.isnan(y), last_nan, arg)
    return y, xp.where(y == -math.inf, first_inbounds_offset(xp, g), arg)


class MaxPool2d(Op):
    """``max_pool2d`` declared once: forward keeps the argmax, backward routes dy to it. The NumPy override lives in
    ``conv_numpy``; CuPy arrays take the ``max_pool2d``/``max_pool2d_backward`` kernels (looked up inside
    ``max_pool2d_with_argmax``/``max_pool2d_backward``)."""

    name = "max_pool2d"

    @staticmethod
    def forward(ctx: Context, x: Any, *, kernel_size: IntPair, stride: Optional[IntPair] = None,
                padding: IntPair = 0, dilation: IntPair = 1, ceil_mode: bool = False) -> Any:
        y, ctx.argmax = max_pool2d_with_argmax(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.args = (tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
        return y

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        no_higher_order(ctx, "max_pool2d")
        return max_pool2d_backward(ctx.argmax, dy, *ctx.args)

    @staticmethod
    def onnx(g: Any, x: str, *, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
             dilation: IntPair = 1, ceil_mode: bool = False) -> str:
        """``MaxPool`` with the geometry's pads, which already hold the extra bottom/right of ``ceil_mode`` (so
        the floor rule gives PyTorch's output size, a last window starting in the padding included)."""
        geo = pool2d_geometry(g.shape(x), kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
        return g.op("MaxPool", x, kernel_shape=[geo.kh, geo.kw], strides=[geo.sh, geo.sw],
                    dilations=[geo.dh, geo.dw], pads=[geo.pt, geo.pl, geo.pb, geo.pr])


def max_pool2d(x: Any, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
               dilation: IntPair = 1, ceil_mode: bool = False) -> Any:
    """Max over sliding windows, like ``torch.nn.functional.max_pool2d``: (N, C, H, W) -> (N, C, OH, OW), one
    unbatched sample (C, H, W) -> (C, OH, OW). Arrays or Tensors (then recorded)."""
    if is_unbatched_image(x, "max_pool2d"):
        return per_sample(MaxPool2d.apply, x, kernel_size=kernel_size, stride=stride, padding=padding,
                          dilation=dilation, ceil_mode=ceil_mode)
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                           ceil_mode=ceil_mode)


def max_pool2d_backward(argmax: Any, dy: Any, input_shape: Sequence[int], kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0, dilation: IntPair = 1,
                        ceil_mode: bool = False) -> Any:
    """dx (``input_shape``): each dy entry added to the input pixel that won its window (``argmax``)."""
    xp = namespace_of(argmax, dy, where="max_pool2d_backward")
    g = pool2d_geometry(input_shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d_backward")
    _grad(xp, dy, g, "max_pool2d_backward")
    if tuple(argmax.shape) != tuple(dy.shape):
        raise ShapeError(f"max_pool2d_backward: argmax must have the shape of dy {tuple(dy.shape)}, "
                         f"got {tuple(argmax.shape)}")
    kernel = _dispatch.lookup(registry.MAX_POOL2D_BACKWARD, xp, dy.dtype)
    if kernel is not None:
        out = kernel(argmax, dy, g)
        if out is not NotImplemented:
            return out
    offsets = xp.reshape(xp.arange(g.offsets, dtype=argmax.dtype), (1, 1, g.offsets, 1, 1))
    hit = argmax[:, :, None, :, :] == offsets
    dcols = xp.where(hit, dy[:, :, None, :, :], xp.zeros((), dtype=dy.dtype))
    return col2im(xp.reshape(dcols, (g.n, g.c, g.kh, g.kw, g.oh, g.ow)), g)


# ---- average ------------------------------------------------------------------------------------------------------

def _avg_divisor(xp: Any, g: Conv2dGeometry, count_include_pad: bool, dtype: Any) -> Any:
    """(OH, OW) divisors as ``torch.nn.AvgPool2d``: the window clipped to the padded input (count_include_pad) or
    to the input itself."""
    def counts(o: int, k: int, s: int, p: int, size: int) -> tuple[Any, Any]:
        start = xp.arange(o, dtype=xp.int64) * s - p
        end = xp.minimum(start + k, xp.full_like(start, size + p))
        padded = end - start
        valid = xp.minimum(end, xp.full_like(end, size)) - xp.maximum(start, xp.zeros_like(start))
        return padded, valid

    ph_, vh = counts(g.oh, g.kh, g.sh, g.pt, g.h)
    pw_, vw = counts(g.ow, g.kw, g.sw, g.pl, g.w)
    hh, ww = (ph_, pw_) if count_include_pad else (vh, vw)
    return xp.astype(hh[:, None] * ww[None, :], dtype)


def _avg_geometry(x_shape: Sequence[int], kernel_size: IntPair, stride: Optional[IntPair], padding: IntPair,
                  ceil_mode: bool, where: str) -> Conv2dGeometry:
    return pool2d_geometry(x_shape, kernel_size, stride, padding, 1, ceil_mode, where)


class AvgPool2d(Op):
    name = "avg_pool2d"

    @staticmethod
    def forward(ctx: Context, x: Any, **params: Any) -> Any:
        ctx.shape, ctx.params = tuple(x.shape), params
        return _avg_pool2d(x, **params)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        no_higher_order(ctx, "avg_pool2d")
        return avg_pool2d_backward(dy, ctx.shape, **ctx.params)

    @staticmethod
    def onnx(g: Any, x: str, **params: Any) -> str:
        """Zero ``Pad``, ``AveragePool`` (the window sum / kH*kW), then a ``Mul`` by kH*kW / PyTorch's divisor
        (``_avg_divisor``) where the two differ (padding left out of the count, ceil_mode's partial windows)."""
        geo = _avg_geometry(g.shape(x), params.get("kernel_size"), params.get("stride"), params.get("padding", 0),
                            params.get("ceil_mode", False), "avg_pool2d")
        padded = x
        if any((geo.pt, geo.pl, geo.pb, geo.pr)):
            padded = g.op("Pad", x, g.ints([0, 0, geo.pt, geo.pl, 0, 0, geo.pb, geo.pr]), mode="constant")
        y = g.op("AveragePool", padded, kernel_shape=[geo.kh, geo.kw], strides=[geo.sh, geo.sw])
        divisor = _avg_divisor(np, geo, params.get("count_include_pad", True), np.float64)
        if (divisor == geo.kh * geo.kw).all():
            return y
        return g.op("Mul", y, g.const(geo.kh * geo.kw / divisor, dtype=x))


def avg_pool2d(x: Any, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True) -> Any:
    """Mean over sliding windows, like ``torch.nn.functional.avg_pool2d``: (N, C, H, W) -> (N, C, OH, OW), one
    unbatched sample (C, H, W) -> (C, OH, OW). Arrays or Tensors (then recorded)."""
    if is_unbatched_image(x, "avg_pool2d"):
        return per_sample(AvgPool2d.apply, x, kernel_size=kernel_size, stride=stride, padding=padding,
                          ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    return AvgPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad)


def _avg_pool2d(x: Any, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                ceil_mode: bool = False, count_include_pad: bool = True) -> Any:
    xp = _input(x, "avg_pool2d")
    g = _avg_geometry(x.shape, kernel_size, stride, padding, ceil_mode, "avg_pool2d")
    cols = xp.reshape(im2col(x, g), (g.n, g.c, g.offsets, g.oh, g.ow))
    return xp.sum(cols, axis=2) / _avg_divisor(xp, g, count_include_pad, x.dtype)


def avg_pool2d_backward(dy: Any, input_shape: Sequence[int], kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True) -> Any:
    """dx (``input_shape``): each dy entry divided by its window's divisor and added to every pixel of the window."""
    xp = namespace_of(dy, where="avg_pool2d_backward")
    g = _avg_geometry(input_shape, kernel_size, stride, padding, ceil_mode, "avg_pool2d_backward")
    _grad(xp, dy, g, "avg_pool2d_backward")
    share = dy / _avg_divisor(xp, g, count_include_pad, dy.dtype)
    dcols = xp.broadcast_to(share[:, :, None, None, :, :], (g.n, g.c, g.kh, g.kw, g.oh, g.ow))
    return col2im(dcols, g)


# ---- adaptive average ---------------------------------------------------------------------------------------------

def adaptive_output_size(x_shape: Sequence[int], output_size: Union[int, None, Sequence[Optional[int]]],
                         where: str = "adaptive_avg_pool2d") -> tuple[int, int]:
    """``output_size`` (int, pair, entries None = keep the input size) -> (OH, OW), validated."""
    if len(x_shape) != 4:
        raise ShapeError(f"{where}: expected 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    h, w = int(x_shape[2]), int(x_shape[3])
    if output_size is None or isinstance(output_size, int):
        pair: tuple[Any, Any] = (output_size, output_size)
    else:
        pair = tuple(output_size)  # type: ignore[assignment]
        if len(pair) != 2:
            raise ValueError(f"{where}: output_size must be an int or a pair, got {output_size!r}")
    out = (h if pair[0] is None else pair[0], w if pair[1] is None else pair[1])
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in out):
        raise ValueError(f"{where}: output_size must hold positive integers (or None), got {output_size!r}")
    if h < 1 or w < 1:
        raise ShapeError(f"{where}: empty input of shape {tuple(x_shape)}")
    return out


def _adaptive_matrix(xp: Any, out: int, size: int, dtype: Any) -> Any:
    """(out, size) averaging matrix: row o is 1/len over ``floor(o*size/out) .. ceil((o+1)*size/out)``."""
    o = xp.arange(out, dtype=xp.int64)
    start = (o * size) // out
    end = -((-(o + 1) * size) // out)
    cols = xp.arange(size, dtype=xp.int64)
    inside = xp.logical_and(cols[None, :] >= start[:, None], cols[None, :] < end[:, None])
    return xp.astype(inside, dtype) / xp.astype(end - start, dtype)[:, None]


class AdaptiveAvgPool2d(Op):
    name = "adaptive_avg_pool2d"

    @staticmethod
    def forward(ctx: Context, x: Any, *, output_size: Union[int, None, Sequence[Optional[int]]]) -> Any:
        ctx.shape, ctx.output_size = tuple(x.shape), output_size
        return _adaptive_avg_pool2d(x, output_size)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        no_higher_order(ctx, "adaptive_avg_pool2d")
        return adaptive_avg_pool2d_backward(dy, ctx.shape, ctx.output_size)

    @staticmethod
    def onnx(g: Any, x: str, *, output_size: Union[int, None, Sequence[Optional[int]]]) -> str:
        """``A_h @ x @ A_w.T`` with the averaging matrices as constants (exact for every output size)."""
        shape = g.shape(x)
        oh, ow = adaptive_output_size(shape, output_size)
        if (oh, ow) == (1, 1):
            return g.op("GlobalAveragePool", x)
        ah = _adaptive_matrix(np, oh, int(shape[2]), np.float64)
        aw = _adaptive_matrix(np, ow, int(shape[3]), np.float64)
        return g.op("MatMul", g.op("MatMul", g.const(ah, dtype=x), x), g.const(aw.T, dtype=x))


def adaptive_avg_pool2d(x: Any, output_size: Union[int, None, Sequence[Optional[int]]]) -> Any:
    """Average pooling to a fixed output size, like ``torch.nn.functional.adaptive_avg_pool2d``:
    (N, C, H, W) -> (N, C, OH, OW), one unbatched sample (C, H, W) -> (C, OH, OW). Arrays or Tensors (then
    recorded)."""
    if is_unbatched_image(x, "adaptive_avg_pool2d"):
        return per_sample(AdaptiveAvgPool2d.apply, x, output_size=output_size)
    return AdaptiveAvgPool2d.apply(x, output_size=output_size)


def _adaptive_avg_pool2d(x: Any, output_size: Union[int, None, Sequence[Optional[int]]]) -> Any:
    xp = _input(x, "adaptive_avg_pool2d")
    oh, ow = adaptive_output_size(x.shape, output_size)
    ah = _adaptive_matrix(xp, oh, int(x.shape[2]), x.dtype)
    aw = _adaptive_matrix(xp, ow, int(x.shape[3]), x.dtype)
    return xp.matmul(xp.matmul(ah, x), xp.matrix_transpose(aw))


def adaptive_avg_pool2d_backward(dy: Any, input_shape: Sequence[int],
                                 output_size: Union[int, None, Sequence[Optional[int]]]) -> Any:
    """dx (``input_shape``) = ``A_h.T @ dy @ A_w``."""
    xp = namespace_of(dy, where="adaptive_avg_pool2d_backward")
    oh, ow = adaptive_output_size(input_shape, output_size, "adaptive_avg_pool2d_backward")
    n, c, h, w = (int(s) for s in input_shape)
    if tuple(dy.shape) != (n, c, oh, ow):
        raise ShapeError(f"adaptive_avg_pool2d_backward: dy must have shape {(n, c, oh, ow)}, "
                         f"got {tuple(dy.shape)}")
    ah = _adaptive_matrix(xp, oh, h, dy.dtype)
    aw = _adaptive_matrix(xp, ow, w, dy.dtype)
    return xp.matmul(xp.matmul(xp.matrix_transpose(ah), dy), aw)
