"""Elementwise arithmetic and math ops with NumPy broadcasting: ``add, sub, mul, div, pow, neg, exp, log, sqrt, abs,
clip, astype``, and ``matmul``.

Each takes arrays or Tensors (Python scalars too, for the arithmetic). A backward sums the gradient back to each
input's shape (``sum_to``) and is written with the same ops, so it is differentiable again (``create_graph``).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ..autograd import op as _op
from ..autograd.op import Context, Op
from ..backend import namespace_of, resolve_dtype
from ..errors import ShapeError
from . import _checks
from .shape import reshape, sum_to

__all__ = ["add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "abs", "clip", "astype", "matmul"]


def _shape(v: Any) -> Optional[tuple[int, ...]]:
    return tuple(v.shape) if hasattr(v, "shape") else None


def _check_pair(a: Any, b: Any, where: str) -> None:
    if hasattr(a, "shape") and hasattr(b, "shape") and type(a) is not type(b):
        namespace_of(a, b, where=where)


def _values(v: Any) -> Any:
    """The array of a Tensor saved for a recorded backward (for masks, which need no gradient), else ``v``."""
    return v.data if isinstance(v, _op.TensorBase) else v


def _reduce_to(g: Any, shape: Optional[tuple[int, ...]]) -> Any:
    return None if shape is None else sum_to(g, shape)


def _onnx_binary(op_type: str) -> Any:
    """The ONNX lowering of a binary op: ``op_type(a, b)``, a Python scalar operand as a constant of the other's
    dtype (as NumPy's scalar promotion keeps the array's dtype)."""
    def onnx(g: Any, a: Any, b: Any) -> str:
        if not isinstance(a, str):
            a = g.const(a, dtype=b)
        if not isinstance(b, str):
            b = g.const(b, dtype=a)
        return g.op(op_type, a, b)
    return staticmethod(onnx)


def _onnx_unary(op_type: str) -> Any:
    """The ONNX lowering of a unary op: ``op_type(a)``."""
    return staticmethod(lambda g, a: g.op(op_type, a))


class Add(Op):
    name = "add"
    onnx = _onnx_binary("Add")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        _check_pair(a, b, "add")
        ctx.shapes = (_shape(a), _shape(b))
        try:
            return a + b
        except ValueError:
            _checks.broadcast("add", a, b)  # (the backend's error names no op)
            raise

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (_reduce_to(g, sa) if need[0] else None), (_reduce_to(g, sb) if need[1] else None)


class Sub(Op):
    name = "sub"
    onnx = _onnx_binary("Sub")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        _check_pair(a, b, "sub")
        ctx.shapes = (_shape(a), _shape(b))
        try:
            return a - b
        except ValueError:
            _checks.broadcast("sub", a, b)
            raise

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        sa, sb = ctx.shapes
        need = ctx.needs_input_grad
        return (_reduce_to(g, sa) if need[0] else None), (_reduce_to(-g, sb) if need[1] else None)


class Mul(Op):
    name = "mul"
    onnx = _onnx_binary("Mul")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        _check_pair(a, b, "mul")
        ctx.save_for_backward(a, b)
        try:
            return a * b
        except ValueError:
            _checks.broadcast("mul", a, b)
            raise

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (_reduce_to(g * b, _shape(a)) if need[0] else None), (_reduce_to(g * a, _shape(b)) if need[1] else None)


class Div(Op):
    name = "div"
    onnx = _onnx_binary("Div")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        _check_pair(a, b, "div")
        try:
            out = a / b
        except ValueError:
            _checks.broadcast("div", a, b)
            raise
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        a, b, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        ga = _reduce_to(g / b, _shape(a)) if need[0] else None
        gb = _reduce_to(-(g * out) / b, _shape(b)) if need[1] else None  # d(a/b)/db = -a/b^2 = -out/b
        return ga, gb


class Pow(Op):
    name = "pow"
    onnx = _onnx_binary("Pow")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        _check_pair(a, b, "pow")
        try:
            out = a ** b
        except ValueError:
            _checks.broadcast("pow", a, b)
            raise
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        a, b, out = ctx.saved_tensors
        need = ctx.needs_input_grad
        ad, bd = _values(a), _values(b)
        ga = gb = None
        if need[0]:  # PyTorch's mask: 0 where b == 0 (b * a ** (b - 1) would be 0 * inf at a == 0)
            if hasattr(bd, "shape"):
                xp = namespace_of(bd)
                zero_b = xp.astype(bd == 0, ad.dtype if hasattr(ad, "dtype") else bd.dtype)
                ga = g * (b * (a * (1 - zero_b) + zero_b) ** (b - 1))  # base 1 where b == 0
            else:
                ga = g * (b * a ** (b - 1)) if bd != 0 else g * 0
            ga = _reduce_to(ga, _shape(a))
        if need[1]:  # PyTorch's mask: 0 where a == 0 and b >= 0 (a ** b * log(a) would be 0 * -inf)
            if hasattr(ad, "shape"):
                xp = namespace_of(ad)
                zero_a = xp.astype((ad == 0) & (bd >= 0), ad.dtype)
                log_a = log(a * (1 - zero_a) + zero_a)  # log 1 = 0 where masked
            else:
                log_a = math.log(a)
            gb = _reduce_to(g * (out * log_a), _shape(b))
        return ga, gb


class Neg(Op):
    name = "neg"
    onnx = _onnx_unary("Neg")

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        return -a

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return -g


class Exp(Op):
    name = "exp"
    onnx = _onnx_unary("Exp")

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = namespace_of(a, where="exp").exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (out,) = ctx.saved_tensors
        return g * out


class Log(Op):
    name = "log"
    onnx = _onnx_unary("Log")

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return namespace_of(a, where="log").log(a)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(Op):
    name = "sqrt"
    onnx = _onnx_unary("Sqrt")

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = namespace_of(a, where="sqrt").sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        (out,) = ctx.saved_tensors
        return g / (out * 2.0)


class Abs(Op):
    name = "abs"
    onnx = _onnx_unary("Abs")

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        xp = namespace_of(a, where="abs")
        # d|a|/da: 0 at 0 and at NaN (where sign gives NaN), like PyTorch's sgn
        ctx.sign = xp.astype(a > 0, a.dtype) - xp.astype(a < 0, a.dtype)
        return xp.abs(a)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g * ctx.sign


class Clip(Op):
    name = "clip"

    @staticmethod
    def forward(ctx: Context, a: Any, *, min: Any = None, max: Any = None) -> Any:  # noqa: A002
        xp = namespace_of(a, where="clip")
        _checks.floating(xp, a, "clip")
        out = a
        keep = None
        try:
            if min is not None:
                out = xp.maximum(out, min)
                keep = a >= min
            if max is not None:
                out = xp.minimum(out, max)
                keep = (a <= max) if keep is None else xp.logical_and(keep, a <= max)
        except ValueError:
            _checks.broadcast("clip", a, *(v for v in (min, max) if v is not None))
            raise
        ctx.keep = None if keep is None else xp.astype(keep, a.dtype)  # gradient 1 inside [min, max], like PyTorch
        return xp.asarray(out, copy=True) if out is a else out

    @staticmethod
    def onnx(g: Any, a: str, *, min: Any = None, max: Any = None) -> str:  # noqa: A002
        out = a if min is None else g.op("Max", a, g.const(min, dtype=a))
        out = out if max is None else g.op("Min", out, g.const(max, dtype=a))
        return g.op("Identity", out) if out is a else out

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g if ctx.keep is None else g * ctx.keep


class AsType(Op):
    name = "astype"

    @staticmethod
    def forward(ctx: Context, a: Any, *, dtype: Any) -> Any:
        xp = namespace_of(a, where="astype")
        ctx.dtype = a.dtype
        return xp.astype(a, resolve_dtype(xp, dtype))

    @staticmethod
    def onnx(g: Any, a: str, *, dtype: Any) -> str:
        return g.cast(a, resolve_dtype(np, dtype))

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return astype(g, ctx.dtype)


class Matmul(Op):
    name = "matmul"
    onnx = _onnx_binary("MatMul")

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        namespace_of(a, b, where="matmul")
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must have at least one dimension, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        k_a, k_b = a.shape[-1], (b.shape[-2] if b.ndim > 1 else b.shape[0])
        if k_a != k_b:
            raise ShapeError(f"matmul: inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        sa, sb = tuple(a.shape), tuple(b.shape)
        # promote 1-D operands as matmul does (a (k,) -> (1, k), b (k,) -> (k, 1)); g gets the promoted axes back
        a2 = reshape(a, (1, sa[0])) if len(sa) == 1 else a
        b2 = reshape(b, (sb[0], 1)) if len(sb) == 1 else b
        s2a, s2b = tuple(a2.shape), tuple(b2.shape)
        g2 = reshape(g, _broadcast_batch(s2a, s2b) + (s2a[-2], s2b[-1]))
        ga = reshape(sum_to(g2 @ _mT(b2), s2a), sa) if need[0] else None
        gb = reshape(sum_to(_mT(a2) @ g2, s2b), sb) if need[1] else None
        return ga, gb


def _broadcast_batch(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[int, ...]:
    ba, bb = sa[:-2], sb[:-2]
    n = max(len(ba), len(bb))
    ba, bb = (1,) * (n - len(ba)) + ba, (1,) * (n - len(bb)) + bb
    return tuple(x if y == 1 else y for x, y in zip(ba, bb))


def _mT(x: Any) -> Any:
    """Swap the last two axes (arrays or Tensors)."""
    from .shape import permute_dims

    n = len(x.shape)
    if n == 2:
        return x.T
    return permute_dims(x, tuple(range(n - 2)) + (n - 1, n - 2))


def add(a: Any, b: Any) -> Any:
    """``a + b`` (broadcasting); arrays, Tensors or Python scalars."""
    return Add.apply(a, b)


def sub(a: Any, b: Any) -> Any:
    """``a - b`` (broadcasting)."""
    return Sub.apply(a, b)


def mul(a: Any, b: Any) -> Any:
    """``a * b`` (broadcasting)."""
    return Mul.apply(a, b)


def div(a: Any, b: Any) -> Any:
    """``a / b`` (broadcasting)."""
    return Div.apply(a, b)


def pow(a: Any, b: Any) -> Any:  # noqa: A001 (the array API's name)
    """``a ** b`` (broadcasting); the gradient with respect to ``b`` is ``a**b * log(a)``."""
    return Pow.apply(a, b)


def neg(a: Any) -> Any:
    """``-a``."""
    return Neg.apply(a)


def exp(a: Any) -> Any:
    """``exp(a)``."""
    return Exp.apply(a)


def log(a: Any) -> Any:
    """Natural logarithm."""
    return Log.apply(a)


def sqrt(a: Any) -> Any:
    """Square root; the gradient is ``1 / (2 sqrt(a))`` (inf at 0)."""
    return Sqrt.apply(a)


def abs(a: Any) -> Any:  # noqa: A001
    """``|a|``; gradient ``sign(a)`` (0 at 0, like PyTorch)."""
    return Abs.apply(a)


def clip(a: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002 (PyTorch's and the array API's names)
    """Clamp to ``[min, max]`` (either may be ``None``); the gradient is 1 where ``min <= a <= max``, else 0
    (``torch.clamp``). ``min``/``max`` may be numbers, arrays or Tensors that do not require grad (the bounds get
    no gradient; ``NotImplementedError`` for one that requires grad)."""
    if isinstance(min, _op.TensorBase) or isinstance(max, _op.TensorBase):
        for bound, which in ((min, "min"), (max, "max")):
            if isinstance(bound, _op.TensorBase) and bound.requires_grad:
                raise NotImplementedError(f"clip: the bound {which}= is a Tensor that requires grad; clip gives no "
                                          "gradient to its bounds: pass bound.detach(), or write the clamp with ops "
                                          "(e.g. relu(x - lo) + lo for a lower bound lo)")
        min, max = _values(min), _values(max)  # noqa: A001
    return Clip.apply(a, min=min, max=max)


def astype(a: Any, dtype: Any) -> Any:
    """Cast to ``dtype`` (a name or a namespace dtype); the gradient is cast back."""
    return AsType.apply(a, dtype=dtype)


def matmul(a: Any, b: Any) -> Any:
    """Matrix product ``a @ b`` with NumPy's rules (1-D operands promoted, batch axes broadcast)."""
    return Matmul.apply(a, b)

