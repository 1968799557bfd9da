"""``BatchNorm2d``: batch normalisation per channel of (N, C, H, W) input (statistics over N, H and W)."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..errors import ShapeError
from .batchnorm import BatchNorm1d
from .conv import check_image

__all__ = ["BatchNorm2d"]


class BatchNorm2d(BatchNorm1d):
    """Like ``torch.nn.BatchNorm2d``: ``BatchNorm1d``'s parameters, buffers and semantics (biased batch variance
    for normalising, unbiased for ``running_var``, ``momentum=None`` cumulative) with the statistics taken over
    the N, H and W axes of (N, C, H, W) input (``xpnn.functional.batch_norm``)."""

    def _where(self) -> str:
        return f"BatchNorm2d({self.num_features})"

    def forward(self, x: Any) -> Any:
        ref = self.weight.data if self.weight is not None else self.running_mean
        check_image(self, None, x, self.num_features, ref.dtype if ref is not None else None)
        batch_stats = self.training or not self.track_running_stats
        n, _, h, w = (int(s) for s in x.shape)
        if batch_stats and n * h * w < 2:
            raise ShapeError(f"{self._where()}: expected more than 1 value per channel when training, "
                             f"got input of shape {tuple(x.shape)}")
        wt, b = self.weight, self.bias
        if self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, wt, b, training=True, momentum=self.momentum,
                                eps=self.eps, num_batches_tracked=self.num_batches_tracked)
        if batch_stats:
            return F.batch_norm(x, None, None, wt, b, training=True, eps=self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, wt, b, training=False, eps=self.eps)
