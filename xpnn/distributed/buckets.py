"""Gradient buckets: contiguous slices of a model's flat gradient buffer, all-reduced as soon as backward fills them.

Parameters sit in the FlatBuffer in registration order and backward produces their gradients roughly in reverse,
so bucket 0 is the *last* ``cap`` elements of the buffer, bucket 1 the ``cap`` before them, and so on (the first
bucket may be shorter). Boundaries fall at fixed element counts, so one parameter may span two buckets; a bucket
is ready when every parameter overlapping it has its gradient. Buckets are launched strictly in index order (MPI
and NCCL need every rank to start the same collectives in the same order), each as soon as it and all before it
are ready: the slice is multiplied by 1 / world size (while it is still in cache from backward; PyTorch's DDP
pre-divides the same way) and summed over ranks by a non-blocking ``MPI_Iallreduce``, or ``ncclAllReduce`` on a
side CUDA stream. ``finish`` waits for them all. The sum is the same on every rank, so the averaged gradients agree
bit for bit; for 2 ranks (a power of two) pre-dividing gives exactly the bits of dividing the sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..backend import dtype_name, is_cupy_namespace, namespace_of
from ..nn.parameter import FlatBuffer, Parameter
from .process_group import DistributedError, ProcessGroup, _nccl_dtype, _nccl_module

__all__ = ["Bucket", "plan_buckets", "GradReducer"]

#: how to resolve a parameter that requires grad but got none (named in the errors, README "When a job hangs")
UNUSED_HINT = ("every parameter that requires grad must take part in the loss on every rank: pass "
               "find_unused_parameters=True to DistributedDataParallel when some do not (their gradients are then "
               "reduced as they are, zero after zero_grad), or freeze them with requires_grad_(False) on every rank")


@dataclass
class Bucket:
    """Elements ``[start, stop)`` of the flat gradient buffer and the parameters overlapping them."""

    index: int
    start: int
    stop: int
    params: list[Parameter]
    pending: int = 0
    handle: Any = None
    host: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_buckets(buf: FlatBuffer, cap_bytes: int, params: Optional[list[Parameter]] = None) -> list[Bucket]:
    """Split the parts of ``buf`` that hold ``params`` into buckets of at most ``cap_bytes`` (at least one element
    each), from the end backwards.

    ``params``: the parameters to reduce; default: those that require grad (PyTorch's DDP reduces only those: a
    frozen layer's gradient is neither sent nor changed). Buckets cover runs of consecutive reduced parameters
    (with the alignment padding between them) and never reach into a parameter left out."""
    if cap_bytes <= 0:
        raise ValueError(f"bucket_cap_mb must be > 0, got a cap of {cap_bytes} bytes")
    itemsize = int(np.dtype(dtype_name(buf.dtype)).itemsize)
    cap = max(1, int(cap_bytes) // itemsize)
    if params is None:
        params = [p for p in buf.params if p.requires_grad]
    keep = {id(p) for p in params}
    spans = []  # (start, stop, param) of the reduced parameters
    runs: list[list[int]] = []  # [start, stop) of each run of consecutive reduced parameters
    open_run = False
    for p in sorted(buf.params, key=lambda q: q._offset):
        if id(p) not in keep:
            open_run = False
            continue
        a, b = p._offset, p._offset + p.size
        spans.append((a, b, p))
        if open_run:
            runs[-1][1] = b
        else:
            runs.append([a, b])
            open_run = True
    buckets: list[Bucket] = []
    for first, stop in reversed(runs):
        while stop > first:
            start = max(first, stop - cap)
            members = [p for a, b, p in spans if a < stop and b > start and b > a]
            buckets.append(Bucket(len(buckets), start, stop, members))
            stop = start
    return buckets


class GradReducer:
    """Averages the gradients of the parameters of ``buf`` that require grad (``params``, fixed when made) over the
    ranks of ``group`` bucket by bucket; ``mark_ready(p)`` is called once p's gradient for this backward is
    complete, ``finish()`` completes the step (marking the parameters that got no gradient: their buckets must
    still be summed, with the gradient they hold -- zero after ``zero_grad`` -- so that every rank runs the same
    collectives). ``stale()`` says whether ``requires_grad`` changed since (then make a new reducer)."""

    def __init__(self, buf: FlatBuffer, group: ProcessGroup, cap_bytes: int) -> None:
        self.buf = buf
        self.group = group
        self._flags = tuple(p.requires_grad for p in buf.params)
        self.params = [p for p in buf.params if p.requires_grad]
        self.buckets = plan_buckets(buf, cap_bytes, self.params)
        self.cupy = is_cupy_namespace(namespace_of(buf.grad))
        if dtype_name(buf.dtype) == "float16" and not (self.cupy and group.nccl is not None):
            raise DistributedError("DistributedDataParallel: float16 gradients cannot be reduced over MPI (no MPI "
                                   "float16 sum); use float32 parameters or the NCCL backend")
        self._of: dict[int, list[Bucket]] = {}
        for b in self.buckets:
            for p in b.params:
                self._of.setdefault(id(p), []).append(b)
        self._ready: set[int] = set()
        self._next = 0
        self._completed = True
        self._reset()

    def stale(self) -> bool:
        """Whether some parameter's ``requires_grad`` changed since this reducer was planned."""
        return tuple(p.requires_grad for p in self.buf.params) != self._flags

    @property
    def active(self) -> bool:
        """Whether a reduction has started (some gradient marked ready) and not yet finished."""
        return bool(self._ready)

    def _reset(self) -> None:
        self._ready.clear()
        self._next = 0
        for b in self.buckets:
            b.pending = len(b.params)
            b.handle = None

    def missing(self) -> list[Parameter]:
        """Parameters whose gradient has not been marked ready in the current reduction."""
        return [p for p in self.params if id(p) not in self._ready and p.size > 0]

    def begin(self) -> None:
        """Start a reduction for the coming backward (the first ``mark_ready`` also starts one)."""
        if self._ready:
            raise DistributedError("DistributedDataParallel: the previous backward's gradient reduction did not "
                                   f"finish: no gradient reached {len(self.missing())} parameters "
                                   f"(shapes {[p.shape for p in self.missing()][:10]}); {UNUSED_HINT}")
        self._completed = False

    def mark_ready(self, p: Parameter) -> None:
        """Record that p's gradient is complete; launch every bucket that is now ready, in order. Finishes the
        reduction when the last bucket has been launched."""
        key = id(p)
        if key in self._ready or key not in self._of:
            return
        self._completed = False
        self._ready.add(key)
        for b in self._of[key]:
            b.pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self._next += 1
        if self._next == len(self.buckets):
            self._complete()
        elif self._next and not (self.cupy and self.group.nccl is not None):
            # MPI advances non-blocking collectives only inside MPI calls: test the launched ones each time a
            # parameter is done, so they progress while the rest of backward runs
            self.group.MPI.Request.Testall([b.handle for b in self.buckets[:self._next] if b.handle is not None])

    def finish(self) -> None:
        """Mark every parameter not yet marked (it got no gradient this backward) and complete the reduction."""
        if self._completed:
            return
        if not self.buckets:  # every parameter frozen: nothing to reduce
            self._completed = True
            return
        for p in self.params:
            self.mark_ready(p)
            if self._completed:  # the last mark launched the last bucket and completed
                return

    # --- transport ----------------------------------------------------------------------------------------
    def _launch(self, b: Bucket) -> None:
        if self.group.world_size == 1:  # nothing to exchange (the bookkeeping above still checks every gradient)
            return
        view = self.buf.grad[b.start:b.stop]
        view *= 1.0 / self.group.world_size
        if self.cupy and self.group.nccl is not None:
            import cupy

            g = self.group
            nccl = _nccl_module()
            ready = cupy.cuda.get_current_stream().record()
            g.stream.wait_event(ready)  # the bucket's gradients were written on the compute stream
            g.nccl.allReduce(view.data.ptr, view.data.ptr, b.size, _nccl_dtype(nccl, view.dtype), nccl.NCCL_SUM,
                             int(g.stream.ptr))
        elif self.cupy:
            import cupy

            b.host = cupy.asnumpy(view)
            b.handle = self.group.iall_reduce_host(b.host)
        else:
            b.handle = self.group.iall_reduce_host(view)

    def _complete(self) -> None:
        g = self.group
        if g.world_size == 1:
            pass
        elif self.cupy and g.nccl is not None:
            import cupy

            cupy.cuda.get_current_stream().wait_event(g.stream.record())
        else:
            g.wait([b.handle for b in self.buckets], f"DistributedDataParallel gradient all-reduce "
                                                     f"({len(self.buckets)} buckets)")
            if self.cupy:
                import cupy

                for b in self.buckets:
                    self.buf.grad[b.start:b.stop] = cupy.asarray(b.host)
                    b.host = None
        self._reset()
        self._completed = True
