"""CPU threads of the NumPy fast paths: a loop split over a small pool of Python threads.

NumPy's BLAS (OpenBLAS in NumPy's wheels) threads a large matrix product by itself, but the element-wise passes of
the fast paths (padded and shifted copies, shifted sums, pooling, gate math) run on one core. Where a fast path loops
over samples (or rows), ``parallel_for`` splits the loop into contiguous chunks, one per thread, and runs them at
once: NumPy releases the GIL inside its loops and its BLAS calls, so the chunks run on separate cores. While they
run, NumPy's BLAS is limited to one thread (through ``threadpoolctl``), so each chunk's products run on its own core
instead of two BLAS pools fighting over the same cores.

The number of threads (``get_num_threads``) is ``set_num_threads``'s value, else the number of threads NumPy's BLAS
runs (which follows ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``), at most
the CPUs this process may run on. With one thread, or when NumPy's BLAS cannot be found (then its threads cannot be
limited), or when another ``parallel_for`` is running (nested or from another thread), the loop runs in the calling
thread as one chunk.

Chunks depend only on the loop's length and the number of threads, so a result summed over chunks (a weight
gradient accumulated per chunk, then added) is the same from run to run at a given thread count.

``_workspace`` caches are per thread, so a chunk's scratch buffers are its own.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

__all__ = ["get_num_threads", "set_num_threads", "parallel_for", "planned_chunks", "chunks"]

_requested: Optional[int] = None  # set_num_threads's value
_blas: Optional[list[Any]] = None  # threadpoolctl controllers of NumPy's BLAS ([] when none was found)
_pool: Optional[ThreadPoolExecutor] = None
_pool_workers = 0
_busy = threading.Lock()  # held while a parallel_for runs its chunks


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _numpy_blas() -> list[Any]:
    """threadpoolctl's controllers of the BLAS NumPy calls (the library inside NumPy's package where there is one,
    e.g. the wheels' ``scipy_openblas``; else every BLAS loaded), found once."""
    global _blas
    if _blas is None:
        try:
            import numpy as np
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = []
            return _blas
        blas = [lc for lc in ThreadpoolController().lib_controllers if lc.user_api == "blas"]
        # NumPy's wheels keep their OpenBLAS in numpy.libs (Linux) or numpy/.dylibs (macOS), beside the package
        root = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
        own = [lc for lc in blas if os.path.realpath(lc.filepath).startswith(os.path.join(root, "numpy"))]
        _blas = own or blas
    return _blas


def get_num_threads() -> int:
    """Threads the NumPy fast paths split their loops over: ``set_num_threads``'s value, else the threads of NumPy's
    BLAS (1 where it cannot be found), at most the CPUs this process may use (``os.sched_getaffinity``).
    ``torch.get_num_threads``'s counterpart."""
    if _requested is not None:
        return _requested
    blas = _numpy_blas()
    if not blas:
        return 1
    return max(1, min(int(blas[0].num_threads), _cpus()))


def set_num_threads(n: Optional[int]) -> None:
    """Split the NumPy fast paths' loops over ``n`` threads (``torch.set_num_threads``'s counterpart; NumPy's BLAS
    outside those loops keeps its own setting). ``None`` returns to the default (NumPy's BLAS threads).

    Raises:
        TypeError: n is not an int or None.
        ValueError: n < 1.
    """
    global _requested
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"set_num_threads: expected an int >= 1 or None, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"set_num_threads: expected an int >= 1 or None, got {n}")
    _requested = n


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (lo, hi) ranges covering range(n), sizes differing by at most one, none empty (fewer
    ranges when n < parts)."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, lo = [], 0
    for k in range(parts):
        hi = lo + q + (k < r)
        out.append((lo, hi))
        lo = hi
    return out


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_workers
    if _pool is None or _pool_workers < workers:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xpnn-cpu")
        _pool_workers = workers
    return _pool


def _forget_pool() -> None:  # a forked child has none of the parent's threads
    global _pool, _pool_workers, _busy
    _pool, _pool_workers, _busy = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def planned_chunks(n: int, min_chunk: int = 1) -> int:
    """How many chunks ``parallel_for(n, body, min_chunk)`` splits the loop into when no other split is running."""
    return max(1, min(get_num_threads(), n // max(1, min_chunk))) if n > 0 else 0


def parallel_for(n: int, body: Callable[[int, int], None], min_chunk: int = 1) -> int:
    """Run ``body(lo, hi)`` over contiguous chunks covering range(n), at most ``get_num_threads()`` of them and each
    at least ``min_chunk`` long, at once on a thread pool (the first chunk in the calling thread), with NumPy's BLAS
    limited to one thread meanwhile. Returns the number of chunks (0 for n = 0). ``body`` must write only its own
    chunk's part of shared outputs. An exception from a chunk is raised after every chunk has finished."""
    threads = planned_chunks(n, min_chunk)
    if threads == 0:
        return 0
    if threads == 1 or not _busy.acquire(blocking=False):
        body(0, n)
        return 1
    try:
        blas = _numpy_blas()
        before = [lc.num_threads for lc in blas]
        for lc in blas:
            lc.set_num_threads(1)
        try:
            parts = chunks(n, threads)
            futures = [_executor(len(parts) - 1).submit(body, lo, hi) for lo, hi in parts[1:]]
            error: Optional[BaseException] = None
            try:
                body(*parts[0])
            except BaseException as e:  # noqa: BLE001 (re-raised once the other chunks are done)
                error = e
            for f in futures:
                try:
                    f.result()
                except BaseException as e:  # noqa: BLE001
                    error = error or e
            if error is not None:
                raise error
            return len(parts)
        finally:
            for lc, t in zip(blas, before):
                lc.set_num_threads(t)
    finally:
        _busy.release()
