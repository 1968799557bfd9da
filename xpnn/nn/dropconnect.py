"""``DropConnect``: a ``Linear`` layer whose individual weights are dropped at random in training (notes 003)."""
from __future__ import annotations

from typing import Any

from ..backend import BackendLike, namespace_of
from ..functional.dropout import dropout_mask, make_rng
from ..random import generator
from .linear import Linear, affine

__all__ = ["DropConnect"]


class DropConnect(Linear):
    """DropConnect (Wan et al., 2013): ``y = x @ (weight * M).T + bias`` in training, with a fresh mask ``M`` per
    forward pass whose entries are ``1/(1-p)`` with probability ``1-p`` and 0 otherwise (inverted scaling, so
    eval mode is the plain ``Linear`` with the learned weight). The bias is not dropped.

    x (N, in_features) -> y (N, out_features). Gradients: ``dweight = (dy.T @ x) * M``, ``dx = dy @ (weight * M)``.
    ``seed`` seeds both the initial weights and the mask sequence. ``_mask`` is the last mask drawn.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, p: float = 0.5,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"DropConnect: p must be a probability in [0, 1), got {p!r}")
        rng = generator(seed)
        super().__init__(in_features, out_features, bias, backend=backend, dtype=dtype, seed=rng)
        self.p = float(p)
        self._mask_seed = int(rng.integers(2**63))
        self._rngs: dict[int, Any] = {}
        self._mask: Any = None

    def _where(self) -> str:
        return f"DropConnect(in_features={self.in_features}, out_features={self.out_features}, p={self.p})"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            return super().forward(x)
        w = self.weight.data
        xp = namespace_of(w)
        rng = self._rngs.get(id(xp))
        if rng is None:
            rng = self._rngs[id(xp)] = make_rng(xp, self._mask_seed)
        self._mask = dropout_mask(xp, tuple(w.shape), self.p, w.dtype, rng)
        return affine(self, x, self.weight * self._mask, self.in_features)

    def _moved(self) -> None:
        self._mask = None
        self._rngs = {}
