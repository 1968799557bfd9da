"""Embedding lookup (``torch.nn.functional.embedding``): rows of a ``(num_embeddings, embedding_dim)`` weight picked
by integer ids; the weight's gradient is a scatter-add of the output's gradient into those rows (ids that repeat add
up), with no gradient for the ``padding_idx`` row."""
from __future__ import annotations

from typing import Any, Optional

from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import namespace_of
from ..errors import ShapeError
from . import _checks
from .elementwise import _values
from .selection import _poison, checked_indices, integer_indices, where
from .shape import scatter_add

__all__ = ["embedding", "embedding_backward"]


def _weight_shape(weight: Any) -> None:
    if len(weight.shape) != 2:
        raise ShapeError(f"embedding: expected weight of shape (num_embeddings, embedding_dim), got "
                         f"{tuple(weight.shape)}")


def _check(weight: Any, indices: Any, *, padding_idx: Optional[int] = None) -> None:
    xp = namespace_of(weight, indices, where="embedding")
    _checks.floating(xp, weight, "embedding", "weight")
    _weight_shape(weight)
    integer_indices(xp, indices, "embedding", "token ids")


class Embedding(Op):
    name = "embedding"
    check = staticmethod(_check)

    @staticmethod
    def forward(ctx: Context, weight: Any, indices: Any, *, padding_idx: Optional[int] = None) -> Any:
        xp = ctx.xp
        ctx.save_for_backward(indices)  # (saved, so that a write into the ids after the forward raises)
        ctx.num, ctx.padding_idx = weight.shape[0], padding_idx
        out = xp.take(weight, xp.reshape(indices, (-1,)), axis=0)
        return xp.reshape(out, tuple(indices.shape) + (weight.shape[1],))

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, None]:
        # (the ids were checked by the forward: no second host read here)
        return EmbeddingBackward.apply(g, indices=_values(ctx.saved_tensors[0]), num_embeddings=int(ctx.num),
                                       padding_idx=ctx.padding_idx), None

    @staticmethod
    def onnx(g: Any, weight: str, indices: str, *, padding_idx: Optional[int] = None) -> str:
        return g.op("Gather", weight, indices, axis=0)


class EmbeddingBackward(Op):
    """The weight's gradient: ``g`` (``indices.shape + (dim,)``) added into zero rows at ``indices``; the
    ``padding_idx`` row stays 0."""

    name = "embedding_backward"
    #: kernels/embedding.cu: a deterministic segmented sum (positions stably sorted by id, each id's rows summed in
    #: position order, no atomics); it trusts the ids (checked by ``embedding`` / ``embedding_backward``)
    kernel = registry.EMBEDDING_BACKWARD

    @staticmethod
    def save(ctx: Context, out: Any, g: Any, *, indices: Any, num_embeddings: int,
             padding_idx: Optional[int] = None) -> None:
        ctx.indices, ctx.padding_idx = indices, padding_idx

    @staticmethod
    def forward(ctx: Context, g: Any, *, indices: Any, num_embeddings: int, padding_idx: Optional[int] = None) -> Any:
        xp = ctx.xp
        EmbeddingBackward.save(ctx, None, g, indices=indices, num_embeddings=num_embeddings, padding_idx=padding_idx)
        dim = g.shape[-1]
        flat = xp.reshape(indices, (-1,))
        out = scatter_add(xp, xp.reshape(g, (flat.shape[0], dim)), flat, (num_embeddings, dim))
        if padding_idx is not None:
            out[padding_idx, ...] = 0
        return out

    @staticmethod
    def backward(ctx: Context, gg: Any) -> Any:
        """The rows of ``gg`` at ``indices`` (0 where an id is ``padding_idx``)."""
        out = Embedding.apply(gg, ctx.indices)
        if ctx.padding_idx is None:
            return out
        return where(ctx.indices[..., None] != ctx.padding_idx, out, 0)


def embedding(input: Any, weight: Any, padding_idx: Optional[int] = None,  # noqa: A002 (PyTorch's names)
              max_norm: Optional[float] = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Any:
    """``weight[input]``: the rows of ``weight`` (num_embeddings, embedding_dim) for the integer ids ``input`` (any
    shape) -> ``input.shape + (embedding_dim,)`` (``torch.nn.functional.embedding``). ``padding_idx`` (negative
    counts from the end): that row gets no gradient. ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are not
    supported (``NotImplementedError``). Raises ``IndexError`` naming the range and the first bad id for an id
    outside ``[0, num_embeddings)`` (ids are never clamped; on namespaces other than NumPy, outside debug mode, the
    check runs on the device: the rows of bad ids are NaN and ``xpnn.debug.check_device_errors`` raises, as for
    class labels), ``DTypeError`` for non-integer ids."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    _weight_shape(weight)
    n = weight.shape[0]
    if padding_idx is not None:
        if not -n <= padding_idx < n:
            raise ValueError(f"embedding: padding_idx must be within num_embeddings ({n}), got {padding_idx}")
        padding_idx = int(padding_idx) % n
    safe, bad = checked_indices(_values(input), n, "embedding", "token ids")
    return _poison(Embedding.apply(weight, input if bad is None else safe, padding_idx=padding_idx), bad)


def embedding_backward(g: Any, indices: Any, num_embeddings: int, padding_idx: Optional[int] = None) -> Any:
    """The gradient of ``embedding`` for its weight: ``g`` (``indices.shape + (dim,)``) scatter-added into
    ``(num_embeddings, dim)`` zeros at ``indices`` (repeated ids add up), the ``padding_idx`` row left 0. Ids
    outside ``[0, num_embeddings)`` raise ``IndexError`` as in ``embedding`` (on the device: deferred to
    ``xpnn.debug.check_device_errors``, the bad ids read as 0 so that nothing is written out of bounds);
    ``DTypeError`` for non-integer ids."""
    safe, _ = checked_indices(_values(indices), int(num_embeddings), "embedding_backward", "token ids")
    return EmbeddingBackward.apply(g, indices=safe, num_embeddings=int(num_embeddings), padding_idx=padding_idx)
