"""Adam and AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``)."""
from __future__ import annotations

from typing import Any

from ..functional.mixed_precision import adam_update_mixed
from ..functional.updates import adam_update
from ._groups import check_non_negative, check_unit_interval
from .optimizer import Optimizer, ParamsLike


class Adam(Optimizer):
    r"""Adam with bias correction (Kingma & Ba), PyTorch's formula, epsilon placement and defaults.

    For each step t (from 1), with gradient g_t of parameters p (m_0 = v_0 = vmax_0 = 0):

        g_t = -g_t if maximize
        p_{t-1} = p_{t-1} * (1 - lr * weight_decay)             (decoupled_weight_decay, i.e. AdamW)
        g_t = g_t + weight_decay * p_{t-1}                      (otherwise: L2 penalty, if weight_decay != 0)
        m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t = beta2 * v_{t-1} + (1 - beta2) * g_t * g_t
        vmax_t = max(vmax_{t-1}, v_t); use vmax_t for v_t below (amsgrad)
        p_t = p_{t-1} - (lr / (1 - beta1**t)) * m_t / (sqrt(v_t) / sqrt(1 - beta2**t) + eps)

    Epsilon is added after the bias correction of sqrt(v_t) (PyTorch; the paper's "eps-hat" variant differs).
    State per parameter: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (vmax, amsgrad) and ``step``.
    float16 parameters take one fused call (``adam_update_mixed``) when the step count and lr are host numbers.
    """

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        name = self._name
        check_non_negative(name, "learning rate", "lr", group["lr"])
        check_non_negative(name, "epsilon value", "eps", group["eps"])
        check_non_negative(name, "weight_decay value", "weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(betas)
        check_unit_interval(name, "beta parameter at index 0", "beta1", betas[0])
        check_unit_interval(name, "beta parameter at index 1", "beta2", betas[1])

    def _state(self, group: dict[str, Any]) -> dict[str, float]:
        return _AMSGRAD if group["amsgrad"] else _MOMENTS

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], step: Any, lr: Any,
                scratch: list, new: tuple[str, ...]) -> None:
        beta1, beta2 = group["betas"]
        adam_update(param, grad, state["exp_avg"], state["exp_avg_sq"],
                    state["max_exp_avg_sq"] if group["amsgrad"] else None, step=step, lr=lr, beta1=beta1,
                    beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                    decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
                    maximize=group["maximize"], scratch=scratch)

    def _update_mixed(self, data: Any, master: Any, grad: Any, grad32: Any, state: dict[str, Any],
                      group: dict[str, Any], step: int, lr: float, scratch: list) -> None:
        beta1, beta2 = group["betas"]
        adam_update_mixed(data, master, grad, state["exp_avg"], state["exp_avg_sq"],
                          state["max_exp_avg_sq"] if group["amsgrad"] else None, step=step, lr=lr, beta1=beta1,
                          beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                          decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
                          maximize=group["maximize"], grad32=grad32, scratch=scratch)


_MOMENTS = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
_AMSGRAD = {**_MOMENTS, "max_exp_avg_sq": 0.0}


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter), ``torch.optim.AdamW``: the same update as
    :class:`Adam` except that weight decay shrinks the parameters directly,
    ``p_{t-1} = p_{t-1} * (1 - lr * weight_decay)``, instead of adding ``weight_decay * p`` to the gradient.
    Default ``weight_decay=1e-2``.
    """

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True)
