"""The affine map ``y = x @ weight.T + bias`` (PyTorch's layout), declared once with its backward."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..autograd.op import Context, Op
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks, cpu_threads
from .reductions import sum as _sum
from .shape import reshape

__all__ = ["linear", "linear_backward"]

_dot = cpu_threads._dot  # np.dot without NEP 18's dispatch
# multiply-adds (x.size * out_features) from which a product goes through cpu_threads.dot; below, np.dot is called
# directly (a small layer's host cost: the extra call is ~40% of its product)
_THREADED = cpu_threads.BLAS_THREADED_MACS


def _check_linear(x: Any, weight: Any, bias: Any) -> bool:
    """Raise naming the expected and given shapes/dtypes (the one check of a linear call: ``nn.Linear``
    re-diagnoses a failure only to name the layer); returns whether ``x`` and ``weight`` are plain float32/float64
    NumPy arrays (whose products ``np.dot`` runs)."""
    if type(x) is type(weight) is np.ndarray:
        dt, ws = x.dtype, weight.shape  # (a dtype is most often the very same object: `is` before `==`)
        if ((dt is weight.dtype or dt == weight.dtype) and dt.char in "fd" and len(ws) == 2 and x.ndim
                and x.shape[-1] == ws[1] and (bias is None or type(bias) is np.ndarray and bias.shape == ws[:1]
                                              and (bias.dtype is dt or bias.dtype == dt))):
            return True  # plain NumPy arguments that pass every check below
    xp = namespace_of(x, weight, bias, where="linear")
    _checks.floating(xp, x, "linear")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        transposed = weight.ndim == 2 and x.ndim >= 1 and x.shape[-1] == weight.shape[0]
        column = weight.ndim == 2 and x.ndim == 2 and x.shape[0] == weight.shape[1]
        raise ShapeError(
            f"linear: expected input of shape (N, {weight.shape[1] if weight.ndim == 2 else '?'}) for weight "
            f"{tuple(weight.shape)}, got {tuple(x.shape)}"
            + ("; weight has PyTorch's layout (out_features, in_features): pass w.T for a (in, out) matrix"
               if transposed else
               "; samples are rows in xpnn (PyTorch's layout): pass x.T for a (features, N) array" if column else "")
        )
    if x.dtype != weight.dtype:
        raise DTypeError(f"linear: input dtype {dtype_name(x.dtype)} differs from weight dtype {dtype_name(weight.dtype)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        flat = math.prod(bias.shape) == weight.shape[0]  # e.g. a column (out, 1) or a row (1, out)
        raise ShapeError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
                         + ("; pass b.ravel()" if flat else ""))
    if bias is not None and bias.dtype != weight.dtype:  # (torch.nn.functional.linear's rule: `y += bias` would
        # promote or silently round the output to another dtype)
        raise DTypeError(f"linear: bias dtype {dtype_name(bias.dtype)} differs from weight dtype "
                         f"{dtype_name(weight.dtype)}")
    return False


class Linear(Op):
    name = "linear"
    adds_leaf_grads = True  # (the weight's gradient: backward)

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any = None) -> Any:
        """x (..., in), weight (out, in), bias (out,) or None -> (..., out)."""
        plain = _check_linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        if not plain:
            y = x @ weight.T
        elif x.ndim > 2:  # NumPy runs (..., in) @ (in, out) as one GEMM per leading index: fold the leading axes
            rows = math.prod(x.shape[:-1])  # into one GEMM (3x faster at (32, 64, 128))
            y = cpu_threads.dot(x.reshape(rows, x.shape[-1]), weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
        else:
            y = _dot(x, weight.T) if x.size * weight.shape[0] < _THREADED else cpu_threads.dot(x, weight.T)
        if bias is not None:
            y += bias
        return y

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        """``dx = dy @ weight``, ``dweight = dy.T @ x``, ``dbias = sum(dy)`` over all but the last axis. (``dy`` has
        the output's shape: every way in checks it once, ``Tensor.backward``/``xpnn.grad`` against the output, the
        explicit API's ``backward`` against the kept output, ``linear_backward`` itself.) On NumPy, a large
        ``dweight`` is added into the weight's ``.grad`` by the GEMM itself (beta = 1) where ``ctx.leaf_grad(1)``
        hands over that array (a backward into ``.grad`` that would do exactly ``.grad += dweight``); it is then
        returned as ``None``."""
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        if x.ndim != 2:  # fold leading axes into the batch
            dy2 = reshape(dy, (-1, weight.shape[0]))
            x2 = reshape(x, (-1, weight.shape[1]))
        else:
            dy2, x2 = dy, x
        dx = dw = db = None
        if type(dy2) is type(x2) is type(weight) is np.ndarray:
            # NumPy: np.dot (cpu_threads.dot where BLAS may thread it), one GEMM over the folded rows rather than one per leading index, and
            # ndarray.sum's reduction without the op or its Python wrapper
            if need[0]:
                dx = _dot(dy2, weight) if dy2.size * weight.shape[1] < _THREADED else cpu_threads.dot(dy2, weight)
                if dy2 is not dy:
                    dx = dx.reshape(dy.shape[:-1] + (weight.shape[1],))
            if need[1]:
                if dy2.size * x2.shape[1] < _THREADED:
                    dw = _dot(dy2.T, x2)
                else:  # a large product: added into the weight's .grad by the GEMM itself where that is exactly
                    into = ctx.leaf_grad(1)  # `.grad += dw` (beta = 1: no temporary and no second pass over it)
                    if into is None or not cpu_threads.dot_add(dy2.T, x2, into):
                        dw = cpu_threads.dot(dy2.T, x2)
            if len(need) > 2 and need[2]:
                db = np.add.reduce(dy2, 0)
            return dx, dw, db
        if need[0]:
            dx = dy @ weight
        if need[1]:
            dw = dy2.T @ x2
        if len(need) > 2 and need[2]:
            db = _sum(dy2, axis=0)
        return dx, dw, db

    @staticmethod
    def onnx(g: Any, x: str, weight: str, bias: Optional[str] = None) -> str:
        """``Gemm`` (transB) for x (N, in); ``MatMul`` with the transposed weight plus ``Add`` for x (..., in)."""
        if len(g.shape(x)) == 2:
            return g.op("Gemm", x, weight, bias, transB=1)
        y = g.op("MatMul", x, g.op("Transpose", weight, perm=[1, 0]))
        return y if bias is None else g.op("Add", y, bias)


def linear(x: Any, weight: Any, bias: Any = None) -> Any:
    """``y = x @ weight.T + bias`` with PyTorch's layout: x (N, in), weight (out, in), bias (out,) -> y (N, out).

    Arrays or Tensors; raises ``ShapeError``/``DTypeError`` naming the expected and given shape/dtype."""
    return Linear.apply(x, weight, bias)


def linear_backward(
    x: Any, weight: Any, dy: Any, *, need_input_grad: bool = True, need_bias_grad: bool = True
) -> tuple[Optional[Any], Any, Optional[Any]]:
    """Gradients of ``y = x @ weight.T + bias``: x (N, in), weight (out, in), dy (N, out) ->
    ``(dx = dy @ weight, dweight = dy.T @ x, dbias = sum(dy, axis=0))``; ``dx``/``dbias`` are ``None`` when not needed.
    """
    namespace_of(x, weight, dy, where="linear_backward")
    if dy.ndim != 2 or x.ndim != 2 or dy.shape[0] != x.shape[0] or dy.shape[1] != weight.shape[0]:
        raise ShapeError(
            f"linear_backward: expected dy of shape ({x.shape[0]}, {weight.shape[0]}), got {tuple(dy.shape)}"
        )
    _checks.same_dtype(weight, dy, "linear_backward", ("weight", "dy"))
    ctx = Context((need_input_grad, True, need_bias_grad), (x, weight))
    ctx.save_for_backward(x, weight)
    return Linear.backward(ctx, dy)
