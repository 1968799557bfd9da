"""``Flatten``: merge dimensions ``start_dim..end_dim`` into one, like ``torch.nn.Flatten`` (a reshape)."""
from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from ..errors import ShapeError
from .explicit import Module
from .module import not_an_array

__all__ = ["Flatten"]


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) with the defaults ``start_dim=1, end_dim=-1``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: Any) -> Any:
        try:
            shape = tuple(x.shape)
        except AttributeError:
            raise not_an_array(self, x) from None
        nd = len(shape)
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or \
                self.start_dim % nd > self.end_dim % nd:
            raise ShapeError(f"{self._where()}: dims out of range (or start after end) for input of shape {shape}")
        s, e = self.start_dim % nd, self.end_dim % nd
        return F.reshape(x, shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:])
