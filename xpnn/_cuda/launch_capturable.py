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
from . import registry, scratch
from .launch import FLAT_BLOCK, _flat_update, _scalar, flat_grid, pack_items
from .loader import KernelLoader


def _device_scalar(x: Any, dtype: str) -> bool:
    """A 0-d, C-contiguous device array of ``dtype`` (what the kernel dereferences)."""
    return getattr(x, "ndim", None) == 0 and not isinstance(x, (int, float)) and dtype_name(x.dtype) == dtype


SCALARS_ADAM, SCALARS_ADAGRAD = 0, 1  # XPNN_SCALARS_* in capturable.cu


def _step_scalars(loader: KernelLoader, xp: Any, param: Any, step: Any, lr: Any, kind: int, *, beta1: float = 0.0,
                  beta2: float = 0.0, weight_decay: float = 0.0, lr_decay: float = 0.0) -> Any:
    """Launch ``capturable_step_scalars`` (one thread) into a kept array of 3 entries of param's dtype and return
    it: the update launched next on the same stream reads it (no host read, and nothing allocated per step, so
    the pair can be captured in a CUDA graph)."""
    t = dtype_name(param.dtype)
    scalars = scratch.zeroed(xp, param, "capturable.scalars", 3, param.dtype)  # written before every read
    loader.raw(registry.CAPTURABLE_STEP_SCALARS, t).launch(1, 32, (
        step, lr, np.float64(beta1), np.float64(beta2), np.float64(weight_decay), np.float64(lr_decay),
        np.int32(kind), scalars))
    return scalars


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
    if int(math.prod(param.shape)) == 0:
        return None
    step_scalars = _step_scalars(loader, xp, param, step, lr, SCALARS_ADAM, beta1=beta1, beta2=beta2,
                                 weight_decay=weight_decay)
    scalars = (step_scalars,) + tuple(
        _scalar(t, v) for v in (beta1, 1 - beta1, beta2, 1 - beta2, eps, weight_decay)) + tuple(
        np.int32(f) for f in (decoupled_weight_decay, amsgrad, maximize))
    return _flat_update(registry.ADAM_UPDATE_CAPTURABLE, loader, arrays, scalars)


def sgd_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, momentum_buffer: Any = None, *,
                          lr: Any, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                          weight_decay: float = 0.0, first_step: bool = False, maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not _device_scalar(lr, t):
        return NotImplemented
    use_momentum = momentum != 0
    scalars = tuple(_scalar(t, v) for v in (momentum, 1 - dampening, weight_decay)) + tuple(
        np.int32(f) for f in (use_momentum, nesterov, first_step, maximize))
    return _flat_update(registry.SGD_UPDATE_CAPTURABLE, loader, (param, grad, momentum_buffer if use_momentum else None),
                        (lr,) + scalars)


def adagrad_update_capturable(loader: KernelLoader, xp: Any, param: Any, grad: Any, state_sum: Any, *, step: Any,
                              lr: Any, lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                              maximize: bool = False) -> Any:
    t = dtype_name(param.dtype)
    if not (_device_scalar(step, t) and _device_scalar(lr, t)):
        return NotImplemented
    if not all(a.flags.c_contiguous for a in (param, grad, state_sum)):
        return NotImplemented  # (checked before the scalars launch; _flat_update checks again)
    if int(math.prod(param.shape)) == 0:
        return None
    step_scalars = _step_scalars(loader, xp, param, step, lr, SCALARS_ADAGRAD, lr_decay=lr_decay)
    scalars = (_scalar(t, weight_decay), _scalar(t, eps), np.int32(maximize))
    return _flat_update(registry.ADAGRAD_UPDATE_CAPTURABLE, loader, (param, grad, state_sum), (step_scalars,) + scalars)


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
    return _flat_update(registry.RMSPROP_UPDATE_CAPTURABLE, loader, arrays, (lr,) + scalars)


def amp_unscale_check(loader: KernelLoader, xp: Any, grad: Any, inv_scale: Any, found_inf: Any) -> Any:
    if not (_device_scalar(inv_scale, "float32") and _device_scalar(found_inf, "float32")):
        return NotImplemented
    if not grad.flags.c_contiguous:
        return NotImplemented
    n = int(math.prod(grad.shape))
    if n == 0:
        return None
    kernel = loader.raw(registry.AMP_UNSCALE_CHECK, dtype_name(grad.dtype))
    kernel.launch(flat_grid(n, per_thread=pack_items(grad.dtype), sm_count=kernel.sm_count), FLAT_BLOCK,
                  (grad, np.int64(n), inv_scale, found_inf))
    return None
