"""Containers: ``Sequential`` (a chain of modules), ``Residual`` (``y = x + f(x)``), ``ModuleList`` (a list of
children for a ``forward`` written by hand) and ``Identity``; their backward is the tape's.

``Sequential`` and ``Residual`` repack all their children's parameters into one FlatBuffer at construction, so a
model built from them has one data and one grad array (optimizers then update it in one pass). A ``ModuleList``
only registers its children: the module that owns it packs them with its other parameters when it is built.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Iterator, Union

from ..errors import ShapeError
from .activation import ReLU
from .explicit import Module
from .pooling import MaxPool2d

__all__ = ["Sequential", "Residual", "ModuleList", "Identity"]


def _pool_commutes_with_relu(pool: MaxPool2d) -> bool:
    """Whether ``relu(max_pool(x))`` is ``max_pool(relu(x))`` exactly, gradients included, so ``Sequential`` runs a
    ``ReLU`` followed by this ``MaxPool2d`` as the pooling first and the ReLU on its (kh*kw times smaller) output.
    ReLU is non-decreasing, so a window's maximum after it is ReLU of its maximum; the same element wins (the first
    maximum: where the maximum is positive the ties are the same elements, a NaN stays a NaN in the same place)
    except in windows whose maximum is <= 0, where ReLU's gradient is 0 either way, so dx is 0 in the window in both
    orders (+0.0 or -0.0). It needs every window to hold an input element (padding, -inf, is not passed through the
    ReLU): true without dilation (padding is at most half the kernel) or without padding."""
    return pool.dilation == (1, 1) or pool.padding == (0, 0)


def _check_module(owner: str, name: str, m: Any) -> Module:
    if not isinstance(m, Module):
        raise TypeError(f"{owner}: child {name} must be an xpnn.nn.Module, got {type(m).__name__}")
    return m


class Sequential(Module):
    """Apply ``modules`` in order; backward runs them in reverse. Children are named ``"0"``, ``"1"``, ... (or by
    the keys of a single ``OrderedDict`` argument), so parameters are ``"0.weight"``, ``"0.bias"``, ...

    A ``ReLU`` directly followed by a ``MaxPool2d`` (both exactly those classes) runs as the pooling then the ReLU,
    which gives the same output and gradients with the ReLU on the pooled, smaller array
    (``_pool_commutes_with_relu`` says when)."""

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
        swap = None  # a ReLU whose MaxPool2d runs first (``_pool_commutes_with_relu``)
        for m in self._modules.values():
            if swap is not None:
                relu, swap = swap, None
                if type(m) is MaxPool2d and _pool_commutes_with_relu(m):
                    x = relu(m(x))
                    continue
                x = relu(x)
            if type(m) is ReLU:
                swap = m
                continue
            x = m(x)
        return x if swap is None else swap(x)

    def append(self, module: Module) -> "Sequential":
        """Add ``module`` at the end and repack all parameters into one buffer."""
        setattr(self, str(len(self._modules)), _check_module("Sequential", str(len(self._modules)), module))
        self._pack()
        return self

    def _index(self, idx: Any) -> int:
        n = len(self._modules)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"Sequential indices must be integers or slices, got {type(idx).__name__}")
        if not -n <= idx < n:
            raise IndexError(f"Sequential index {idx} out of range for {n} modules")
        return idx % n

    def __getitem__(self, idx: Union[int, slice]) -> Any:
        """``seq[i]``: that child; ``seq[a:b]``: a new ``Sequential`` of those children under their names, as
        ``torch.nn.Sequential`` (the same modules: their parameters stay where they are, nothing is repacked)."""
        if isinstance(idx, slice):
            part = object.__new__(Sequential)  # (not through __init__, which would repack the shared parameters)
            Module.__init__(part)
            for name, m in list(self._modules.items())[idx]:
                setattr(part, name, m)
            object.__setattr__(part, "training", self.training)
            return part
        return list(self._modules.values())[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        """Replace the child at ``idx`` (its name kept) and repack all parameters into one buffer."""
        name = list(self._modules)[self._index(idx)]
        setattr(self, name, _check_module("Sequential", name, module))
        self._pack()

    def __delitem__(self, idx: Union[int, slice]) -> None:
        """Remove the child at ``idx`` (or a slice of them); the rest are renumbered ``"0"``, ``"1"``, ... as in
        ``torch.nn.Sequential``, and their parameters repacked into one buffer."""
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[self._index(idx)]
        for name in list(self._modules):
            delattr(self, name)
        for i, m in enumerate(mods):
            setattr(self, str(i), m)
        self._pack()

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


class ModuleList(Module):
    """Children held in a list (``torch.nn.ModuleList``): registered as ``"0"``, ``"1"``, ... so their parameters
    are ``"0.weight"``, ... in ``named_parameters()`` and ``state_dict()``. Supports ``append``, ``extend``,
    ``insert``, indexing (an int; a slice gives a new ``ModuleList`` of the same modules), item assignment and
    deletion, ``len``, iteration and ``+=``. It has no ``forward``: call its children from the owner's ``forward``.
    """

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def _renumber(self, mods: list[Module]) -> None:
        for name in list(self._modules):
            delattr(self, name)
        for i, m in enumerate(mods):
            setattr(self, str(i), _check_module("ModuleList", str(i), m))

    def _index(self, idx: Any) -> int:
        n = len(self._modules)
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise TypeError(f"ModuleList indices must be integers or slices, got {type(idx).__name__}")
        if not -n <= idx < n:
            raise IndexError(f"ModuleList index {idx} out of range for {n} modules")
        return idx % n

    def append(self, module: Module) -> "ModuleList":
        """Add ``module`` at the end."""
        name = str(len(self._modules))
        setattr(self, name, _check_module("ModuleList", name, module))
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        """Append each of ``modules`` in order."""
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(f"ModuleList.extend: expected an iterable of modules, got {type(modules).__name__}")
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index`` (as ``list.insert``; the children are renumbered)."""
        mods = list(self._modules.values())
        mods.insert(index, module)
        self._renumber(mods)

    def __getitem__(self, idx: Union[int, slice]) -> Any:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return ModuleList(mods[idx])
        return mods[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        name = str(self._index(idx))
        setattr(self, name, _check_module("ModuleList", name, module))

    def __delitem__(self, idx: Union[int, slice]) -> None:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            del mods[idx]
        else:
            del mods[self._index(idx)]
        self._renumber(mods)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __iadd__(self, modules: Iterable[Module]) -> "ModuleList":
        return self.extend(modules)


class Identity(Module):
    """``y = x`` (``torch.nn.Identity``; any constructor arguments are accepted and ignored, as there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x
