"""How much memory a step allocates: NumPy data allocations counted per call, by size.

Large temporaries cost more than their bytes on the CPU: glibc serves blocks of 128 KiB and more (its default
``M_MMAP_THRESHOLD``, raised dynamically up to 32 MiB) with ``mmap`` or by growing and trimming the heap, so a block
allocated and freed every step comes back as fresh pages that page-fault on first touch. ``count_allocations``
installs a counting NumPy data allocator (``PyDataMem_SetHandler``, NEP 49) around a call and reports every array
data block NumPy allocated during it (freed or not), and ``tracemalloc``'s peak of the traced NumPy data above the
memory in use before the call.
"""
from __future__ import annotations

import ctypes
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["AllocationCount", "count_allocations", "LARGE_BLOCK"]

LARGE_BLOCK = 128 << 10  # glibc's default mmap threshold: blocks from here on page-fault when they are fresh


@dataclass
class AllocationCount:
    """NumPy data blocks allocated during a call: ``blocks``/``bytes`` all of them, ``large_blocks``/``large_bytes``
    those of at least ``LARGE_BLOCK`` bytes, ``sizes`` the large ones' sizes in order, ``peak`` tracemalloc's peak of
    traced memory above what was in use before the call (bytes)."""

    blocks: int = 0
    bytes: int = 0
    large_blocks: int = 0
    large_bytes: int = 0
    sizes: list[int] = field(default_factory=list)
    peak: int = 0

    def _add(self, size: int) -> None:
        self.blocks += 1
        self.bytes += size
        if size >= LARGE_BLOCK:
            self.large_blocks += 1
            self.large_bytes += size
            self.sizes.append(size)


class _Handler(ctypes.Structure):
    # numpy/ndarraytypes.h: PyDataMem_Handler (version 1) holding a PyDataMemAllocator
    _fields_ = [("name", ctypes.c_char * 127), ("version", ctypes.c_uint8), ("ctx", ctypes.c_void_p),
                ("malloc", ctypes.c_void_p), ("calloc", ctypes.c_void_p), ("realloc", ctypes.c_void_p),
                ("free", ctypes.c_void_p)]


_MALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_CALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
_REALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_state: dict[str, Any] = {}


def _install() -> dict[str, Any]:
    """Build the counting handler once (the callbacks and the capsule live as long as the process: arrays it
    allocated keep a reference to the capsule and are freed through it)."""
    if _state:
        return _state
    libc = ctypes.CDLL(None)
    for name, res, args in (("malloc", ctypes.c_void_p, [ctypes.c_size_t]),
                            ("calloc", ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_size_t]),
                            ("realloc", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]),
                            ("free", None, [ctypes.c_void_p])):
        getattr(libc, name).restype, getattr(libc, name).argtypes = res, args
    counts: list[AllocationCount] = []

    def note(size: int) -> None:
        if counts:
            counts[-1]._add(size)

    def c_malloc(_ctx: Any, size: int) -> int:
        note(size)
        return libc.malloc(size)

    def c_calloc(_ctx: Any, nelem: int, elsize: int) -> int:
        note(nelem * elsize)
        return libc.calloc(nelem, elsize)

    def c_realloc(_ctx: Any, ptr: int, size: int) -> int:
        note(size)
        return libc.realloc(ptr, size)

    def c_free(_ctx: Any, ptr: int, _size: int) -> None:
        libc.free(ptr)

    fns = (_MALLOC(c_malloc), _CALLOC(c_calloc), _REALLOC(c_realloc), _FREE(c_free))
    handler = _Handler(b"xpnn_counting_allocator", 1, None, *(ctypes.cast(f, ctypes.c_void_p) for f in fns))
    ctypes.pythonapi.PyCapsule_New.restype = ctypes.py_object
    ctypes.pythonapi.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    capsule = ctypes.pythonapi.PyCapsule_New(ctypes.addressof(handler), b"mem_handler", None)
    ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
    ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    table = getattr(getattr(getattr(np, "_core", None), "_multiarray_umath", None), "_ARRAY_API", None)
    if table is None:
        raise RuntimeError(f"count_allocations: NumPy {np.__version__} exposes no C-API table "
                           "(numpy._core._multiarray_umath._ARRAY_API); NumPy >= 2 is needed")
    api = ctypes.cast(ctypes.pythonapi.PyCapsule_GetPointer(table, None), ctypes.POINTER(ctypes.c_void_p))
    set_handler = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.py_object)(api[304])  # PyDataMem_SetHandler
    _state.update(handler=handler, fns=fns, capsule=capsule, set_handler=set_handler, counts=counts)
    return _state


def count_allocations(fn: Callable[[], Any]) -> AllocationCount:
    """Call ``fn()`` once with NumPy's data allocations counted (blocks, bytes, blocks of at least ``LARGE_BLOCK``)
    and tracemalloc's peak above the memory in use before the call. Only NumPy array data is counted (not Python
    objects, BLAS's own buffers or another library's allocator). The handler is set for the calling thread's
    context only (NEP 49), and the previous one is restored afterwards. Raises RuntimeError where NumPy's C-API
    table cannot be reached (NumPy < 2)."""
    st = _install()
    count = AllocationCount()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    old = st["set_handler"](st["capsule"])
    st["counts"].append(count)
    try:
        fn()
    finally:
        st["counts"].pop()
        st["set_handler"](old)
        count.peak = max(0, tracemalloc.get_traced_memory()[1] - before)
        if not started:
            tracemalloc.stop()
    return count
