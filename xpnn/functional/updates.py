"""Optimizer updates: the reference math of ``xpnn.optim``, in place over arrays of one shape.

Each function updates ``param`` and its state arrays in place and returns ``param`` (the same array), so NumPy code
that rebinds (``w = sgd_update(w, g, lr=0.1)``) works too. In place means aliases see the new values: an array kept
as ``w_old = w`` before the update is the updated array, not a copy (keep ``w.copy()`` to backpropagate through the
old weights). ``grad`` may broadcast to ``param``'s shape (``b`` (1, 3) with ``db`` (3,), as ``b -= lr * db`` in
NumPy); ``param``'s shape never changes. A Python scalar or list ``param`` becomes a new array (returned: it cannot be
updated in place). They are normally called on a model's 1-D flat parameter buffer, so a whole model is updated in
one call (one fused kernel on CUDA: a function first asks ``_dispatch.lookup(registry.<FUNCTION NAME>, xp,
param.dtype)`` with its row of ``xpnn._cuda.registry`` and returns early when a kernel takes the call).

The formulas are PyTorch's (``torch.optim.SGD/Adagrad/RMSprop/Adam/AdamW``, single-tensor path), so results can be
compared with it. The generic code writes every intermediate into a work array: on NumPy and CuPy through the
library's ufunc ``out=`` (no temporaries when the caller passes ``scratch``, a list it keeps between steps and that
these functions fill with the work arrays they need on first use); on other array-API namespaces through plain
expressions assigned with ``out[...] = ...``.

Capturable form: ``step`` and ``lr`` may be 0-d arrays of the param's namespace and compute dtype (what
``xpnn.optim`` passes on namespaces other than NumPy). They are then never read on the host: bias corrections are
computed from them on the device, and the fused kernel looked up is ``registry.<FUNCTION NAME>_CAPTURABLE`` (one
that reads them from device memory), else the generic code runs.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import _dispatch
from .._cuda import registry
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks, cpu_kernels, cpu_threads
from ._inplace import InPlace as _InPlace

__all__ = ["adam_update", "sgd_update", "adagrad_update", "rmsprop_update", "copy_into"]


def copy_into(dst: Any, src: Any) -> None:
    """``dst[...] = src`` in place, casting to ``dst.dtype``, without a temporary on NumPy/CuPy."""
    _InPlace.of(namespace_of(dst, src, where="copy_into")).copy(src, dst)


def _work(xp: Any, scratch: Optional[list], i: int, like: Any) -> Any:
    """Work array ``i`` shaped like ``like``: ``scratch[i]`` (appended on first use, reused later) or a temporary."""
    if scratch is None:
        return xp.empty_like(like)
    while len(scratch) <= i:
        scratch.append(xp.empty_like(like))
    w = scratch[i]
    if w.shape != like.shape or w.dtype != like.dtype:
        raise ShapeError(f"scratch[{i}] has shape {tuple(w.shape)} and dtype {dtype_name(w.dtype)}, expected "
                         f"{tuple(like.shape)} and {dtype_name(like.dtype)} (the param's); use one list per param")
    return w


_NUMPY_XP = namespace_of(np.empty(0))
_SIGNATURES: dict[tuple, Any] = {}  # (where, state names, (type, dtype, shape, device) per array) -> namespace
_MAX_SIGNATURES = 1024


def _check(where: str, param: Any, grad: Any, **state: Any) -> Any:
    """Namespace of the arrays; all must be floating with ``param``'s shape and dtype (``None`` states skipped).

    What the checks derive from types, dtypes, shapes and devices is cached per signature: an optimizer calls
    with the same signature every step, and a cache hit costs one tuple lookup instead of the namespace and
    dtype derivations (error messages are formatted only when raising). Plain NumPy float32/float64 arrays of one
    shape and dtype (an optimizer's flat buffer and its state) pass with a type, shape and dtype test each."""
    if type(param) is np.ndarray and param.dtype.char in "fd":
        shape, dtype = param.shape, param.dtype
        if type(grad) is np.ndarray and grad.shape == shape and grad.dtype == dtype:
            for a in state.values():
                if a is not None and (type(a) is not np.ndarray or a.shape != shape or a.dtype != dtype):
                    break
            else:
                return _NUMPY_XP
    arrays = {"grad": grad, **{k: v for k, v in state.items() if v is not None}}
    key = (where, tuple(arrays), *((type(a), a.dtype, a.shape, getattr(a, "device", None))
                                   for a in (param, *arrays.values())))
    try:
        xp = _SIGNATURES.get(key)
    except TypeError:  # an unhashable device or dtype: check every time
        xp, key = None, None
    if xp is not None:
        return xp
    xp = namespace_of(param, *arrays.values(), where=where)
    if not xp.isdtype(param.dtype, "real floating"):
        raise DTypeError(f"{where}: param must be a floating array (float16/32/64), got dtype {dtype_name(param.dtype)}")
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(param.shape):  # (a grad that broadcasts was expanded by _arguments)
            raise ShapeError(f"{where}: {name} must have the shape of param {tuple(param.shape)}, got "
                             f"{tuple(a.shape)}{' (nor does it broadcast to it)' if name == 'grad' else ''}")
        if a.dtype != param.dtype:
            raise DTypeError(f"{where}: {name} dtype {dtype_name(a.dtype)} differs from param dtype "
                             f"{dtype_name(param.dtype)}")
    if key is not None:
        if len(_SIGNATURES) >= _MAX_SIGNATURES:
            _SIGNATURES.clear()
        _SIGNATURES[key] = xp
    return xp


def _broadcasts(shape: tuple[int, ...], to: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``to`` without enlarging it (NumPy's rules)."""
    if len(shape) > len(to):
        return False
    return all(a == b or a == 1 for a, b in zip(shape[::-1], to[::-1]))


def _arguments(where: str, param: Any, grad: Any) -> tuple[Any, Any]:
    """``(param, grad)`` as arrays: Python scalars and lists converted (``_checks.as_arrays``: a scalar ``param``
    becomes a 0-d array of the default backend, which the caller returns updated), and a ``grad`` that broadcasts
    to ``param``'s shape materialised at that shape (one copy laid out like ``param``, as the fused kernels need);
    a grad that does not broadcast is left for ``_check`` to report."""
    if isinstance(param, _checks.PYTHON) or isinstance(grad, _checks.PYTHON):
        param, grad = _checks.as_arrays(param, grad)
    elif param is None or grad is None:
        raise TypeError(f"{where}: param and grad must be arrays, got {'param' if param is None else 'grad'}=None")
    if grad.shape != param.shape and _broadcasts(tuple(grad.shape), shape := tuple(param.shape)):
        full = namespace_of(param, grad, where=where).empty_like(param, dtype=grad.dtype)
        full[...] = grad  # (laid out like param: C-contiguous for a kernel when param is)
        grad = full
    return param, grad


def _effective_grad(ops: _InPlace, param: Any, grad: Any, weight_decay: float, maximize: bool,
                    scratch: Optional[list]) -> Any:
    """``g = (-grad if maximize else grad) + weight_decay * param``: ``grad`` itself when neither applies,
    else written into work array 0 (so the callers' next free work index is ``0 if g is grad else 1``)."""
    if weight_decay == 0 and not maximize:
        return grad
    g = _work(ops.xp, scratch, 0, param)
    if weight_decay == 0:
        return ops.mul(grad, -1.0, out=g)
    ops.mul(param, weight_decay, out=g)
    return ops.sub(g, grad, out=g) if maximize else ops.add(g, grad, out=g)


def _kernel_took(op: Any, xp: Any, dtype: Any, *args: Any, **kwargs: Any) -> bool:
    """Run the fused kernel for ``op`` if one is registered; True when it did the update."""
    kernel = _dispatch.lookup(op, xp, dtype)
    return kernel is not None and kernel(*args, **kwargs) is not NotImplemented


def sgd_update(param: Any, grad: Any, momentum_buffer: Any = None, *, lr: float, momentum: float = 0.0,
               dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, first_step: bool = False,
               maximize: bool = False, scratch: Optional[list] = None) -> Any:
    """SGD with optional momentum, Nesterov momentum and L2 weight decay (``torch.optim.SGD``), in place.

    g = -grad if maximize else grad;  g = g + weight_decay * p
    if momentum != 0:  buf = g on the first step, else buf = momentum * buf + (1 - dampening) * g
                       g = g + momentum * buf if nesterov else buf
    p = p - lr * g

    Arrays: any one shape and floating dtype. ``momentum_buffer`` is needed when ``momentum != 0``; ``first_step``
    says it holds no history yet. ``scratch``: optional list of work arrays kept by the caller between steps.
    Returns ``param`` (``w = sgd_update(w, dw, ...)`` works), updated in place: an alias kept as ``w_old = w``
    sees the new values (see the module docstring). Raises ``ShapeError``/``DTypeError`` naming the array.
    """
    param, grad = _arguments("sgd_update", param, grad)
    xp = _check("sgd_update", param, grad, momentum_buffer=momentum_buffer)
    if momentum != 0 and momentum_buffer is None:
        raise ValueError(f"sgd_update: momentum={momentum} needs a momentum_buffer array")
    # a device-scalar lr/step (capturable optimizers) needs a kernel reading it from device memory
    op = registry.SGD_UPDATE_CAPTURABLE if _is_device_scalar(lr) else registry.SGD_UPDATE
    if _kernel_took(op, xp, param.dtype, param, grad, momentum_buffer, lr=lr, momentum=momentum,
                    dampening=dampening, nesterov=nesterov, weight_decay=weight_decay, first_step=first_step,
                    maximize=maximize):
        return param
    if type(param) is np.ndarray and param.size >= cpu_kernels.MIN_ELEMENTS and cpu_kernels.sgd_update(
            param, grad, momentum_buffer, lr, momentum, dampening, nesterov, weight_decay, first_step, maximize):
        return param  # one compiled pass (cpu_kernels), the same values as the passes below
    ops = _InPlace.of(xp)
    g = _effective_grad(ops, param, grad, weight_decay, maximize, scratch)
    free = 0 if g is grad else 1
    d = g  # the step direction
    if momentum != 0:
        buf = momentum_buffer
        if first_step:
            ops.copy(g, out=buf)
        else:
            ops.mul(buf, momentum, out=buf)
            if dampening == 0:
                ops.add(buf, g, out=buf)
            else:  # scale g in place when it is our work array and no longer needed (not nesterov)
                t = g if (g is not grad and not nesterov) else _work(xp, scratch, free, param)
                ops.add(buf, ops.mul(g, 1 - dampening, out=t), out=buf)
        if nesterov:
            d = _work(xp, scratch, free, param)
            ops.add(g, ops.mul(buf, momentum, out=d), out=d)
        else:
            d = buf
    # p -= lr * d, scaling d in place when it is a work array (work array 0 is free by now otherwise)
    t = d if (d is not grad and d is not momentum_buffer) else _work(xp, scratch, 0, param)
    ops.sub(param, ops.mul(d, lr, out=t), out=param)
    return param


def adagrad_update(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float, lr_decay: float = 0.0,
                   weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False,
                   scratch: Optional[list] = None) -> Any:
    """Adagrad (``torch.optim.Adagrad``), in place; ``step`` counts from 1.

    g = -grad if maximize else grad;  g = g + weight_decay * p
    clr = lr / (1 + (step - 1) * lr_decay)
    sum = sum + g * g
    p = p - clr * g / (sqrt(sum) + eps)
    Returns ``param`` (``w = adagrad_update(w, dw, ...)`` works), updated in place: an alias kept as ``w_old = w``
    sees the new values (see the module docstring). Raises ``ShapeError``/``DTypeError`` naming the array.
    """
    param, grad = _arguments("adagrad_update", param, grad)
    xp = _check("adagrad_update", param, grad, state_sum=state_sum)
    _check_step("adagrad_update", step)
    # a device-scalar lr/step (capturable optimizers) needs a kernel reading it from device memory
    op = registry.ADAGRAD_UPDATE_CAPTURABLE if _is_device_scalar(step, lr) else registry.ADAGRAD_UPDATE
    if _kernel_took(op, xp, param.dtype, param, grad, state_sum, step=step, lr=lr, lr_decay=lr_decay,
                    weight_decay=weight_decay, eps=eps, maximize=maximize):
        return param
    clr = _adagrad_clr(xp, param.dtype, step, lr, lr_decay)
    if type(param) is np.ndarray and param.size >= cpu_kernels.MIN_ELEMENTS and cpu_kernels.adagrad_update(
            param, grad, state_sum, clr, weight_decay, eps, maximize):
        return param  # one compiled pass (cpu_kernels), the same values as the passes below
    ops = _InPlace.of(xp)
    g = _effective_grad(ops, param, grad, weight_decay, maximize, scratch)
    t = _work(xp, scratch, 0 if g is grad else 1, param)
    ops.add(state_sum, ops.mul(g, g, out=t), out=state_sum)
    ops.add(ops.sqrt(state_sum, out=t), eps, out=t)
    ops.div(g, t, out=t)
    ops.sub(param, ops.mul(t, clr, out=t), out=param)
    return param


def rmsprop_update(param: Any, grad: Any, square_avg: Any, grad_avg: Any = None, momentum_buffer: Any = None, *,
                   lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                   maximize: bool = False, scratch: Optional[list] = None) -> Any:
    """RMSprop (``torch.optim.RMSprop``), in place.

    g = -grad if maximize else grad;  g = g + weight_decay * p
    sq = alpha * sq + (1 - alpha) * g * g
    if centered: ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(sq - ga * ga) + eps
    else:        avg = sqrt(sq) + eps
    if momentum > 0: buf = momentum * buf + g / avg;  p = p - lr * buf
    else:            p = p - lr * g / avg

    ``grad_avg`` is needed when ``centered``, ``momentum_buffer`` when ``momentum > 0``.
    Returns ``param`` (``w = rmsprop_update(w, dw, ...)`` works), updated in place: an alias kept as ``w_old = w``
    sees the new values (see the module docstring). Raises ``ShapeError``/``DTypeError`` naming the array.
    """
    param, grad = _arguments("rmsprop_update", param, grad)
    xp = _check("rmsprop_update", param, grad, square_avg=square_avg, grad_avg=grad_avg,
                momentum_buffer=momentum_buffer)
    if centered and grad_avg is None:
        raise ValueError("rmsprop_update: centered=True needs a grad_avg array")
    if momentum > 0 and momentum_buffer is None:
        raise ValueError(f"rmsprop_update: momentum={momentum} needs a momentum_buffer array")
    # a device-scalar lr/step (capturable optimizers) needs a kernel reading it from device memory
    op = registry.RMSPROP_UPDATE_CAPTURABLE if _is_device_scalar(lr) else registry.RMSPROP_UPDATE
    if _kernel_took(op, xp, param.dtype, param, grad, square_avg, grad_avg, momentum_buffer, lr=lr,
                    alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                    maximize=maximize):
        return param
    if type(param) is np.ndarray and param.size >= cpu_kernels.MIN_ELEMENTS and cpu_kernels.rmsprop_update(
            param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered,
            maximize):
        return param  # one compiled pass (cpu_kernels), the same values as the passes below
    ops = _InPlace.of(xp)
    g = _effective_grad(ops, param, grad, weight_decay, maximize, scratch)
    t = _work(xp, scratch, 0 if g is grad else 1, param)
    ops.mul(square_avg, alpha, out=square_avg)
    ops.add(square_avg, ops.mul(ops.mul(g, g, out=t), 1 - alpha, out=t), out=square_avg)
    if centered:
        ops.mul(grad_avg, alpha, out=grad_avg)
        ops.add(grad_avg, ops.mul(g, 1 - alpha, out=t), out=grad_avg)
        ops.sqrt(ops.sub(square_avg, ops.mul(grad_avg, grad_avg, out=t), out=t), out=t)
    else:
        ops.sqrt(square_avg, out=t)
    ops.div(g, ops.add(t, eps, out=t), out=t)  # t = g / avg
    if momentum > 0:
        ops.add(ops.mul(momentum_buffer, momentum, out=momentum_buffer), t, out=momentum_buffer)
        ops.mul(momentum_buffer, lr, out=t)
    else:
        ops.mul(t, lr, out=t)
    ops.sub(param, t, out=param)
    return param


def adam_update(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *, step: Any,
                lr: Any, beta1: float, beta2: float, eps: float, weight_decay: float = 0.0,
                decoupled_weight_decay: bool = False, amsgrad: bool = False, maximize: bool = False,
                scratch: Optional[list] = None) -> Any:
    """Adam / AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``), in place; ``step`` counts from 1.

    g = -grad if maximize else grad
    if decoupled_weight_decay: p = p * (1 - lr * weight_decay)       (AdamW)
    else:                      g = g + weight_decay * p              (Adam's L2 penalty)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bc1 = 1 - beta1**step;  bc2 = 1 - beta2**step
    if amsgrad: vmax = max(vmax, v);  denom = sqrt(vmax) / sqrt(bc2) + eps
    else:       denom = sqrt(v) / sqrt(bc2) + eps
    p = p - (lr / bc1) * m / denom

    Epsilon is added after the bias correction of ``sqrt(v)``, as in PyTorch. ``max_exp_avg_sq`` is needed when
    ``amsgrad``.
    Returns ``param`` (``w = adam_update(w, dw, ...)`` works), updated in place: an alias kept as ``w_old = w``
    sees the new values (see the module docstring). Raises ``ShapeError``/``DTypeError`` naming the array.
    """
    param, grad = _arguments("adam_update", param, grad)
    xp = _check("adam_update", param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, max_exp_avg_sq=max_exp_avg_sq)
    _check_step("adam_update", step)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("adam_update: amsgrad=True needs a max_exp_avg_sq array")
    on_device = _is_device_scalar(step, lr)
    kernel = _dispatch.lookup(registry.ADAM_UPDATE_CAPTURABLE if on_device else registry.ADAM_UPDATE, xp,
                              param.dtype)  # (looked up first: no keyword dict is built for the generic path)
    if kernel is not None and kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                                     beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                     decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                                     maximize=maximize) is not NotImplemented:
        return param
    scalars = _adam_scalars(xp, param.dtype, step, lr, beta1, beta2, weight_decay)
    if type(param) is np.ndarray and param.size >= cpu_kernels.MIN_ELEMENTS and not on_device \
            and cpu_kernels.adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scalars, beta1, beta2, eps,
                                        weight_decay, decoupled_weight_decay, amsgrad, maximize):
        return param  # one compiled pass (cpu_kernels), the same values as the passes below
    ops = _InPlace.of(xp)
    consts = (_numpy_constants(param.dtype, beta1, beta2, eps) if type(param) is np.ndarray
              else (beta1, 1 - beta1, beta2, 1 - beta2, eps))
    args = (scalars, consts, weight_decay, decoupled_weight_decay, amsgrad, maximize)
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    n_work = 1 if (weight_decay == 0 or decoupled_weight_decay) and not maximize else 2  # (see _effective_grad)
    if type(param) is np.ndarray and param.nbytes >= 2 * BLOCK_BYTES and _blocked_numpy(
            arrays, scratch, n_work, lambda a, w: _adam_passes(ops, *a, *args, w)):
        return param
    _adam_passes(ops, *arrays, *args, scratch)
    return param


# bytes per array of a block of a NumPy update: all of the update's passes run over one block of its arrays (param,
# grad, state and work arrays: ~1.3 MiB in all for Adam in float32, within a core's L2 cache) before the next, not
# each pass over the whole arrays (which streams them from memory ~10 times). Adam over 0.67 M / 4.3 M float32
# parameters: 1.3x / 1.6x faster on one core than whole-array passes (2026-12-06)
BLOCK_BYTES = 1 << 18
# elements per thread from which the blocks of a NumPy update split over cpu_threads (~1 ms of Adam's passes on one
# core), in a process whose loops run split
SPLIT_MIN_ELEMENTS = 1 << 18


def _blocked_numpy(arrays: tuple, scratch: Optional[list], n_work: int, passes: Any) -> bool:
    """Run ``passes(slices, work_slices)`` block by block over C-contiguous NumPy arrays of one shape and dtype
    (None entries stay None), ``BLOCK_BYTES`` per array, the blocks split over ``cpu_threads`` (at least
    ``SPLIT_MIN_ELEMENTS`` per thread); ``scratch`` (or fresh arrays) holds the ``n_work`` work arrays, each block
    working in its slices, in a process whose loops run split (``cpu_threads.splitting``), else on this thread.
    False (nothing run) where the arrays are not all such arrays."""
    param = arrays[0]
    if any(a is not None and (type(a) is not np.ndarray or a.shape != param.shape or a.dtype != param.dtype
                              or not a.flags.c_contiguous) for a in arrays):
        return False
    flat = [None if a is None else a.reshape(-1) for a in arrays]
    work = [_work(_NUMPY_XP, scratch, i, param).reshape(-1) for i in range(n_work)]
    size, block = param.size, max(1, BLOCK_BYTES // param.itemsize)

    def blocks(b0: int, b1: int) -> None:
        for lo in range(b0 * block, min(b1 * block, size), block):
            hi = min(lo + block, size)
            passes([None if a is None else a[lo:hi] for a in flat], [w[lo:hi] for w in work])

    n_blocks = -(-size // block)
    if cpu_threads.splitting():  # (else OpenBLAS's idle threads may hold the other cores: see cpu_threads.dot)
        cpu_threads.parallel_for(n_blocks, blocks, max(1, SPLIT_MIN_ELEMENTS // block))
    else:
        blocks(0, n_blocks)
    return True


def _adam_passes(ops: _InPlace, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any,
                 scalars: tuple, consts: tuple, weight_decay: float, decoupled_weight_decay: bool, amsgrad: bool,
                 maximize: bool, scratch: Optional[list]) -> None:
    """``adam_update``'s passes over its arrays (or slices of them: the same math element by element)."""
    xp = ops.xp
    step_size, bc2_sqrt, decay = scalars
    if decoupled_weight_decay and weight_decay != 0:
        ops.mul(param, decay, out=param)
    g = _effective_grad(ops, param, grad, 0.0 if decoupled_weight_decay else weight_decay, maximize, scratch)
    t = _work(xp, scratch, 0 if g is grad else 1, param)
    b1, c1, b2, c2, e = consts
    ops.mul(exp_avg, b1, out=exp_avg)
    ops.add(exp_avg, ops.mul(g, c1, out=t), out=exp_avg)
    ops.mul(exp_avg_sq, b2, out=exp_avg_sq)
    ops.add(exp_avg_sq, ops.mul(ops.mul(g, g, out=t), c2, out=t), out=exp_avg_sq)
    v = ops.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq) if amsgrad else exp_avg_sq
    ops.div(ops.sqrt(v, out=t), bc2_sqrt, out=t)
    ops.div(exp_avg, ops.add(t, e, out=t), out=t)  # t = m / denom
    ops.sub(param, ops.mul(t, step_size, out=t), out=param)


_CONSTANTS: dict[tuple, tuple] = {}


def _numpy_constants(dtype: Any, beta1: float, beta2: float, eps: float) -> tuple:
    """``(beta1, 1 - beta1, beta2, 1 - beta2, eps)`` as 0-d NumPy arrays of ``dtype``, made once per value: the
    values and results that the Python floats give (NumPy converts a Python float operand to the array's dtype),
    without that conversion in each ufunc call (~2,400 instructions each; never written: ufunc inputs only)."""
    key = (dtype, beta1, beta2, eps)
    try:
        c = _CONSTANTS.get(key)
    except TypeError:  # (an unhashable value, e.g. an array: as given)
        return beta1, 1 - beta1, beta2, 1 - beta2, eps
    if c is None:
        if len(_CONSTANTS) >= _MAX_SIGNATURES:
            _CONSTANTS.clear()
        c = _CONSTANTS[key] = tuple(np.array(v, dtype=dtype) for v in (beta1, 1 - beta1, beta2, 1 - beta2, eps))
    return c


def _adam_scalars(xp: Any, dtype: Any, step: Any, lr: Any, beta1: float, beta2: float,
                  weight_decay: float) -> tuple[Any, Any, Any]:
    """``(lr / (1 - beta1**step), sqrt(1 - beta2**step), 1 - lr * weight_decay)``, computed in float64: Python
    floats for a Python ``step``/``lr``; for 0-d arrays (capturable) 0-d arrays of ``dtype`` computed on the device
    in float64 and rounded once, as the Python path rounds its floats (``1 - 0.999**t`` in float32 would lose ~5
    digits to cancellation). The capturable CUDA kernel computes them the same way."""
    if not _is_device_scalar(step, lr):
        return lr / (1 - beta1**step), math.sqrt(1 - beta2**step), 1 - lr * weight_decay
    f64 = xp.float64
    s = xp.astype(step, f64) if not isinstance(step, (int, float)) else float(step)
    r = xp.astype(lr, f64) if not isinstance(lr, (int, float)) else float(lr)
    like = step if not isinstance(step, (int, float)) else lr
    one = xp.ones((), dtype=f64, device=_device(like))
    step_size = r / (one - beta1**s)
    bc2_sqrt = xp.sqrt(one - beta2**s)
    decay = one - r * weight_decay
    return tuple(xp.astype(v, dtype) for v in (step_size, bc2_sqrt, decay))  # type: ignore[return-value]


def _adagrad_clr(xp: Any, dtype: Any, step: Any, lr: Any, lr_decay: float) -> Any:
    """``lr / (1 + (step - 1) * lr_decay)`` in float64 (a Python float, or for 0-d arrays a 0-d array of ``dtype``
    rounded once, as in ``_adam_scalars``)."""
    if not _is_device_scalar(step, lr):
        return lr / (1 + (step - 1) * lr_decay)
    f64 = xp.float64
    s = xp.astype(step, f64) if not isinstance(step, (int, float)) else float(step)
    r = xp.astype(lr, f64) if not isinstance(lr, (int, float)) else float(lr)
    like = step if not isinstance(step, (int, float)) else lr
    one = xp.ones((), dtype=f64, device=_device(like))
    return xp.astype(r / (one + (s - 1.0) * lr_decay), dtype)


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _check_step(where: str, step: Any) -> None:
    """``step``: an int >= 1, or (capturable optimizers) a 0-d floating array holding it, never read here."""
    if isinstance(step, int) and not isinstance(step, bool):
        if step < 1:
            raise ValueError(f"{where}: step must be an int >= 1 (the number of this update), got {step!r}")
        return
    if getattr(step, "ndim", None) == 0 and hasattr(step, "dtype") and not isinstance(step, (bool, float)):
        return
    raise ValueError(f"{where}: step must be an int >= 1 or a 0-d device array holding it, got {step!r}")


def _is_device_scalar(*values: Any) -> bool:
    """Whether any of ``values`` is a 0-d array (a capturable optimizer's step count or learning rate)."""
    for v in values:  # (a loop, not any() over a generator: this runs once per update)
        if not isinstance(v, (int, float)):
            return True
    return False
