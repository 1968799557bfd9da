"""Shape ops: ``reshape, permute_dims, broadcast_to, sum_to, index`` (``x[key]``) and ``to_backend``, and PyTorch's
spellings built on them: ``unsqueeze, squeeze, transpose, permute, expand, expand_as, contiguous, clone``.

``index`` takes basic keys (ints, slices, ``None``, ``...``) and integer arrays; in its backward, entries picked
several times by an integer array get the sum of their gradients (a scatter-add: ``numpy.add.at`` on NumPy,
``cupyx.scatter_add`` on CuPy, a one-hot product on other namespaces, which supports one integer array).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .._torch_names import dim_index
from ..autograd.op import Context, Op
from ..backend import Backend, dtype_name, is_cupy_namespace, is_numpy_namespace, namespace_of, resolve_dtype
from ..errors import ShapeError

__all__ = ["reshape", "permute_dims", "broadcast_to", "sum_to", "index", "to_backend", "unsqueeze", "squeeze",
           "transpose", "permute", "expand", "expand_as", "contiguous", "clone"]


class Reshape(Op):
    name = "reshape"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *, shape: tuple[int, ...]) -> Any:
        xp = namespace_of(x, where="reshape")
        ctx.shape = tuple(x.shape)
        try:
            return xp.reshape(x, tuple(shape))
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape an array of shape {tuple(x.shape)} into {tuple(shape)}") from None

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return reshape(g, ctx.shape)

    @staticmethod
    def onnx(g: Any, x: str, *, shape: tuple[int, ...]) -> str:
        """``Reshape`` written to hold for other sizes of the leading axes it keeps (a dynamic batch): the leading
        dims equal to the input's are 0 ("copy"), and a single dim after them is -1 (``Flatten``); otherwise the
        caller's own -1, if any, stays."""
        in_shape = g.shape(x)
        size = int(np.prod(in_shape))
        known = int(np.prod([d for d in shape if d != -1]))
        target = [size // known if d == -1 and known else int(d) for d in shape]
        k = 0
        while k < min(len(target), len(in_shape)) and target[k] == in_shape[k]:
            k += 1
        dims = [0] * k + target[k:]
        if len(target) - k == 1:
            dims[k] = -1
        elif -1 in shape and 0 not in shape:  # no kept leading axis: the caller's -1 (ONNX reads it as NumPy does)
            dims = [int(d) for d in shape]  # holds for other sizes of the axis it stands for, e.g. (T, N, F) -> (-1, F)
        return g.op("Reshape", x, g.ints(dims))


class PermuteDims(Op):
    name = "permute_dims"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *, axes: tuple[int, ...]) -> Any:
        xp = namespace_of(x, where="permute_dims")
        axes = tuple(a % x.ndim for a in axes) if x.ndim else tuple(axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ShapeError(f"permute_dims: axes {tuple(axes)} are not a permutation of the {x.ndim} axes")
        ctx.inverse = tuple(int(i) for i in np.argsort(axes))
        return xp.permute_dims(x, axes)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return permute_dims(g, ctx.inverse)

    @staticmethod
    def onnx(g: Any, x: str, *, axes: tuple[int, ...]) -> str:
        nd = len(g.shape(x))
        return g.op("Transpose", x, perm=[a % nd for a in axes])


class BroadcastTo(Op):
    name = "broadcast_to"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *, shape: tuple[int, ...]) -> Any:
        xp = namespace_of(x, where="broadcast_to")
        ctx.shape = tuple(x.shape)
        return xp.broadcast_to(x, tuple(shape))

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return sum_to(g, ctx.shape)

    @staticmethod
    def onnx(g: Any, x: str, *, shape: tuple[int, ...]) -> str:
        """``Expand``, whose shape input broadcasts both ways: 1 for each axis ``x`` already has at its size, so that
        only the stretched sizes are constants (a dynamic batch axis that ``x`` carries stays dynamic)."""
        have = (None,) * (len(shape) - len(g.shape(x))) + tuple(g.shape(x))
        return g.op("Expand", x, g.ints([1 if h == s else s for h, s in zip(have, shape)]))


class ExpandAs(Op):
    """``x`` broadcast to ``other``'s shape; ``other`` gives only its shape (no gradient). Exported as
    ``Expand(x, Shape(other))``: the sizes follow ``other`` at run time (e.g. its dynamic batch axis)."""

    name = "expand_as"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, other: Any) -> Any:
        xp = namespace_of(x, where="expand_as")  # (of ``other`` only the shape is read, as before)
        ctx.shape = tuple(x.shape)
        return xp.broadcast_to(x, _expanded_shape(tuple(x.shape), tuple(other.shape), "expand_as"))

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[Any, None]:
        return sum_to(g, ctx.shape), None

    @staticmethod
    def onnx(g: Any, x: str, other: str) -> str:
        return g.op("Expand", x, g.op("Shape", other))


class SumTo(Op):
    """The adjoint of broadcasting: sum ``x`` over the axes that broadcasting to its shape added or stretched."""

    name = "sum_to"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *, shape: tuple[int, ...]) -> Any:
        xp = namespace_of(x, where="sum_to")
        shape = tuple(shape)
        lead = x.ndim - len(shape)
        if lead < 0 or any(s != 1 and s != x.shape[i + lead] for i, s in enumerate(shape)):
            raise ShapeError(f"sum_to: shape {shape} does not broadcast to {tuple(x.shape)}")
        axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and x.shape[i + lead] != 1)
        ctx.shape = tuple(x.shape)
        out = xp.sum(x, axis=axes, keepdims=True) if axes else x
        return xp.reshape(out, shape)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return broadcast_to(g, ctx.shape)


def _plain_key(key: Any) -> Any:
    """Tensors inside an index key -> their arrays."""
    if hasattr(key, "_node"):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if hasattr(k, "_node") else k for k in key)
    return key


def _host_indices_to(xp: Any, key: Any) -> Any:
    """Lists and NumPy arrays inside an index key as arrays of ``xp``, the indexed array's namespace (PyTorch takes
    them as indices; ``array_api_strict`` indexes with its own arrays only)."""
    parts = key if isinstance(key, tuple) else (key,)
    if not any(isinstance(k, (list, np.ndarray)) for k in parts):
        return key
    parts = tuple(xp.asarray(k) if isinstance(k, (list, np.ndarray)) else k for k in parts)
    return parts if isinstance(key, tuple) else parts[0]


_BASIC_TYPES = frozenset((int, slice, type(None), type(Ellipsis)))


def _key_snapshot(key: Any, indices: tuple[Any, ...]) -> Any:
    """``key`` (not all ints, slices, None, ``...``) with copies of its lists and arrays, except ``indices`` (index
    Tensors' arrays, saved and version-checked): the backward's scatter reads the key, so a later write into the
    caller's index array or list must not move the gradient (PyTorch copies list keys into index tensors)."""
    parts = key if type(key) is tuple else (key,)
    parts = tuple(k if any(k is i for i in indices) else _copied(k) for k in parts)
    return parts if isinstance(key, tuple) else parts[0]


def _copied(k: Any) -> Any:
    if isinstance(k, list):
        return [_copied(e) for e in k]
    if isinstance(k, np.ndarray):
        return k.copy()
    if hasattr(k, "shape") and hasattr(k, "dtype") and not isinstance(k, np.generic):  # another namespace's array
        return namespace_of(k).asarray(k, copy=True)
    return k


def _is_basic(key: Any) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in parts)


def _is_mask(key: Any) -> bool:
    """A key of basic entries and one boolean array (selects each element at most once)."""
    parts = key if isinstance(key, tuple) else (key,)
    masks = [k for k in parts if hasattr(k, "dtype")]
    if len(masks) != 1 or not all(k is None or k is Ellipsis or isinstance(k, (int, slice)) or k is masks[0]
                                  for k in parts):
        return False
    try:
        return bool(namespace_of(masks[0]).isdtype(masks[0].dtype, "bool"))
    except Exception:
        return False


def _with_ellipsis(key: Any, ndim: int) -> Any:
    """A basic ``key`` with a trailing ``...`` when it indexes fewer axes than ``ndim`` (NumPy implies it; the array
    API standard, e.g. ``array_api_strict``, requires it: ``x[0]`` of a matrix is its first row)."""
    parts = key if isinstance(key, tuple) else (key,)
    if not _is_basic(parts) or any(k is Ellipsis for k in parts):  # (array keys: the namespace's own rules)
        return key
    return parts + (Ellipsis,) if sum(k is not None for k in parts) < ndim else key


class Index(Op):
    name = "index"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *indices: Any, key: Any) -> Any:
        """``indices``: the arrays of the Tensors inside ``key`` (``index``), saved so that a write into one of them
        before the backward (whose scatter reads them) raises ``InplaceModifiedError``."""
        namespace_of(x, where="index")
        if indices:
            ctx.save_for_backward(*indices)
        if ctx.needs_input_grad[0]:
            for k in key if type(key) is tuple else (key,):
                if type(k) not in _BASIC_TYPES:  # (a loop here: basic keys, the common case, cost no call)
                    key = _key_snapshot(key, indices)
                    break
        if type(x) is not np.ndarray:
            key = _with_ellipsis(_host_indices_to(ctx.xp, key), x.ndim)
        ctx.shape, ctx.key = tuple(x.shape), key
        try:
            if type(x) is not np.ndarray and not _is_basic(key) and not is_cupy_namespace(ctx.xp):
                out = _take(ctx.xp, x, key)
                if out is not NotImplemented:
                    return out
            return x[key]
        except IndexError as exc:
            raise IndexError(f"index: {exc} (array of shape {tuple(x.shape)})") from None

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        gx = IndexBackward.apply(g, key=ctx.key, shape=ctx.shape)
        n = len(ctx.saved_tensors)  # (the index Tensors: no gradient)
        return (gx,) + (None,) * n if n else gx

    @staticmethod
    def onnx(g: Any, x: str, *indices: Any, key: Any) -> str:
        """Basic keys (ints, slices, ``None``, ``...``): ``Slice`` (full slices left out, so a dynamic axis stays
        free), ``Squeeze`` of the integer-indexed axes, ``Unsqueeze`` for ``None``. Array keys have no lowering."""
        parts = key if isinstance(key, tuple) else (key,)
        if not _is_basic(parts):
            raise NotImplementedError("xpnn.onnx.export: op 'index' with an array or mask key has no ONNX lowering "
                                      "(basic keys only: ints, slices, None, ...)")
        ndim = len(g.shape(x))
        if not any(k is Ellipsis for k in parts):
            parts = parts + (Ellipsis,)
        at = parts.index(Ellipsis)
        fill = ndim - sum(k is not None for k in parts if k is not Ellipsis)
        parts = parts[:at] + (slice(None),) * fill + parts[at + 1:]
        big = np.iinfo(np.int64).max
        slices: list[tuple[int, int, int, int]] = []  # (start, end, axis, step) of Slice
        squeeze, unsqueeze = [], []
        axis = out = 0
        for k in parts:
            if k is None:
                unsqueeze.append(out)
                out += 1
                continue
            if isinstance(k, int):
                slices.append((k, k + 1 if k != -1 else big, axis, 1))
                squeeze.append(axis)
            else:
                step = 1 if k.step is None else k.step
                if (k.start, k.stop, step) != (None, None, 1):
                    start = k.start if k.start is not None else (0 if step > 0 else big)
                    stop = k.stop if k.stop is not None else (big if step > 0 else -big - 1)
                    slices.append((start, stop, axis, step))
                out += 1
            axis += 1
        y = x
        if slices:
            starts, ends, axes, steps = zip(*slices)
            y = g.op("Slice", y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps))
        if squeeze:
            y = g.op("Squeeze", y, g.ints(squeeze))
        if unsqueeze:
            y = g.op("Unsqueeze", y, g.ints(unsqueeze))
        return y if y is not x else g.op("Identity", x)

class IndexBackward(Op):
    """Scatter-add of ``g`` (the gradient of ``x[key]``) into zeros of ``x``'s shape."""

    name = "index_backward"

    @staticmethod
    def forward(ctx: Context, g: Any, *, key: Any, shape: tuple[int, ...]) -> Any:
        ctx.key = key
        return scatter_add(namespace_of(g, where="index backward"), g, key, shape)

    @staticmethod
    def backward(ctx: Context, gg: Any) -> Any:
        return index(gg, ctx.key)


def scatter_add(xp: Any, g: Any, key: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of ``shape`` (``g``'s dtype) with ``g`` added at ``out[key]``, entries picked several times getting the
    sum (the adjoint of ``x[key]``)."""
    out = xp.zeros(shape, dtype=g.dtype)
    if _is_basic(key) or _is_mask(key):  # no index repeats: assignment is the scatter-add
        out[key] = g
    elif is_numpy_namespace(xp):
        np.add.at(out, key, g)
    elif is_cupy_namespace(xp):
        import cupyx

        cupyx.scatter_add(out, key, g)
    else:
        out = _one_hot_scatter(xp, g, key, shape)
    return out


def _single_array(key: Any, ndim: int) -> Optional[tuple[int, Any]]:
    """``(p, idx)`` when ``key`` is one integer array ``idx`` at axis ``p`` with full slices (or ``...``) elsewhere
    (``x[idx]``, ``x[:, idx]``, ``x[..., idx]``), else ``None``."""
    parts = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in parts):  # spell ... out as full slices
        i = next(i for i, k in enumerate(parts) if k is Ellipsis)
        parts = parts[:i] + (slice(None),) * (ndim - len(parts) + 1) + parts[i + 1:]
    parts = parts + (slice(None),) * (ndim - len(parts))
    arrays = [i for i, k in enumerate(parts) if hasattr(k, "dtype")]
    if len(arrays) != 1 or any(not (isinstance(k, slice) and k == slice(None)) for i, k in enumerate(parts)
                               if i != arrays[0]):
        return None
    return arrays[0], parts[arrays[0]]


def _take(xp: Any, x: Any, key: Any) -> Any:
    """``x[key]`` for one integer array among full slices (``_single_array``) on a namespace whose indexing does not
    take it (the array API standard's ``take`` instead), or ``NotImplemented``."""
    found = _single_array(key, x.ndim)
    if found is None or xp.isdtype(found[1].dtype, "bool"):
        return NotImplemented
    p, idx = found
    shape = tuple(x.shape)
    out = xp.take(x, xp.reshape(idx, (-1,)), axis=p)
    return xp.reshape(out, shape[:p] + tuple(idx.shape) + shape[p + 1:])


def _one_hot_scatter(xp: Any, g: Any, key: Any, shape: tuple[int, ...]) -> Any:
    """Scatter-add for namespaces without integer-array assignment: one integer array at axis p (the other key
    entries full slices) -> ``onehot.T @ g`` along that axis."""
    found = _single_array(key, len(shape))
    if found is None:
        raise NotImplementedError("index: on this namespace the backward of an integer-array index supports one "
                                  "integer array with full slices elsewhere (x[idx], x[:, idx])")
    p, idx = found
    idx = xp.reshape(idx, (-1,))
    k = idx.shape[0]
    g = xp.reshape(g, shape[:p] + (k,) + shape[p + 1:])
    n = shape[p]
    hot = xp.astype(xp.arange(n, dtype=idx.dtype)[:, None] == idx[None, :], g.dtype)  # (n, k)
    order = (p,) + tuple(i for i in range(g.ndim) if i != p)
    gm = xp.permute_dims(g, order)
    rest = tuple(gm.shape[1:])
    prod = 1
    for s in rest:
        prod *= s
    out = hot @ xp.reshape(gm, (k, prod))
    out = xp.reshape(out, (n,) + rest)
    return xp.permute_dims(out, tuple(int(i) for i in np.argsort(order)))


class Clone(Op):
    name = "clone"

    @staticmethod
    def forward(ctx: Context, x: Any, *, c_order: bool = False) -> Any:
        """A copy (``c_order``: in C order, for arrays with strides: NumPy, CuPy)."""
        xp = namespace_of(x, where="clone")
        return x.copy(order="C") if c_order else xp.asarray(x, copy=True)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return g

    @staticmethod
    def onnx(g: Any, x: str, *, c_order: bool = False) -> str:
        return g.op("Identity", x)


class ToBackend(Op):
    name = "to_backend"
    view = True

    @staticmethod
    def forward(ctx: Context, x: Any, *, backend: Backend, dtype: Any = None) -> Any:
        src = namespace_of(x, where="to_backend")
        from ..backend import get_backend

        ctx.src, ctx.dtype = get_backend(src), dtype_name(x.dtype)
        dt = None if dtype is None else dtype_name(resolve_dtype(backend.xp, dtype))
        return backend.asarray(x, dtype=dt)

    @staticmethod
    def backward(ctx: Context, g: Any) -> Any:
        return to_backend(g, backend=ctx.src, dtype=ctx.dtype)

    @staticmethod
    def onnx(g: Any, x: str, *, backend: Backend, dtype: Any = None) -> str:
        """``t.to(dtype)`` (e.g. a mask's ``m.to(x.dtype)``): ``Cast``, as ``astype``; a move between backends is
        nothing in the graph (``Identity``)."""
        return g.op("Identity", x) if dtype is None else g.cast(x, resolve_dtype(np, dtype))


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    """``x`` with a new ``shape`` (one entry may be -1)."""
    if tuple(x.shape) == tuple(shape):
        return x
    return Reshape.apply(x, shape=tuple(shape))


def permute_dims(x: Any, axes: tuple[int, ...]) -> Any:
    """Axes reordered: ``out.shape[i] = x.shape[axes[i]]``."""
    return PermuteDims.apply(x, axes=tuple(axes))


def broadcast_to(x: Any, shape: tuple[int, ...]) -> Any:
    """``x`` broadcast to ``shape`` (a read-only view on NumPy); the gradient is summed back."""
    if tuple(x.shape) == tuple(shape):
        return x
    return BroadcastTo.apply(x, shape=tuple(shape))


def sum_to(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``x`` down to ``shape``, which must broadcast to ``x.shape`` (the gradient of broadcasting)."""
    if tuple(x.shape) == tuple(shape):
        return x
    return SumTo.apply(x, shape=tuple(shape))


def index(x: Any, key: Any) -> Any:
    """``x[key]`` with basic keys or integer arrays; repeated indices accumulate their gradients. Tensors inside
    ``key`` are inputs of the recorded op too (no gradient): a write into one before the backward raises
    ``InplaceModifiedError``."""
    parts = key if isinstance(key, tuple) else (key,)
    tensors = [k for k in parts if hasattr(k, "_node")]
    if tensors and hasattr(x, "_node"):
        return Index.apply(x, *tensors, key=_plain_key(key))
    return Index.apply(x, key=_plain_key(key))


def to_backend(x: Any, backend: Backend, dtype: Any = None) -> Any:
    """``x`` copied to ``backend`` (and cast to ``dtype``); the gradient goes back to ``x``'s backend and dtype."""
    return ToBackend.apply(x, backend=backend, dtype=dtype)


def unsqueeze(x: Any, dim: int) -> Any:
    """A new axis of length 1 at ``dim`` (in ``[-ndim-1, ndim]``; ``torch.unsqueeze``). Raises ``IndexError`` for a
    ``dim`` out of range."""
    shape = tuple(x.shape)
    d = dim_index(dim, len(shape) + 1, "unsqueeze")
    return reshape(x, shape[:d] + (1,) + shape[d:])


def squeeze(x: Any, dim: Any = None) -> Any:
    """Axes of length 1 dropped: all of them (``dim=None``), or those among ``dim`` (an int or a tuple) that have
    length 1; the others named are kept (``torch.squeeze``). Raises ``IndexError`` for a ``dim`` out of range."""
    shape = tuple(x.shape)
    n = len(shape)
    if dim is None:
        drop = {i for i, s in enumerate(shape) if s == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        drop = {d for d in (dim_index(d, max(n, 1), "squeeze") for d in dims) if d < n and shape[d] == 1}
    return reshape(x, tuple(s for i, s in enumerate(shape) if i not in drop))


def transpose(x: Any, dim0: int, dim1: int) -> Any:
    """``x`` with axes ``dim0`` and ``dim1`` swapped (``torch.transpose``). Raises ``IndexError`` for a dim out of
    range."""
    n = len(x.shape)
    order = list(range(n))
    i, j = dim_index(dim0, max(n, 1), "transpose"), dim_index(dim1, max(n, 1), "transpose")
    if i == j or n < 2:
        return x
    order[i], order[j] = j, i
    return permute_dims(x, tuple(order))


def permute(x: Any, dims: tuple[int, ...]) -> Any:
    """``torch.permute``: ``out.shape[i] = x.shape[dims[i]]`` (``permute_dims`` under PyTorch's name)."""
    return permute_dims(x, dims)


def expand(x: Any, *sizes: Any) -> Any:
    """``x`` broadcast to ``sizes`` (a tuple or the sizes as arguments) as ``torch.Tensor.expand``: ``-1`` keeps an
    axis's size, new axes go in front, only axes of length 1 stretch. No copy on NumPy/CuPy; the gradient is summed
    back. Raises ``ShapeError`` for sizes ``x`` does not expand to."""
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    return broadcast_to(x, _expanded_shape(tuple(x.shape), tuple(sizes), "expand"))


def _expanded_shape(shape: tuple[int, ...], sizes: tuple[Any, ...], where: str) -> tuple[int, ...]:
    """The shape ``torch.Tensor.expand`` makes of ``shape`` with ``sizes``, or ``ShapeError`` naming ``where``."""
    lead = len(sizes) - len(shape)
    if lead < 0:
        raise ShapeError(f"{where}: the number of sizes {tuple(sizes)} must be at least the number of dimensions of "
                         f"shape {shape}")
    out = []
    for i, s in enumerate(sizes):
        old = shape[i - lead] if i >= lead else None
        if s == -1 and old is not None:
            s = old
        if not isinstance(s, int) or s < 0 or (old is not None and old != 1 and old != s):
            raise ShapeError(f"{where}: cannot expand shape {shape} to {tuple(sizes)} (only axes of length 1 "
                             "stretch, -1 keeps an existing axis, new axes go in front)")
        out.append(int(s))
    return tuple(out)


def expand_as(x: Any, other: Any) -> Any:
    """``x`` broadcast to ``other``'s shape (``torch.Tensor.expand_as``); the gradient is summed back to ``x``,
    ``other`` gets none. ONNX export reads the shape from ``other`` at run time (``Shape``), so a constant (a class
    token, say) expanded to the shape of a value with a dynamic batch axis exports with that axis dynamic. Raises
    ``ShapeError`` as ``expand``."""
    return ExpandAs.apply(x, other)


def contiguous(x: Any) -> Any:
    """``x`` in C order (``torch.Tensor.contiguous``): ``x`` itself when it already is, or when its namespace has no
    strides (the array API standard has none); a copy (``clone``) otherwise."""
    flags = getattr(x.data if hasattr(x, "_node") else x, "flags", None)
    if flags is None or flags.c_contiguous:
        return x
    return Clone.apply(x, c_order=True)


def clone(x: Any) -> Any:
    """A copy of ``x`` that shares no memory with it (``torch.clone``; NumPy and CuPy keep the memory layout); the
    gradient passes through."""
    return Clone.apply(x)
