"""RMSprop (``torch.optim.RMSprop``)."""
from __future__ import annotations

from typing import Any

from ..functional.updates import rmsprop_update
from ._groups import check_non_negative, check_unit_interval
from .optimizer import Optimizer, ParamsLike


class RMSprop(Optimizer):
    r"""RMSprop: divide the gradient by a running root mean square of recent gradients (PyTorch's formula).

    For each step t, with gradient g_t of parameters p (v_0 = 0, a_0 = 0, b_0 = 0):

        g_t = -g_t if maximize
        g_t = g_t + weight_decay * p_{t-1}                      (if weight_decay != 0)
        v_t = alpha * v_{t-1} + (1 - alpha) * g_t * g_t
        if centered: a_t = alpha * a_{t-1} + (1 - alpha) * g_t;  d = sqrt(v_t - a_t * a_t) + eps
        else:        d = sqrt(v_t) + eps
        if momentum > 0: b_t = momentum * b_{t-1} + g_t / d;  p_t = p_{t-1} - lr * b_t
        else:            p_t = p_{t-1} - lr * g_t / d

    Epsilon is added outside the square root, as in PyTorch (TensorFlow adds it inside). State per parameter:
    ``square_avg`` (v), ``grad_avg`` (a, when centered), ``momentum_buffer`` (b, when momentum > 0).
    """

    state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params: ParamsLike, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_non_negative("RMSprop", "learning rate", "lr", group["lr"])
        check_non_negative("RMSprop", "epsilon value", "eps", group["eps"])
        check_non_negative("RMSprop", "momentum value", "momentum", group["momentum"])
        check_non_negative("RMSprop", "weight_decay value", "weight_decay", group["weight_decay"])
        check_unit_interval("RMSprop", "alpha value", "alpha", group["alpha"], closed=True)

    def _state(self, group: dict[str, Any]) -> dict[str, float]:
        return _STATES[bool(group["centered"]), group["momentum"] > 0]

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], step: Any, lr: Any,
                scratch: list, new: tuple[str, ...]) -> None:
        rmsprop_update(param, grad, state["square_avg"], state["grad_avg"] if group["centered"] else None,
                       state["momentum_buffer"] if group["momentum"] > 0 else None, lr=lr, alpha=group["alpha"],
                       eps=group["eps"], weight_decay=group["weight_decay"], momentum=group["momentum"],
                       centered=group["centered"], maximize=group["maximize"], scratch=scratch)


_STATES = {(centered, momentum): {"square_avg": 0.0, **({"grad_avg": 0.0} if centered else {}),
                                  **({"momentum_buffer": 0.0} if momentum else {})}
           for centered in (False, True) for momentum in (False, True)}
