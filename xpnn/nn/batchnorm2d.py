"""``BatchNorm2d``: batch normalisation per channel of (N, C, H, W) input (statistics over N, H and W)."""
from __future__ import annotations

from typing import Any

from .batchnorm import BatchNorm1d
from .conv import check_image

__all__ = ["BatchNorm2d"]


class BatchNorm2d(BatchNorm1d):
    """Like ``torch.nn.BatchNorm2d``: ``BatchNorm1d``'s parameters, buffers and semantics (biased batch variance
    for normalising, unbiased for ``running_var``, ``momentum=None`` cumulative) with the statistics taken over
    the N, H and W axes of (N, C, H, W) input (``xpnn.functional.batch_norm``)."""

    _ndims = (4,)

    def _where(self) -> str:
        return f"BatchNorm2d({self.num_features})"

    def _check(self, x: Any) -> None:
        ref = self.weight.data if self.weight is not None else self.running_mean
        check_image(self, None, x, self.num_features, ref.dtype if ref is not None else None)
