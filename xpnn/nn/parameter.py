"""Parameters and the flat buffers that hold a model's parameters and gradients in one array each.

A ``FlatBuffer`` owns two 1-D arrays, ``data`` and ``grad``; each member Parameter's ``.data`` and ``.grad`` are
reshaped views of a slice of them (``p._flat`` is the buffer, ``p._offset`` the start of the slice). Slices start
at multiples of 64 bytes (``ALIGN_BYTES``); the padding between them is 0 in both arrays, so the buffer size is
not the sum of the parameter sizes: code splitting a flat array per parameter uses ``p._offset``. Optimizers
that find the whole parameter list in one buffer (``flat_buffer_of``) update it in one pass.

On a namespace where a reshaped slice is not a writable view (checked once per namespace by writing through),
parameters keep their own arrays and ``FlatBuffer.pack`` returns ``None``: the generic per-parameter path still works.
"""
from __future__ import annotations

import operator
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .._tensor import Tensor
from ..backend import Backend, BackendLike, dtype_name, get_backend, namespace_of, resolve_dtype
from ..errors import DTypeError, NamespaceMismatchError, ShapeError
from ..random import generator

__all__ = ["Parameter", "FlatBuffer", "flat_buffer_of", "views_supported", "factory"]


class Parameter(Tensor):
    """A trainable array: a leaf ``xpnn.Tensor`` (``requires_grad=True``) with ``.data`` (the values) and ``.grad``
    (the accumulated gradient, same shape and dtype). ``loss.backward()`` and the explicit ``m.backward(dy)`` add
    into ``.grad`` in place, so a model's gradients stay views of its flat gradient buffer.

    ``.grad`` of a lone Parameter is allocated as zeros on first access (it is never ``None`` when read);
    assigning ``p.grad = None`` drops it (zeros again on next access). For a member of a ``FlatBuffer``,
    assigning ``p.data = a`` or ``p.grad = a`` copies ``a`` into the view (the view stays shared with the buffer),
    and ``p.grad = None`` zeroes the view.

    Its version counter (``_version``, PyTorch's) counts in-place writes: ``data`` assignment, optimizer steps,
    ``Module.load_state_dict``, ``xpnn.init``, ``p[key] = v``; a backward through an op that saved the parameter
    before such a write raises ``InplaceModifiedError``. Optimizers do not rely on it: one keeping a float32 master
    copy of a float16 parameter compares the copy with the values on the device before each step, so any write,
    even ``p.data[...] = 0`` that bumps no version, is kept.
    """

    __slots__ = ("_flat", "_offset", "name")

    #: ``_accumulate_grad`` is ``.grad += g`` in place once a gradient array exists, so an op's backward may add
    #: into that array itself (``xpnn.autograd.op.leaf_grad_target``)
    _grad_in_place = True

    def __init__(self, data: Any, name: Optional[str] = None, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        xp = namespace_of(data, where="Parameter")
        if not xp.isdtype(data.dtype, "real floating"):
            raise DTypeError(f"Parameter: data must be a floating array (float16/32/64), got dtype {dtype_name(data.dtype)}")
        super().__init__(data)
        self._requires_grad = bool(requires_grad)  # (floating: checked above)
        self._flat: Optional[FlatBuffer] = None
        self._offset: int = 0
        self.name = name

    # --- copies -------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """For ``copy.deepcopy`` and pickle: the values without the FlatBuffer (a copied view would be an array of
        its own, no longer in the copied buffer, so an optimizer of the copy updated the buffer and not the
        parameters, silently); the copy is a lone Parameter until its module packs it again
        (``Module.__setstate__``)."""
        state = {k: getattr(self, k) for k in ("_data", "_grad", "_requires_grad", "_node", "_index", "_hooks",
                                               "name")}
        state["_flat"], state["_offset"], state["_vc"] = None, 0, None  # (the copy's values are its own)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._vc = None
        for k, v in state.items():
            if k != "_version":  # (an int stamp that pickles of earlier versions carry; the counter replaced it)
                object.__setattr__(self, k, v)

    # --- values -------------------------------------------------------------------------------------------
    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, Tensor):
            value = value.data
        if self._flat is not None:
            _copy_into(self._data, value, self._where(), "data")
            self.mark_changed()
            return
        xp = namespace_of(value, where=self._where())
        if not xp.isdtype(value.dtype, "real floating"):
            raise DTypeError(f"{self._where()}: data must be floating, got dtype {dtype_name(value.dtype)}")
        self._data = value
        g = self._grad  # keep the gradient only if it still fits (namespace checked first: dtypes of two
        if g is not None and (namespace_of(g) is not xp  # libraries must not be compared)
                              or tuple(g.shape) != tuple(value.shape) or g.dtype != value.dtype):
            self._grad = None
        self.mark_changed()

    @property
    def grad(self) -> Any:
        if self._grad is None:
            xp = namespace_of(self._data)
            self._grad = xp.zeros_like(self._data)
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is None:
            if self._flat is not None:
                self._grad[...] = 0
            else:
                self._grad = None
            return
        if self._flat is not None:
            _copy_into(self._grad, value, self._where(), "grad")
            return
        if tuple(value.shape) != tuple(self._data.shape):
            raise ShapeError(f"{self._where()}: grad must have shape {tuple(self._data.shape)}, got {tuple(value.shape)}")
        if value.dtype != self._data.dtype:
            raise DTypeError(f"{self._where()}: grad dtype {dtype_name(value.dtype)} differs from data dtype "
                             f"{dtype_name(self._data.dtype)}")
        namespace_of(self._data, value, where=self._where())
        self._grad = value

    def _accumulate_grad(self, g: Any) -> None:
        """``.grad += g`` in place (into the flat gradient buffer's view for a member of one)."""
        cur = self._grad
        if cur is None:
            cur = self.grad  # (made on first use)
        cur += g

    @property
    def has_grad(self) -> bool:
        """Whether a gradient array exists (always true for flat members) without allocating one."""
        return self._grad is not None

    # (shape, dtype, ndim, size and np.asarray(p) come from Tensor)
    def mark_changed(self) -> None:
        """Record that the values were changed in place (bumps the version counter, see the class docstring;
        ``data`` assignment, ``load_state_dict``, ``xpnn.init`` and data-parallel broadcasts call it)."""
        self._bump_version()

    def zero_grad(self) -> None:
        """Set the gradient to zeros in place (allocating it for a lone Parameter if needed)."""
        g = self.grad
        g[...] = 0

    def _where(self) -> str:
        return f"Parameter {self.name!r}" if self.name else "Parameter"

    def _detach_from_flat(self) -> None:
        """Give this Parameter its own copies of data and grad (leaving its FlatBuffer)."""
        if self._flat is None:
            return
        xp = namespace_of(self._data)
        self._data = xp.asarray(self._data, copy=True)
        self._grad = xp.asarray(self._grad, copy=True)
        self._flat = None
        self._offset = 0

    def __repr__(self) -> str:
        flat = ", flat" if self._flat is not None else ""
        return f"Parameter(shape={self.shape}, dtype={dtype_name(self.dtype)}{flat})"


def _copy_into(view: Any, value: Any, where: str, what: str) -> None:
    if isinstance(value, Tensor):
        value = value.data
    if tuple(value.shape) != tuple(view.shape):
        raise ShapeError(f"{where}: {what} must have shape {tuple(view.shape)}, got {tuple(value.shape)}")
    namespace_of(view, value, where=where)
    if value.dtype != view.dtype:
        xp = namespace_of(view)
        value = xp.astype(value, view.dtype)
    view[...] = value


_VIEWS_OK: dict[int, bool] = {}


def views_supported(xp: Any) -> bool:
    """Whether a reshaped slice of a 1-D array of namespace ``xp`` is a writable view (checked by writing through)."""
    key = id(xp)
    if key not in _VIEWS_OK:
        ok = False
        try:
            flat = xp.zeros(6, dtype=xp.float32)
            v = xp.reshape(flat[1:5], (2, 2))
            v[...] = xp.ones((2, 2), dtype=xp.float32)
            v += 1
            ok = float(xp.sum(flat)) == 8.0 and float(flat[0]) == 0.0 and float(flat[5]) == 0.0
        except Exception:
            ok = False
        _VIEWS_OK[key] = ok
    return _VIEWS_OK[key]


class FlatBuffer:
    """One 1-D ``data`` and one 1-D ``grad`` array holding ``params`` (in order) as views.

    Build with ``FlatBuffer.pack(params)``, which copies current values and gradients in and returns ``None``
    when the parameters cannot share a buffer (mixed namespaces or dtypes, or a namespace without views).
    """

    def __init__(self, data: Any, grad: Any, params: list[Parameter]):
        self.data = data
        self.grad = grad
        self.params = params

    @property
    def size(self) -> int:
        return int(self.data.shape[0])

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @staticmethod
    def pack(params: Iterable[Parameter]) -> Optional["FlatBuffer"]:
        """Move ``params`` (unique, in order) into a fresh buffer; ``None`` (nothing changed) when that is impossible."""
        plist = _unique(params)
        if not plist:
            return None
        try:
            xp = namespace_of(*[p.data for p in plist], where="FlatBuffer")
        except (NamespaceMismatchError, TypeError):
            return None
        dtype = plist[0].dtype
        if any(p.dtype != dtype for p in plist) or not views_supported(xp):
            return None
        offsets = _aligned_offsets([p.size for p in plist], np.dtype(dtype_name(dtype)).itemsize)
        total = offsets[-1] + plist[-1].size
        data = xp.zeros(total, dtype=dtype)  # padding between parameters stays 0 (data and grad)
        grad = xp.zeros(total, dtype=dtype)
        buf = FlatBuffer(data, grad, plist)
        for p, offset in zip(plist, offsets):
            n, shape = p.size, p.shape
            old_data, old_grad = p._data, p._grad
            data[offset:offset + n] = xp.reshape(old_data, (n,))
            if old_grad is not None:
                grad[offset:offset + n] = xp.reshape(old_grad, (n,))
            p._data = xp.reshape(data[offset:offset + n], shape)
            p._grad = xp.reshape(grad[offset:offset + n], shape)
            p._flat = buf
            p._offset = offset
        return buf

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"FlatBuffer(size={self.size}, dtype={dtype_name(self.dtype)}, params={len(self.params)})"


ALIGN_BYTES = 64  # each parameter's offset in a FlatBuffer is a multiple of this many bytes


def _aligned_offsets(sizes: Sequence[int], itemsize: int) -> list[int]:
    """Start of each parameter in a flat buffer: consecutive, each rounded up to ALIGN_BYTES (so that a kernel
    over one parameter's slice, like over the whole buffer, can use 16-byte vector loads; the padding entries are 0
    in data and grad and stay 0 under every optimizer's update)."""
    step = max(1, ALIGN_BYTES // itemsize)
    offsets, offset = [], 0
    for n in sizes:
        offsets.append(offset)
        offset += -(-n // step) * step
    return offsets


def _unique(params: Iterable[Parameter]) -> list[Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"expected Parameter objects, got {type(p).__name__}")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def flat_buffer_of(params: Iterable[Parameter]) -> Optional[FlatBuffer]:
    """The FlatBuffer whose member list is exactly ``params`` (same order), else ``None``."""
    plist = list(params)
    if not plist:
        return None
    buf = plist[0]._flat if isinstance(plist[0], Parameter) else None
    if buf is None or len(buf.params) != len(plist):
        return None
    if all(map(operator.is_, buf.params, plist)):
        return buf
    return None


def common_buffer(params: Sequence[Parameter]) -> Optional[FlatBuffer]:
    """The single FlatBuffer that all of ``params`` belong to (possibly with other members too), else ``None``."""
    if not params:
        return None
    buf = params[0]._flat
    if buf is None:
        return None
    return buf if all(p._flat is buf for p in params) else None


def factory(backend: BackendLike, dtype: Any, seed: Any) -> tuple[Backend, Any, np.random.Generator]:
    """``(Backend, dtype, NumPy Generator)`` for a layer constructor's ``backend=, dtype=, seed=`` arguments.

    dtype defaults to float32 and must be floating; ``seed`` may be an int, a Generator or ``None``.
    """
    be = get_backend(backend)
    dt = resolve_dtype(be.xp, dtype)
    if not be.xp.isdtype(dt, "real floating"):
        raise DTypeError(f"parameters must be floating (float16/32/64), got dtype {dtype_name(dt)}")
    return be, dt, generator(seed)
