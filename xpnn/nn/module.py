"""``Module``: the base of every layer, container and loss.

A layer writes one ``forward`` with ``xpnn.functional`` ops. Called on ``xpnn.Tensor``s it records on the tape and
returns a Tensor (``loss.backward()`` then fills the parameters' ``.grad``). Called on plain arrays (the explicit
API) it runs the same forward on the tape, returns an array and keeps that call, so that ``m.backward(dy)`` can add
the parameter gradients and return the input gradient: the explicit API is sugar over the recorded call. (A layer
that is one op, ``nn.Linear``, runs that op and its backward directly on plain NumPy arrays, without the tape:
``Module._array_call``; the values are the same.)

Attribute assignment registers Parameters, child Modules and (via ``register_buffer``) state arrays such as
BatchNorm's running statistics, in insertion order, like ``torch.nn.Module``.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Iterator, NamedTuple, Optional

import numpy as np

from ..autograd.engine import run_backward
from ..autograd.grad_mode import is_grad_enabled
from ..autograd.op import Context, Op
from ..autograd.tensor import Tensor
from ..debug import check_finite, get_debug
from ..backend import is_dtype_like as _is_dtype_like
from ..backend import Backend, BackendLike, dtype_name, get_backend, namespace_of, to_numpy
from ..errors import CheckpointError, DTypeError, ShapeError
from .parameter import FlatBuffer, Parameter, common_buffer, flat_buffer_of

__all__ = ["Module", "IncompatibleKeys", "call_backward", "layer_namespace"]

def layer_namespace(module: "Module", *arrays: Any) -> Any:
    """``namespace_of(*arrays)``; an error names ``module`` (its name is formatted only then: NumPy arrays take
    ``namespace_of``'s fast path, and this runs on every forward and backward)."""
    if all(type(a) is np.ndarray for a in arrays):
        return namespace_of(*arrays)
    return namespace_of(*arrays, where=module._where())


_TAKES_FLAG: dict[type, bool] = {}


def call_backward(module: "Module", dy: Any, need_input_grad: bool) -> Any:
    """``module.backward(dy, need_input_grad=...)``: the backward contract lets the first layer of a model skip the
    input gradient nobody uses. (A user module written for the first version whose ``backward`` takes no such
    argument is called with ``dy`` alone.)"""
    if need_input_grad:
        return module.backward(dy)
    cls = type(module)
    if not cls._explicit_backward:
        return module.backward(dy, need_input_grad=False)
    takes = _TAKES_FLAG.get(cls)
    if takes is None:
        takes = _TAKES_FLAG[cls] = "need_input_grad" in inspect.signature(cls.backward).parameters
    return module.backward(dy, need_input_grad=False) if takes else module.backward(dy)


class _InputTensor(Tensor):
    """The Tensor wrapping an array passed to a module (explicit API): its gradient is the returned ``dx``, so the
    first contribution is kept as is instead of copied."""

    __slots__ = ()

    def _accumulate_grad(self, g: Any) -> None:
        self._grad = g if self._grad is None else self._grad + g


def _is_float_array(a: Any) -> bool:
    if type(a) is np.ndarray:
        return a.dtype.kind == "f"
    if not (hasattr(a, "shape") and hasattr(a, "dtype")) or isinstance(a, Tensor):
        return False
    try:
        return namespace_of(a).isdtype(a.dtype, "real floating")
    except Exception:
        return False


class _ExplicitModuleCall(Op):
    """A module written with its own ``backward`` (the first version's protocol), as one node of the tape."""

    name = "module"

    @staticmethod
    def forward(ctx: Context, x: Any, *rest: Any, module: "Module", kwargs: dict) -> Any:
        ctx.module = module
        ctx.call = _count_forward(module)
        return module.forward(x, *rest, **kwargs)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> Any:
        need = ctx.needs_input_grad
        calls = ctx.module.__dict__.get("_xpnn_forwards")
        if calls != ctx.call:  # its backward would read the values a later forward left on the module
            raise RuntimeError(
                f"{ctx.module._where()}: this module has a hand-written backward, which reads what its last forward "
                f"kept on the module, but it ran forward {calls - ctx.call} more time(s) after the call being "
                "differentiated (used twice in one graph, or called again, e.g. under no_grad, before backward): "
                "its gradient would be wrong. Use one instance per call, or drop its backward and write forward "
                "with xpnn.functional ops (the tape then keeps each call's values)")
        dx = call_backward(ctx.module, dy, need[0])
        return (dx,) + (None,) * (len(need) - 1)

    @staticmethod
    def onnx(g: Any, x: Any, *rest: Any, module: "Module", kwargs: dict) -> Any:
        raise NotImplementedError(
            f"xpnn.onnx.export: {module._where()} has a hand-written backward, so its forward is array code that "
            "the recorded graph cannot see into (op 'module'); write its forward with xpnn.functional ops (and drop "
            "its backward) to export it")


def _count_forward(module: "Module") -> int:
    """Count a forward of a module with a hand-written backward (which keeps its last call's values on itself)."""
    n = module.__dict__.get("_xpnn_forwards", 0) + 1
    module.__dict__["_xpnn_forwards"] = n
    return n


_USED = object()  # ``_last_call`` after its backward: a second backward is an error that says so


class _ArrayCall:
    """One call kept by ``Module._array_call``: the op, its context, its output array and the parameters (or
    ``None``) passed after the input."""

    __slots__ = ("op", "ctx", "out", "params")

    def __init__(self, op: type[Op], ctx: Context, out: Any, params: tuple[Optional[Parameter], ...]) -> None:
        self.op, self.ctx, self.out, self.params = op, ctx, out, params

    def backward(self, dy: Any, need_input_grad: bool) -> Any:
        """Add the parameters' gradients into their ``.grad`` and return the input's (``None`` when not needed)."""
        ctx = self.ctx
        if not need_input_grad:
            ctx.needs_input_grad = (False,) + ctx.needs_input_grad[1:]
        grads = self.op.backward(ctx, dy)
        for p, g in zip(self.params, grads[1:]):
            if p is not None and g is not None:
                p._accumulate_grad(g)
        return grads[0] if need_input_grad else None


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class: ``y = m(x)`` runs ``forward``; ``dx = m.backward(dy)`` accumulates parameter gradients.

    Subclasses implement ``forward`` and ``backward``; ``extra_repr`` describes their configuration.
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
        named = self._named_parameters_raw()
        self._ensure_packed([p for _, p in named])
        return iter(named)

    def parameters(self) -> Iterator[Parameter]:
        """The module's Parameters in order. If they are not yet in one FlatBuffer (e.g. a user-defined module
        made of several layers) and share a namespace and dtype, they are packed into one first; parameters that
        already live together in one buffer (e.g. one layer of a larger model) are left where they are.
        """
        named = self._named_parameters_raw()
        plist = [p for _, p in named]
        self._ensure_packed(plist)
        return iter(plist)

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        out = []
        for pre, mod in self.named_modules():
            for n, b in mod._buffers.items():
                if b is not None:
                    out.append((f"{pre}.{n}" if pre else n, b))
        return iter(out)

    @staticmethod
    def _ensure_packed(plist: list[Parameter]) -> None:
        if plist and common_buffer(plist) is None:
            FlatBuffer.pack(plist)

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
    #: whether the class defines its own ``backward`` (the first version's explicit protocol) instead of
    #: relying on the tape; set for each subclass
    _explicit_backward = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("backward")
        if own is not None:
            cls._explicit_backward = not getattr(own, "_xpnn_tape", False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tensors = False
        for a in args:
            if isinstance(a, Tensor):
                tensors = True
                break
        if self._explicit_backward:
            if tensors:
                return _ExplicitModuleCall.apply(*args, module=self, kwargs=kwargs)
            _count_forward(self)
            return self.forward(*args, **kwargs)
        if tensors:
            return self.forward(*args, **kwargs)
        return self._explicit_call(args, kwargs)

    def _explicit_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Arrays in: run ``forward`` on the tape (the first floating array argument is the input whose gradient
        ``backward`` returns), keep the call for ``backward`` (unless grad mode is off) and return arrays."""
        record = is_grad_enabled()
        wrapped = list(args)
        first: Optional[Tensor] = None
        for i, a in enumerate(args):
            if _is_float_array(a):
                first = _InputTensor(a)
                first._requires_grad = record
                wrapped[i] = first
                break
        out = self.forward(*wrapped, **kwargs)
        if record:
            object.__setattr__(self, "_last_call", (first, out) if isinstance(out, Tensor) else None)
        if isinstance(out, Tensor):
            return out._data
        if isinstance(out, tuple):
            return tuple(o._data if isinstance(o, Tensor) else o for o in out)
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        """Back-propagate ``dy`` (d loss / d output, the output's shape and dtype) through the last call on arrays:
        add the parameters' gradients into ``.grad`` and return the gradient of the input (``None`` when
        ``need_input_grad`` is false). Each forward allows one backward; a forward under ``xpnn.no_grad()`` keeps
        nothing, so evaluating between a forward and its backward is safe."""
        call = self.__dict__.get("_last_call")
        if call is None or call is _USED:
            raise RuntimeError(
                f"{self._where()}: backward() called twice for one forward (a backward already used it: as a "
                "backward() called before forward(), this one has nothing to differentiate); run a forward on "
                "arrays before each backward" if call is _USED else
                f"{self._where()}: backward() called before forward(): each backward needs its own forward on "
                "arrays (this one has none; a forward under xpnn.no_grad() keeps nothing)")
        object.__setattr__(self, "_last_call", _USED)
        if type(call) is _ArrayCall:
            x, out, out_data = None, None, call.out
        else:
            x, out = call
            out_data = out.data
        if isinstance(dy, Tensor):
            dy = dy.data
        if not hasattr(dy, "shape") or tuple(dy.shape) != tuple(out_data.shape):
            got = tuple(dy.shape) if hasattr(dy, "shape") else type(dy).__name__
            raise ShapeError(f"{self._where()}: backward expected dy of shape {tuple(out_data.shape)}, got {got}")
        if dy.dtype != out_data.dtype:
            raise DTypeError(f"{self._where()}: backward expected dy of dtype {dtype_name(out_data.dtype)}, got "
                             f"{dtype_name(dy.dtype)}")
        if type(dy) is not type(out_data):
            namespace_of(out_data, dy, where=self._where())
        if get_debug():
            check_finite(namespace_of(dy), dy, self._where(), "dy")
        if out is None:
            return call.backward(dy, need_input_grad)
        if x is not None and not need_input_grad:
            x._requires_grad = False
        if out is x:  # the forward returned its input (e.g. Dropout in eval mode)
            return dy if need_input_grad else None
        if out._node is not None:
            run_backward([out], [dy])
        if x is None or not need_input_grad:
            return None
        if x._grad is None:  # the output does not depend on the input
            return namespace_of(x.data).zeros_like(x.data)
        return x._grad

    backward._xpnn_tape = True  # type: ignore[attr-defined]

    def _array_call(self, op: type[Op], x: Any, *params: Optional[Parameter]) -> Any:
        """The explicit API's fast path for a layer that is one op on plain NumPy arrays (``nn.Linear``; the caller
        has checked ``numpy_direct(op.name)``): run ``op`` on ``x`` and the parameters' arrays with a context of its
        own and keep that call for ``backward``, which then runs ``op.backward`` on arrays, with no tape (the same
        math, a fraction of the host time). Returns ``NotImplemented`` where the tape is needed (a parameter with
        hooks)."""
        arrays, needs = [x], [True]
        for p in params:
            if p is None:
                arrays.append(None)
                needs.append(False)
                continue
            if p._hooks:
                return NotImplemented
            arrays.append(p._data)
            needs.append(p._requires_grad)
        ctx = Context(tuple(needs), (x,))
        out = op.forward(ctx, *arrays) if op.check is None else op._run_forward(ctx, tuple(arrays), {})
        if is_grad_enabled():
            object.__setattr__(self, "_last_call", _ArrayCall(op, ctx, out, params))
        return out

    def _where(self) -> str:
        """Name used in error messages, e.g. ``Linear(in_features=784, out_features=512)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def _no_forward(self) -> RuntimeError:
        return RuntimeError(f"{self._where()}: backward() called before forward()")

    def _ref_array(self) -> Any:
        """An array of the module's backend (its first parameter or buffer), for namespace checks of inputs."""
        for p in self._parameters.values():
            if p is not None:
                return p.data
        for b in self._buffers.values():
            if b is not None:
                return b
        return None

    def _drop_call(self) -> None:
        object.__setattr__(self, "_last_call", None)

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
            mod._drop_call()
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
