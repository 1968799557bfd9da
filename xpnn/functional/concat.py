"""Joining and splitting arrays or Tensors: ``concat`` / ``cat`` (``torch.cat``) and ``stack`` (``torch.stack``), whose
input gradients are slices of the output's gradient (written with ``index``, so they are differentiable again), and
``split`` / ``chunk`` (``torch.split``, ``torch.chunk``), whose input gradient is the pieces' gradients joined."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .._torch_names import axis_from_dim
from .._torch_names import dim_index
from ..autograd.op import Context, Op
from ..backend import namespace_of
from ..errors import ShapeError
from .shape import index, reshape

__all__ = ["concat", "cat", "stack", "split", "chunk"]


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
        if any(x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:] for x in xs):
            raise ShapeError(f"concat: inputs must have one shape except in dimension {ax}, got shapes "
                             f"{[tuple(x.shape) for x in xs]}")
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


class Split(Op):
    name = "split"
    view = True  # (the pieces are basic slices: views on NumPy/CuPy, sharing the input's version counter)

    @staticmethod
    def forward(ctx: Context, x: Any, *, sizes: tuple[int, ...], axis: int) -> tuple[Any, ...]:
        namespace_of(x, where="split")
        ctx.axis = axis
        lead = (slice(None),) * axis
        out, start = [], 0
        for n in sizes:
            out.append(x[lead + (slice(start, start + n),) + (slice(None),) * (x.ndim - axis - 1)])
            start += n
        return tuple(out)

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> Any:
        return concat(grads, axis=ctx.axis)  # (pieces no gradient reached come as zeros)

    @staticmethod
    def onnx(g: Any, x: str, *, sizes: tuple[int, ...], axis: int) -> tuple[str, ...]:
        return g.op("Split", x, g.ints(sizes), axis=axis, outputs=len(sizes))  # (opset 13: sizes as an input)


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


def cat(tensors: Sequence[Any], dim: int = 0) -> Any:
    """``torch.cat``: ``concat`` along ``dim``."""
    return concat(tensors, axis=dim)


def split(x: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[Any, ...]:
    """``x`` cut along ``dim`` into pieces of ``split_size_or_sections`` each (an int: the last piece may be
    shorter) or of the listed sizes, which must add up to ``x.shape[dim]`` (``torch.split``). The pieces are views
    on NumPy/CuPy. Raises ``ShapeError`` for sizes that do not add up, ``IndexError`` for ``dim`` out of range."""
    shape = tuple(x.shape)
    ax = dim_index(dim, len(shape), "split")
    n = shape[ax]
    if isinstance(split_size_or_sections, int) and not isinstance(split_size_or_sections, bool):
        step = split_size_or_sections
        if step <= 0 and not (step == 0 and n == 0):
            raise ValueError(f"split: split_size must be a positive int, got {step}")
        sizes = tuple(min(step, n - i) for i in range(0, n, step)) if n else (0,)
    else:
        sizes = tuple(int(s) for s in split_size_or_sections)
        if any(s < 0 for s in sizes) or sum(sizes) != n:
            raise ShapeError(f"split: sizes {list(sizes)} must be non-negative and add up to the size {n} of "
                             f"dimension {dim} (shape {shape})")
    return Split.apply(x, sizes=sizes, axis=ax)


def chunk(x: Any, chunks: int, dim: int = 0) -> tuple[Any, ...]:
    """``x`` cut along ``dim`` into pieces of ``ceil(size / chunks)`` (the last may be shorter, and fewer than
    ``chunks`` pieces may come back), as ``torch.chunk``. Raises ``ValueError`` for ``chunks < 1``."""
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = tuple(x.shape)[dim_index(dim, len(x.shape), "chunk")]
    if n == 0:  # `chunks` empty pieces, as torch.chunk
        return split(x, [0] * chunks, dim)
    return split(x, -(-n // chunks), dim)
