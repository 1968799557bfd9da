"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay (``torch.optim.SGD``)."""
from __future__ import annotations

from typing import Any

from ..functional.updates import sgd_update
from ._groups import check_non_negative
from .optimizer import Optimizer, ParamsLike


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (PyTorch's formula and defaults).

    For each step t, with gradient g_t of parameters p:

        g_t = -g_t if maximize
        g_t = g_t + weight_decay * p_{t-1}                      (L2 penalty, if weight_decay != 0)
        if momentum != 0:
            b_t = g_t                                            (t = 1)
            b_t = momentum * b_{t-1} + (1 - dampening) * g_t     (t > 1)
            g_t = g_t + momentum * b_t  if nesterov  else  b_t
        p_t = p_{t-1} - lr * g_t

    Note the momentum form: the learning rate multiplies the buffer (PyTorch's convention, not Sutskever's).
    ``nesterov`` needs ``momentum > 0`` and ``dampening == 0``. State per parameter: ``momentum_buffer``.
    """

    state_names = ("momentum_buffer",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_non_negative("SGD", "learning rate", "lr", group["lr"])
        check_non_negative("SGD", "momentum value", "momentum", group["momentum"])
        check_non_negative("SGD", "dampening value", "dampening", group["dampening"])
        check_non_negative("SGD", "weight_decay value", "weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={group['momentum']!r}, dampening={group['dampening']!r})")

    def _state(self, group: dict[str, Any]) -> dict[str, float]:
        return _MOMENTUM if group["momentum"] != 0 else _NONE

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], step: Any, lr: Any,
                scratch: list, new: tuple[str, ...]) -> None:
        # a new buffer holds no history: the first step with momentum copies the gradient into it
        sgd_update(param, grad, state.get("momentum_buffer"), lr=lr, momentum=group["momentum"],
                   dampening=group["dampening"], nesterov=group["nesterov"], weight_decay=group["weight_decay"],
                   first_step="momentum_buffer" in new, maximize=group["maximize"], scratch=scratch)


_MOMENTUM, _NONE = {"momentum_buffer": 0.0}, {}
