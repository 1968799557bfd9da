"""Timing: medians and spreads of repeated calls, synchronized on GPUs, and the plain-copy bandwidth floor.

CPU calls are timed with ``time.perf_counter``. GPU calls are timed with CUDA events recorded on the current
stream around each call (CuPy events for CuPy work, ``torch.cuda.Event`` for torch work), waiting for the end
event before the next call, so the time is the device time of the work, not the launch.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Timing", "measure", "copy_bandwidth", "device_sync", "settle_allocator", "free_gpu_memory"]

# device -> library that does the work there: "cpu" (NumPy/torch on the host), "cuda" (CuPy), "torch-cuda"
DEVICES = ("cpu", "cuda", "torch-cuda")


@dataclass
class Timing:
    """Per-call times in seconds (one entry per timed call)."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        """Interquartile range (seconds): the spread of the middle half of the calls."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def rounds(self) -> int:
        return len(self.times)


def settle_allocator() -> None:
    """Put glibc's malloc into the state a long-running process reaches by itself, before anything is timed.

    glibc serves large blocks with mmap (fresh pages: a page fault per 4 KiB on first touch) until a large mmapped
    block is freed; then it raises its mmap threshold to that size (at most 32 MiB) and its trim threshold to twice
    that, and later blocks below it are reused from the heap. Without this, whichever implementation runs first in a
    process pays page faults on every temporary (measured: 1e6-element sigmoid backward 4-7 ms instead of 0.5 ms)
    and the comparison depends on the order. Arrays above 32 MiB are always mmapped, for every implementation alike.
    """
    import numpy as np

    # just under glibc's 32 MiB cap (the cap test counts the chunk's flag bits: exactly 32 MiB does not raise it)
    block = np.ones(((32 << 20) - (16 << 10)) // 4, dtype=np.float32)
    del block


def free_gpu_memory() -> None:
    """Hand cached GPU blocks back (CuPy's pool, torch's caching allocator) so the next case has the whole device."""
    if "cupy" in sys.modules:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def device_sync(device: str) -> None:
    """Wait until all queued work of ``device`` ("cpu", "cuda" = CuPy, "torch-cuda") has finished."""
    if device == "cuda":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif device == "torch-cuda":
        import torch

        torch.cuda.synchronize()
    elif device != "cpu":
        raise ValueError(f"device_sync: unknown device {device!r}; expected one of {', '.join(DEVICES)}")


def _event_pair(device: str) -> tuple[Callable[[], None], Callable[[], float]]:
    """(start, stop) for timing one call with CUDA events: ``stop()`` waits and returns seconds."""
    if device == "cuda":
        import cupy

        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()

        def stop() -> float:
            e1.record()
            e1.synchronize()
            return cupy.cuda.get_elapsed_time(e0, e1) / 1e3

        return e0.record, stop
    import torch

    t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def stop_torch() -> float:
        t1.record()
        t1.synchronize()
        return t0.elapsed_time(t1) / 1e3

    return t0.record, stop_torch


def measure(
    fn: Callable[[], Any],
    *,
    device: str = "cpu",
    max_time: float = 0.3,
    min_rounds: int = 5,
    max_rounds: int = 10_000,
    warmup: int = 1,
) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then time single calls until ``max_time`` seconds have passed
    (at least ``min_rounds``, at most ``max_rounds`` calls)."""
    if device not in DEVICES:
        raise ValueError(f"measure: unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    for _ in range(warmup):
        fn()
    device_sync(device)
    timing = Timing()
    if device == "cpu":
        clock = time.perf_counter
        begin = clock()
        while timing.rounds < min_rounds or (clock() - begin < max_time and timing.rounds < max_rounds):
            t0 = clock()
            fn()
            timing.times.append(clock() - t0)
        return timing
    start, stop = _event_pair(device)
    begin = time.perf_counter()
    while timing.rounds < min_rounds or (time.perf_counter() - begin < max_time and timing.rounds < max_rounds):
        start()
        fn()
        timing.times.append(stop())
    return timing


def copy_bandwidth(device: str, nbytes: int, *, max_time: float = 0.3) -> float:
    """Bytes per second moved by a plain device copy ``dst[...] = src`` that moves ``nbytes`` in all
    (reads ``nbytes/2``, writes ``nbytes/2``): the speed limit of a memory-bound op moving the same bytes."""
    n = max(1, nbytes // 8)  # float32 elements in src (and in dst)
    if device == "cpu":
        import numpy as xp
    elif device == "cuda":
        import cupy as xp  # type: ignore[no-redef]
    elif device == "torch-cuda":
        import torch

        src_t = torch.ones(n, dtype=torch.float32, device="cuda")
        dst_t = torch.empty_like(src_t)
        t = measure(lambda: dst_t.copy_(src_t), device=device, max_time=max_time)
        return 8 * n / t.median
    else:
        raise ValueError(f"copy_bandwidth: unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    src = xp.ones(n, dtype=xp.float32)
    dst = xp.zeros(n, dtype=xp.float32)  # written once already: no page faults inside the timed copies

    def copy() -> None:
        dst[...] = src

    t = measure(copy, device=device, max_time=max_time)
    return 8 * n / t.median
