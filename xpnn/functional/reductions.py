"""Reductions ``sum, mean, max, min`` over ``axis`` (``None``: all; an int or a tuple), with ``keepdims``.

``max``/``min`` split the gradient evenly between tied extrema (like ``torch.amax``/``torch.amin``).
Each also takes PyTorch's ``dim=`` for ``axis=``; ``max``/``min`` given ``dim=`` return ``(values, indices)`` as
``torch.max(x, dim)`` does.

Empty axes follow PyTorch: ``sum`` over one is 0, ``mean`` NaN (without NumPy's empty-slice warnings); ``max``/``min``
over one raise ValueError naming the op (there is no identity), while other axes may be empty (the result is then
empty too).
"""
from __future__ import annotations

import builtins
from typing import Any, NamedTuple, Optional, Union

from .._torch_names import axis_from_dim
from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import namespace_of

__all__ = ["sum", "mean", "max", "min", "ValuesIndices"]

Axis = Union[None, int, tuple[int, ...]]


def _axes(axis: Axis, ndim: int, where: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"{where}: axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(out)


def _keep_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def expand_as_input(g: Any, in_shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Any:
    """The gradient of a reduction (shape without or with kept axes) broadcast back to ``in_shape``."""
    from .shape import broadcast_to, reshape

    if not keepdims:
        g = reshape(g, _keep_shape(in_shape, axes))
    return broadcast_to(g, in_shape)


def _reduced_size(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _reduction(ctx: Context, x: Any, axis: Axis, keepdims: bool, where: str) -> tuple[Any, Any]:
    """``(namespace, axis as the array API takes it)`` for a reduction of ``x``; keeps what every reduction's
    backward reads: the input shape, the reduced axes and ``keepdims``."""
    ctx.shape, ctx.axes, ctx.keepdims = tuple(x.shape), _axes(axis, x.ndim, where), keepdims
    return namespace_of(x, where=where), axis if axis is None or isinstance(axis, int) else tuple(axis)


def _onnx_reduce(op_type: str) -> Any:
    """The ONNX lowering of a reduction over ``axis`` (``None``: all axes)."""
    def onnx(g: Any, x: str, *, axis: Axis = None, keepdims: bool = False) -> str:
        return g.reduce(op_type, x, _axes(axis, len(g.shape(x)), op_type), keepdims=keepdims)
    return staticmethod(onnx)


class Sum(Op):
    name = "sum"
    onnx = _onnx_reduce("ReduceSum")

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:
        xp, ax = _reduction(ctx, x, axis, keepdims, "sum")
        return xp.sum(x, axis=ax, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims)


class Mean(Op):
    name = "mean"
    onnx = _onnx_reduce("ReduceMean")

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:
        xp, ax = _reduction(ctx, x, axis, keepdims, "mean")
        if _reduced_size(ctx.shape, ctx.axes) == 0:  # the mean of nothing: NaN (PyTorch), no NumPy warning
            kept = _keep_shape(ctx.shape, ctx.axes)
            shape = kept if keepdims else tuple(s for i, s in enumerate(kept) if i not in ctx.axes)
            return xp.full(shape, float("nan"), dtype=x.dtype)
        return xp.mean(x, axis=ax, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        n = _reduced_size(ctx.shape, ctx.axes)
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims) * (1.0 / builtins.max(n, 1))


class _Extremum(Op):
    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:  # type: ignore[override]
        xp, ax = _reduction(ctx, x, axis, keepdims, cls.name)
        axes = ctx.axes
        empty = [a for a in axes if x.shape[a] == 0]
        if empty:  # PyTorch: "Expected reduction dim ... to have non-zero size"
            raise ValueError(f"{cls.name}: cannot reduce over axis {empty[0]} of size 0 (input of shape "
                             f"{tuple(x.shape)}): the {cls.name} of no element is undefined; reduce a non-empty axis")
        out = cls._reduce(xp, x, ax, keepdims)
        kept = out if keepdims else xp.reshape(out, _keep_shape(tuple(x.shape), axes))
        # the selected entries: those equal to the result, or the NaNs of a slice holding one (its result is NaN,
        # equal to nothing; PyTorch selects the NaN): ties share the gradient evenly
        hit = xp.astype((x == kept) | xp.isnan(x), x.dtype)
        ctx.share = hit / xp.sum(hit, axis=axes, keepdims=True)
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims) * ctx.share


class Max(_Extremum):
    name = "max"
    onnx = _onnx_reduce("ReduceMax")

    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        return xp.max(x, axis=axis, keepdims=keepdims)


class Min(_Extremum):
    name = "min"
    onnx = _onnx_reduce("ReduceMin")

    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        return xp.min(x, axis=axis, keepdims=keepdims)


class ValuesIndices(NamedTuple):
    """``(values, indices)`` of ``max``/``min`` over ``dim`` (``torch.return_types.max``): ``indices`` (int64 in
    NumPy) point at the first extremum of each row and carry no gradient."""

    values: Any
    indices: Any


def _with_indices(op: Any, arg: str, x: Any, dim: Any, keepdims: bool) -> ValuesIndices:
    """``max``/``min`` over ``dim`` the PyTorch way: values and the arg-extremum indices."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op.name}: dim must be an int (a tuple of axes: use axis=), got {dim!r}")
    values = op.apply(x, axis=dim, keepdims=keepdims)
    data = x.data if isinstance(x, _op.TensorBase) else x
    idx = getattr(namespace_of(data, where=op.name), arg)(data, axis=dim, keepdims=keepdims)
    return ValuesIndices(values, type(values)(idx) if isinstance(x, _op.TensorBase) else idx)  # (a Tensor)


def sum(x: Any, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None,  # noqa: A001
        keepdim: Optional[bool] = None) -> Any:
    """Sum over ``axis`` (all axes by default; ``dim=`` and ``keepdim=`` are PyTorch's names for ``axis`` and
    ``keepdims``, as in every reduction here)."""
    if keepdim is not None:  # (PyTorch's name)
        keepdims = keepdim
    if dim is not None:
        axis = axis_from_dim(axis, dim, "sum")
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None,
        keepdim: Optional[bool] = None) -> Any:
    """Mean over ``axis`` (all axes by default; ``dim=`` is PyTorch's name for it)."""
    if keepdim is not None:  # (PyTorch's name)
        keepdims = keepdim
    if dim is not None:
        axis = axis_from_dim(axis, dim, "mean")
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: Any, axis: Axis = None, keepdims: bool = False, *, dim: Any = None,  # noqa: A001
        keepdim: Optional[bool] = None) -> Any:
    """Maximum over ``axis``; tied maxima share the gradient evenly, and a slice holding a NaN has the maximum NaN,
    its NaN(s) getting the gradient (PyTorch's rule). With ``dim=`` (an int): ``(values, indices)``
    like ``torch.max(x, dim)`` (``ValuesIndices``)."""
    if keepdim is not None:  # (PyTorch's name)
        keepdims = keepdim
    if dim is not None:
        return _with_indices(Max, "argmax", x, axis_from_dim(axis, dim, "max"), keepdims)
    return Max.apply(x, axis=axis, keepdims=keepdims)


def min(x: Any, axis: Axis = None, keepdims: bool = False, *, dim: Any = None,  # noqa: A001
        keepdim: Optional[bool] = None) -> Any:
    """Minimum over ``axis``; tied minima share the gradient evenly, and a slice holding a NaN has the minimum NaN,
    its NaN(s) getting the gradient (PyTorch's rule). With ``dim=`` (an int): ``(values, indices)``
    like ``torch.min(x, dim)`` (``ValuesIndices``)."""
    if keepdim is not None:  # (PyTorch's name)
        keepdims = keepdim
    if dim is not None:
        return _with_indices(Min, "argmin", x, axis_from_dim(axis, dim, "min"), keepdims)
    return Min.apply(x, axis=axis, keepdims=keepdims)
