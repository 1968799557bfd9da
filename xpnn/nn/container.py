"""Containers: ``Sequential`` (a chain of modules) and ``Residual`` (``y = x + f(x)``); their backward is the tape's.

Both repack all their children's parameters into one FlatBuffer at construction, so a model built from them
has one data and one grad array (optimizers then update it in one pass).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Union

from ..errors import ShapeError
from .module import Module

__all__ = ["Sequential", "Residual"]


def _check_module(owner: str, name: str, m: Any) -> Module:
    if not isinstance(m, Module):
        raise TypeError(f"{owner}: child {name} must be an xpnn.nn.Module, got {type(m).__name__}")
    return m


class Sequential(Module):
    """Apply ``modules`` in order; backward runs them in reverse. Children are named ``"0"``, ``"1"``, ... (or by
    the keys of a single ``OrderedDict`` argument), so parameters are ``"0.weight"``, ``"0.bias"``, ..."""

    def __init__(self, *modules: Union[Module, "OrderedDict[str, Module]"]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            setattr(self, name, _check_module("Sequential", name, m))
        self._pack()

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def append(self, module: Module) -> "Sequential":
        """Add ``module`` at the end and repack all parameters into one buffer."""
        setattr(self, str(len(self._modules)), _check_module("Sequential", str(len(self._modules)), module))
        self._pack()
        return self

    def __getitem__(self, idx: int) -> Module:
        mods = list(self._modules.values())
        if not isinstance(idx, int):
            raise TypeError(f"Sequential indices must be integers, got {type(idx).__name__}")
        if not -len(mods) <= idx < len(mods):
            raise IndexError(f"Sequential index {idx} out of range for {len(mods)} modules")
        return mods[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))


class Residual(Module):
    """``y = x + module(x)`` (the module must keep the shape); backward ``dx = dy + module.backward(dy)``."""

    def __init__(self, module: Module) -> None:
        super().__init__()
        self.module = _check_module("Residual", "module", module)
        self._pack()

    def forward(self, x: Any) -> Any:
        y = self.module(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ShapeError(f"Residual: the wrapped {type(self.module).__name__} must keep the input shape "
                             f"{tuple(x.shape)}, but returned {tuple(y.shape)}")
        return x + y
