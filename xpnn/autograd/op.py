"""One declaration per differentiable op: ``Op`` (forward and backward on arrays, a per-call ``Context``), and the
overrides (fused CUDA kernels, CPU fast paths) that replace a declaration's forward or backward.

An op is a subclass of ``Op`` with static ``forward(ctx, *inputs, **params)`` and ``backward(ctx, *grads)``
(the idea of PyTorch's ``torch.autograd.Function`` and Chainer's ``FunctionNode``). ``Op.apply`` is the function
users call: on plain arrays it runs ``forward`` and returns arrays (no graph, no Tensor); when any positional input
is an ``xpnn.Tensor`` it returns Tensors and, if grad mode is on and an input requires grad, records a ``Node``.

Positional arguments are the inputs (arrays, Tensors, Python scalars or ``None``); only Tensors that require grad
get gradients. Keyword arguments are parameters (axes, flags, masks) and are never differentiated. ``backward``
returns one gradient per positional input (``None`` where there is none) and is written with ``xpnn.functional``
ops, so the same rule runs on arrays and, with ``create_graph=True``, on Tensors (higher-order gradients).

Overrides, keyed by (op name, phase, namespace kind), live in one table here:
- ``Op.kernel = registry.<ROW>``: a row of ``xpnn._cuda.registry`` (go-to-definition leads there; its launch function
  is ``xpnn._cuda.providers.LAUNCHERS[row]``) whose kernel, found through ``xpnn._dispatch.lookup``, replaces
  ``forward`` for CuPy arrays; it takes the forward's arguments without ``ctx``. A kernel name (a string) is
  accepted too, for kernels a provider serves by name. Tests route NumPy arrays to the CPU shim's build of the same
  kernel with ``_dispatch.use_provider``.
- ``register_override(op, phase, kind, fn)``: ``fn(ctx, ...)`` with the signature of the declaration's
  ``forward``/``backward`` replaces it for arrays of namespace kind ``"numpy"``, ``"cupy"`` or ``"other"``.
Either may return ``NotImplemented`` to leave a call to the reference (the declaration).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

import numpy as np

from .. import _dispatch
from ..backend import namespace_of

__all__ = ["Op", "Context", "VersionCounter", "TensorBase", "register_override", "override_for", "numpy_direct"]

_FREED = object()  # marks a context whose saved values were released after backward
_OVERRIDES: dict[tuple[str, str, str], Callable[..., Any]] = {}
_OVERRIDDEN: dict[str, set[str]] = {"forward": set(), "backward": set()}  # op names with an override, per phase


def _kind(x: Any) -> str:
    if type(x) is np.ndarray:
        return "numpy"
    mod = type(x).__module__
    return "cupy" if mod.startswith("cupy") else "other"


def register_override(op: str, phase: str, kind: str, fn: Optional[Callable[..., Any]]) -> None:
    """Make ``fn`` replace op ``op``'s ``phase`` (``"forward"`` or ``"backward"``) for arrays of ``kind``
    (``"numpy"``, ``"cupy"``, ``"other"``); ``fn=None`` removes the override. ``fn`` takes the declaration's
    arguments (``ctx`` first) and returns its result, or ``NotImplemented`` to fall back to the declaration."""
    if phase not in ("forward", "backward"):
        raise ValueError(f"register_override: phase must be 'forward' or 'backward', got {phase!r}")
    if kind not in ("numpy", "cupy", "other"):
        raise ValueError(f"register_override: kind must be 'numpy', 'cupy' or 'other', got {kind!r}")
    key = (op, phase, kind)
    if fn is None:
        _OVERRIDES.pop(key, None)
    else:
        _OVERRIDES[key] = fn
    _OVERRIDDEN[phase] = {name for (name, ph, _) in _OVERRIDES if ph == phase}


def override_for(op: str, phase: str, x: Any) -> Optional[Callable[..., Any]]:
    """The override registered for ``op``'s ``phase`` on arrays like ``x``, or ``None`` (callers on hot paths test
    ``op in _OVERRIDDEN[phase]`` first)."""
    return _OVERRIDES.get((op, phase, _kind(x)))


def numpy_direct(op: str) -> bool:
    """Whether plain NumPy arrays may run op ``op``'s reference math directly, without ``Op.apply`` (the small-call
    fast paths of ``xpnn.functional``): no kernel provider routes NumPy arrays (the tests' CPU shim) and no override
    replaces the op's forward."""
    return _dispatch._provider[0] is None and op not in _OVERRIDDEN["forward"]


class VersionCounter:
    """The version of one array's values, shared by the Tensors that hold that array or a view of it (``detach()``,
    the views xpnn's ops make): every in-place write xpnn makes through one of them adds 1 (PyTorch's version
    counter; ``xpnn._tensor.bump_versions``). A Tensor gets its counter on its first write, ``detach()`` or
    view; until then its version is 0."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


#: in-place writes so far (``bump_versions`` calls): a backward whose forward saw the same count skips the check of
#: the saved versions (nothing was written in between, the usual case)
writes = 0


class Context:
    """What one call of an op keeps for its backward: ``save_for_backward(*values)`` / ``saved_tensors``, plus any
    attribute the forward sets (shapes, masks, indices). ``needs_input_grad`` has one bool per positional input;
    ``xp`` is the arrays' namespace; ``create_graph`` is True while a backward is itself being recorded."""

    # (_leaf_inputs: set by the engine for ops with ``adds_leaf_grads`` only, read by ``leaf_grad``; a slot, left
    # unset elsewhere, so that neither a call nor a backward makes the ``__dict__`` for it)
    __slots__ = ("needs_input_grad", "create_graph", "_saved", "_writes", "_versions", "_args", "_xp", "_leaf_inputs",
                 "__dict__")

    def __init__(self, needs_input_grad: tuple[bool, ...], args: tuple[Any, ...]) -> None:
        # (new_context sets the same fields)
        self.needs_input_grad = needs_input_grad
        self.create_graph = False
        self._saved: Any = ()
        # at a recorded forward that saved values (xpnn._tensor): the module's `writes`, and (Tensor,
        # version, Tensor, version...) for the input/output Tensors with a version counter
        self._writes = -1
        self._versions: Any = ()
        self._args = args
        self._xp: Any = None

    @property
    def xp(self) -> Any:
        """The namespace of the call's array inputs (found on first use)."""
        if self._xp is None:
            arrays = [a for a in self._args if a is not None and not isinstance(a, (int, float, complex))]
            self._xp = namespace_of(*arrays)
            self._args = ()
        return self._xp

    def save_for_backward(self, *values: Any) -> None:
        """Keep ``values`` (inputs, outputs or other arrays) for ``backward``. Save inputs and outputs rather than
        intermediates where the rule allows: with ``create_graph`` they are handed back as the graph's Tensors, so
        the backward is differentiable through them."""
        self._saved = values

    @property
    def saved_tensors(self) -> tuple[Any, ...]:
        saved = self._saved
        if saved is _FREED:
            raise RuntimeError("the values this op saved for backward were freed by an earlier backward; "
                               "pass retain_graph=True to the first backward to run backward twice")
        return saved

    @property
    def freed(self) -> bool:
        return self._saved is _FREED

    def leaf_grad(self, i: int) -> Any:
        """The gradient array that input ``i``'s gradient may be added into in place by the backward (which then
        returns ``None`` for it), or ``None``: the backward returns the gradient as usual. An array only where the
        engine would do exactly ``.grad += g`` (``leaf_grad_target``): set by the engine for an op with
        ``adds_leaf_grads`` in a backward into ``.grad`` (not ``xpnn.grad``, not ``create_graph``)."""
        inputs = getattr(self, "_leaf_inputs", None)
        return None if inputs is None else leaf_grad_target(inputs, i)

    def free(self) -> None:
        self._saved = _FREED
        self._versions = ()
        self._args = ()
        self.__dict__.clear()


_new_context = Context.__new__


def leaf_grad_target(inputs: tuple[Any, ...], i: int) -> Any:
    """``inputs[i]``'s gradient array where adding a gradient into it in place is exactly what accumulating that
    input's gradient does: a leaf whose class accumulates in place (``_grad_in_place``: ``Parameter``) with a
    gradient array already there, no post-accumulate hooks, passed once among ``inputs`` (Tensors or ``None``,
    others skipped); else ``None``."""
    t = inputs[i]
    if (t is None or t._node is not None or t._hooks or not getattr(type(t), "_grad_in_place", False)
            or not t._requires_grad):
        return None
    for j, u in enumerate(inputs):
        if u is t and j != i:
            return None
    return t._grad


def new_context(needs_input_grad: tuple[bool, ...], args: tuple[Any, ...]) -> Context:
    """``Context(needs_input_grad, args)`` without the class call (``Op.apply``'s hot path): the same fields."""
    ctx = _new_context(Context)
    ctx.needs_input_grad = needs_input_grad
    ctx.create_graph = False
    ctx._saved = ()
    ctx._writes = -1
    ctx._versions = ()
    ctx._args = args
    ctx._xp = None
    return ctx


class Op:
    """Base of every differentiable op (see the module docstring). Subclasses set ``name`` and define static
    ``forward(ctx, *inputs, **params)`` and ``backward(ctx, *grads)``."""

    name: ClassVar[str] = "op"
    #: the ``xpnn._cuda.registry`` row (or name) of a fused kernel that replaces ``forward`` for CuPy arrays (same
    #: arguments, no ctx)
    kernel: ClassVar[Any] = None
    #: outputs of forward that get gradients (a tuple output's other entries, e.g. argmax indices, get none)
    differentiable_outputs: ClassVar[Optional[tuple[int, ...]]] = None

    #: the output (each output of a tuple, e.g. split's pieces) may share the first input's memory (reshape,
    #: slicing): its Tensor then shares the input's version counter, so an in-place write through either is seen by
    #: the ops that saved the other
    view: ClassVar[bool] = False

    #: the backward may add a leaf input's gradient into that leaf's ``.grad`` itself (``Context.leaf_grad``) and
    #: return ``None`` for it (``linear``: the weight gradient by one GEMM with beta = 1); the engine then hands the
    #: call's input Tensors to the context
    adds_leaf_grads: ClassVar[bool] = False

    #: declared outside the xpnn package (the engine checks the shapes its backward returns); set per subclass
    _user_op: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._user_op = not cls.__module__.startswith("xpnn.")

    @staticmethod
    def forward(ctx: Context, *inputs: Any, **params: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def save(ctx: Context, out: Any, *inputs: Any, **params: Any) -> None:
        """What ``backward`` needs from a call whose ``out`` a kernel computed in place of ``forward`` (ops with a
        ``kernel`` define it, and their ``forward`` calls it too, so the two paths save the same)."""

    #: optional ONNX lowering, ``onnx(g, *inputs, **params)`` (a static method next to ``forward``): emits the op's
    #: ONNX nodes through the builder ``g`` of ``xpnn.onnx`` (``g.op``, ``g.const``, ``g.ints``, ``g.reduce``,
    #: ``g.dtype``, ``g.shape``, ``g.opset``) and returns the name of its output (a tuple for a tuple output).
    #: ``inputs`` are the ONNX value names of the positional inputs (``None`` for ``None``; Python scalars stay
    #: scalars), ``params`` the keyword arguments of the recorded call. ``xpnn.onnx.export`` refuses an op without it.
    onnx: ClassVar[Optional[Callable[..., Any]]] = None

    #: optional ``check(*inputs, **params)``: validates the arguments (raising errors that name the op) before the
    #: forward, a kernel or an override runs; ops with a ``kernel`` define it (kernels assume valid arguments)
    check: ClassVar[Optional[Callable[..., Any]]] = None

    @classmethod
    def _run_forward(cls, ctx: Context, arrays: tuple[Any, ...], params: dict[str, Any]) -> Any:
        check = cls.check
        if check is not None:
            check(*arrays, **params)
        if _dispatch._enabled[0]:
            if cls.kernel is not None and arrays and arrays[0] is not None:
                first = arrays[0]
                if type(first) is not np.ndarray or _dispatch._provider[0] is not None:
                    kernel = _dispatch.lookup(cls.kernel, namespace_of(first), first.dtype)
                    if kernel is not None:
                        out = kernel(*arrays, **params)
                        if out is not NotImplemented:
                            cls.save(ctx, out, *arrays, **params)
                            return out
            if cls.name in _OVERRIDDEN["forward"] and arrays:
                fn = override_for(cls.name, "forward", arrays[0])
                if fn is not None:
                    out = fn(ctx, *arrays, **params)
                    if out is not NotImplemented:
                        return out
        return cls.forward(ctx, *arrays, **params)

    @classmethod
    def apply(cls, *args: Any, **params: Any) -> Any:
        """Run the op: arrays in -> arrays out; any Tensor in -> Tensor(s) out, recorded when grad mode is on and
        some input requires grad (by the first Tensor input's ``_apply_op``)."""
        for a in args:
            if isinstance(a, TensorBase):
                return a._apply_op(cls, args, params)
        return cls._run_forward(new_context((False,) * len(args), args), args, params)


class TensorBase:
    """What the op core knows of ``xpnn.Tensor`` (``xpnn._tensor``, which subclasses this class and sits
    above ``xpnn.functional``, whose ops its methods call): ``Op.apply`` hands a call with a Tensor input to that
    input's ``_apply_op``, and the engine and ``xpnn.functional`` test ``isinstance(x, TensorBase)``. The core never
    imports the Tensor class."""

    __slots__ = ()

    def _apply_op(self, op: type[Op], args: tuple[Any, ...], params: dict[str, Any]) -> Any:
        """``op.apply(*args, **params)`` where some input (``self``, the first) is a Tensor: unwrap, run the forward,
        wrap the outputs, record a node if needed (``xpnn._tensor.Tensor._apply_op``)."""
        raise NotImplementedError
