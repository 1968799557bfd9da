"""pytest-benchmark suite: ``pytest benchmarks --benchmark-only``.

Each test is one (case, size, implementation); the pytest-benchmark group is "<case> <size>", so one run prints
every implementation of a case side by side: xpnn NumPy vs xpnn CUDA, CUDA kernels vs the generic array-API path
on CuPy (kernels off), xpnn vs PyTorch on the same device, xpnn vs straightforward NumPy. The cases, data and
implementations live in ``xpnn.bench.cases`` (shared with ``xpnn bench``).

GPU calls are followed by a device synchronize inside the timed function. Memory-bound cases record, in each
benchmark's ``extra_info``, the bytes that must move, the bandwidth of a plain copy of the same bytes on the same
device measured in this run, and the fraction of that floor reached; a summary table closes the run.
Implementations whose arrays are NumPy's (xpnn on NumPy, straightforward NumPy) also record ``allocations``: the
NumPy data blocks one steady-state call allocates (all, and those of at least 128 KiB, which glibc serves as fresh
pages that page-fault), counted after the timing by ``xpnn.bench.allocations``; the closing summary lists them.
Implementations or sizes that cannot run here (no GPU, no PyTorch, GPU-only sizes on the CPU) skip with the reason.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from xpnn.bench.allocations import LARGE_BLOCK, count_allocations
from xpnn.bench.cases import CASES, IMPLS, Unavailable, make_runner, subnormal_count
from xpnn.bench.report import Row, format_table, machine_info
from xpnn.bench.timing import copy_bandwidth, device_sync, free_gpu_memory, settle_allocator

REFERENCE = "numpy-plain"
IMPL_NAMES = list(IMPLS)


def impls(*cases: str) -> list[str]:
    """The implementations ``cases`` have (e.g. the autograd rows exist for training steps only), in table order;
    those that cannot run on this machine still skip with the reason."""
    return [i for i in IMPL_NAMES if any(i in CASES[c].builders for c in cases)]

settle_allocator()  # the same malloc state for every implementation, whichever runs first (see its docstring)

_copy_bw: dict[tuple[str, int], float] = {}
_rows: list[Row] = []
_allocations: list[tuple[str, str, str, dict[str, int]]] = []
NUMPY_IMPLS = ("xpnn-numpy", "xpnn-numpy-tape", "numpy-plain")  # their arrays are NumPy's: allocations counted


def _synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    if device == "cpu":
        return fn

    def call() -> Any:
        out = fn()
        device_sync(device)
        return out

    return call


@pytest.fixture
def run_case(benchmark: Any) -> Callable[[str, str, str], None]:
    """``run_case(case, size, impl)``: build the runner (skip with the reason if it cannot run here), warm it up,
    benchmark it, and record bandwidth, fraction of the copy floor and the subnormal count."""

    def run(case: str, size: str, impl: str) -> None:
        try:
            runner = make_runner(case, size, impl)
        except Unavailable as exc:
            pytest.skip(str(exc))
        c = CASES[case]
        nbytes = c.bytes_moved(c.sizes[size])
        benchmark.group = f"{case} {size}"
        benchmark.extra_info.update(case=case, size=size, impl=impl, device=runner.device, bytes_moved=nbytes)
        fn = _synced(runner.fn, runner.device)
        fn()  # warm-up: kernel compilation, first-touch page faults, optimizer state allocation
        benchmark(fn)
        a = None
        if impl in NUMPY_IMPLS:
            try:
                a = count_allocations(fn)
            except RuntimeError as exc:  # NumPy < 2: no counting allocator; the timing stands
                benchmark.extra_info["allocations"] = str(exc)
        if a is not None:
            alloc = dict(bytes=a.bytes, blocks=a.blocks, large_bytes=a.large_bytes, large_blocks=a.large_blocks,
                         peak=a.peak)
            benchmark.extra_info["allocations"] = alloc
            _allocations.append((case, size, impl, alloc))
        subnormals = subnormal_count(runner.state())
        del runner, fn
        if benchmark.extra_info["device"] != "cpu":
            free_gpu_memory()
        benchmark.extra_info["subnormals"] = subnormals
        assert subnormals == 0, f"{case} {size} {impl}: {subnormals} subnormal floats: the timing is not valid"
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: ran once, nothing measured
            return
        s = stats.stats
        row = Row(case, size, impl, benchmark.extra_info["device"], s.median, s.iqr, s.min, s.rounds, nbytes, max=s.max)
        if nbytes is not None:
            key = (row.device, nbytes)
            if key not in _copy_bw:
                _copy_bw[key] = copy_bandwidth(row.device, nbytes)
            row.copy_bandwidth = _copy_bw[key]
            benchmark.extra_info.update(bandwidth_GBps=row.bandwidth / 1e9, copy_GBps=row.copy_bandwidth / 1e9,
                                        floor_fraction=row.floor_fraction)
        _rows.append(row)

    return run


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables, so the summary is the last thing printed
def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    order = {(r.case, r.size): i for i, r in enumerate(_rows)}
    rows = sorted(_rows, key=lambda r: (list(CASES).index(r.case), order[(r.case, r.size)], IMPL_NAMES.index(r.impl)))
    for r in rows:
        ref = next((q for q in rows if (q.case, q.size, q.impl) == (r.case, r.size, REFERENCE)), None)
        r.ratio = None if ref is None else r.median / ref.median
    tr = terminalreporter
    tr.write_sep("-", "xpnn: ratio to straightforward NumPy and fraction of the plain-copy floor")
    m = machine_info(gpu=any(r.device != "cpu" for r in rows))
    tr.write_line(f"CPU: {m['cpu']} ({m['cpu_count']} cores)" + (f"; GPU: {m['gpu']}" if "gpu" in m else ""))
    tr.write_line(format_table(rows, REFERENCE))
    tr.write_line(f"ratio: median / {REFERENCE} median (below 1 = faster); of floor: (bytes that must move / median) "
                  "/ bandwidth of dst[...] = src moving the same bytes on the same device in this run")
    if _allocations:
        tr.write_sep("-", "allocations: NumPy data allocated by one steady-state call")
        tr.write_line(f"{'case':<18}{'size':<10}{'impl':<17}{'blocks':>7}{'bytes':>12}"
                      f"{'>= 128 KiB':>12}{'bytes':>12}{'peak':>12}")
        for case, size, impl, a in _allocations:
            tr.write_line(f"{case:<18}{size:<10}{impl:<17}{a['blocks']:>7}{a['bytes']:>12,}"
                          f"{a['large_blocks']:>12}{a['large_bytes']:>12,}{a['peak']:>12,}")
        tr.write_line(f"blocks of >= {LARGE_BLOCK // 1024} KiB come from mmap or a grown heap (fresh pages: page "
                      "faults) unless glibc already holds them; peak: tracemalloc's, above the memory in use before")
