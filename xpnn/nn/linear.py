"""``Linear``: the affine layer ``y = x @ weight.T + bias`` with PyTorch's layout and initialisation."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .. import init
from .._tensor import Tensor
from ..autograd.op import numpy_direct
from ..backend import BackendLike, dtype_name, namespace_of
from ..debug import _debug, check_finite, get_debug
from ..errors import DTypeError, NamespaceMismatchError, ShapeError
from ..functional.linear import Linear as LinearOp
from .explicit import Module, one_op_call
from .module import layer_namespace, not_an_array
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Linear"]


def check_features(module: Module, xp: Any, x: Any, in_features: int, dtype: Any, leading: bool = False) -> None:
    """Shared input check of layers taking (N, in_features) input (array or Tensor) of the parameters' dtype;
    ``leading``: (*, in_features), any leading dimensions, none included (``torch.nn.Linear``: a 1-D sample gives a 1-D
    output). An empty batch is accepted, as in PyTorch."""
    if isinstance(x, Tensor):
        x = x.data
    if xp is None:
        xp = layer_namespace(module, x, module._ref_array())
    fits = x.ndim >= 1 and x.shape[-1] == in_features if leading else x.ndim == 2 and x.shape[1] == in_features
    if not fits:
        hint = ""
        if x.ndim == 2 and x.shape[0] == in_features:  # a column-vector layout (features, N), as in many NumPy books
            hint = "; samples are rows in xpnn (PyTorch's layout): pass x.T for a (features, N) array"
        elif x.ndim == 1 and x.shape[0] == in_features:  # (``leading`` takes it)
            hint = "; pass x[None, :] (or x.reshape(1, -1)) for one sample"
        batch = "N, *" if leading and x.ndim != 2 else "N"
        raise ShapeError(f"{module._where()}: expected input of shape ({batch}, {in_features}), got "
                         f"{tuple(x.shape)}{hint}")
    check_input_dtype(module, xp, x, dtype)


def check_input_dtype(module: Module, xp: Any, x: Any, dtype: Any) -> None:
    """The dtype half of ``check_features`` (x an array of namespace ``xp``): a DTypeError naming the layer unless
    x has the parameters' ``dtype``; in debug mode, the finite check."""
    if x.dtype != dtype:
        want, got = dtype_name(dtype), dtype_name(x.dtype)
        hint = f"cast the input (e.g. x.astype('{want}') for NumPy)"
        if xp.isdtype(x.dtype, "real floating"):
            hint += f" or build the model with dtype='{got}'"
        raise DTypeError(f"{module._where()}: expected input of dtype {want} (the parameters' dtype), got {got}; {hint}")
    if get_debug():  # (the layer's name is only formatted when it may be needed)
        check_finite(xp, x, module._where())


def affine(module: Module, x: Any, weight: Any, in_features: int, leading: bool = False) -> Any:
    """``F.linear(x, weight, module.bias)`` for a layer taking (N, in_features) input (``leading``: (*,
    in_features)): the op validates the arguments; a failed check is re-diagnosed by ``check_features`` so that the
    error names the layer (and says what to do). The layer's own rule (2-D unless ``leading``) and, in debug mode,
    the finite check run here."""
    d = x._data if isinstance(x, Tensor) else x
    try:
        checks = d.ndim != 2 or get_debug()
    except AttributeError:
        raise not_an_array(module, d) from None
    if checks:
        check_features(module, None, x, in_features, module.weight.data.dtype, leading)
        if get_debug():  # NaN weights are reported where they are
            check_finite(namespace_of(module.weight.data), module.weight.data, module._where(), "weight")
    try:
        return F.linear(x, weight, module.bias)
    except (ShapeError, DTypeError, NamespaceMismatchError):
        check_features(module, None, x, in_features, module.weight.data.dtype, leading)  # raises, naming the layer
        raise


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
    """``y = x @ weight.T + bias``: x (*, in_features) -> y (*, out_features), any leading dimensions as
    ``torch.nn.Linear``: (N, in), (N, L, in) in a transformer, one unbatched sample (in,) -> (out,), an empty batch
    (0, in) -> (0, out) (whose gradients are zeros for ``weight`` and ``bias``).

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

    def _where(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x: Any) -> Any:
        return affine(self, x, self.weight, self.in_features, leading=True)

    def _one_op_call(self, x: Any) -> Any:
        """The explicit API on a NumPy array: the op and its backward without the tape (``explicit.one_op_call``),
        or ``NotImplemented`` (take the tape)."""
        weight = self.weight
        w = weight._data
        if type(x) is not np.ndarray or type(w) is not np.ndarray or _debug[0] or not numpy_direct("linear"):
            return NotImplemented
        if x.ndim != 2:  # the layer's own rule (see affine)
            check_features(self, None, x, self.in_features, w.dtype, leading=True)  # (raises, naming the layer)
        try:
            return one_op_call(self, LinearOp, x, weight, self.bias)
        except (ShapeError, DTypeError):  # the op's check failed: say it naming the layer
            check_features(self, None, x, self.in_features, w.dtype, leading=True)
            raise
