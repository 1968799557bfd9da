"""Choosing entries: ``where`` (``torch.where``), ``masked_fill``, ``tril`` / ``triu`` and the masks behind them
(``tril_mask`` / ``triu_mask``, e.g. a causal attention mask), and ``gather`` (``torch.gather``); finding them:
``nonzero`` / ``argwhere`` (``torch.nonzero``, ``torch.argwhere``; ``where(condition)`` alone).

Gradients flow to the chosen entries only: ``where``'s to each operand where it was picked (summed back over the
axes broadcasting stretched), ``gather``'s by a scatter-add into the input's shape (``numpy.add.at`` on NumPy,
``cupyx.scatter_add`` on CuPy, a one-hot product on other namespaces).
"""
from __future__ import annotations

import math
import operator
from typing import Any, Optional

import numpy as np

from .._torch_names import dim_index
from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import BackendLike, dtype_name, get_backend, is_cupy_namespace, is_numpy_namespace, namespace_of, to_numpy
from ..debug import defer_check, defers_checks
from ..errors import DTypeError, ShapeError
from . import _checks
from .elementwise import _values, astype
from .shape import sum_to

__all__ = ["where", "nonzero", "argwhere", "masked_fill", "tril", "triu", "tril_mask", "triu_mask", "gather"]


def _operand(xp: Any, v: Any, other: Any) -> Any:
    """A Python scalar operand of ``where`` as a 0-d array of the other operand's dtype (a float with an integer or
    bool array: the default floating dtype; an int with a bool array: the default integer dtype), as PyTorch
    promotes scalars."""
    if hasattr(v, "shape"):
        return v
    if (isinstance(v, float) and not xp.isdtype(other.dtype, "real floating")) or (
            type(v) is int and xp.isdtype(other.dtype, "bool")):
        return xp.asarray(v)
    return xp.asarray(v, dtype=other.dtype)


def _common_dtype(xp: Any, x: Any, y: Any) -> tuple[Any, Any]:
    """``x`` and ``y`` cast to one dtype as PyTorch promotes them: within a kind the namespace's ``result_type``;
    across kinds (the array API leaves that undefined) the floating one over an integer or bool one, and the
    integer one over a bool one."""
    rank = [xp.isdtype(a.dtype, "real floating") * 2 + xp.isdtype(a.dtype, "integral") for a in (x, y)]
    dt = xp.result_type(x.dtype, y.dtype) if rank[0] == rank[1] else (x if rank[0] > rank[1] else y).dtype
    return tuple(a if a.dtype == dt else xp.astype(a, dt) for a in (x, y))  # type: ignore[return-value]


def _back_to(g: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An operand's share of the output gradient ``g``: summed over the axes broadcasting added or stretched, cast
    to the operand's dtype."""
    g = sum_to(g, shape)
    return astype(g, dtype) if g.dtype != dtype else g


class Where(Op):
    name = "where"

    @staticmethod
    def forward(ctx: Context, condition: Any, x: Any, y: Any) -> Any:
        arrays = [a for a in (condition, x, y) if hasattr(a, "shape")]
        xp = namespace_of(*arrays, where="where")
        if not hasattr(condition, "shape") or not xp.isdtype(condition.dtype, "bool"):
            raise DTypeError(f"where: condition must be a bool array, got "
                             f"{dtype_name(condition.dtype) if hasattr(condition, 'dtype') else type(condition).__name__}")
        if not hasattr(x, "shape") and not hasattr(y, "shape"):
            raise TypeError("where: input or other must be an array or Tensor (both are Python scalars)")
        x, y = _operand(xp, x, y), _operand(xp, y, x)
        ctx.save_for_backward(condition)  # (saved, so that a write into the mask after the forward raises)
        ctx.metas = (tuple(x.shape), x.dtype), (tuple(y.shape), y.dtype)
        if x.dtype != y.dtype:
            x, y = _common_dtype(xp, x, y)
        try:
            return xp.where(condition, x, y)
        except ValueError:
            _checks.broadcast("where", condition, x, y)  # (the backend's error names no op)
            raise

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any, Any]:
        (cond,), (xm, ym) = ctx.saved_tensors, ctx.metas
        gx = _back_to(where(cond, g, 0), *xm) if ctx.needs_input_grad[1] else None
        gy = _back_to(where(cond, 0, g), *ym) if ctx.needs_input_grad[2] else None
        return None, gx, gy

    @staticmethod
    def onnx(g: Any, condition: str, x: Any, y: Any) -> str:
        x = g.const(x, dtype=y) if not isinstance(x, str) else x
        y = g.const(y, dtype=x) if not isinstance(y, str) else y
        return g.op("Where", condition, x, y)


def where(condition: Any, input: Any = None, other: Any = None) -> Any:  # noqa: A002 (PyTorch's names)
    """``input`` where the bool ``condition`` is true, ``other`` elsewhere (``torch.where``); the three broadcast
    together, and ``input`` or ``other`` may be a Python scalar. Raises ``DTypeError`` for a non-bool condition,
    ``ShapeError`` for shapes that do not broadcast.

    ``where(condition)`` alone is ``nonzero(condition, as_tuple=True)`` (``torch.where(condition)``, NumPy's
    ``np.where(condition)``): a tuple of index arrays, one per axis."""
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    if input is None or other is None:
        raise TypeError("where: pass both input and other, or neither (where(condition) gives the indices of the "
                        "nonzero entries, as nonzero(condition, as_tuple=True))")
    return Where.apply(condition, input, other)


class Nonzero(Op):
    """The indices of the nonzero (true) entries in row-major order; no gradient. Its one output is a tuple: the
    per-axis index arrays (``as_tuple``), or a 1-tuple holding their (K, ndim) stack."""

    name = "nonzero"
    differentiable_outputs = ()

    @staticmethod
    def forward(ctx: Context, x: Any, *, as_tuple: bool) -> tuple[Any, ...]:
        xp = namespace_of(x, where="nonzero")
        if x.ndim == 0:  # (the standard's nonzero takes 1 or more axes; PyTorch: a 0-d entry is at index 0 of (1,))
            idx = xp.nonzero(xp.reshape(x, (1,)))
            if as_tuple:
                return idx
            return (xp.zeros((idx[0].shape[0], 0), dtype=idx[0].dtype),)
        idx = xp.nonzero(x)
        return idx if as_tuple else (xp.stack(idx, axis=1),)

    @staticmethod
    def backward(ctx: Context, *g: Any) -> tuple[None]:
        return (None,)


def nonzero(x: Any, *, as_tuple: bool = False) -> Any:
    """The indices of the nonzero (for bool: true) entries of ``x`` (array or Tensor, any dtype), in row-major order,
    as ``torch.nonzero``: a (K, x.ndim) integer array, or with ``as_tuple=True`` a tuple of x.ndim index arrays of
    shape (K,) (NumPy's ``np.nonzero``; a 0-d ``x`` counts as shape (1,)). Tensors in, Tensors out, with no gradient.
    The output's size depends on the values: on CuPy the call waits for the device."""
    if not isinstance(as_tuple, bool):
        raise TypeError(f"nonzero: as_tuple must be a bool, got {as_tuple!r}")
    if isinstance(x, _op.TensorBase):  # (indices: no node in the graph, as torch.nonzero's have no grad_fn)
        x = x.detach()
    out = Nonzero.apply(x, as_tuple=as_tuple)
    return tuple(out) if as_tuple else out[0]


def argwhere(x: Any) -> Any:
    """``nonzero(x)``: the (K, x.ndim) indices of the nonzero entries (``torch.argwhere``, ``np.argwhere``)."""
    return nonzero(x)


def masked_fill(x: Any, mask: Any, value: Any) -> Any:
    """``x`` with ``value`` where the bool ``mask`` is true (``torch.Tensor.masked_fill``): ``mask`` broadcasts to
    ``x``'s shape (never the other way), ``value`` is a number or a 0-d array/Tensor (which gets the gradient of
    the entries it filled) and takes ``x``'s dtype. Raises ``ShapeError``/``DTypeError``."""
    shape, mshape = tuple(x.shape), tuple(mask.shape) if hasattr(mask, "shape") else None
    if mshape is None or len(mshape) > len(shape) or any(m not in (1, s) for m, s in zip(mshape[::-1], shape[::-1])):
        raise ShapeError(f"masked_fill: mask of shape {mshape} does not broadcast to the input's shape {shape}")
    if hasattr(value, "shape"):
        if tuple(value.shape) != ():
            raise ShapeError(f"masked_fill: value must be a number or a 0-d array, got shape {tuple(value.shape)}")
        if value.dtype != x.dtype:
            value = astype(value, x.dtype)
    elif isinstance(value, (bool, int, float)) and not namespace_of(_values(x)).isdtype(x.dtype, "real floating"):
        # an integer or bool input keeps its dtype, as in PyTorch: a float value is truncated toward zero
        if not math.isfinite(value):
            raise ValueError(f"masked_fill: value {value} cannot be converted to the input's dtype "
                             f"{dtype_name(x.dtype)}")
        value = bool(value) if namespace_of(_values(x)).isdtype(x.dtype, "bool") else int(value)
    try:
        return Where.apply(mask, value, x)
    except DTypeError:  # (where's only one: a condition that is not bool)
        raise DTypeError(f"masked_fill: mask must be a bool array, got {dtype_name(mask.dtype)}") from None


def band_mask(xp: Any, rows: int, cols: int, diagonal: int, lower: bool) -> Any:
    """Bool ``(rows, cols)``: ``j - i <= diagonal`` (``lower``) or ``j - i >= diagonal``."""
    offset = xp.arange(cols)[None, :] - xp.arange(rows)[:, None]
    return offset <= diagonal if lower else offset >= diagonal


def _band(x: Any, diagonal: int, lower: bool) -> Any:
    where_ = "tril" if lower else "triu"
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ShapeError(f"{where_}: expected an input of at least 2 dimensions, got shape {shape}")
    try:
        diagonal = operator.index(diagonal)
    except TypeError:
        raise TypeError(f"{where_}: diagonal must be an int, got {diagonal!r}") from None
    xp = namespace_of(_values(x), where=where_)
    return Where.apply(band_mask(xp, shape[-2], shape[-1], diagonal, lower), x, 0)


def tril(x: Any, diagonal: int = 0) -> Any:
    """The lower triangle of the last two axes (``torch.tril``): entries with ``col - row > diagonal`` zeroed."""
    return _band(x, diagonal, True)


def triu(x: Any, diagonal: int = 0) -> Any:
    """The upper triangle of the last two axes (``torch.triu``): entries with ``col - row < diagonal`` zeroed."""
    return _band(x, diagonal, False)


def tril_mask(rows: int, cols: Optional[int] = None, diagonal: int = 0, *, backend: BackendLike = None) -> Any:
    """Bool ``(rows, cols)`` array, true on and below the ``diagonal``-th diagonal: ``torch.tril(torch.ones(rows,
    cols, dtype=bool), diagonal)``, e.g. the causal mask of attention (true = may attend). ``backend``: as in
    ``xpnn.get_backend`` (default: the active one)."""
    return band_mask(get_backend(backend).xp, rows, rows if cols is None else cols, diagonal, True)


def triu_mask(rows: int, cols: Optional[int] = None, diagonal: int = 0, *, backend: BackendLike = None) -> Any:
    """Bool ``(rows, cols)`` array, true on and above the ``diagonal``-th diagonal (``torch.triu`` of ones; with
    ``diagonal=1``: the entries a causal attention masks out)."""
    return band_mask(get_backend(backend).xp, rows, rows if cols is None else cols, diagonal, False)


def integer_indices(xp: Any, idx: Any, where: str, what: str) -> None:
    """Raise ``DTypeError`` naming ``where`` unless ``idx`` is an integer array."""
    if not xp.isdtype(idx.dtype, "integral"):
        raise DTypeError(f"{where}: {what} must be an integer array, got dtype {dtype_name(idx.dtype)}")


def checked_indices(idx: Any, n: int, where: str, what: str) -> tuple[Any, Any]:
    """``(idx, bad)`` for integer indices that must lie in ``[0, n)`` (never clamped). On NumPy or in debug mode the
    check reads its result at once and raises ``IndexError`` naming ``where``, the range and the first bad value
    (``bad`` is ``None``). Elsewhere there is no host read inside a step (as for class labels): out-of-range entries
    become 0 (so nothing reads out of bounds), ``bad`` is their boolean mask, the outcome is recorded with
    ``xpnn.debug.defer_check`` (raised by ``check_device_errors``), and the caller makes its result NaN where ``bad``."""
    xp = namespace_of(idx, where=where)
    integer_indices(xp, idx, where, what)
    if type(idx) is np.ndarray and idx.size and int(idx.min()) >= 0 and int(idx.max()) < n:
        return idx, None  # (NumPy: two reductions decide the common case)
    bad = (idx < 0) | (idx >= n)

    def error(first: Any = None, count: int = 0) -> IndexError:
        got = f"got {first}" + (f" ({count} entries out of range)" if count > 1 else "") if first is not None else \
            "an out-of-range one was seen since the last check (checked on the device, read at the next metrics " \
            "read; xpnn.set_debug(True) raises at the offending call)"
        return IndexError(f"{where}: {what} must be in [0, {n - 1}], {got}")

    if not defers_checks(xp):
        if idx.size and bool(xp.any(bad)):
            vals = to_numpy(idx).reshape(-1)
            out = vals[(vals < 0) | (vals >= n)]
            raise error(int(out[0]), out.size)
        return idx, None
    defer_check(xp, xp.any(bad), ("indices", where, what, n), error)
    return xp.where(bad, xp.zeros_like(idx), idx), bad


def _poison(out: Any, bad: Optional[Any]) -> Any:
    """``out`` with NaN where ``bad`` (broadcast from the left: an index's entries or rows), for a deferred index
    check (``checked_indices``)."""
    if bad is None:
        return out
    while bad.ndim < len(out.shape):
        bad = bad[..., None]
    return where(bad, float("nan"), out)


def _block(index_shape: tuple[int, ...], axis: int) -> tuple[slice, ...]:
    """The key of the input's block that ``gather`` reads: the index's extent on every axis but ``axis``."""
    return tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index_shape))


class Gather(Op):
    name = "gather"

    @staticmethod
    def check(x: Any, index: Any, *, axis: int) -> None:
        xp = namespace_of(x, index, where="gather")
        if index.ndim != x.ndim or any(i > s for d, (i, s) in enumerate(zip(index.shape, x.shape)) if d != axis):
            raise ShapeError(f"gather: index of shape {tuple(index.shape)} must have the input's {x.ndim} dimensions "
                             f"and sizes at most the input's {tuple(x.shape)} except in dimension {axis}")
        integer_indices(xp, index, "gather", "index")

    @staticmethod
    def forward(ctx: Context, x: Any, index: Any, *, axis: int) -> Any:
        xp = namespace_of(x, index)
        ctx.save_for_backward(index)  # (saved, so that a write into the index after the forward raises)
        ctx.axis, ctx.shape = axis, tuple(x.shape)
        return xp.take_along_axis(x[_block(tuple(index.shape), axis)], index, axis=axis)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, None]:
        return GatherBackward.apply(g, index=_values(ctx.saved_tensors[0]), axis=ctx.axis, shape=ctx.shape), None

    @staticmethod
    def onnx(g: Any, x: str, index: str, *, axis: int) -> str:
        return g.op("GatherElements", x, index, axis=axis)


class GatherBackward(Op):
    """Scatter-add of ``g`` (the gradient of ``gather(x, axis, index)``) into zeros of ``x``'s shape."""

    name = "gather_backward"

    @staticmethod
    def forward(ctx: Context, g: Any, *, index: Any, axis: int, shape: tuple[int, ...]) -> Any:
        xp = namespace_of(g, index, where="gather backward")
        ctx.index, ctx.axis = index, axis
        out = xp.zeros(shape, dtype=g.dtype)
        ishape = tuple(index.shape)
        if is_numpy_namespace(xp) or is_cupy_namespace(xp):
            # the full key of each gathered entry: index on `axis`, its own position on the others
            key = tuple(index if d == axis else xp.reshape(xp.arange(n), tuple(n if e == d else 1 for e in
                                                                                range(len(ishape))))
                        for d, n in enumerate(ishape))
            if is_numpy_namespace(xp):
                np.add.at(out, key, g)
            else:
                import cupyx

                cupyx.scatter_add(out, key, g)
            return out
        hot = xp.astype(index[..., None] == xp.arange(shape[axis], dtype=index.dtype), g.dtype)  # index.shape + (n,)
        part = xp.sum(g[..., None] * hot, axis=axis)  # the other axes of the index, then (n,)
        out[_block(ishape, axis)] = xp.moveaxis(part, -1, axis)
        return out

    @staticmethod
    def backward(ctx: Context, gg: Any) -> Any:
        return Gather.apply(gg, ctx.index, axis=ctx.axis)


def gather(x: Any, dim: int, index: Any) -> Any:
    """``out[i][j][k] = x[index[i][j][k]][j][k]`` for ``dim=0`` (and likewise for the other dims), as
    ``torch.gather``: ``index`` is an integer array or Tensor with ``x``'s number of dimensions and sizes at most
    ``x``'s except in ``dim``; the output has ``index``'s shape. Repeated indices add up their gradients. Raises
    ``IndexError`` for an index out of ``[0, x.shape[dim])`` (on namespaces other than NumPy, outside debug mode,
    at the next ``xpnn.debug.check_device_errors``, the result NaN there: no host read), ``DTypeError``/``ShapeError``
    for a bad index."""
    axis = dim_index(dim, max(len(x.shape), 1), "gather")
    safe, bad = checked_indices(_values(index), x.shape[axis], "gather", "index")
    return _poison(Gather.apply(x, index if bad is None else safe, axis=axis), bad)
