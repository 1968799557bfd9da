"""Reverse-mode differentiation over the recorded graph: ``Node`` (one op call) and ``run_backward``.

A Tensor made by an op points at its ``Node`` (``grad_fn``); a node holds its op, the call's ``Context`` and its
input Tensors (``None`` for constants). ``run_backward`` walks the nodes reachable from the outputs once,
depth first, keeps the ones that lead to a wanted leaf (so gradients nobody asked for, e.g. the data's in the
explicit API with ``need_input_grad=False``, are never computed), and visits them in reverse topological order,
summing the gradients of values used several times. Leaf gradients are added into ``.grad`` (in place, so a
Parameter's gradient stays its view of the model's flat gradient buffer) or returned (``grad``).
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Optional, Sequence

from ..backend import dtype_name, namespace_of
from ..errors import InplaceModifiedError
from .grad_mode import _state as _grad_state
from . import op as _op
from .op import _FREED, _OVERRIDDEN, Context, TensorBase, override_for

__all__ = ["Node", "run_backward", "check_saved_versions"]


class Node:
    """One recorded op call: ``op`` (the ``Op`` subclass), ``ctx``, ``inputs`` (Tensors or ``None`` per positional
    input), weak references to its output Tensors (to hand them to a recorded backward), and the call's arguments as
    given: ``args`` (positional: Tensors and constants) and ``params`` (keywords), which ``xpnn.onnx`` reads to lower
    the graph (references to objects the call made anyway).

    ``live``: per input, whether a gradient flows to it, as recorded (the input required grad, or it is an output
    of another node, as a backward finds it); ``seq``: the node's number in recording order (``next_seq``). A
    backward from nodes all numbered after the last ``note_graph_change`` takes ``live`` as the edges
    (``_recorded_order``); every backward visits the nodes in decreasing ``seq`` (as PyTorch's engine does) where
    that is a topological order, which it is unless an in-place op rewired a Tensor that older nodes used."""

    __slots__ = ("op", "ctx", "inputs", "outputs", "args", "params", "live", "seq", "__weakref__")

    def __init__(self, op: Any, ctx: Context, inputs: tuple[Any, ...], args: tuple[Any, ...] = (),
                 params: Optional[dict[str, Any]] = None, live: Optional[tuple[bool, ...]] = None,
                 seq: int = 0) -> None:
        self.op = op
        self.ctx = ctx
        self.inputs = inputs
        self.outputs: tuple[Any, ...] = ()
        self.args = args
        self.params = params
        self.live = live
        self.seq = seq

    def name(self) -> str:
        return self.op.name

    def __repr__(self) -> str:
        return f"<{self.op.name} backward>"


#: ``next_seq()``: the next node number (``Node.seq``; numbers only grow)
next_seq = itertools.count(1).__next__
_changed = 0  # the number taken by the last note_graph_change


def note_graph_change() -> None:
    """Record a change that can make a recorded graph's live edges differ from the ``live`` flags its nodes
    recorded: a Tensor's ``requires_grad`` set after ops used it, a Tensor rewired to another node by an in-place
    op. Backwards through nodes recorded before it then find the live edges by walking the graph (``_topo``)."""
    global _changed
    _changed = next_seq()


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a + b


def _recorded_order(roots: Sequence[Node], skip: Any) -> Any:
    """The nodes reachable from ``roots`` in reverse recording order (outputs before the nodes that made their
    inputs: a reverse topological order), and the nodes whose edges differ from their ``live`` flags (``skip``'s,
    a leaf whose gradient is not wanted) mapped to their edges; or ``None`` where the recorded flags cannot be
    trusted (a node recorded before the last ``note_graph_change``), a leaf has hooks (their edges
    are counted: ``_topo``), or ``skip`` leaves a node with no live edge."""
    changed = _changed
    seen = set(roots)
    stack = list(seen)
    patched: Optional[dict[Node, tuple[bool, ...]]] = None
    while stack:
        node = stack.pop()
        if node.seq <= changed:
            return None
        for t in node.inputs:
            if t is not None:
                n = t._node
                if n is None:
                    if t._hooks:
                        return None
                    if t is skip:
                        edges = tuple([False if u is skip else f for u, f in zip(node.inputs, node.live)])
                        if True not in edges:
                            return None
                        if patched is None:
                            patched = {}
                        patched[node] = edges
                elif n not in seen:
                    seen.add(n)
                    stack.append(n)
    return sorted(seen, key=_seq_of, reverse=True), patched


_seq_of = operator.attrgetter("seq")


def _topo(roots: Sequence[Node], wanted: Optional[set[int]], skip: Any = None
          ) -> tuple[list[Node], dict[Node, tuple[bool, ...]], dict[int, int]]:
    """(nodes in post-order, in recording order where that is one, node -> per-input "a gradient is needed here" flags (all False: the node leads to
    no wanted leaf and is skipped), leaf id -> number of live edges into it).

    ``wanted``: ids of the Tensors whose gradients are asked for (``grad``), or ``None`` for every leaf that
    requires grad (``backward``); ``skip``: a leaf whose gradient is not wanted. (Nodes are keys by identity:
    ``Node`` keeps object's hash and equality.)"""
    order: list[Node] = []
    edges: dict[Node, Any] = {}
    leaf_edges: dict[int, int] = {}
    every = wanted is None
    by_seq = True  # (every input's node older than its consumer: recording order is a topological order)
    stack = list(roots)
    while stack:
        node = stack[-1]
        flags = edges.get(node)
        if flags is None:  # first visit: its inputs' nodes go on top (it is finished when it is on top again)
            edges[node] = _OPEN
            for t in node.inputs:
                if t is not None:
                    n = t._node
                    if n is not None and n not in edges:
                        stack.append(n)
            continue
        stack.pop()
        if flags is not _OPEN:  # (a node pushed twice: finished already)
            continue
        fl = []
        for t in node.inputs:
            if t is None:
                f = False
            elif t._node is not None:
                f = True in edges[t._node] or not every and id(t) in wanted
                if t._node.seq > node.seq:
                    by_seq = False
            else:
                f = (t._requires_grad and t is not skip) if every else id(t) in wanted
                if f:  # (every leaf: a hook may be added to one while the backward runs)
                    i = id(t)
                    leaf_edges[i] = leaf_edges.get(i, 0) + 1
            fl.append(f)
        edges[node] = tuple(fl)
        order.append(node)
    if by_seq:  # (the order of _recorded_order: the same sums, bit for bit, whichever way a backward goes)
        order.sort(key=_seq_of)
    return order, edges, leaf_edges


_OPEN: Any = object()  # (a node being visited: its inputs' nodes are not all finished yet)


def _saved_as_tensors(node: Node) -> None:
    """For a recorded backward: replace saved arrays that are the call's inputs or outputs by their Tensors."""
    ctx = node.ctx
    by_id = {}
    for t in node.inputs:
        if t is not None:
            by_id[id(t._data)] = t
    for ref in node.outputs:
        t = ref() if ref is not None else None
        if t is not None:
            by_id[id(t._data)] = t
    ctx._saved = tuple(by_id.get(id(v), v) for v in ctx._saved)  # (keys are ids of live arrays: never a Tensor's)


def run_backward(outputs: Sequence[Any], grad_outputs: Sequence[Any], *, retain_graph: bool = False,
                 create_graph: bool = False, inputs: Optional[Sequence[Any]] = None,
                 tensor_cls: Any = None, skip: Any = None) -> Optional[list[Any]]:
    """Back-propagate ``grad_outputs`` (arrays, or Tensors with ``create_graph``) from ``outputs`` (Tensors).

    Without ``inputs``: adds into ``.grad`` of every leaf that requires grad and returns ``None``. With ``inputs``:
    returns their gradients (``None`` where unreachable) and leaves ``.grad`` alone. ``tensor_cls``: with
    ``create_graph``, the class that wraps gradient arrays for the recorded backward (``xpnn.Tensor``: the engine sits
    below it). ``skip`` (without ``inputs``): a leaf whose gradient is not wanted, as if it did not require grad
    (the explicit API's input when ``need_input_grad=False``).
    """
    wanted = {id(t) for t in inputs} if inputs is not None else None
    captured: dict[int, Any] = {}
    pending: dict[Node, list[Any]] = {}  # node -> the gradients reaching its outputs so far
    roots = []
    for out, g in zip(outputs, grad_outputs):
        if wanted is not None and id(out) in wanted:
            captured[id(out)] = _add(captured.get(id(out)), g)
        node = out._node
        if node is None:
            if wanted is None and out.requires_grad and out is not skip:
                _accumulate_leaf(out, g)
                _fire_hooks(out)
            continue
        _pend(pending, node, out._index, g)
        roots.append(node)
    found = _recorded_order(roots, skip) if wanted is None else None
    if found is not None:  # (the usual backward: each node's edges as recorded, no leaf hooks to count edges for)
        order, patched = found
        all_edges = leaf_edges = None
    else:
        order, all_edges, leaf_edges = _topo(roots, wanted, skip)
        order.reverse()
        patched = None
    overridden = _OVERRIDDEN["backward"]
    writes = _op.writes
    plain = not create_graph  # (arrays in and out: no override, or one to look up per op)
    direct = plain and not overridden
    into_grad = plain and wanted is None  # (a backward into .grad: an op may add a leaf's gradient there itself)
    prev_mode = _grad_state.enabled
    _grad_state.enabled = bool(create_graph)
    try:
        for node in order:
            if all_edges is None:
                edges = patched[node] if patched and node in patched else node.live
            else:
                edges = all_edges[node]
                if True not in edges:
                    continue
            ctx = node.ctx
            if ctx._saved is _FREED:
                raise RuntimeError(
                    f"{node.op.name}: trying to backward through the graph a second time (its saved values were "
                    "freed by the first backward); pass retain_graph=True to the first backward or xpnn.grad call")
            grads = pending.pop(node, None)
            if grads is None:  # no gradient reached this node: its leaves' edges still count for their hooks
                if not retain_graph:
                    ctx.free()
                if leaf_edges is not None and wanted is None:  # (with inputs=, the live leaves are the wanted ones:
                    for t, live in zip(node.inputs, edges):  # no hooks then)
                        if live and t._node is None:
                            _leaf_edge_done(t, leaf_edges)
                continue
            if ctx._saved and ctx._writes != writes:  # something was written since the forward
                check_saved_versions(node)
            op = node.op
            if (len(grads) == 1 and not ctx.create_graph and not op._user_op
                    and (direct or plain and op.name not in overridden)):
                # the usual call (one output, arrays, no override): _call_backward's steps that apply (a
                # gradient that is a Tensor, made by a backward from Tensors it kept, is unwrapped below)
                ctx.needs_input_grad = edges
                if op.adds_leaf_grads:  # (Context.leaf_grad; None: one kept from an earlier backward is dropped)
                    ctx._leaf_inputs = node.inputs if into_grad else None
                in_grads = op.backward(ctx, grads[0])
                if type(in_grads) is not tuple:
                    in_grads = (in_grads,)
                if len(in_grads) != len(edges):
                    raise RuntimeError(f"{op.name}: backward returned {len(in_grads)} gradients for "
                                       f"{len(edges)} inputs")
            else:
                in_grads = _call_backward(node, grads, edges, create_graph, tensor_cls)
            if not retain_graph:  # (ctx.free(), inline)
                ctx._saved = _FREED
                ctx._versions = ctx._args = ()
                ctx.__dict__.clear()
            for t, live, g in zip(node.inputs, edges, in_grads):
                if not live:
                    continue
                if plain and isinstance(g, TensorBase):
                    g = g._data
                if wanted and id(t) in wanted:
                    if g is not None:
                        captured[id(t)] = _add(captured.get(id(t)), g)
                    if t._node is None:
                        continue
                n = t._node
                if n is not None:
                    if g is not None:
                        if n in pending or len(n.outputs) != 1:
                            _pend(pending, n, t._index, g)
                        else:  # (the first gradient of a one-output node)
                            pending[n] = [g]
                    continue
                if g is not None:
                    d = t._data
                    if type(g) is type(d) and g.shape == d.shape and g.dtype == d.dtype:
                        t._accumulate_grad(g)  # (what _accumulate_leaf does once its checks pass)
                    else:
                        _accumulate_leaf(t, g, node=node)
                if leaf_edges is not None:
                    i = id(t)  # (_leaf_edge_done, inline)
                    left = leaf_edges[i] - 1
                    leaf_edges[i] = left
                    if left == 0 and t._hooks:
                        _fire_hooks(t)
    finally:
        _grad_state.enabled = prev_mode
    if inputs is None:
        return None
    return [captured.get(id(t)) for t in inputs]


def _leaf_edge_done(t: Any, leaf_edges: dict[int, int]) -> None:
    """One edge into leaf ``t`` is through: fire its hooks after the last one (``_topo`` counted them)."""
    i = id(t)
    left = leaf_edges[i] - 1
    leaf_edges[i] = left
    if left == 0 and t._hooks:
        _fire_hooks(t)


def _pend(pending: dict[Node, list[Any]], node: Node, index: int, g: Any) -> None:
    """Add ``g``, the gradient of ``node``'s output ``index``, to the gradients waiting for ``node``'s backward."""
    slot = pending.get(node)
    if slot is None:
        slot = pending[node] = [None] * len(node.outputs)
        slot[index] = g
    else:
        slot[index] = _add(slot[index], g)


def check_saved_versions(node: Node) -> None:
    """Raise ``InplaceModifiedError`` when a value ``node``'s op saved for backward (one of its input or output
    Tensors' arrays) was written in place since the forward (its version counter moved): the gradient would silently
    use the new values (PyTorch's check). Writes straight into an array (``t.data[...] = v``) bump no counter and
    are not seen."""
    ctx = node.ctx
    vers = ctx._versions
    before = {id(t): v for t, v in zip(vers[::2], vers[1::2])}  # (no counter at the forward: version 0)
    outputs = [ref() if ref is not None else None for ref in node.outputs]
    for k, s in enumerate(ctx._saved):
        for what, tensors in (("input", node.inputs), ("output", outputs)):
            pos = next((i for i, t in enumerate(tensors) if t is not None and t._data is s), None)
            if pos is None:
                continue
            t = tensors[pos]
            version, now = before.get(id(t), 0), t._version
            if now != version:
                name = node.op.name
                raise InplaceModifiedError(
                    f"{name}: one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: {what} {pos} of {name} ({dtype_name(s.dtype)}, shape {tuple(s.shape)}), saved for "
                    f"backward at version {version}, is now at version {now}. Write out of place instead "
                    "(y = x * 2, not x[...] = ... or x *= 2 under no_grad), write before the forward, or run the "
                    "backward before the write (e.g. before optimizer.step())")
            break


def _call_backward(node: Node, grads: list[Any], edges: tuple[bool, ...], create_graph: bool, tensor_cls: Any) -> Any:
    ctx = node.ctx
    if ctx.create_graph and not create_graph:  # a recorded backward before this one swapped Tensors in: hand the
        saved = ctx._saved  # rule arrays again (array * Tensor fails on namespaces whose operators do not defer)
        ctx._saved = tuple(v._data if isinstance(v, TensorBase) else v for v in saved)
    ctx.needs_input_grad = edges
    ctx.create_graph = create_graph
    ctx._leaf_inputs = None  # (Context.leaf_grad: gradients are returned on this path)
    op = node.op
    if len(grads) > 1 and any(g is None for g in grads):  # (a single output was reached: it has its gradient)
        _zero_missing(ctx, node, grads)
    if create_graph:
        _saved_as_tensors(node)
        grads = [g if g is None or isinstance(g, TensorBase) else tensor_cls(g) for g in grads]
        try:
            out = op.backward(ctx, *grads)
        except TypeError as exc:
            if "Tensor" not in str(exc):
                raise
            raise TypeError(f"{op.name}: backward failed on Tensors while create_graph=True records it ({exc}); "
                            "a backward that is differentiated again must be written with xpnn.functional ops "
                            "(or the Tensor operators), not calls into an array library") from exc
    else:
        out = None
        if op.name in _OVERRIDDEN["backward"]:
            fn = override_for(op.name, "backward", grads[0])
            if fn is not None:
                out = fn(ctx, *grads)
                if out is NotImplemented:
                    out = None
        if out is None:
            out = op.backward(ctx, *grads)
    if not isinstance(out, tuple):
        out = (out,)
    if len(out) != len(node.inputs):
        raise RuntimeError(f"{op.name}: backward returned {len(out)} gradients for {len(node.inputs)} inputs")
    if op._user_op:  # ops declared outside xpnn: check each gradient's shape here, where the op can be named
        for t, g, e in zip(node.inputs, out, edges):
            if e and g is not None and tuple(g.shape) != tuple(t._data.shape):
                _accumulate_leaf(t, g, node=node)  # raises the ShapeError that names the op
    if not create_graph:
        for g in out:
            if isinstance(g, TensorBase):  # (a backward that made Tensors from Tensors it kept)
                return tuple(g._data if isinstance(g, TensorBase) else g for g in out)
    return out


def _zero_missing(ctx: Context, node: Node, grads: list[Any]) -> None:
    """An output no gradient reached (unused, or dropped by the caller as in ``y = op(x)[0]``) gets zeros of its
    shape and dtype, as in PyTorch; outputs without gradients (e.g. indices) stay None."""
    like = next(g for g in grads if g is not None)
    xp = namespace_of(like._data if isinstance(like, TensorBase) else like)
    for i, ref in enumerate(node.outputs):
        if grads[i] is None and ref is not None:
            shape, dtype = ctx._xpnn_out_meta[i]
            grads[i] = xp.zeros(shape, dtype=dtype)


def _accumulate_leaf(t: Any, g: Any, node: Optional[Node] = None) -> None:
    """``t.grad += g`` in place when a gradient array exists (a Parameter's flat-buffer view), else store a copy
    (values only: under ``create_graph`` too, as PyTorch's ``.grad`` of a leaf). ``node``: the op whose backward made
    ``g`` (named in the error when its shape is wrong)."""
    if isinstance(g, TensorBase):  # (create_graph): .grad holds values only
        g = g._data
    if g.shape != t._data.shape:
        from ..errors import ShapeError

        raise ShapeError((f"{node.op.name}: backward returned a gradient of shape {tuple(g.shape)} for an input of "
                          f"shape {tuple(t.shape)} (a backward must sum broadcast axes back, e.g. with sum_to)"
                          if node is not None else
                          f"gradient of shape {tuple(g.shape)} does not match tensor of shape {tuple(t.shape)}"))
    if g.dtype != t._data.dtype:  # e.g. a float64 constant in a float32 model: cast as PyTorch does (the array
        from ..backend import namespace_of  # API refuses float32 += float64 in place)

        g = namespace_of(g).astype(g, t._data.dtype)
    t._accumulate_grad(g)


def _fire_hooks(t: Any) -> None:
    hooks = t._hooks
    if hooks:
        for h in list(hooks.values()):
            h(t)


