"""Launch code of the capturable kernels (``kernels/capturable.cu``): Adam, SGD, Adagrad and RMSprop reading their
step count and learning rate from 0-d device arrays, and the loss-scaling unscale + inf/NaN check. Same conventions as ``launch.py``: each
function has the signature of the function it overrides (``xpnn.functional.updates.*_update`` with array
``step``/``lr``; ``xpnn.amp.unscale_and_check_``), preceded by the loader and the namespace, and returns
``NotImplemented`` for what it leaves to the reference code.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import dtype_name
from . import registry
from .launch import FLAT_BLOCK, _scalar, flat_grid
from .loader import KernelLoader


def _device_scalar(x: Any, dtype: str) -> bool:
    """A 0-d, C-contiguous device array of ``dtype`` (what the kernel dereferences)."""
    return getattr(x, "ndim", None) == 0 and not isinstance(x, (int, float)) and dtype_name(x.dtype) == dtype


def adam_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
                           max_exp_avg_sq: Any = None, *, step: Any, lr: Any, beta1: float, beta2: float, eps: float,
                           weight_decay: float = 0.0, decoupled_weight_decay: bool = False, amsgrad: bool = False,
                           maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not (_device_scalar(step, t) and _device_scalar(lr, t)):
        return NotImplemented  # e.g. a Python lr with a device step: the reference handles any mix
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    if not all(a.flags.c_contiguous for a in arrays if a is not None):
        return NotImplemented  # an in-place update through a copy would be lost
    n = int(math.prod(param.shape))
    if n == 0:
        return None
    args = tuple(param if a is None else a for a in arrays) + (np.int64(n), step, lr) + tuple(
        _scalar(t, v) for v in (beta1, 1 - beta1, beta2, 1 - beta2, eps, weight_decay)) + tuple(
        np.float64(v) for v in (beta1, beta2, weight_decay)) + tuple(
        np.int32(f) for f in (decoupled_weight_decay, amsgrad, maximize))
    loader.raw(registry.RAW_BY_NAME["adam_update_capturable"], t).launch(flat_grid(n), FLAT_BLOCK, args)
    return None


def _flat(op: str, param: Any, arrays: tuple[Any, ...], middle: tuple[Any, ...], scalars: tuple[Any, ...],
          loader: KernelLoader) -> Any:
    """Launch ``op`` over ``arrays`` (param first; None -> placeholder never touched), then ``n``, ``middle``
    (device scalars) and ``scalars``."""
    if not all(a.flags.c_contiguous for a in arrays if a is not None):
        return NotImplemented  # an in-place update through a copy would be lost
    n = int(math.prod(param.shape))
    if n == 0:
        return None
    args = tuple(param if a is None else a for a in arrays) + (np.int64(n),) + middle + scalars
    loader.raw(registry.RAW_BY_NAME[op], dtype_name(param.dtype)).launch(flat_grid(n), FLAT_BLOCK, args)
    return None


def sgd_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, momentum_buffer: Any = None, *,
                          lr: Any, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                          weight_decay: float = 0.0, first_step: bool = False, maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not _device_scalar(lr, t):
        return NotImplemented
    use_momentum = momentum != 0
    scalars = tuple(_scalar(t, v) for v in (momentum, 1 - dampening, weight_decay)) + tuple(
        np.int32(f) for f in (use_momentum, nesterov, first_step, maximize))
    return _flat("sgd_update_capturable", param, (param, grad, momentum_buffer if use_momentum else None), (lr,),
                 scalars, loader)


def adagrad_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, state_sum: Any, *, step: Any,
                              lr: Any, lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                              maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not (_device_scalar(step, t) and _device_scalar(lr, t)):
        return NotImplemented
    scalars = (np.float64(lr_decay), _scalar(t, weight_decay), _scalar(t, eps), np.int32(maximize))
    return _flat("adagrad_update_capturable", param, (param, grad, state_sum), (step, lr), scalars, loader)


def rmsprop_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, square_avg: Any,
                              grad_avg: Any = None, momentum_buffer: Any = None, *, lr: Any, alpha: float,
                              eps: float, weight_decay: float, momentum: float, centered: bool,
                              maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not _device_scalar(lr, t):
        return NotImplemented
    use_momentum = momentum > 0
    scalars = tuple(_scalar(t, v) for v in (alpha, 1 - alpha, eps, weight_decay, momentum)) + tuple(
        np.int32(f) for f in (centered, use_momentum, maximize))
    arrays = (param, grad, square_avg, grad_avg if centered else None, momentum_buffer if use_momentum else None)
    return _flat("rmsprop_update_capturable", param, arrays, (lr,), scalars, loader)


def amp_unscale_check(loader: KernelLoader, xp: Any, grad: Any, inv_scale: Any, found_inf: Any) -> Any:
    if not (_device_scalar(inv_scale, "float32") and _device_scalar(found_inf, "float32")):
        return NotImplemented
    if not grad.flags.c_contiguous:
        return NotImplemented
    n = int(math.prod(grad.shape))
    if n == 0:
        return None
    loader.raw(registry.RAW_BY_NAME["amp_unscale_check"], dtype_name(grad.dtype)).launch(
        flat_grid(n), FLAT_BLOCK, (grad, np.int64(n), inv_scale, found_inf))
    return None
