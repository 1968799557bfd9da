"""Optimizer updates of float16 parameters kept with float32 master copies, in one call (one kernel on CUDA).

``adam_update_mixed`` is ``adam_update`` on the float32 master with the float16 gradient cast up, followed by the
float16 parameter rewritten from the master: on CuPy one kernel reads the float16 gradient and the float32 master
and moments, and writes the master, the moments and the float16 parameter (28 bytes per parameter, one launch)
instead of three passes (cast the gradient, update, cast back: 40 bytes, three launches).
"""
from __future__ import annotations

from typing import Any, Optional

from .. import _dispatch
from .._cuda import registry
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from .updates import adam_update, copy_into

__all__ = ["adam_update_mixed"]


def _check_mixed(where: str, param: Any, master: Any, grad: Any, states: dict[str, Any]) -> Any:
    xp = namespace_of(param, master, grad, *(v for v in states.values() if v is not None), where=where)
    for name, a, want in [("param", param, "float16"), ("grad", grad, "float16"), ("master", master, "float32")] + [
            (k, v, "float32") for k, v in states.items() if v is not None]:
        if dtype_name(a.dtype) != want:
            raise DTypeError(f"{where}: {name} must be {want}, got {dtype_name(a.dtype)}")
        if tuple(a.shape) != tuple(param.shape):
            raise ShapeError(f"{where}: {name} must have the shape of param {tuple(param.shape)}, got "
                             f"{tuple(a.shape)}")
    return xp


def adam_update_mixed(param: Any, master: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
                      max_exp_avg_sq: Any = None, *, step: int, lr: float, beta1: float, beta2: float, eps: float,
                      weight_decay: float = 0.0, decoupled_weight_decay: bool = False, amsgrad: bool = False,
                      maximize: bool = False, grad32: Any = None, scratch: Optional[list] = None) -> None:
    """Adam/AdamW (formula of ``xpnn.functional.updates.adam_update``) on the float32 ``master`` copy of float16
    ``param``, with float16 ``grad``; then ``param = float16(master)``. In place.

    ``master``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with ``amsgrad``) are float32; every array has
    ``param``'s shape. ``grad32``: an optional float32 work array for the cast gradient (reference path only).
    Raises ``DTypeError``/``ShapeError`` naming the array that does not fit.
    """
    states = dict(exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, max_exp_avg_sq=max_exp_avg_sq)
    xp = _check_mixed("adam_update_mixed", param, master, grad, states)
    if amsgrad and max_exp_avg_sq is None:
        raise ValueError("adam_update_mixed: amsgrad=True needs a max_exp_avg_sq array")
    kernel = _dispatch.lookup(registry.ADAM_UPDATE_MIXED, xp, param.dtype)
    if kernel is not None and kernel(param, master, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                                     beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                     decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                                     maximize=maximize) is not NotImplemented:
        return None
    g = grad32 if grad32 is not None else xp.empty_like(master)
    copy_into(g, grad)
    adam_update(master, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                maximize=maximize, scratch=scratch)
    copy_into(param, master)
    return None
