"""Launch code of the transformer kernels (``kernels/layer_norm.cu``, ``kernels/attention.cu``,
``kernels/embedding.cu``): grid/block choice and argument preparation, shared by the GPU and the CPU shim.

Each function takes the kernel ``loader`` and the array namespace ``xp`` first (``xpnn._cuda.providers.LAUNCHERS``
binds them), then the arrays and parameters of the op it serves. Arguments were validated by the op; what is
checked here is what the kernels assume (sizes, contiguity, exact C scalar types). ``NotImplemented`` leaves a
call to the reference.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..backend import dtype_name
from . import registry
from .launch import FLAT_BLOCK, MAX_GRID, _contiguous, flat_grid, row_launch, row_lanes
from .loader import KernelLoader

# ---- layer norm ---------------------------------------------------------------------------------------------------

LN_ENTRIES_PER_THREAD = {2: 16, 4: 16, 8: 8}  # itemsize -> entries a thread holds per chunk (XPNN_LN_PACKS packs)
LN_BWD_MAX_GROUPS = 1024  # row groups of the backward at most (each writes 2 * n_cols partial sums)


def _acc_dtype(xp: Any, dtype: Any) -> Any:
    return xp.float64 if dtype_name(dtype) == "float64" else xp.float32


def layer_norm_launch(n_rows: int, n_cols: int, itemsize: int, max_block: int) -> tuple[int, int, int]:
    """(grid, block, lanes) of the layer-norm kernels: lanes of a warp per row up to 256 entries (row_lanes), else
    a block per row of the smallest power of two in [32, max_block] threads that holds the row in one chunk (every
    thread at most LN_ENTRIES_PER_THREAD entries: the row is read from memory once)."""
    lanes = row_lanes(n_cols)
    if lanes:
        return row_launch(n_rows, n_cols, max_block, itemsize, lanes)
    want = -(-n_cols // LN_ENTRIES_PER_THREAD[itemsize])
    block = min(max_block, max(32, 1 << (want - 1).bit_length()))
    return max(1, min(MAX_GRID, n_rows)), block, 0


def _rows_2d(x: Any, n_cols: int) -> Any:
    return _contiguous(x).reshape(-1, n_cols) if x.ndim != 2 else _contiguous(x)


def layer_norm(loader: KernelLoader, xp: Any, x: Any, weight: Optional[Any], bias: Optional[Any], n_cols: int,
               eps: float) -> Any:
    """(y, mean, rstd) of LayerNorm over the last ``n_cols`` entries of ``x`` (the flattened normalized_shape):
    y like x; mean and rstd of shape x.shape[:-k] (k normalized dims) flattened to (rows,), in float32 for float16
    (PyTorch's accumulation type), else x's dtype."""
    n_rows = int(math.prod(x.shape)) // n_cols if n_cols else 0
    if n_cols == 0 or n_rows == 0:
        return NotImplemented
    dtype = dtype_name(x.dtype)
    x2 = _rows_2d(x, n_cols)
    acc = _acc_dtype(xp, x.dtype)
    y = xp.empty(x2.shape, dtype=x.dtype)
    mean = xp.empty((n_rows,), dtype=acc)
    rstd = xp.empty((n_rows,), dtype=acc)
    kernel = loader.raw(registry.LAYER_NORM, dtype)
    grid, block, lanes = layer_norm_launch(n_rows, n_cols, x.dtype.itemsize, kernel.max_block)
    w = x2 if weight is None else _contiguous(weight).reshape(-1)
    b = x2 if bias is None else _contiguous(bias).reshape(-1)
    kernel.launch(grid, block, (x2, w, b, y, mean, rstd, np.int64(n_rows), np.int64(n_cols),
                                np.dtype(registry.ACC_DTYPES[dtype]).type(eps), np.int32(weight is not None),
                                np.int32(bias is not None), np.int32(lanes)))
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(loader: KernelLoader, xp: Any, x: Any, dy: Any, mean: Any, rstd: Any, weight: Optional[Any],
                        n_cols: int, *, need_weight: bool = True, need_bias: bool = True) -> Any:
    """(dx, dweight, dbias) of LayerNorm from the saved ``mean`` / ``rstd`` (rows,) in the accumulation dtype;
    dweight (dbias) is None without ``weight`` (``need_bias`` False). Two launches: dx and per-row-group partial
    sums of dweight / dbias, then the sum of the partials per column in group order (deterministic)."""
    n_rows = int(math.prod(x.shape)) // n_cols if n_cols else 0
    if n_cols == 0 or n_rows == 0:
        return NotImplemented
    dtype = dtype_name(x.dtype)
    acc = _acc_dtype(xp, x.dtype)
    if mean.dtype != acc or rstd.dtype != acc:
        return NotImplemented
    x2, dy2 = _rows_2d(x, n_cols), _rows_2d(dy, n_cols)
    kernel = loader.raw(registry.LAYER_NORM_BACKWARD, dtype)
    grid, block, lanes = layer_norm_launch(n_rows, n_cols, x.dtype.itemsize, kernel.max_block)
    groups_per_block = (block // 32) * (32 // lanes) if lanes else 1
    grid = max(1, min(grid, LN_BWD_MAX_GROUPS // groups_per_block))
    n_groups = grid * groups_per_block
    partials = xp.empty((2, n_groups, n_cols), dtype=acc)  # every entry is written by its group
    dx = xp.empty(x2.shape, dtype=x.dtype)
    has_w = weight is not None
    w = _contiguous(weight).reshape(-1) if has_w else x2
    kernel.launch(grid, block, (x2, dy2, _contiguous(mean), _contiguous(rstd), w, dx, partials, np.int64(n_rows),
                                np.int64(n_cols), np.int32(has_w), np.int32(lanes)))
    want_w, want_b = has_w and need_weight, need_bias
    dweight = xp.empty((n_cols,), dtype=x.dtype) if want_w else None
    dbias = xp.empty((n_cols,), dtype=x.dtype) if want_b else None
    if want_w or want_b:
        params = loader.raw(registry.LAYER_NORM_BACKWARD_PARAMS, dtype)
        params.launch(flat_grid(n_cols), FLAT_BLOCK, (
            partials, x2 if dweight is None else dweight, x2 if dbias is None else dbias, np.int64(n_groups),
            np.int64(n_cols), np.int32(want_w), np.int32(want_b)))
    return dx.reshape(x.shape), dweight, dbias


# ---- attention ----------------------------------------------------------------------------------------------------

ATTENTION_MAX_HEAD_DIM = 128  # XPNN_ATTN_MAX_D
# accumulation itemsize -> (warps per block, rows per warp): xpnn_attn_cfg in kernels/attention.cu
ATTENTION_CONFIG = {4: (4, 4), 8: (2, 2)}


def attention_launch(n_bh: int, n_rows: int, dtype: str) -> tuple[int, int]:
    """(grid, block) of the attention kernels: a block of W warps per W * R rows (queries or keys) of a (batch,
    head), grid-stride beyond MAX_GRID blocks."""
    warps, rows = ATTENTION_CONFIG[np.dtype(registry.ACC_DTYPES[dtype]).itemsize]
    per_block = warps * rows
    return max(1, min(MAX_GRID, n_bh * -(-n_rows // per_block))), 32 * warps


def _attention_shapes(q: Any, k: Any, v: Any) -> Optional[tuple[int, int, int, int]]:
    """(BH, Tq, Tk, D) when the kernels apply: q (..., Tq, D), k and v (..., Tk, D) with the same leading dims,
    1 <= D <= ATTENTION_MAX_HEAD_DIM, Tq, Tk >= 1; else None."""
    if q.ndim < 2 or k.ndim != q.ndim or v.shape != k.shape or q.shape[:-2] != k.shape[:-2]:
        return None
    d = int(q.shape[-1])
    if int(k.shape[-1]) != d or not 1 <= d <= ATTENTION_MAX_HEAD_DIM:
        return None
    t_q, t_k = int(q.shape[-2]), int(k.shape[-2])
    n_bh = int(math.prod(q.shape[:-2]))
    if t_q == 0 or t_k == 0 or n_bh == 0:
        return None
    return n_bh, t_q, t_k, d


def _scale(dtype: str, scale: Optional[float], d: int) -> np.generic:
    return np.dtype(registry.ACC_DTYPES[dtype]).type(1.0 / math.sqrt(d) if scale is None else scale)


def flash_attention(loader: KernelLoader, xp: Any, q: Any, k: Any, v: Any, *, is_causal: bool = False,
                    scale: Optional[float] = None) -> Any:
    """(out, lse): softmax(scale * q k^T [causal mask]) v and the rows' log-sum-exp of the scaled scores
    (shape q.shape[:-1], float32 for float16 inputs), without a mask or dropout (those stay with the reference)."""
    shapes = _attention_shapes(q, k, v)
    if shapes is None:
        return NotImplemented
    n_bh, t_q, t_k, d = shapes
    dtype = dtype_name(q.dtype)
    out = xp.empty(q.shape, dtype=q.dtype)
    lse = xp.empty(q.shape[:-1], dtype=_acc_dtype(xp, q.dtype))
    grid, block = attention_launch(n_bh, t_q, dtype)
    loader.raw(registry.FLASH_ATTENTION, dtype).launch(grid, block, (
        _contiguous(q), _contiguous(k), _contiguous(v), out, lse, np.int64(n_bh), np.int64(t_q), np.int64(t_k),
        np.int64(d), _scale(dtype, scale, d), np.int32(bool(is_causal))))
    return out, lse


def flash_attention_backward(loader: KernelLoader, xp: Any, q: Any, k: Any, v: Any, out: Any, lse: Any, dout: Any,
                             *, is_causal: bool = False, scale: Optional[float] = None) -> Any:
    """(dq, dk, dv) from the forward's ``out`` and ``lse``: two launches (dq and delta = rowsum(dout * out); then
    dk and dv), each recomputing the probabilities tile by tile from q, k and lse."""
    shapes = _attention_shapes(q, k, v)
    if shapes is None or out.shape != q.shape or dout.shape != q.shape or lse.shape != q.shape[:-1]:
        return NotImplemented
    n_bh, t_q, t_k, d = shapes
    dtype = dtype_name(q.dtype)
    acc = _acc_dtype(xp, q.dtype)
    if lse.dtype != acc:
        return NotImplemented
    q, k, v, out, dout, lse = (_contiguous(a) for a in (q, k, v, out, dout, lse))
    dq = xp.empty(q.shape, dtype=q.dtype)
    dk = xp.empty(k.shape, dtype=k.dtype)
    dv = xp.empty(v.shape, dtype=v.dtype)
    delta = xp.empty(q.shape[:-1], dtype=acc)
    dims = (np.int64(n_bh), np.int64(t_q), np.int64(t_k), np.int64(d), _scale(dtype, scale, d),
            np.int32(bool(is_causal)))
    grid, block = attention_launch(n_bh, t_q, dtype)
    loader.raw(registry.FLASH_ATTENTION_BACKWARD, dtype).launch(grid, block, (q, k, v, out, dout, lse, delta, dq)
                                                                 + dims)
    grid, block = attention_launch(n_bh, t_k, dtype)
    loader.raw(registry.FLASH_ATTENTION_BACKWARD_DKV, dtype).launch(grid, block, (q, k, v, dout, lse, delta, dk, dv)
                                                                     + dims)
    return dq, dk, dv


# ---- embedding ----------------------------------------------------------------------------------------------------

def embedding_backward(loader: KernelLoader, xp: Any, dy: Any, *, indices: Any, num_embeddings: int,
                       padding_idx: Optional[int] = None) -> Any:
    """dweight (num_embeddings, D) = the rows of ``dy`` (indices.shape + (D,)) summed per index (ids validated by
    the op: an id out of range would write outside dweight): a stable sort of the positions by id, then one kernel
    summing each id's segment in position order (deterministic, no atomics); rows of ``padding_idx`` and of ids no
    position names are 0."""
    n_cols = int(dy.shape[-1])
    n = int(math.prod(indices.shape))
    dweight = xp.zeros((num_embeddings, n_cols), dtype=dy.dtype)
    if n == 0 or n_cols == 0:
        return dweight
    ids = xp.reshape(xp.astype(indices, xp.int64, copy=False), (n,))
    order = xp.argsort(ids, kind="stable") if xp is np else xp.argsort(ids)  # CuPy's argsort is stable
    sorted_ids = _contiguous(ids[order])
    dy2 = _contiguous(dy).reshape(n, n_cols)
    block = min(256, 32 * -(-n_cols // 32))
    loader.raw(registry.EMBEDDING_BACKWARD, dtype_name(dy.dtype)).launch(
        max(1, min(MAX_GRID, n)), block, (_contiguous(order.astype(np.int64, copy=False)), sorted_ids, dy2, dweight,
                                          np.int64(n), np.int64(n_cols),
                                          np.int64(-1 if padding_idx is None else padding_idx)))
    return dweight
