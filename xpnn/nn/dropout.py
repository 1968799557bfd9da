"""``Dropout``: inverted dropout (scale kept units by ``1/(1-p)`` in training, identity in eval)."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..backend import namespace_of
from ..functional.dropout import dropout_mask, make_rng
from .explicit import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """In training, zero each element with probability ``p`` and scale the rest by ``1/(1-p)``; identity in eval.

    ``seed`` seeds the mask generator (an int gives the same sequence of masks on every run). ``inplace=True``
    (PyTorch's flag) is accepted and computes out of place: the same output, the input left unchanged.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: Any = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p, self.inplace = float(p), bool(inplace)
        self._seed = seed
        self._rngs: dict[int, Any] = {}

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"

    def _rng(self, xp: Any) -> Any:
        rng = self._rngs.get(id(xp))
        if rng is None:
            rng = self._rngs[id(xp)] = make_rng(xp, self._seed)
        return rng

    def forward(self, x: Any) -> Any:
        data = x.data if hasattr(x, "_node") else x
        xp = namespace_of(data, where=self._where())
        if not self.training or self.p == 0.0:
            return x
        mask = dropout_mask(xp, tuple(data.shape), self.p, data.dtype, self._rng(xp))
        return F.dropout.__wrapped_op__.apply(x, mask=mask)
