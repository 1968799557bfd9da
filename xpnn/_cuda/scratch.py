"""Work arrays the launchers keep across calls (no allocation per call): per-block partial sums and the counters of
the last-block reductions.

Arrays are kept per (array library, device, stream) -- two streams never share one, since kernels on them may run
at once -- and per name; an array grows (is replaced by a larger one) when a call needs more. Counters are
allocated zeroed, and the kernels using them leave them zeroed (kernels/softmax_cross_entropy.cu), so no call
clears them.

A CUDA graph records the addresses of the kept arrays its kernels use, and writes to them at every replay. When a
later, larger call replaces such an array here, this module drops it and the memory pool may hand the memory out
again while the graph still writes to it. So a capture runs inside ``recording()``, which collects every kept array
handed out during it, and the captured graph holds them for its life (``xpnn.cuda.GraphedStep``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_lock = threading.Lock()
_arrays: dict[tuple[Any, ...], Any] = {}
_recorders: list[list[Any]] = []  # one list per recording() in progress


def _place(like: Any) -> tuple[Any, ...]:
    """(library, device, stream) of array ``like``: CuPy's current stream on the array's device; NumPy: one place."""
    module = type(like).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return module, like.device.id, cupy.cuda.get_current_stream().ptr
    return module, None, None


def zeroed(xp: Any, like: Any, name: str, n: int, dtype: Any) -> Any:
    """A kept array of at least ``n`` entries of ``dtype`` named ``name``, zero when first made (the caller's
    kernels must leave it zero). Only its first ``n`` entries are for this call: ``[:n]`` is returned."""
    key = (*_place(like), name, str(dtype))
    with _lock:
        arr = _arrays.get(key)
        if arr is None or int(arr.shape[0]) < n:
            arr = _arrays[key] = xp.zeros((max(n, 1 if arr is None else 2 * int(arr.shape[0])),), dtype=dtype)
        for kept in _recorders:
            kept.append(arr)
    return arr[:n]


@contextlib.contextmanager
def recording() -> Iterator[list[Any]]:
    """Collect the kept arrays (whole, not the ``[:n]`` views) that ``zeroed`` hands out inside the block: around a
    CUDA graph capture, for the graph to keep alive (see the module docstring)."""
    kept: list[Any] = []
    with _lock:
        _recorders.append(kept)
    try:
        yield kept
    finally:
        with _lock:
            _recorders.remove(kept)


def clear() -> None:
    """Drop every kept array (tests; a device reset)."""
    with _lock:
        _arrays.clear()
