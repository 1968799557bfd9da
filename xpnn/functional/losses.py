"""Losses, each an op declared once, with a ``*_with_grad`` variant returning ``(loss, grad_wrt_first_argument)``
in one pass; ``nll_loss`` is composed of ops.

For ``reduction="none"`` the loss is per sample/element and the gradient is that of the summed loss.
``cross_entropy_with_grad`` is the fused hot path a CUDA kernel overrides; the ``cross_entropy`` op runs it in its
forward when the logits need a gradient and keeps that gradient for its backward (one pass over the logits).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, Op, numpy_direct
from ..backend import dtype_name, is_cupy_namespace, is_numpy_namespace, namespace_of
from ..debug import check_finite, get_debug as _debug_on
from ..errors import DTypeError, ShapeError
from . import _checks
from .activations import sigmoid
from ._inplace import InPlace
from .elementwise import _values, add, div, mul, neg
from .reductions import sum as _sum
from .shape import reshape
from .softmax import _shifted, _upcast, log_softmax, softmax


def _reduce(xp: Any, per: Any, reduction: str) -> Any:
    """``per`` reduced; the mean of no elements (an empty batch) is NaN, as in PyTorch, without NumPy's warning."""
    if reduction == "mean":
        return xp.mean(per) if math.prod(per.shape) else xp.full((), float("nan"), dtype=per.dtype)
    if reduction == "sum":
        return xp.sum(per)
    return per


def _grad_scale(per: Any, reduction: str) -> float:
    """d(reduced)/d(per element): 1/numel for ``"mean"`` (1 for an empty ``per``, whose gradient is empty)."""
    return 1.0 / max(math.prod(per.shape), 1) if reduction == "mean" else 1.0


def _check_ce(logits: Any, target: Any, reduction: str, ignore_index: int, label_smoothing: float,
              where: str) -> tuple[Any, Any, Any]:
    """``(xp, target, any_bad)``: on namespaces whose label check is deferred (not NumPy, debug off) ``target`` has
    out-of-range labels replaced by ``ignore_index`` and ``any_bad`` is a 0-d flag (else ``None``)."""
    xp = namespace_of(logits, target, where=where)
    _checks.reduction(reduction, where)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing}")
    bad = _checks.class_targets(xp, logits, target, where, ignore_index)
    _checks.length_one_axis(logits, 1, where, "every loss and gradient is 0 (one class)",
                            "pass logits.T: logits are (N, C) rows")
    if bad is None:
        return xp, target, None
    target, any_bad = _checks.defer_class_targets(xp, target, bad, int(logits.shape[1]), where, ignore_index)
    return xp, target, any_bad


def _poison(xp: Any, loss: Any, any_bad: Any) -> Any:
    """NaN where a deferred label check failed: a bad label never turns silently into a number."""
    return loss if any_bad is None else xp.where(any_bad, xp.asarray(float("nan"), dtype=loss.dtype), loss)


def _cross_entropy(xp: Any, logits: Any, target: Any, reduction: str, ignore_index: int, eps: float, with_grad: bool):
    """Reference cross-entropy from logits (N, C) and class targets (N,): loss, and the gradient if asked.

    Per row: ``nll = (m - x[t]) + log(s)`` with ``s = sum(exp(x - m))`` (this order keeps float32 digits at |x| ~ 1e4),
    ``smooth = C*log(s) - sum(x - m)`` (= -sum log p), ``loss = (1-eps)*nll + eps/C*smooth``;
    gradient ``(softmax - (1-eps)*onehot - eps/C) * scale``, zero for ignored rows.
    On NumPy/CuPy one (N, C) array is allocated: it holds ``x - m``, then ``exp(x - m)``, then the gradient.
    """
    ops = InPlace.of(xp)
    x = _upcast(xp, logits)
    n, c = x.shape
    z, _ = _shifted(xp, x, -1)
    valid = target != ignore_index
    t = xp.where(valid, target, xp.zeros_like(target))
    z_t = xp.reshape(xp.take_along_axis(z, xp.reshape(t, (n, 1)), axis=-1), (n,))
    sum_z = xp.sum(z, axis=-1) if eps > 0.0 else None
    e = ops.exp(z, out=z)
    s = xp.sum(e, axis=-1)
    log_s = xp.log(s)
    per = log_s - z_t
    if sum_z is not None:
        per = (1.0 - eps) * per + (eps / c) * (c * log_s - sum_z)
    per = xp.where(valid, per, 0.0)
    row_scale = xp.astype(valid, x.dtype)
    n_valid = xp.sum(row_scale)
    if reduction == "mean":
        # NaN when every target is ignored, like PyTorch: a division by NaN (no 0/0 warning), and a division so that
        # NumPy still answers a scalar, as the fast path does
        nan = xp.full((), xp.nan, dtype=n_valid.dtype)
        loss = xp.sum(per) / xp.where(n_valid > 0, n_valid, nan)
        row_scale = row_scale / xp.maximum(n_valid, 1.0)
    else:
        loss = _reduce(xp, per, reduction)
    if not with_grad:
        return xp.astype(loss, logits.dtype) if loss.dtype != logits.dtype else loss
    grad = ops.mul(e, (row_scale / s)[:, None], out=e)  # softmax * scale; ignored rows become 0
    _sub_at_targets(xp, grad, t, (1.0 - eps) * row_scale)
    if eps > 0.0:
        grad -= ((eps / c) * row_scale)[:, None]
    if grad.dtype != logits.dtype:
        loss, grad = xp.astype(loss, logits.dtype), xp.astype(grad, logits.dtype)
    return loss, grad


def _sub_at_targets(xp: Any, grad: Any, t: Any, value: Any) -> None:
    """``grad[i, t[i]] -= value[i]`` for every row i, in place."""
    n, c = grad.shape
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):  # integer-array indexing: touches N entries, not N*C
        grad[xp.arange(n), t] -= value
    else:  # the standard has no integer-array assignment: a one-hot mask
        onehot = xp.arange(c, dtype=t.dtype)[None, :] == t[:, None]
        grad -= xp.astype(onehot, grad.dtype) * value[:, None]


class CrossEntropy(Op):
    name = "cross_entropy"

    @staticmethod
    def forward(ctx: Context, logits: Any, target: Any, *, reduction: str, ignore_index: int,
                label_smoothing: float) -> Any:  # (no defaults: cross_entropy passes every parameter)
        # plain NumPy, labels in range (checked), none ignored: the reference's operations without its masks
        fast = ctx.needs_input_grad[0] and _numpy_small_call(logits, target, reduction, ignore_index, label_smoothing)
        if not fast:
            xp, target, any_bad = _check_ce(logits, target, reduction, ignore_index, label_smoothing, "cross_entropy")
        ctx.save_for_backward(logits)
        ctx.target, ctx.reduction, ctx.ignore_index, ctx.eps = target, reduction, ignore_index, label_smoothing
        if fast:
            loss, ctx.grad = _cross_entropy_numpy(logits, target, reduction)
            return loss
        if ctx.needs_input_grad[0]:  # the fused pass: loss and gradient at once
            loss, ctx.grad = _with_grad(xp, logits, target, reduction, ignore_index, label_smoothing)
            return _poison(xp, loss, any_bad)
        return _poison(xp, _cross_entropy(xp, logits, target, reduction, ignore_index, label_smoothing,
                                          with_grad=False), any_bad)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, None]:
        if not ctx.create_graph:
            grad = ctx.grad
        else:  # recorded: (softmax - smoothed one-hot) * row scale, with the same ops
            (x,) = ctx.saved_tensors
            grad = _ce_grad_expression(ctx, x)
        if ctx.reduction == "none":
            return grad * reshape(g, (grad.shape[0], 1)), None
        return grad * g, None


def _ce_grad_expression(ctx: Context, x: Any) -> Any:
    """d loss / d logits as an expression of ``x`` (a Tensor): ``(softmax(x) - (1-eps) onehot - eps/C) * scale``."""
    xp = ctx.xp
    target = ctx.target
    n, c = x.shape
    valid = target != ctx.ignore_index
    t = xp.where(valid, target, xp.zeros_like(target))
    dtype = x.dtype
    onehot = xp.astype(xp.arange(c, dtype=t.dtype)[None, :] == t[:, None], dtype)
    row = xp.astype(valid, dtype)
    if ctx.reduction == "mean":
        row = row / xp.maximum(xp.sum(row), 1.0)
    dist = onehot * (1.0 - ctx.eps) + ctx.eps / c
    return (softmax(x) - dist) * row[:, None]


def cross_entropy(
    logits: Any, target: Any, *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0,
    weight: Any = None,
) -> Any:
    """Softmax cross-entropy of ``logits`` (N, C), PyTorch semantics (``torch.nn.functional.cross_entropy``,
    PyTorch >= 1.10: ``weight``, ``ignore_index``, ``label_smoothing``, ``reduction``).

    ``target``: integer class indices (N,), or class probabilities (floating, the shape and dtype of ``logits``;
    ``ignore_index`` is not allowed with them, as in PyTorch). ``weight``: optional per-class weights (C,), which
    multiply each class's term; with class indices ``"mean"`` divides by the summed weights of the targets, with
    probabilities by N (PyTorch's rule). ``label_smoothing`` mixes the target with the uniform distribution.
    Class indices without ``weight`` take the fused path (one pass; a CUDA kernel on CuPy); probabilities and
    ``weight`` are composed from ``log_softmax`` and sums, so they differentiate twice too.

    Returns a 0-d array/Tensor (``"mean"``/``"sum"``) or per-sample losses (N,) (``"none"``).
    Raises ``ShapeError``/``DTypeError``/``ValueError`` for bad shapes, dtypes or out-of-range targets.
    """
    if weight is not None or _probabilities(target):
        return _cross_entropy_composed(logits, target, reduction, ignore_index, label_smoothing, weight,
                                       "cross_entropy")
    return CrossEntropy.apply(logits, target, reduction=reduction, ignore_index=ignore_index,
                              label_smoothing=label_smoothing)


def cross_entropy_with_grad(
    logits: Any, target: Any, *, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0,
    weight: Any = None,
) -> tuple[Any, Any]:
    """``(cross_entropy(...), d loss / d logits)`` in one pass; the gradient has the shape of ``logits`` (N, C)
    (for ``"none"``, the gradient of the summed losses).

    ``target``: class indices (N,), or class probabilities of the shape of ``logits`` (see ``cross_entropy``)."""
    if weight is None and _numpy_small_call(logits, target, reduction, ignore_index, label_smoothing):
        return _cross_entropy_numpy(logits, target, reduction)
    if weight is not None or _probabilities(target):
        where = "cross_entropy_with_grad"
        xp, a, denom = _ce_coefficients(logits, target, reduction, ignore_index, label_smoothing, weight, where)
        loss = _ce_from_coefficients(log_softmax(logits, axis=-1), a, denom, reduction)
        grad = softmax(logits, axis=-1) * xp.sum(a, axis=-1)[:, None] - a  # d(-sum_c a_c log p_c)/dx
        return loss, (grad / denom if reduction == "mean" else grad)
    xp, target, any_bad = _check_ce(logits, target, reduction, ignore_index, label_smoothing,
                                    "cross_entropy_with_grad")
    out = _with_grad(xp, logits, target, reduction, ignore_index, label_smoothing)
    return (_poison(xp, out[0], any_bad), out[1]) if any_bad is not None else out


def _probabilities(target: Any) -> bool:
    """Whether ``target`` holds class probabilities (a floating array or Tensor of 2 or more axes) rather than class
    indices (a floating (N,) target is reported by the class-index check, as a dtype error)."""
    dtype = getattr(target, "dtype", None)
    if dtype is None or getattr(target, "ndim", 0) < 2:
        return False
    kind = getattr(dtype, "kind", None)
    if kind is not None:
        return kind == "f"
    return namespace_of(_values(target)).isdtype(dtype, "real floating")


def _cross_entropy_composed(logits: Any, target: Any, reduction: str, ignore_index: int, eps: float, weight: Any,
                            where: str) -> Any:
    """Cross-entropy with class-probability targets or class weights, from ``log_softmax`` and sums (arrays or
    Tensors; the backward and its backward come from those ops): ``loss = -sum_c a_c log_softmax(x)_c`` per row,
    with the coefficients ``a`` of ``_ce_coefficients``."""
    _, a, denom = _ce_coefficients(logits, target, reduction, ignore_index, eps, weight, where)
    return _ce_from_coefficients(log_softmax(logits, axis=-1), a, denom, reduction)


def _ce_from_coefficients(logp: Any, a: Any, denom: Any, reduction: str) -> Any:
    per = -_sum(logp * a, axis=-1)
    if reduction == "none":
        return per
    return _sum(per) / denom if reduction == "mean" else _sum(per)


def _ce_coefficients(logits: Any, target: Any, reduction: str, ignore_index: int, eps: float, weight: Any,
                     where: str) -> tuple[Any, Any, Any]:
    """``(xp, a, denom)`` for ``loss = -sum_c a_c log_softmax(x)_c`` per row (``torch.nn.functional.cross_entropy``):
    ``a = w * ((1 - eps) q + eps / C)`` with ``q`` the target distribution and ``w`` the class weights, except that
    for class indices the label term takes the label's weight, ``a = (1 - eps) w_t onehot + (eps / C) w``, and
    ignored rows are 0. ``denom`` ("mean"): N for probabilities, the summed ``w_t`` of the kept rows for indices (a
    0-d array, NaN when a deferred label check failed on a device)."""
    x = _values(logits)
    xp = namespace_of(x, _values(target), where=where)
    _checks.reduction(reduction, where)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {eps}")
    _checks.floating(xp, x, where, "logits")
    if x.ndim != 2 or x.shape[1] == 0:  # (an empty batch, N = 0, gives PyTorch's NaN mean, 0 sum, empty "none")
        raise ShapeError(f"{where}: logits must have shape (N, C) with C > 0, got {tuple(x.shape)}")
    n, c = x.shape
    if weight is not None:
        weight = _values(weight)
        namespace_of(x, weight, where=where)
        if tuple(weight.shape) != (c,) or weight.dtype != x.dtype:
            raise ShapeError(f"{where}: weight must be a ({c},) array of the logits' dtype {dtype_name(x.dtype)}, "
                             f"got shape {tuple(weight.shape)} and dtype {dtype_name(weight.dtype)}")
    t = _values(target)
    if _probabilities(t):
        if tuple(t.shape) != (n, c):
            raise ShapeError(f"{where}: class-probability target must have the shape of logits {(n, c)}, got "
                             f"{tuple(t.shape)} (class indices are integers of shape ({n},))")
        if t.dtype != x.dtype:
            raise DTypeError(f"{where}: class-probability target dtype {dtype_name(t.dtype)} differs from logits "
                             f"dtype {dtype_name(x.dtype)}")
        if ignore_index != -100:
            raise ValueError(f"{where}: ignore_index is not supported with class-probability targets (as in "
                             "PyTorch); give those rows zero probability mass instead")
        _checks.length_one_axis(x, 1, where, "every loss and gradient is 0 (one class)",
                                "pass logits.T: logits are (N, C) rows")
        a = t * (1.0 - eps) + eps / c if eps > 0.0 else t
        return xp, (a * weight if weight is not None else a), n if n else float("nan")  # (no 0/0 warning)
    xp, t, any_bad = _check_ce(x, t, reduction, ignore_index, eps, where)
    valid = xp.astype(t != ignore_index, x.dtype)
    safe = xp.where(t != ignore_index, t, xp.zeros_like(t))
    onehot = xp.astype(xp.arange(c, dtype=safe.dtype)[None, :] == safe[:, None], x.dtype)
    w_t = xp.take(weight, safe, axis=0) * valid  # the label's weight, 0 for ignored rows
    a = onehot * ((1.0 - eps) * w_t)[:, None]
    if eps > 0.0:
        a = a + (eps / c) * weight[None, :] * valid[:, None]
    denom = xp.sum(w_t) if n else xp.full((), float("nan"), dtype=x.dtype)  # (an empty batch: no 0/0 warning)
    return xp, a, _poison(xp, denom, any_bad)


_UNSIGNED: dict[Any, Any] = {}  # integer dtype -> the unsigned dtype of its width (for the one-pass label check)


def _unsigned(dtype: Any) -> Any:
    u = _UNSIGNED[dtype] = np.dtype(dtype.str.replace("i", "u"))
    return u


def _numpy_small_call(logits: Any, target: Any, reduction: str, ignore_index: int, eps: float) -> bool:
    """Whether ``cross_entropy_with_grad`` may take the NumPy fast path: float32/64 logits (N, C) with C > 1,
    integer labels (N,) all in [0, C) (checked here, one min/max pass), none ignored, no smoothing, debug off."""
    if not (type(logits) is np.ndarray and type(target) is np.ndarray and logits.dtype.char in "fd"
            and target.dtype.kind in "iu" and logits.ndim == 2 and target.shape == logits.shape[:1]
            and eps == 0.0 and reduction in _checks.REDUCTIONS and target.size > 0 and logits.shape[1] > 1
            and not _debug_on() and numpy_direct("cross_entropy")):
        return False
    c = logits.shape[1]
    # one pass for both bounds: viewed as unsigned, a negative label is above every class index
    unsigned = target.view(_UNSIGNED.get(target.dtype) or _unsigned(target.dtype))
    return not 0 <= ignore_index < c and int(np.maximum.reduce(unsigned, axis=None)) < c


def _cross_entropy_numpy(logits: Any, target: Any, reduction: str) -> tuple[Any, Any]:
    """``_cross_entropy(..., with_grad=True)`` for the case ``_numpy_small_call`` accepts, in plain NumPy: the same
    operations in the same order (so the same values, tests/test_small_calls.py), without the namespace wrappers
    and the masks of ignored rows (there are none). The target entries are read and written at their flat
    positions (``take``/``put``: the values of ``e[rows, target]`` without the fancy-index machinery)."""
    n, c = logits.shape
    k = _ROWS.get((logits.dtype, n, c)) or _rows(logits.dtype, n, c)
    starts, one, count, inv = k
    m = np.maximum.reduce(logits, axis=-1, keepdims=True)  # (ndarray.max without its Python wrapper)
    # (no _shifted rule here: a row whose max is -inf or NaN gives a NaN loss and NaN gradients with or without
    # it, and the other rows' values are the same)
    e = logits - m
    if target.dtype.kind == "u" and target.dtype.itemsize == 8:  # (uint64 + int64 would be float64; labels < c)
        target = target.astype(np.intp)
    at = starts + target  # the flat (C-order) positions of e[i, target[i]]
    z_t = e.take(at)
    np.exp(e, out=e)
    s = np.add.reduce(e, axis=-1)
    per = np.log(s) - z_t
    if reduction == "mean":
        scale = inv
        loss = np.add.reduce(per, axis=None) / count
    else:
        scale = one
        loss = np.add.reduce(per, axis=None) if reduction == "sum" else per
    e *= (scale / s)[:, None]
    e.put(at, e.take(at) - scale)  # e[rows, target] -= scale
    return loss, e


_ROWS: dict[tuple, tuple] = {}  # (dtype, N, C) -> (row starts i*C, 1, N, 1/N) for _cross_entropy_numpy


def _rows(dtype: Any, n: int, c: int) -> tuple:
    """``(arange(n) * c, dtype(1), dtype(n), dtype(1) / dtype(n))`` for ``_cross_entropy_numpy``, made once per
    (dtype, N, C) (the scalars as the reference makes them, in ``logits``'s dtype)."""
    if len(_ROWS) >= 1024:
        _ROWS.clear()
    starts = np.arange(n) * c
    starts.flags.writeable = False
    one, count = dtype.type(1.0), dtype.type(n)
    k = _ROWS[(dtype, n, c)] = (starts, one, count, one / count)
    return k


def _with_grad(xp: Any, logits: Any, target: Any, reduction: str, ignore_index: int, eps: float) -> tuple[Any, Any]:
    """The fused kernel for ``cross_entropy_with_grad`` where one is registered, else the reference."""
    kernel = _dispatch.lookup(registry.CROSS_ENTROPY_WITH_GRAD, xp, logits.dtype)
    if kernel is not None:
        out = kernel(logits, target, reduction=reduction, ignore_index=ignore_index, label_smoothing=eps)
        if out is not NotImplemented:
            return out
    return _cross_entropy(xp, logits, target, reduction, ignore_index, eps, with_grad=True)


def nll_loss(input: Any, target: Any, weight: Any = None, ignore_index: int = -100,  # noqa: A002 (PyTorch's name)
             reduction: str = "mean") -> Any:
    """Negative log-likelihood of log-probabilities ``input`` (N, C) (e.g. ``log_softmax`` output) at integer
    class ``target`` (N,), PyTorch semantics (``torch.nn.functional.nll_loss``): per sample
    ``-weight[t] * input[i, t]`` (0 where ``t == ignore_index``); ``"mean"`` divides the sum by the summed weights of
    the counted samples (NaN when every target is ignored, like PyTorch), ``"sum"`` sums, ``"none"`` gives (N,).
    ``weight`` (C,) rescales each class (an array; a Tensor's values are used, no gradient flows into it).

    Written with ``mul``/``sum``/``div`` ops, so it is differentiable to any order. Raises ``ShapeError``/
    ``DTypeError``/``ValueError`` for bad shapes, dtypes or out-of-range targets (as ``cross_entropy``).
    """
    x = input.data if hasattr(input, "_node") else input
    t = target.data if hasattr(target, "_node") else target
    xp, t, any_bad = _check_ce(x, t, reduction, ignore_index, 0.0, "nll_loss")
    n, c = x.shape
    valid = t != ignore_index
    safe = xp.where(valid, t, xp.zeros_like(t))
    rows = xp.astype(valid, x.dtype)
    if weight is not None:
        w = weight.data if hasattr(weight, "_node") else weight
        namespace_of(x, w, where="nll_loss")
        if tuple(w.shape) != (c,):
            raise ShapeError(f"nll_loss: weight must have shape ({c},) for input {tuple(x.shape)}, got "
                                     f"{tuple(w.shape)}")
        _checks.floating(xp, w, "nll_loss", "weight")
        rows = rows * xp.astype(xp.take(w, safe, axis=0), x.dtype)
    pick = xp.astype(xp.arange(c, dtype=safe.dtype)[None, :] == safe[:, None], x.dtype) * rows[:, None]
    per = neg(_sum(mul(input, pick), axis=1))
    if reduction == "none":
        loss = per
    elif reduction == "sum":
        loss = _sum(per)
    else:  # (an empty batch: PyTorch's NaN, without a 0/0 warning)
        loss = div(_sum(per), xp.sum(rows) if n else xp.full((), float("nan"), dtype=x.dtype))
    if any_bad is not None:  # a deferred label check failed: NaN, never a number (as cross_entropy)
        loss = add(loss, xp.where(any_bad, xp.asarray(float("nan"), dtype=x.dtype), xp.asarray(0.0, dtype=x.dtype)))
    return loss


def _check_pair(pred: Any, target: Any, reduction: str, where: str, first: str) -> Any:
    xp = _checks.pair(pred, target, where, (first, "target"))
    _checks.reduction(reduction, where)
    check_finite(xp, pred, where, first)
    check_finite(xp, target, where, "target")
    return xp


def _down(xp: Any, like: Any, *arrays: Any) -> Any:
    """``arrays`` cast back to ``like.dtype`` (float16 losses are computed in float32); one array or a tuple."""
    out = tuple(xp.astype(a, like.dtype) if a.dtype != like.dtype else a for a in arrays)
    return out[0] if len(out) == 1 else out


class MSELoss(Op):
    name = "mse_loss"

    @staticmethod
    def forward(ctx: Context, pred: Any, target: Any, *, reduction: str = "mean") -> Any:
        """float16 is computed in float32 (``d * d`` overflows float16 at ``|d| >= 256``, a sum sooner), rounded once."""
        xp = _check_pair(pred, target, reduction, "mse_loss", "pred")
        ctx.save_for_backward(pred, target)
        ctx.reduction, ctx.scale = reduction, 2.0 * _grad_scale(pred, reduction)
        d = _upcast(xp, pred) - target  # (target has the dtype of pred: float16 promotes to float32 exactly)
        return _down(xp, pred, _reduce(xp, d * d, reduction))

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        pred, target = ctx.saved_tensors
        gd = (pred - target) * (g * ctx.scale)
        return (gd if ctx.needs_input_grad[0] else None), (-gd if ctx.needs_input_grad[1] else None)


class BCEWithLogits(Op):
    name = "binary_cross_entropy_with_logits"

    @staticmethod
    def forward(ctx: Context, logits: Any, target: Any, *, reduction: str = "mean") -> Any:
        """float16 is computed in float32 (a float16 sum of the terms overflows) and rounded once."""
        xp = _check_pair(logits, target, reduction, "binary_cross_entropy_with_logits", "logits")
        ctx.save_for_backward(logits, target)
        ctx.scale = _grad_scale(logits, reduction)
        x = _upcast(xp, logits)  # (target has the dtype of logits: float16 promotes to float32 exactly)
        return _down(xp, logits, _reduce(xp, _bce_terms(xp, x, target), reduction))

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, Any]:
        x, t = ctx.saved_tensors
        gs = g * ctx.scale
        gx = (sigmoid(x) - t) * gs if ctx.needs_input_grad[0] else None
        gt = -x * gs if ctx.needs_input_grad[1] else None
        return gx, gt


def mse_loss(pred: Any, target: Any, reduction: str = "mean") -> Any:
    """Mean squared error ``(pred - target)**2``, reduced; ``pred`` and ``target`` of one shape
    (``torch.nn.functional.mse_loss``: an empty input gives NaN for ``"mean"``, 0 for ``"sum"``, an empty array for
    ``"none"``)."""
    return MSELoss.apply(pred, target, reduction=reduction)


def mse_loss_with_grad(pred: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """``(mse_loss(...), 2 * (pred - target) * scale)``, scale ``1/numel`` for ``"mean"``; float16 in float32."""
    xp = _check_pair(pred, target, reduction, "mse_loss_with_grad", "pred")
    d = _upcast(xp, pred) - target  # (target has the dtype of pred: float16 promotes to float32 exactly)
    loss = _reduce(xp, d * d, reduction)
    d *= 2.0 * _grad_scale(d, reduction)
    return _down(xp, pred, loss, d)


def _bce_terms(xp: Any, logits: Any, target: Any) -> Any:
    # max(x, 0) - x*t + log(1 + exp(-|x|)): finite for any x
    return xp.maximum(logits, 0.0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))


def binary_cross_entropy_with_logits(logits: Any, target: Any, reduction: str = "mean") -> Any:
    """Sigmoid + binary cross-entropy on ``logits`` with probabilities ``target`` (same shape), overflow-free
    (``torch.nn.functional.binary_cross_entropy_with_logits``: an empty input gives NaN for ``"mean"``, 0 for
    ``"sum"``, an empty array for ``"none"``)."""
    return BCEWithLogits.apply(logits, target, reduction=reduction)


def binary_cross_entropy_with_logits_with_grad(logits: Any, target: Any, reduction: str = "mean") -> tuple[Any, Any]:
    """``(loss, (sigmoid(logits) - target) * scale)``; float16 in float32, rounded once."""
    xp = _check_pair(logits, target, reduction, "binary_cross_entropy_with_logits_with_grad", "logits")
    x = _upcast(xp, logits)  # (target has the dtype of logits: float16 promotes to float32 exactly)
    loss = _reduce(xp, _bce_terms(xp, x, target), reduction)
    grad = sigmoid(x) - target
    grad *= _grad_scale(grad, reduction)
    return _down(xp, logits, loss, grad)
