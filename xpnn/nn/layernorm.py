"""``LayerNorm``: normalisation over the trailing ``normalized_shape`` axes of each sample, with a learned
elementwise scale and shift."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..backend import BackendLike
from ..errors import DTypeError, ShapeError
from .embedding import layer_error
from .explicit import Module
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["LayerNorm"]


class LayerNorm(Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape`` axes (an int or
    a tuple), biased variance (Ba, Kiros & Hinton 2016; ``torch.nn.LayerNorm``). ``weight`` starts at 1 and ``bias``
    at 0, both of shape ``normalized_shape``; ``elementwise_affine=False`` has neither, ``bias=False`` no bias.
    float16 input computes its statistics in float32. Input whose trailing dimensions are not ``normalized_shape``
    raises ``ShapeError`` naming the layer; input of another dtype than the parameters ``DTypeError``."""

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty tuple of them, got "
                             f"{normalized_shape!r}")
        self.normalized_shape, self.eps, self.elementwise_affine = shape, float(eps), bool(elementwise_affine)
        be, dt, _ = factory(backend, dtype, seed)
        self.weight = Parameter(be.xp.ones(shape, dtype=dt)) if elementwise_affine else None
        self.bias = Parameter(be.xp.zeros(shape, dtype=dt)) if elementwise_affine and bias else None
        if elementwise_affine:
            FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")

    def forward(self, x: Any) -> Any:
        try:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        except (ShapeError, DTypeError) as exc:
            raise layer_error(self, exc, "layer_norm") from None
