"""``Maxout``: a linear map to ``out_features * pieces`` units followed by a max over each group of ``pieces``."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..backend import BackendLike
from .linear import affine, init_affine
from .explicit import Module

__all__ = ["Maxout"]


class Maxout(Module):
    """``y[:, j] = max_k z[:, j * pieces + k]`` with ``z = x @ weight.T + bias``: x (N, in) -> y (N, out)
    (Goodfellow et al., 2013). weight (out_features * pieces, in_features) and bias are initialised like
    ``torch.nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, bias: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("pieces", pieces)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Maxout: {name} must be a positive integer, got {v!r}")
        self.in_features, self.out_features, self.pieces = in_features, out_features, pieces
        init_affine(self, out_features * pieces, in_features, bias, backend, dtype, seed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pieces={self.pieces}"

    def forward(self, x: Any) -> Any:
        y, _ = F.maxout(affine(self, x, self.weight, self.in_features), self.pieces)
        return y
