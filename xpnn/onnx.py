"""Export a model to ONNX: ``export(model, example_input, path)`` (needs ``pip install "xpnn[onnx]"``).

The trace is the graph autograd records anyway: the model runs in eval mode on a Tensor that requires grad,
and the exporter walks the recorded ``Node``s back from the output (each names its ``Op`` class, its inputs and the
call's arguments: two references per recorded op, the only cost normal execution pays for export). Every op on the path from the input to the output
is lowered by its declaration's ``onnx`` static method (next to its ``forward`` and ``backward`` in
``xpnn/functional``), which emits ONNX nodes through the small builder ``_Graph`` below; an op without one is refused
by name. Values that do not depend on the input (parameters, buffers, anything computed from them alone) become
initializers, named by the model's ``state_dict`` keys where they are parameters or buffers.

Values that depend on the input are never baked in as constants. The trace (``xpnn._tensor.tracing``) records every
op call that takes the input or a value computed from it, also those without a gradient (an integer input's
arithmetic, a mask's cast, ``detach()``), and comparisons and logical operators (``x > 0``, ``~m``, ``a & b``: ONNX's
``Greater``, ``Not``, ``And``...), so a mask fed to ``where`` or ``masked_fill`` is computed in the graph. A value
that escapes the recorded ops (``Tensor.data``/``.numpy()`` and array code, ``.item()``, ``bool()`` and Python
control flow on values) is caught by a second trace on an input of the same shape with other values: a graph that
differs is an error naming the op that used the value ("data-dependent value ..."), as is an op parameter computed
from the input.

Dynamic axes follow ``torch.onnx.export``: static unless ``dynamic_axes`` names them. With dynamic axes the model is
traced a second time with those axes doubled, and the two graphs must be identical, so a lowering that baked a size
of a dynamic axis into the graph (a reshape to a fixed batch size, say) is an error instead of a model that fails
or is silently wrong at another size.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ._version import __version__
from .autograd.grad_mode import enable_grad
from ._tensor import Tensor, computed_from, tracing
from .backend import namespace_of, to_numpy
from .io import atomic_write

__all__ = ["export", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis, Squeeze/Unsqueeze/Split with axes as inputs

DynamicAxes = Mapping[str, Union[Sequence[int], Mapping[int, str]]]


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError('xpnn.onnx.export needs the onnx package: pip install "xpnn[onnx]"') from None
    return onnx


class _Graph:
    """The builder an op's ``onnx`` lowering writes through: ``op`` (a node), ``const``/``ints`` (initializers),
    ``reduce`` (ReduceMean/ReduceMax/... across the opset-18 change of ``axes`` to an input), and what is known of
    a value (``dtype``, ``shape``: the traced example's) and of the target (``opset``)."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self._onnx = onnx
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.meta: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self.state_names: dict[int, str] = {}  # id of a parameter's array or a buffer -> its state_dict key
        self.outputs: list[str] = []  # the value names of the model's outputs
        self._arrays: dict[int, tuple[Any, str]] = {}  # id of a constant array -> (the array, its initializer)
        self._count = 0
        self.lowering = ""  # the xpnn op being lowered
        self.origin: dict[str, str] = {}  # node or initializer name -> the xpnn op whose lowering made it

    def _fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def op(self, op_type: str, *inputs: Optional[str], outputs: int = 1, **attrs: Any) -> Any:
        """Add a node ``op_type(*inputs)`` (``None`` for an omitted optional input) with ``attrs``; returns the name
        of its output, or a tuple of ``outputs`` names."""
        names = [self._fresh(op_type) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = self._onnx.helper.make_node(op_type, ["" if i is None else i for i in inputs], names,
                                           name=self._fresh(f"node_{op_type}"), **attrs)
        self.nodes.append(node)
        self.origin[node.name] = self.lowering
        return names[0] if outputs == 1 else tuple(names)

    def const(self, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (array, Tensor or scalar) as ``dtype`` (a NumPy dtype, or a value name
        whose dtype to take; default the value's own); returns its name: the ``state_dict`` key for a parameter or
        buffer of the model (one initializer each, however often used), else a fresh one."""
        if isinstance(value, Tensor):
            value = value.data
        if isinstance(dtype, str) and dtype in self.meta:
            dtype = self.dtype(dtype)
        known = self.state_names.get(id(value))
        arr = np.asarray(to_numpy(value) if hasattr(value, "__array_namespace__") else value)
        if dtype is not None and arr.dtype != np.dtype(dtype):
            arr, known = arr.astype(dtype), None
        elif known is None and hasattr(value, "shape"):  # an array used by several ops: one initializer
            seen = self._arrays.get(id(value))
            if seen is not None and seen[0] is value:
                return seen[1]
        if known is not None and known in self.initializers:
            return known
        name = known or self._fresh("const")
        self.initializers[name] = arr
        self.origin[name] = self.lowering
        self.meta[name] = (arr.dtype, tuple(arr.shape))
        if known is None and dtype is None and hasattr(value, "shape"):
            self._arrays[id(value)] = (value, name)  # (keeps value alive: its id is not reused)
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 initializer (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        """``op_type`` (ReduceMean, ReduceMax, ReduceSum, ...) over ``axes``: an attribute before opset 18, an
        input from 18 on (ReduceSum: from 13 on)."""
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, x, self.ints(axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def cast(self, x: str, dtype: Any) -> str:
        """``Cast`` of ``x`` to the NumPy ``dtype`` (``x`` itself when it has that dtype)."""
        dtype = np.dtype(dtype)
        if x in self.meta and self.dtype(x) == dtype:
            return x
        out = self.op("Cast", x, to=self._onnx.helper.np_dtype_to_tensor_dtype(dtype))
        if x in self.meta:
            self.meta[out] = (dtype, self.shape(x))
        return out

    def in_float32(self, op_type: str, x: str, *inputs: Optional[str], **attrs: Any) -> str:
        """``op_type(x, *inputs)`` computed in float32 when ``x`` is float16 and cast back, as the forwards that
        upcast float16 do (sigmoid, the softmax family, batch statistics)."""
        if self.dtype(x) != np.float16:
            return self.op(op_type, x, *inputs, **attrs)
        return self.cast(self.op(op_type, self.cast(x, np.float32), *inputs, **attrs), np.float16)

    def dtype(self, name: str) -> np.dtype:
        """The NumPy dtype of value ``name``."""
        return self.meta[name][0]

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape value ``name`` had in the traced example (dynamic axes: their example size)."""
        return self.meta[name][1]


def _trace(model: Any, x: Any) -> tuple[Tensor, list[Tensor]]:
    """Run ``model`` in eval mode on ``x`` with the graph recorded; (input Tensor, output Tensors)."""
    # (integer input, e.g. token ids, cannot require grad: the ops that take it are recorded through their
    # parameters, an Embedding's weight)
    inp = Tensor(x, requires_grad=bool(namespace_of(x).isdtype(x.dtype, "real floating")))
    was_training = model.training
    model.eval()
    try:
        with enable_grad(), tracing(inp):
            out = model(inp)
    finally:
        model.train(was_training)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"xpnn.onnx.export: the model's output {i} is a {type(o).__name__}, not a Tensor; the "
                            "model must return Tensors (or a tuple of them) when called on a Tensor")
    return inp, outs


def _lower(onnx: Any, opset: int, model: Any, inp: Tensor, outs: list[Tensor], input_name: str) -> _Graph:
    """Walk the recorded graph from ``outs`` back to ``inp`` and emit each op on the path through its lowering."""
    g = _Graph(onnx, opset)
    for name, p in model.named_parameters():
        g.state_names.setdefault(id(p.data), name)
    for prefix, mod in model.named_modules():  # buffers (running statistics) are passed to ops as arrays
        for name, arr in mod._buffers.items():
            if arr is not None:
                g.state_names.setdefault(id(arr), f"{prefix}.{name}" if prefix else name)

    g.meta[input_name] = (_np_dtype(inp.data), tuple(inp.shape))
    names: dict[tuple[int, int], str] = {}  # (id(node), output index) -> value name
    depends: dict[int, bool] = {}  # id(node) -> lies on a path from the input

    def on_path(t: Any) -> bool:
        if t is inp:
            return True
        node = t._node
        return node is not None and depends[id(node)]

    def operand(a: Any) -> Any:
        if a is None or isinstance(a, (bool, int, float)):
            return a
        if isinstance(a, Tensor):
            if a is inp:
                return input_name
            if on_path(a):
                return names[(id(a._node), a._index)]
        return g.const(a)  # a parameter, a buffer, or folded: computed from them alone

    # post-order over the nodes reachable from the outputs (iterative: deep models exceed the recursion limit)
    order: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, bool]] = [(o._node, False) for o in outs if o._node is not None]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            depends[id(node)] = any(t is not None and on_path(t) for t in node.inputs)
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for t in node.inputs:
            if t is not None and t._node is not None and id(t._node) not in seen:
                stack.append((t._node, False))

    for node in order:
        if not depends[id(node)]:
            continue  # computed from constants alone: its outputs are folded where they are used
        op = node.op
        lowering = op.onnx
        if lowering is None:
            raise NotImplementedError(
                f"xpnn.onnx.export: op {op.name!r} ({op.__module__}.{op.__qualname__}) has no ONNX lowering; "
                "declare an onnx(g, *inputs, **params) static method on it (see xpnn.autograd.Op.onnx)")
        for key, value in (node.params or {}).items():
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(v, Tensor) and computed_from(v, inp):
                    raise ValueError(
                        f"xpnn.onnx.export: data-dependent value: parameter {key!r} of op {op.name!r} is computed "
                        "from the model's input, and an op's parameters are constants of the exported graph (it "
                        "would hold the traced input's value for every input); pass it as a positional input of an "
                        "op with an ONNX lowering, or compute it from parameters and constants only")
        g.lowering = op.name
        args = [operand(a) for a in node.args]
        for name, t in zip(args, node.inputs):  # what is known of each input (dtype, example shape)
            if t is not None and name not in g.meta:
                g.meta[name] = (_np_dtype(t.data), tuple(t.shape))
        result = lowering(g, *args, **(node.params or {}))
        results = result if isinstance(result, tuple) else (result,)
        for i, name in enumerate(results):
            names[(id(node), i)] = name
        for i, ref in enumerate(node.outputs):
            t = ref() if ref is not None else None
            if t is not None and i < len(results):
                g.meta[results[i]] = (_np_dtype(t.data), tuple(t.shape))
    g.outputs = [operand(o) for o in outs]
    return g


def _np_dtype(arr: Any) -> np.dtype:
    name = str(arr.dtype)
    return np.dtype(name.split(".")[-1])


def _dynamic_map(dynamic_axes: Optional[DynamicAxes], known: Sequence[str],
                 ndims: dict[str, int]) -> dict[str, dict[int, str]]:
    """``dynamic_axes`` (torch's forms: ``{name: [axis, ...]}`` or ``{name: {axis: "dim name"}}``) checked and
    normalised to ``{name: {axis: dim name}}``."""
    out: dict[str, dict[int, str]] = {}
    for key, axes in (dynamic_axes or {}).items():
        if key not in known:
            raise ValueError(f"xpnn.onnx.export: dynamic_axes names {key!r}, which is neither an input nor an output "
                             f"name ({', '.join(map(repr, known))})")
        if isinstance(axes, Mapping):
            items = [(int(a), str(n)) for a, n in axes.items()]
        else:
            items = [(int(a), f"{key}_dynamic_axes_{int(a) + 1}") for a in axes]
        nd = ndims[key]
        norm = {}
        for a, n in items:
            if not -nd <= a < nd:
                raise ValueError(f"xpnn.onnx.export: dynamic axis {a} of {key!r} is out of range for {nd} dimensions")
            norm[a % nd] = n
        out[key] = norm
    return out


def _same_graph(a: _Graph, b: _Graph) -> Optional[str]:
    """``None`` when the two lowerings made the same nodes and constants; else the first difference."""
    for na, nb in zip(a.nodes, b.nodes):
        if na.SerializeToString() != nb.SerializeToString():
            return f"node {na.name} ({na.op_type}, lowering op {a.origin.get(na.name, '?')!r})"
    if len(a.nodes) != len(b.nodes):
        return "the number of nodes"
    for name, arr in a.initializers.items():
        other = b.initializers.get(name)
        if other is None or other.shape != arr.shape or other.dtype != arr.dtype or not np.array_equal(
                arr, other, equal_nan=arr.dtype.kind == "f"):
            return f"constant {name} of shape {arr.shape} (used by op {a.origin.get(name, '?')!r})"
    return None


def _probe(data: Any) -> Optional[Any]:
    """An input of ``data``'s shape, dtype and backend with other values, for the check that the graph does not
    depend on the input's values: floats drawn uniformly in the example's finite range (a constant example: plus
    a standard normal draw), integers and bools the example's own values shuffled (valid ids stay valid); ``None``
    when shuffling changes nothing (every value the same)."""
    arr = np.asarray(to_numpy(data))
    rng = np.random.default_rng(0)
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)].astype(np.float64)
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        vals = rng.uniform(lo, hi, arr.shape) if hi > lo else arr + rng.standard_normal(arr.shape)
        other = vals.astype(arr.dtype)
    else:
        other = rng.permutation(arr.reshape(-1)).reshape(arr.shape)
        if np.array_equal(other, arr):
            return None
    return namespace_of(data).asarray(other)


def export(model: Any, example_input: Any, path: Union[str, "os.PathLike[str]"], *,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
           dynamic_axes: Optional[DynamicAxes] = None, opset_version: Optional[int] = None) -> None:
    """Write ``model``'s forward on ``example_input`` as an ONNX model to ``path`` (atomically).

    ``example_input``: an array (or Tensor) of the model's backend and dtype, e.g. ``(N, 784)`` float32; only its
    shape and dtype are baked in, on the non-dynamic axes. ``input_names``/``output_names``: default ``["input"]``
    and ``["output"]`` (``output0, output1, ...`` for a tuple output). ``dynamic_axes``: as ``torch.onnx.export``,
    e.g. ``{"input": {0: "batch"}, "output": {0: "batch"}}`` or ``{"input": [0]}``; without it every axis is static
    (torch's default); an output axis whose size follows a dynamic input axis is marked dynamic with its name.
    ``opset_version``: 13 up to the installed onnx's newest (default 17).

    The model runs in eval mode (its mode is restored): on the example, on a second input (below), and with dynamic
    axes on the example doubled along them. float16, float32 and float64
    models export with their dtype. The written model passes ``onnx.checker.check_model``.

    The model also runs on a second input of the example's shape and dtype with other values (floats drawn in the
    example's range; integer ids shuffled): its graph must be the same, or the export would hold a value of the
    example input as a constant.

    Raises ``ImportError`` without the onnx package, ``NotImplementedError`` naming an op that has no ONNX lowering,
    ``ValueError`` for bad names/axes/opset, a graph that depends on the size of a dynamic axis, or one that depends
    on the input's values outside the recorded ops ("data-dependent value ...", naming the op that used it).
    """
    onnx = _require_onnx()
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset_version is None else opset_version
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"xpnn.onnx.export: opset_version must be an int from {MIN_OPSET} to {newest} (the "
                         f"installed onnx's newest), got {opset_version!r}")
    data = example_input.data if isinstance(example_input, Tensor) else example_input
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise TypeError(f"xpnn.onnx.export: example_input must be an array or Tensor, got {type(data).__name__}")
    in_names = list(input_names) if input_names is not None else ["input"]
    if len(in_names) != 1:
        raise ValueError(f"xpnn.onnx.export: the model takes one input, got input_names={in_names!r}")

    inp, outs = _trace(model, data)
    if output_names is None:
        out_names = ["output"] if len(outs) == 1 else [f"output{i}" for i in range(len(outs))]
    else:
        out_names = list(output_names)
        if len(out_names) != len(outs):
            raise ValueError(f"xpnn.onnx.export: the model has {len(outs)} output(s), got output_names={out_names!r}")
    if len(set(in_names + out_names)) != len(in_names) + len(out_names):
        raise ValueError(f"xpnn.onnx.export: input and output names must be distinct, got {in_names + out_names}")
    ndims = {in_names[0]: data.ndim, **{n: o.ndim for n, o in zip(out_names, outs)}}
    dyn = _dynamic_map(dynamic_axes, in_names + out_names, ndims)

    g = _lower(onnx, opset, model, inp, outs, in_names[0])
    other = _probe(data)
    if other is not None:  # values of the input that reach the graph as constants (or change its structure)
        try:
            inp2, outs2 = _trace(model, other)
        except Exception as exc:
            raise ValueError(
                f"xpnn.onnx.export: the model raised {type(exc).__name__} ({exc}) on a second input of the example's "
                "shape, dtype and value range, which export runs to check that the graph does not depend on the "
                "input's values") from exc
        diff = _same_graph(g, _lower(onnx, opset, model, inp2, outs2, in_names[0]))
        if diff is not None:
            raise ValueError(
                f"xpnn.onnx.export: data-dependent value: {diff} differs between the traces of the example input "
                "and of another input of its shape (values drawn in its range), so the exported graph would give "
                "the example's answer for every input. A value computed from the input outside xpnn's recorded ops "
                "(Tensor.data or .numpy() and array code, .item(), bool() or Python control flow on values) "
                "cannot be exported; compute it with xpnn ops on Tensors (comparisons, where, masked_fill, ...), "
                "which are recorded and exported")
    out_dims: list[list[Any]] = [list(o.shape) for o in outs]
    in_dyn = dyn.get(in_names[0], {})
    if in_dyn:
        xp = namespace_of(data)
        bigger = data
        for axis in sorted(in_dyn):
            bigger = xp.concat([bigger, bigger], axis=axis)
        inp2, outs2 = _trace(model, bigger)
        g2 = _lower(onnx, opset, model, inp2, outs2, in_names[0])
        diff = _same_graph(g, g2)
        if diff is not None:
            raise ValueError(
                f"xpnn.onnx.export: the graph depends on the size of the dynamic axes {sorted(in_dyn)} of "
                f"{in_names[0]!r} (traced with shapes {tuple(data.shape)} and {tuple(bigger.shape)}, {diff} "
                "differs): an op's arguments hold a size of a dynamic axis (e.g. a reshape to a fixed batch "
                "size); make the axis static or the op size-independent (reshape with -1)")
        for k, (o1, o2) in enumerate(zip(outs, outs2)):  # output axes that grew with the input's dynamic axes
            for a, (s1, s2) in enumerate(zip(o1.shape, o2.shape)):
                if s1 != s2:
                    grew = [n for ax, n in in_dyn.items() if data.shape[ax] == s1 and bigger.shape[ax] == s2]
                    out_dims[k][a] = grew[0] if grew else f"{out_names[k]}_dynamic_axes_{a + 1}"
    for k, name in enumerate(out_names):
        for a, dim in dyn.get(name, {}).items():
            out_dims[k][a] = dim

    helper = onnx.helper
    nodes = list(g.nodes)
    outputs = []
    for k, (value, name) in enumerate(zip(g.outputs, out_names)):
        nodes.append(helper.make_node("Identity", [value], [name], name=f"output_{k}"))
        outputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(_np_dtype(outs[k].data)), out_dims[k]))
    in_dims: list[Any] = list(data.shape)
    for a, dim in in_dyn.items():
        in_dims[a] = dim
    inputs = [helper.make_tensor_value_info(in_names[0], helper.np_dtype_to_tensor_dtype(_np_dtype(data)), in_dims)]
    inits = [onnx.numpy_helper.from_array(arr, name) for name, arr in g.initializers.items()]
    graph = helper.make_graph(nodes, type(model).__name__, inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="xpnn", producer_version=__version__)
    proto.ir_version = helper.find_min_ir_version_for(opsets)  # readable by the oldest runtime of that opset
    onnx.checker.check_model(proto, full_check=True)
    payload = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(payload), where="xpnn.onnx.export")
