"""``BatchNorm2d``: batch normalisation per channel of (N, C, H, W) input (statistics over N, H and W)."""
from __future__ import annotations

from typing import Any

from ..errors import ShapeError
from .batchnorm import BatchNorm1d
from .conv import check_image
from .module import layer_namespace

__all__ = ["BatchNorm2d"]


class BatchNorm2d(BatchNorm1d):
    """Like ``torch.nn.BatchNorm2d``: ``BatchNorm1d``'s math (biased batch variance for normalising, unbiased for
    ``running_var``, ``momentum=None`` cumulative) on the (N*H*W, C) matrix of the channel-last input."""

    def _where(self) -> str:
        return f"BatchNorm2d({self.num_features})"

    def forward(self, x: Any) -> Any:
        ref = self.weight.data if self.weight is not None else self.running_mean
        xp = layer_namespace(self, x) if ref is None else layer_namespace(self, x, ref)
        check_image(self, xp, x, self.num_features, ref.dtype if ref is not None else None)
        n, c, h, w = (int(s) for s in x.shape)
        rows = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * h * w, c))
        y = super().forward(rows)
        self._image_shape = (n, c, h, w)
        return xp.permute_dims(xp.reshape(y, (n, h, w, c)), (0, 3, 1, 2))

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise self._no_forward()
        xp = layer_namespace(self, dy)
        n, c, h, w = self._image_shape
        check_image(self, xp, dy, c, None)
        if tuple(dy.shape) != (n, c, h, w):
            raise ShapeError(f"{self._where()}: backward expected dy of shape {(n, c, h, w)}, got {tuple(dy.shape)}")
        rows = xp.reshape(xp.permute_dims(dy, (0, 2, 3, 1)), (n * h * w, c))
        dx = super().backward(rows, need_input_grad)
        return None if dx is None else xp.permute_dims(xp.reshape(dx, (n, h, w, c)), (0, 3, 1, 2))
