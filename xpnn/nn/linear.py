"""``Linear``: the affine layer ``y = x @ weight.T + bias`` with PyTorch's layout and initialisation."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import functional as F
from .. import init
from ..autograd.tensor import Tensor
from ..backend import BackendLike, dtype_name, namespace_of
from ..debug import check_finite, get_debug
from ..errors import DTypeError, ShapeError
from ..autograd.op import numpy_direct
from ..functional.linear import Linear as LinearOp
from .module import Module, layer_namespace
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Linear"]


def check_features(module: Module, xp: Any, x: Any, in_features: int, dtype: Any) -> None:
    """Shared input check of layers taking (N, in_features) input (array or Tensor) of the parameters' dtype."""
    if isinstance(x, Tensor):
        x = x.data
    if xp is None:
        xp = layer_namespace(module, x, module._ref_array())
    if x.ndim != 2 or x.shape[1] != in_features:
        hint = ""
        if x.ndim == 2 and x.shape[0] == in_features:  # a column-vector layout (features, N), as in many NumPy books
            hint = "; samples are rows in xpnn (PyTorch's layout): pass x.T for a (features, N) array"
        elif x.ndim == 1 and x.shape[0] == in_features:
            hint = "; pass x[None, :] (or x.reshape(1, -1)) for one sample"
        raise ShapeError(f"{module._where()}: expected input of shape (N, {in_features}), got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ShapeError(f"{module._where()}: empty batch, got input of shape {tuple(x.shape)}")
    if x.dtype != dtype:
        want, got = dtype_name(dtype), dtype_name(x.dtype)
        hint = f"cast the input (e.g. x.astype('{want}') for NumPy)"
        if xp.isdtype(x.dtype, "real floating"):
            hint += f" or build the model with dtype='{got}'"
        raise DTypeError(f"{module._where()}: expected input of dtype {want} (the parameters' dtype), got {got}; {hint}")
    if get_debug():  # (the layer's name is only formatted when it may be needed)
        check_finite(xp, x, module._where())


def check_grad_output(module: Module, xp: Any, dy: Any, shape: tuple[int, ...], dtype: Any) -> None:
    if tuple(dy.shape) != shape:
        raise ShapeError(f"{module._where()}: backward expected dy of shape {shape}, got {tuple(dy.shape)}")
    if dy.dtype != dtype:
        raise DTypeError(f"{module._where()}: backward expected dy of dtype {dtype_name(dtype)}, got {dtype_name(dy.dtype)}")
    if get_debug():
        check_finite(xp, dy, module._where(), "dy")


def add_affine_grads(weight: Parameter, bias: Optional[Parameter], dw: Any, db: Any) -> None:
    """``weight.grad += dw`` and ``bias.grad += db``, in place (into the model's flat gradient buffer)."""
    g = weight.grad
    g += dw
    if bias is not None and db is not None:
        gb = bias.grad
        gb += db


def init_affine(module: Module, out_rows: int, in_features: int, bias: bool,
                backend: BackendLike, dtype: Any, seed: Any) -> None:
    """Give ``module`` ``weight`` (out_rows, in_features) and ``bias`` (out_rows,) (or ``bias = None``), initialised
    like ``torch.nn.Linear.reset_parameters`` from a NumPy Generator seeded by ``seed``: ``kaiming_uniform(a=sqrt(5))``
    (i.e. U(-1/sqrt(in), 1/sqrt(in))) and bias U(-1/sqrt(in), 1/sqrt(in)); both in one FlatBuffer."""
    be, dt, rng = factory(backend, dtype, seed)
    w = np.empty((out_rows, in_features))
    init.kaiming_uniform(w, a=math.sqrt(5), seed=rng)
    module.weight = Parameter(be.asarray(w, dtype=dt))
    module.bias = None
    if bias:
        bound = 1.0 / math.sqrt(in_features)
        module.bias = Parameter(be.asarray(rng.uniform(-bound, bound, size=(out_rows,)), dtype=dt))
    FlatBuffer.pack(module.parameters())


class Linear(Module):
    """``y = x @ weight.T + bias``: x (N, in_features) -> y (N, out_features).

    weight (out_features, in_features) and bias (out_features,) are initialised like ``torch.nn.Linear``
    from a NumPy Generator seeded by ``seed``, in ``dtype`` (default float32) on ``backend``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Linear: {name} must be a positive integer, got {v!r}")
        self.in_features = in_features
        self.out_features = out_features
        init_affine(self, out_features, in_features, bias, backend, dtype, seed)
        self._x: Any = None

    def _where(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def _explicit_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Plain NumPy input: the explicit API without the tape (``Module._array_call``), the same checks first."""
        x = args[0] if len(args) == 1 and not kwargs else None
        w = self.weight._data
        if (type(x) is np.ndarray and type(w) is np.ndarray and type(self).forward is Linear.forward
                and not get_debug() and numpy_direct("linear")):  # (a subclass with its own forward runs it)
            if x.ndim != 2 or x.shape[1] != self.in_features or x.dtype != w.dtype or x.shape[0] == 0:
                check_features(self, None, x, self.in_features, w.dtype)  # (raises, naming the layer)
            out = self._array_call(LinearOp, x, self.weight, self.bias)
            if out is not NotImplemented:
                return out
        return super()._explicit_call(args, kwargs)

    def forward(self, x: Any) -> Any:
        w = self.weight.data
        check_features(self, layer_namespace(self, x.data if isinstance(x, Tensor) else x, w), x, self.in_features,
                       w.dtype)
        if get_debug():  # NaN weights are reported where they are
            check_finite(namespace_of(w), w, self._where(), "weight")
        return F.linear(x, self.weight, self.bias)
