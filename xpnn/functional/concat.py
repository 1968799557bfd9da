"""Joining arrays or Tensors: ``concat`` (``torch.cat``) and ``stack`` (``torch.stack``); the gradient of each input
is its slice of the output's gradient (written with ``index``, so it is differentiable again)."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .._torch_names import axis_from_dim
from ..autograd.op import Context, Op
from ..backend import namespace_of
from ..errors import ShapeError
from .shape import index, reshape

__all__ = ["concat", "stack"]


def _axis(axis: int, ndim: int, where: str) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{where}: axis {axis} is out of range for {ndim}-D inputs")
    return axis % ndim


class Concat(Op):
    name = "concat"

    @staticmethod
    def forward(ctx: Context, *xs: Any, axis: int = 0) -> Any:
        xp = namespace_of(*xs, where="concat")
        ndim = xs[0].ndim
        if ndim == 0 or any(x.ndim != ndim for x in xs):
            raise ShapeError(f"concat: inputs must have the same number of dimensions (at least 1), got shapes "
                             f"{[tuple(x.shape) for x in xs]}")
        ax = _axis(axis, ndim, "concat")
        ctx.axis, ctx.sizes = ax, tuple(int(x.shape[ax]) for x in xs)
        return xp.concat(list(xs), axis=ax)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, ...]:
        grads = []
        start = 0
        lead = (slice(None),) * ctx.axis
        for n, need in zip(ctx.sizes, ctx.needs_input_grad):
            grads.append(index(g, lead + (slice(start, start + n), ...)) if need else None)
            start += n
        return tuple(grads)

    @staticmethod
    def onnx(g: Any, *xs: str, axis: int = 0) -> str:
        return g.op("Concat", *xs, axis=axis)


def concat(tensors: Sequence[Any], axis: Optional[int] = None, *, dim: Optional[int] = None) -> Any:
    """Join arrays or Tensors of one backend along the existing ``axis`` (default 0; ``torch.cat``, whose ``dim=``
    is accepted too). All inputs have the same number of dimensions and agree in the other axes. Plain arrays in ->
    an array out."""
    if dim is not None:
        axis = axis_from_dim(axis, dim, "concat")
    elif axis is None:
        axis = 0
    xs = tuple(tensors)
    if not xs:
        raise ValueError("concat: expected a non-empty sequence of arrays or Tensors")
    return Concat.apply(*xs, axis=axis)


def stack(tensors: Sequence[Any], axis: Optional[int] = None, *, dim: Optional[int] = None) -> Any:
    """Join arrays or Tensors of one shape along a new ``axis`` (default 0; ``torch.stack``, whose ``dim=`` is
    accepted too)."""
    if dim is not None:
        axis = axis_from_dim(axis, dim, "stack")
    elif axis is None:
        axis = 0
    xs = tuple(tensors)
    if not xs:
        raise ValueError("stack: expected a non-empty sequence of arrays or Tensors")
    shape = tuple(xs[0].shape)
    for x in xs:
        if tuple(x.shape) != shape:
            raise ShapeError(f"stack: inputs must have one shape, got {[tuple(x.shape) for x in xs]}")
    ax = _axis(axis, len(shape) + 1, "stack")
    new = list(shape[:ax] + (1,) + shape[ax:])
    if shape and math.prod(shape) > 0:  # the inputs' first axis as -1: an exported graph keeps it dynamic
        new[1 if ax == 0 else 0] = -1
    return concat([reshape(x, tuple(new)) for x in xs], axis=ax)
