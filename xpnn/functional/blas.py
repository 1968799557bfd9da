"""``out += a @ b`` by the GEMM of the BLAS NumPy itself calls (CBLAS ``?gemm`` with ``beta = 1``), through ctypes.

A weight gradient added into a Parameter's gradient (``grad += dy.T @ x``) is one GEMM with ``beta = 1``: BLAS adds
the product into ``grad`` as it computes it, where ``np.dot`` then ``+=`` writes the product to a temporary and
reads it back in another pass (Linear's backward: ``Linear.backward``). Same values up to rounding: BLAS adds its
partial sums over blocks of K into ``out`` one block at a time, where the two-pass form adds their total.

The library is found among those already loaded in the process (``/proc/self/maps``; never a second BLAS): the
one inside NumPy's package (the wheels' ``scipy_openblas``, in ``numpy.libs``), else a loaded library named like
NumPy's BLAS (``numpy.show_config``). Its symbols are looked up in a fixed order: ``scipy_cblas_?gemm64_`` and
``cblas_?gemm64_`` (64-bit integers, ILP64), then ``cblas_?gemm`` (32-bit integers, unless NumPy's BLAS reports
``USE64BITINT``). Where none is found (another OS, an unusual build) ``gemm_accumulate`` returns False and the
caller runs its NumPy path; ``status()`` says which was found.

Floating-point exceptions: ``np.dot`` reports those its GEMM raised in the calling thread (an inf times 0, an
overflow...) as ``np.errstate`` says (a RuntimeWarning "invalid value encountered in dot" by default, a
FloatingPointError under ``np.errstate(invalid="raise")``). ``gemm_accumulate`` does the same: it clears the calling
thread's flags, calls the GEMM and reports those raised (``_fpe``: x86-64 and arm64; elsewhere the GEMM is not
used), with np.dot's messages.
"""
from __future__ import annotations

import ctypes
import os
import platform
import threading
from typing import Any, Optional

import numpy as np

from .. import _dispatch
from . import _fpe

__all__ = ["gemm_accumulate", "status"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # (CBLAS enum values)
#: (symbol pattern, integer type) in the order they are tried; ``{}`` is ``s`` or ``d``
_SYMBOLS = (("scipy_cblas_{}gemm64_", ctypes.c_int64), ("cblas_{}gemm64_", ctypes.c_int64),
            ("cblas_{}gemm", None))

_lock = threading.Lock()
_found: Optional[tuple[dict[Any, Any], int, str]] = None  # ({dtype: function}, largest int, status text)


def _loaded_libraries() -> list[str]:
    """Paths of the shared libraries mapped into this process (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    paths: list[str] = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and ".so" in os.path.basename(parts[5]):
            if parts[5] not in paths:
                paths.append(parts[5])
    return paths


def _numpy_blas_config() -> tuple[str, str]:
    """(name, configuration text) of NumPy's BLAS as ``numpy.show_config`` reports it ('' where unknown)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:
        return "", ""
    return str(blas.get("name", "")), str(blas.get("openblas configuration", ""))


def _candidates() -> list[str]:
    """Loaded libraries that may be NumPy's BLAS, most likely first."""
    root = os.path.dirname(os.path.realpath(np.__file__))
    own = [p for p in _loaded_libraries() if os.path.realpath(p).startswith(root)]  # (numpy/, numpy.libs/...)
    name, _ = _numpy_blas_config()
    key = name.lower().replace("scipy-", "").replace("-", "")  # 'openblas', 'mkl', 'blis', 'accelerate'...
    named = [p for p in _loaded_libraries() if key and key in os.path.basename(p).lower().replace("-", "")
             and p not in own]
    return own + named


def _find() -> tuple[dict[Any, Any], int, str]:
    """Look the GEMMs up once: ({np.dtype: ctypes function}, the largest integer they take, status text)."""
    global _found
    with _lock:
        if _found is not None:
            return _found
        _, config = _numpy_blas_config()
        int64_build = "USE64BITINT" in config.upper()
        found: tuple[dict[Any, Any], int, str] = ({}, 0, "no CBLAS gemm of NumPy's BLAS found among the loaded "
                                                           "libraries: weight gradients take np.dot and +=")
        if _fpe.FENV is None:
            found = ({}, 0, f"no CBLAS gemm used: the C library's floating-point flags are not known on "
                            f"{platform.machine()} (x86-64 and arm64 only): weight gradients take np.dot and +=")
        for path in _candidates() if _fpe.FENV is not None else ():
            try:  # (RTLD_NOLOAD: a handle of the library already loaded, never a second copy)
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
            except (OSError, AttributeError):
                continue
            for pattern, itype in _SYMBOLS:
                if itype is None:
                    itype = ctypes.c_int64 if int64_build else ctypes.c_int32
                fns = {}
                for char, dtype, ctype in (("s", np.dtype(np.float32), ctypes.c_float),
                                           ("d", np.dtype(np.float64), ctypes.c_double)):
                    fn = getattr(lib, pattern.format(char), None)
                    if fn is None:
                        break
                    fn.restype = None
                    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, itype, itype, itype, ctype,
                                   ctypes.c_void_p, itype, ctypes.c_void_p, itype, ctype, ctypes.c_void_p, itype)
                    fns[dtype] = fn
                if len(fns) == 2:
                    bits = 8 * ctypes.sizeof(itype)
                    found = (fns, (1 << (bits - 1)) - 1,
                             f"{pattern.format('?')} ({bits}-bit integers) in {path}")
                    break
            if found[0]:
                break
        _found = found
        return found


def status() -> str:
    """Which CBLAS GEMM ``gemm_accumulate`` calls, or why none (for ``xpnn info``)."""
    return _find()[2]


def _operand(a: Any, dtype: Any) -> Optional[tuple[int, int]]:
    """(CBLAS transpose flag, leading dimension) of a 2-D C- or F-contiguous aligned array of ``dtype``, else None."""
    if type(a) is not np.ndarray or a.ndim != 2 or a.dtype != dtype:
        return None
    flags = a.flags
    if not flags.aligned:
        return None
    if flags.c_contiguous:
        return _NO_TRANS, max(1, a.shape[1])
    if flags.f_contiguous:  # (a transposed view: its transpose is row-major)
        return _TRANS, max(1, a.shape[0])
    return None


def gemm_accumulate(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``out += a @ b`` in place by one BLAS GEMM (alpha 1, beta 1): a (M, K), b (K, N), out (M, N).

    Applies to NumPy float32/float64 arrays of one dtype (native byte order) where ``out`` is C-contiguous,
    aligned, writeable and shares no memory with ``a`` or ``b``, and ``a``/``b`` are each C- or F-contiguous
    (transposed views included). Returns False, having done nothing, where it does not apply: another array type,
    dtype or layout, a zero-sized dimension, shapes that do not match, sizes past the BLAS integer width, kernels
    turned off (``xpnn.set_kernels_enabled(False)``), or no CBLAS GEMM of NumPy's BLAS found (``status()``).
    Floating-point exceptions the GEMM raised are reported as np.dot reports them (``np.errstate``; a
    FloatingPointError is raised after ``out`` was updated)."""
    if not _dispatch.kernels_enabled() or type(out) is not np.ndarray or out.ndim != 2:
        return False
    dtype = out.dtype
    fns, largest, _ = _found if _found is not None else _find()
    fn = fns.get(dtype)
    if fn is None or not dtype.isnative:
        return False
    flags = out.flags
    if not (flags.c_contiguous and flags.aligned and flags.writeable):
        return False
    ta, tb = _operand(a, dtype), _operand(b, dtype)
    if ta is None or tb is None:
        return False
    m, n = out.shape
    k = a.shape[1]
    if a.shape[0] != m or b.shape != (k, n) or not (m and n and k) or max(m, n, k) > largest:
        return False
    if np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    clear, test, _, reported = _fpe.FENV  # (set: _find finds no GEMM without it)
    clear(reported)
    fn(_ROW_MAJOR, ta[0], tb[0], m, n, k, 1.0, a.ctypes.data, ta[1], b.ctypes.data, tb[1], 1.0, out.ctypes.data,
       max(1, n))
    raised = test(reported)
    if raised:
        _fpe.report(raised, "dot")
    return True
