"""``xpnn.Tensor``, ``xpnn.tensor`` and ``xpnn.grad``: an array of any backend plus what reverse-mode differentiation
needs (PyTorch's semantics).

A Tensor wraps one array (``.data``: NumPy, CuPy or any array-API array) and, once a backward reaches it,
its gradient ``.grad`` (an array of the same backend and shape). Ops on Tensors (``xpnn.functional`` functions,
operators, methods) return Tensors and, when grad mode is on and an input requires grad, record the graph that
``backward()`` walks; ``grad`` returns gradients instead of accumulating them. ``xpnn.nn.Parameter`` is a leaf
Tensor that requires grad. This module sits above ``xpnn.functional`` (the operators and methods are its ops); the op
core below it (``xpnn.autograd``: ``Op``, the engine) knows a Tensor only as ``TensorBase``.
"""
from __future__ import annotations

import itertools
import operator
import weakref
from typing import Any, Callable, Optional

import numpy as np

from ._torch_names import axis_from_dim, dim_index as _dim_index
from .backend import Backend, BackendLike, dtype_name, get_backend, namespace_of, to_numpy
from .debug import check_device_errors
from .errors import DTypeError, ShapeError
from . import functional as F  # the ops behind the operators and methods (functional sits below: it imports op)
from .autograd import op as _op
from .autograd.engine import Node, _accumulate_leaf, _fire_hooks, next_seq as _next_seq, note_graph_change, run_backward
from .autograd.grad_mode import _state as _grad_state, is_grad_enabled
from .autograd.op import TensorBase, VersionCounter, new_context
from .functional.comparison import Compare as _Compare
from .functional.shape import Clone as _Clone

__all__ = ["Tensor", "tensor", "grad", "zeros_like", "ones_like"]

_hook_ids = itertools.count()
_new_node = Node.__new__
_weakref = weakref.ref


def _counter(t: "Tensor") -> VersionCounter:
    """``t``'s version counter, made on first use."""
    c = t._vc
    if c is None:
        c = t._vc = VersionCounter()
    return c


def _make(data: Any, node: Optional[Node], index: int, requires_grad: bool) -> Tensor:
    """An op's output Tensor (no validation: the op made ``data``)."""
    t = _new_tensor(Tensor)
    t._data = data
    t._grad = t._hooks = t._vc = None
    t._node = node
    t._index = index
    t._requires_grad = requires_grad
    return t


def _apply_tensors(self: "Tensor", op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> Any:
    """``Op.apply`` when some input (``self``, the first) is a Tensor: unwrap, run forward, wrap, record a node if
    needed (``Tensor._apply_op``)."""
    grad_on = _grad_state.enabled
    arrays: list[Any] = []
    flags: list[bool] = []
    record = False
    tensors_only = True  # (every argument a Tensor: the node's inputs are the arguments)
    fed = False  # (an input is an op's output that gets no gradient, e.g. indices)
    vers = None  # (Tensor, version, ...) of the inputs with a version counter (_note_versions)
    for a in args:
        if isinstance(a, Tensor):
            arrays.append(a._data)
            if grad_on and a._requires_grad:
                record = True
                flags.append(True)
            else:
                flags.append(False)
                if a._node is not None:
                    fed = True
            vc = a._vc
            if vc is not None:
                if vers is None:
                    vers = [a, vc.value]
                else:
                    vers += (a, vc.value)
        else:
            arrays.append(a)
            flags.append(False)
            tensors_only = False
    arrs = tuple(arrays)
    live = tuple(flags)
    ctx = new_context(live, arrs)
    out = op._run_forward(ctx, arrs, params)
    if op._user_op:
        _check_forward_output(op, out, params)
    if not record:
        if type(out) is tuple:
            outs = tuple([_make(o, None, 0, False) for o in out])
            if op.view:  # (split's pieces)
                for t in outs:
                    _share_version(t, args[0])
            return outs
        t = _make(out, None, 0, False)
        if op.view:
            _share_version(t, args[0])
        return t
    ins = args if tensors_only else tuple([a if isinstance(a, Tensor) else None for a in args])
    node = _new_node(Node)  # (Node(op, ctx, ins, args, params, live, next_seq()) without the class call)
    node.op = op
    node.ctx = ctx
    node.inputs = ins
    node.args = args
    node.params = params
    # (the edges a backward finds: an output without gradient, once fed to an op, gets one from it, see Node)
    node.live = live if not fed else tuple([f or isinstance(a, Tensor) and a._node is not None
                                            for a, f in zip(args, live)])
    node.seq = _next_seq()
    if type(out) is tuple:
        node.outputs = ()
        diff = op.differentiable_outputs
        ctx._xpnn_out_meta = tuple((tuple(o.shape), o.dtype) for o in out)  # zeros for an output the caller dropped
        outs = tuple([_make(o, node, i, diff is None or i in diff) for i, o in enumerate(out)])
        node.outputs = tuple([weakref.ref(t) if t._requires_grad else None for t in outs])
        if op.view:
            for t in outs:
                _share_version(t, args[0])
        if ctx._saved:
            _note_versions(ctx, ins + outs[1:], outs[0])
        return outs
    t = _new_tensor(Tensor)  # (_make, inline: the usual call)
    t._data = out
    t._grad = t._hooks = t._vc = None
    t._node = node
    t._index = 0
    t._requires_grad = True
    node.outputs = (_weakref(t),)
    if op.view:
        _share_version(t, args[0])
        if ctx._saved:
            _note_versions(ctx, ins, t)
    elif ctx._saved:  # _note_versions (inline: the usual call, the output has no counter)
        ctx._writes = _op.writes
        if vers is not None:
            ctx._versions = vers
    return t


class _HookHandle:
    """Returned by ``register_post_accumulate_grad_hook``; ``remove()`` unregisters the hook."""

    def __init__(self, owner: "Tensor", key: int) -> None:
        self._owner = weakref.ref(owner)
        self._key = key

    def remove(self) -> None:
        t = self._owner()
        if t is not None and t._hooks:
            t._hooks.pop(self._key, None)


def _is_floating(x: Any) -> bool:
    try:
        return namespace_of(x).isdtype(x.dtype, "real floating")
    except Exception:
        return False


class Tensor(TensorBase):
    """An array with an optional gradient and the op that produced it.

    Attributes: ``data`` (the array), ``grad`` (array or ``None``), ``requires_grad``, ``shape``, ``dtype``,
    ``ndim``, ``T``, ``backend``, ``grad_fn`` (the recording node, ``None`` for leaves), ``is_leaf``.
    Build with ``xpnn.tensor(data, requires_grad=...)``.
    """

    __slots__ = ("_data", "_grad", "_requires_grad", "_node", "_index", "_hooks", "_vc", "__weakref__")
    __array_ufunc__ = None  # NumPy operators (ndarray + Tensor) defer to the Tensor's reflected methods
    __array_priority__ = 1000.0
    __hash__ = object.__hash__  # hashed by identity, like torch.Tensor, although == is elementwise
    _apply_op = _apply_tensors  # Op.apply with this Tensor as its first Tensor input

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        vc = None
        if isinstance(data, Tensor):  # the same array: the same version counter
            vc = _counter(data)
            data = data._data
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            raise TypeError(f"Tensor: expected an array, got {type(data).__name__}; use xpnn.tensor(data) for "
                            "lists and scalars")
        self._data = data
        self._grad: Any = None
        self._node: Optional[Node] = None
        self._index = 0
        self._hooks: Optional[dict[int, Callable[[Tensor], None]]] = None
        self._vc: Optional[VersionCounter] = vc
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # --- the array and its gradient ----------------------------------------------------------------------
    @property
    def data(self) -> Any:
        """The array (NumPy, CuPy, ...). Assigning replaces it (no gradient flows through the assignment). A write
        straight into it (``t.data[...] = v``) bumps no version counter, so backward cannot see it; ``t[...] = v``
        can."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, Tensor):
            value = value._data
        self._data = value

    @property
    def grad(self) -> Any:
        """The gradient accumulated by backward passes (an array like ``data``), ``None`` until one reaches here."""
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if isinstance(value, Tensor):
            value = value._data
        if value is not None and tuple(value.shape) != tuple(self._data.shape):
            raise ShapeError(f"Tensor.grad must have shape {tuple(self._data.shape)}, got {tuple(value.shape)}")
        self._grad = value

    def _accumulate_grad(self, g: Any) -> None:
        """Add ``g`` into ``.grad`` (in place when a gradient array exists; a private copy otherwise). ``g`` has
        ``data``'s shape and dtype (the engine's ``_accumulate_leaf`` checks the shape and casts)."""
        if self._grad is None:
            self._grad = namespace_of(g).asarray(g, copy=True)
        else:
            cur = self._grad
            cur += g

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place (leaves only); only floating tensors can require gradients."""
        if requires_grad and not _is_floating(self._data):
            raise DTypeError(f"Tensor.requires_grad: only floating tensors can require gradients, got dtype "
                             f"{dtype_name(self._data.dtype)}; cast first (e.g. x.astype('float32'))")
        if not requires_grad and self._node is not None:
            raise RuntimeError("Tensor.requires_grad_: a non-leaf Tensor's requires_grad cannot be turned off; "
                               "use .detach()")
        self._requires_grad = bool(requires_grad)
        note_graph_change()  # (ops that used this Tensor recorded its flag: their backward walks the graph)
        return self

    @property
    def requires_grad(self) -> bool:
        """Whether backward computes a gradient for this Tensor; assigning it checks as ``requires_grad_`` does
        (floating leaves only), as in PyTorch."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    @property
    def _version(self) -> int:
        """How many in-place writes xpnn has made to this Tensor's values (``torch.Tensor._version``), counted
        over every Tensor sharing them (``detach()``, views made by xpnn's ops); see ``_bump_version``."""
        c = self._vc
        return 0 if c is None else c.value

    def _bump_version(self) -> None:
        """Record an in-place write to the values: an op that saved them for backward then raises
        ``InplaceModifiedError`` at backward (PyTorch's rule). xpnn calls it for every in-place write it makes
        (``t[key] = v``, ``t += v`` under ``no_grad``, optimizer steps, ``load_state_dict``, ``xpnn.init``); a
        write straight into the array (``t.data[...] = v``, NumPy's ``out=``) is not seen."""
        bump_versions((self,))

    @property
    def grad_fn(self) -> Optional[Node]:
        return self._node

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def register_post_accumulate_grad_hook(self, hook: Callable[["Tensor"], None]) -> _HookHandle:
        """Call ``hook(self)`` during each backward once this leaf's gradient is complete (every contribution of
        that backward added into ``.grad``), like ``torch.Tensor.register_post_accumulate_grad_hook``."""
        if self._node is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf Tensors accumulate gradients")
        if self._hooks is None:
            self._hooks = {}
        key = next(_hook_ids)
        self._hooks[key] = hook
        return _HookHandle(self, key)

    def register_hook(self, hook: Callable[[Any], Any]) -> None:
        """Not supported: hooks on a gradient in flight (``torch.Tensor.register_hook``) are not implemented."""
        raise NotImplementedError(
            "Tensor.register_hook: gradient hooks on Tensors are not implemented; for a leaf use "
            "register_post_accumulate_grad_hook(fn) (called with the Tensor once its .grad is complete); for an "
            "intermediate Tensor t get its gradient with xpnn.grad(loss, t) or loss.backward(inputs=[t])")

    def retain_grad(self) -> None:
        """Not supported (``torch.Tensor.retain_grad``); see the error for what to use."""
        raise NotImplementedError(
            "Tensor.retain_grad: not implemented; get an intermediate Tensor's gradient with xpnn.grad(loss, t), or "
            "loss.backward(inputs=[t, *params]) (fills t.grad)")

    # --- metadata -----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> Any:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> "_Size":
        """Number of elements, an int that is also callable as PyTorch's method: ``t.size`` (the element count, as
        before), ``t.size()`` (the shape tuple), ``t.size(d)`` (one dimension, negative ``d`` from the end)."""
        return _Size(_numel(self._data.shape), self._data.shape)

    def numel(self) -> int:
        """Number of elements (``torch.Tensor.numel``)."""
        return _numel(self._data.shape)

    @property
    def backend(self) -> Backend:
        return get_backend(namespace_of(self._data))

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d Tensor")
        return int(self._data.shape[0])

    def __iter__(self) -> Any:
        """The rows ``t[0], t[1], ...`` (recorded); a 0-d Tensor raises ``TypeError`` (PyTorch's rule; it was an
        empty iteration)."""
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d Tensor")
        return (self[i] for i in range(int(self._data.shape[0])))

    # --- leaving the graph --------------------------------------------------------------------------------
    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickling (and ``copy.deepcopy``) of a Tensor computed by ops stores it as a leaf with its values and
        ``requires_grad``, without its history, as ``torch.Tensor`` pickles; leaves pickle as they are."""
        if self._node is None:
            return object.__reduce_ex__(self, protocol)
        leaf = Tensor(self._data)
        leaf._requires_grad = self._requires_grad
        return object.__reduce_ex__(leaf, protocol)

    def detach(self) -> "Tensor":
        """A Tensor sharing ``data`` (and its version counter: an in-place write through either is seen by the ops
        that saved the other) without history (no gradient flows back through it)."""
        t = Tensor(self)
        if _traced[0] is not None:  # (exported: the same values)
            _note_traced((t,), _Clone, (self,), {})
        return t

    def numpy(self) -> np.ndarray:
        """A NumPy copy of ``data`` (a host copy for GPU Tensors); no ``detach`` needed."""
        return np.array(to_numpy(self._data))  # np.array copies by default

    def item(self) -> float:
        """The value of a one-element Tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"Tensor.item: only one-element tensors can be converted, got shape {self.shape}")
        if _traced[0] is not None and computed_from(self, _traced[0]):
            raise ValueError(
                f"xpnn.onnx.export: data-dependent value: Tensor.item() (float(), int(), bool()) read a value "
                f"computed from the model's input (the output of op {self._node.op.name!r}) while tracing; a Python "
                "number taken from it (a branch, a constant) cannot be exported, as the graph would hold the traced "
                "input's value for every input; keep the computation in xpnn ops on Tensors (comparisons, where, "
                "masked_fill)")
        check_device_errors()  # this read syncs anyway: raise label errors deferred on the device (xpnn.debug)
        return to_numpy(self._data).item()  # (ndarray.item takes any one-element shape)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __format__(self, spec: str) -> str:
        """A 0-d Tensor formats as its number (``f"{loss:.4f}"``, as in PyTorch); others as their repr."""
        if self.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec)

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise ValueError(f"the truth value of a Tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.array(to_numpy(self._data), dtype=dtype, copy=True if copy else None)

    def to(self, backend: BackendLike = None, *, dtype: Any = None) -> "Tensor":
        """This Tensor's values on ``backend`` and/or in ``dtype`` (recorded: gradients flow back through the
        move and the cast). A dtype in place of the backend (``t.to("float64")``, ``t.to(np.float32)``) is taken
        as ``dtype``, as ``Module.to`` does."""
        from .functional.shape import to_backend
        from .backend import is_dtype_like as _is_dtype_like

        if dtype is None and _is_dtype_like(backend):
            backend, dtype = None, backend

        return to_backend(self, backend=get_backend(backend) if backend is not None else self.backend, dtype=dtype)

    def __repr__(self) -> str:
        extra = ""
        if self._node is not None:
            extra = f", grad_fn=<{self._node.op.name}>"
        elif self.requires_grad:
            extra = ", requires_grad=True"
        return f"tensor({to_numpy(self._data)!r}{extra})".replace("\n", "\n       ")

    # --- backward -----------------------------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: Optional[bool] = None, create_graph: bool = False,
                 inputs: Any = None) -> None:
        """Accumulate the gradient of this Tensor into ``.grad`` of every leaf that requires grad.

        ``grad``: d(something)/d(self), same shape (array or Tensor); may be omitted for a one-element Tensor.
        ``retain_graph`` (default ``create_graph``): keep the saved values for another backward.
        ``create_graph``: record the backward itself (use ``xpnn.grad`` to get the differentiable gradients;
        ``.grad`` holds values).
        ``inputs``: a Tensor or a sequence of Tensors; accumulate into their ``.grad`` only (PyTorch's ``inputs=``;
        non-leaf Tensors included).
        """
        if not self._requires_grad:
            raise RuntimeError("backward: this Tensor does not require grad and has no grad_fn (no input of the ops "
                               "that made it requires grad, or it was made under xpnn.no_grad())")
        seed = _seed_grad(self, grad, "backward", create_graph)
        keep = create_graph if retain_graph is None else retain_graph
        if inputs is None:
            run_backward([self], [seed], retain_graph=keep, create_graph=create_graph, tensor_cls=Tensor)
            return
        ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not ins or not all(isinstance(t, Tensor) and t.requires_grad for t in ins):
            raise ValueError("backward: inputs= must be a non-empty sequence of Tensors that require grad")
        grads = run_backward([self], [seed], retain_graph=keep, create_graph=create_graph, inputs=ins,
                             tensor_cls=Tensor)
        assert grads is not None
        done: set[int] = set()
        for t, g in zip(ins, grads):
            if g is not None and id(t) not in done:
                done.add(id(t))
                _accumulate_leaf(t, g)
                if t._hooks:
                    _fire_hooks(t)

    # --- operators ----------------------------------------------------------------------------------------
    def __add__(self, other: Any) -> "Tensor":
        return F.add(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return F.add(other, self)

    def __sub__(self, other: Any) -> "Tensor":
        return F.sub(self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        return F.sub(other, self)

    def __mul__(self, other: Any) -> "Tensor":
        return F.mul(self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        return F.mul(other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        return F.div(self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return F.div(other, self)

    def __pow__(self, other: Any) -> "Tensor":
        return F.pow(self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return F.pow(other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        return F.matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return F.matmul(other, self)

    def __neg__(self) -> "Tensor":
        return F.neg(self)

    def __pos__(self) -> "Tensor":
        return self

    def __abs__(self) -> "Tensor":
        return F.abs(self)

    def __getitem__(self, key: Any) -> "Tensor":
        return F.index(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        """``t[key] = value`` writes into ``data`` in place when no gradient is involved (``t`` does not require
        grad and ``value`` is not a Tensor that does, or grad mode is off); item assignment is never recorded. It
        bumps the version counter: a backward through an op that saved these values raises ``InplaceModifiedError``."""
        v = value._data if isinstance(value, Tensor) else value
        if is_grad_enabled() and (self.requires_grad or (isinstance(value, Tensor) and value.requires_grad)):
            raise RuntimeError(
                "Tensor item assignment (t[key] = value) is not recorded on the tape, and "
                + ("this Tensor requires grad" if self.requires_grad else "the value requires grad")
                + ": build the result out of place (e.g. x * mask + value * (1 - mask)), or assign into .data "
                "(no gradient flows through it)")
        if hasattr(v, "shape"):
            namespace_of(self._data, v, where="Tensor item assignment")
        if _traced[0] is not None:
            _refuse_traced_write(self, (value, *(key if isinstance(key, tuple) else (key,))), "t[key] = value")
        from .functional.shape import _plain_key

        self._data[_plain_key(key)] = v
        self._bump_version()

    # in-place operators: under xpnn.no_grad() a leaf is updated in place (``w -= lr * w.grad``; a Parameter stays
    # its view of the flat buffer) and its version counter bumped (a graph that saved it raises at backward, as in
    # PyTorch); with grad mode on, the name is rebound to a recorded out-of-place result (values the graph saved
    # are never changed), except that a leaf which requires grad raises, as in PyTorch
    def _inplace(self, other: Any, fn: Callable[[Any, Any], Any], ifn: Callable[[Any, Any], Any], sym: str
                 ) -> "Tensor":
        if is_grad_enabled():
            if self.requires_grad and self._node is None:
                raise RuntimeError(
                    f"Tensor {sym}=: a leaf Tensor that requires grad cannot be changed in place (PyTorch's rule); "
                    f"update it under `with xpnn.no_grad():` (as an optimizer step does), or write `x = x {sym} "
                    "...` for a new Tensor")
            return fn(self, other)
        if self._node is not None:
            return fn(self, other)
        o = other._data if isinstance(other, Tensor) else other
        if hasattr(o, "shape"):
            namespace_of(self._data, o, where=f"Tensor {sym}=")
        if _traced[0] is not None:
            _refuse_traced_write(self, (other,), f"Tensor {sym}= under no_grad")
        d = self._data
        try:
            out = ifn(d, o)  # the array's own in-place operator (operator.iadd, ...)
        except ValueError:
            from .functional._checks import broadcast

            broadcast(f"Tensor {sym}=", d, o, into=d)  # (the backend's error names no op)
            raise
        if out is not d:  # a namespace without in-place operators
            self.data = out
        self._bump_version()
        return self

    def __iadd__(self, other: Any) -> "Tensor":
        return self._inplace(other, operator.add, operator.iadd, "+")

    def __isub__(self, other: Any) -> "Tensor":
        return self._inplace(other, operator.sub, operator.isub, "-")

    def __imul__(self, other: Any) -> "Tensor":
        return self._inplace(other, operator.mul, operator.imul, "*")

    def __itruediv__(self, other: Any) -> "Tensor":
        return self._inplace(other, operator.truediv, operator.itruediv, "/")

    # comparisons: no gradient, a boolean Tensor (while xpnn.onnx traces a model: the op Compare, see ``tracing``)
    def _compare(self, other: Any, fn: Callable[[Any, Any], Any], sym: str) -> "Tensor":
        o = other._data if isinstance(other, Tensor) else other
        if hasattr(o, "shape"):
            namespace_of(self._data, o, where="Tensor comparison")
        try:
            t = Tensor(fn(self._data, o))
            if _traced[0] is not None:
                _note_traced((t,), _Compare, (self, other), {"op": sym})
            return t
        except ValueError:
            from .functional._checks import broadcast

            broadcast(f"Tensor comparison {sym}", self._data, o)  # (the backend's error names no op)
            raise

    def __lt__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.lt, "<")

    def __le__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.le, "<=")

    def __gt__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.gt, ">")

    def __ge__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.ge, ">=")

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, operator.eq, "==")

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, operator.ne, "!=")

    # logical operators on bool (and integer) Tensors, e.g. to combine attention masks: no gradient
    def __invert__(self) -> "Tensor":
        t = Tensor(~self._data)
        if _traced[0] is not None:
            _note_traced((t,), _Compare, (self,), {"op": "~"})
        return t

    def __and__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.and_, "&")

    def __or__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.or_, "|")

    # --- methods (each the xpnn.functional op of the same name) ---------------------------------------------
    # (``dim=`` is PyTorch's name for ``axis=``; ``max``/``min`` given ``dim=`` return ``(values, indices)``)
    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Optional[bool] = None
            ) -> "Tensor":
        return F.sum(self, axis=axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None, keepdim: Optional[bool] = None
            ) -> "Tensor":
        return F.mean(self, axis=axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def max(self, axis: Any = None, keepdims: bool = False, *, dim: Optional[int] = None,
            keepdim: Optional[bool] = None) -> Any:
        return F.max(self, axis=axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def min(self, axis: Any = None, keepdims: bool = False, *, dim: Optional[int] = None,
            keepdim: Optional[bool] = None) -> Any:
        return F.min(self, axis=axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def argmax(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None,
               keepdim: Optional[bool] = None) -> "Tensor":
        """Indices of the maxima (an integer Tensor, no gradient), e.g. ``(logits.argmax(axis=1) == y)``."""
        if dim is not None:
            axis = axis_from_dim(axis, dim, "argmax")
        if keepdim is not None:
            keepdims = keepdim
        return Tensor(namespace_of(self._data).argmax(self._data, axis=axis, keepdims=keepdims))

    def argmin(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None,
               keepdim: Optional[bool] = None) -> "Tensor":
        """Indices of the minima (an integer Tensor, no gradient)."""
        if dim is not None:
            axis = axis_from_dim(axis, dim, "argmin")
        if keepdim is not None:
            keepdims = keepdim
        return Tensor(namespace_of(self._data).argmin(self._data, axis=axis, keepdims=keepdims))

    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return F.reshape(self, shape)

    def permute_dims(self, *axes: Any) -> "Tensor":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return F.permute_dims(self, axes)

    def transpose(self, *axes: Any) -> "Tensor":
        """Reverse the axes (no arguments); swap two (``transpose(dim0, dim1)``, ``torch.transpose``); or permute all
        of them (``transpose(1, 0, 2)`` or a tuple, like ``ndarray.transpose``). Two ints always swap, as in PyTorch:
        on a 2-D Tensor ``transpose(0, 1)`` is the transpose (NumPy would read it as the identity permutation)."""
        if not axes:
            return F.permute_dims(self, tuple(range(self.ndim - 1, -1, -1)))
        if len(axes) == 2 and all(isinstance(a, int) for a in axes) and self.ndim < 2:
            return F.transpose(self, *axes)  # (0-d and 1-D: dims in [-1, 0], the Tensor itself, as in PyTorch)
        if len(axes) == 2 and all(isinstance(a, int) for a in axes):
            order = list(range(self.ndim))
            try:
                i, j = order[axes[0]], order[axes[1]]
            except IndexError:
                raise IndexError(f"Tensor.transpose: dims {axes} out of range for a {self.ndim}-D Tensor "
                                 f"(shape {self.shape})") from None
            order[i], order[j] = j, i
            return F.permute_dims(self, tuple(order))
        return self.permute_dims(*axes)

    def permute(self, *dims: Any) -> "Tensor":
        """Axes reordered (``torch.Tensor.permute``): ``out.shape[i] = self.shape[dims[i]]``; same as
        ``permute_dims``."""
        return self.permute_dims(*dims)

    def t(self) -> "Tensor":
        """The transpose of a Tensor of at most 2 dimensions (``torch.Tensor.t``); 0-D and 1-D come back as they are.
        Raises ShapeError for more dimensions (use ``transpose(dim0, dim1)``)."""
        if self.ndim > 2:
            raise ShapeError(f"Tensor.t: expected at most 2 dimensions, got shape {self.shape}; use "
                             "transpose(dim0, dim1) or permute")
        return self if self.ndim < 2 else F.permute_dims(self, (1, 0))

    @property
    def T(self) -> "Tensor":
        if self.ndim != 2:
            raise ShapeError(f"Tensor.T: expected a 2-D Tensor, got shape {self.shape}; use transpose/permute_dims")
        return F.permute_dims(self, (1, 0))

    @property
    def mT(self) -> "Tensor":
        """The last two axes swapped (``torch.Tensor.mT``: a batch of matrices transposed). Raises ``ShapeError`` for
        fewer than 2 dimensions."""
        if self.ndim < 2:
            raise ShapeError(f"Tensor.mT: expected at least 2 dimensions, got shape {self.shape}")
        return F.transpose(self, -2, -1)

    def matmul(self, other: Any) -> "Tensor":
        return F.matmul(self, other)

    def exp(self) -> "Tensor":
        return F.exp(self)

    def log(self) -> "Tensor":
        return F.log(self)

    def sqrt(self) -> "Tensor":
        return F.sqrt(self)

    def abs(self) -> "Tensor":
        return F.abs(self)

    def clip(self, min: Any = None, max: Any = None) -> "Tensor":  # noqa: A002 (PyTorch's names)
        return F.clip(self, min, max)

    def tanh(self) -> "Tensor":
        return F.tanh(self)

    def sigmoid(self) -> "Tensor":
        return F.sigmoid(self)

    def relu(self) -> "Tensor":
        return F.relu(self)

    def softmax(self, axis: Optional[int] = None, *, dim: Optional[int] = None) -> "Tensor":
        return F.softmax(self, axis=axis, dim=dim)

    def log_softmax(self, axis: Optional[int] = None, *, dim: Optional[int] = None) -> "Tensor":
        return F.log_softmax(self, axis=axis, dim=dim)

    def logsumexp(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None,
                  keepdim: Optional[bool] = None) -> "Tensor":
        return F.logsumexp(self, axis=axis, keepdims=keepdims, dim=dim, keepdim=keepdim)

    def astype(self, dtype: Any) -> "Tensor":
        """A cast copy (recorded: the gradient is cast back)."""
        return F.astype(self, dtype)

    # --- PyTorch's spellings (torch.Tensor methods of the same names, built from the ops above) ---------------
    def dim(self) -> int:
        """Number of dimensions (``ndim``)."""
        return self._data.ndim

    ndimension = dim

    def view(self, *shape: Any) -> "Tensor":
        """``reshape`` under PyTorch's name (a tuple or the sizes as arguments; one may be -1). NumPy returns a view
        when the layout allows one, else a copy (PyTorch would raise for a non-contiguous input)."""
        return self.reshape(*shape)

    def unsqueeze(self, dim: int) -> "Tensor":
        """A new axis of length 1 at ``dim`` (in ``[-ndim-1, ndim]``), like ``torch.unsqueeze``."""
        return F.unsqueeze(self, dim)

    def squeeze(self, dim: Any = None) -> "Tensor":
        """Drop axes of length 1: all of them (``dim=None``), or those among ``dim`` (an int or a tuple) that have
        length 1 (others are kept, as in ``torch.squeeze``)."""
        return F.squeeze(self, dim)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        """Axes ``start_dim..end_dim`` (inclusive) merged into one (``torch.flatten``; a 0-d Tensor becomes (1,))."""
        shape = self.shape
        if not shape:
            return F.reshape(self, (1,))
        a = _dim_index(start_dim, len(shape), "flatten")
        b = _dim_index(end_dim, len(shape), "flatten")
        if a > b:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {shape}")
        return F.reshape(self, shape[:a] + (_numel(shape[a:b + 1]),) + shape[b + 1:])

    def expand(self, *sizes: Any) -> "Tensor":
        """``F.expand``: broadcast to ``sizes`` (``-1`` keeps an axis; ``torch.Tensor.expand``)."""
        return F.expand(self, *sizes)

    def expand_as(self, other: Any) -> "Tensor":
        """``expand(other.shape)`` (``F.expand_as``: ONNX export takes the shape from ``other`` at run time)."""
        return F.expand_as(self, other)

    def contiguous(self) -> "Tensor":
        """``self`` when its array is in C order or its namespace has no strides, else a copy (``F.contiguous``)."""
        return F.contiguous(self)

    def clone(self) -> "Tensor":
        """A copy sharing no memory; the gradient passes through (``torch.Tensor.clone``)."""
        return F.clone(self)

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple["Tensor", ...]:
        """Pieces along ``dim``: of ``split_size_or_sections`` each (an int; the last may be shorter) or of the
        listed sizes (``torch.Tensor.split``)."""
        return F.split(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple["Tensor", ...]:
        """At most ``chunks`` pieces of equal size along ``dim`` (``torch.Tensor.chunk``)."""
        return F.chunk(self, chunks, dim)

    def masked_fill(self, mask: Any, value: Any) -> "Tensor":
        """``value`` where the boolean ``mask`` (broadcast to this shape) is true (``torch.Tensor.masked_fill``)."""
        return F.masked_fill(self, mask, value)

    def where(self, condition: Any, other: Any) -> "Tensor":
        """``F.where(condition, self, other)`` (``torch.Tensor.where``)."""
        return F.where(condition, self, other)

    def nonzero(self, *, as_tuple: bool = False) -> Any:
        """The indices of the nonzero entries: (K, ndim), or a tuple of ndim (K,) index Tensors with ``as_tuple``
        (``torch.Tensor.nonzero``; ``F.nonzero``); no gradient."""
        return F.nonzero(self, as_tuple=as_tuple)

    def argwhere(self) -> "Tensor":
        """``self.nonzero()`` (``torch.Tensor.argwhere``)."""
        return F.nonzero(self)

    def tril(self, diagonal: int = 0) -> "Tensor":
        """Zeros above the ``diagonal``-th diagonal of the last two axes (``torch.tril``)."""
        return F.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> "Tensor":
        """Zeros below the ``diagonal``-th diagonal of the last two axes (``torch.triu``)."""
        return F.triu(self, diagonal)

    def gather(self, dim: int, index: Any) -> "Tensor":
        """``out[i][j] = self[index[i][j]][j]`` for ``dim=0`` and so on (``torch.gather``)."""
        return F.gather(self, dim, index)

    def masked_fill_(self, mask: Any, value: Any) -> "Tensor":
        """In-place ``masked_fill`` (``torch.Tensor.masked_fill_``): ``value`` written where the bool ``mask``
        (broadcast to this shape) is true; returns ``self``. The write goes into ``data`` (arrays that view it see
        it) and bumps the version counter: an op that saved these values raises ``InplaceModifiedError`` at
        backward. While recording, a Tensor in the graph takes the fill as its new history (the gradient flows to the
        entries not filled, and to a 0-d ``value`` Tensor); a leaf that requires grad raises ``RuntimeError``, as
        in PyTorch, and so does a non-leaf whose values a view or ``detach()`` shares (their history could not
        follow: write ``x = x.masked_fill(mask, value)``)."""
        recording = is_grad_enabled() and (
            self._requires_grad or (isinstance(value, Tensor) and value._requires_grad))
        if not recording:
            if _traced[0] is not None:
                _refuse_traced_write(self, (mask, value), "Tensor.masked_fill_")
            filled = F.masked_fill(self._data, mask._data if isinstance(mask, Tensor) else mask,
                                   value._data if isinstance(value, Tensor) else value)
            self._data[...] = filled
            self._bump_version()
            return self
        if self._requires_grad and self._node is None:
            raise RuntimeError("Tensor.masked_fill_: a leaf Tensor that requires grad cannot be changed in place "
                               "(PyTorch's rule); fill it under `with xpnn.no_grad():`, or write "
                               "`x = x.masked_fill(mask, value)` for a new Tensor")
        if self._node is not None and self._vc is not None:
            raise RuntimeError("Tensor.masked_fill_: this Tensor's values are shared with a view or a detach()ed "
                               "Tensor, whose history cannot follow an in-place fill while recording; write "
                               "`x = x.masked_fill(mask, value)` instead")
        # the values before the fill, as a Tensor of their own: the fill's input, and the output of self's old op
        old = _make(self._data, self._node, self._index, self._requires_grad)
        old._vc = _counter(self)
        out = F.masked_fill(old, mask, value)  # (checks mask and value before anything changes)
        if self._node is not None:
            refs = list(self._node.outputs)
            refs[self._index] = weakref.ref(old)
            self._node.outputs = tuple(refs)
        self._data[...] = out._data
        self._node, self._index, self._requires_grad = out._node, 0, out._requires_grad
        note_graph_change()  # (ops that used this Tensor recorded it as the leaf or output it was)
        if out._node is not None:
            out._node.outputs = (weakref.ref(self),)
        self._bump_version()
        return self

    def unbind(self, dim: int = 0) -> tuple["Tensor", ...]:
        """The slices along ``dim``, that axis removed (``torch.unbind``); one ``split`` (views on NumPy/CuPy), so
        the gradient is one concatenation. Raises ``IndexError`` for ``dim`` out of range or a 0-d Tensor."""
        d = _dim_index(dim, self.ndim, "unbind")
        if self.shape[d] == 0:
            return ()
        return tuple(F.squeeze(p, d) for p in F.split(self, 1, d))

    def repeat(self, *sizes: Any) -> "Tensor":
        """This Tensor tiled ``sizes[i]`` times along axis ``i`` (``torch.Tensor.repeat``, i.e. ``numpy.tile``); more
        sizes than dimensions add leading axes. Built as reshape -> broadcast -> reshape, so the gradient sums the
        copies. Raises ``ShapeError`` for fewer sizes than dimensions, ``ValueError`` for a negative size."""
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = tuple(sizes[0])
        reps = tuple(int(s) for s in sizes)
        shape = self.shape
        if len(reps) < len(shape):
            raise ShapeError(f"Tensor.repeat: the number of repeat sizes {reps} cannot be smaller than the number of "
                             f"dimensions of shape {shape}")
        if any(r < 0 for r in reps):
            raise ValueError(f"Tensor.repeat: repeat sizes must be non-negative, got {reps}")
        full = (1,) * (len(reps) - len(shape)) + shape
        inter = tuple(x for s in full for x in (1, s))
        wide = tuple(x for r, s in zip(reps, full) for x in (r, s))
        out = F.reshape(F.broadcast_to(F.reshape(self, inter), wide), tuple(r * s for r, s in zip(reps, full)))
        if all(r == 1 or s == 1 for r, s in zip(reps, full)):
            # only then can the last reshape be a (read-only, stride-0) view of self: copy, as torch's repeat does
            out = F.clone(out)
        return out

    def flip(self, *dims: Any) -> "Tensor":
        """The order of the entries along each of ``dims`` reversed (``torch.flip``; a tuple or the dims as
        arguments); a copy of a reversed-slice index, so the gradient is flipped back. Raises ``IndexError`` for a dim out of
        range, ``ValueError`` for a dim given twice."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        axes = [_dim_index(d, max(self.ndim, 1), "flip") for d in dims]
        if len(set(axes)) != len(axes):
            raise ValueError(f"flip: dims {tuple(dims)} name a dimension more than once")
        rev = slice(None, None, -1)
        # (a copy, as torch.flip: the reversed slice alone is a NumPy/CuPy view of self)
        return F.clone(F.index(self, tuple(rev if i in axes else slice(None) for i in range(self.ndim))))

    def var(self, dim: Any = None, unbiased: Optional[bool] = None, keepdim: bool = False, *,
            correction: Optional[float] = None) -> "Tensor":
        """Variance over ``dim`` (an int, a tuple, or ``None`` for all; ``torch.var``):
        ``sum((x - mean)**2) / max(0, N - correction)`` with ``N`` the number of entries reduced; ``correction``
        defaults to 1 (Bessel's correction), and PyTorch's older ``unbiased=False`` means ``correction=0``. Composed
        of mean/sub/mul/sum, so it has gradients (any order). ``N <= correction`` gives inf or nan, as in PyTorch.
        Raises ``TypeError`` for both ``unbiased`` and ``correction``, ``DTypeError`` for a non-floating Tensor."""
        if unbiased is not None and correction is not None:
            raise TypeError("Tensor.var: pass unbiased= or correction=, not both (unbiased=False is correction=0)")
        if not _is_floating(self._data):
            raise DTypeError(f"Tensor.var: expected a floating Tensor, got dtype {dtype_name(self.dtype)} (as "
                             "torch.var); cast first (e.g. t.double())")
        corr = correction if correction is not None else (0 if unbiased is False else 1)
        axes = tuple(range(self.ndim)) if dim is None else dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = tuple(_dim_index(a, max(self.ndim, 1), "var") for a in axes)
        n = _numel(tuple(self.shape[a] for a in axes if a < self.ndim))
        dev = self - F.mean(self, axis=axes, keepdims=True)
        ss = F.sum(dev * dev, axis=axes, keepdims=keepdim)
        denom = max(0, n - corr)
        with np.errstate(divide="ignore", invalid="ignore"):  # N <= correction: x / 0, as PyTorch (inf or nan)
            return ss / float(denom)

    def rsqrt(self) -> "Tensor":
        """``1 / sqrt(x)`` (``torch.rsqrt``), as ``x ** -0.5`` (one op; inf at 0, nan below)."""
        return F.pow(self, -0.5)

    def pow(self, exponent: Any) -> "Tensor":
        """``self ** exponent`` (``torch.Tensor.pow``; ``F.pow``, gradients for both)."""
        return F.pow(self, exponent)

    def type_as(self, other: Any) -> "Tensor":
        """This Tensor in ``other``'s dtype (``torch.Tensor.type_as``): itself when the dtype already matches; a
        floating target is recorded (the gradient is cast back), an integer or bool one carries no gradient."""
        dtype = other.dtype
        if dtype == self.dtype:
            return self
        if _is_floating(other._data if isinstance(other, Tensor) else other):
            return F.astype(self, dtype)
        return Tensor(F.astype(self._data, dtype))

    def _new(self, size: Any, fill: Any, dtype: Any, requires_grad: bool, where: str) -> "Tensor":
        if len(size) == 1 and isinstance(size[0], (tuple, list)):
            size = tuple(size[0])
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size):
            raise TypeError(f"Tensor.{where}: size must be non-negative ints, got {tuple(size)}")
        return _filled(self._data, tuple(size), fill, dtype, requires_grad)

    def new_zeros(self, *size: Any, dtype: Any = None, requires_grad: bool = False) -> "Tensor":
        """Zeros of shape ``size`` with this Tensor's backend and dtype (or ``dtype``), a new leaf
        (``torch.Tensor.new_zeros``)."""
        return self._new(size, 0, dtype, requires_grad, "new_zeros")

    def new_ones(self, *size: Any, dtype: Any = None, requires_grad: bool = False) -> "Tensor":
        """Ones of shape ``size``, this Tensor's backend and dtype (``torch.Tensor.new_ones``)."""
        return self._new(size, 1, dtype, requires_grad, "new_ones")

    def new_full(self, size: Any, fill_value: Any, *, dtype: Any = None, requires_grad: bool = False) -> "Tensor":
        """``fill_value`` in shape ``size``, this Tensor's backend and dtype (``torch.Tensor.new_full``)."""
        return self._new((size,), fill_value, dtype, requires_grad, "new_full")

    def narrow(self, dim: int, start: int, length: int) -> "Tensor":
        """Entries ``start .. start + length - 1`` along ``dim`` (``torch.narrow``; a negative ``start`` counts from
        the end); a view on NumPy/CuPy, recorded. Raises ``IndexError`` when ``start`` is out of range or the piece
        runs past the end."""
        d = _dim_index(dim, max(self.ndim, 1), "narrow")
        if self.ndim == 0:
            raise IndexError("narrow: cannot narrow a 0-d Tensor")
        n = self.shape[d]
        if not -n <= start <= n:
            raise IndexError(f"narrow: start {start} out of range for dimension {dim} of size {n}")
        if start < 0:
            start += n
        if length < 0 or start + length > n:
            raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension {dim} of size {n}")
        key = (slice(None),) * d + (slice(start, start + length),)
        return F.index(self, key)

    def unflatten(self, dim: int, sizes: Any) -> "Tensor":
        """Axis ``dim`` split into ``sizes`` (``torch.Tensor.unflatten``; one size may be -1). Raises
        ``ShapeError`` when the sizes do not multiply to that axis's length."""
        shape = self.shape
        d = _dim_index(dim, max(len(shape), 1), "unflatten")
        sizes = tuple(int(s) for s in sizes)
        n = shape[d] if shape else 1
        known = _numel(tuple(s for s in sizes if s != -1))
        if not sizes or sizes.count(-1) > 1 or (-1 in sizes and (known == 0 or n % known)) or \
                (-1 not in sizes and known != n):
            raise ShapeError(f"unflatten: sizes {sizes} do not multiply to the size {n} of dimension {dim} (shape "
                             f"{shape}; at most one -1)")
        sizes = tuple(n // known if s == -1 else s for s in sizes)
        return F.reshape(self, shape[:d] + sizes + shape[d + 1:])

    def is_contiguous(self) -> bool:
        """Whether the array is in C order (``torch.Tensor.is_contiguous``); ``True`` for a namespace without
        strides (the array API standard has none)."""
        flags = getattr(self._data, "flags", None)
        return True if flags is None else bool(flags.c_contiguous)

    def bool(self) -> "Tensor":
        """Cast to bool: nonzero -> ``True`` (no gradient, as in PyTorch)."""
        return Tensor(F.astype(self._data, "bool"))

    def float(self) -> "Tensor":
        """Cast to float32 (recorded: the gradient is cast back)."""
        return F.astype(self, "float32")

    def double(self) -> "Tensor":
        """Cast to float64 (recorded)."""
        return F.astype(self, "float64")

    def half(self) -> "Tensor":
        """Cast to float16 (recorded)."""
        return F.astype(self, "float16")

    def long(self) -> "Tensor":
        """Cast to int64 (no gradient flows through an integer cast, as in PyTorch)."""
        return Tensor(F.astype(self._data, "int64"))

    def int(self) -> "Tensor":
        """Cast to int32 (no gradient)."""
        return Tensor(F.astype(self._data, "int32"))

    def tolist(self) -> Any:
        """The values as (nested) Python lists of numbers; a 0-d Tensor gives a number."""
        return to_numpy(self._data).tolist()

    @property
    def device(self) -> str:
        """Where the data lives, as PyTorch writes it: ``"cpu"`` for NumPy, ``"cuda:<id>"`` for CuPy; other
        array-API namespaces give their backend name (e.g. ``"array_api_strict"``)."""
        be = self.backend
        if be.name == "numpy":
            return "cpu"
        if be.name == "cuda":
            return f"cuda:{self._data.device.id}"
        return be.name


_new_tensor = Tensor.__new__  # (Tensor.__new__ without the class attribute lookup: once per op)


class _Size(int):
    """``Tensor.size``: the element count (an int, so ``p.size`` keeps working as before) that, called, answers
    like ``torch.Tensor.size``: ``()`` -> the shape tuple, ``(d)`` -> ``shape[d]``."""

    def __new__(cls, n: int, shape: Any = ()) -> "_Size":
        obj = super().__new__(cls, n)
        obj.shape = tuple(shape)
        return obj

    def __call__(self, dim: Optional[int] = None) -> Any:
        if dim is None:
            return self.shape
        return self.shape[_dim_index(dim, len(self.shape), "size")]


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= d
    return n




#: while ``tracing`` (xpnn.onnx traces a model): the input Tensor, and ``Tensor._apply_op`` as it was; else None
_traced: list[Any] = [None, None]


def _apply_traced(self: Tensor, op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> Any:
    """``Op.apply`` while ``tracing``: the usual ``_apply_op``, then ``_note_traced`` for a call it did not record (no
    input requires grad)."""
    out = _traced[1](self, op, args, params)
    outs = out if type(out) is tuple else (out,)
    if outs and outs[0]._node is None:
        _note_traced(outs, op, args, params)
    return out


def _note_traced(outs: tuple[Tensor, ...], op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> None:
    """While ``tracing``: give the outputs ``outs`` of an unrecorded call ``op(*args, **params)`` whose inputs include
    the traced input or a Tensor with a recorded history a ``Node`` (they still require no grad), so that the
    exporter sees every value that depends on the input (a mask, its cast, an integer input's arithmetic; it folds
    those that do not)."""
    if any(isinstance(a, Tensor) and (a._node is not None or a is _traced[0]) for a in args):
        ins = tuple([a if isinstance(a, Tensor) else None for a in args])
        node = Node(op, _op.Context((False,) * len(args), ()), ins, args, params)
        for i, t in enumerate(outs):
            t._node, t._index = node, i
        node.outputs = tuple([weakref.ref(t) for t in outs])


def computed_from(t: Tensor, inp: Tensor) -> bool:
    """Whether Tensor ``t`` is ``inp`` or was computed from it by recorded ops (walks ``t``'s history)."""
    stack, seen = [t], set()
    while stack:
        t = stack.pop()
        if t is inp:
            return True
        node = t._node
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            stack.extend(a for a in node.inputs if a is not None)
    return False


def _refuse_traced_write(t: Tensor, others: tuple[Any, ...], where: str) -> None:
    """While ``tracing``: ``ValueError`` for an in-place write (never recorded) into a Tensor computed from the
    traced input, or with a value, mask or index computed from it (the exported graph would miss the write)."""
    inp = _traced[0]
    hit = t if computed_from(t, inp) else next(
        (o for o in others if isinstance(o, Tensor) and computed_from(o, inp)), None)
    if hit is not None:
        what = "the model's input" if hit._node is None else f"the output of op {hit._node.op.name!r}"
        raise ValueError(
            f"xpnn.onnx.export: data-dependent value: {where} writes in place with or into {what}, which is computed "
            "from the input; in-place writes are not recorded, so the exported graph would miss it; write it out of "
            "place (where, masked_fill, concat)")


class tracing:
    """``with tracing(inp):`` what ``xpnn.onnx.export`` runs a model's forward under: every op call that takes
    ``inp`` or a Tensor computed from it is recorded (``_apply_traced``; the usual ``Op.apply`` records only calls
    with an input that requires grad), comparisons and logical operators (``<``, ``==``, ``&``, ``~``...) as the op
    ``Compare``, so that masks computed from the input are part of the graph. Not thread-safe: it swaps
    ``Tensor._apply_op`` for the duration (no cost on the usual path)."""

    def __init__(self, inp: Tensor) -> None:
        self.inp = inp

    def __enter__(self) -> "tracing":
        if _traced[0] is not None:
            raise RuntimeError("xpnn.onnx.export: a model is already being traced (export is not reentrant)")
        _traced[:] = [self.inp, Tensor.__dict__["_apply_op"]]
        Tensor._apply_op = _apply_traced
        return self

    def __exit__(self, *exc: Any) -> None:
        Tensor._apply_op = _traced[1]
        _traced[:] = [None, None]


def bump_versions(tensors: Any) -> None:
    """Record in-place writes to ``tensors`` (an iterable of Tensors): each one's version goes up by 1, so an op
    that saved its values raises ``InplaceModifiedError`` at backward (``Tensor._bump_version`` for one Tensor;
    optimizers call it once per step for the parameters they wrote)."""
    _op.writes += 1
    for t in tensors:
        c = t._vc
        if c is None:
            c = t._vc = VersionCounter()
        c.value += 1


def _note_versions(ctx: Any, tensors: tuple[Any, ...], out: Tensor) -> None:
    """For the check before backward (``check_saved_versions``): ``ctx._writes``, the count of all in-place writes
    so far, and ``ctx._versions``, ``(t, version, t, version, ...)`` for each of ``tensors`` (inputs, ``None`` for
    constants, and more outputs) and ``out`` that has a counter (one without has had no write: version 0). Which of
    them the op saved is sorted out only when some write happened before the backward (the usual case has none)."""
    ctx._writes = _op.writes
    vers = [x for t in tensors if t is not None and t._vc is not None for x in (t, t._vc.value)]
    if out._vc is not None:  # (the output of a view op)
        vers += (out, out._vc.value)
    if vers:
        ctx._versions = vers


def _share_version(t: Tensor, src: Any) -> None:
    """Give ``t`` (the output of a view op) ``src``'s version counter when its array shares ``src``'s memory."""
    if isinstance(src, Tensor) and _same_buffer(t._data, src._data):
        t._vc = _counter(src)


def _same_buffer(a: Any, b: Any) -> bool:
    """Whether array ``a`` is ``b`` or a view of the memory ``b`` views (NumPy and CuPy keep the owner of a view's
    memory in ``.base``; ``array_api_strict`` wraps a NumPy array in ``._array``)."""
    if a is b:
        return True
    a, b = getattr(a, "_array", a), getattr(b, "_array", b)
    base_a = getattr(a, "base", None)
    if base_a is None:
        return False
    base_b = getattr(b, "base", None)
    return base_a is (b if base_b is None else base_b)


def _check_forward_output(op: Any, out: Any, params: dict[str, Any]) -> None:
    """Errors naming a user-declared op whose forward returned something other than arrays."""
    for o in (out if isinstance(out, tuple) else (out,)):
        if isinstance(o, Tensor):
            kw = [k for k, v in params.items() if isinstance(v, Tensor)]
            raise TypeError(f"{op.name}: forward returned a Tensor; forward runs on arrays"
                            + (f", and the keyword argument(s) {', '.join(kw)} were Tensors (keyword arguments are "
                               "parameters, never differentiated): pass a Tensor positionally to get its gradient, "
                               "or pass its .data" if kw else ": call array functions there, not Tensor ops"))
        if not hasattr(o, "shape") or not hasattr(o, "dtype"):
            raise TypeError(f"{op.name}: forward must return an array (or a tuple of arrays), got {type(o).__name__}")


def _seed_grad(out: Tensor, g: Any, where: str, create_graph: bool) -> Any:
    """The starting gradient of a backward from ``out``: ``g`` checked, or ones for a one-element ``out``. An array,
    except a Tensor ``g`` under ``create_graph`` (kept: the gradients then depend on it); the engine wraps arrays
    itself when it records the backward."""
    if g is None:
        d = out._data
        if isinstance(d, np.generic) or type(d) is np.ndarray and d.ndim == 0:  # (a NumPy loss: what ones_like
            # returns, in one call)
            return np.array(1, dtype=d.dtype)
        if out.numel() != 1:
            made_by = f" (made by {out._node.op.name})" if out._node is not None else ""
            raise RuntimeError(f"{where}: grad can be implicitly created only for one-element outputs; this Tensor"
                               f"{made_by} has shape {out.shape}: pass grad= (e.g. ones of that shape), or reduce "
                               "it first (.sum() or .mean())")
        if type(d) is np.ndarray or isinstance(d, np.generic):  # (what the namespace's ones_like returns, faster)
            return np.ones_like(d)
        return namespace_of(d).ones_like(d)
    gd = g._data if isinstance(g, Tensor) else g
    if not hasattr(gd, "shape"):
        raise TypeError(f"{where}: grad must be an array or Tensor, got {type(g).__name__}")
    namespace_of(out._data, gd, where=where)
    if tuple(gd.shape) != out.shape:
        raise ShapeError(f"{where}: grad must have the output's shape {out.shape}, got {tuple(gd.shape)}")
    return g if create_graph and isinstance(g, Tensor) else gd


def tensor(data: Any, requires_grad: bool = False, backend: BackendLike = None, dtype: Any = None) -> Tensor:
    """A leaf Tensor holding ``data`` (an array of any backend, a Tensor, a nested list or a scalar).

    An array keeps its backend and dtype (float64 stays float64) unless ``backend=``/``dtype=`` say otherwise;
    lists and scalars go to ``backend`` (default: the active backend, see ``xpnn.get_backend``) with NumPy's
    dtype rules (Python floats -> float64). ``requires_grad=True`` needs a floating dtype (``DTypeError``).
    """
    src = data if isinstance(data, Tensor) else None
    if src is not None:
        data = src._data
    if backend is None and hasattr(data, "__array_namespace__") or type(data) is np.ndarray:
        be = get_backend(backend) if backend is not None else None
        if be is not None and namespace_of(data) is not be.xp:
            data = be.asarray(data)
        if dtype is not None:
            xp = namespace_of(data)
            data = xp.astype(data, _resolve(xp, dtype))
    else:
        be = get_backend(backend)
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            arr = be.asarray(data, dtype=dtype)
        else:
            arr = be.asarray(np.asarray(data), dtype=dtype)
        data = arr
    t = Tensor(data, requires_grad=requires_grad)
    if src is not None and data is src._data:  # not copied: a write through either is a write to both
        t._vc = _counter(src)
    return t


def _filled(like: Any, shape: tuple[int, ...], fill: Any, dtype: Any, requires_grad: bool) -> Tensor:
    """A new leaf of ``shape`` filled with ``fill``, on ``like``'s backend, in ``dtype`` (default ``like``'s)."""
    xp = namespace_of(like)
    dt = like.dtype if dtype is None else _resolve(xp, dtype)
    return Tensor(xp.full(shape, fill, dtype=dt), requires_grad=requires_grad)


def zeros_like(input: Any, *, dtype: Any = None, requires_grad: bool = False) -> Tensor:  # noqa: A002
    """Zeros of ``input``'s shape, backend and dtype (or ``dtype``): a new leaf Tensor (``torch.zeros_like``);
    ``input`` is a Tensor or an array."""
    a = input._data if isinstance(input, Tensor) else input
    return _filled(a, tuple(a.shape), 0, dtype, requires_grad)


def ones_like(input: Any, *, dtype: Any = None, requires_grad: bool = False) -> Tensor:  # noqa: A002
    """Ones of ``input``'s shape, backend and dtype (or ``dtype``): a new leaf Tensor (``torch.ones_like``)."""
    a = input._data if isinstance(input, Tensor) else input
    return _filled(a, tuple(a.shape), 1, dtype, requires_grad)


def _resolve(xp: Any, dtype: Any) -> Any:
    from .backend import resolve_dtype

    return resolve_dtype(xp, dtype)


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: Optional[bool] = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple[Any, ...]:
    """Gradients of ``outputs`` with respect to ``inputs`` (``torch.autograd.grad``), returned as a tuple of Tensors
    (recorded when ``create_graph``, for higher-order derivatives) without touching any ``.grad``.

    ``outputs``/``inputs``: a Tensor or a sequence of Tensors. ``grad_outputs``: one gradient per output (arrays or
    Tensors); may be omitted for 0-d outputs. Raises ``RuntimeError`` when an input was not used to compute the
    outputs, unless ``allow_unused`` (then its entry is ``None``).
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for t in ins:
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError("xpnn.grad: every input must be a Tensor that requires grad, got "
                               + (type(t).__name__ if not isinstance(t, Tensor) else "a Tensor with requires_grad=False"))
    if grad_outputs is None:
        gouts: list[Any] = [None] * len(outs)
    elif isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
        gouts = [grad_outputs]
    else:
        gouts = list(grad_outputs)
    if len(gouts) != len(outs):
        raise ValueError(f"xpnn.grad: got {len(gouts)} grad_outputs for {len(outs)} outputs")
    seeds = [_seed_grad(o, g, "xpnn.grad", create_graph) for o, g in zip(outs, gouts)]
    keep = create_graph if retain_graph is None else retain_graph
    result = run_backward(outs, seeds, retain_graph=keep, create_graph=create_graph, inputs=ins,
                          tensor_cls=Tensor)
    assert result is not None
    out = []
    for t, g in zip(ins, result):
        if g is None:
            if not allow_unused:
                hint = ("; the parameters of a module with a hand-written backward are not inputs of the graph "
                        "(that backward adds into their .grad): use loss.backward() for them"
                        if t._node is None and hasattr(t, "_flat") else "")
                raise RuntimeError("xpnn.grad: one of the inputs was not used to compute the outputs "
                                   f"(shape {tuple(t.shape)}); pass allow_unused=True to get None for it{hint}")
            out.append(None)
        else:
            out.append(g if isinstance(g, Tensor) else Tensor(g))
    return tuple(out)
