"""``Embedding``: a lookup table of ``num_embeddings`` vectors of ``embedding_dim`` values, indexed by integer ids."""
from __future__ import annotations

from typing import Any, Optional

from .. import functional as F
from ..backend import BackendLike
from ..errors import DTypeError, ShapeError
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Embedding"]


def layer_error(module: Module, exc: Exception, op: str) -> Exception:
    """``exc`` (raised by op ``op``, its message starting ``"op: "``) again, naming ``module`` instead."""
    msg = str(exc)
    return type(exc)(f"{module._where()}: {msg[len(op) + 2:] if msg.startswith(op + ': ') else msg}")


class Embedding(Module):
    """``y = weight[ids]``: integer ids of any shape -> ``ids.shape + (embedding_dim,)`` (``torch.nn.Embedding``).

    ``weight`` (num_embeddings, embedding_dim) starts N(0, 1) like PyTorch's (from a NumPy Generator seeded by
    ``seed``), with the ``padding_idx`` row (negative counts from the end) zero; that row gets no gradient.
    ``_weight`` gives the initial values instead and ``_freeze=True`` makes the weight not require grad (what
    ``from_pretrained`` uses). ``max_norm``, ``scale_grad_by_freq`` and ``sparse`` are not supported
    (``NotImplementedError``). An id outside ``[0, num_embeddings)`` raises ``IndexError`` naming the layer, the
    range and the id; non-integer ids ``DTypeError``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None,
                 max_norm: Optional[float] = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Any = None, _freeze: bool = False, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Embedding: {name} must be a positive integer, got {v!r}")
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: max_norm, scale_grad_by_freq and sparse are not supported")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be within num_embeddings ({num_embeddings}), got "
                                 f"{padding_idx}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.max_norm, self.norm_type = None, float(norm_type)
        self.scale_grad_by_freq, self.sparse = False, False
        be, dt, rng = factory(backend, dtype if dtype is not None or _weight is None else _weight.dtype, seed)
        if _weight is None:
            w = rng.standard_normal((num_embeddings, embedding_dim))
            if padding_idx is not None:
                w[padding_idx] = 0.0
        else:
            w = _weight.data if hasattr(_weight, "_node") else _weight
            if tuple(w.shape) != (num_embeddings, embedding_dim):
                raise ShapeError(f"Embedding: _weight must have shape ({num_embeddings}, {embedding_dim}), got "
                                 f"{tuple(w.shape)}")
        self.weight = Parameter(be.asarray(w, dtype=dt), requires_grad=not _freeze)
        FlatBuffer.pack(self.parameters())

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: Optional[int] = None,
                        max_norm: Optional[float] = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                        sparse: bool = False, *, backend: BackendLike = None) -> "Embedding":
        """An ``Embedding`` holding ``embeddings`` (num_embeddings, embedding_dim), frozen unless ``freeze=False``
        (``torch.nn.Embedding.from_pretrained``)."""
        if not hasattr(embeddings, "shape"):
            raise TypeError(f"Embedding.from_pretrained: embeddings must be a 2-D array or Tensor, got "
                            f"{type(embeddings).__name__}")
        if len(embeddings.shape) != 2:
            raise ShapeError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {tuple(embeddings.shape)}")
        n, d = (int(s) for s in embeddings.shape)
        return cls(n, d, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse, _weight=embeddings,
                   _freeze=freeze, backend=backend)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}" + (
            f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")

    def forward(self, input: Any) -> Any:  # noqa: A002 (PyTorch's name)
        try:
            return F.embedding(input, self.weight, self.padding_idx)
        except (IndexError, DTypeError, ShapeError, TypeError) as exc:
            raise layer_error(self, exc, "embedding") from None
