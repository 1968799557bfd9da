"""Reductions ``sum, mean, max, min`` over ``axis`` (``None``: all; an int or a tuple), with ``keepdims``.

``max``/``min`` split the gradient evenly between tied extrema (like ``torch.amax``/``torch.amin``).
"""
from __future__ import annotations

import builtins
from typing import Any, Union

from ..autograd.op import Context, Op
from ..backend import namespace_of

__all__ = ["sum", "mean", "max", "min"]

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


class Sum(Op):
    name = "sum"

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:
        xp = namespace_of(x, where="sum")
        ctx.shape = tuple(x.shape)
        ctx.axes = _axes(axis, x.ndim, "sum")
        ctx.keepdims = keepdims
        return xp.sum(x, axis=axis if axis is None or isinstance(axis, int) else tuple(axis), keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims)


class Mean(Op):
    name = "mean"

    @staticmethod
    def forward(ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:
        xp = namespace_of(x, where="mean")
        ctx.shape = tuple(x.shape)
        ctx.axes = _axes(axis, x.ndim, "mean")
        ctx.keepdims = keepdims
        return xp.mean(x, axis=axis if axis is None or isinstance(axis, int) else tuple(axis), keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        n = 1
        for a in ctx.axes:
            n *= ctx.shape[a]
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims) * (1.0 / builtins.max(n, 1))


class _Extremum(Op):
    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        raise NotImplementedError

    @classmethod
    def forward(cls, ctx: Context, x: Any, *, axis: Axis = None, keepdims: bool = False) -> Any:  # type: ignore[override]
        xp = namespace_of(x, where=cls.name)
        if 0 in tuple(x.shape):
            raise ValueError(f"{cls.name}: cannot reduce an empty array of shape {tuple(x.shape)}")
        ax = axis if axis is None or isinstance(axis, int) else tuple(axis)
        out = cls._reduce(xp, x, ax, keepdims)
        axes = _axes(axis, x.ndim, cls.name)
        kept = out if keepdims else xp.reshape(out, _keep_shape(tuple(x.shape), axes))
        # the selected entries: those equal to the result, or the NaNs of a slice holding one (its result is NaN,
        # equal to nothing; PyTorch selects the NaN): ties share the gradient evenly
        hit = xp.astype((x == kept) | xp.isnan(x), x.dtype)
        ctx.share = hit / xp.sum(hit, axis=axes, keepdims=True)
        ctx.shape, ctx.axes, ctx.keepdims = tuple(x.shape), axes, keepdims
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return expand_as_input(g, ctx.shape, ctx.axes, ctx.keepdims) * ctx.share


class Max(_Extremum):
    name = "max"

    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        return xp.max(x, axis=axis, keepdims=keepdims)


class Min(_Extremum):
    name = "min"

    @classmethod
    def _reduce(cls, xp: Any, x: Any, axis: Any, keepdims: bool) -> Any:
        return xp.min(x, axis=axis, keepdims=keepdims)


def sum(x: Any, axis: Axis = None, keepdims: bool = False) -> Any:  # noqa: A001 (the array API's name)
    """Sum over ``axis`` (all axes by default)."""
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x: Any, axis: Axis = None, keepdims: bool = False) -> Any:
    """Mean over ``axis`` (all axes by default)."""
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x: Any, axis: Axis = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Maximum over ``axis``; tied maxima share the gradient evenly. A slice holding a NaN has the maximum NaN,
    and its NaN(s) get the gradient (PyTorch's rule)."""
    return Max.apply(x, axis=axis, keepdims=keepdims)


def min(x: Any, axis: Axis = None, keepdims: bool = False) -> Any:  # noqa: A001
    """Minimum over ``axis``; tied minima share the gradient evenly. A slice holding a NaN has the minimum NaN,
    and its NaN(s) get the gradient (PyTorch's rule)."""
    return Min.apply(x, axis=axis, keepdims=keepdims)

