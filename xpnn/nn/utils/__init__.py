"""Gradient clipping (``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``), in place on ``.grad``.

When the parameters are exactly one model's flat buffer, each is one pass over the flat gradient array (its padding
is zero, so the norm is unchanged); otherwise one pass per gradient. Nothing is read on the host unless
``error_if_nonfinite=True``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..._tensor import Tensor
from ...backend import namespace_of
from ..parameter import Parameter, flat_buffer_of

__all__ = ["clip_grad_norm_", "clip_grad_value_"]

Params = Union[Tensor, Iterable[Tensor]]


def _grads(parameters: Params, where: str) -> list[Any]:
    """The gradient arrays of ``parameters`` (one Tensor or an iterable), skipping those without one (as PyTorch
    skips ``grad is None``); the flat gradient array when they are exactly one FlatBuffer."""
    plist = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for p in plist:
        if not isinstance(p, Tensor):
            raise TypeError(f"{where}: expected Parameters or Tensors, got {type(p).__name__}")
    buf = flat_buffer_of(plist) if plist and isinstance(plist[0], Parameter) else None
    if buf is not None:
        return [buf.grad]
    return [p.grad for p in plist if (p.has_grad if isinstance(p, Parameter) else p.grad is not None)]


def clip_grad_norm_(parameters: Params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Optional[bool] = None) -> Tensor:
    """Scale the gradients in place so that their joint ``norm_type``-norm (all gradients as one vector; ``inf``
    for the largest absolute value) is at most ``max_norm``: ``g *= min(1, max_norm / (total + 1e-6))``, as
    ``torch.nn.utils.clip_grad_norm_``. Returns the total norm before clipping as a 0-d Tensor (no gradient; 0.0
    for no gradients). ``error_if_nonfinite``: raise ``RuntimeError`` when the total norm is NaN or infinite (a
    host read). ``foreach`` is accepted for PyTorch compatibility (the flat buffer is already one pass).
    ``norm_type`` must be positive (PyTorch's 0, negative and -inf orders are not supported); float16 gradients are
    reduced in float32."""
    grads = _grads(parameters, "clip_grad_norm_")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    if not grads:
        return Tensor(np.asarray(0.0, dtype=np.float32))
    xp = namespace_of(*grads, where="clip_grad_norm_")
    wide = xp.float64 if any(g.dtype == xp.float64 for g in grads) else xp.float32
    parts = []
    for g in grads:
        a = xp.abs(xp.astype(g, wide) if g.dtype != wide else g)
        if math.isinf(norm_type):
            parts.append(xp.max(a) if a.size else xp.zeros((), dtype=wide))
        else:
            parts.append(xp.sum(a**norm_type))
    if math.isinf(norm_type):
        total = xp.max(xp.stack(parts))
    else:
        total = xp.sum(xp.stack(parts)) ** (1.0 / norm_type)
    if error_if_nonfinite and not bool(xp.all(xp.isfinite(total))):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite "
                           f"({float(total)}), so it cannot be clipped; pass error_if_nonfinite=False to scale anyway")
    coef = xp.clip(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g *= xp.astype(coef, g.dtype)
    return Tensor(total)


def clip_grad_value_(parameters: Params, clip_value: float, foreach: Optional[bool] = None) -> None:
    """Clip every gradient element into ``[-clip_value, clip_value]`` in place (``torch.nn.utils.clip_grad_value_``;
    ``foreach`` accepted and ignored)."""
    v = float(clip_value)
    for g in _grads(parameters, "clip_grad_value_"):
        xp = namespace_of(g, where="clip_grad_value_")
        g[...] = xp.clip(g, min=-v, max=v)
from . import rnn  # noqa: E402 (xpnn.nn.utils.rnn: PackedSequence, pack_padded_sequence, pad_packed_sequence, ...)
