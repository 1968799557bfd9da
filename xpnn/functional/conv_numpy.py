"""NumPy fast paths of the convolution and max-pooling ops, registered as overrides of their declarations
(``xpnn.autograd.register_override``; kind ``"numpy"``). Each computes what the declaration computes and fills the
same context, so the declaration's backward (or the backward override here) follows either forward.

- ``conv2d`` forward, stride 1 with >= ``SHIFT_MIN_CHANNELS`` channels per group (e.g. 3x3 64->64): no column
  tensor; kw shifted copies of the padded input, one GEMM per sample giving each kernel row's partial sums and a
  kh-way shifted sum (``shift_add_product``, "kn2row"); dW from kh shifted copies of dy's plane, one GEMM per
  sample (``conv2d_weight_grad_shift_numpy``); dx as the transposed convolution by the same product;
- ``conv2d`` 3x3, stride 1, dilation 1, groups 1, padding <= 2, >= ``WINOGRAD_MIN_CHANNELS`` channels and
  ``WINOGRAD_MIN_TILES`` output tiles per sample, with the compiled CPU kernels (``winograd_apply``): Winograd
  F(2x2, 3x3) (``winograd_conv``: compiled tile transforms, 16 batched GEMMs per block of samples, 2.25x fewer
  products than the shift path); dx as the transposed convolution by the same routine; dW from the forward's
  transformed input (``winograd_weight_grad``). Another algorithm, so other rounding (within a few ulps of the sums of
  |terms|); where an output or dW is not finite (an inf/NaN spreads over a tile), it is recomputed by the shift path;
- ``conv2d`` forward otherwise (few channels, e.g. LeNet; strides): the column tensor from a strided view of the
  padded input (the reference stacks kh*kw strided slices), with stride 1 in height copied in two passes with long
  runs (kernel-column shifted rows, then the columns); backward: dW/db as the reference; dx as a forward
  convolution of dy with the flipped kernel for stride 1 where its columns are no larger
  (``conv2d_input_grad_transposed_numpy``), else accumulated batch-last for stride 1
  (``conv2d_input_grad_batch_last_numpy``) or channels-last (``conv2d_input_grad_numpy``), or, for short channel
  rows, by the two-pass transpose of the forward's copies (``conv2d_input_grad_rows_numpy``) or the reference's
  NCHW ``col2im``;
- ``max_pool2d`` forward: a running maximum over the kh*kw strided views (the reference builds the column tensor
  and takes ``argmax`` over its window axis, which NumPy does slowly for short axes);
- ``max_pool2d`` backward: per window offset, dy where the argmax is that offset added into the strided view of dx
  (written directly, without a zeroed accumulator, when the windows tile the input exactly).
- ``max_pool2d`` forward and backward, where the compiled CPU kernels apply (``cpu_kernels.max_pool2d``,
  ``cpu_kernels.max_pool2d_backward``): one compiled call per batch chunk, with the NumPy passes' results bit for bit.

Scratch (padded and shifted copies, the column tensor, matmul outputs, accumulators, masks) comes from
``_workspace``: buffers recycled across calls once nothing references them, so a steady-state training step does
not allocate (and page-fault) them again each step. Outputs handed to the caller are fresh arrays, workspace buffers
(max-pooling's output and input gradient) or views of one: the caller's reference keeps the buffer out of reuse until
dropped.

Threads (``cpu_threads``): the column-free path's per-sample loops (copies, products, dW accumulation) and, from
``CHUNK_MIN_ELEMENTS`` of work per chunk, the im2col path and max pooling run split over the batch, one contiguous
chunk of samples per thread (each chunk's columns and argmax kept for its backward; dW summed over the chunks in
chunk order, so it depends on the thread count only in rounding). Smaller layers (LeNet's) run whole.

The column-free path's copies and shifted sums run as compiled loops where ``cpu_kernels`` has them (one call per
sample, the same values as the NumPy passes here, which run otherwise).

Compiled CPU kernels (``cpu_kernels``, kernels/cpu/im2col.cpp), where built and on: the im2col path's column
tensor in one call, and each scatter dx path's col2im in gather form (every dx row zeroed, its terms added in the
NumPy scatter's order, stored in NCHW: no padded accumulator, no strided passes, no transpose), one call per chunk
of a split backward; the same values as the NumPy passes bit for bit (NaN where they have NaN). The GEMMs stay
NumPy's.

When a kernel provider answers for NumPy arrays (the CPU shim in tests), each returns ``NotImplemented`` so the
kernels run.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from .. import _dispatch
from .._cuda import registry
from . import _workspace, cpu_kernels, cpu_threads
from ..autograd.op import Context, register_override
from .conv import Conv2d, Conv2dGeometry, conv2d_geometry, im2col
from .pooling import MaxPool2d, first_inbounds_offset, pool2d_geometry, window_max

__all__ = ["im2col_numpy", "conv2d_input_grad_numpy", "conv2d_input_grad_rows_numpy",
           "conv2d_input_grad_batch_last_numpy", "max_pool2d_numpy", "max_pool2d_backward_numpy"]


def _kernels_answer(op: Any, dtype: Any) -> bool:
    return _dispatch.lookup(op, np, dtype) is not None


# elements (of the largest array a sample's work touches) from which a chunk of the batch is worth a thread of its
# own (about 1 ms of work): a split costs ~30-100 us of thread hand-off and, within ~0.1 s of a product that OpenBLAS
# ran on two threads, shares the second core with OpenBLAS's idle thread, which spins that long before it sleeps.
# LeNet's layers (batch 64: 0.3-1.3 M elements per layer) stay whole: split, its step was no faster (2 cores,
# 2026-12-06); 3x3 64->64 at 32x32, batch 32 (6.9 M) splits in two
CHUNK_MIN_ELEMENTS = 1 << 20


def _min_chunk(per_sample: int) -> int:
    """Samples per chunk for ``per_sample`` elements of work each (``CHUNK_MIN_ELEMENTS`` per chunk at least)."""
    return -(-CHUNK_MIN_ELEMENTS // max(per_sample, 1))


def _split(n: int, per_sample: int) -> bool:
    """Whether a batch of n samples of ``per_sample`` elements of work each runs in more than one chunk."""
    return cpu_threads.planned_chunks(n, _min_chunk(per_sample)) > 1


def _batch_chunks(n: int, per_sample: int, fn: Any) -> list[tuple[int, int, Any]]:
    """``[(lo, hi, fn(lo, hi))]`` over contiguous chunks of a batch of n samples in order, the chunks run at once on
    ``cpu_threads`` (one chunk when the threads are 1, another split is running, or the batch's work is small:
    ``per_sample`` elements each, at least ``CHUNK_MIN_ELEMENTS`` per chunk)."""
    out: list[tuple[int, int, Any]] = []
    cpu_threads.parallel_for(n, lambda lo, hi: out.append((lo, hi, fn(lo, hi))), _min_chunk(per_sample))
    out.sort(key=lambda t: t[0])
    return out


def _padded(x: np.ndarray, g: Conv2dGeometry, value: float, tag: str) -> np.ndarray:
    """x (N, C, H, W) inside a recycled (N, C, hp, wp) buffer whose border holds ``value`` (x itself unpadded)."""
    if not (g.pt or g.pb or g.pl or g.pr):
        return x
    xpad = _workspace.buffer(tag, (g.n, g.c, g.hp, g.wp), x.dtype)
    top, left = g.pt + g.h, g.pl + g.w
    xpad[:, :, :g.pt] = value
    xpad[:, :, top:] = value
    xpad[:, :, g.pt:top, :g.pl] = value
    xpad[:, :, g.pt:top, left:] = value
    xpad[:, :, g.pt:top, g.pl:left] = x
    return xpad


def im2col_numpy(x: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """``conv.im2col`` for NumPy arrays (zero padding): a strided view of every window, copied into a recycled
    (N, C, kh, kw, oh, ow) buffer (kept out of reuse while the caller, e.g. a saved autograd context, holds it).
    With stride 1 in height, in two copies (``_column_rows``) whose inner runs are oh*ow values instead of ow; with
    the compiled kernels, ``cpu_kernels.im2col`` (no padded copy; 0.34 against 0.47 ms at LeNet's first layer, 0.39
    against 0.46 ms at its second, batch 64, float32, 1 thread, 2026-12-06)."""
    cols = _workspace.buffer("conv2d.cols", (g.n, g.c, g.kh, g.kw, g.oh, g.ow), x.dtype)
    if cpu_kernels.im2col(x, cols, g):  # one compiled pass over the columns, no padded copy
        return cols
    xpad = _padded(x, g, 0.0, "conv2d.pad")
    if g.sh == 1:
        rows = _workspace.buffer("conv2d.col_rows", (g.n, g.c, g.kw, g.hp, g.ow), x.dtype)
        s = xpad.strides  # rows[n, c, j, h, q] = xpad[n, c, h, j*dw + q*sw]
        np.copyto(rows, as_strided(xpad, shape=rows.shape, strides=(s[0], s[1], g.dw * s[3], s[2], g.sw * s[3]),
                                   writeable=False))
        np.copyto(cols, _row_windows(rows, g))
    else:
        np.copyto(cols, _windows(xpad, g))
    return cols


def _row_windows(rows: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """The (N, C, kh, kw, oh, ow) view ``cols[n, c, i, j, p, q] = rows[n, c, j, i*dh + p, q]`` of kernel-column
    shifted rows (N, C, kw, hp, ow) (stride 1 in height): for each (n, c, i, j), oh*ow contiguous values."""
    s = rows.strides
    return as_strided(rows, shape=(g.n, g.c, g.kh, g.kw, g.oh, g.ow),
                      strides=(s[0], s[1], g.dh * s[3], s[2], s[3], s[4]), writeable=False)


def _windows(xpad: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """The (N, C, kh, kw, oh, ow) strided view of every window of the padded input (no copy)."""
    win = sliding_window_view(xpad, (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1), axis=(2, 3))
    win = win[:, :, :g.sh * (g.oh - 1) + 1:g.sh, :g.sw * (g.ow - 1) + 1:g.sw, ::g.dh, ::g.dw]
    return win.transpose(0, 1, 4, 5, 2, 3)


def shift_geometry(g: Conv2dGeometry) -> Conv2dGeometry:
    """g with the right padding cut by ``min(pl, pr, dw*(kw-1))``: the plane pitch (wp) of the column-free path.
    In a flat plane a row's right padding runs on into the next row's left padding, so ``max(pl, pr)`` zero
    columns between two rows serve both (every padded position a window reads, ``(r, c)`` at ``r*wp + c``, is
    still an input value or a zero, a window's last one past the plane's end at most, which ``padded_shifts``
    zeroes); at most ``dw*(kw-1)`` so that dy's (oh, ow) rows fit the pitch (dW). 3x3 "same": 33 columns instead
    of 34, 3% fewer products in each of the three GEMMs (oh, ow unchanged)."""
    return dataclasses.replace(g, pr=g.pr - min(g.pl, g.pr, g.dw * (g.kw - 1)))


def padded_shifts(src: np.ndarray, g: Conv2dGeometry, tag: str) -> np.ndarray:
    """src (N, C, H, W) zero-padded and shifted by each kernel column, in a recycled (N, C, kw, hp*wp) buffer:
    ``X[n, c, j, t] = xpad[n, c].flat[t + j*dw]`` (0 past the plane's end). ``X[:, :, 0]`` is the padded input;
    kw shifted planes instead of im2col's kh*kw (``shift_add_product`` sums the kernel rows). Built one sample at a
    time so the shifted copies read the padded plane from cache (1.6x faster than whole-batch passes at 3x3 64->64,
    32x32), the padding by zeroing the whole plane first (no narrow border writes)."""
    plane = g.hp * g.wp
    xs = _workspace.buffer(tag, (g.n, g.c, g.kw, plane), src.dtype)

    compiled = cpu_kernels.shift_planes_fn(xs, src, g.pt, g.pl, g.wp, g.dw)

    def fill(lo: int, hi: int) -> None:
        if compiled is not None:  # the chunk in one compiled pass
            compiled(lo, hi)
            return
        for n in range(lo, hi):
            _fill_shifts(xs[n], src[n], g)

    cpu_threads.parallel_for(g.n, fill, _min_chunk(g.c * g.kw * plane))
    return xs


def _fill_shifts(xn: np.ndarray, sn: np.ndarray, g: Conv2dGeometry) -> None:
    """One sample of ``padded_shifts``: xn (C, kw, hp*wp) from sn (C, H, W)."""
    plane = g.hp * g.wp
    xn[:, 0].fill(0)
    xn[:, 0].reshape(g.c, g.hp, g.wp)[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = sn
    for j in range(1, g.kw):
        s = j * g.dw  # < wp <= hp*wp
        xn[:, j, :plane - s] = xn[:, 0, s:]
        xn[:, j, plane - s:] = 0


def shift_add_product(weight: np.ndarray, xs: np.ndarray, g: Conv2dGeometry, groups: int,
                      bias: Optional[np.ndarray], tag: str, src: Optional[np.ndarray] = None) -> np.ndarray:
    """Stride-1 convolution by weight (C_out, C/groups, kh, kw) from ``padded_shifts`` xs, without columns
    ("kn2row" over kernel rows; Vasudevan et al. 2017, "Parallel multi channel convolution using general matrix
    multiplication"): per sample one GEMM gives every kernel row's partial sums over the whole padded plane,
    ``z[gi, (i, o), t] = sum_{c,j} W[gi*C_out/G + o, c, i, j] xs[n, gi*C/G + c, j, t]``, and
    ``y[n, o, p, q] = sum_i z[(i, o), (p + i*dh)*wp + q]``: kh-1 additions of strided views of z while it is in
    cache, written into y, plus bias. g: ``shift_geometry``'s (or the full padding's) geometry, as xs was built
    with. ``src``: the (N, C, H, W) input from which each sample's planes are built into xs just before its
    product (``padded_shifts`` one sample at a time, read by the product from cache; ~10% of the forward at 3x3
    64->64); None: xs holds them already. Returns (N, C_out, oh, ow) in a recycled buffer (``_workspace``: reused
    once nothing references it)."""
    c_out = int(weight.shape[0])
    cog, cg = c_out // groups, g.c // groups
    plane = g.hp * g.wp
    w3 = np.ascontiguousarray(weight.reshape(groups, cog, cg, g.kh, g.kw).transpose(0, 3, 1, 2, 4))
    w3 = w3.reshape(groups, g.kh * cog, cg * g.kw)
    xg = xs.reshape(g.n, groups, cg * g.kw, plane)
    y = _workspace.buffer(tag, (g.n, groups, cog, g.oh, g.ow), xs.dtype)  # recycled: no fresh pages each call
    b4 = None if bias is None else bias.reshape(groups, cog, 1, 1)
    fill = None if src is None else cpu_kernels.shift_planes_fn(xs, src, g.pt, g.pl, g.wp, g.dw)

    def product(lo: int, hi: int) -> None:
        z = _workspace.buffer(tag + ".z", (groups, g.kh, cog, plane), xs.dtype)  # the running thread's own
        row_sum = cpu_kernels.shift_row_sum_fn(z, y, bias, g.wp, g.dh)  # the sums below in one compiled pass
        it = z.itemsize
        # shifted[gi, i, o, p, q] = z[gi, i, o, (p + i*dh)*wp + q]: every read inside z's plane
        shifted = as_strided(z, shape=(groups, g.kh, cog, g.oh, g.ow),
                             strides=(g.kh * cog * plane * it, (cog * plane + g.dh * g.wp) * it, plane * it,
                                      g.wp * it, it), writeable=False)
        with np.errstate(invalid="ignore"):  # inf - inf from non-finite inputs: NaN, silently, as the reference
            for n in range(lo, hi):
                if fill is not None:
                    fill(n, n + 1)
                elif src is not None:
                    _fill_shifts(xs[n], src[n], g)
                np.matmul(w3, xg[n], out=z.reshape(groups, g.kh * cog, plane))
                if row_sum is not None:
                    row_sum(n)
                    continue
                yn = y[n]  # sum_i shifted[:, i] in index order, as np.sum over that axis (one pass fewer)
                if g.kh == 1:
                    np.copyto(yn, shifted[:, 0])
                else:
                    np.add(shifted[:, 0], shifted[:, 1], out=yn)
                for i in range(2, g.kh):
                    yn += shifted[:, i]
                if b4 is not None:
                    yn += b4

    cpu_threads.parallel_for(g.n, product, _min_chunk(g.c * g.kw * plane))
    return y.reshape(g.n, c_out, g.oh, g.ow)


# C_in/groups and C_out/groups from which the shift-add products run. Measured (1 thread, forward + backward
# against im2col, 2026-12-06): 3x3 "same" at 32x32, batch 32: 0.76-0.89x the time at 8, 16, 32 and 64 channels;
# LeNet's 5x5 layers with 1 and 6 input channels (batch 64): 1.5-2.3x (per-sample products too small)
SHIFT_MIN_CHANNELS = 16


def shift_apply(g: Conv2dGeometry, c_out: int, groups: int) -> bool:
    """Whether the forward (and dW) take ``shift_add_product`` instead of im2col + GEMM: stride 1 and at least
    ``SHIFT_MIN_CHANNELS`` input and output channels per group."""
    return g.sh == g.sw == 1 and min(g.c, c_out) // groups >= SHIFT_MIN_CHANNELS


# Winograd F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"): per 2x2 output
# tile, y = A^T [(G g G^T) . (B^T d B)] A over the 4x4 input tile d, summed over input channels by 16 batched GEMMs
# (16, C_out, C_in) @ (16, C_in, tiles): 16 products per 4 outputs where the direct convolution takes 36 (2.25x
# fewer). The tile transforms are compiled (kernels/cpu/winograd.cpp), one call per block of samples.
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
#: C_in and C_out from which 3x3 stride-1 convolutions (forward, dx, dW) take the Winograd path (with the compiled
#: transforms only: NumPy passes for them took 21 ms for the input transform alone at 3x3 64->64, 32x32, batch 32,
#: float32, 1 thread, more than the shift path's whole forward, ~18 ms; so without the compiled kernels the shift path
#: runs). Measured forward + backward (dx, dW, db) through the tape, float32, batch 32, "same" padding, against the
#: shift path (separate processes, min of 8 steps, load ~2.2 from other jobs, 2026-12-06): default threads, 32x32:
#: 16 ch 6.9-8.3 against 9.4 ms, 32 ch 19.5 against 23.3 ms, 64 ch 57.7-62.5 against 72.3-78.4 ms; 24x24, 64 ch
#: 34.6 against 42.8 ms; one thread (OMP/OPENBLAS_NUM_THREADS=1), 32x32: 16 ch 8.2-8.8 against 8.6-9.6 ms, 64 ch
#: 64.3-65.5 against 78.0 ms. (Checked within ``shift_apply``'s channel rule: at least ``SHIFT_MIN_CHANNELS``.)
WINOGRAD_MIN_CHANNELS = 16
#: output tiles (2x2) per sample from which the Winograd path runs: small planes spend more on the transforms'
#: per-plane work than the products save (64 ch, default threads: 8x8 (16 tiles) 8.4 against the shift path's 6.4 ms,
#: 16x16 (64 tiles) 15.7-16.0 against 16.2 ms, 24x24 (144 tiles) 34.6 against 42.8 ms)
WINOGRAD_MIN_TILES = 100
#: tiles (whole samples) per block of ``winograd_conv``: a sample of 3x3 64->64 at 32x32 (256 tiles) keeps its V and
#: M (1 MiB each, float32) in a core's L2 cache; with the whole batch's (32 MiB each) a first version of the
#: input transform took 9.3 against 7.4 ms per batch of 32 (1 thread)
WINOGRAD_BLOCK_TILES = 256


def winograd_apply(g: Conv2dGeometry, c_out: int, groups: int, dtype: Any) -> bool:
    """Whether the forward, dx and dW of a conv2d of geometry g take the Winograd path: a 3x3 kernel, stride 1,
    dilation 1, groups 1, padding at most 2 on each side (so that dx, the transposed convolution, pads dy by
    ``2 - padding >= 0``), at least ``WINOGRAD_MIN_CHANNELS`` input and output channels, at least
    ``WINOGRAD_MIN_TILES`` output tiles per sample (for the output and for dx, the input), a non-empty batch, and
    the compiled transforms built and on for ``dtype`` (float32/float64)."""
    return (g.kh == g.kw == 3 and g.sh == g.sw == 1 and g.dh == g.dw == 1 and groups == 1
            and max(g.pt, g.pb, g.pl, g.pr) <= 2 and min(g.c, c_out) >= WINOGRAD_MIN_CHANNELS
            and min(-(-g.oh // 2) * -(-g.ow // 2), -(-g.h // 2) * -(-g.w // 2)) >= WINOGRAD_MIN_TILES
            and g.n > 0 and g.oh > 0 and g.ow > 0 and cpu_kernels.winograd_ready(dtype))


def winograd_weights(weight: np.ndarray, tag: str) -> np.ndarray:
    """U = G g G^T of weight (C_out, C_in, 3, 3) (any strides), as a recycled (16, C_out, C_in) buffer (``tag``),
    ``U[4*a + b, o, c] = sum_{i,j} G[a, i] g[o, c, i, j] G[b, j]``: two 2-D products over all (o, c) at once."""
    co, c = int(weight.shape[0]), int(weight.shape[1])
    gm = np.asarray(_WINO_G, dtype=weight.dtype)
    w3 = _workspace.buffer(tag + ".w", (3, co * c, 3), weight.dtype)  # w3[i, oc, j] = g[o, c, i, j]
    np.copyto(w3.reshape(3, co, c, 3), weight.transpose(2, 0, 1, 3))
    gw = _workspace.buffer(tag + ".gw", (3, co * c * 4), weight.dtype)  # gw[i, (oc, b)] = sum_j g[o, c, i, j] G[b, j]
    np.matmul(w3.reshape(3 * co * c, 3), gm.T, out=gw.reshape(3 * co * c, 4))
    ggw = _workspace.buffer(tag + ".ggw", (4, co * c * 4), weight.dtype)  # ggw[a, (oc, b)]
    np.matmul(gm, gw, out=ggw)
    u = _workspace.buffer(tag, (16, co, c), weight.dtype)
    np.copyto(u.reshape(4, 4, co * c), ggw.reshape(4, co * c, 4).transpose(0, 2, 1))
    return u


def _entry_stride(elems: int, itemsize: int) -> int:
    """Elements between the 16 entries of a (16, C, T) tile array of C*T = ``elems`` elements each: an odd number
    of 64-byte cache lines (a multiple of 4 KiB, e.g. 64 channels x 256 tiles, maps the 16 rows the transforms
    write or read at once to one cache set: each transform took ~5% longer, 1 thread, 3x3 64->64, 32x32)."""
    line = max(1, 64 // itemsize)
    lines = -(-elems // line)
    return (lines + 1 - lines % 2) * line


def _tiles(buf: np.ndarray, c: int, t: int) -> np.ndarray:
    """The (16, c, t) view of the first c*t elements of each row of buf (16, stride)."""
    return buf[:, :c * t].reshape(16, c, t)


def _contiguous(a: np.ndarray, tag: str) -> np.ndarray:
    """a as a plain ndarray (a view of a subclass's data, e.g. ``np.memmap``), or a copy of it in a recycled buffer
    where it is not C-contiguous and aligned (what the compiled transforms take)."""
    a = np.asarray(a)
    if a.flags.c_contiguous and a.flags.aligned:
        return a
    out = _workspace.buffer(tag, a.shape, a.dtype)
    np.copyto(out, a)
    return out


def winograd_conv(x: np.ndarray, u: np.ndarray, bias: Optional[np.ndarray], pt: int, pl: int, oh: int, ow: int,
                  tag: str, keep: bool) -> Optional[tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]]:
    """The 3x3 stride-1 correlation ``y[n, o, p, q] = sum_{c,i,j} w[o, c, i, j] x[n, c, p + i - pt, q + j - pl]``
    (+ bias; x zero outside) of x (N, C_in, H, W) C-contiguous by Winograd F(2x2, 3x3), ``u = winograd_weights(w)``,
    y (N, C_out, oh, ow) in a recycled buffer (``tag``). Chunks of samples run at once on ``cpu_threads``; each
    chunk in blocks of ``WINOGRAD_BLOCK_TILES`` tiles or more (whole samples) whose V and M stay in cache: V =
    input transform (16, C_in, T), M = U @ V (16 GEMMs), y = output transform of M (one C call per transform).
    Returns (y, [(lo, hi, V)] of every block in sample order where ``keep``, for dW) or None where some output is
    not finite (a tile mixes 16 inputs, so an inf or NaN reaches outputs the direct convolution leaves finite: the
    caller recomputes)."""
    n, c = int(x.shape[0]), int(x.shape[1])
    co = int(u.shape[1])
    th, tw = -(-oh // 2), -(-ow // 2)
    per = th * tw
    step = max(1, -(-WINOGRAD_BLOCK_TILES // per))  # samples per block
    y = _workspace.buffer(tag, (n, co, oh, ow), x.dtype)
    blocks: list[tuple[int, int, np.ndarray]] = []
    bad: list[int] = []

    def run(lo: int, hi: int) -> None:
        count = -(-(hi - lo) // step)
        vs = _workspace.buffer(tag + ".v", (count if keep else 1, 16, _entry_stride(c * step * per, x.itemsize)),
                               x.dtype)  # the running thread's own
        ms = _workspace.buffer(tag + ".m", (16, _entry_stride(co * step * per, x.itemsize)), x.dtype)
        for k, s in enumerate(range(lo, hi, step)):
            e = min(s + step, hi)
            t = (e - s) * per
            v = _tiles(vs[k if keep else 0], c, t)
            m = _tiles(ms, co, t)
            cpu_kernels.winograd_input(x, v, s, e, pt, pl, th, tw)
            np.matmul(u, v, out=m)
            if cpu_kernels.winograd_output(m, y, bias, s, e, th, tw):
                bad.append(s)
            if keep:
                blocks.append((s, e, v))

    with np.errstate(all="ignore"):  # inf/NaN: found by the output transform, recomputed by the caller
        cpu_threads.parallel_for(n, run, _min_chunk(16 * max(c, co) * per))
    if bad:
        return None
    blocks.sort(key=lambda blk: blk[0])
    return y, blocks


def winograd_input_grad(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry) -> Optional[np.ndarray]:
    """dx (N, C_in, H, W) of a conv2d (``winograd_apply``) as the transposed convolution (``_input_grad_transposed``:
    dy padded by 2 - padding, the kernel flipped with in/out channels swapped) by ``winograd_conv``; None where some
    dx is not finite (the caller recomputes)."""
    u = winograd_weights(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), "conv2d.wino_ut")
    out = winograd_conv(_contiguous(dy, "conv2d.wino_dy"), u, None, 2 - g.pt, 2 - g.pl, g.h, g.w,
                        "conv2d.wino_dx", keep=False)
    return None if out is None else out[0]


def winograd_weight_grad(dy: np.ndarray, blocks: list[tuple[int, int, np.ndarray]],
                         w_shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """dW (C_out, C_in, 3, 3) of a conv2d whose forward ran ``winograd_conv`` (its blocks' V):
    ``dW[o, c] = G^T (sum_t E[:, o, t] V[:, c, t]) G`` with E = A dY A^T of each 2x2 tile of dy (the gradient of
    U = G g G^T through y = A^T (U . V) A). Chunks of the blocks at once on ``cpu_threads``; per block E (one C
    call) and 16 GEMMs (16, C_out, T) @ (16, T, C_in), added in block order; the chunks' sums added in chunk order
    (deterministic at a thread count). None where dW is not finite (the caller recomputes)."""
    co, c = w_shape[0], w_shape[1]
    dy = _contiguous(dy, "conv2d.wino_dy")
    sums: list[tuple[int, np.ndarray]] = []

    def run(k0: int, k1: int) -> None:
        acc = _workspace.buffer("conv2d.wino_du", (16, co, c), dy.dtype)  # the running thread's own
        part = _workspace.buffer("conv2d.wino_du_part", (16, co, c), dy.dtype)
        most = max(v.shape[2] for _, _, v in blocks[k0:k1])
        es = _workspace.buffer("conv2d.wino_e", (16, _entry_stride(co * most, dy.itemsize)), dy.dtype)
        for k in range(k0, k1):
            lo, hi, v = blocks[k]
            e = _tiles(es, co, v.shape[2])
            cpu_kernels.winograd_dy(dy, e, lo, hi)
            np.matmul(e, v.transpose(0, 2, 1), out=part if k > k0 else acc)
            if k > k0:
                acc += part
        sums.append((k0, acc))

    with np.errstate(all="ignore"):
        cpu_threads.parallel_for(len(blocks), run, _min_chunk(16 * max(c, co) * blocks[0][2].shape[2])
                                 if blocks else 1)
    if not sums:
        return np.zeros(w_shape, dy.dtype)
    parts = [a for _, a in sorted(sums, key=lambda t: t[0])]
    du = parts[0]
    for a in parts[1:]:
        du += a
    gm = np.asarray(_WINO_G, dtype=dy.dtype)
    gdu = _workspace.buffer("conv2d.wino_gdu", (3, 4, co * c), dy.dtype)  # sum_a G[a, i] du[(a, b), o, c]
    dw = _workspace.buffer("conv2d.wino_dw", (3, 3, co * c), dy.dtype)  # sum_b (that)[i, b] G[b, j]
    with np.errstate(all="ignore"):
        np.matmul(gm.T, du.reshape(4, 4 * co * c), out=gdu.reshape(3, 4 * co * c))
        np.matmul(gm.T, gdu, out=dw)
    if not _all_finite(dw):
        return None
    return np.ascontiguousarray(dw.reshape(3, 3, co, c).transpose(2, 3, 0, 1))


def _conv2d_forward(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: Any = None, *, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: Any = 1) -> Any:
    if _kernels_answer(registry.IM2COL, x.dtype):
        return NotImplemented
    c_out = int(weight.shape[0]) if weight.ndim == 4 else 0
    # the channel counts first (no geometry on LeNet-sized layers' hot path); invalid arguments: the reference's
    # errors
    if x.ndim == 4 and type(groups) is int and groups >= 1 and min(int(x.shape[1]), c_out) // groups \
            >= SHIFT_MIN_CHANNELS:
        g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        if shift_apply(g, c_out, groups):
            if winograd_apply(g, c_out, groups, x.dtype) and weight.dtype == x.dtype \
                    and (bias is None or bias.dtype == x.dtype):
                # every block's V (4x the input) kept only for a dW (not under no_grad, on arrays, a frozen weight)
                need_dw = len(ctx.needs_input_grad) > 1 and ctx.needs_input_grad[1]
                out = winograd_conv(_contiguous(x, "conv2d.wino_x"), winograd_weights(weight, "conv2d.wino_u"),
                                    None if bias is None else _contiguous(bias, "conv2d.wino_bias"), g.pt, g.pl,
                                    g.oh, g.ow, "conv2d.wino_y", keep=need_dw)
                if out is not None:  # (else an inf or NaN: the shift path below, the reference's semantics)
                    ctx.save_for_backward(x, weight)
                    # cols None: a backward that falls back to the reference rebuilds the columns from x; wino: the
                    # blocks' V ([] without need_dw)
                    ctx.cols, ctx.wino, ctx.params = None, out[1], (stride, padding, dilation, groups)
                    ctx.has_bias = bias is not None
                    return out[0]
            gs = shift_geometry(g)
            xs = _workspace.buffer("conv2d.xs", (gs.n, gs.c, gs.kw, gs.hp * gs.wp), x.dtype)
            y = shift_add_product(weight, xs, gs, groups, bias, "conv2d.y", src=x)  # (xs filled as it goes)
            ctx.save_for_backward(x, weight)
            # cols None: a backward that falls back to the reference rebuilds the columns from x
            ctx.cols, ctx.xs, ctx.params = None, xs, (stride, padding, dilation, groups)
            ctx.has_bias = bias is not None
            return y
    if x.ndim == 4 and weight.ndim == 4 and type(groups) is int and groups >= 1 and int(x.shape[0]) > 1 \
            and cpu_threads.get_num_threads() > 1:
        g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        if _split(g.n, g.c * g.offsets * g.oh * g.ow) and x.dtype == weight.dtype \
                and (bias is None or bias.dtype == x.dtype):
            return _conv2d_forward_chunks(ctx, x, weight, bias, g, groups, (stride, padding, dilation, groups))
    return Conv2d.forward(ctx, x, weight, bias, im2col_fn=im2col_numpy, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)


def _conv2d_forward_chunks(ctx: Context, x: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray],
                           g: Conv2dGeometry, groups: int, params: tuple[Any, ...]) -> np.ndarray:
    """The im2col forward (``conv.conv2d_forward``'s products) over chunks of the batch at once (``_batch_chunks``):
    each chunk's columns into its thread's buffer (saved per chunk for the backward, ``ctx.col_chunks``) and its
    product into its rows of y."""
    c_out = int(weight.shape[0])
    kg = g.c // groups * g.offsets
    w3 = weight.reshape(groups, c_out // groups, kg)
    y = _workspace.buffer("conv2d.out", (g.n, c_out, g.oh, g.ow), x.dtype)  # free again once the caller drops it
    b4 = None if bias is None else bias.reshape(1, c_out, 1, 1)

    def run(lo: int, hi: int) -> np.ndarray:
        cols = im2col_numpy(x[lo:hi], dataclasses.replace(g, n=hi - lo)).reshape(hi - lo, groups, kg, g.oh * g.ow)
        yk = y[lo:hi]
        np.matmul(w3, cols, out=yk.reshape(hi - lo, groups, c_out // groups, g.oh * g.ow))
        if b4 is not None:
            yk += b4
        return cols

    chunks = _batch_chunks(g.n, kg * g.oh * g.ow, run)  # one chunk (all of x) when another split is running
    ctx.save_for_backward(x, weight)
    # cols None: a backward that falls back to the reference rebuilds the columns from x
    ctx.cols, ctx.col_chunks, ctx.params, ctx.has_bias = None, chunks, params, bias is not None
    return y


# N * C_in/groups from which dx is accumulated channels-last (measured at LeNet sizes: N*C = 64 (one input channel)
# is 1.5x slower channels-last, N*C = 384 1.4x faster)
CHANNELS_LAST_MIN = 256


def conv2d_input_grad_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry, groups: int,
                            out: Optional[np.ndarray] = None) -> np.ndarray:
    """dx of ``conv2d`` for dy (N, C_out, oh, ow): per group and kernel offset (i, j), the product
    ``dy (oh*ow*N, C_out/G) @ W[:, :, i, j] (C_out/G, C_in/G)`` (one batched matmul over the offsets) added into the
    strided window view of a channels-last (H, W, N, C) dx. Channels-last makes each addition run over contiguous
    N*C blocks; the reference's NCHW ``col2im`` adds rows of only ow contiguous values (3x slower at LeNet sizes).
    With the compiled kernels, the additions and the transpose are one ``cpu_kernels.col2im`` from the products of
    every group. ``out``: an (N, C_in, H, W) array to write dx into (else a fresh one)."""
    c_out = weight.shape[0]
    cog, cg = c_out // groups, g.c // groups
    dyt = _workspace.buffer("conv2d.dy_cl", (g.oh, g.ow, g.n, c_out), dy.dtype)
    np.copyto(dyt, dy.transpose(2, 3, 0, 1))  # (oh, ow, N, C_out)
    parts = _workspace.buffer("conv2d.dx_parts", (groups, g.offsets, g.oh * g.ow * g.n, cg), dy.dtype)
    for gi in range(groups):
        wk = weight[gi * cog:(gi + 1) * cog].transpose(2, 3, 0, 1).reshape(g.offsets, cog, cg)  # (K, C_out/G, C_in/G)
        dyg = dyt[..., gi * cog:(gi + 1) * cog].reshape(-1, cog)
        np.matmul(dyg, wk, out=parts[gi])
    dx = np.empty((g.n, g.c, g.h, g.w), dy.dtype) if out is None else out
    if cpu_kernels.col2im("channels_last", parts, dx, g, groups):  # each dx row gathered at once, the same sums
        return dx
    dxp = _workspace.buffer("conv2d.dx_cl", (g.hp, g.wp, g.n, g.c), dy.dtype)
    dxp.fill(0)
    parts6 = parts.reshape(groups, g.offsets, g.oh, g.ow, g.n, cg)
    for gi in range(groups):
        for k in range(g.offsets):
            hs, ws = g.window(k // g.kw, k % g.kw)
            dxp[hs, ws, :, gi * cg:(gi + 1) * cg] += parts6[gi, k]
    return _nchw(dxp[g.pt:g.pt + g.h, g.pl:g.pl + g.w].transpose(2, 3, 0, 1), dx)


def _nchw(dx: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """dx (a transposed view of an accumulator) copied into ``out``, else into a fresh C-contiguous array."""
    if out is None:
        return np.ascontiguousarray(dx)
    np.copyto(out, dx)
    return out


def conv2d_input_grad_batch_last_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry,
                                       groups: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """dx of a stride-1 ``conv2d``: ``conv2d_input_grad_numpy``'s products and additions in a (C, H, W, N) layout
    (the same terms and order; the GEMM's rounding may differ in the last bit): dy as (C_out, oh*ow*N), one GEMM per group ``W[g] (kh*kw*C_in/G, C_out/G) @ dy[g]`` for
    every offset, then per offset one addition over rows of ow*N contiguous values (channels-last adds rows of
    N*C_in/G; 1.0-1.25x faster at LeNet's second layer, N=64, C=6 -> 16, 14x14, 5x5, 1 thread, 2026-12-06).
    With the compiled kernels, the additions and the transpose are one ``cpu_kernels.col2im`` (each dx row gathered
    from the products once; dx 0.83 against 1.35 ms at that layer, 2026-12-06). ``out``: as
    ``conv2d_input_grad_numpy``'s. Raises ValueError for a stride above 1."""
    if g.sh != 1 or g.sw != 1:
        raise ValueError(f"conv2d_input_grad_batch_last_numpy: needs stride 1, got {g}")
    c_out = weight.shape[0]
    cog, cg = c_out // groups, g.c // groups
    dyt = _workspace.buffer("conv2d.dy_bl", (groups, cog, g.oh * g.ow * g.n), dy.dtype)
    np.copyto(dyt.reshape(c_out, g.oh, g.ow, g.n), dy.transpose(1, 2, 3, 0))
    wt = np.ascontiguousarray(weight.reshape(groups, cog, cg, g.kh, g.kw).transpose(0, 3, 4, 2, 1))
    parts = _workspace.buffer("conv2d.dx_parts_bl", (groups, g.offsets * cg, g.oh * g.ow * g.n), dy.dtype)
    np.matmul(wt.reshape(groups, g.offsets * cg, cog), dyt, out=parts)  # parts[gi, (i, j, c), (p, q, n)]
    dx = np.empty((g.n, g.c, g.h, g.w), dy.dtype) if out is None else out
    if cpu_kernels.col2im("batch_last", parts, dx, g, groups):  # each dx row gathered at once, the same sums
        return dx
    p6 = parts.reshape(groups, g.kh, g.kw, cg, g.oh, g.ow * g.n)
    dxp = _workspace.buffer("conv2d.dx_bl", (groups, cg, g.hp, g.wp * g.n), dy.dtype)
    dxp.fill(0)
    for i in range(g.kh):
        for j in range(g.kw):
            h0, w0 = i * g.dh, j * g.dw * g.n
            dxp[:, :, h0:h0 + g.oh, w0:w0 + g.ow * g.n] += p6[:, i, j]
    acc = dxp.reshape(g.c, g.hp, g.wp, g.n)[:, g.pt:g.pt + g.h, g.pl:g.pl + g.w]
    return _nchw(acc.transpose(3, 0, 1, 2), dx)


def conv2d_weight_grad_numpy(dy: np.ndarray, cols: np.ndarray, g: Conv2dGeometry, groups: int,
                             w_shape: tuple[int, ...]) -> np.ndarray:
    """dW of ``conv2d`` (the reference's ``(sum_n cols[n, g] @ dy[n, g].T).T``, same products and summation order)
    with the per-sample products written into a recycled buffer. cols: (N, groups, C_in/G*kh*kw, oh*ow)."""
    c_out = w_shape[0]
    kg = g.c // groups * g.offsets
    dy4 = dy.reshape(g.n, groups, c_out // groups, g.oh * g.ow)
    part = _workspace.buffer("conv2d.dw_parts", (g.n, groups, kg, c_out // groups), dy.dtype)
    np.matmul(cols.reshape(g.n, groups, kg, g.oh * g.ow), dy4.swapaxes(-1, -2), out=part)
    return part.sum(axis=0).swapaxes(-1, -2).reshape(w_shape)


def _scatter_target(g: Conv2dGeometry, dtype: Any, out: Optional[np.ndarray]) -> np.ndarray:
    """Where the compiled col2im of the ``"rows"``/``"cols"`` paths writes dx: ``out``, else (as their NumPy
    scatters hand it out) the interior of the recycled padded accumulator when there is padding (the view keeps it
    out of reuse), else a fresh array."""
    if out is not None:
        return out
    if g.pt or g.pb or g.pl or g.pr:
        return _workspace.buffer("conv2d.dx", (g.n, g.c, g.hp, g.wp), dtype)[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]
    return np.empty((g.n, g.c, g.h, g.w), dtype)


def _scattered(dxp: np.ndarray, g: Conv2dGeometry, out: Optional[np.ndarray]) -> np.ndarray:
    """dx from a NumPy scatter's padded accumulator: copied into ``out`` if given, else its interior (a view) when
    there is padding, else a fresh copy (the whole buffer stays recyclable)."""
    if out is not None:
        np.copyto(out, dxp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w])
        return out
    if not (g.pt or g.pb or g.pl or g.pr):
        return dxp.copy()
    return dxp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]


def conv2d_input_grad_cols_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry,
                                 groups: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """dx of ``conv2d`` the reference's way (``dcols = W[g].T @ dy[n, g]``, ``col2im``), with dcols and the padded
    accumulator recycled; for short channel rows (e.g. one input channel), where channels-last is slower. The
    result is a view of the accumulator when there is padding (that view keeps it out of reuse); ``out``: an
    (N, C_in, H, W) array to write dx into instead. With the compiled kernels, the scatter is
    ``cpu_kernels.col2im`` (each dx row gathered once, the same sums)."""
    c_out = weight.shape[0]
    kg = g.c // groups * g.offsets
    w3 = weight.reshape(groups, c_out // groups, kg)
    dcols = _workspace.buffer("conv2d.dcols", (g.n, groups, kg, g.oh * g.ow), dy.dtype)
    np.matmul(w3.swapaxes(-1, -2), dy.reshape(g.n, groups, c_out // groups, g.oh * g.ow), out=dcols)
    if cpu_kernels.im2col_ready(dy.dtype):
        dx = _scatter_target(g, dy.dtype, out)
        if cpu_kernels.col2im("cols", dcols, dx, g, groups):
            return dx
    dc = dcols.reshape(g.n, g.c, g.kh, g.kw, g.oh, g.ow)
    dxp = _workspace.buffer("conv2d.dx", (g.n, g.c, g.hp, g.wp), dy.dtype)
    dxp.fill(0)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[(slice(None), slice(None)) + g.window(i, j)] += dc[:, :, i, j]
    return _scattered(dxp, g, out)


def conv2d_input_grad_rows_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry,
                                 groups: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """dx of a ``conv2d`` with stride 1 in height: the transpose of ``im2col_numpy``'s two copies. Per kernel row i,
    one batched GEMM ``W[g, :, :, i, :].T @ dy[n, g]`` gives the column gradients of that row, which land in
    kernel-column shifted rows, ``rows[n, c, j, i*dh + p, q] += dcols[n, c, i, j, p, q]`` (oh*ow contiguous values
    per (n, c, j); the first row's GEMM writes there directly); then ``dxp[n, c, h, j*dw + q*sw] +=
    rows[n, c, j, h, q]``. The reference's terms (``col2im``), summed over i before j; for short channel rows
    (one input channel) in place of the reference's kh*kw scatter-adds of ow values. Buffers recycled; the result
    is a view of the padded accumulator when there is padding; ``out``: as ``conv2d_input_grad_cols_numpy``'s. With
    the compiled kernels, the kh GEMMs into one buffer and both scatters as one ``cpu_kernels.col2im`` (each dx row
    gathered once, the same sums in the same order). Raises ValueError for a stride above 1 in height."""
    if g.sh != 1:
        raise ValueError(f"conv2d_input_grad_rows_numpy: needs stride 1 in height, got {g}")
    c_out = weight.shape[0]
    cog, cg = c_out // groups, g.c // groups
    plane = g.oh * g.ow
    wt = np.ascontiguousarray(weight.reshape(groups, cog, cg, g.kh, g.kw).transpose(3, 0, 2, 4, 1))
    wt = wt.reshape(g.kh, groups, cg * g.kw, cog)  # wt[i, gi, (c, j), o] = W[gi*C_out/G + o, c, i, j]
    dyg = dy.reshape(g.n, groups, cog, plane)
    if cpu_kernels.im2col_ready(dy.dtype):
        parts = _workspace.buffer("conv2d.dx_row_parts", (g.kh, g.n, groups, cg * g.kw, plane), dy.dtype)
        for i in range(g.kh):
            np.matmul(wt[i], dyg, out=parts[i])
        dx = _scatter_target(g, dy.dtype, out)
        if cpu_kernels.col2im("rows", parts, dx, g, groups):
            return dx
    rows = _workspace.buffer("conv2d.dx_rows", (g.n, groups, cg * g.kw, g.hp * g.ow), dy.dtype)
    part = _workspace.buffer("conv2d.dx_row_part", (g.n, groups, cg * g.kw, plane), dy.dtype)
    rows[..., plane:] = 0
    np.matmul(wt[0], dyg, out=rows[..., :plane])
    for i in range(1, g.kh):
        np.matmul(wt[i], dyg, out=part)
        rows[..., i * g.dh * g.ow:i * g.dh * g.ow + plane] += part
    rows5 = rows.reshape(g.n, g.c, g.kw, g.hp, g.ow)
    dxp = _workspace.buffer("conv2d.dx", (g.n, g.c, g.hp, g.wp), dy.dtype)
    dxp.fill(0)
    for j in range(g.kw):
        dxp[:, :, :, j * g.dw:j * g.dw + g.sw * (g.ow - 1) + 1:g.sw] += rows5[:, :, j]
    return _scattered(dxp, g, out)


def conv2d_input_grad_transposed_numpy(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry,
                                       groups: int) -> np.ndarray:
    """dx of a stride-1 ``conv2d`` by the transposed convolution (``_input_grad_transposed``)."""
    return _input_grad_transposed(weight, dy, g, groups)[0]


def _input_grad_transposed(weight: np.ndarray, dy: np.ndarray, g: Conv2dGeometry,
                           groups: int) -> tuple[np.ndarray, Optional[tuple[np.ndarray, Conv2dGeometry]]]:
    """dx of a stride-1 ``conv2d`` as a forward convolution (the transposed convolution): dy padded by
    ``dilation * (k - 1) - padding`` on each side, correlated with the flipped kernel whose in/out channels are
    swapped per group, ``W'[g, c, co, i, j] = W[g, co, c, kh-1-i, kw-1-j]``:
    ``dx[n, c, h, w] = sum_{co,i,j} dy[n, co, h + pt - i*dh, w + pl - j*dw] W[co, c, i, j]``. With many channels
    (``shift_apply``) by ``shift_add_product`` over kw shifted copies of the padded dy (no column tensor); else
    columns of the padded dy and one batched GEMM whose output is dx in NCHW. Either way no scatter-add passes.
    Returns (dx, (dy's ``padded_shifts`` buffer, its geometry) where the shift-add product ran, for dW, else
    None). Raises ValueError where it does not apply (``_transposed_padding`` None: stride > 1, or padding wider
    than the dilated kernel)."""
    pads = _transposed_padding(g)
    if pads is None:
        raise ValueError(f"conv2d_input_grad_transposed_numpy: needs stride 1 and padding <= dilation*(kernel-1), "
                         f"got {g}")
    c_out = int(weight.shape[0])
    cog, cg = c_out // groups, g.c // groups
    gt = Conv2dGeometry(g.n, c_out, g.oh, g.ow, g.kh, g.kw, 1, 1, g.dh, g.dw, *pads, g.h, g.w)
    wt = weight.reshape(groups, cog, cg, g.kh, g.kw)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    if shift_apply(gt, g.c, groups):
        gs = shift_geometry(gt)
        dys = _workspace.buffer("conv2d.dys", (gs.n, gs.c, gs.kw, gs.hp * gs.wp), dy.dtype)
        dx = shift_add_product(wt.reshape(g.c, cog, g.kh, g.kw), dys, gs, groups, None, "conv2d.dx", src=dy)
        return dx, (dys, gs)
    cols = _workspace.buffer("conv2d.dx_cols", (g.n, c_out, g.kh, g.kw, g.h, g.w), dy.dtype)
    np.copyto(cols, _windows(_padded(dy, gt, 0.0, "conv2d.dy_pad"), gt))
    wt = np.ascontiguousarray(wt).reshape(groups, cg, cog * g.offsets)
    dx = np.matmul(wt, cols.reshape(g.n, groups, cog * g.offsets, g.h * g.w))
    return dx.reshape(g.n, g.c, g.h, g.w), None


def conv2d_weight_grad_shift_numpy(dy: np.ndarray, xs: np.ndarray, g: Conv2dGeometry, groups: int,
                                   w_shape: tuple[int, ...],
                                   dy_pad: Optional[tuple[np.ndarray, Conv2dGeometry]] = None) -> np.ndarray:
    """dW of a stride-1 ``conv2d`` from the forward's ``padded_shifts`` xs:
    ``dW[o, c, i, j] = sum_{n,t} e[n, o, t - i*dh*wp] xs[n, c, j, t]``, e being dy placed at the top left of an
    (hp, wp) plane (zeros elsewhere). Per sample, kh shifted copies of e make one (kh*C_out/G, hp*wp) operand and
    one GEMM with xs gives every (kernel row, C_out/G, C_in/G*kw) block, accumulated over the batch.
    ``dy_pad``: (shifted planes, geometry) of dy as the transposed convolution of dx built them
    (``_input_grad_transposed``), read where its planes are (hp, wp) like the forward's (only dy's place in them
    differs); else dy is padded here. g: the convolution's geometry; xs and dy_pad's planes have the pitch of
    ``shift_geometry(g)``. The products include padding zeros times input (and dy) values, which is not 0 where
    those are inf or NaN: then (dW not finite) dW is recomputed the reference's way from im2col columns."""
    g_full, g = g, shift_geometry(g)
    c_out = w_shape[0]
    cog, cg = c_out // groups, g.c // groups
    plane = g.hp * g.wp
    if dy_pad is not None and (dy_pad[1].hp, dy_pad[1].wp) == (g.hp, g.wp):
        planes, gd = dy_pad[0][:, :, 0], dy_pad[1]
    else:
        gd = Conv2dGeometry(g.n, c_out, g.oh, g.ow, g.kh, g.kw, 1, 1, g.dh, g.dw, 0, g.dh * (g.kh - 1), 0,
                            g.wp - g.ow, g.h, g.w)  # dy at the top left of an (hp, wp) plane
        planes = _padded(dy, gd, 0.0, "conv2d.dw_dy").reshape(g.n, c_out, plane)
    at = gd.pt * g.wp + gd.pl  # e[.., t] = planes[.., t + at]
    pg = planes.reshape(g.n, groups, cog, plane)
    xg = xs.reshape(g.n, groups, cg * g.kw, plane).swapaxes(-1, -2)
    acc_shape = (groups, g.kh * cog, cg * g.kw)
    sums: list[tuple[int, np.ndarray]] = []  # one accumulator per chunk of samples, added in chunk order

    def accumulate(lo: int, hi: int) -> None:
        est = _workspace.buffer("conv2d.dw_e", (groups, g.kh, cog, plane), dy.dtype)  # the running thread's own
        acc = _workspace.buffer("conv2d.dw_acc", acc_shape, dy.dtype)
        part = _workspace.buffer("conv2d.dw_part", acc_shape, dy.dtype)
        for i in range(g.kh):  # the zeros around each row's copy of e, the same for every sample
            s = i * g.dh * g.wp
            est[:, i, :, :s] = 0
            est[:, i, :, s + plane - max(s, at):] = 0
        rows = cpu_kernels.shift_dw_rows_fn(est, pg, at, g.dh, g.wp)  # the copies below in one compiled pass
        with np.errstate(invalid="ignore"):  # 0 * inf: found below and recomputed
            for n in range(lo, hi):
                if rows is not None:
                    rows(n)
                else:
                    for i in range(g.kh):  # est[gi, i, o, t] = e[n, gi*C_out/G + o, t - i*dh*wp]
                        s = i * g.dh * g.wp
                        m = plane - max(s, at)
                        est[:, i, :, s:s + m] = pg[n, :, :, at:at + m]
                np.matmul(est.reshape(groups, g.kh * cog, plane), xg[n], out=part if n > lo else acc)
                if n > lo:
                    acc += part
        sums.append((lo, acc))

    cpu_threads.parallel_for(g.n, accumulate, _min_chunk(g.c * g.kw * plane))
    parts = [a for _, a in sorted(sums, key=lambda t: t[0])]
    if parts:
        acc = parts[0]
        for a in parts[1:]:
            acc += a
    else:  # an empty batch
        acc = np.zeros(acc_shape, dy.dtype)
    dw = acc.reshape(groups, g.kh, cog, cg, g.kw).transpose(0, 2, 3, 1, 4).reshape(w_shape)
    if not np.isfinite(dw).all():
        cols = _workspace.buffer("conv2d.cols", (g.n, g.c, g.kh, g.kw, g.oh, g.ow), dy.dtype)
        s4 = xs.strides  # cols[n, c, i, j, p, q] = xs[n, c, j, (p + i*dh)*wp + q]: the windows' values
        np.copyto(cols, as_strided(xs, shape=cols.shape, strides=(s4[0], s4[1], g.dh * g.wp * s4[3], s4[2],
                                                                  g.wp * s4[3], s4[3]), writeable=False))
        dw = conv2d_weight_grad_numpy(dy, cols.reshape(g.n, groups, -1, g.oh * g.ow), g_full, groups, w_shape)
    return dw


def _transposed_padding(g: Conv2dGeometry) -> Optional[tuple[int, int, int, int]]:
    """Padding (top, bottom, left, right) of dy in the transposed convolution, or None where it does not apply."""
    pads = (g.dh * (g.kh - 1) - g.pt, g.dh * (g.kh - 1) - g.pb, g.dw * (g.kw - 1) - g.pl, g.dw * (g.kw - 1) - g.pr)
    return pads if g.sh == g.sw == 1 and min(pads) >= 0 else None


def input_grad_path(g: Conv2dGeometry, c_out: int, groups: int) -> str:
    """Which dx of the NumPy backward runs: ``"transposed"`` (stride 1, with many channels (``shift_apply``) or
    when its column tensor, C_out*H*W per sample and offset, is no larger than the scatter's, C_in*oh*ow: e.g.
    3x3 64->64 with "same" padding), else a scatter (``scatter_path``)."""
    if _transposed_padding(g) is not None and (shift_apply(g, c_out, groups)
                                               or c_out * g.h * g.w <= g.c * g.oh * g.ow):
        return "transposed"
    return scatter_path(g, groups)


def scatter_path(g: Conv2dGeometry, groups: int) -> str:
    """The dx that scatters column gradients: ``"batch_last"`` with stride 1, else ``"channels_last"``, or for
    short channel rows (N*C_in/groups below ``CHANNELS_LAST_MIN``) ``"rows"`` with stride 1 in height (1.5x faster
    than ``"cols"`` at LeNet's first layer: N=64, C=1, 28x28, 5x5, padding 2, 1 thread, 2026-12-06) and ``"cols"``
    otherwise."""
    if g.n * (g.c // groups) >= CHANNELS_LAST_MIN:
        return "batch_last" if g.sh == g.sw == 1 else "channels_last"
    return "rows" if g.sh == 1 else "cols"


INPUT_GRAD_PATHS = {"transposed": conv2d_input_grad_transposed_numpy, "channels_last": conv2d_input_grad_numpy,
                    "cols": conv2d_input_grad_cols_numpy, "rows": conv2d_input_grad_rows_numpy,
                    "batch_last": conv2d_input_grad_batch_last_numpy}


# elements per matrix-vector product of ``channel_sums``: below OpenBLAS's threading threshold, so no call waits
# for a second thread (one whole-batch product ran 3.5-10 ms at default threads on this shared 2-core machine, 0.33
# ms on one)
CHANNEL_SUM_BLOCK = 1 << 16


def channel_sums(dy: np.ndarray) -> np.ndarray:
    """``dy.sum(axis=(0, 2, 3))`` for dy (N, C, H, W) (the bias gradient). float32: in another float summation
    order, each (n, c) plane summed by a product with a ones vector (in blocks of ``CHANNEL_SUM_BLOCK`` elements),
    then the sum over N (NumPy's multi-axis sum is 1.4x (3x3 64->64, 32x32) to 2.5x (LeNet's layers) slower);
    other dtypes (float64, the checking dtype): NumPy's sum, equal to the reference's."""
    if dy.dtype != np.float32:
        return dy.sum(axis=(0, 2, 3))
    n, c = int(dy.shape[0]), int(dy.shape[1])
    hw = int(dy.shape[2]) * int(dy.shape[3])
    rows = dy.reshape(n * c, hw)
    ones = np.ones(hw, dtype=dy.dtype)
    sums = np.empty(n * c, dtype=dy.dtype)
    step = max(1, CHANNEL_SUM_BLOCK // max(hw, 1))
    for a in range(0, n * c, step):
        np.matmul(rows[a:a + step], ones, out=sums[a:a + step])
    return sums.reshape(n, c).sum(axis=0)


def _conv2d_backward(ctx: Context, dy: Any) -> Any:
    if type(dy) is not np.ndarray or ctx.create_graph or _kernels_answer(registry.COL2IM, dy.dtype):
        return NotImplemented
    x, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    stride, padding, dilation, groups = ctx.params
    g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups, where="conv2d_backward")
    c_out = int(weight.shape[0])
    if tuple(dy.shape) != (g.n, c_out, g.oh, g.ow) or dy.dtype != x.dtype:
        return NotImplemented  # the reference raises the error that names the mismatch
    db = channel_sums(dy) if ctx.has_bias and len(need) > 2 and need[2] else None
    dx = dy_pad = None
    wino = ctx.__dict__.get("wino")  # the forward's Winograd blocks (V of each)
    # (kernels turned off since the forward, e.g. ``use_kernels(False)`` around the backward: dx and dW by the
    # NumPy paths below, as after a non-finite Winograd result)
    transforms = wino is not None and cpu_kernels.winograd_ready(dy.dtype)
    if transforms:
        dy = _contiguous(dy, "conv2d.wino_dy")  # (what the transforms read)
    if need[0] and transforms:
        dx = winograd_input_grad(weight, dy, g)  # None: not finite, recomputed below
    if need[0] and dx is None:
        path = input_grad_path(g, c_out, groups)
        if path == "transposed" and not _all_finite(weight):  # its products include dy's padding zeros times the
            # weights, NaN for an inf/NaN weight where the reference (and PyTorch) add only real terms: the scatter
            path = scatter_path(g, groups)
        chunked = len(ctx.__dict__.get("col_chunks", ())) > 1  # the forward ran split (im2col path)
        if not chunked and path == "transposed":
            dx, dy_pad = _input_grad_transposed(weight, dy, g, groups)
        elif not chunked:
            dx = INPUT_GRAD_PATHS[path](weight, dy, g, groups)
        else:  # the path chosen for the whole batch, run per chunk of it at once
            dx = _workspace.buffer("conv2d.dx_out", tuple(x.shape), x.dtype)  # free again once dropped

            def run(lo: int, hi: int) -> None:
                gk = dataclasses.replace(g, n=hi - lo)
                if path == "transposed":
                    dx[lo:hi] = _input_grad_transposed(weight, dy[lo:hi], gk, groups)[0]
                else:  # written in place (with the compiled kernels: the chunk's scatter is one call)
                    INPUT_GRAD_PATHS[path](weight, dy[lo:hi], gk, groups, out=dx[lo:hi])

            _batch_chunks(g.n, g.c * g.offsets * g.oh * g.ow, run)  # (the forward's measure: a sample's columns)
    dw = None
    if need[1]:
        xs, col_chunks = ctx.__dict__.get("xs"), ctx.__dict__.get("col_chunks")
        if wino is not None:
            dw = winograd_weight_grad(dy, wino, tuple(weight.shape)) if transforms and wino else None
            if dw is None:  # an inf or NaN: the shift path's dW (the reference's where that is not finite)
                dw = conv2d_weight_grad_shift_numpy(dy, padded_shifts(x, shift_geometry(g), "conv2d.xs"), g, groups,
                                                    tuple(weight.shape), dy_pad)
        elif xs is not None:
            dw = conv2d_weight_grad_shift_numpy(dy, xs, g, groups, tuple(weight.shape), dy_pad)
        elif col_chunks is not None:  # the forward's chunks at once, each where its columns are; added in order
            sums: list[Any] = [None] * len(col_chunks)

            def dw_chunks(k0: int, k1: int) -> None:
                for k in range(k0, k1):
                    lo, hi, cols = col_chunks[k]
                    sums[k] = conv2d_weight_grad_numpy(dy[lo:hi], cols, dataclasses.replace(g, n=hi - lo), groups,
                                                       tuple(weight.shape))

            cpu_threads.parallel_for(len(col_chunks), dw_chunks)
            dw = sums[0]
            for part in sums[1:]:
                dw += part
        else:
            dw = conv2d_weight_grad_numpy(dy, ctx.cols, g, groups, tuple(weight.shape))
    return dx, dw, db


def max_pool2d_numpy(x: np.ndarray, g: Conv2dGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(y, argmax int32) of max pooling, separably: first a running maximum along each row over the kw strided column
    views of the (-inf) padded input (its column index ``j`` kept), then a running maximum of those row maxima over
    the kh row views (``i * kw + j`` kept). Row-major order makes this the window's first maximum, as the reference:
    each row keeps its first maximum, each later row must be strictly greater. kh + kw - 2 steps instead of
    kh * kw - 1, and the row steps read contiguous rows (NumPy's vector loops) where a window view of stride 2 runs
    elementwise (7x slower at LeNet's 2x2 pooling; on exact 2x2 tiles the column views also fold into one long
    axis). Each step is branch-free: ``maximum(v, m)`` returns its second operand on ties (so m keeps the earlier
    value, -0.0 included, exactly as ``copyto(m, v, where=v > m)``) and the index takes ``a + win * (k - a)``;
    masked copies with data-dependent masks ran 5x slower. Input with a NaN (which ``maximum`` carries into y, found
    by ``_all_finite``: one dot product of y with itself) takes the reference's argmax (the last NaN of a window),
    with y that NaN (as PyTorch: y is the winning element in every window). A window of only -inf (padding included) picks its first in-bounds element, as the reference
    (``pooling.window_max``). The compiled kernel (``cpu_kernels.max_pool2d``), where it applies, computes the same y
    and argmax in one pass, NaN windows included."""
    y = _workspace.buffer("max_pool2d.out", (g.n, g.c, g.oh, g.ow), x.dtype)  # the output, free again once dropped
    arg = _workspace.buffer("max_pool2d.argmax", y.shape, np.int32)  # kept out of reuse while saved for backward
    if cpu_kernels.max_pool2d(x, g, y, arg):
        return y, arg
    xpad = _padded(x, g, -np.inf, "max_pool2d.pad")
    rows = xpad[:, :, :g.dh * (g.kh - 1) + g.sh * (g.oh - 1) + 1]  # the rows some window reaches
    hshape = (g.n, g.c, rows.shape[2], g.ow)
    hmax = _workspace.buffer("max_pool2d.row_max", hshape, x.dtype)
    np.copyto(hmax, rows[..., g.window(0, 0)[1]])
    harg = _workspace.buffer("max_pool2d.row_arg", hshape, np.int32)
    if g.kw == 1:
        harg.fill(0)
    _running_max(hmax, harg, [(rows[..., g.window(0, j)[1]], j) for j in range(1, g.kw)], "max_pool2d.row",
                 a_zero=True)
    np.copyto(y, hmax[:, :, g.window(0, 0)[0]])
    np.copyto(arg, harg[:, :, g.window(0, 0)[0]])
    steps = []
    for i in range(1, g.kh):
        hs = g.window(i, 0)[0]
        steps.append((hmax[:, :, hs], np.add(harg[:, :, hs], np.int32(i * g.kw),
                                              out=_workspace.buffer(f"max_pool2d.row_arg{i}", y.shape, np.int32))))
    _running_max(y, arg, steps, "max_pool2d.col")
    if not _all_finite(y) and np.isnan(y).any():  # a NaN in some window: the reference's argmax (its last NaN)
        cols = im2col(x, g, pad_value=-math.inf).reshape(g.n, g.c, g.offsets, g.oh, g.ow)
        y_ref, arg_ref = window_max(np, cols, g)
        np.copyto(arg, arg_ref)
        # y stays the winning element (signed zeros included: NumPy's max keeps the last of +0.0/-0.0), that NaN too
        np.copyto(y, np.take_along_axis(cols, arg_ref[:, :, None], axis=2)[:, :, 0], where=np.isnan(y_ref))
        return y, arg
    if g.pt or g.pl:  # only top/left padding can come first in a window (every window starts in it or the input)
        np.copyto(arg, first_inbounds_offset(np, g), where=y == -np.inf)
    return y, arg


def _running_max(m: np.ndarray, a: np.ndarray, steps: list[tuple[np.ndarray, Any]], tag: str,
                 a_zero: bool = False) -> None:
    """For each (v, k) in order: ``a = where(v > m, k, a)`` and ``m = maximum(v, m)`` in place (m and a
    C-contiguous, k an int or an int32 array of m's shape; ties and -0.0 keep m, NaN propagates into m). ``v > m``
    is read off as ``maximum(v, m) != m`` (equal for ties, -0.0 included, since maximum then returns m): a compare of
    two contiguous arrays, where comparing a strided view runs elementwise (3x slower). ``a_zero``: a holds only
    zeros (unread; the first step writes it)."""
    if not steps:
        return
    win = _workspace.buffer(f"{tag}.win", m.shape, bool)
    prev = _workspace.buffer(f"{tag}.prev", m.shape, m.dtype)
    step = _workspace.buffer(f"{tag}.step", m.shape, np.int32)
    for v, k in steps:
        np.copyto(prev, m)
        np.maximum(v, prev, out=m)
        np.not_equal(m, prev, out=win)
        if a_zero and isinstance(k, int):  # a = win * k
            np.copyto(a, win)
            if k != 1:
                a *= np.int32(k)
            a_zero = False
            continue
        np.subtract(np.int32(k) if isinstance(k, int) else k, a, out=step)
        np.multiply(step, win, out=step)
        a += step


def max_pool2d_backward_numpy(argmax: np.ndarray, dy: np.ndarray, g: Conv2dGeometry) -> np.ndarray:
    """dx of max pooling: for each window offset, dy where the argmax is that offset added into the strided view
    of dx it came from (one pass per offset, no (N, C, oh, ow, kh*kw) temporary). When the windows tile the input
    exactly (stride = kernel, no dilation or padding, the sizes divisible: e.g. 2x2 pooling of even sizes), each
    input pixel is in one window: the routed values are written straight into a fresh dx, with no zeroed
    accumulator. For finite dy a routed value is the product ``hit * dy`` (a pixel that did not win gets
    ``0 * dy``: -0.0 where dy < 0, which compares equal to the reference's +0.0); dy with an inf or NaN (``0 * inf``
    is NaN) takes ``where(hit, dy, 0)``, the reference's rule (and PyTorch's: 0 for the pixels that did not win).
    The compiled kernel (``cpu_kernels.max_pool2d_backward``), where it applies, computes the same dx in one pass."""
    tiles = (g.sh == g.kh and g.sw == g.kw and g.dh == g.dw == 1 and g.oh * g.kh == g.hp == g.h
             and g.ow * g.kw == g.wp == g.w)
    if cpu_kernels.pooling_applies(g, argmax, dy):
        dx = _workspace.buffer("max_pool2d.dx", (g.n, g.c, g.h, g.w), dy.dtype)
        if cpu_kernels.max_pool2d_backward(argmax, dy, g, dx, (2 if _all_finite(dy) else 1) if tiles else 0):
            return dx
    hit = _workspace.buffer("max_pool2d.hit", dy.shape, bool)
    finite = _all_finite(dy)

    def route(k: int, out: np.ndarray) -> None:  # out = dy where argmax == k, else 0
        np.equal(argmax, k, out=hit)
        if finite:
            np.multiply(hit, dy, out=out)
        else:
            np.copyto(out, np.where(hit, dy, dy.dtype.type(0)))

    if tiles:
        dx = _workspace.buffer("max_pool2d.dx", (g.n, g.c, g.h, g.w), dy.dtype)  # every entry written below
        for k in range(g.offsets):
            route(k, dx[(slice(None), slice(None)) + g.window(k // g.kw, k % g.kw)])
        return dx
    dxp = _workspace.buffer("max_pool2d.dx_pad", (g.n, g.c, g.hp, g.wp), dy.dtype)
    dxp.fill(0)
    share = _workspace.buffer("max_pool2d.share", dy.shape, dy.dtype)
    for k in range(g.offsets):
        route(k, share)
        dxp[(slice(None), slice(None)) + g.window(k // g.kw, k % g.kw)] += share
    return dxp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]


def _all_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no inf or NaN: for float32/64 one dot product of a with itself (an overflow to inf only
    sends a finite array down the exact path), else ``isfinite(a).all()``."""
    if a.dtype in (np.float32, np.float64):
        r = a.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):  # (NumPy reports the dot's overflow otherwise)
            return bool(np.isfinite(np.dot(r, r)))
    return bool(np.isfinite(a).all())


def _max_pool2d_forward(ctx: Context, x: np.ndarray, *, kernel_size: Any, stride: Any = None, padding: Any = 0,
                        dilation: Any = 1, ceil_mode: bool = False) -> Any:
    if _kernels_answer(registry.MAX_POOL2D, x.dtype) or x.dtype.kind != "f":
        return NotImplemented  # kernels (shim), or an error message from the reference
    g = pool2d_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    ctx.args = (tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
    ctx.geometry = g
    if not _split(g.n, g.c * g.h * g.w):
        y, ctx.argmax = max_pool2d_numpy(x, g)
        return y
    chunks = _batch_chunks(g.n, g.c * g.h * g.w, lambda lo, hi: max_pool2d_numpy(x[lo:hi],
                                                                                   dataclasses.replace(g, n=hi - lo)))
    y = _workspace.buffer("max_pool2d.out_all", (g.n, g.c, g.oh, g.ow), x.dtype)  # free again once dropped
    for lo, hi, (yk, _) in chunks:
        y[lo:hi] = yk
    ctx.argmax, ctx.arg_chunks = None, [(lo, hi, arg) for lo, hi, (_, arg) in chunks]
    return y


def _max_pool2d_backward(ctx: Context, dy: Any) -> Any:
    g = ctx.__dict__.get("geometry")
    if g is None or type(dy) is not np.ndarray or ctx.create_graph or tuple(dy.shape) != (g.n, g.c, g.oh, g.ow) \
            or _kernels_answer(registry.MAX_POOL2D_BACKWARD, dy.dtype):
        if ctx.__dict__.get("arg_chunks") is not None:  # the reference's backward reads the whole argmax
            ctx.argmax, ctx.arg_chunks = np.concatenate([arg for _, _, arg in ctx.arg_chunks]), None
        return NotImplemented
    arg_chunks = ctx.__dict__.get("arg_chunks")
    if arg_chunks is None:
        return max_pool2d_backward_numpy(ctx.argmax, dy, g)
    dx = _workspace.buffer("max_pool2d.dx_all", (g.n, g.c, g.h, g.w), dy.dtype)  # free again once dropped

    def run(k0: int, k1: int) -> None:  # the forward's chunks at once
        for lo, hi, arg in arg_chunks[k0:k1]:
            dx[lo:hi] = max_pool2d_backward_numpy(arg, dy[lo:hi], dataclasses.replace(g, n=hi - lo))

    cpu_threads.parallel_for(len(arg_chunks), run)
    return dx


register_override(Conv2d.name, "forward", "numpy", _conv2d_forward)
register_override(Conv2d.name, "backward", "numpy", _conv2d_backward)
register_override(MaxPool2d.name, "forward", "numpy", _max_pool2d_forward)
register_override(MaxPool2d.name, "backward", "numpy", _max_pool2d_backward)
