"""``Module``: the core of every layer, container and loss: ``forward`` over ``xpnn.functional`` ops.

A layer writes one ``forward`` with ``xpnn.functional`` ops. Called on ``xpnn.Tensor``s it records on the tape and
returns a Tensor (``loss.backward()`` then fills the parameters' ``.grad``). The explicit API of the first version
(``y = m(x_array)``, ``dx = m.backward(dy)``) is a layer on top that this module does not import:
``xpnn.nn.explicit.Module`` (``xpnn.nn.Module``, which the layers of ``xpnn.nn`` subclass) adds it.

Attribute assignment registers Parameters, child Modules and (via ``register_buffer``) state arrays such as
BatchNorm's running statistics, in insertion order, like ``torch.nn.Module``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, NamedTuple, Optional

import numpy as np

from ..backend import is_dtype_like as _is_dtype_like
from ..backend import Backend, BackendLike, dtype_name, get_backend, namespace_of, to_numpy
from ..errors import CheckpointError
from .parameter import FlatBuffer, Parameter, common_buffer, flat_buffer_of

__all__ = ["Module", "IncompatibleKeys", "layer_namespace"]

def layer_namespace(module: "Module", *arrays: Any) -> Any:
    """``namespace_of(*arrays)``; an error names ``module`` (its name is formatted only then: NumPy arrays take
    ``namespace_of``'s fast path, and this runs on every forward and backward)."""
    if all(type(a) is np.ndarray for a in arrays):
        return namespace_of(*arrays)
    return namespace_of(*arrays, where=module._where())


def not_an_array(module: "Module", x: Any) -> TypeError:
    """The error for a layer called with ``x`` that is no array or Tensor (a list, a number, None), whose
    ``.ndim``/``.shape`` the layer's checks could not read: ``layer_namespace``'s TypeError naming ``module`` (as
    ``torch.nn.Linear`` refuses a list) rather than an AttributeError from inside the layer. Layers call it from
    an ``except AttributeError`` around those reads (no cost on the hot path)."""
    try:
        layer_namespace(module, x)
    except TypeError as e:
        return e
    return TypeError(f"{module._where()}: expected an array or Tensor, got {type(x).__name__}")


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class _Packing(type):
    """The metaclass of ``Module``: building a module (its ``__init__`` returned) packs its parameters into one
    FlatBuffer (``Module._ensure_packed``), so ``parameters()`` and ``named_parameters()`` are plain reads."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        module = super().__call__(*args, **kwargs)
        if "_modules" in module.__dict__:  # (an __init__ that skipped super().__init__() registered nothing)
            module._ensure_packed()
        return module


class Module(metaclass=_Packing):
    """Base class: ``y = m(x)`` runs ``forward`` (on Tensors: recorded on the tape). ``xpnn.nn.Module`` is its
    subclass ``xpnn.nn.explicit.Module``, which adds the explicit API (calls on arrays, ``m.backward(dy)``).
    A module's parameters are packed into one FlatBuffer when it is built (when they share namespace and dtype);
    ``Sequential.append`` and ``to`` repack, a Parameter assigned later keeps its own arrays.

    Subclasses implement ``forward`` (and ``extra_repr``, which describes their configuration).
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration -------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params, modules, buffers = self._parameters, self._modules, self._buffers
        if isinstance(value, Parameter):
            modules.pop(name, None)
            buffers.pop(name, None)
            if value.name is None:
                value.name = name
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            modules[name] = value
        elif name in buffers:
            buffers[name] = value
        else:
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Any) -> None:
        """Register a non-trainable state array (saved in ``state_dict``, moved by ``to``)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        if param is None:
            object.__setattr__(self, name, None)
            return
        setattr(self, name, param)

    def add_module(self, name: str, module: Module) -> None:
        setattr(self, name, module)

    # --- traversal ----------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module and every descendant (each once), depth first."""
        seen: set[int] = set()
        out: list[tuple[str, Module]] = []

        def walk(pre: str, mod: Module) -> None:
            if id(mod) in seen:
                return
            seen.add(id(mod))
            out.append((pre, mod))
            for n, child in mod._modules.items():
                walk(f"{pre}.{n}" if pre else n, child)

        walk(prefix, self)
        return iter(out)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def apply(self, fn: Any) -> Module:
        """Call ``fn(m)`` on every child (recursively, each subtree first) and then on this module; returns
        ``self`` (``torch.nn.Module.apply``, e.g. ``model.apply(init_weights)``)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _named_parameters_raw(self) -> list[tuple[str, Parameter]]:
        seen: set[int] = set()
        out = []
        for pre, mod in self.named_modules():
            for n, p in mod._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((f"{pre}.{n}" if pre else n, p))
        return out

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs in registration order, e.g. ``("0.weight", p)``."""
        return iter(self._named_parameters_raw())

    def parameters(self) -> Iterator[Parameter]:
        """The module's Parameters in order (no side effect: building the module packed them, see ``Module``)."""
        return iter([p for _, p in self._named_parameters_raw()])

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        out = []
        for pre, mod in self.named_modules():
            for n, b in mod._buffers.items():
                if b is not None:
                    out.append((f"{pre}.{n}" if pre else n, b))
        return iter(out)

    def _ensure_packed(self) -> None:
        """Pack the parameters into one FlatBuffer unless they already live together in one (e.g. one layer of a
        larger model) or differ in namespace or dtype (``FlatBuffer.pack`` then leaves them alone)."""
        plist = [p for _, p in self._named_parameters_raw()]
        if plist and common_buffer(plist) is None:
            FlatBuffer.pack(plist)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """``copy.deepcopy`` / ``pickle``: the copied Parameters are arrays of their own (``Parameter.__getstate__``):
        pack them again."""
        self.__dict__.update(state)
        self._ensure_packed()

    def _pack(self) -> Optional[FlatBuffer]:
        """Repack all parameters of this module (and its children) into one fresh FlatBuffer."""
        return FlatBuffer.pack(p for _, p in self._named_parameters_raw())

    def flat_buffer(self) -> Optional[FlatBuffer]:
        """The FlatBuffer holding exactly this module's parameters, or ``None``."""
        return flat_buffer_of(self.parameters())

    # --- modes and gradients ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every parameter gradient (one fill when the parameters are exactly one FlatBuffer)."""
        plist = [p for _, p in self._named_parameters_raw()]
        buf = flat_buffer_of(plist)
        if buf is not None:
            buf.zero_grad()
            return
        for p in plist:
            if set_to_none and p._flat is None:
                p.grad = None
            else:
                p.zero_grad()

    # --- calling ------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def _where(self) -> str:
        """Name used in error messages, e.g. ``Linear(in_features=784, out_features=512)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def _ref_array(self) -> Any:
        """An array of the module's backend (its first parameter or buffer), for namespace checks of inputs."""
        for p in self._parameters.values():
            if p is not None:
                return p.data
        for b in self._buffers.values():
            if b is not None:
                return b
        return None

    # --- devices and dtypes -------------------------------------------------------------------------------
    def to(self, backend: BackendLike = None, *, dtype: Any = None) -> Module:
        """Move parameters, gradients and buffers to ``backend`` (a name, a ``Backend`` or a namespace module;
        ``None`` keeps each array's backend) and/or cast floating ones to ``dtype``; repack into one buffer.

        Returns ``self``. An optimizer built before ``to`` keeps working: it reads ``p.data``/``p.grad`` (or the new
        flat buffer) at every step and moves/casts its state to match on the next ``step()``.
        A dtype given in place of the backend (``m.to("float64")``, ``m.to(np.float64)``) is taken as ``dtype``.
        """
        if dtype is None and _is_dtype_like(backend):
            backend, dtype = None, backend
        be: Optional[Backend] = get_backend(backend) if backend is not None else None
        plist = [p for _, p in self._named_parameters_raw()]

        def move(a: Any, floating: bool = True) -> Any:
            target = be if be is not None else get_backend(namespace_of(a))
            return target.asarray(a, dtype=dtype if floating else None)

        for p in plist:
            had_grad = p.has_grad
            p._detach_from_flat()
            new_data = move(p.data)
            new_grad = move(p._grad) if had_grad else None
            p._grad = None
            p.data = new_data
            if new_grad is not None:
                p.grad = new_grad
        for mod in self.modules():
            for n, b in list(mod._buffers.items()):
                if b is None:
                    continue
                xp = namespace_of(b)
                new_b = move(b, floating=xp.isdtype(b.dtype, "real floating"))
                mod._buffers[n] = new_b
                object.__setattr__(mod, n, new_b)
            mod._moved()
        FlatBuffer.pack(plist)
        return self

    def _moved(self) -> None:
        """Hook: drop caches tied to the old arrays after ``to``."""

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, Any]:
        """Ordered ``name -> array`` copies of every parameter and buffer (BatchNorm running statistics)."""
        out: OrderedDict[str, Any] = OrderedDict()
        for pre, mod in self.named_modules():
            for n, p in mod._parameters.items():
                xp = namespace_of(p.data)
                out[f"{pre}.{n}" if pre else n] = xp.asarray(p.data, copy=True)
            for n, b in mod._buffers.items():
                if b is not None:
                    xp = namespace_of(b)
                    out[f"{pre}.{n}" if pre else n] = xp.asarray(b, copy=True)
        return out

    def load_state_dict(self, state: Any, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state`` (any namespace: NumPy checkpoints, converted PyTorch state dicts) into the
        existing parameters and buffers. Names and shapes must match (all names when ``strict``); raises
        ``CheckpointError`` otherwise. Returns the missing and unexpected keys.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if not hasattr(state, "keys"):
            raise CheckpointError(f"{where}: expected a mapping of name -> array, got {type(state).__name__}")
        targets: OrderedDict[str, tuple[Module, str, bool]] = OrderedDict()
        for pre, mod in self.named_modules():
            for n in mod._parameters:
                targets[f"{pre}.{n}" if pre else n] = (mod, n, True)
            for n, b in mod._buffers.items():
                if b is not None:
                    targets[f"{pre}.{n}" if pre else n] = (mod, n, False)
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state.keys() if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            nested = [k for k in state.keys() if hasattr(state[k], "keys")]
            if nested and not any(k in state for k in targets):  # e.g. xpnn.load of {"model": ..., "optimizer": ...}
                parts.append(f"this looks like a checkpoint holding {nested}: pass e.g. state[{nested[0]!r}]")
            raise CheckpointError(f"{where}: state does not match the model: {'; '.join(parts)}")
        # check every shape before copying anything, so a failed load leaves the model unchanged
        staged = []
        for key, (mod, n, is_param) in targets.items():
            if key not in state:
                continue
            current = mod._parameters[n].data if is_param else mod._buffers[n]
            value = np.asarray(to_numpy(state[key]))
            if tuple(value.shape) != tuple(current.shape):
                raise CheckpointError(
                    f"{where}: shape mismatch for {key!r}: the model has {tuple(current.shape)}, "
                    f"the state has {tuple(value.shape)}"
                )
            staged.append((mod, n, is_param, current, value))
        for mod, n, is_param, current, value in staged:
            xp = namespace_of(current)
            new = get_backend(xp).asarray(value, dtype=dtype_name(current.dtype))
            current[...] = new  # in place: flat views stay shared with their buffer
            if is_param:
                mod._parameters[n].mark_changed()
        return IncompatibleKeys(missing, unexpected)

    # --- printing -----------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if not self._modules:
            return lines[0] + ")"
        for n, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({n}): {child}")
        return "\n".join(lines) + "\n)"
