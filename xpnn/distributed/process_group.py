"""The process group: one process per rank, started by ``mpiexec``; collectives on arrays over MPI or NCCL.

MPI (``mpi4py``) always carries set-up, Python objects and host (NumPy) arrays; with ``backend="nccl"`` CuPy
arrays go through a NCCL communicator whose unique id rank 0 broadcasts over MPI. CuPy arrays in an MPI group are
staged through host memory (the ``mpich`` wheel is not CUDA-aware).

Waiting: the main thread first polls its requests (``MPI_Testall``) for up to ``SPIN_SECONDS``, which completes
small and medium messages without a thread switch; what is still pending then goes to a helper thread that blocks
in ``MPI_Waitall`` (MPI's own progress loop at full speed, the GIL released) while the main thread waits on an
event with the group's ``timeout``. Python thus still sees Ctrl-C, and a wait longer than the timeout raises
``DistributedTimeoutError``. ``init_process_group`` installs a
``sys.excepthook`` that prints the traceback (with the rank) and calls ``MPI_Abort``: a rank that raises takes the
whole job down with a non-zero exit status instead of leaving the others waiting forever in a collective.
mpi4py is imported on first use only: ``import xpnn`` never initialises MPI.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Optional

import numpy as np

from ..backend import dtype_name, is_cupy_namespace, namespace_of
from ..errors import BackendUnavailableError, XpnnError

__all__ = [
    "ProcessGroup", "DistributedError", "DistributedTimeoutError", "init_process_group", "destroy_process_group",
    "is_initialized", "get_rank", "get_world_size", "get_process_group", "barrier", "all_reduce", "broadcast",
    "mpi_available", "nccl_available",
]

MPI_INSTALL_HINT = 'pip install "xpnn[mpi]" (mpi4py and the mpich wheel, which brings mpiexec)'
NCCL_INSTALL_HINT = 'pip install nvidia-nccl-cu12 (or -cu13, matching your CuPy)'
SPIN_SECONDS = 5e-3  # polling before handing a wait to the helper thread (a thread switch costs ms on a busy host)
DEFAULT_TIMEOUT = 1800.0  # seconds, like torch.distributed's default; XPNN_DIST_TIMEOUT overrides it
_OPS = ("sum", "mean", "max", "min", "prod")


class DistributedError(XpnnError, RuntimeError):
    """A distributed set-up or collective failed (no MPI, NCCL without GPUs, ranks that disagree)."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective waited longer than the process group's timeout (another rank died or diverged)."""


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise BackendUnavailableError(f"xpnn.distributed needs mpi4py and an MPI library ({exc}); install them "
                                      f"with: {MPI_INSTALL_HINT}") from None
    return MPI


def mpi_available() -> bool:
    """Whether mpi4py imports (never raises; does not initialise MPI)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def _nccl_module() -> Any:
    import warnings

    with warnings.catch_warnings():  # CuPy warns at import when libnccl is missing; we report it ourselves
        warnings.simplefilter("ignore")
        from cupy.cuda import nccl
    return nccl


def nccl_available() -> bool:
    """Whether CuPy imports with a loadable NCCL library (never raises; needs no GPU)."""
    try:
        return bool(_nccl_module().available)
    except Exception:
        return False


def _gpu_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


class ProcessGroup:
    """All ranks of one job: ``rank``, ``world_size``, ``local_rank`` (rank among the processes of this host),
    ``backend`` (``"mpi"`` or ``"nccl"``), ``timeout`` (seconds a wait may take) and ``comm`` (a duplicate of
    ``MPI.COMM_WORLD``, so user traffic on COMM_WORLD never matches ours)."""

    def __init__(self, backend: str = "auto", timeout: Optional[float] = None) -> None:
        if backend not in ("auto", "mpi", "nccl"):
            raise ValueError(f"init_process_group: backend must be 'auto', 'mpi' or 'nccl', got {backend!r}")
        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.rank = int(self.comm.Get_rank())
        self.world_size = int(self.comm.Get_size())
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = int(node.Get_rank()), int(node.Get_size())
        node.Free()
        if timeout is None:
            timeout = float(os.environ.get("XPNN_DIST_TIMEOUT", DEFAULT_TIMEOUT))
        if not timeout > 0:
            raise ValueError(f"init_process_group: timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.nccl: Any = None
        self.stream: Any = None  # CUDA side stream for NCCL
        self._waiter: Optional[_Waiter] = None
        try:
            self._choose_backend(backend)
        except BaseException:
            self.comm.Free()
            raise

    def _choose_backend(self, backend: str) -> None:
        MPI = self.MPI
        gpus = _gpu_count()
        usable = gpus > 0 and nccl_available()
        if backend == "auto":  # NCCL only when every rank can use it (decided together: no rank left behind)
            backend = "nccl" if self.comm.allreduce(int(usable), op=MPI.MIN) else "mpi"
        elif backend == "nccl":
            ok = self.comm.allgather((gpus, usable))
            bad = [r for r, (_, u) in enumerate(ok) if not u]
            if bad:
                why = {r: ("no CUDA device" if ok[r][0] == 0 else f"NCCL library missing ({NCCL_INSTALL_HINT})")
                       for r in bad}
                raise DistributedError(f"init_process_group(backend='nccl'): ranks {bad} cannot use NCCL: {why}; "
                                       "use backend='mpi' (or 'auto') on machines without GPUs")
        self.backend = backend
        if backend == "nccl":
            self._init_nccl(gpus)

    def _init_nccl(self, gpus: int) -> None:
        import cupy

        nccl = _nccl_module()
        cupy.cuda.Device(self.local_rank % gpus).use()  # one GPU per process, chosen by local rank
        if self.local_size > gpus:
            print(f"xpnn.distributed: warning: {self.local_size} processes on this host share {gpus} GPUs",
                  file=sys.stderr, flush=True)
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)

    # --- waiting ------------------------------------------------------------------------------------------
    def start_wait(self, requests: list[Any]) -> "_Ticket":
        """Hand MPI ``requests`` to the helper thread, which blocks in ``MPI_Waitall`` on them (so they progress
        from now on); ``finish_wait`` the returned ticket."""
        if self._waiter is None:
            self._waiter = _Waiter(self.MPI)
        return self._waiter.submit(requests)

    def finish_wait(self, ticket: "_Ticket", what: str) -> None:
        """Block until the helper thread has completed ``ticket``'s requests. Raises ``DistributedTimeoutError``
        naming ``what`` after ``self.timeout`` seconds (counted from this call)."""
        if not ticket.done.wait(self.timeout):
            raise DistributedTimeoutError(
                f"{what}: rank {self.rank} of {self.world_size} waited more than {self.timeout:g} s; another "
                "rank has probably died or is running different code (set XPNN_DIST_TIMEOUT to change the limit)")
        if ticket.error is not None:
            raise DistributedError(f"{what}: MPI failed on rank {self.rank}: {ticket.error}") from ticket.error

    def wait(self, requests: list[Any], what: str) -> None:
        """Complete MPI ``requests``: poll, then the helper thread (module docstring; ``finish_wait``: timeout)."""
        Testall = self.MPI.Request.Testall
        if not requests or Testall(requests):
            return
        stop = time.perf_counter() + SPIN_SECONDS
        polls = 0
        while time.perf_counter() < stop:
            if Testall(requests):
                return
            polls += 1
            if polls > 100:  # let a rank that shares this core run (MPICH's own waits yield the same way)
                _yield()
        self.finish_wait(self.start_wait(requests), what)

    # --- collectives on arrays ----------------------------------------------------------------------------
    def _mpi_op(self, op: str) -> Any:
        MPI = self.MPI
        return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}[op]

    def _nccl_call(self, array: Any) -> bool:
        return self.nccl is not None and is_cupy_namespace(namespace_of(array))

    def iall_reduce_host(self, buf: np.ndarray, op: str = "sum") -> Any:
        """Start an in-place MPI all-reduce of the contiguous host array ``buf``; returns the MPI request."""
        if buf.dtype == np.float16:
            raise DistributedError("all_reduce over MPI: float16 has no MPI reduction; cast to float32 first")
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._mpi_op(op))

    def all_reduce(self, array: Any, op: str = "sum") -> Any:
        """Reduce ``array`` over all ranks, in place (every rank gets the result); returns it. ``op``: sum, mean,
        max, min, prod. NumPy arrays go over MPI, CuPy arrays over NCCL (or MPI through host memory)."""
        if op not in _OPS:
            raise ValueError(f"all_reduce: op must be one of {', '.join(_OPS)}, got {op!r}")
        if op == "mean" and not namespace_of(array).isdtype(array.dtype, "real floating"):
            raise DistributedError(f"all_reduce(op='mean') needs a floating array, got {dtype_name(array.dtype)}; "
                                   "use op='sum' and divide")
        if self._nccl_call(array):
            self._nccl_all_reduce(array, op)
        else:
            host, copy_back = _host_buffer(array)
            self.wait([self.iall_reduce_host(host, op)], f"all_reduce({dtype_name(array.dtype)}{list(array.shape)})")
            copy_back()
        if op == "mean":
            array /= self.world_size
        return array

    def broadcast(self, array: Any, src: int = 0) -> Any:
        """Overwrite ``array`` on every rank with rank ``src``'s values, in place; returns it. Shapes and dtypes
        must agree on all ranks."""
        if not 0 <= src < self.world_size:
            raise ValueError(f"broadcast: src must be a rank in 0..{self.world_size - 1}, got {src}")
        if self._nccl_call(array):
            nccl = _nccl_module()
            buf = _contiguous_device(array)
            self.nccl.broadcast(buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(nccl, buf.dtype), src,
                                _current_stream_ptr())
            if buf is not array:
                array[...] = buf
            return array
        host, copy_back = _host_buffer(array)
        self.wait([self.comm.Ibcast(host, root=src)], f"broadcast({dtype_name(array.dtype)}{list(array.shape)})")
        copy_back()
        return array

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank (small set-up values such as a seed)."""
        return self.comm.bcast(obj, root=src)

    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, as a list indexed by rank."""
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        """Wait until every rank has reached this call (with the group's timeout)."""
        self.wait([self.comm.Ibarrier()], "barrier")

    def _nccl_all_reduce(self, array: Any, op: str) -> None:
        nccl = _nccl_module()
        buf = _contiguous_device(array)
        ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN,
               "prod": nccl.NCCL_PROD}
        self.nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(nccl, buf.dtype), ops[op],
                            _current_stream_ptr())
        if buf is not array:
            array[...] = buf

    def destroy(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        if self.nccl is not None:
            self.nccl.destroy()
            self.nccl = None
        self.comm.Free()

    def abort(self, code: int = 1) -> None:
        """Kill every rank of the job (``MPI_Abort``) with exit status ``code``; used when one rank fails. What this
        rank wrote to stdout/stderr is flushed first, and a moment given to mpiexec to forward it."""
        sys.stderr.flush()
        sys.stdout.flush()
        # mpiexec forwards a rank's output through its proxy process, and MPI_Abort kills that proxy too: the last
        # lines could be lost (an error message, a traceback: the job then failed without a word, ~1 run in 30 on 2
        # idle cores, more on a busy machine). A moment lets the proxy forward them.
        time.sleep(0.5)
        self.MPI.COMM_WORLD.Abort(code)

    def __repr__(self) -> str:
        return f"ProcessGroup(backend={self.backend!r}, rank={self.rank}, world_size={self.world_size})"


class _Ticket:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Optional[BaseException] = None


class _Waiter:
    """A daemon thread completing batches of MPI requests in order with ``MPI_Waitall`` (mpi4py releases the GIL
    while it blocks; MPI was initialised with ``MPI_THREAD_MULTIPLE``, mpi4py's default)."""

    def __init__(self, MPI: Any) -> None:
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise DistributedError("xpnn.distributed needs MPI_THREAD_MULTIPLE (mpi4py's default; check "
                                   "mpi4py.rc.thread_level and your MPI build)")
        self.MPI = MPI
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="xpnn-mpi-wait", daemon=True)
        self.thread.start()

    def submit(self, requests: list[Any]) -> _Ticket:
        ticket = _Ticket()
        self.queue.put((requests, ticket))
        return ticket

    def _run(self) -> None:
        while True:
            requests, ticket = self.queue.get()
            if ticket is None:
                return
            try:
                self.MPI.Request.Waitall(requests)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                ticket.error = exc
            ticket.done.set()

    def close(self) -> None:
        self.queue.put((None, None))
        self.thread.join(timeout=5)


_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def _host_buffer(array: Any) -> tuple[np.ndarray, Any]:
    """A contiguous host array holding ``array``'s values and a function that writes it back into ``array``
    (nothing to do when ``array`` is a contiguous NumPy array: the buffer is ``array`` itself)."""
    if isinstance(array, np.ndarray):
        if array.flags.c_contiguous:
            return array, lambda: None
        host = np.ascontiguousarray(array)
        return host, lambda: array.__setitem__(Ellipsis, host)
    xp = namespace_of(array)
    if is_cupy_namespace(xp):
        import cupy

        host = cupy.asnumpy(array)
        return host, lambda: array.__setitem__(Ellipsis, cupy.asarray(host))
    raise DistributedError(f"xpnn.distributed: arrays must be NumPy or CuPy, got {type(array).__module__}."
                           f"{type(array).__name__}")


def _contiguous_device(array: Any) -> Any:
    import cupy

    return array if array.flags.c_contiguous else cupy.ascontiguousarray(array)


def _nccl_dtype(nccl: Any, dtype: Any) -> Any:
    name = dtype_name(dtype)
    table = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
             "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8"}
    if name not in table:
        raise DistributedError(f"NCCL collective: dtype {name} is not supported (use one of {', '.join(table)})")
    return getattr(nccl, table[name])


def _current_stream_ptr() -> int:
    import cupy

    return int(cupy.cuda.get_current_stream().ptr)


# --- the global group (PyTorch's module-level API) -------------------------------------------------------------

_GROUP: list[Optional[ProcessGroup]] = [None]
_PREV_HOOK: list[Any] = [None]


def _abort_hook(exc_type: Any, exc: Any, tb: Any) -> None:
    """``sys.excepthook`` while a group exists: print the traceback with the rank, then abort the whole job."""
    group = _GROUP[0]
    if group is None or group.world_size == 1:
        (_PREV_HOOK[0] or sys.__excepthook__)(exc_type, exc, tb)
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(f"[xpnn rank {group.rank}/{group.world_size}] {text}"
                     f"[xpnn rank {group.rank}/{group.world_size}] aborting all ranks (MPI_Abort)\n")
    group.abort(1 if exc_type is not KeyboardInterrupt else 130)  # (flushes, and lets mpiexec forward the lines)


def init_process_group(backend: str = "auto", *, timeout: Optional[float] = None) -> ProcessGroup:
    """Join the job started by ``mpiexec -n N ...`` (world size 1 without mpiexec). ``backend``: ``"mpi"``,
    ``"nccl"`` (every rank needs a GPU and NCCL; each process uses GPU ``local_rank % gpus``) or ``"auto"`` (NCCL
    when every rank can use it, else MPI). ``timeout``: seconds any collective may wait (default
    ``$XPNN_DIST_TIMEOUT`` or 1800). Installs the abort-on-exception hook (module docstring). Raises
    ``DistributedError`` when a group already exists or NCCL is asked for where it cannot run,
    ``BackendUnavailableError`` without mpi4py."""
    if _GROUP[0] is not None:
        raise DistributedError("init_process_group: a process group is already initialised "
                               "(call destroy_process_group() first)")
    group = ProcessGroup(backend, timeout)
    _GROUP[0] = group
    if sys.excepthook is not _abort_hook:
        _PREV_HOOK[0] = sys.excepthook
        sys.excepthook = _abort_hook
    return group


def destroy_process_group() -> None:
    """Leave the group (frees the communicators, restores ``sys.excepthook``); a new one may be initialised."""
    group = _GROUP[0]
    if group is None:
        return
    _GROUP[0] = None
    if sys.excepthook is _abort_hook:
        sys.excepthook = _PREV_HOOK[0] or sys.__excepthook__
    group.destroy()


def is_initialized() -> bool:
    return _GROUP[0] is not None


def get_process_group() -> ProcessGroup:
    """The current group; raises ``DistributedError`` when ``init_process_group`` has not been called."""
    group = _GROUP[0]
    if group is None:
        raise DistributedError("xpnn.distributed: no process group; call xpnn.distributed.init_process_group() "
                               "first (and start the program with mpiexec -n N)")
    return group


def get_rank() -> int:
    """This process's rank (0 when no group is initialised, as for a single process)."""
    group = _GROUP[0]
    return 0 if group is None else group.rank


def get_world_size() -> int:
    """Number of ranks (1 when no group is initialised)."""
    group = _GROUP[0]
    return 1 if group is None else group.world_size


def barrier() -> None:
    get_process_group().barrier()


def all_reduce(array: Any, op: str = "sum") -> Any:
    """``get_process_group().all_reduce(array, op)``: in place, returns ``array``."""
    return get_process_group().all_reduce(array, op)


def broadcast(array: Any, src: int = 0) -> Any:
    """``get_process_group().broadcast(array, src)``: in place, returns ``array``."""
    return get_process_group().broadcast(array, src)
