"""CPU threads of the NumPy fast paths: a loop split over a small pool of Python threads.

NumPy's BLAS (OpenBLAS in NumPy's wheels) threads a large matrix product by itself, but the element-wise passes of
the fast paths (padded and shifted copies, shifted sums, pooling, gate math) run on one core. Where a fast path loops
over samples (or rows), ``parallel_for`` splits the loop into contiguous chunks, one per thread, and runs them at
once: NumPy releases the GIL inside its loops and its BLAS calls, so the chunks run on separate cores. While they
run, NumPy's BLAS is limited to one thread (through ``threadpoolctl``), so each chunk's products run on its own core
instead of two BLAS pools fighting over the same cores.

The number of threads (``get_num_threads``) is ``set_num_threads``'s value, else the number of threads NumPy's BLAS
runs (which follows ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``), at most
the CPUs this process may run on; 1 when threadpoolctl finds no BLAS of NumPy's (e.g. Apple's Accelerate): then its
threads cannot be limited, and only a ``set_num_threads`` value splits loops, NumPy's BLAS keeping its own threads.
With one thread, or when another ``parallel_for`` is running (nested or from another thread), or when NumPy's BLAS
does not take the limit of one thread (OpenBLAS's process-wide limit belongs to another thread that holds a
``threadpool_limits``, threadpoolctl >= 3.8), the loop runs in the calling thread as one chunk. A child forked while
a split runs gets NumPy's BLAS threads back as they were before the split's limit.

The limit is set in the calling thread and, for BLAS libraries whose limit is per thread (MKL through threadpoolctl
>= 3.8, OpenBLAS built with OpenMP), also in each thread that runs a chunk. threadpoolctl >= 3.8 gives OpenBLAS's
process-wide limit to the first living thread that sets it; ``parallel_for`` counts itself in threadpoolctl's
ownership count as ``threadpool_limits`` does, so it hands the limit back when done and a ``threadpool_limits`` of
the user's, in this thread or another, keeps working.

Chunks depend only on the loop's length and the number of threads, so a result summed over chunks (a weight
gradient accumulated per chunk, then added) is the same from run to run at a given thread count.

``_workspace`` caches are per thread, so a chunk's scratch buffers are its own.
"""
from __future__ import annotations

import contextvars
import math
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

import numpy as np

from .blas import gemm_accumulate

__all__ = ["get_num_threads", "set_num_threads", "parallel_for", "planned_chunks", "chunks", "dot", "dot_add", "splitting"]

_requested: Optional[int] = None  # set_num_threads's value
# threadpoolctl's controllers of NumPy's BLAS ([] when none was found), whether any of them limits per thread (MKL,
# OpenBLAS built with OpenMP) and threadpoolctl's count of the limits a thread holds (None before threadpoolctl 3.8,
# which has no owner of OpenBLAS's limit); found once
_blas: Optional[list[Any]] = None
_blas_per_thread = False
_ownership: Any = None
_busy = threading.Lock()  # held while a parallel_for runs its chunks
# NumPy's BLAS thread counts from before the limit of one that a split (or ``dot``) holds now; None when none holds
# it. get_num_threads reads them (not the limit) from any thread, and a child forked during the split gets them back
_held: Optional[list[int]] = None
_last_split = -math.inf  # time.monotonic() of the last split (or product on one BLAS thread)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _numpy_blas() -> list[Any]:
    """threadpoolctl's controllers of the BLAS NumPy calls (the library inside NumPy's package where there is one,
    e.g. the wheels' ``scipy_openblas``; else every BLAS loaded), found once."""
    global _blas, _blas_per_thread, _ownership
    if _blas is None:
        try:
            import numpy as np
            import threadpoolctl
        except ImportError:
            _blas = []
            return _blas
        blas = [lc for lc in threadpoolctl.ThreadpoolController().lib_controllers if lc.user_api == "blas"]
        # NumPy's wheels keep their OpenBLAS in numpy.libs (Linux) or numpy/.dylibs (macOS), beside the package
        root = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
        own = [lc for lc in blas if os.path.realpath(lc.filepath).startswith(os.path.join(root, "numpy"))]
        blas = own or blas
        _blas_per_thread = any(lc.internal_api == "mkl" or getattr(lc, "threading_layer", None) == "openmp"
                               for lc in blas)
        _ownership = getattr(threadpoolctl, "CONTROLLING_THREAD_OWNERSHIP", None)
        _blas = blas  # last: another thread that sees _blas set sees the rest
    return _blas


def get_num_threads() -> int:
    """The number of threads xpnn's NumPy fast paths split their per-sample loops over (``torch.get_num_threads``'s
    counterpart; ``xpnn.get_num_threads``).

    ``set_num_threads``'s value if one was set; else the threads of NumPy's BLAS, which follow ``OMP_NUM_THREADS`` /
    ``OPENBLAS_NUM_THREADS`` (``OMP_NUM_THREADS=1`` gives 1) and a ``threadpoolctl.threadpool_limits`` in force, at
    most the CPUs this process may use (``os.sched_getaffinity``); 1 where threadpoolctl finds no BLAS of NumPy's
    (e.g. Apple's Accelerate). The same value from every thread while a split loop runs (its limit of NumPy's BLAS
    to one thread is not the setting). It does not control NumPy's BLAS itself."""
    if _requested is not None:
        return _requested
    blas = _numpy_blas()
    if not blas:
        return 1
    held = _held  # (a split's limit of one is not the setting: the counts from before it)
    return max(1, min(int(held[0] if held is not None else blas[0].num_threads), _cpus()))


def set_num_threads(n: Optional[int]) -> None:
    """Split xpnn's NumPy fast-path loops (the column-free convolution's per-sample copies, products and weight
    gradient) over ``n`` threads; ``None`` returns to the default (``get_num_threads``). ``torch.set_num_threads``'s
    counterpart (``xpnn.set_num_threads``), process-wide.

    Only those loops: NumPy's BLAS outside them keeps its own setting (``OMP_NUM_THREADS``, ``threadpoolctl``);
    while a split loop runs, NumPy's BLAS is limited to one thread (so a NumPy call of another thread at that moment
    runs single-threaded). Results do not depend on ``n`` except a weight gradient summed per chunk, whose
    summation order (not its value beyond rounding) follows ``n``.

    Raises:
        TypeError: n is not an int (a NumPy integer is one) or None (bool and float included).
        ValueError: n < 1.
    """
    global _requested
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):  # (a NumPy integer too, as torch takes)
            raise TypeError(f"set_num_threads: expected an int >= 1 or None, got {type(n).__name__}")
        n = int(n)
        if n < 1:
            raise ValueError(f"set_num_threads: expected an int >= 1 or None, got {n}")
    _requested = n


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (lo, hi) ranges covering range(n), sizes differing by at most one, none empty (fewer
    ranges when n < parts; none for n = 0; one for parts < 1)."""
    if n <= 0:
        return []
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, lo = [], 0
    for k in range(parts):
        hi = lo + q + (k < r)
        out.append((lo, hi))
        lo = hi
    return out


class _Worker:
    """A thread that runs the jobs put on its queue, in order. Chunk k of every split runs on worker k - 1, so its
    scratch buffers (``_workspace``'s caches are per thread) are found again on the next call; a shared pool hands a
    chunk to whichever thread is idle and its buffers are allocated (and page-faulted) anew."""

    def __init__(self, k: int) -> None:
        self.jobs: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"xpnn-cpu-{k}", daemon=True)
        self.thread.start()  # RuntimeError once the interpreter is exiting

    def _loop(self) -> None:
        while True:
            self.jobs.get()()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()

        def job() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 (handed to the caller)
                future.set_exception(e)

        self.jobs.put(job)
        return future


_workers: list[_Worker] = []


def _worker(k: int) -> _Worker:
    """Worker k (0-based), started on first use."""
    while len(_workers) <= k:
        _workers.append(_Worker(len(_workers) + 1))
    return _workers[k]


def _forget_pool() -> None:
    """In a forked child: no pool (it has none of the parent's threads), a free lock, and NumPy's BLAS threads back
    where a split of another thread had limited them to one when the fork came (that thread, which would restore
    them, does not run in the child)."""
    global _workers, _busy, _held
    _workers, _busy = [], threading.Lock()
    held, _held = _held, None
    if held is not None:
        _set_blas_threads(held)


def _set_blas_threads(counts: list[int]) -> None:
    """NumPy's BLAS controllers set to ``counts``, counted in threadpoolctl's ownership (as ``threadpool_limits``)
    so that OpenBLAS's process-wide limit is handed back after."""
    if _ownership is not None:
        _ownership.increment()
    try:
        for lc, t in zip(_numpy_blas(), counts):
            lc.set_num_threads(t)
    finally:
        if _ownership is not None:
            _ownership.decrement()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def planned_chunks(n: int, min_chunk: int = 1) -> int:
    """How many chunks ``parallel_for(n, body, min_chunk)`` splits the loop into when no other split is running."""
    return max(1, min(get_num_threads(), n // max(1, min_chunk))) if n > 0 else 0


def _limited(body: Callable[[int, int], None], lo: int, hi: int) -> None:
    """A worker's chunk under its own limit of one BLAS thread (BLAS libraries whose limit is per thread)."""
    blas = _numpy_blas()
    before = [lc.num_threads for lc in blas]
    try:
        for lc in blas:
            lc.set_num_threads(1)
        body(lo, hi)
    finally:
        for lc, t in zip(blas, before):
            lc.set_num_threads(t)


def parallel_for(n: int, body: Callable[[int, int], None], min_chunk: int = 1) -> int:
    """Run ``body(lo, hi)`` over contiguous chunks covering range(n), at most ``get_num_threads()`` of them and each
    at least ``min_chunk`` long, at once on a thread pool (the first chunk in the calling thread; the others in a
    copy of its context, so under its NumPy error state), with NumPy's BLAS limited to one thread meanwhile.
    Returns the number of chunks (0 for n = 0). ``body`` must write only its own chunk's part of shared outputs.
    An exception from a chunk (KeyboardInterrupt included) is raised after every chunk has finished. Where the pool
    takes no work (at interpreter exit: atexit handlers), the chunks run one after the other in the calling
    thread."""
    threads = planned_chunks(n, min_chunk)
    if threads == 0:
        return 0
    if threads > 1:
        count = _one_blas_thread(lambda: _run(n, threads, body))
        if count is not None:
            return count
    body(0, n)
    return 1


def _one_blas_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` with NumPy's BLAS limited to one thread, holding the split lock; None (fn not called) when another
    split holds it or the limit does not take. Records the time (``_last_split``)."""
    global _last_split, _held
    if not _busy.acquire(blocking=False):
        return None
    try:
        blas = _numpy_blas()
        before = [lc.num_threads for lc in blas]
        if _ownership is not None:
            _ownership.increment()  # as threadpool_limits: the limit is handed back when the count returns to 0
        try:
            _held = before
            for lc in blas:
                lc.set_num_threads(1)
            if any(lc.num_threads != 1 for lc in blas):  # not taken (another thread holds OpenBLAS's limit)
                return None
            _last_split = time.monotonic()
            return fn()
        finally:
            for lc, t in zip(blas, before):
                lc.set_num_threads(t)
            _held = None
            if _ownership is not None:
                _ownership.decrement()
    finally:
        _busy.release()


def _run(n: int, threads: int, body: Callable[[int, int], None]) -> int:
    """parallel_for's chunks, the first (and any the pool refuses) in the calling thread."""
    parts = chunks(n, threads)
    here, futures = [parts[0]], []
    error: Optional[BaseException] = None
    try:
        for k, (lo, hi) in enumerate(parts[1:]):
            # in a copy of the caller's context: NumPy's error state (np.errstate, np.seterr) and other context
            # variables
            run = contextvars.copy_context().run
            try:
                worker = _worker(k)
            except RuntimeError:  # no new thread once the interpreter is exiting
                here.append((lo, hi))
                continue
            futures.append(worker.submit(run, _limited, body, lo, hi) if _blas_per_thread
                           else worker.submit(run, body, lo, hi))
    except BaseException as e:  # noqa: BLE001 (a KeyboardInterrupt while handing out chunks (a worker's start
        # waits): no chunk here, but the chunks handed out are waited for below before it is raised)
        error, here = e, []
    for lo, hi in here:
        try:
            body(lo, hi)
        except BaseException as e:  # noqa: BLE001 (re-raised once the other chunks are done)
            error = error or e
    for f in futures:
        while True:  # a KeyboardInterrupt while waiting: still wait, so that no chunk outlives the call
            try:
                f.result()
                break
            except BaseException as e:  # noqa: BLE001
                error = error or e
                if f.done():
                    break
    if error is not None:
        raise error
    return len(parts)


#: the products of plain 2-D NumPy arrays: ``np.dot`` calls BLAS's GEMM as ``@`` (``np.matmul``) does, with less of
#: the ufunc machinery around it; its ``_implementation`` (NEP 18) skips the ``__array_function__`` dispatch, a Python
#: call that finds nothing to dispatch for plain arrays (together ~0.6 us less per product at (10, 64) x (64, 30),
#: a quarter of a small layer's product)
_dot = getattr(np.dot, "_implementation", np.dot)

# multiply-adds from which OpenBLAS may run a product on several threads (its GEMM_MULTITHREAD_THRESHOLD, 4 x 65536)
BLAS_THREADED_MACS = 1 << 18
# multiply-adds from which ``dot`` splits the rows of a product over the threads (~170 us on one core)
SPLIT_MIN_MACS = 1 << 24
# seconds after a split within which ``dot`` keeps OpenBLAS off its own threads (they spin ~0.1 s once idle)
SPLIT_RECENT_S = 1.0


def dot_add(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out += a @ b`` by one BLAS GEMM with beta 1 (``blas.gemm_accumulate``) where ``dot`` would run the
    product as one ``np.dot``; False (nothing done) where ``dot`` would split its rows over the threads (a split ran
    recently: OpenBLAS's own threads would spin) or ``gemm_accumulate`` does not apply. a (M, K), b (K, N), out
    (M, N)."""
    if (a.size * b.shape[-1] >= BLAS_THREADED_MACS and time.monotonic() - _last_split <= SPLIT_RECENT_S
            and get_num_threads() > 1):
        return False
    return gemm_accumulate(a, b, out)


def splitting() -> bool:
    """Whether a loop ran split (``parallel_for`` in more than one chunk) within the last ``SPLIT_RECENT_S``: the
    process's work has loops that pay for threads (e.g. large convolutions), so ``dot`` keeps OpenBLAS off its
    own threads and updates split their blocks too. A process without such loops (an MLP, LeNet) keeps NumPy's
    behaviour: OpenBLAS threads its products, and updates run on one thread."""
    return time.monotonic() - _last_split <= SPLIT_RECENT_S


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.dot(a, b)`` of NumPy float arrays, a (M, K) and b (K, N) -> (M, N) (or a vector: ``np.dot``), for products in a process whose
    fast paths split loops (a ``parallel_for`` of more than one chunk ran within ``SPLIT_RECENT_S``): then a product
    that OpenBLAS would run on several threads runs on the split's threads instead, its rows in chunks, each on one
    BLAS thread (from ``SPLIT_MIN_MACS`` multiply-adds), or on one BLAS thread. Why: after a product on several
    threads, OpenBLAS's idle threads spin for about 0.1 s before they sleep, holding the cores the next split loop
    needs (a conv net's step with a linear head: 1.15x slower split than whole, 0.78x with the spinning turned
    off by ``OPENBLAS_THREAD_TIMEOUT``, 2 cores, 2026-12-06). Otherwise (and with one thread) ``np.dot``, which lets
    OpenBLAS thread it. The rows' products are the same either way."""
    # (a.size * b.shape[-1] = M * K * N: the host cost of a small layer's product stays np.dot's)
    if a.size * b.shape[-1] < BLAS_THREADED_MACS or time.monotonic() - _last_split > SPLIT_RECENT_S \
            or a.ndim != 2 or b.ndim != 2:  # (a vector: a product BLAS runs on one thread)
        return _dot(a, b)
    m, n = int(a.shape[0]), int(b.shape[1])
    macs = m * int(a.shape[1]) * n
    threads = get_num_threads()
    if threads == 1:
        return _dot(a, b)
    out = np.empty((m, n), np.result_type(a, b))

    def rows(lo: int, hi: int) -> None:
        _dot(a[lo:hi], b, out[lo:hi])

    def run() -> bool:
        if macs >= SPLIT_MIN_MACS and m > 1:
            _run(m, threads, rows)
        else:
            rows(0, m)
        return True

    return out if _one_blas_thread(run) else _dot(a, b)
