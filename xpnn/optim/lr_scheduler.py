"""Learning-rate schedules (``torch.optim.lr_scheduler`` names and arguments): they set ``group["lr"]`` of an
optimizer's parameter groups. Call ``scheduler.step()`` once per epoch, after ``optimizer.step()``.

Each uses the closed form of its schedule from the group's ``initial_lr`` (PyTorch's chainable forms give the same
values as long as nothing else changes the learning rate in between). ``ReduceLROnPlateau`` instead reacts to a
metric: ``scheduler.step(val_loss)``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Union

from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


class LRScheduler:
    """Base class: ``step()`` advances ``last_epoch`` and writes ``lr_at(base_lr, last_epoch)`` into every group.

    Creating a scheduler records each group's ``initial_lr`` (unless resuming with ``last_epoch >= 0``, where the
    groups must already hold it) and applies the epoch-0 rate, like PyTorch.
    """

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an xpnn.optim optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"{type(self).__name__}: param 'initial_lr' is not specified in param_groups[{i}] "
                               "when resuming an optimizer (last_epoch >= 0)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = []
        self.step()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base, self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (PyTorch's layout)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` and write its last learning rates back into the optimizer's groups.

        A scheduler rebuilt on resume has set the epoch-0 rate in its constructor; without the write-back the
        epoch after loading would run at that rate instead of the rate at save time (PyTorch keeps the saved rate:
        its chainable forms start from the group's current ``lr``).
        """
        where = f"{type(self).__name__}.load_state_dict"
        unknown = sorted(set(state_dict) - set(self.__dict__))
        if unknown:
            raise ValueError(f"{where}: unknown entries {unknown}")
        last = state_dict.get("_last_lr", self._last_lr)
        groups = self.optimizer.param_groups
        if last and len(last) != len(groups):
            raise ValueError(f"{where}: the state holds learning rates for {len(last)} parameter groups, "
                             f"the optimizer has {len(groups)}")
        self.__dict__.update(state_dict)
        for group, lr in zip(groups, last):
            group["lr"] = lr


class StepLR(LRScheduler):
    """``lr = initial_lr * gamma ** (epoch // step_size)``: decay by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        if not gamma >= 0:
            raise ValueError(f"StepLR: invalid gamma={gamma!r} (expected >= 0)")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """``lr = initial_lr * gamma ** epoch``."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        if not gamma >= 0:
            raise ValueError(f"ExponentialLR: invalid gamma={gamma!r} (expected >= 0)")
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma**epoch


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (SGDR without restarts;
    past ``T_max`` the cosine continues, rising again, as in PyTorch)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR: invalid eta_min={eta_min!r} (expected >= 0)")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class ReduceLROnPlateau(LRScheduler):
    """Multiply each group's ``lr`` by ``factor`` once the metric passed to ``step(metric)`` has not improved for
    more than ``patience`` epochs (``torch.optim.lr_scheduler.ReduceLROnPlateau``, same arguments and rules):

    - improvement (``mode="min"``): ``metric < best * (1 - threshold)`` (``threshold_mode="rel"``) or
      ``metric < best - threshold`` (``"abs"``); ``mode="max"`` mirrors it (``best * (1 + threshold)``,
      ``best + threshold``);
    - after a reduction, ``cooldown`` epochs pass with the bad-epoch count held at 0;
    - the new rate is ``max(lr * factor, min_lr)`` (``min_lr`` a number or one per group), applied only when it
      changes the rate by more than ``eps``.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: Union[float, Sequence[float]] = 0.0, eps: float = 1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: expected an xpnn.optim optimizer, got {type(optimizer).__name__}")
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor should be < 1.0, got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        groups = optimizer.param_groups
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"ReduceLROnPlateau: expected {len(groups)} min_lrs (one per parameter group), got "
                                 f"{len(min_lr)}")
            self.min_lrs = [float(v) for v in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * len(groups)
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in groups]

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (1.0 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics: Any = None) -> None:  # type: ignore[override]
        """Record one epoch's ``metrics`` (a number, 0-d array or Tensor: read on the host) and reduce the rates
        when it has plateaued."""
        if metrics is None:
            raise TypeError("ReduceLROnPlateau.step: pass the monitored metric, e.g. scheduler.step(val_loss)")
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, floor)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
