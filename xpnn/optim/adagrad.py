"""Adagrad (``torch.optim.Adagrad``)."""
from __future__ import annotations

from typing import Any

from ..functional.updates import adagrad_update
from ._groups import check_non_negative
from .optimizer import Optimizer, ParamsLike


class Adagrad(Optimizer):
    r"""Adagrad: per-coordinate learning rates from the sum of squared gradients (PyTorch's formula and defaults).

    For each step t (from 1), with gradient g_t of parameters p and s_0 = initial_accumulator_value:

        g_t = -g_t if maximize
        g_t = g_t + weight_decay * p_{t-1}                      (if weight_decay != 0)
        clr = lr / (1 + (t - 1) * lr_decay)
        s_t = s_{t-1} + g_t * g_t
        p_t = p_{t-1} - clr * g_t / (sqrt(s_t) + eps)

    State per parameter: ``sum`` (s_t) and ``step``.
    """

    state_names = ("sum",)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_non_negative("Adagrad", "learning rate", "lr", group["lr"])
        check_non_negative("Adagrad", "lr_decay value", "lr_decay", group["lr_decay"])
        check_non_negative("Adagrad", "weight_decay value", "weight_decay", group["weight_decay"])
        check_non_negative("Adagrad", "initial_accumulator_value", "initial_accumulator_value",
                           group["initial_accumulator_value"])
        check_non_negative("Adagrad", "epsilon value", "eps", group["eps"])

    def _state(self, group: dict[str, Any]) -> dict[str, float]:
        return {"sum": group["initial_accumulator_value"]}

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], step: Any, lr: Any,
                scratch: list, new: tuple[str, ...]) -> None:
        adagrad_update(param, grad, state["sum"], step=step, lr=lr, lr_decay=group["lr_decay"],
                       weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                       scratch=scratch)
