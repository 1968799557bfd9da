"""The explicit API: ``out = m(x_array)``; ``dx = m.backward(dy)`` (the first version's protocol), a layer on top of
``Module.forward`` on Tensors: ``Module`` here (``xpnn.nn.Module``, the base of every layer, container and loss of
``xpnn.nn``) is the core ``xpnn.nn.module.Module`` plus this protocol. Its ``__call__`` comes to ``call`` for a call
with no Tensor argument and for a module with a hand-written ``backward``, its ``backward`` to ``backward``; the core
(``xpnn.nn.module``, autograd, functional) never imports this module.

- A call on arrays runs ``forward`` on the tape with the first floating array wrapped (``_InputTensor``), keeps
  ``(input, output)`` on the module (``_last_call``) and returns arrays; ``backward(dy)`` runs the tape from that
  output and returns the input's gradient: the explicit API is sugar over the recorded call.
- A layer that is one op (``nn.Linear``) defines ``_one_op_call(x)``, which runs that op and its backward directly on
  plain NumPy arrays, without the tape (``one_op_call``, ``_OneOpCall``): the same values, a fraction of the host
  time.
- A module whose class writes its own ``backward`` runs its forward as it is on arrays, and joins a Tensor graph as
  one node (``_ModuleOp``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import numpy as np

from ..autograd.engine import run_backward
from ..autograd.grad_mode import _state as _grad_state
from ..autograd.op import Context, Op, leaf_grad_target
from .._tensor import Tensor
from ..backend import dtype_name, namespace_of
from ..debug import _debug, check_finite, get_debug
from ..errors import DTypeError, ShapeError
from . import module as _core
from .parameter import Parameter

__all__ = ["Module", "call", "backward", "call_backward", "call_one_op", "one_op_call", "one_op_const_call",
           "ones_like_output"]

_USED = object()  # ``_last_call`` after its backward: a second backward is an error that says so
_TAKES_FLAG: dict[type, bool] = {}


def call_backward(module: Module, dy: Any, need_input_grad: bool) -> Any:
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


# --- a module with a hand-written backward ----------------------------------------------------------------------
def _count_forward(module: Module) -> int:
    """Count a forward of a module with a hand-written backward (which keeps its last call's values on itself)."""
    n = module.__dict__.get("_xpnn_forwards", 0) + 1
    module.__dict__["_xpnn_forwards"] = n
    return n


class _ModuleOp(Op):
    """A module written with its own ``backward`` (the first version's protocol), as one node of the tape."""

    name = "module"

    @staticmethod
    def forward(ctx: Context, x: Any, *rest: Any, module: Module, kwargs: dict) -> Any:
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
    def onnx(g: Any, x: Any, *rest: Any, module: Module, kwargs: dict) -> Any:
        raise NotImplementedError(
            f"xpnn.onnx.export: {module._where()} has a hand-written backward, so its forward is array code that "
            "the recorded graph cannot see into (op 'module'); write its forward with xpnn.functional ops (and drop "
            "its backward) to export it")


# --- calls on arrays ----------------------------------------------------------------------------------------------
class _InputTensor(Tensor):
    """The Tensor wrapping an array passed to a module (explicit API): its gradient is the returned ``dx``, so the
    first contribution is kept as is instead of copied."""

    __slots__ = ()

    def _accumulate_grad(self, g: Any) -> None:
        self._grad = g if self._grad is None else self._grad + g


_new_input = _InputTensor.__new__


def _is_float_array(a: Any) -> bool:
    if type(a) is np.ndarray:
        return a.dtype.kind == "f"
    if not (hasattr(a, "shape") and hasattr(a, "dtype")) or isinstance(a, Tensor):
        return False
    try:
        return namespace_of(a).isdtype(a.dtype, "real floating")
    except Exception:
        return False


class _OneOpCall(Context):
    """One call kept by ``one_op_call``: the op's context (what its forward saved for the backward) that also keeps
    the op, its output array and the parameters (or ``None``) passed after the input (one object per call)."""

    __slots__ = ("op", "out", "params")

    def backward(self, dy: Any, need_input_grad: bool) -> Any:
        """Add the parameters' gradients into their ``.grad`` and return the input's (``None`` when not needed)."""
        if not need_input_grad:
            self.needs_input_grad = (False,) + self.needs_input_grad[1:]
        grads = self.op.backward(self, dy)
        for i, p in enumerate(self.params, 1):  # (not zip(params, grads[1:]): ~0.15 us more)
            if p is not None:
                g = grads[i]
                if g is not None:
                    p._accumulate_grad(g)
        return grads[0] if need_input_grad else None

    def leaf_grad(self, i: int) -> Any:
        """``Context.leaf_grad`` for this call: parameter ``i``'s gradient array (the input, 0, is an array), which
        ``backward`` would add the gradient into (``leaf_grad_target``'s rules)."""
        return None if i == 0 else leaf_grad_target((None,) + self.params, i)


def one_op_call(module: Module, op: type[Op], x: Any, *params: Optional[Parameter]) -> Any:
    """Run ``op`` on the NumPy array ``x`` and the parameters' arrays with a context of its own and keep that call
    for ``backward``, which then runs ``op.backward`` on arrays, with no tape (the same math, a fraction of the host
    time). Returns ``NotImplemented`` where the tape is needed (a parameter with hooks, or a Tensor that is not a
    leaf in its place)."""
    arrays, needs = [x], [True]
    for p in params:
        if p is None:
            arrays.append(None)
            needs.append(False)
        elif p._hooks or p._node is not None:  # (a Tensor computed from parameters, e.g. a tied weight's .T:
            return NotImplemented  # only the tape sends its gradient on to them)
        else:
            arrays.append(p._data)
            needs.append(p._requires_grad)
    call = _OneOpCall(tuple(needs), (x,))
    out = op.forward(call, *arrays) if op.check is None else op._run_forward(call, tuple(arrays), {})
    if _grad_state.enabled:  # (is_grad_enabled() without its call)
        call.op, call.out, call.params = op, out, params
        module.__dict__["_last_call"] = call  # (as object.__setattr__, without its method wrapper: ~0.2 us)
    return out


def one_op_const_call(module: Module, op: type[Op], x: Any, consts: tuple[Any, ...], params: dict[str, Any]) -> Any:
    """``one_op_call`` for an op whose inputs after ``x`` are constants (arrays, no gradient: a loss's targets) and
    that takes keyword ``params``: the op's forward (through ``Op._run_forward``, as on the tape) with a context of
    its own, kept for ``backward`` when grad mode is on; ``x``'s gradient is then computed by the forward where the
    op does so (cross-entropy), as on the tape."""
    record = _grad_state.enabled
    arrays = (x, *consts)
    call = _OneOpCall((record,) + (False,) * len(consts), arrays)
    out = op._run_forward(call, arrays, params)
    if record:
        call.op, call.out, call.params = op, out, (None,) * len(consts)
        module.__dict__["_last_call"] = call
    return out


#: class -> (``_one_op_call``, its number of arguments) for each class whose ``_one_op_call`` (its own or inherited)
#: belongs to its ``forward`` (``Module.__init_subclass__``): a subclass with a forward of its own (e.g.
#: ``DropConnect``) is not here and runs its forward; a subclass with a ``_one_op_call`` of its own has its own entry
_ONE_OP: dict[type, tuple[Callable[..., Any], int]] = {}


def call_one_op(module: Module, *args: Any, **kwargs: Any) -> Any:
    """``Module.__call__`` of a class that defines ``_one_op_call`` (and of its subclasses): one NumPy array goes
    straight to ``_one_op_call`` (``call``'s rules, without the generic path's checks: ~0.5 us), anything else, a
    subclass with a forward or a backward of its own, or ``NotImplemented``, to ``Module.__call__``."""
    if len(args) == 1 and not kwargs and type(args[0]) is np.ndarray and not module._explicit_backward:
        fast = _ONE_OP.get(type(module))
        if fast is not None and fast[1] == 1:
            out = fast[0](module, args[0])
            if out is not NotImplemented:
                return out
    return Module.__call__(module, *args, **kwargs)


def call(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``module(*args, **kwargs)`` with no Tensor argument, or for a module with a hand-written ``backward``."""
    cls = type(module)
    if cls._explicit_backward:
        for a in args:
            if isinstance(a, Tensor):
                return _ModuleOp.apply(*args, module=module, kwargs=kwargs)
        _count_forward(module)
        return module.forward(*args, **kwargs)
    fast = _ONE_OP.get(cls)  # (a layer that is one op: its _one_op_call)
    if fast is not None and len(args) == fast[1] and not kwargs:
        out = fast[0](module, *args)
        if out is not NotImplemented:
            return out
    record = _grad_state.enabled
    wrapped = list(args)
    first: Optional[Tensor] = None
    for i, a in enumerate(args):  # the first floating array is the input whose gradient backward returns
        if _is_float_array(a):
            first = _new_input(_InputTensor)  # (Tensor(a) without the class call: a is an array)
            first._data = a
            first._grad = first._node = first._hooks = first._vc = None
            first._index = 0
            first._requires_grad = record
            wrapped[i] = first
            break
    else:  # no floating input (token ids): a Tensor all the same, so that layers inside take the tape with it
        for i, a in enumerate(args):
            if hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, Tensor):
                wrapped[i] = Tensor(a)
                break
    out = module.forward(*wrapped, **kwargs)
    if record:
        # (object.__setattr__ without its call: a plain attribute, past Module.__setattr__'s registration)
        module.__dict__["_last_call"] = (first, out) if isinstance(out, Tensor) else None
    if isinstance(out, Tensor):
        return out._data
    if isinstance(out, tuple):
        return tuple(o._data if isinstance(o, Tensor) else o for o in out)
    return out


def ones_like_output(module: Module) -> Any:
    """Ones of the shape and dtype of the output kept by the last call on arrays (a loss's default ``dy``), or
    ``None`` when no call is kept."""
    call = module.__dict__.get("_last_call")
    if type(call) is tuple or type(call) is _OneOpCall:
        out = call[1].data if type(call) is tuple else call.out
        if isinstance(out, (np.ndarray, np.generic)):  # (a 0-d loss: one call instead of np.ones' two)
            return np.array(1, dtype=out.dtype) if out.ndim == 0 else np.ones(out.shape, out.dtype)
        return namespace_of(out).ones_like(out)
    return None


def backward(module: Module, dy: Any, need_input_grad: bool) -> Any:
    """``Module.backward``: back-propagate ``dy`` through the module's last call on arrays."""
    call = module.__dict__.get("_last_call")
    if type(call) is _OneOpCall and type(dy) is np.ndarray and not _debug[0]:  # (a NumPy output: dy of its shape
        out_data = call.out  # and dtype is all the checks below ask)
        if dy.shape == out_data.shape and dy.dtype == out_data.dtype:
            module.__dict__["_last_call"] = _USED
            return call.backward(dy, need_input_grad)
    if call is None or call is _USED:
        raise RuntimeError(
            f"{module._where()}: backward() called twice for one forward (a backward already used it: as a "
            "backward() called before forward(), this one has nothing to differentiate); run a forward on "
            "arrays before each backward" if call is _USED else
            f"{module._where()}: backward() called before forward(): each backward needs its own forward on "
            "arrays (this one has none; a forward under xpnn.no_grad() keeps nothing)")
    module.__dict__["_last_call"] = _USED
    if type(call) is _OneOpCall:
        x, out, out_data = None, None, call.out
    else:
        x, out = call
        out_data = out.data
    if isinstance(dy, Tensor):
        dy = dy.data
    if not (type(dy) is np.ndarray and (type(out_data) is np.ndarray or isinstance(out_data, np.generic))
            and dy.shape == out_data.shape and dy.dtype == out_data.dtype):  # (NumPy arrays that pass: done)
        if not hasattr(dy, "shape") or tuple(dy.shape) != tuple(out_data.shape):
            got = tuple(dy.shape) if hasattr(dy, "shape") else type(dy).__name__
            raise ShapeError(f"{module._where()}: backward expected dy of shape {tuple(out_data.shape)}, got {got}")
        if type(dy) is not type(out_data):  # (before the dtypes: two libraries' dtypes never compare equal)
            namespace_of(out_data, dy, where=module._where())
        if dy.dtype != out_data.dtype:
            raise DTypeError(f"{module._where()}: backward expected dy of dtype {dtype_name(out_data.dtype)}, got "
                             f"{dtype_name(dy.dtype)}")
    if get_debug():
        check_finite(namespace_of(dy), dy, module._where(), "dy")
    if out is None:
        return call.backward(dy, need_input_grad)
    if out is x:  # the forward returned its input (e.g. Dropout in eval mode)
        return dy if need_input_grad else None
    if out._node is not None:  # (without need_input_grad, the input's edges are dead: no dx is computed)
        run_backward([out], [dy], skip=None if need_input_grad else x)
    if x is None or not need_input_grad:
        return None
    if x._grad is None:  # the output does not depend on the input
        return namespace_of(x.data).zeros_like(x.data)
    return x._grad


class Module(_core.Module):
    """``xpnn.nn.Module``: the core ``xpnn.nn.module.Module`` (``forward``; on Tensors recorded on the tape) plus the
    explicit API. ``y = m(x)`` on Tensors runs ``forward``; on arrays, or for a class that writes its own
    ``backward``, the call goes to ``call`` (arrays out), and ``dx = m.backward(dy)`` accumulates parameter gradients.

    A layer whose forward is one op on NumPy arrays may define ``_one_op_call`` with the forward's positional
    arguments (``nn.Linear``: ``x``; ``nn.CrossEntropyLoss``: ``logits, target``): the output array of
    ``one_op_call``/``one_op_const_call`` or ``NotImplemented`` (take the tape); its class's ``__call__`` becomes
    ``call_one_op``.
    """

    #: whether the class defines its own ``backward`` (the first version's explicit protocol) instead of
    #: relying on the tape; set for each subclass
    _explicit_backward = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("backward")
        if own is not None:
            cls._explicit_backward = not getattr(own, "_xpnn_tape", False)
        owner = next((k for k in cls.__mro__ if "_one_op_call" in k.__dict__), None)
        if owner is not None and cls.forward is owner.forward:  # (the fast path computes that class's forward)
            fast = owner.__dict__["_one_op_call"]
            _ONE_OP[cls] = (fast, fast.__code__.co_argcount - 1)
            if owner is cls and "__call__" not in cls.__dict__:
                cls.__call__ = call_one_op  # type: ignore[method-assign]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._explicit_backward:
            for a in args:
                if isinstance(a, Tensor):
                    return self.forward(*args, **kwargs)
            for a in kwargs.values():  # a Tensor passed by name (a learned attn_mask, an h_0) records too
                if isinstance(a, Tensor):
                    return self.forward(*args, **kwargs)
        return call(self, args, kwargs)

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        """Back-propagate ``dy`` (d loss / d output, the output's shape and dtype) through the last call on arrays:
        add the parameters' gradients into ``.grad`` and return the gradient of the input (``None`` when
        ``need_input_grad`` is false). Each forward allows one backward; a forward under ``xpnn.no_grad()`` keeps
        nothing, so evaluating between a forward and its backward is safe."""
        return backward(self, dy, need_input_grad)

    backward._xpnn_tape = True  # type: ignore[attr-defined]

    def to(self, backend: Any = None, *, dtype: Any = None) -> "Module":
        """``xpnn.nn.module.Module.to``; the calls on arrays kept for ``backward`` (on the old arrays) are dropped."""
        for m in self.modules():
            m.__dict__.pop("_last_call", None)
        return super().to(backend, dtype=dtype)
