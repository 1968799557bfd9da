"""``DistributedDataParallel``: one model replica per rank, gradients averaged over ranks during backward.

Follows ``torch.nn.parallel.DistributedDataParallel``: wrapping checks that every rank built the same model
(names, shapes, dtypes) and copies rank 0's parameters and buffers to all ranks; each backward all-reduces the
flat gradient buffer in buckets (``xpnn.distributed.buckets``) while the rest of backward runs; ``no_sync()``
skips the reduction for gradient accumulation. The optimizer is built on the module's parameters as usual and,
since every rank then applies the same averaged gradient to the same values, the replicas stay identical.

Both APIs work: ``loss = loss_fn(ddp(x_tensor), y); loss.backward()`` (the tape) and ``ddp.backward(dy)`` after
``ddp(x_array)`` (the explicit API, sugar over the same engine). Buckets start from each parameter's
post-accumulate-grad hook, so the engine's reverse order decides when a bucket is complete.

Only parameters that require grad are reduced (frozen ones are not sent; the buckets are planned again when
``requires_grad`` changes, which must happen alike on every rank). A parameter that requires grad but gets no
gradient keeps its bucket from completing on the tape: the next forward raises, unless
``find_unused_parameters=True``, which (as PyTorch) walks the graph of each forward's output to find the
parameters it does not reach and marks them ready when backward starts, so their gradients are reduced as they
are (zero after ``zero_grad``) and all ranks agree.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Iterator, Optional

from ..autograd.grad_mode import is_grad_enabled
from .._tensor import Tensor
from ..backend import dtype_name
from ..nn.explicit import Module
from ..nn.module import IncompatibleKeys
from ..nn.parameter import Parameter
from .buckets import UNUSED_HINT, GradReducer
from .process_group import DistributedError, ProcessGroup, get_process_group

__all__ = ["DistributedDataParallel"]


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over ``process_group`` (default: the initialised group).

    ``bucket_cap_mb``: the size of one all-reduce (MiB of gradient). ``find_unused_parameters``: allow parameters
    that require grad to get no gradient in a backward on the tape (found by walking each forward's output graph,
    as ``torch.nn.parallel.DistributedDataParallel(find_unused_parameters=True)``; costs one graph walk per
    forward); without it such a parameter makes the next forward raise. ``broadcast_buffers``: copy rank 0's buffers
    (BatchNorm running statistics) to every rank before each training-mode forward, as PyTorch does by default, so
    all replicas evaluate alike. ``ddp(x)`` runs ``module(x)`` (on the tape for Tensors); ``ddp.backward(dy)``
    back-propagates through the last ``ddp(x)`` on arrays and returns the input gradient, with the parameter
    gradients averaged over ranks when it returns; ``loss.backward()`` on the tape averages them the same way. ``.module`` is the wrapped model; ``state_dict``/``load_state_dict``/
    ``named_parameters`` use its names (no ``module.`` prefix), so checkpoints load into an unwrapped model.

    Raises ``DistributedError`` when the ranks' models differ (naming the rank and parameter; which parameters
    require grad included) or the parameters are not in one flat buffer (one backend and dtype), ``TypeError``
    when ``module`` is not a Module.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, *, broadcast_buffers: bool = True,
                 process_group: Optional[ProcessGroup] = None, find_unused_parameters: bool = False) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be an xpnn.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.module = module
        group = process_group if process_group is not None else get_process_group()
        object.__setattr__(self, "process_group", group)
        object.__setattr__(self, "bucket_cap_mb", bucket_cap_mb)
        object.__setattr__(self, "broadcast_buffers", bool(broadcast_buffers))
        object.__setattr__(self, "require_backward_grad_sync", True)
        object.__setattr__(self, "find_unused_parameters", bool(find_unused_parameters))
        object.__setattr__(self, "_unused", None)  # parameters the last forward's output does not reach
        named = list(module.named_parameters())
        object.__setattr__(self, "_names", {id(p): n for n, p in named})
        self._check_same_model(group, named, list(module.named_buffers()))
        buf = module.flat_buffer()
        if named and buf is None:
            raise DistributedError(
                f"DistributedDataParallel: the parameters of {type(module).__name__} are not in one flat buffer "
                f"(dtypes {sorted({dtype_name(p.dtype) for _, p in named})}); use one backend and dtype for the "
                "whole model (model.to(backend, dtype=...)) and wrap the whole model")
        self._broadcast_state(group, buf, module)
        object.__setattr__(self, "reducer", self._make_reducer(buf))
        object.__setattr__(self, "_hook_handles", self._register_hooks(named))

    # --- wrap time ----------------------------------------------------------------------------------------
    @staticmethod
    def _check_same_model(group: ProcessGroup, named: list[tuple[str, Parameter]],
                          buffers: list[tuple[str, Any]]) -> None:
        mine = [(n, tuple(p.shape), dtype_name(p.dtype) + ("" if p.requires_grad else " (frozen)"))
                for n, p in named]
        mine += [(f"buffer {n}", tuple(b.shape), dtype_name(b.dtype)) for n, b in buffers]
        every = group.allgather_object(mine)  # every rank sees every list and raises the same error: no hang
        ref = every[0]
        for r, theirs in enumerate(every[1:], start=1):
            if theirs == ref:
                continue
            diffs = [f"{a[0]}: rank 0 has {a[1]} {a[2]}, rank {r} has "
                     + (f"{b[1]} {b[2]}" if a[0] == b[0] else f"{b[0]} {b[1]} {b[2]}")
                     for a, b in zip(ref, theirs) if a != b]
            if len(ref) != len(theirs):
                diffs.append(f"rank 0 has {len(ref)} parameters and buffers, rank {r} has {len(theirs)}")
            raise DistributedError("DistributedDataParallel: the ranks built different models: "
                                   + "; ".join(diffs[:5]) + ("; ..." if len(diffs) > 5 else ""))

    @staticmethod
    def _broadcast_state(group: ProcessGroup, buf: Any, module: Module) -> None:
        if group.world_size == 1:
            return
        if buf is not None:
            group.broadcast(buf.data, src=0)  # one message for all parameters
            for p in buf.params:
                p.mark_changed()
        for _, b in module.named_buffers():
            group.broadcast(b, src=0)

    def _make_reducer(self, buf: Any) -> Optional[GradReducer]:
        return GradReducer(buf, self.process_group, int(self.bucket_cap_mb * 2**20)) if buf is not None else None

    def _replan(self) -> None:
        """``requires_grad`` changed since the buckets were planned: check that every rank froze the same
        parameters (a collective: the change must be made on every rank) and plan new buckets."""
        names = [self._names.get(id(p), p.name) for p in self.reducer.buf.params if p.requires_grad]
        every = self.process_group.allgather_object(names)
        for r, theirs in enumerate(every):
            if theirs != every[0]:
                raise DistributedError(
                    "DistributedDataParallel: the ranks changed requires_grad differently: parameters requiring "
                    f"grad on rank 0 {every[0][:10]}, on rank {r} {theirs[:10]}; freeze or unfreeze alike on every "
                    "rank")
        object.__setattr__(self, "reducer", self._make_reducer(self.reducer.buf))

    def _register_hooks(self, named: list[tuple[str, Parameter]]) -> list[Any]:
        """A post-accumulate-grad hook on every parameter: the engine calls it once the parameter's gradient of
        the running backward is complete, on both APIs (``loss.backward()`` and ``ddp.backward(dy)``)."""
        if self.reducer is None:
            return []
        return [p.register_post_accumulate_grad_hook(self._grad_ready) for _, p in named]

    def _grad_ready(self, p: Parameter) -> None:
        if self.require_backward_grad_sync and self.reducer is not None:
            unused = self._unused
            if unused:  # find_unused_parameters: the first gradient of this backward marks the unreached ones
                object.__setattr__(self, "_unused", None)
                for q in unused:
                    self.reducer.mark_ready(q)
            self.reducer.mark_ready(p)

    def _unreached(self, out: Any) -> Optional[list[Parameter]]:
        """The reduced parameters that no Tensor in ``out`` (a Tensor, or tuples/lists/dicts of them) depends on
        through the recorded graph (PyTorch's unused-parameter search); ``None`` when ``out`` holds no Tensor."""
        tensors, stack = [], [out]
        while stack:
            o = stack.pop()
            if isinstance(o, Tensor):
                tensors.append(o)
            elif isinstance(o, (tuple, list)):
                stack.extend(o)
            elif isinstance(o, dict):
                stack.extend(o.values())
        if not tensors:
            return None
        leaves = {id(t) for t in tensors if t._node is None}
        nodes, seen = [t._node for t in tensors if t._node is not None], set()
        while nodes:
            node = nodes.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for t in node.inputs:
                if t is None:
                    continue
                if t._node is None:
                    leaves.add(id(t))
                else:
                    nodes.append(t._node)
        return [p for p in self.reducer.params if id(p) not in leaves]

    # --- running ------------------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.reducer is not None:
            if self.reducer.active:
                missing = [self._names.get(id(p), p.name) for p in self.reducer.missing()]
                why = (UNUSED_HINT if not self.find_unused_parameters else
                       "they take part in this module's output but not in the loss (find_unused_parameters=True "
                       "covers only parameters the output does not depend on)")
                raise DistributedError(
                    "DistributedDataParallel: the previous backward did not produce gradients for parameters "
                    f"{missing[:10]}, so their buckets were never all-reduced; {why}")
            if self.reducer.stale():
                self._replan()
        if self.broadcast_buffers and self.training and self.process_group.world_size > 1:
            for _, b in self.module.named_buffers():
                self.process_group.broadcast(b, src=0)
        out = self.module(*args, **kwargs)
        search = (self.find_unused_parameters and self.reducer is not None and self.require_backward_grad_sync
                  and is_grad_enabled())
        object.__setattr__(self, "_unused", self._unreached(out) if search else None)
        return out

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        """Explicit API: back-propagate ``dy`` through the last ``ddp(x)`` on arrays, with the parameter gradients
        averaged over ranks when it returns (unless in ``no_sync``); returns the input gradient (``None`` with
        ``need_input_grad=False``). Buckets start from the hooks as backward completes them; at the end, parameters
        that got no gradient (a layer written with its own ``backward``, or unused) are added as they are."""
        sync = self.require_backward_grad_sync and self.reducer is not None
        if sync:
            self.reducer.begin()
        dx = Module.backward(self, dy, need_input_grad)
        if sync:
            self.reducer.finish()
        return dx

    backward._xpnn_tape = True  # type: ignore[attr-defined]  # the tape's backward, not an explicit one

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside, backward only accumulates local gradients; the first backward after it averages the sum."""
        old = self.require_backward_grad_sync
        object.__setattr__(self, "require_backward_grad_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "require_backward_grad_sync", old)

    # --- the module's names -------------------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return self.module.named_parameters()

    def parameters(self) -> Iterator[Parameter]:
        return self.module.parameters()

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        return self.module.named_buffers()

    def state_dict(self) -> "OrderedDict[str, Any]":
        return self.module.state_dict()

    def load_state_dict(self, state: Any, strict: bool = True) -> IncompatibleKeys:
        return self.module.load_state_dict(state, strict)

    def flat_buffer(self) -> Any:
        return self.module.flat_buffer()

    def to(self, backend: Any = None, *, dtype: Any = None) -> "DistributedDataParallel":
        """``module.to(...)`` (which repacks the flat buffer), then new buckets over the new buffer."""
        self.module.to(backend, dtype=dtype)
        object.__setattr__(self, "reducer", self._make_reducer(self.module.flat_buffer()))
        return self

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.module.zero_grad(set_to_none)

    @property
    def rank(self) -> int:
        return self.process_group.rank

    @property
    def world_size(self) -> int:
        return self.process_group.world_size

    def extra_repr(self) -> str:
        n = len(self.reducer.buckets) if self.reducer is not None else 0
        return (f"world_size={self.world_size}, backend={self.process_group.backend!r}, "
                f"bucket_cap_mb={self.bucket_cap_mb}, buckets={n}"
                + (", find_unused_parameters=True" if self.find_unused_parameters else ""))
