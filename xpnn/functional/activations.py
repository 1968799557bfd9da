"""Activations, each an op declared once: ``f(x)`` and its backward ``f_backward(saved, dy) -> dx`` (elementwise,
any shape), plus PReLU and Maxout, whose parameters live in the layers of ``xpnn.nn``.

Each backward is itself an op (what a fused CUDA kernel overrides: one read of each input, one write), with a
backward of its own, so second derivatives work. A backward takes what its derivative needs: the output ``y`` for
sigmoid/tanh, the input ``x`` otherwise.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from .._cuda.registry import ElementwiseKernel
from ..autograd.op import Context, Op, numpy_direct
from ..backend import namespace_of
from ..errors import ShapeError
from . import _checks, _workspace, cpu_kernels
from ._inplace import InPlace
from ._masking import zero_where
from .elementwise import _values, clip, exp
from .reductions import sum as _sum
from .shape import broadcast_to, reshape
from .softmax import _downcast, _upcast

_NP_OPS = InPlace.of(namespace_of(np.empty(0)))
# sigmoid's NumPy fast path calls these by a module name of their own (~0.03 us less a call than ``np.exp``)
_np_negative, _np_exp, _np_add, _np_divide = np.negative, np.exp, np.add, np.divide
try:  # NumPy >= 2 keeps its floating-point error state in a context variable; setting a prepared state costs ~0.1 us
    # where np.errstate costs ~0.7 us, a third of a small sigmoid (private names: np.errstate is the fallback)
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    # (a name bound by assignment, not by the import: Python 3.11 compiles a method call on an imported name as an
    # attribute load that builds a bound method each time, ~0.05 us a call here)
    _NP_ERRSTATE = _extobj_contextvar
    _NP_ERRSTATE_AT_IMPORT = _NP_ERRSTATE.get()
    _NP_IGNORE_OVER = _make_extobj(over="ignore")  # that state with overflow ignored
except (ImportError, AttributeError, TypeError):  # pragma: no cover (NumPy 1.x)
    _NP_ERRSTATE = _NP_ERRSTATE_AT_IMPORT = _NP_IGNORE_OVER = None

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

__all__ = ["sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward", "leaky_relu",
           "leaky_relu_backward", "elu", "elu_backward", "selu", "selu_backward", "softplus", "softplus_backward",
           "mish", "mish_backward", "gelu", "gelu_backward", "silu", "silu_backward", "prelu", "prelu_backward",
           "maxout", "maxout_backward"]


def _unary(x: Any, where: str) -> Any:
    xp = namespace_of(x, where=where)
    _checks.floating(xp, x, where)
    return xp


def _pair(saved: Any, dy: Any, where: str, first: str = "saved input") -> Any:
    return _checks.pair(saved, dy, where, (first, "dy"))


class _ActivationBackward(Op):
    """An activation's backward as an op of its own, ``f_backward(saved, dy) -> dx`` (what a fused CUDA kernel of the
    same name overrides): ``saved`` and ``dy`` of one shape and floating dtype, scalar parameters as keywords. It
    keeps both inputs and its parameters for its own backward (second derivatives).

    Its kernel is declared here, on the op: ``kernel = ElementwiseKernel(name, "T x, T dy, float64 <param>...")``
    (``xpnn._cuda.registry``), whose body is the device function ``xpnn_<name>`` of
    ``kernels/activation_backward.cuh`` and whose launcher is generated (``xpnn._cuda.launch.elementwise``)."""

    saved_what = "saved input"  # the name of ``saved`` in error messages
    params: tuple[str, ...] = ()  # the keyword parameters, in the order ``save`` keeps them on ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name, what = cls.name, cls.saved_what
        if "kernel" not in cls.__dict__:  # a backward declared without its row: the kernel a provider has by its name
            cls.kernel = name
        cls.check = staticmethod(lambda saved, dy, **_: _pair(saved, dy, name, what))

    @staticmethod
    def save(ctx: Context, out: Any, saved: Any, dy: Any, **params: Any) -> None:
        ctx.save_for_backward(saved, dy)
        for key, value in params.items():
            setattr(ctx, key, value)

    #: ``second(ctx, saved, g_dy) -> d/d(saved)`` of ``sum(g * dx)`` given ``g_dy = g * dy`` (the second
    #: derivative of the activation times ``g_dy``); ``None`` where it is 0 almost everywhere (ReLU, leaky ReLU)
    second: ClassVar[Optional[Callable[[Context, Any, Any], Any]]] = None

    @classmethod
    def backward(cls, ctx: Context, g: Any) -> tuple[Any, Any]:
        """d/d(saved): ``second(ctx, saved, g * dy)``; d/d(dy): the op itself applied to ``(saved, g)`` (it is
        linear in ``dy``)."""
        saved, dy = ctx.saved_tensors
        gs = cls.second(ctx, saved, g * dy) if cls.second is not None and ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            return gs, None
        return gs, cls.apply(saved, g, **{key: getattr(ctx, key) for key in cls.params})


# --- sigmoid --------------------------------------------------------------------------------------------------
@np.errstate(over="ignore")  # NumPy only: exp(large) = inf is the intended limit here (as a decorator np.errstate
def _exp_inplace(ops: InPlace, out: Any) -> Any:  # costs ~0.7 us a call; a `with` block ~1.3 us)
    return ops.exp(out, out=out)


def _sigmoid(ops: InPlace, x: Any) -> Any:
    """``1 / (1 + exp(-x))`` in one new array (``x`` float32/float64): the op's math (``sigmoid``'s NumPy fast path
    runs the same operations)."""
    out = _exp_inplace(ops, ops.neg(x))
    ops.add(out, 1.0, out=out)
    return ops.div(1.0, out, out=out)


def _sigmoid_numpy(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``_sigmoid`` for a NumPy float32/float64 array of one or more axes: its operations in its order (the same
    values, tests/test_small_calls.py), the ufuncs called directly with ``out`` passed by position, into ``out``
    (which may be ``x``) when given."""
    out = _np_negative(x, out)
    if _NP_ERRSTATE is not None and _NP_ERRSTATE.get() is _NP_ERRSTATE_AT_IMPORT:
        token = _NP_ERRSTATE.set(_NP_IGNORE_OVER)  # as np.errstate(over="ignore"), at a fifth of its cost
        try:
            _np_exp(out, out)
        finally:
            _NP_ERRSTATE.reset(token)
    else:  # the user changed NumPy's error state (np.seterr, np.errstate): np.errstate keeps their other flags
        _exp_inplace(_NP_OPS, out)
    _np_add(out, 1.0, out)
    return _np_divide(1.0, out, out)


def _sigmoid_grad(ops: InPlace, y: Any, dy: Any) -> Any:
    """``dy * y * (1 - y)`` in one new array: (1 - y), then * y, then * dy."""
    dx = ops.rsub(1.0, y)
    ops.mul(dx, y, out=dx)
    return ops.mul(dx, dy, out=dx)


class Sigmoid(Op):
    name = "sigmoid"

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        """``1 / (1 + exp(-x))``. float16 is computed in float32 and rounded once: in float16 ``exp(-x)``
        overflows already at ``x < -11.1`` and the result became 0 where the exact sigmoid is still ~1e-5 (PyTorch
        also computes in float32). In float32/float64 ``exp(-x)`` overflows only where the exact result is
        subnormal (``x < -88.7`` / ``x < -709.8``): the result is then exactly 0, like PyTorch's (a where-free form
        that kept those subnormals measured ~3x slower on NumPy)."""
        xp = _unary(x, "sigmoid")
        out = _sigmoid(InPlace.of(xp), _upcast(xp, x))
        if out.dtype != x.dtype:
            out = xp.astype(out, x.dtype)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (y,) = ctx.saved_tensors
        return sigmoid_backward(y, dy)

    @staticmethod
    def onnx(g: Any, x: str) -> str:
        return g.in_float32("Sigmoid", x)


class SigmoidBackward(_ActivationBackward):
    name = "sigmoid_backward"
    kernel = ElementwiseKernel("sigmoid_backward", "T y, T dy")
    saved_what = "sigmoid output"

    @staticmethod
    def forward(ctx: Context, y: Any, dy: Any) -> Any:
        """``dx = dy * y * (1 - y)``; float16 is computed in float32 and rounded once (the product ``y * (1 - y)``
        of a small ``y`` is subnormal in float16 and loses its digits), like the CUDA kernel."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, y, dy)
        dx = _sigmoid_grad(InPlace.of(xp), _upcast(xp, y), dy)  # (dy, of y's dtype, promotes exactly)
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, y: Any, g_dy: Any) -> Any:
        return g_dy * (1.0 - 2.0 * y)


# --- tanh -----------------------------------------------------------------------------------------------------
class Tanh(Op):
    name = "tanh"

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        out = _unary(x, "tanh").tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (y,) = ctx.saved_tensors
        return tanh_backward(y, dy)

    @staticmethod
    def onnx(g: Any, x: str) -> str:
        return g.op("Tanh", x)


class TanhBackward(_ActivationBackward):
    name = "tanh_backward"
    kernel = ElementwiseKernel("tanh_backward", "T y, T dy")
    saved_what = "tanh output"

    @staticmethod
    def forward(ctx: Context, y: Any, dy: Any) -> Any:
        """``dx = dy * (1 - y**2)``; float16 is computed in float32 and rounded once, as sigmoid_backward."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, y, dy)
        ops = InPlace.of(xp)
        yf = _upcast(xp, y)  # (dy, of y's dtype, promotes exactly in the last product)
        dx = ops.mul(yf, yf, out=xp.empty_like(yf))
        ops.sub(1.0, dx, out=dx)
        ops.mul(dx, dy, out=dx)
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, y: Any, g_dy: Any) -> Any:
        return g_dy * y * -2.0


# --- ReLU family ----------------------------------------------------------------------------------------------
# NumPy masks and outputs of at least this many elements come from the recycled workspace (a 256x512 batch's mask is
# 128 KiB, glibc's mmap threshold: a fresh one each step page-faults); smaller ones are cheaper made fresh
_RECYCLED_MASK = 1 << 16
# from this many elements ReLU and leaky ReLU try their compiled passes (``cpu_kernels.relu_forward``, ...)
_COMPILED = cpu_kernels.MIN_ELEMENTS


def _recycled_or_new(tag: str, like: np.ndarray) -> np.ndarray:
    """An uninitialised output of ``like``'s shape and dtype for a compiled pass: recycled (``_workspace``, free again
    once dropped) from ``_RECYCLED_MASK`` elements, else fresh."""
    if like.size >= _RECYCLED_MASK:
        return _workspace.buffer(tag, like.shape, like.dtype)
    return np.empty(like.shape, like.dtype)


class Relu(Op):
    name = "relu"

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        ctx.save_for_backward(x)
        if type(x) is np.ndarray and x.dtype.kind == "f":  # (plain NumPy floats pass _unary's checks)
            if x.size >= _COMPILED:
                out = _recycled_or_new("relu.out", x)  # (recycled: no fresh pages to fault in)
                if cpu_kernels.relu_forward(x, out):  # one compiled pass, np.maximum's bits
                    return out
                return np.maximum(x, x.dtype.type(0), out=out)
            return np.maximum(x, 0.0)
        return _unary(x, "relu").maximum(x, 0.0)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return relu_backward(x, dy)

    @staticmethod
    def onnx(g: Any, x: str) -> str:
        return g.op("Relu", x)


class ReluBackward(_ActivationBackward):
    name = "relu_backward"
    kernel = ElementwiseKernel("relu_backward", "T x, T dy")

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any) -> Any:
        """``dx = 0`` where ``x <= 0`` else ``dy`` (PyTorch's NaN semantics; ``zero_where``: as fast as a multiply
        by the 0/1 mask on NumPy, which would keep a NaN ``dy`` at ``x <= 0``)."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy)
        if type(x) is np.ndarray and x.size >= _RECYCLED_MASK:  # mask and dx recycled (dx free once dropped)
            dx = _workspace.buffer("relu_backward.dx", x.shape, dy.dtype)
            if cpu_kernels.relu_backward(x, dy, dx):  # one compiled pass, the same bits
                return dx
            return zero_where(xp, np.less_equal(x, 0, out=_workspace.buffer("relu_backward.mask", x.shape, bool)), dy,
                              out=dx)
        return zero_where(xp, x <= 0, dy)


class LeakyRelu(Op):
    name = "leaky_relu"

    @staticmethod
    def forward(ctx: Context, x: Any, *, negative_slope: float) -> Any:
        xp = _unary(x, "leaky_relu")
        ctx.save_for_backward(x)
        ctx.negative_slope = negative_slope
        if type(x) is np.ndarray and x.dtype.char in "fd" and x.size >= _COMPILED:
            out = _recycled_or_new("leaky_relu.out", x)
            if cpu_kernels.leaky_relu_forward(x, negative_slope, out):  # one compiled pass, the same bits
                return out
        return xp.where(x > 0, x, x * negative_slope)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return leaky_relu_backward(x, dy, ctx.negative_slope)

    @staticmethod
    def onnx(g: Any, x: str, *, negative_slope: float) -> str:
        return g.op("LeakyRelu", x, alpha=float(negative_slope))


class LeakyReluBackward(_ActivationBackward):
    name = "leaky_relu_backward"
    kernel = ElementwiseKernel("leaky_relu_backward", "T x, T dy, float64 negative_slope")
    params = ("negative_slope",)

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any, *, negative_slope: float) -> Any:
        """``dx = dy`` where ``x > 0`` else ``negative_slope * dy``."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy, negative_slope=negative_slope)
        if type(x) is np.ndarray and x.dtype.char in "fd" and x.size >= _COMPILED:
            dx = _recycled_or_new("leaky_relu_backward.dx", dy)
            if cpu_kernels.leaky_relu_backward(x, dy, negative_slope, dx):  # one compiled pass, the same bits
                return dx
        return xp.where(x > 0, dy, dy * negative_slope)


class Elu(Op):
    name = "elu"

    @staticmethod
    def forward(ctx: Context, x: Any, *, alpha: float, scale: float) -> Any:
        """``scale * x`` for ``x > 0`` else ``scale * alpha * (exp(x) - 1)`` (scale 1: ELU; SELU's constants:
        SELU)."""
        xp = _unary(x, "elu" if scale == 1.0 else "selu")
        ctx.save_for_backward(x)
        ctx.alpha, ctx.scale = alpha, scale
        y = xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0.0)))  # minimum: no overflow in the unused branch
        return y if scale == 1.0 else scale * y

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        if ctx.scale == 1.0:
            return elu_backward(x, dy, ctx.alpha)
        return selu_backward(x, dy)

    @staticmethod
    def onnx(g: Any, x: str, *, alpha: float, scale: float) -> str:
        if scale == 1.0:
            return g.op("Elu", x, alpha=float(alpha))
        return g.op("Selu", x, alpha=float(alpha), gamma=float(scale))


def _negative(ctx: Context, x: Any) -> Any:
    """0/1 mask of ``x < 0``, where the second derivative of ELU/SELU is not 0: 0 at ``x = 0`` (PyTorch's
    ``elu_double_backward``), although the first derivative takes the ``x <= 0`` branch there."""
    xd = _values(x)
    return ctx.xp.astype(xd < 0, xd.dtype)


class EluBackward(_ActivationBackward):
    name = "elu_backward"
    kernel = ElementwiseKernel("elu_backward", "T x, T dy, float64 alpha")
    params = ("alpha",)

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any, *, alpha: float) -> Any:
        """``dx = dy * alpha * exp(x)`` where ``x <= 0`` else ``dy`` (so a NaN ``x`` passes ``dy``, like PyTorch's
        ``elu_backward``)."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy, alpha=alpha)
        return xp.where(x <= 0, dy * (alpha * xp.exp(xp.minimum(x, 0.0))), dy)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        return g_dy * exp(clip(x, max=0.0)) * (ctx.alpha * _negative(ctx, x))


class SeluBackward(_ActivationBackward):
    name = "selu_backward"
    kernel = ElementwiseKernel("selu_backward", "T x, T dy")

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any) -> Any:
        """``dx = dy * scale * alpha * exp(x)`` where ``x <= 0`` else ``scale * dy`` (a NaN ``x`` gives
        ``scale * dy``, like PyTorch's ``elu_backward``)."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy)
        return xp.where(x <= 0, dy * (SELU_SCALE * SELU_ALPHA * xp.exp(xp.minimum(x, 0.0))), dy * SELU_SCALE)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        return g_dy * exp(clip(x, max=0.0)) * ((SELU_SCALE * SELU_ALPHA) * _negative(ctx, x))


# --- softplus and mish -----------------------------------------------------------------------------------------
def _softplus_values(xp: Any, z: Any) -> Any:
    """``log(1 + exp(z))`` as ``log1p(exp(-|z|)) + max(z, 0)``: ``exp`` never overflows, whatever ``|z|``."""
    return xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0.0)


def _sigmoid_values(xp: Any, z: Any) -> Any:
    """``1 / (1 + exp(-z))`` as the kernels compute it (``xpnn_stable_sigmoid``): ``e = exp(-|z|) <= 1``, then
    ``1 / (1 + e)`` for ``z >= 0`` and ``e / (1 + e)`` below (no overflow, no warning)."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0, e) / (1.0 + e)


def _below(ctx: Context, z: Any, threshold: float) -> Any:
    """0/1 mask of ``z < threshold``, where softplus's second derivative is not 0, in ``z``'s dtype, as a constant:
    0 at ``z = threshold`` (PyTorch's ``softplus_double_backward``), although the first derivative takes the
    softplus branch there."""
    zd = _values(z)
    return ctx.xp.astype(zd < threshold, zd.dtype)


class Softplus(Op):
    name = "softplus"

    @staticmethod
    def forward(ctx: Context, x: Any, *, beta: float, threshold: float) -> Any:
        """``log(1 + exp(beta * x)) / beta``, and ``x`` where ``beta * x > threshold``
        (``torch.nn.functional.softplus``), computed as ``(log1p(exp(-|z|)) + max(z, 0)) / beta`` with
        ``z = beta * x`` so that no ``exp`` overflows; float16 is computed in float32 and rounded once."""
        xp = _unary(x, "softplus")
        ctx.save_for_backward(x)
        ctx.beta, ctx.threshold = beta, threshold
        xf = _upcast(xp, x)
        z = xf * beta
        out = xp.where(z > threshold, xf, _softplus_values(xp, z) / beta)
        return _downcast(xp, out, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return softplus_backward(x, dy, ctx.beta, ctx.threshold)

    @staticmethod
    def onnx(g: Any, x: str, *, beta: float, threshold: float) -> str:
        """ONNX's Softplus is ``log(exp(x) + 1)``: scaled by ``beta`` around it, ``x`` above the threshold (float16
        computed in float32, as the forward)."""
        xf = g.cast(x, np.float32) if g.dtype(x) == np.float16 else x
        z = xf if beta == 1.0 else g.op("Mul", xf, g.const(beta, dtype=xf))
        sp = g.op("Softplus", z) if beta == 1.0 else g.op("Div", g.op("Softplus", z), g.const(beta, dtype=xf))
        out = g.op("Where", g.op("Greater", z, g.const(threshold, dtype=xf)), xf, sp)
        return out if xf == x else g.cast(out, np.float16)


class SoftplusBackward(_ActivationBackward):
    name = "softplus_backward"
    kernel = ElementwiseKernel("softplus_backward", "T x, T dy, float64 beta, float64 threshold")
    params = ("beta", "threshold")

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any, *, beta: float, threshold: float) -> Any:
        """``dx = dy * sigmoid(beta * x)``, ``dy`` where ``beta * x > threshold`` (PyTorch's
        ``softplus_backward``); float16 is computed in float32 and rounded once, like the CUDA kernel."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy, beta=beta, threshold=threshold)
        z = _upcast(xp, x) * beta
        dx = xp.where(z > threshold, 1.0, _sigmoid_values(xp, z)) * dy
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        """``g * dy * beta * s * (1 - s)`` with ``s = sigmoid(beta * x)`` where ``beta * x < threshold``, else 0."""
        z = x * ctx.beta
        s = sigmoid(z)
        return g_dy * s * (1.0 - s) * (ctx.beta * _below(ctx, z, ctx.threshold))


class Mish(Op):
    name = "mish"

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        """``x * tanh(softplus(x))`` (Misra 2019, ``torch.nn.functional.mish``), softplus as
        ``log1p(exp(-|x|)) + max(x, 0)``; float16 is computed in float32 and rounded once."""
        xp = _unary(x, "mish")
        ctx.save_for_backward(x)
        xf = _upcast(xp, x)
        out = xf * xp.tanh(_softplus_values(xp, xf))
        return _downcast(xp, out, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return mish_backward(x, dy)

    @staticmethod
    def onnx(g: Any, x: str) -> str:
        if g.opset >= 18:
            return g.in_float32("Mish", x)
        return g.op("Mul", x, g.op("Tanh", g.in_float32("Softplus", x)))


class MishBackward(_ActivationBackward):
    name = "mish_backward"
    kernel = ElementwiseKernel("mish_backward", "T x, T dy")

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any) -> Any:
        """``dx = dy * (t + x * (1 - t**2) * sigmoid(x))`` with ``t = tanh(softplus(x))``; float16 is computed in
        float32 and rounded once, like the CUDA kernel."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy)
        xf = _upcast(xp, x)
        t = xp.tanh(_softplus_values(xp, xf))
        dx = (t + xf * (1.0 - t * t) * _sigmoid_values(xp, xf)) * dy
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        """``g * dy * (1 - t**2) * s * (2 + x * (1 - s - 2 * t * s))`` (``s = sigmoid(x)``)."""
        t, s = tanh(softplus(x)), sigmoid(x)
        return g_dy * (1.0 - t * t) * s * (2.0 + x * (1.0 - s - 2.0 * t * s))


# --- GELU and SiLU ---------------------------------------------------------------------------------------------
# erf(x) = x * P(x**2) for |x| < 1 (its Taylor series to x**35: the next term is below 1e-16), and
# 1 - exp(-x**2) * R(u) for 1 <= |x| <= 6 with u = (48 / (2 + |x|) - 11) / 5 in [-1, 1]: R approximates
# erfc(x) * exp(x**2) by a degree-14 Chebyshev fit (power basis in u), within 5e-16 of math.erfc absolutely over
# [1, 6] (checked on 3e5 points); erf is 1 in float64 beyond 6. The array API standard has no erf.
_ERF_TAYLOR = tuple(2.0 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(18))
_ERFC_FIT = (0.22142954022993197, 0.16189356804102661, 0.038560570425173836, 0.005588816281821345,
             0.00019713917775576587, -8.079220415287787e-05, -7.340517946522505e-06, 1.9795613148460196e-06,
             1.6349963389371036e-07, -7.005189126205893e-08, -5.902762211239398e-10, 2.6224013088842076e-09,
             -2.6526941840981585e-10, -7.288522045984273e-11, 1.916996187180221e-11)
_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_K = math.sqrt(2.0 / math.pi)  # the tanh approximation (Hendrycks & Gimpel 2016): tanh(k * (x + c * x**3))
_TANH_C = 0.044715


def _horner(coefs: tuple[float, ...], z: Any) -> Any:
    """``sum(coefs[i] * z**i)``."""
    out = z * coefs[-1] + coefs[-2]
    for c in coefs[-3::-1]:
        out = out * z + c
    return out


def _erf(xp: Any, x: Any) -> Any:
    """erf of a floating array in its dtype (see the constants above)."""
    a = xp.abs(x)
    small = xp.clip(x, -1.0, 1.0)
    small = small * _horner(_ERF_TAYLOR, small * small)
    big = xp.clip(a, 1.0, 6.0)
    big = 1.0 - xp.exp(-big * big) * _horner(_ERFC_FIT, (48.0 / (2.0 + big) - 11.0) / 5.0)
    return xp.where(a < 1.0, small, xp.where(x < 0, -big, big))


# the kernels take ``approximate`` as the index of its string in this tuple
_GELU_APPROXIMATE = (("approximate", ("none", "tanh")),)


def _gelu_check(approximate: str) -> None:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


class Gelu(Op):
    name = "gelu"
    kernel = ElementwiseKernel("gelu", "T x, float64 approximate", "T y", choices=_GELU_APPROXIMATE)

    @staticmethod
    def check(x: Any, *, approximate: str = "none") -> None:
        _unary(x, "gelu")
        _gelu_check(approximate)

    @staticmethod
    def save(ctx: Context, out: Any, x: Any, *, approximate: str = "none") -> None:
        ctx.save_for_backward(x)
        ctx.approximate = approximate

    @staticmethod
    def forward(ctx: Context, x: Any, *, approximate: str = "none") -> Any:
        """``x * Phi(x)`` with the normal CDF ``Phi(x) = (1 + erf(x / sqrt(2))) / 2`` (Hendrycks & Gimpel 2016,
        ``torch.nn.functional.gelu``), or with ``approximate="tanh"``: ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715
        x**3)))``; float16 is computed in float32 and rounded once."""
        xp = ctx.xp  # (check has validated x and approximate)
        Gelu.save(ctx, None, x, approximate=approximate)
        xf = _upcast(xp, x)
        if approximate == "tanh":
            out = 0.5 * xf * (1.0 + xp.tanh(_TANH_K * (xf + _TANH_C * xf * xf * xf)))
        else:
            out = 0.5 * xf * (1.0 + _erf(xp, xf * _SQRT1_2))
        return _downcast(xp, out, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return gelu_backward(x, dy, ctx.approximate)

    @staticmethod
    def onnx(g: Any, x: str, *, approximate: str = "none") -> str:
        """``Gelu`` from opset 20, else its formula (float16 computed in float32, as the forward)."""
        if g.opset >= 20:
            return g.in_float32("Gelu", x, approximate=approximate)
        xf = g.cast(x, np.float32) if g.dtype(x) == np.float16 else x

        def c(v: float) -> str:
            return g.const(v, dtype=xf)

        if approximate == "tanh":
            inner = g.op("Mul", c(_TANH_K), g.op("Add", xf, g.op("Mul", c(_TANH_C), g.op("Mul", xf, g.op("Mul", xf, xf)))))
            cdf = g.op("Add", c(1.0), g.op("Tanh", inner))
        else:
            cdf = g.op("Add", c(1.0), g.op("Erf", g.op("Mul", xf, c(_SQRT1_2))))
        out = g.op("Mul", g.op("Mul", c(0.5), xf), cdf)
        return out if xf == x else g.cast(out, np.float16)


class GeluBackward(_ActivationBackward):
    name = "gelu_backward"
    kernel = ElementwiseKernel("gelu_backward", "T x, T dy, float64 approximate", choices=_GELU_APPROXIMATE)
    params = ("approximate",)

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any, *, approximate: str = "none") -> Any:
        """``dx = dy * (Phi(x) + x * phi(x))`` (``phi``: the normal density), or for ``approximate="tanh"``
        ``dx = dy * ((1 + t) / 2 + x/2 * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 x**2))`` with ``t`` the tanh
        of the forward (PyTorch's ``gelu_backward``); float16 is computed in float32 and rounded once."""
        xp = ctx.xp  # (check has validated the pair)
        _gelu_check(approximate)
        _ActivationBackward.save(ctx, None, x, dy, approximate=approximate)
        xf = _upcast(xp, x)
        if approximate == "tanh":
            x2 = xf * xf
            t = xp.tanh(_TANH_K * (xf + _TANH_C * x2 * xf))
            d = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * (_TANH_K * (1.0 + 3.0 * _TANH_C * x2))
        else:
            d = 0.5 * (1.0 + _erf(xp, xf * _SQRT1_2)) + xf * (_INV_SQRT_2PI * xp.exp(-0.5 * xf * xf))
        dx = d * dy
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        """``g * dy * phi(x) * (2 - x**2)``; for ``"tanh"``, with ``s = 1 - t**2`` and ``q = sqrt(2/pi) * (1 +
        3 * 0.044715 x**2)``: ``g * dy * s * (q * (1 - x * t * q) + 3 * sqrt(2/pi) * 0.044715 x**2)``."""
        x2 = x * x
        if ctx.approximate == "tanh":
            t = tanh((x + x2 * x * _TANH_C) * _TANH_K)
            s = 1.0 - t * t
            q = (1.0 + x2 * (3.0 * _TANH_C)) * _TANH_K
            d2 = s * (q * (1.0 - x * t * q) + x2 * (3.0 * _TANH_K * _TANH_C))
        else:
            d2 = exp(x2 * -0.5) * (2.0 - x2) * _INV_SQRT_2PI
        return g_dy * d2


class Silu(Op):
    name = "silu"
    kernel = ElementwiseKernel("silu", "T x", "T y")

    @staticmethod
    def check(x: Any) -> None:
        _unary(x, "silu")

    @staticmethod
    def save(ctx: Context, out: Any, x: Any) -> None:
        ctx.save_for_backward(x)

    @staticmethod
    def forward(ctx: Context, x: Any) -> Any:
        """``x * sigmoid(x)`` (Elfwing et al. 2017; ``torch.nn.functional.silu``), the sigmoid in its overflow-free
        form; float16 is computed in float32 and rounded once."""
        xp = ctx.xp  # (check has validated x)
        Silu.save(ctx, None, x)
        xf = _upcast(xp, x)
        out = xf * _sigmoid_values(xp, xf)
        return _downcast(xp, out, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return silu_backward(x, dy)

    @staticmethod
    def onnx(g: Any, x: str) -> str:
        return g.op("Mul", x, g.in_float32("Sigmoid", x))


class SiluBackward(_ActivationBackward):
    name = "silu_backward"
    kernel = ElementwiseKernel("silu_backward", "T x, T dy")

    @staticmethod
    def forward(ctx: Context, x: Any, dy: Any) -> Any:
        """``dx = dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)`` (PyTorch's ``silu_backward``); float16 is
        computed in float32 and rounded once."""
        xp = ctx.xp  # (check has validated the pair)
        _ActivationBackward.save(ctx, None, x, dy)
        xf = _upcast(xp, x)
        s = _sigmoid_values(xp, xf)
        dx = s * (1.0 + xf * (1.0 - s)) * dy
        return _downcast(xp, dx, dy.dtype)

    @staticmethod
    def second(ctx: Context, x: Any, g_dy: Any) -> Any:
        """``g * dy * s * (1 - s) * (2 + x * (1 - 2 s))`` (``s = sigmoid(x)``)."""
        s = sigmoid(x)
        return g_dy * s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))


# --- PReLU (learned slope) ------------------------------------------------------------------------------------
def _prelu_check(x: Any, weight: Any, where: str) -> Any:
    xp = namespace_of(x, weight, where=where)
    _checks.floating(xp, x, where)
    _checks.same_dtype(weight, x, where, ("weight", "input"))
    if weight.ndim != 1 or (weight.shape[0] != 1 and (x.ndim < 2 or x.shape[1] != weight.shape[0])):
        raise ShapeError(f"{where}: weight of shape {tuple(weight.shape)} does not fit input {tuple(x.shape)} "
                         "(expected (1,) or (C,) for input (N, C))")
    return xp


def _channel_shape(weight_shape: tuple[int, ...], x_ndim: int) -> tuple[int, ...]:
    """Shape the weight takes to broadcast over x: () when shared (x of any shape, 0-d included, keeps its shape),
    (C,) for x (N, C), (C, 1, ...) for x (N, C, ...)."""
    if weight_shape[0] == 1:
        return ()
    return (weight_shape[0],) + (1,) * (x_ndim - 2)


class PRelu(Op):
    name = "prelu"

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any) -> Any:
        """``x`` where ``x > 0`` else ``weight * x``; weight (1,) shared or (C,) per channel of x (N, C, ...)."""
        xp = _prelu_check(x, weight, "prelu")
        ctx.save_for_backward(x, weight)
        w = xp.reshape(weight, _channel_shape(tuple(weight.shape), x.ndim))
        return xp.where(x > 0, x, w * x)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight = ctx.saved_tensors
        xd = _values(x)
        neg = ctx.xp.astype(~(xd > 0), xd.dtype)  # PyTorch: prelu' = weight where not x > 0 (0 and NaN too)
        w = reshape(weight, _channel_shape(tuple(weight.shape), x.ndim))
        dx = dy + dy * neg * (w - 1.0) if ctx.needs_input_grad[0] else None  # dy where x > 0, w * dy elsewhere
        axes = None if weight.shape[0] == 1 else (0,) + tuple(range(2, x.ndim))  # all, or all but the channels
        dw = reshape(_sum(dy * x * neg, axis=axes), tuple(weight.shape)) if ctx.needs_input_grad[1] else None
        return dx, dw

    @staticmethod
    def onnx(g: Any, x: str, weight: str) -> str:
        """ONNX's PRelu broadcasts the slope from the right: (C,) becomes (C, 1, ...) for x (N, C, ...)."""
        slope = g.op("Reshape", weight, g.ints(_channel_shape(g.shape(weight), len(g.shape(x)))))
        return g.op("PRelu", x, slope)


# --- Maxout ---------------------------------------------------------------------------------------------------
class Maxout(Op):
    name = "maxout"
    differentiable_outputs = (0,)

    @staticmethod
    def forward(ctx: Context, z: Any, *, pieces: int) -> tuple[Any, Any]:
        """Max over groups of ``pieces`` consecutive columns: z (N, out * pieces) -> (y (N, out), argmax (N, out))."""
        xp = namespace_of(z, where="maxout")
        if z.ndim != 2 or pieces < 1 or z.shape[1] % pieces:
            raise ShapeError(f"maxout: expected input of shape (N, out_features * {pieces}), got {tuple(z.shape)}")
        z3 = xp.reshape(z, (z.shape[0], z.shape[1] // pieces, pieces))
        idx = xp.argmax(z3, axis=-1)
        ctx.idx, ctx.pieces = idx, pieces
        return xp.max(z3, axis=-1), idx

    @staticmethod
    def backward(ctx: Context, dy: Any, didx: Any = None) -> Any:
        return maxout_backward(ctx.idx, dy, ctx.pieces)

    @staticmethod
    def onnx(g: Any, z: str, *, pieces: int) -> tuple[str, str]:
        z3 = g.op("Reshape", z, g.ints((0, -1, pieces)))
        return g.reduce("ReduceMax", z3, (-1,), keepdims=False), g.op("ArgMax", z3, axis=-1, keepdims=0)


def _winner(xp: Any, idx: Any, pieces: int, dtype: Any) -> Any:
    """0/1 mask (N, out, pieces) of the winning column of each group, in ``dtype`` (the arange takes idx's dtype:
    integer dtypes that do not promote together, e.g. int64 and uint64, cannot be compared)."""
    return xp.astype(xp.arange(pieces, dtype=idx.dtype) == idx[..., None], dtype)


class MaxoutBackward(Op):
    name = "maxout_backward"

    @staticmethod
    def forward(ctx: Context, dy: Any, *, idx: Any, pieces: int) -> Any:
        """``dy`` routed to the winning column of each group -> dz (N, out * pieces)."""
        xp = namespace_of(idx, dy, where="maxout_backward")
        if tuple(idx.shape) != tuple(dy.shape):
            raise ShapeError(f"maxout_backward: dy must have shape {tuple(idx.shape)}, got {tuple(dy.shape)}")
        ctx.idx, ctx.pieces = idx, pieces
        return xp.reshape(dy[..., None] * _winner(xp, idx, pieces, dy.dtype), (dy.shape[0], dy.shape[1] * pieces))

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        n, out = ctx.idx.shape
        g3 = reshape(g, (n, out, ctx.pieces))
        return _sum(g3 * _winner(ctx.xp, ctx.idx, ctx.pieces, g.dtype), axis=-1)


# --- the functions --------------------------------------------------------------------------------------------
def _with_dy(saved: Any, dy: Any) -> tuple[Any, Any]:
    """``(saved, dy)`` of a ``*_backward`` as arrays: a Python scalar or 0-d ``dy`` is broadcast to ``saved``'s shape
    (as NumPy's ``dy * y * (1 - y)`` would), lists and scalars converted by ``_checks.as_arrays``."""
    if not (isinstance(dy, _checks.PYTHON) or isinstance(saved, _checks.PYTHON) or getattr(dy, "ndim", 0) == 0):
        return saved, dy  # (the common case, on the backward's hot path: one check)
    saved, dy = _checks.as_arrays(saved, dy)
    if getattr(dy, "ndim", None) == 0 and getattr(saved, "ndim", 0) > 0:
        dy = broadcast_to(dy, tuple(saved.shape))
    return saved, dy


def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))``; for very negative ``x`` the result is exactly 0 (no overflow warning).

    ``x``: an array or Tensor of any shape and floating dtype (a list or Python scalar becomes an array of the
    default backend). Raises ``DTypeError`` for other dtypes."""
    if type(x) is np.ndarray and x.dtype.char in "fd" and x.ndim and numpy_direct("sigmoid"):
        return _sigmoid_numpy(x)  # the NumPy fast path, without Op.apply
    return Sigmoid.apply(*_checks.as_arrays(x))


def sigmoid_backward(y: Any, dy: Any) -> Any:
    """``dx = dy * y * (1 - y)`` where ``y = sigmoid(x)``; ``y`` and ``dy`` of one shape and floating dtype (a
    Python scalar ``dy`` takes ``y``'s dtype and is broadcast). Raises ``ShapeError``/``DTypeError``."""
    if (type(y) is np.ndarray and y.dtype.char in "fd" and type(dy) is np.ndarray and dy.dtype == y.dtype
            and dy.shape == y.shape and numpy_direct("sigmoid_backward")):  # NumPy fast path: no Op.apply
        return _sigmoid_grad(_NP_OPS, y, dy)
    return SigmoidBackward.apply(*_with_dy(y, dy))


def tanh(x: Any) -> Any:
    """``tanh(x)``."""
    return Tanh.apply(*_checks.as_arrays(x))


def tanh_backward(y: Any, dy: Any) -> Any:
    """``dx = dy * (1 - y**2)`` where ``y = tanh(x)``."""
    return TanhBackward.apply(*_with_dy(y, dy))


def relu(x: Any) -> Any:
    """``max(x, 0)``."""
    return Relu.apply(*_checks.as_arrays(x))


def relu_backward(x: Any, dy: Any) -> Any:
    """``dx = 0`` where ``x <= 0`` else ``dy``: PyTorch's ``threshold_backward`` semantics, so a NaN in ``dy`` at
    ``x <= 0`` gives 0 and a NaN ``x`` passes ``dy`` through (the CUDA kernel does the same)."""
    if (type(x) is np.ndarray and x.dtype.char in "fd" and type(dy) is np.ndarray and dy.dtype == x.dtype
            and dy.shape == x.shape and x.size < _RECYCLED_MASK and numpy_direct("relu_backward")):
        # NumPy fast path (small: a fresh output), no Op.apply: one compiled pass where it applies, else a fresh mask
        if x.size >= _COMPILED:
            dx = np.empty(x.shape, x.dtype)
            if cpu_kernels.relu_backward(x, dy, dx):
                return dx
        return zero_where(np, x <= 0, dy)
    return ReluBackward.apply(*_with_dy(x, dy))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """``x`` where ``x > 0`` else ``negative_slope * x`` (``torch.nn.functional.leaky_relu``)."""
    return LeakyRelu.apply(_checks.as_arrays(x)[0], negative_slope=negative_slope)


def leaky_relu_backward(x: Any, dy: Any, negative_slope: float = 0.01) -> Any:
    """``dx = dy`` where ``x > 0`` else ``negative_slope * dy``."""
    return LeakyReluBackward.apply(*_with_dy(x, dy), negative_slope=negative_slope)


def elu(x: Any, alpha: float = 1.0) -> Any:
    """``x`` for ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    return Elu.apply(_checks.as_arrays(x)[0], alpha=alpha, scale=1.0)


def elu_backward(x: Any, dy: Any, alpha: float = 1.0) -> Any:
    """``dx = dy`` where ``x > 0`` else ``dy * alpha * exp(x)``."""
    return EluBackward.apply(*_with_dy(x, dy), alpha=alpha)


def selu(x: Any) -> Any:
    """``scale * elu(x, alpha)`` with the self-normalising constants of Klambauer et al. (2017)."""
    return Elu.apply(_checks.as_arrays(x)[0], alpha=SELU_ALPHA, scale=SELU_SCALE)


def selu_backward(x: Any, dy: Any) -> Any:
    """``dx = scale * dy`` where ``x > 0`` else ``dy * scale * alpha * exp(x)``."""
    return SeluBackward.apply(*_with_dy(x, dy))


def softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Any:
    """``log(1 + exp(beta * x)) / beta``, reverting to ``x`` where ``beta * x > threshold``
    (``torch.nn.functional.softplus``); never overflows. ``x``: any shape, floating dtype (float16 computes in
    float32). Raises ``DTypeError`` for other dtypes."""
    return Softplus.apply(_checks.as_arrays(x)[0], beta=float(beta), threshold=float(threshold))


def softplus_backward(x: Any, dy: Any, beta: float = 1.0, threshold: float = 20.0) -> Any:
    """``dx = dy * sigmoid(beta * x)``, ``dy`` where ``beta * x > threshold``; ``x`` and ``dy`` of one shape and
    floating dtype. Raises ``ShapeError``/``DTypeError``."""
    return SoftplusBackward.apply(*_with_dy(x, dy), beta=float(beta), threshold=float(threshold))


def mish(x: Any) -> Any:
    """``x * tanh(softplus(x))`` (Misra 2019, ``torch.nn.functional.mish``). ``x``: any shape, floating dtype
    (float16 computes in float32). Raises ``DTypeError`` for other dtypes."""
    return Mish.apply(*_checks.as_arrays(x))


def mish_backward(x: Any, dy: Any) -> Any:
    """``dx = dy * (t + x * (1 - t**2) * sigmoid(x))`` with ``t = tanh(softplus(x))``; ``x`` and ``dy`` of one
    shape and floating dtype. Raises ``ShapeError``/``DTypeError``."""
    return MishBackward.apply(*_with_dy(x, dy))


def gelu(x: Any, approximate: str = "none") -> Any:
    """``x * Phi(x)``, ``Phi`` the standard normal CDF (Hendrycks & Gimpel 2016, ``torch.nn.functional.gelu``);
    ``approximate="tanh"``: ``x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x**3)))`` (GPT-2's). ``x``: any shape,
    floating dtype (float16 computes in float32). Raises ``DTypeError`` for other dtypes, ``ValueError`` for another
    ``approximate``."""
    return Gelu.apply(_checks.as_arrays(x)[0], approximate=approximate)


def gelu_backward(x: Any, dy: Any, approximate: str = "none") -> Any:
    """``dx = dy * (Phi(x) + x * phi(x))`` (or the derivative of the tanh form); ``x`` and ``dy`` of one shape and
    floating dtype. Raises ``ShapeError``/``DTypeError``."""
    return GeluBackward.apply(*_with_dy(x, dy), approximate=approximate)


def silu(x: Any) -> Any:
    """``x * sigmoid(x)`` (SiLU / swish, Elfwing et al. 2017; ``torch.nn.functional.silu``). ``x``: any shape,
    floating dtype (float16 computes in float32). Raises ``DTypeError`` for other dtypes."""
    return Silu.apply(*_checks.as_arrays(x))


def silu_backward(x: Any, dy: Any) -> Any:
    """``dx = dy * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``; ``x`` and ``dy`` of one shape and floating
    dtype. Raises ``ShapeError``/``DTypeError``."""
    return SiluBackward.apply(*_with_dy(x, dy))


def prelu(x: Any, weight: Any) -> Any:
    """``x`` where ``x > 0`` else ``weight * x``; weight (1,) shared or (C,) per channel of x (N, C, ...)."""
    return PRelu.apply(x, weight)


def prelu_backward(x: Any, weight: Any, dy: Any) -> tuple[Any, Any]:
    """``(dx, dweight)`` of PReLU: ``dx = dy`` where ``x > 0`` else ``weight * dy``;
    ``dweight = sum(dy * x)`` over the other entries (per channel, or all for a shared weight); NaN in ``x`` takes
    the ``weight`` branch, as in PyTorch."""
    _prelu_check(x, weight, "prelu_backward")
    _checks.pair(x, dy, "prelu_backward", ("input", "dy"))
    ctx = Context((True, True), (x, weight))  # (its namespace: that of x and weight)
    ctx.save_for_backward(x, weight)
    return PRelu.backward(ctx, dy)


def maxout(z: Any, pieces: int) -> tuple[Any, Any]:
    """Max over groups of ``pieces`` consecutive columns: z (N, out * pieces) -> ``(y (N, out), argmax (N, out))``."""
    return Maxout.apply(z, pieces=pieces)


def maxout_backward(idx: Any, dy: Any, pieces: int) -> Any:
    """Gradient of ``maxout``: ``dy`` routed to the winning column of each group -> dz (N, out * pieces)."""
    return MaxoutBackward.apply(dy, idx=idx, pieces=pieces)
