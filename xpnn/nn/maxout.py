"""``Maxout``: a linear map to ``out_features * pieces`` units followed by a max over each group of ``pieces``."""
from __future__ import annotations

from typing import Any

from .. import functional as F
from ..backend import BackendLike
from ..functional.layers import linear_backward, maxout, maxout_backward
from .linear import add_affine_grads, check_features, check_grad_output, init_affine
from .module import Module, layer_namespace

__all__ = ["Maxout"]


class Maxout(Module):
    """``y[:, j] = max_k z[:, j * pieces + k]`` with ``z = x @ weight.T + bias``: x (N, in) -> y (N, out).

    weight (out_features * pieces, in_features) and bias are initialised like ``torch.nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, pieces: int = 2, bias: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("pieces", pieces)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Maxout: {name} must be a positive integer, got {v!r}")
        self.in_features, self.out_features, self.pieces = in_features, out_features, pieces
        init_affine(self, out_features * pieces, in_features, bias, backend, dtype, seed)
        self._x: Any = None
        self._idx: Any = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, pieces={self.pieces}"

    def forward(self, x: Any) -> Any:
        w = self.weight.data
        xp = layer_namespace(self, x, w)
        check_features(self, xp, x, self.in_features, w.dtype)
        z = F.linear(x, w, self.bias.data if self.bias is not None else None)
        y, self._idx = maxout(z, self.pieces)
        self._x = x
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        x = self._x
        if x is None:
            raise self._no_forward()
        w = self.weight.data
        xp = layer_namespace(self, dy, w)
        check_grad_output(self, xp, dy, (x.shape[0], self.out_features), w.dtype)
        dz = maxout_backward(self._idx, dy, self.pieces)
        dx, dw, db = linear_backward(x, w, dz, need_input_grad=need_input_grad, need_bias_grad=self.bias is not None)
        add_affine_grads(self.weight, self.bias, dw, db)
        return dx

    def _moved(self) -> None:
        self._x = self._idx = None
