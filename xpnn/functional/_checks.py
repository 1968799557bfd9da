"""Argument checks shared by the functional API (errors name the function and what was expected)."""
from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np

from ..autograd import op as _op
from ..backend import dtype_name, get_backend, namespace_of
from ..debug import check_finite, defer_check, defers_checks, get_debug as _debug_on
from ..errors import DTypeError, ShapeError

REDUCTIONS = ("mean", "sum", "none")


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


PYTHON = (int, float, list, tuple)  # (bool is an int)


def as_arrays(*values: Any) -> tuple[Any, ...]:
    """``values`` with Python scalars and lists turned into arrays (arrays, Tensors and ``None`` pass through), so
    NumPy code can pass ``1.0`` or ``[0.0, 1.0]`` where NumPy would accept them.

    Next to arrays a value takes their namespace; a Python int/float next to a floating array also takes its dtype
    (NumPy 2 / array-API promotion: ``1.0`` with a float32 array stays float32). Lists, and scalars with no array
    beside them, become arrays of the default backend (``xpnn.get_backend()``) with its default dtypes (float64 for
    Python floats on NumPy)."""
    for v in values:
        if isinstance(v, PYTHON):
            break
    else:
        return values
    ref = next((v for v in values if v is not None and not isinstance(v, PYTHON)), None)
    if ref is None:
        xp, dtype = get_backend().xp, None
    else:
        arr = ref.data if isinstance(ref, _op.TensorBase) else ref
        xp = namespace_of(arr)
        dtype = arr.dtype if xp.isdtype(arr.dtype, "real floating") else None
        device = getattr(arr, "device", None)
    out = []
    for v in values:
        if isinstance(v, PYTHON):
            scalar = isinstance(v, (int, float)) and not isinstance(v, bool)
            if ref is None:
                v = xp.asarray(v)
            else:
                v = xp.asarray(v, dtype=dtype if scalar else None, device=device)
        out.append(v)
    return tuple(out)


def warn_user(message: str) -> None:
    """``warnings.warn(message, UserWarning)`` pointing at the first caller outside xpnn (so the default filter shows
    it once per call site of the user's code)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("xpnn."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def length_one_axis(x: Any, axis: int, where: str, result: str,
                    hint: str = "pass axis=0, or x.T to get xpnn's (N, C) rows") -> None:
    """Warn when ``where`` normalises over an axis of length 1: ``result`` is then constant, which is what a column
    vector of class scores (C, 1) with the default ``axis=-1`` silently gives."""
    if x.shape[axis] == 1:
        warn_user(f"{where}: axis {axis} of the input of shape {tuple(x.shape)} has length 1, so {result}; for "
                  f"scores laid out as a column (C, 1) {hint}")


def floating(xp: Any, x: Any, where: str, what: str = "input") -> None:
    try:
        dt = x.dtype
    except AttributeError:  # a Python number or a list where an array is needed (torch: TypeError too)
        raise TypeError(f"{where}: {what} must be an array or Tensor, got {type(x).__name__}") from None
    if getattr(dt, "kind", None) == "f":  # NumPy/CuPy dtypes: skip the (slow) generic isdtype
        return
    if not xp.isdtype(dt, "real floating"):
        raise DTypeError(f"{where}: {what} must be a floating array (float16/32/64), got dtype {dtype_name(x.dtype)}")


def same_shape(a: Any, b: Any, where: str, names: tuple[str, str] = ("input", "grad")) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{where}: {names[1]} must have the shape of {names[0]} {tuple(a.shape)}, got {tuple(b.shape)}")


def same_dtype(a: Any, b: Any, where: str, names: tuple[str, str] = ("input", "grad")) -> None:
    if a.dtype != b.dtype:
        raise DTypeError(
            f"{where}: {names[1]} dtype {dtype_name(b.dtype)} differs from {names[0]} dtype {dtype_name(a.dtype)}"
        )


def reduction(value: str, where: str) -> None:
    if value not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {REDUCTIONS}, got {value!r}")


def class_targets(xp: Any, logits: Any, target: Any, where: str, ignore_index: int) -> Any:
    """logits (N, C) floating, target (N,) integer in [0, C) or == ignore_index.

    Raises at once on NumPy or in debug mode and returns ``None``; elsewhere returns the (N,) boolean mask of
    out-of-range labels unread (see ``defer_class_targets``)."""
    floating(xp, logits, where, "logits")
    if logits.ndim != 2:
        raise ShapeError(f"{where}: logits must have shape (N, C), got {tuple(logits.shape)}")
    n, c = logits.shape
    if c == 0:  # (an empty batch, N = 0, is fine: PyTorch's mean is NaN, its sum 0, its "none" empty)
        raise ShapeError(f"{where}: empty logits of shape {tuple(logits.shape)}")
    if getattr(target.dtype, "kind", None) not in ("i", "u") and not xp.isdtype(target.dtype, "integral"):
        raise DTypeError(
            f"{where}: target must hold integer class indices of shape ({n},) or class probabilities of the shape of "
            f"logits ({n}, {c}), got dtype {dtype_name(target.dtype)} and shape {tuple(target.shape)}"
        )
    if tuple(target.shape) != (n,):
        raise ShapeError(f"{where}: target must have shape ({n},) for logits {tuple(logits.shape)}, got {tuple(target.shape)}")
    if type(target) is np.ndarray and not _debug_on():  # NumPy: two reductions decide the common case
        if target.size == 0 or (int(target.min()) >= 0 and int(target.max()) < c):
            return None
    bad = xp.logical_and(xp.logical_or(target < 0, target >= c), target != ignore_index)
    if defers_checks(xp):  # no host read inside a step: the caller masks `bad` and poisons the loss
        check_finite(xp, logits, where, "logits")
        return bad
    if bool(xp.any(bad)):
        lo, hi = int(xp.min(target)), int(xp.max(target))
        raise ValueError(
            f"{where}: target values must be in [0, {c}) (or ignore_index={ignore_index}); got values in [{lo}, {hi}]"
        )
    check_finite(xp, logits, where, "logits")
    return None


def defer_class_targets(xp: Any, target: Any, bad: Any, c: int, where: str, ignore_index: int) -> tuple[Any, Any]:
    """For a deferred label check (``class_targets`` returned ``bad``): ``(safe_target, any_bad)`` where out-of-range
    labels become ``ignore_index`` (no kernel reads past a row) and ``any_bad`` (0-d bool) is recorded with
    ``xpnn.debug.defer_check``; the caller makes its loss NaN where ``any_bad``."""
    any_bad = xp.any(bad)
    defer_check(xp, any_bad, ("class_targets", where, c, ignore_index), lambda: ValueError(
        f"{where}: target values must be in [0, {c}) (or ignore_index={ignore_index}); an out-of-range label was "
        "seen in a batch since the last check (checked on the device, read at the next metrics read; "
        "xpnn.set_debug(True) raises at the offending call)"))
    safe = xp.where(bad, xp.asarray(ignore_index, dtype=target.dtype, device=_device(target)), target)
    return safe, any_bad


def pair(a: Any, b: Any, where: str, names: tuple[str, str]) -> Any:
    """Namespace of a and b, which must be floating arrays of one shape and dtype."""
    xp = namespace_of(a, b, where=where)
    floating(xp, a, where, names[0])
    same_shape(a, b, where, names)
    same_dtype(a, b, where, names)
    return xp


def broadcast(where: str, *operands: Any, into: Any = None) -> None:
    """Raise ``ShapeError`` naming ``where`` and the shapes when ``operands`` (arrays; scalars are skipped) do not
    broadcast together under NumPy's rules (trailing dimensions equal, or 1 in one of them), or, with ``into``
    (an in-place target), when their broadcast shape is not ``into``'s shape. Called after the backend refused an
    operation (its own error does not name the op), so it costs nothing on the success path."""
    shapes = [tuple(x.shape) for x in operands if hasattr(x, "shape")]
    out: list[int] = []
    for dims in zip(*(((1,) * (max(map(len, shapes)) - len(s)) + s) for s in shapes)):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            axis = len(out) - max(map(len, shapes))
            raise ShapeError(f"{where}: operands of shapes {' and '.join(map(str, shapes))} do not broadcast "
                             f"together (sizes {' and '.join(str(d) for d in dims)} at dimension {axis}: each must "
                             "be equal or 1)")
        out.append(sizes.pop() if sizes else 1)
    if into is not None and tuple(out) != tuple(into.shape):
        raise ShapeError(f"{where}: the result of shape {tuple(out)} (operands {' and '.join(map(str, shapes))}) "
                         f"does not fit in place into shape {tuple(into.shape)}")
