"""Finding and reading the CUDA sources, and the kernel signatures the launchers check arguments against.

Sources live in ``<repo>/kernels``; an installed (non-editable) xpnn carries a copy in ``xpnn/_kernels`` (made by
``setup.py``). ``#include "x.cuh"`` lines are inlined, so the text handed to NVRTC is self-contained and CuPy's
cache key (the source text) changes whenever any included file does.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from .registry import ACC_DTYPES

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (_HERE.parent / "_kernels", _HERE.parent.parent / "kernels")
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.M)


def kernel_dir() -> Path:
    """The folder holding the ``.cu``/``.cuh`` sources (packaged copy first, then the source tree)."""
    for d in _CANDIDATES:
        if (d / "common.cuh").is_file():
            return d
    raise FileNotFoundError(
        "xpnn's CUDA sources were not found (looked in " + ", ".join(str(d) for d in _CANDIDATES) + "); "
        "reinstall xpnn or set XPNN_DISABLE_KERNELS=1"
    )


@functools.lru_cache(maxsize=None)
def read_source(name: str) -> str:
    """Text of ``name`` with local ``#include "..."`` lines replaced by the included file (each file once)."""
    root = kernel_dir()
    seen: set[str] = set()

    def expand(fname: str) -> str:
        if fname in seen:
            return ""
        seen.add(fname)
        text = (root / fname).read_text()
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(name)


# ---- kernel signatures -------------------------------------------------------------------------------------------

_C_SCALARS = {"float": "float32", "double": "float64", "int": "int32", "long long": "int64", "unsigned": "uint32",
              "unsigned long long": "uint64"}


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # "T", "A", or a C scalar type from _C_SCALARS
    pointer: bool

    def dtype(self, dtype: str) -> str:
        """numpy dtype name of this parameter when the kernel is instantiated for storage dtype ``dtype``."""
        if self.ctype == "T":
            return dtype
        if self.ctype == "A":
            return ACC_DTYPES[dtype]
        return _C_SCALARS[self.ctype]


# __launch_bounds__(max threads[, min blocks per multiprocessor])
_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\((\d+)(?:\s*,\s*\d+)?\)\s*)?(\w+)\s*\(([^)]*)\)", re.S)


def _parse_param(text: str) -> Param:
    words = [w for w in text.replace("*", " * ").split() if w not in ("const", "__restrict__")]
    name = words[-1]
    pointer = "*" in words
    ctype = " ".join(w for w in words[:-1] if w != "*")
    if ctype not in ("T", "A") and ctype not in _C_SCALARS:
        raise ValueError(f"kernel parameter {text.strip()!r}: unsupported type {ctype!r}")
    return Param(name, ctype, pointer)


@functools.lru_cache(maxsize=None)
def signature(source: str, kernel: str) -> tuple[Param, ...]:
    """Parameters of ``__global__ void kernel(...)`` in ``source`` (parsed once, from the source itself)."""
    for m in _KERNEL.finditer(read_source(source)):
        if m.group(2) == kernel:
            return tuple(_parse_param(p) for p in m.group(3).split(","))
    raise LookupError(f"kernel {kernel!r} not found in {source}")


@functools.lru_cache(maxsize=None)
def launch_bound(source: str, kernel: str) -> int:
    """The ``__launch_bounds__`` of ``kernel`` in ``source``: the largest block it may be launched with (1024 when it
    declares none -- but then the compiler may use more registers than such a block can have)."""
    for m in _KERNEL.finditer(read_source(source)):
        if m.group(2) == kernel:
            return int(m.group(1)) if m.group(1) else 1024
    raise LookupError(f"kernel {kernel!r} not found in {source}")
