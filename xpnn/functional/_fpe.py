"""Floating-point exceptions of code called through ctypes, reported as NumPy reports its own.

NumPy clears the calling thread's floating-point flags before a ufunc or ``np.dot`` and reports those raised after
it as ``np.errstate`` says (by default a RuntimeWarning "invalid value encountered in divide"; a FloatingPointError
under ``np.errstate(invalid="raise")``). A BLAS GEMM or a compiled loop called through ctypes raises the same flags
unseen. ``FENV`` reads them (``feclearexcept``/``fetestexcept`` of the C library loaded in the process, with the
flag values of x86-64 or arm64; None elsewhere) and ``report`` hands them to NumPy's error state: the caller clears
the reported flags, calls, then reports those raised.
"""
from __future__ import annotations

import ctypes
import platform
import sys
import warnings
from typing import Any, Optional

import numpy as np

__all__ = ["FENV", "report"]

#: C's FE_DIVBYZERO, FE_OVERFLOW, FE_UNDERFLOW, FE_INVALID by machine, in ``_KINDS``' order
_FE_BITS = {"x86_64": (0x04, 0x08, 0x10, 0x01), "amd64": (0x04, 0x08, 0x10, 0x01),
            "aarch64": (0x02, 0x04, 0x08, 0x01), "arm64": (0x02, 0x04, 0x08, 0x01)}
#: (``np.geterr`` key, NumPy's text, NumPy's NPY_FPE_* code passed to an ``np.seterrcall`` function), in the order
#: NumPy reports them
_KINDS = (("divide", "divide by zero", 1), ("over", "overflow", 2), ("under", "underflow", 4),
          ("invalid", "invalid value", 8))


def _fenv() -> Optional[tuple[Any, Any, tuple[int, ...], int]]:
    """(feclearexcept, fetestexcept, the four flags in ``_KINDS``' order, their union), or None (another machine or
    OS)."""
    bits = _FE_BITS.get(platform.machine().lower())
    if bits is None or sys.platform == "win32":
        return None
    try:
        libc = ctypes.CDLL(None)
        clear, test = libc.feclearexcept, libc.fetestexcept
    except (OSError, AttributeError, TypeError):
        return None
    for fn in (clear, test):
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return clear, test, bits, sum(bits)


#: (clear, test, flags, all four flags) of this process's C library, or None where they are not known
FENV = _fenv()


def report(raised: int, name: str) -> None:
    """Report the floating-point exceptions in ``raised`` (C flags, as ``FENV``'s test returns them) as NumPy reports
    those of its operation ``name``: by ``np.geterr()``, divide, overflow, underflow then invalid (ignore, warn,
    raise, call, print or log), with NumPy's messages ("invalid value encountered in dot")."""
    assert FENV is not None
    modes = np.geterr()
    for bit, (kind, text, code) in zip(FENV[2], _KINDS):
        mode = modes[kind]
        if not raised & bit or mode == "ignore":
            continue
        message = f"{text} encountered in {name}"
        if mode == "raise":
            raise FloatingPointError(message)
        if mode == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        elif mode == "call":
            np.geterrcall()(text, code)
        elif mode == "print":
            sys.stderr.write(f"Warning: {message}\n")
        elif mode == "log":
            np.geterrcall().write(f"Warning: {message}\n")
