"""Loss modules: ``loss = loss_fn(pred, target)``; on Tensors ``loss.backward()``, on arrays (explicit API)
``dpred = loss_fn.backward()`` (no argument). On arrays the loss is NumPy's own scalar or 0-d array, so
``loss.backward()`` there fails with NumPy's "'numpy.float32' object has no attribute 'backward'": wrap the model's
input with ``xpnn.tensor`` to get a Tensor loss.

Each calls its ``xpnn.functional`` op; cross-entropy computes the loss and its gradient in one pass (the fused
kernel on CUDA). For ``reduction="none"`` the gradient is that of the summed per-sample losses.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..autograd.op import _OVERRIDDEN, numpy_direct
from ..backend import namespace_of
from ..functional._checks import REDUCTIONS
from ..functional.losses import CrossEntropy as _CrossEntropyOp
from . import explicit
from .explicit import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss"]


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def sample_count(self, target: Any) -> Any:
        """How many samples this loss averages over for ``target`` (what ``reduction="mean"`` divides by, per
        row): the rows here. ``fit``/``evaluate`` weight each batch's loss by it, so their epoch mean is the mean
        over all samples whatever the batch size. An int, or a 0-d integer array left on the device."""
        return int(target.shape[0])

    def backward(self, dy: Any = None, need_input_grad: bool = True) -> Any:  # type: ignore[override]
        """The explicit API: gradient of the last loss (computed on arrays) with respect to the prediction (same
        shape as it); ``dy`` defaults to ones (the gradient of the summed loss for ``reduction="none"``). One per
        forward."""
        if dy is None:
            dy = explicit.ones_like_output(self)  # (None without a kept call: Module.backward says why)
        return explicit.backward(self, dy, need_input_grad)

    backward._xpnn_tape = True  # type: ignore[attr-defined]


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against integer class targets (N,) or class probabilities (N, C),
    like ``torch.nn.CrossEntropyLoss`` (``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``; see
    ``xpnn.functional.cross_entropy``). ``weight``: optional per-class weights (C,), an array of the logits'
    backend and dtype."""

    def __init__(self, weight: Any = None, *, reduction: str = "mean", ignore_index: int = -100,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if weight is None:
            self.weight = None
        else:  # a buffer, as in PyTorch: in state_dict, moved and cast by to()
            self.register_buffer("weight", weight)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"

    def sample_count(self, target: Any) -> Any:
        """The targets that are not ``ignore_index`` (a 0-d integer array, unread): what PyTorch's mean reduction
        divides by."""
        xp = namespace_of(target)
        if not xp.isdtype(target.dtype, "integral"):
            return int(target.shape[0])
        return xp.count_nonzero(target != self.ignore_index)

    def forward(self, logits: Any, target: Any) -> Any:
        return F.cross_entropy(logits, target, reduction=self.reduction, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing, weight=self.weight)

    def _one_op_call(self, logits: Any, target: Any) -> Any:
        """The explicit API on NumPy float logits and integer class indices without ``weight``: the op that
        ``forward`` runs (``F.cross_entropy``'s ``CrossEntropy``) and its backward without the tape
        (``explicit.one_op_const_call``: the same values), or ``NotImplemented`` (take the tape)."""
        if (self.weight is not None or type(logits) is not np.ndarray or type(target) is not np.ndarray
                or logits.dtype.kind != "f" or target.dtype.kind not in "iu" or not numpy_direct("cross_entropy")
                or "cross_entropy" in _OVERRIDDEN["backward"]):
            return NotImplemented
        return explicit.one_op_const_call(self, _CrossEntropyOp, logits, (target,), {
            "reduction": self.reduction, "ignore_index": self.ignore_index, "label_smoothing": self.label_smoothing})


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (N, C) (``LogSoftmax`` output) against integer class targets
    (N,), like ``torch.nn.NLLLoss`` (``weight`` (C,) per class, kept as a buffer; ``ignore_index``; ``reduction``).
    ``LogSoftmax(dim=1)`` followed by ``NLLLoss()`` equals ``CrossEntropyLoss()``."""

    def __init__(self, weight: Any = None, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight.data if hasattr(weight, "_node") else weight)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"

    def forward(self, log_probs: Any, target: Any) -> Any:
        return F.nll_loss(log_probs, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(_Loss):
    """Mean squared error between pred and target of one shape."""

    def forward(self, pred: Any, target: Any) -> Any:
        return F.mse_loss(pred, target, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy on logits against probabilities of the same shape."""

    def forward(self, logits: Any, target: Any) -> Any:
        return F.binary_cross_entropy_with_logits(logits, target, reduction=self.reduction)
