"""Loss modules: ``loss = loss_fn(pred, target)``, then ``dpred = loss_fn.backward()`` (no argument).

Each calls the ``*_with_grad`` function of ``xpnn.functional``, so the loss and its gradient come from one pass;
for ``reduction="none"`` the gradient is that of the summed per-sample losses.
"""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functional._checks import REDUCTIONS
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._grad: Any = None

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def backward(self) -> Any:  # type: ignore[override]
        """Gradient of the last loss with respect to the prediction (same shape as it)."""
        if self._grad is None:
            raise self._no_forward()
        return self._grad


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against integer class targets (N,), like ``torch.nn.CrossEntropyLoss``
    (``ignore_index``, ``label_smoothing``, ``reduction``)."""

    def __init__(self, *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"

    def forward(self, logits: Any, target: Any) -> Any:
        loss, self._grad = F.cross_entropy_with_grad(
            logits, target, reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing)
        return loss


class MSELoss(_Loss):
    """Mean squared error between pred and target of one shape."""

    def forward(self, pred: Any, target: Any) -> Any:
        loss, self._grad = F.mse_loss_with_grad(pred, target, reduction=self.reduction)
        return loss


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy on logits against probabilities of the same shape."""

    def forward(self, logits: Any, target: Any) -> Any:
        loss, self._grad = F.binary_cross_entropy_with_logits_with_grad(logits, target, reduction=self.reduction)
        return loss
