"""``Flatten``: merge dimensions ``start_dim..end_dim`` into one, like ``torch.nn.Flatten`` (a reshape)."""
from __future__ import annotations

import math
from typing import Any

from ..errors import ShapeError
from .module import Module, layer_namespace

__all__ = ["Flatten"]


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) with the defaults ``start_dim=1, end_dim=-1``; backward reshapes dy back."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._shape: Any = None

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x: Any) -> Any:
        xp = layer_namespace(self, x)
        nd = x.ndim
        s, e = self.start_dim % nd if nd else 0, self.end_dim % nd if nd else 0
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or s > e:
            raise ShapeError(f"{self._where()}: dims out of range (or start after end) for input of shape "
                             f"{tuple(x.shape)}")
        shape = tuple(x.shape)
        self._shape = shape
        return xp.reshape(x, shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:])

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._shape is None:
            raise self._no_forward()
        xp = layer_namespace(self, dy)
        if math.prod(dy.shape) != math.prod(self._shape):
            raise ShapeError(f"{self._where()}: backward expected dy with {math.prod(self._shape)} entries "
                             f"(input shape {self._shape}), got shape {tuple(dy.shape)}")
        return xp.reshape(dy, self._shape) if need_input_grad else None

    def _moved(self) -> None:
        self._shape = None
