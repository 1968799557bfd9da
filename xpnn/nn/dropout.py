"""``Dropout``: inverted dropout (scale kept units by ``1/(1-p)`` in training, identity in eval)."""
from __future__ import annotations

from typing import Any

from ..functional.layers import dropout_mask, make_rng
from .module import Module, layer_namespace

__all__ = ["Dropout"]


class Dropout(Module):
    """In training, zero each element with probability ``p`` and scale the rest by ``1/(1-p)``; identity in eval.

    ``seed`` seeds the mask generator (an int gives the same sequence of masks on every run).
    """

    def __init__(self, p: float = 0.5, *, seed: Any = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self._seed = seed
        self._rngs: dict[int, Any] = {}
        self._mask: Any = None
        self._ran = False

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Any) -> Any:
        xp = layer_namespace(self, x)
        self._ran = True
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        rng = self._rngs.get(id(xp))
        if rng is None:
            rng = self._rngs[id(xp)] = make_rng(xp, self._seed)
        self._mask = dropout_mask(xp, tuple(x.shape), self.p, x.dtype, rng)
        return x * self._mask

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if not self._ran:
            raise self._no_forward()
        if not need_input_grad:
            return None
        return dy if self._mask is None else dy * self._mask

    def _moved(self) -> None:
        self._mask, self._ran = None, False
