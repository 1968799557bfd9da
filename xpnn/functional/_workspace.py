"""Recycled NumPy buffers for the CPU fast paths (columns, padded copies, pooling windows, accumulators).

A training step on NumPy allocates the same large temporaries every step; glibc serves blocks from 128 KiB on with
``mmap`` or by growing and trimming its heap, so each comes back as fresh pages that page-fault on first touch
(measured on the LeNet-5 step: ~2,500 page faults and 21 MiB of such blocks per step). ``buffer(tag, shape, dtype)``
hands out a buffer of that shape from a per-thread cache instead, chosen among the cached buffers of that key that
**no other object references** (``sys.getrefcount``: a view, a Tensor, an autograd context or a caller's variable
holding it, or a view of it, keeps it out of reuse). So a buffer saved for backward (the column tensor) or returned
as part of a result is never handed out again while anything can still read it, whatever the number of models of
the same shapes, retained graphs or threads; it is reused once the last holder drops it.

The contents of a handed-out buffer are undefined (like ``np.empty``). At most ``PER_KEY`` buffers are kept per
(tag, shape, dtype) and ``MAX_BYTES`` in all per thread (least recently used keys dropped first); beyond that,
buffers are plain fresh arrays. ``clear()`` drops the calling thread's cache.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["buffer", "clear", "cached_bytes", "PER_KEY", "MAX_BYTES"]

PER_KEY = 4
MAX_BYTES = 256 << 20
_local = threading.local()


def _pool() -> "OrderedDict[tuple[Any, ...], list[np.ndarray]]":
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = OrderedDict()
        _local.nbytes = 0
    return pool


def _free_refcount() -> int:
    """``sys.getrefcount`` of a cached buffer that nothing else references, as seen inside ``buffer``'s loop (the
    list entry, the loop variable and the call's argument), measured the same way rather than assumed."""
    bufs = [np.empty(1)]
    for b in bufs:
        return sys.getrefcount(b)
    raise AssertionError


_FREE = _free_refcount()


def buffer(tag: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array of ``shape``/``dtype`` that no other object references, reused
    across calls when one of that (``tag``, shape, dtype) is free. ``tag`` names the role (e.g. ``"conv2d.cols"``),
    so two roles of one call never get the same buffer."""
    dtype = np.dtype(dtype)
    key = (tag, shape, dtype)
    pool = _pool()
    bufs = pool.get(key)
    if bufs is None:
        bufs = pool[key] = []
    else:
        pool.move_to_end(key)
        for b in bufs:
            if sys.getrefcount(b) <= _FREE:
                return b
    out = np.empty(shape, dtype=dtype)
    if len(bufs) < PER_KEY and out.nbytes <= MAX_BYTES:
        bufs.append(out)
        _local.nbytes += out.nbytes
        while _local.nbytes > MAX_BYTES:  # drop the least recently used keys (their buffers live while referenced)
            _, old = pool.popitem(last=False)
            _local.nbytes -= sum(b.nbytes for b in old)
    return out


def clear() -> None:
    """Drop the calling thread's cached buffers (those still referenced elsewhere live on with their holders)."""
    _local.pool = OrderedDict()
    _local.nbytes = 0


def cached_bytes() -> int:
    """Bytes held by the calling thread's cache."""
    _pool()
    return int(_local.nbytes)
