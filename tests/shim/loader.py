"""Build the CPU shim library (g++, cached by source hash) and load its kernels through ctypes.

``ShimLoader`` implements the kernel-loader interface of ``xpnn._cuda.loader`` (``raw``/``elementwise``) on NumPy
arrays, so ``xpnn._cuda.make_provider(ShimLoader())`` runs ``xpnn._cuda.launch`` -- block/grid choice, dtype
dispatch, argument checks -- against kernels compiled from the very same ``kernels/*.cu`` text.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from xpnn._cuda import make_provider, registry
from xpnn._cuda.loader import RawLaunch
from xpnn._cuda.sources import kernel_dir

HERE = Path(__file__).resolve().parent
CXX = os.environ.get("CXX", "g++")
WARNING_FLAGS = ("-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Wshadow")
# -ffp-contract=off: no a*b+c -> FMA contraction, so float results follow the source (and NumPy) op by op.
# -fvisibility=hidden -fno-gnu-unique: every symbol but the C API binds inside its own library, so two shim builds
# loaded in one process (a test's deliberately broken copy next to the real one) never share a template
# instantiation or a function-static (__shared__) variable.
FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-gnu-unique",
         *WARNING_FLAGS)
_CTYPES = {"float16": ctypes.c_uint16, "float32": ctypes.c_float, "float64": ctypes.c_double,
           "int32": ctypes.c_int32, "int64": ctypes.c_int64, "uint32": ctypes.c_uint32}


def _elementwise_params(row: registry.ElementwiseKernel) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """CuPy parameter lists -> [(type, name)] inputs and the (type, name) output; a one-letter type is the array
    type T, a dtype name (``float64 alpha``) a scalar of that dtype."""
    ins = [tuple(p.split()) for p in row.in_params.split(",")]
    (out,) = [tuple(p.split()) for p in row.out_params.split(",")]
    return ins, out  # type: ignore[return-value]


def _elementwise_loop(row: registry.ElementwiseKernel, dtype: str) -> str:
    """The CPU loop for one elementwise kernel and dtype, shaped like the code CuPy generates around the body."""
    ins, (_, out_name) = _elementwise_params(row)
    ctype = registry.C_TYPES[dtype]
    params, refs = [], []
    for typ, name in ins:
        if len(typ) == 1:
            params.append(f"const {ctype}* _raw_{name}")
            refs.append(f"const T& {name} = _raw_{name}[i];")
        else:
            params.append(f"{registry.C_TYPES[typ]} {name}")
    params += [f"{ctype}* _raw_{out_name}", "long long n"]
    refs.append(f"T& {out_name} = _raw_{out_name}[i];")
    return (f"static void {_ew_symbol(row.name, dtype)}({', '.join(params)}) {{\n"
            f"    typedef {ctype} T;\n"
            f"    for (long long i = 0; i < n; ++i) {{\n        {' '.join(refs)}\n        {row.body}\n    }}\n}}\n")


def _ew_symbol(op: str, dtype: str) -> str:
    return f"xpnn_ew_{op}_{dtype}"


def _ew_name(op: str, dtype: str) -> str:
    return f"ew:{op}:{dtype}"


def generate_source() -> str:
    """The single translation unit: runtime, every kernel source, elementwise loops, and the entry table."""
    lines = ['#include "shim_runtime.h"']
    lines += [f'#include "{src}"' for src in registry.sources()]
    lines.append(f'#include "{registry.ELEMENTWISE_PREAMBLE}"')
    entries = []
    for ne in dict.fromkeys(row.name_expression(dt) for row in registry.RAW for dt in row.dtypes):
        entries.append(f'    {{"{ne}", [](void** a) {{ return xpnn_shim::bind(&{ne}, a); }}}},')
    for row in registry.elementwise():
        for dt in row.dtypes:
            lines.append(_elementwise_loop(row, dt))
            entries.append(f'    {{"{_ew_name(row.name, dt)}", '
                           f'[](void** a) {{ return xpnn_shim::bind(&{_ew_symbol(row.name, dt)}, a); }}}},')
    lines.append("static const xpnn_shim::Entry xpnn_entries[] = {")
    lines += entries
    lines.append("};")
    lines.append(r'''
#define XPNN_SHIM_API __attribute__((visibility("default")))
extern "C" {
static bool xpnn_reverse = false;
// cooperative != 0: run each block's threads as fibers (the kernel synchronises its block), else as a loop.
XPNN_SHIM_API int xpnn_shim_launch(const char* name, unsigned grid, unsigned block, int cooperative, void** args) {
    for (const xpnn_shim::Entry& e : xpnn_entries) {
        if (strcmp(e.name, name) == 0) return xpnn_shim::launch(e.bind(args), cooperative != 0, grid, block,
                                                                xpnn_reverse);
    }
    xpnn_shim::last_error = std::string("no kernel named ") + name;
    return 2;
}
XPNN_SHIM_API const char* xpnn_shim_last_error() { return xpnn_shim::last_error.c_str(); }
XPNN_SHIM_API void xpnn_shim_set_reverse(int reverse) { xpnn_reverse = reverse != 0; }
// 0: fibers in forward (or reverse) order; else a random order from this seed, drawn afresh every round.
XPNN_SHIM_API void xpnn_shim_set_order_seed(unsigned long long seed) { xpnn_shim::requested_order_seed = seed; }
// count != 0: the next launches run only blocks[0:count] of their grids; 0: every block.
XPNN_SHIM_API void xpnn_shim_set_blocks(const unsigned* blocks, unsigned count) {
    xpnn_shim::requested_blocks.assign(blocks, blocks + count);
    std::sort(xpnn_shim::requested_blocks.begin(), xpnn_shim::requested_blocks.end());
}
// OS threads running blocks concurrently (1: one block after another).
XPNN_SHIM_API void xpnn_shim_set_workers(unsigned workers) {
    xpnn_shim::requested_workers = workers == 0 ? 1 : workers;
}
// Of the last launch: OS threads that ran its blocks, and the most blocks that were running at once.
XPNN_SHIM_API unsigned xpnn_shim_threads_used() { return xpnn_shim::last_threads_used; }
XPNN_SHIM_API unsigned xpnn_shim_max_in_flight() { return xpnn_shim::last_max_in_flight; }
}
''')
    return "\n".join(lines)


def _inputs(kdir: Path) -> list[Path]:
    return sorted(kdir.glob("*.cu*")) + [HERE / "shim_runtime.h", HERE / "include" / "cuda_fp16.h"]


@dataclass
class Build:
    library: Path
    log: str  # compiler output (warnings); empty for a clean build


def build(extra_flags: tuple[str, ...] = (), kernels: Optional[Path] = None) -> Build:
    """Compile the shim (or reuse the cached build for identical sources and flags). ``kernels``: a folder to take
    the kernel sources from instead of ``kernels/`` (tests build deliberately broken copies)."""
    if shutil.which(CXX) is None:
        raise RuntimeError(f"the CPU shim needs a C++ compiler ({CXX!r} not found): install g++")
    kdir = Path(kernels) if kernels is not None else kernel_dir()
    src = generate_source()
    flags = FLAGS + tuple(extra_flags)
    h = hashlib.sha256()
    for part in [src, " ".join(flags), CXX] + [p.read_text() for p in _inputs(kdir)]:
        h.update(part.encode())
        h.update(b"\0")
    out_dir = Path(tempfile.gettempdir()) / "xpnn-shim" / h.hexdigest()[:24]
    lib, log_file = out_dir / "libxpnn_shim.so", out_dir / "build.log"
    if lib.is_file() and log_file.is_file():
        return Build(lib, log_file.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    cpp = out_dir / "xpnn_shim.cpp"
    cpp.write_text(src)
    tmp = out_dir / f"libxpnn_shim.{os.getpid()}.so"
    cmd = [CXX, *flags, f"-I{HERE / 'include'}", f"-I{HERE}", f"-I{kdir}", str(cpp), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the CPU shim failed:\n{' '.join(cmd)}\n{proc.stderr}")
    log_file.write_text(proc.stderr)
    os.replace(tmp, lib)
    return Build(lib, proc.stderr)


_libs: dict[Path, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    if path not in _libs:
        lib = ctypes.CDLL(str(path))
        lib.xpnn_shim_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int,
                                         ctypes.POINTER(ctypes.c_void_p)]
        lib.xpnn_shim_launch.restype = ctypes.c_int
        lib.xpnn_shim_last_error.restype = ctypes.c_char_p
        lib.xpnn_shim_set_reverse.argtypes = [ctypes.c_int]
        lib.xpnn_shim_set_workers.argtypes = [ctypes.c_uint]
        lib.xpnn_shim_set_order_seed.argtypes = [ctypes.c_ulonglong]
        lib.xpnn_shim_set_blocks.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.c_uint]
        lib.xpnn_shim_threads_used.restype = ctypes.c_uint
        lib.xpnn_shim_max_in_flight.restype = ctypes.c_uint
        _libs[path] = lib
    return _libs[path]


def _c_arg(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.generic):
        if a.dtype.name == "float16":
            return ctypes.c_uint16(int(a.view(np.uint16)))
        return _CTYPES[a.dtype.name](a.item())
    raise TypeError(f"CPU shim: unsupported kernel argument {type(a).__name__}")


class _ExactBuffers:
    """Copies of the launch's arrays in buffers of exactly their size from C ``malloc`` (under AddressSanitizer:
    with a redzone right after the last element, which a NumPy array viewing a larger buffer would not have).
    The same array passed twice (a placeholder) gets one buffer; ``copy_back`` writes the buffers back."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None)
        self._libc.malloc.restype = ctypes.c_void_p
        self._libc.malloc.argtypes = [ctypes.c_size_t]
        self._libc.free.argtypes = [ctypes.c_void_p]
        self._copies: dict[tuple[int, int], tuple[np.ndarray, int]] = {}

    def pointer(self, a: np.ndarray) -> ctypes.c_void_p:
        key = (a.ctypes.data, a.nbytes)
        if key not in self._copies:
            ptr = self._libc.malloc(a.nbytes)
            if not ptr and a.nbytes:
                raise MemoryError(f"CPU shim: malloc({a.nbytes}) failed")
            ctypes.memmove(ptr, a.ctypes.data, a.nbytes)
            self._copies[key] = (a, ptr)
        return ctypes.c_void_p(self._copies[key][1])

    def copy_back(self) -> None:
        for a, ptr in self._copies.values():
            if a.flags.writeable:
                ctypes.memmove(a.ctypes.data, ptr, a.nbytes)

    def free(self) -> None:
        for _, ptr in self._copies.values():
            self._libc.free(ptr)
        self._copies.clear()


DEFAULT_WORKERS = 4
_LAUNCH_LOCK = threading.Lock()


class ShimLoader:
    """Kernels of the CPU shim for NumPy arrays. ``reverse=True`` runs each block's threads (and the blocks) in
    reverse order; ``order_seed`` (not 0): each block's threads in a random order from that seed, drawn afresh at
    every barrier; ``workers``: OS threads running blocks concurrently (1: one block after another); ``only_blocks``:
run just these blocks of every grid (the others are skipped; for index math on huge sparse arrays).

    ``library``: a shim library built already (by default ``build(extra_flags)``). ``exact_buffers=True`` hands
    the kernels exactly-sized copies of the arrays (see ``_ExactBuffers``; for the AddressSanitizer tests)."""

    name = "shim"

    def __init__(self, reverse: bool = False, extra_flags: tuple[str, ...] = (), library: Optional[Path] = None,
                 exact_buffers: bool = False, workers: int = DEFAULT_WORKERS, order_seed: int = 0,
                 only_blocks: Optional[tuple[int, ...]] = None):
        if workers < 1:
            raise ValueError(f"ShimLoader: workers must be >= 1, got {workers}")
        self.reverse = reverse
        self.order_seed = order_seed
        self.workers = workers
        self.only_blocks = tuple(only_blocks or ())
        self.lib = _load(Path(library) if library is not None else build(extra_flags).library)
        self.exact_buffers = exact_buffers
        self.launches = 0  # kernels run through this loader (tests check the kernels were really used)
        self.last_threads_used = 0  # of the last launch: OS threads that ran blocks, most blocks running at once
        self.last_max_in_flight = 0

    def _launch(self, name: str, grid: int, block: int, args: tuple, cooperative: bool = False) -> None:
        buffers = _ExactBuffers() if self.exact_buffers else None
        try:
            cargs = [buffers.pointer(a) if buffers is not None and isinstance(a, np.ndarray) else _c_arg(a)
                     for a in args]
            argv = (ctypes.c_void_p * max(1, len(cargs)))(*[ctypes.addressof(c) for c in cargs])
            with _LAUNCH_LOCK:  # the settings, the launch and its statistics belong together
                self.lib.xpnn_shim_set_reverse(int(self.reverse))
                self.lib.xpnn_shim_set_workers(self.workers)
                self.lib.xpnn_shim_set_order_seed(self.order_seed)
                self.lib.xpnn_shim_set_blocks((ctypes.c_uint * max(1, len(self.only_blocks)))(*self.only_blocks),
                                              len(self.only_blocks))
                rc = self.lib.xpnn_shim_launch(name.encode(), grid, block, int(cooperative), argv)
                error = self.lib.xpnn_shim_last_error().decode() if rc != 0 else ""
                threads, in_flight = int(self.lib.xpnn_shim_threads_used()), int(self.lib.xpnn_shim_max_in_flight())
            if buffers is not None:
                buffers.copy_back()
        finally:
            if buffers is not None:
                buffers.free()
        if rc != 0:
            raise RuntimeError(f"CPU shim: kernel {name} failed: {error}")
        self.launches += 1
        self.last_threads_used, self.last_max_in_flight = threads, in_flight

    def raw(self, row: registry.RawKernel, dtype: str) -> RawLaunch:
        name = row.name_expression(dtype)
        return RawLaunch(row, dtype,
                         lambda grid, block, args: self._launch(name, grid, block, args, row.cooperative))

    def elementwise(self, row: registry.ElementwiseKernel, dtype: str) -> Callable[..., np.ndarray]:
        ins, _ = _elementwise_params(row)

        def call(*args: Any) -> np.ndarray:
            """CuPy ElementwiseKernel convention: inputs in, new output array out (contiguous arrays here)."""
            if len(args) != len(ins):
                raise TypeError(f"{row.kernel_name}: expected {len(ins)} arguments, got {len(args)}")
            arrays = [a for (typ, _), a in zip(ins, args) if len(typ) == 1]
            shape = arrays[0].shape
            cargs: list[Any] = []
            for (typ, name), a in zip(ins, args):
                if len(typ) == 1:
                    if a.dtype.name != dtype or a.shape != shape or not a.flags.c_contiguous:
                        raise TypeError(f"{row.kernel_name}: {name} must be a C-contiguous {dtype} array of shape "
                                        f"{shape}")
                    cargs.append(a)
                else:
                    cargs.append(np.dtype(typ).type(a))  # CuPy casts Python scalars to the parameter dtype
            out = np.empty(shape, dtype=dtype)
            self._launch(_ew_name(row.name, dtype), 1, 1, (*cargs, out, np.int64(out.size)))
            return out

        return call


def shim_provider(reverse: bool = False) -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """A ``xpnn._dispatch`` provider running NumPy arrays through the shim kernels (use with ``use_provider``)."""
    return make_provider(ShimLoader(reverse=reverse))
