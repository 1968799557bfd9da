"""``xpnn.Tensor``: an array of any backend plus what reverse-mode differentiation needs (PyTorch's semantics).

A Tensor wraps one array (``.data``: NumPy, CuPy or any array-API array) and, once a backward reaches it,
its gradient ``.grad`` (an array of the same backend and shape). Ops on Tensors (``xpnn.functional`` functions,
operators, methods) return Tensors and, when grad mode is on and an input requires grad, record the graph that
``backward()`` walks. ``xpnn.nn.Parameter`` is a leaf Tensor that requires grad.
"""
from __future__ import annotations

import itertools
import operator
import weakref
from typing import Any, Callable, Optional

import numpy as np

from .._torch_names import axis_from_dim
from ..backend import Backend, BackendLike, dtype_name, get_backend, namespace_of, to_numpy
from ..debug import check_device_errors
from ..errors import DTypeError, ShapeError
from . import op as _op
from .engine import Node, _accumulate_leaf, _fire_hooks, run_backward
from .grad_mode import _state as _grad_state, is_grad_enabled
from .op import VersionCounter

__all__ = ["Tensor", "tensor"]

_hook_ids = itertools.count()


def _counter(t: "Tensor") -> VersionCounter:
    """``t``'s version counter, made on first use."""
    c = t._vc
    if c is None:
        c = t._vc = VersionCounter()
    return c


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


class Tensor:
    """An array with an optional gradient and the op that produced it.

    Attributes: ``data`` (the array), ``grad`` (array or ``None``), ``requires_grad``, ``shape``, ``dtype``,
    ``ndim``, ``T``, ``backend``, ``grad_fn`` (the recording node, ``None`` for leaves), ``is_leaf``.
    Build with ``xpnn.tensor(data, requires_grad=...)``.
    """

    __slots__ = ("_data", "_grad", "_requires_grad", "_node", "_index", "_hooks", "_vc", "__weakref__")
    __array_ufunc__ = None  # NumPy operators (ndarray + Tensor) defer to the Tensor's reflected methods
    __array_priority__ = 1000.0
    __hash__ = object.__hash__  # hashed by identity, like torch.Tensor, although == is elementwise

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
    def detach(self) -> "Tensor":
        """A Tensor sharing ``data`` (and its version counter: an in-place write through either is seen by the ops
        that saved the other) without history (no gradient flows back through it)."""
        return Tensor(self)

    def numpy(self) -> np.ndarray:
        """A NumPy copy of ``data`` (a host copy for GPU Tensors); no ``detach`` needed."""
        return np.array(to_numpy(self._data))  # np.array copies by default

    def item(self) -> float:
        """The value of a one-element Tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"Tensor.item: only one-element tensors can be converted, got shape {self.shape}")
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
        from ..functional.shape import to_backend
        from ..backend import is_dtype_like as _is_dtype_like

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
            run_backward([self], [seed], retain_graph=keep, create_graph=create_graph)
            return
        ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not ins or not all(isinstance(t, Tensor) and t.requires_grad for t in ins):
            raise ValueError("backward: inputs= must be a non-empty sequence of Tensors that require grad")
        grads = run_backward([self], [seed], retain_graph=keep, create_graph=create_graph, inputs=ins)
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
        from ..functional.shape import _plain_key

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
        d = self._data
        try:
            out = ifn(d, o)  # the array's own in-place operator (operator.iadd, ...)
        except ValueError:
            from ..functional._checks import broadcast

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

    # comparisons: no gradient, a boolean Tensor
    def _compare(self, other: Any, fn: Callable[[Any, Any], Any], sym: str) -> "Tensor":
        o = other._data if isinstance(other, Tensor) else other
        if hasattr(o, "shape"):
            namespace_of(self._data, o, where="Tensor comparison")
        try:
            return Tensor(fn(self._data, o))
        except ValueError:
            from ..functional._checks import broadcast

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

    # --- methods (each the xpnn.functional op of the same name) ---------------------------------------------
    # (``dim=`` is PyTorch's name for ``axis=``; ``max``/``min`` given ``dim=`` return ``(values, indices)``)
    def sum(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None) -> "Tensor":
        return F.sum(self, axis=axis, keepdims=keepdims, dim=dim)

    def mean(self, axis: Any = None, keepdims: bool = False, *, dim: Any = None) -> "Tensor":
        return F.mean(self, axis=axis, keepdims=keepdims, dim=dim)

    def max(self, axis: Any = None, keepdims: bool = False, *, dim: Optional[int] = None) -> Any:
        return F.max(self, axis=axis, keepdims=keepdims, dim=dim)

    def min(self, axis: Any = None, keepdims: bool = False, *, dim: Optional[int] = None) -> Any:
        return F.min(self, axis=axis, keepdims=keepdims, dim=dim)

    def argmax(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None) -> "Tensor":
        """Indices of the maxima (an integer Tensor, no gradient), e.g. ``(logits.argmax(axis=1) == y)``."""
        if dim is not None:
            axis = axis_from_dim(axis, dim, "argmax")
        return Tensor(namespace_of(self._data).argmax(self._data, axis=axis, keepdims=keepdims))

    def argmin(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None) -> "Tensor":
        """Indices of the minima (an integer Tensor, no gradient)."""
        if dim is not None:
            axis = axis_from_dim(axis, dim, "argmin")
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
        if len(axes) == 2 and all(isinstance(a, int) for a in axes) and self.ndim >= 2:
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

    def logsumexp(self, axis: Optional[int] = None, keepdims: bool = False, *, dim: Optional[int] = None
                  ) -> "Tensor":
        return F.logsumexp(self, axis=axis, keepdims=keepdims, dim=dim)

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
        d = _dim_index(dim, self._data.ndim + 1, "unsqueeze")
        shape = self.shape
        return F.reshape(self, shape[:d] + (1,) + shape[d:])

    def squeeze(self, dim: Any = None) -> "Tensor":
        """Drop axes of length 1: all of them (``dim=None``), or those among ``dim`` (an int or a tuple) that have
        length 1 (others are kept, as in ``torch.squeeze``)."""
        shape, n = self.shape, self._data.ndim
        if dim is None:
            drop = {i for i, s in enumerate(shape) if s == 1}
        else:
            dims = dim if isinstance(dim, (tuple, list)) else (dim,)
            drop = {d for d in (_dim_index(d, max(n, 1), "squeeze") for d in dims) if d < n and shape[d] == 1}
        return F.reshape(self, tuple(s for i, s in enumerate(shape) if i not in drop))

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


def _dim_index(dim: Any, n: int, where: str) -> int:
    """``dim`` in ``[-n, n)`` as an index in ``[0, n)``; ``IndexError`` otherwise (PyTorch's "Dimension out of
    range")."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{where}: dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise IndexError(f"{where}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


def _make(data: Any, node: Optional[Node], index: int, requires_grad: bool) -> Tensor:
    """An op's output Tensor (no validation: the op made ``data``)."""
    t = Tensor.__new__(Tensor)
    t._data = data
    t._grad = t._hooks = t._vc = None
    t._node = node
    t._index = index
    t._requires_grad = requires_grad
    return t


def _apply_tensors(op: Any, args: tuple[Any, ...], params: dict[str, Any]) -> Any:
    """``Op.apply`` when some input is a Tensor: unwrap, run forward, wrap, record a node if needed."""
    grad_on = _grad_state.enabled
    arrays: list[Any] = []
    inputs: list[Any] = []  # (the node's inputs: the Tensors, None for constants)
    flags: list[bool] = []
    record = False
    for a in args:
        if isinstance(a, Tensor):
            arrays.append(a._data)
            inputs.append(a)
            if grad_on and a._requires_grad:
                record = True
                flags.append(True)
            else:
                flags.append(False)
        else:
            arrays.append(a)
            inputs.append(None)
            flags.append(False)
    arrs = tuple(arrays)
    ctx = _op.Context(tuple(flags), arrs)
    out = op._run_forward(ctx, arrs, params)
    if op._user_op:
        _check_forward_output(op, out, params)
    if not record:
        if type(out) is tuple:
            return tuple([_make(o, None, 0, False) for o in out])
        t = _make(out, None, 0, False)
        if op.view:
            _share_version(t, args[0])
        return t
    ins = tuple(inputs)
    node = Node(op, ctx, ins, args, params)
    if type(out) is tuple:
        diff = op.differentiable_outputs
        ctx._xpnn_out_meta = tuple((tuple(o.shape), o.dtype) for o in out)  # zeros for an output the caller dropped
        outs = tuple([_make(o, node, i, diff is None or i in diff) for i, o in enumerate(out)])
        node.outputs = tuple([weakref.ref(t) if t._requires_grad else None for t in outs])
        if ctx._saved:
            _note_versions(ctx, ins + outs[1:], outs[0])
        return outs
    t = Tensor.__new__(Tensor)  # (_make, inline: the usual call)
    t._data = out
    t._grad = t._hooks = t._vc = None
    t._node = node
    t._index = 0
    t._requires_grad = True
    node.outputs = (weakref.ref(t),)
    if op.view:
        _share_version(t, args[0])
        if ctx._saved:
            _note_versions(ctx, ins, t)
    elif ctx._saved:  # _note_versions (inline: the usual call, the output has no counter)
        ctx._writes = _op.writes
        vers = None
        for a in ins:
            if a is not None and a._vc is not None:
                if vers is None:
                    vers = [a, a._vc.value]
                else:
                    vers += (a, a._vc.value)
        if vers is not None:
            ctx._versions = vers
    return t


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


def _resolve(xp: Any, dtype: Any) -> Any:
    from ..backend import resolve_dtype

    return resolve_dtype(xp, dtype)


_op.Tensor = Tensor
_op._apply_tensors = _apply_tensors

from .. import functional as F  # noqa: E402  (the ops behind the operators; functional imports autograd.op only)
