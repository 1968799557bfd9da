"""Launch code shared by the GPU and the CPU shim: block/grid choice, dtype dispatch, argument preparation.

Each function here has the signature of the ``xpnn.functional`` function it overrides, preceded by the kernel
``loader`` and the array namespace ``xp``. Arguments were validated by ``xpnn.functional`` (shapes, dtypes, labels
in range); what is checked here is what the kernels assume: C-contiguous arrays, the exact C scalar types, sizes.
A function returns ``NotImplemented`` for a case it leaves to the reference code.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import dtype_name
from . import registry, scratch
from .loader import KernelLoader

FLAT_BLOCK = 256  # threads per block of the grid-stride kernels over flat buffers
MAX_GRID = 65535  # blocks per launch; the kernels loop (grid-stride) over whatever is left
PACKS_PER_THREAD = 4  # wide rows: at most this many 16-byte packs per thread (XPNN_ROW_UNROLL in common.cuh)
NARROW_ITEMS = 4  # narrow rows: about this many entries per lane
NARROW_MAX_COLS = 64  # rows up to this wide get a few lanes each (several rows per warp)
WARP_ROW_MAX_COLS = 256  # rows up to this wide get a warp each; wider rows a block each
ROW_GROUP_BLOCK = 256  # threads per block when rows get lanes or warps (8 warps)
COUNT_MAX_GRID = 1024  # blocks of the target-counting kernel (an atomic add each)
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # XPNN_REDUCTION_* in softmax_cross_entropy.cu


def row_block(n_cols: int, itemsize: int = 4) -> int:
    """Threads per block for a row of ``n_cols`` entries of ``itemsize`` bytes: the smallest power of two in
    [32, 1024] that leaves each thread at most PACKS_PER_THREAD 16-byte packs -- then the row stays in registers
    between the two passes of softmax/log_softmax/cross-entropy (xpnn_row_two_pass in kernels/common.cuh), and
    each thread has up to that many 128-bit loads in flight."""
    want = max(1, -(-(n_cols // (16 // itemsize)) // PACKS_PER_THREAD))
    return min(1024, max(32, 1 << (want - 1).bit_length()))


def row_lanes(n_cols: int) -> int:
    """Lanes per row: a power of two in [1, 32] for rows up to WARP_ROW_MAX_COLS wide, 0 (a block) for wider."""
    if n_cols > WARP_ROW_MAX_COLS:
        return 0
    if n_cols > NARROW_MAX_COLS:
        return 32
    want = max(1, -(-n_cols // NARROW_ITEMS))
    return min(32, 1 << (want - 1).bit_length())


def cross_entropy_lanes(n_cols: int, itemsize: int = 4) -> int:
    """Lanes per row of the cross-entropy kernel: for narrow rows (up to NARROW_MAX_COLS) a power of two giving each
    lane about two 16-byte packs of the row (so every lane has a whole pack wherever the row starts: 2 lanes for
    10 float32 classes, 16 rows per warp; ``row_lanes``' 4 left 2 lanes of 4 without a pack), else ``row_lanes``.
    The kernel's per-row work beyond the row (the target's logit, the loss) is then spread over more rows per
    warp."""
    if n_cols > NARROW_MAX_COLS:
        return row_lanes(n_cols)
    want = max(1, -(-n_cols // (2 * (16 // itemsize))))
    return min(32, 1 << (want - 1).bit_length())


def row_launch(n_rows: int, n_cols: int, max_block: int = 1024, itemsize: int = 4,
               lanes: int | None = None) -> tuple[int, int, int]:
    """(grid, block, lanes) of a row kernel over an (n_rows, n_cols) matrix of ``itemsize``-byte entries,
    n_rows >= 1; ``max_block`` is the kernel's ``__launch_bounds__``; ``lanes`` as in kernels/common.cuh.

    Narrow rows (like (65536, 10)) get a few lanes each (4 for 10 classes: 8 rows per warp, two shuffle steps;
    1 for 2-4 classes: a thread per row, no reduction at all); rows up to 256 a warp each; wider rows a block each
    (block size from ``row_block``). A block per narrow row would leave most threads idle and pay two barriers
    per row. ``lanes``: the lanes per row chosen by the caller instead of ``row_lanes(n_cols)``.
    """
    lanes = row_lanes(n_cols) if lanes is None else lanes
    if lanes:
        rows_per_block = (min(ROW_GROUP_BLOCK, max_block) // 32) * (32 // lanes)
        blocks = -(-n_rows // rows_per_block)
        block = min(ROW_GROUP_BLOCK, max_block, 32 * -(-n_rows // (32 // lanes)))  # no idle warps for few rows
        return max(1, min(MAX_GRID, blocks)), block, lanes
    return max(1, min(MAX_GRID, n_rows)), min(row_block(n_cols, itemsize), max_block), 0


SPLIT_MIN_COLS = 16384  # rows at least this wide ...
SPLIT_MAX_ROWS = 256  # ... and fewer rows than this are split across blocks (kernels/row_split.cu)
SPLIT_TARGET_BLOCKS = 512  # aim for about this many blocks over the whole matrix (a few per SM)
SPLIT_MIN_CHUNK = 4096  # entries per chunk at least
SPLIT_OPS = {"logsumexp": 0, "softmax": 1, "log_softmax": 2}  # XPNN_SPLIT_* in row_split.cu


def row_split(n_rows: int, n_cols: int) -> int:
    """Entries per chunk when the rows should be split across blocks (a multiple of 64, so each chunk keeps the
    row's 16-byte alignment), else 0: only few rows of at least SPLIT_MIN_COLS entries are split."""
    if n_cols < SPLIT_MIN_COLS or n_rows >= SPLIT_MAX_ROWS:
        return 0
    chunks = min(-(-SPLIT_TARGET_BLOCKS // n_rows), n_cols // SPLIT_MIN_CHUNK)
    if chunks < 2:
        return 0
    return -(-(-(-n_cols // chunks)) // 64) * 64


FLAT_BLOCKS_PER_SM = 32  # grid-stride kernels: at most this many blocks per multiprocessor (4 waves of 8 resident
# 256-thread blocks); more blocks only add scheduling, the threads loop over the rest


def flat_grid(n: int, block: int = FLAT_BLOCK, *, per_thread: int = 1, sm_count: int | None = None) -> int:
    """Blocks of a grid-stride launch over ``n`` elements of which each thread takes ``per_thread`` per iteration
    (``16 // itemsize`` for the kernels reading 16-byte packs: a grid sized for one element per thread would leave
    3/4 of its float32 blocks without a pack), capped at FLAT_BLOCKS_PER_SM blocks per multiprocessor when
    ``sm_count`` is known (the GPU), else at MAX_GRID. Never more than MAX_GRID: kernels/conv.cu relies on
    grid * block < 2**32 (it decodes its first index and the grid's stride with 32-bit divisions)."""
    cap = MAX_GRID if sm_count is None else min(MAX_GRID, FLAT_BLOCKS_PER_SM * sm_count)
    return max(1, min(cap, -(-n // (block * per_thread))))


def pack_items(dtype: Any) -> int:
    """Entries of ``dtype`` in one 16-byte pack (xpnn_pack in kernels/common.cuh)."""
    return 16 // np.dtype(dtype_name(dtype)).itemsize


def _contiguous(x: Any) -> Any:
    return x if x.flags.c_contiguous else x.copy(order="C")


def _scalar(dtype: str, value: float) -> np.generic:
    return np.dtype(dtype).type(value)


# ---- elementwise activation backwards ----------------------------------------------------------------------------

def elementwise(row: registry.ElementwiseKernel, loader: KernelLoader, xp: Any, *arrays: Any,
                **scalars: float) -> Any:
    """The launcher of every elementwise row (``providers`` binds ``row``): the op's arrays (C-contiguous) and its
    keyword parameters in the row's order, as float64 (a string parameter of ``row.choices`` as its index; the
    parameters were validated by the op's ``check``)."""
    kernel = loader.elementwise(row, dtype_name(arrays[-1].dtype))
    choices = dict(row.choices)
    values = (float(choices[name].index(scalars[name]) if name in choices else scalars[name]) for name in row.scalars)
    return kernel(*(_contiguous(a) for a in arrays), *values)


# ---- row kernels: logsumexp, softmax, log_softmax, cross-entropy ---------------------------------------------------

def _rows(row: registry.RawKernel, loader: KernelLoader, xp: Any, x: Any, axis: int,
          out_shape: tuple[int, ...]) -> Any:
    """Run row kernel ``row`` over the rows of 2-D ``x`` into a new array of ``out_shape``."""
    if x.ndim != 2 or axis not in (-1, 1):
        return NotImplemented
    n_rows, n_cols = (int(s) for s in x.shape)
    if n_cols == 0:
        return NotImplemented  # the reference decides what an empty row means
    out = xp.empty(out_shape, dtype=x.dtype)
    if n_rows == 0:
        return out
    chunk = row_split(n_rows, n_cols)
    if chunk:
        return _rows_split(row.name, loader, xp, _contiguous(x), out, chunk)
    kernel = loader.raw(row, dtype_name(x.dtype))
    grid, block, lanes = row_launch(n_rows, n_cols, kernel.max_block, x.dtype.itemsize)
    kernel.launch(grid, block, (_contiguous(x), out, np.int64(n_rows), np.int64(n_cols), np.int32(lanes)))
    return out


def _rows_split(op: str, loader: KernelLoader, xp: Any, x: Any, out: Any, chunk: int) -> Any:
    """Few wide rows: chunk partials (one launch), then every chunk finishes its row (a second launch)."""
    n_rows, n_cols = (int(s) for s in x.shape)
    dtype = dtype_name(x.dtype)
    first = loader.raw(registry.ROW_CHUNK_MAX_SUM, dtype)
    finish = loader.raw(registry.ROW_CHUNK_FINISH, dtype)
    blocks = n_rows * -(-n_cols // chunk)
    grid = min(MAX_GRID, blocks)
    block = min(row_block(chunk, x.dtype.itemsize), first.max_block)
    acc = xp.float64 if dtype == "float64" else xp.float32
    partials = scratch.zeroed(xp, x, "rows.partials", 2 * blocks, acc)  # every entry is written before read
    dims = (np.int64(n_rows), np.int64(n_cols), np.int64(chunk))
    first.launch(grid, block, (x, partials) + dims)
    finish.launch(grid, block, (x, partials, out) + dims + (np.int32(SPLIT_OPS[op]),))
    return out


def logsumexp(loader: KernelLoader, xp: Any, x: Any, axis: int = -1, keepdims: bool = False) -> Any:
    """(N, C) -> (N,) (``keepdims`` is left to the reference)"""
    if keepdims:
        return NotImplemented
    return _rows(registry.LOGSUMEXP, loader, xp, x, axis, (int(x.shape[0]),))


def softmax(loader: KernelLoader, xp: Any, x: Any, axis: int = -1) -> Any:
    return _rows(registry.SOFTMAX, loader, xp, x, axis, tuple(int(s) for s in x.shape))


def log_softmax(loader: KernelLoader, xp: Any, x: Any, axis: int = -1) -> Any:
    return _rows(registry.LOG_SOFTMAX, loader, xp, x, axis, tuple(int(s) for s in x.shape))


def cross_entropy_with_grad(loader: KernelLoader, xp: Any, logits: Any, target: Any, *, reduction: str = "mean",
                            ignore_index: int = -100, label_smoothing: float = 0.0) -> Any:
    """(loss, grad): for the mean one kernel counting the valid targets, then one kernel writing the gradient and
    the loss -- per row for "none", else summed inside the kernel (no further launches, no allocation but the
    outputs: the counters and partial sums are kept across calls)."""
    n_rows, n_cols = (int(s) for s in logits.shape)
    if n_rows == 0 or n_cols == 0:
        return NotImplemented  # the reference decides what an empty batch means
    dtype = dtype_name(logits.dtype)
    logits = _contiguous(logits)
    target = _contiguous(xp.astype(target, xp.int64, copy=False))  # labels were validated by the caller
    kernel = loader.raw(registry.CROSS_ENTROPY_WITH_GRAD, dtype)
    itemsize = logits.dtype.itemsize
    grid, block, lanes = row_launch(n_rows, n_cols, kernel.max_block, itemsize, cross_entropy_lanes(n_cols, itemsize))
    grad = xp.empty((n_rows, n_cols), dtype=logits.dtype)
    loss = xp.empty((n_rows,) if reduction == "none" else (), dtype=logits.dtype)
    # kept across calls (xpnn._cuda.scratch): per-block loss sums, and [valid targets, blocks done], which the
    # kernel leaves at zero for the next call
    partials = scratch.zeroed(xp, logits, "cross_entropy.partials", grid, xp.float64)
    counters = scratch.zeroed(xp, logits, "cross_entropy.counters", 2, xp.uint64)
    try:
        if reduction == "mean":
            loader.raw(registry.CROSS_ENTROPY_COUNT, dtype).launch(
                min(COUNT_MAX_GRID, flat_grid(n_rows)), FLAT_BLOCK,
                (target, np.int64(n_rows), np.int64(ignore_index), counters))
        kernel.launch(grid, block, (
            logits, target, counters, grad, loss, partials, np.int64(n_rows), np.int64(n_cols),
            np.int64(ignore_index), np.float64(label_smoothing), np.int32(REDUCTIONS[reduction]), np.int32(lanes),
        ))
    except Exception:
        counters[...] = 0  # a launch that failed part way must not leave its counts to the next call
        raise
    return loss, grad


# ---- optimizer updates over flat buffers, in place --------------------------------------------------------------

def _flat_update(row: registry.RawKernel, loader: KernelLoader, arrays: tuple[Any, ...],
                 scalars: tuple[Any, ...]) -> Any:
    """Launch optimizer kernel ``row`` over ``arrays`` (param first; None -> placeholder never touched), then
    ``n`` and ``scalars`` (host scalars; the capturable kernels' 0-d device arrays lead theirs)."""
    param = arrays[0]
    present = [a for a in arrays if a is not None]
    if not all(a.flags.c_contiguous for a in present):
        return NotImplemented  # an in-place update through a copy would be lost
    n = int(math.prod(param.shape))
    if n == 0:
        return None
    args = tuple(param if a is None else a for a in arrays) + (np.int64(n),) + scalars
    kernel = loader.raw(row, dtype_name(param.dtype))
    kernel.launch(flat_grid(n, per_thread=pack_items(param.dtype), sm_count=kernel.sm_count), FLAT_BLOCK, args)
    return None


def adam_update(loader: KernelLoader, xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
                max_exp_avg_sq: Any = None, *, step: int, lr: float, beta1: float, beta2: float, eps: float,
                weight_decay: float = 0.0, decoupled_weight_decay: bool = False, amsgrad: bool = False,
                maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    decay = 1 - lr * weight_decay if decoupled_weight_decay else 1.0
    scalars = tuple(_scalar(t, v) for v in (
        beta1, 1 - beta1, beta2, 1 - beta2, eps, 0.0 if decoupled_weight_decay else weight_decay, decay,
        lr / (1 - beta1**step), math.sqrt(1 - beta2**step),
    )) + (np.int32(decoupled_weight_decay), np.int32(amsgrad), np.int32(maximize))
    vmax = max_exp_avg_sq if amsgrad else None
    return _flat_update(registry.ADAM_UPDATE, loader, (param, grad, exp_avg, exp_avg_sq, vmax), scalars)


def sgd_update(loader: KernelLoader, xp: Any, param: Any, grad: Any, momentum_buffer: Any = None, *, lr: float,
               momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
               first_step: bool = False, maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    use_momentum = momentum != 0
    scalars = tuple(_scalar(t, v) for v in (lr, momentum, 1 - dampening, weight_decay)) + tuple(
        np.int32(f) for f in (use_momentum, nesterov, first_step, maximize))
    buf = momentum_buffer if use_momentum else None
    return _flat_update(registry.SGD_UPDATE, loader, (param, grad, buf), scalars)


def adagrad_update(loader: KernelLoader, xp: Any, param: Any, grad: Any, state_sum: Any, *, step: int, lr: float,
                   lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                   maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    clr = lr / (1 + (step - 1) * lr_decay)
    scalars = tuple(_scalar(t, v) for v in (clr, weight_decay, eps)) + (np.int32(maximize),)
    return _flat_update(registry.ADAGRAD_UPDATE, loader, (param, grad, state_sum), scalars)


def rmsprop_update(loader: KernelLoader, xp: Any, param: Any, grad: Any, square_avg: Any, grad_avg: Any = None,
                   momentum_buffer: Any = None, *, lr: float, alpha: float, eps: float, weight_decay: float,
                   momentum: float, centered: bool, maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    use_momentum = momentum > 0
    scalars = tuple(_scalar(t, v) for v in (lr, alpha, 1 - alpha, eps, weight_decay, momentum)) + tuple(
        np.int32(f) for f in (centered, use_momentum, maximize))
    return _flat_update(registry.RMSPROP_UPDATE, loader, (
        param, grad, square_avg, grad_avg if centered else None, momentum_buffer if use_momentum else None), scalars)


# ---- convolution and pooling (kernels/conv.cu): geometry from xpnn.functional.conv.Conv2dGeometry ------------------

def _geometry_args(g: Any) -> tuple[np.generic, ...]:
    """(n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow) as the kernels' C types (long long sizes, int params)."""
    return (np.int64(g.n), np.int64(g.c), np.int64(g.h), np.int64(g.w), *(np.int32(v) for v in (
        g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl)), np.int64(g.oh), np.int64(g.ow))


def _gather_args(g: Any) -> tuple[np.generic, ...]:
    """The geometry and dh // sh, dw // sw (int32): the gathers (col2im, max-pool backward) step from kernel offset
    to offset by divmod(dilation, stride) (kernels/conv.cu, xpnn_axis)."""
    return (*_geometry_args(g), np.int32(g.dh // g.sh), np.int32(g.dw // g.sw))


def _fits(g: Any) -> bool:
    """The kernels index within an image with 32-bit ints (padded sides and output sides below 2**31)."""
    return max(g.hp, g.wp, g.oh, g.ow) < 2**31


def _flat_launch(row: registry.RawKernel, loader: KernelLoader, dtype: Any, n: int, args: tuple) -> None:
    if n > 0:
        kernel = loader.raw(row, dtype_name(dtype))
        kernel.launch(flat_grid(n, sm_count=kernel.sm_count), FLAT_BLOCK, args)


def im2col(loader: KernelLoader, xp: Any, x: Any, g: Any) -> Any:
    """x (N, C, H, W) -> cols (N, C, kh, kw, oh, ow), zero padding."""
    if not _fits(g):
        return NotImplemented
    cols = xp.empty((g.n, g.c, g.kh, g.kw, g.oh, g.ow), dtype=x.dtype)
    _flat_launch(registry.IM2COL, loader, x.dtype, int(math.prod(cols.shape)),
                 (_contiguous(x), cols, *_geometry_args(g)))
    return cols


def col2im(loader: KernelLoader, xp: Any, cols: Any, g: Any) -> Any:
    """cols (N, C, kh, kw, oh, ow) -> dx (N, C, H, W), summed in the accumulation type (gather, no atomics)."""
    if not _fits(g):
        return NotImplemented
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=cols.dtype)
    _flat_launch(registry.COL2IM, loader, cols.dtype, int(math.prod(dx.shape)),
                 (_contiguous(cols), dx, *_gather_args(g)))
    return dx


def max_pool2d(loader: KernelLoader, xp: Any, x: Any, g: Any) -> Any:
    """(y, argmax int32) of max pooling over x (N, C, H, W)."""
    if not _fits(g):
        return NotImplemented
    y = xp.empty((g.n, g.c, g.oh, g.ow), dtype=x.dtype)
    arg = xp.empty((g.n, g.c, g.oh, g.ow), dtype=xp.int32)
    _flat_launch(registry.MAX_POOL2D, loader, x.dtype, int(math.prod(y.shape)),
                 (_contiguous(x), y, arg, *_geometry_args(g)))
    return y, arg


def max_pool2d_backward(loader: KernelLoader, xp: Any, argmax: Any, dy: Any, g: Any) -> Any:
    """dx (N, C, H, W): dy routed to each window's argmax (gather per input pixel)."""
    if not _fits(g):
        return NotImplemented
    if argmax.dtype != xp.int32:
        return NotImplemented
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype)
    _flat_launch(registry.MAX_POOL2D_BACKWARD, loader, dy.dtype, int(math.prod(dx.shape)),
                 (_contiguous(argmax), _contiguous(dy), dx, *_gather_args(g)))
    return dx


def adam_update_mixed(loader: KernelLoader, xp: Any, param: Any, master: Any, grad: Any, exp_avg: Any,
                      exp_avg_sq: Any, max_exp_avg_sq: Any = None, *, step: int, lr: float, beta1: float,
                      beta2: float, eps: float, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                      amsgrad: bool = False, maximize: bool = False) -> Any:
    """float16 ``param`` and ``grad``, float32 ``master`` and moments: one launch (kernels/adam_mixed.cu); the
    scalars are rounded to float32, as the reference (adam_update on the float32 master) rounds them."""
    decay = 1 - lr * weight_decay if decoupled_weight_decay else 1.0
    scalars = tuple(_scalar("float32", v) for v in (
        beta1, 1 - beta1, beta2, 1 - beta2, eps, 0.0 if decoupled_weight_decay else weight_decay, decay,
        lr / (1 - beta1**step), math.sqrt(1 - beta2**step),
    )) + (np.int32(decoupled_weight_decay), np.int32(amsgrad), np.int32(maximize))
    arrays = (param, master, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    if not all(a.flags.c_contiguous for a in arrays if a is not None):
        return NotImplemented  # an in-place update through a copy would be lost
    n = int(math.prod(param.shape))
    if n == 0:
        return None
    args = arrays[:5] + (master if arrays[5] is None else arrays[5], np.int64(n)) + scalars
    kernel = loader.raw(registry.ADAM_UPDATE_MIXED, "float16")
    kernel.launch(flat_grid(n, per_thread=8, sm_count=kernel.sm_count), FLAT_BLOCK, args)  # 8 entries per thread
    return None


# ---- recurrent cells (kernels/rnn_cells.cu; the reference is xpnn/functional/recurrent.py) ------------------------
def _cell_fits(rows: int, gates: int, hidden: int) -> bool:
    """The kernels index in 32 bits: rows * gates * hidden below 2^31 (else the reference runs)."""
    return rows * gates * hidden < 2**31


def _cell_launch(row: registry.RawKernel, loader: KernelLoader, dtype: Any, n: int, hidden: int,
                 arrays: tuple) -> None:
    _flat_launch(row, loader, dtype, n, (*arrays, np.uint32(n), np.uint32(hidden)))


def lstm_cell(loader: KernelLoader, xp: Any, gx: Any, gh: Any, c: Any) -> Any:
    """``(h', c')`` (N, H) of one LSTM step from gx, gh (N, 4H) and c (N, H) (validated by the op)."""
    rows, hidden = c.shape
    if not _cell_fits(rows, 4, hidden):
        return NotImplemented
    h_out, c_out = xp.empty(c.shape, dtype=c.dtype), xp.empty(c.shape, dtype=c.dtype)
    _cell_launch(registry.LSTM_CELL, loader, c.dtype, rows * hidden, hidden,
                 (_contiguous(gx), _contiguous(gh), _contiguous(c), h_out, c_out))
    return h_out, c_out


def lstm_cell_backward(loader: KernelLoader, xp: Any, gx: Any, gh: Any, c: Any, dh: Any, dc: Any) -> Any:
    """``(dgates (N, 4H), dc_prev (N, H))`` of one LSTM step."""
    rows, hidden = c.shape
    if not _cell_fits(rows, 4, hidden):
        return NotImplemented
    dgates, dc_prev = xp.empty(gx.shape, dtype=c.dtype), xp.empty(c.shape, dtype=c.dtype)
    _cell_launch(registry.LSTM_CELL_BACKWARD, loader, c.dtype, rows * hidden, hidden,
                 (_contiguous(gx), _contiguous(gh), _contiguous(c), _contiguous(dh), _contiguous(dc), dgates,
                  dc_prev))
    return dgates, dc_prev


def gru_cell(loader: KernelLoader, xp: Any, gx: Any, gh: Any, h: Any) -> Any:
    """``h'`` (N, H) of one GRU step from gx, gh (N, 3H) and h (N, H)."""
    rows, hidden = h.shape
    if not _cell_fits(rows, 3, hidden):
        return NotImplemented
    h_out = xp.empty(h.shape, dtype=h.dtype)
    _cell_launch(registry.GRU_CELL, loader, h.dtype, rows * hidden, hidden,
                 (_contiguous(gx), _contiguous(gh), _contiguous(h), h_out))
    return h_out


def gru_cell_backward(loader: KernelLoader, xp: Any, gx: Any, gh: Any, h: Any, dh: Any) -> Any:
    """``(dgx, dgh (N, 3H), dh_prev (N, H))`` of one GRU step (``dh_prev``: the part through ``z * h``)."""
    rows, hidden = h.shape
    if not _cell_fits(rows, 3, hidden):
        return NotImplemented
    dgx, dgh = xp.empty(gx.shape, dtype=h.dtype), xp.empty(gx.shape, dtype=h.dtype)
    dh_prev = xp.empty(h.shape, dtype=h.dtype)
    _cell_launch(registry.GRU_CELL_BACKWARD, loader, h.dtype, rows * hidden, hidden,
                 (_contiguous(gx), _contiguous(gh), _contiguous(h), _contiguous(dh), dgx, dgh, dh_prev))
    return dgx, dgh, dh_prev
