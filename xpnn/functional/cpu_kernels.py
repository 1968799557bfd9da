"""CPU kernels: loops that NumPy can only run as many array passes, compiled into one pass.

NumPy runs an optimizer update as one ufunc call per operation: Adam is ~13 passes over its arrays. The same
expressions compiled into one loop read and write each element once: Adam over the 0.67 M parameters of a
784-512-512-10 MLP takes 0.7 ms instead of 1.7-2.4 ms on one core (2026-12-06). No NumPy formulation or BLAS call
fuses elementwise passes, and splitting them over Python threads does not pay at this size (see ``cpu_threads``), so
these few loops are compiled.

- The sources are ``kernels/cpu/*.cpp``: C++ that includes the element math of the CUDA kernels (``kernels/adam.cuh``)
  so each update is written once for CUDA and the CPU. Max pooling (``max_pool2d``, ``max_pool2d_backward``: one call
  per batch chunk, the window rule of ``kernels/max_pool.cuh``) likewise. Built with ``-ffp-contract=off`` (no a*b+c -> FMA), their
  results equal the NumPy path's bit for bit.
- Built on first use with the system C++ compiler (``$CXX``, else the first of ``c++``, ``g++``, ``clang++`` on
  PATH; ~1 s), cached as ``cpu-<hash>.so`` in ``$XPNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/xpnn``, else
  ``~/.cache/xpnn`` (else the temporary folder). The hash covers the sources, the flags and the compiler's
  ``--version``; the file is written under a temporary name and renamed, so processes building at once (MPI ranks,
  test workers) never load a partial library.
- Called through ctypes, which releases the GIL for the call.
- Where no compiler is found or the build fails, ``library()`` is None, ``status()`` says why, and the NumPy paths
  run (the same results, slower). ``XPNN_DISABLE_KERNELS=1`` / ``xpnn.set_kernels_enabled(False)`` turn these off
  together with the CUDA kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import _dispatch

__all__ = ["library", "status", "adam_update", "max_pool2d", "max_pool2d_backward", "pooling_applies", "SOURCES", "FLAGS"]

#: the sources compiled into the library, in ``kernels/cpu``
SOURCES = ("optimizers.cpp", "pooling.cpp")
#: -ffp-contract=off: each a*b+c rounded twice, as NumPy's separate ufuncs (results equal the NumPy path's);
#: -fno-math-errno: sqrt as one instruction (no errno to set; its result is the same correctly rounded value)
FLAGS = ("-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-fvisibility=hidden")
_COMPILERS = ("c++", "g++", "clang++")
#: elements from which an update takes the compiled loop: below, a ctypes call (~5 us with its arguments) costs
#: more than NumPy's passes over a small array
MIN_ELEMENTS = 1 << 12

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "lib": the loaded library or None, "status": why (set once, under _lock)
_C_TYPES = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


def _source_dir() -> Optional[Path]:
    """``kernels/cpu`` (the installed package's copy first, as for the CUDA sources), or None."""
    here = Path(__file__).resolve().parent.parent
    for d in (here / "_kernels" / "cpu", here.parent / "kernels" / "cpu"):
        if all((d / s).is_file() for s in SOURCES):
            return d
    return None


def _compiler() -> Optional[list[str]]:
    """The C++ compiler command: ``$CXX`` (split like a shell word list) if set, else the first of ``c++``, ``g++``,
    ``clang++`` on PATH; None when there is none."""
    env = os.environ.get("CXX", "").strip()
    if env:
        cmd = shlex.split(env)
        return cmd if shutil.which(cmd[0]) else None
    for name in _COMPILERS:
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cache_dirs() -> list[Path]:
    """Where the built library may be kept, in order of preference."""
    env = os.environ.get("XPNN_CACHE_DIR")
    if env:
        return [Path(env)]
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return [base / "xpnn", Path(tempfile.gettempdir()) / f"xpnn-{os.getuid() if hasattr(os, 'getuid') else 'user'}"]


def _key(cxx: list[str], src: Path) -> str:
    """Hash of the sources (with the headers they include), the flags and the compiler's version."""
    h = hashlib.sha256()
    for f in sorted(src.parent.glob("*.cuh")) + [src / s for s in SOURCES]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(" ".join(FLAGS).encode())
    try:
        version = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h.update(" ".join(cxx).encode() + b"\0" + version.encode())
    return h.hexdigest()[:20]


def _build(cxx: list[str], src: Path, target: Path) -> Optional[str]:
    """Compile the sources into ``target`` (atomically: a temporary file in its folder, then a rename); the
    compiler's message when it fails, else None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([*cxx, *FLAGS, "-o", tmp, *(str(src / s) for s in SOURCES)], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()[-2000:] or f"exit status {proc.returncode}"
        os.replace(tmp, target)
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> tuple[Optional[ctypes.CDLL], str]:
    src = _source_dir()
    if src is None:
        return None, "the CPU kernel sources (kernels/cpu) were not found: reinstall xpnn"
    cxx = _compiler()
    if cxx is None:
        return None, ("no C++ compiler found ($CXX, c++, g++ or clang++ on PATH): the NumPy paths run (install "
                      "one, e.g. g++, for the compiled CPU kernels)")
    key = _key(cxx, src)
    errors = []
    for folder in _cache_dirs():
        target = folder / f"cpu-{key}.so"
        try:
            if not target.is_file():
                message = _build(cxx, src, target)
                if message is not None:
                    return None, f"building the CPU kernels with {cxx[0]} failed: {message}"
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as e:  # a folder we cannot write, a build that timed out
            errors.append(f"{folder}: {e}")
            continue
        _declare(lib)
        return lib, f"compiled with {cxx[0]} ({target})"
    return None, "the CPU kernels could not be built or loaded: " + "; ".join(errors)


def _signatures() -> dict[str, list[Any]]:
    """Entry point -> ctypes argument types, for every kernel and dtype (each returns nothing)."""
    sig: dict[str, list[Any]] = {}
    for dtype, c in _C_TYPES.items():
        # xpnn_cpu_adam_<dtype>(param, grad, exp_avg, exp_avg_sq, vmax, n, beta1, 1 - beta1, beta2, 1 - beta2, eps,
        #                       weight_decay, decay, step_size, bc2_sqrt, decoupled, amsgrad, maximize)
        sig[f"xpnn_cpu_adam_{dtype.name}"] = [ctypes.c_void_p] * 5 + [ctypes.c_longlong] + [c] * 9 + [ctypes.c_int] * 3
        # xpnn_cpu_max_pool2d_<dtype>(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)
        sig[f"xpnn_cpu_max_pool2d_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [ctypes.c_int] * 12
        # xpnn_cpu_max_pool2d_backward_<dtype>(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow,
        #                                      tiles)
        sig[f"xpnn_cpu_max_pool2d_backward_{dtype.name}"] = ([ctypes.c_void_p] * 3 + [ctypes.c_longlong]
                                                             + [ctypes.c_int] * 13)
    return sig


def _declare(lib: ctypes.CDLL) -> None:
    """ctypes signatures of the entry points."""
    for name, argtypes in _signatures().items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None


def library() -> Optional[ctypes.CDLL]:
    """The compiled CPU kernels (built and loaded on the first call), or None where they cannot be built (see
    ``status``). Never raises."""
    lib = _state.get("lib", False)
    if lib is not False:
        return lib
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"], _state["status"] = _load()
            except Exception as e:  # noqa: BLE001 (never fail a training step over an optional speed-up)
                _state["lib"], _state["status"] = None, f"the CPU kernels could not be loaded: {e!r}"
    return _state["lib"]


def status() -> str:
    """Whether the compiled CPU kernels are in use, and why not (builds them if that was not tried yet)."""
    lib = library()
    if not _dispatch.kernels_enabled():
        return "off (XPNN_DISABLE_KERNELS / set_kernels_enabled(False))" + ("" if lib else "; " + _state["status"])
    return _state["status"]


def _usable(arrays: tuple[Any, ...]) -> bool:
    """Whether the arrays (None entries skipped) are C-contiguous NumPy float32/float64 arrays of one shape and
    dtype, at least ``MIN_ELEMENTS`` long, each its own memory."""
    first = arrays[0]
    if first.dtype not in _C_TYPES or first.size < MIN_ELEMENTS:
        return False
    present = [a for a in arrays if a is not None]
    for a in present:
        if type(a) is not np.ndarray or a.shape != first.shape or a.dtype != first.dtype or not a.flags.c_contiguous:
            return False
    spans = sorted((a.__array_interface__["data"][0], a.nbytes) for a in present)
    return all(lo + n <= nxt for (lo, n), (nxt, _) in zip(spans, spans[1:]))  # no two overlap


def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                max_exp_avg_sq: Optional[np.ndarray], scalars: tuple[float, float, float], beta1: float,
                beta2: float, eps: float, weight_decay: float, decoupled_weight_decay: bool, amsgrad: bool,
                maximize: bool) -> bool:
    """``updates.adam_update`` on NumPy arrays in one compiled pass; ``scalars`` = ``(step_size, bc2_sqrt, decay)``
    as ``updates._adam_scalars`` gives them (Python floats). False (nothing done) where it does not apply: kernels
    off or not built, arrays that are not ``_usable``."""
    if not _dispatch.kernels_enabled():
        return False
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None)
    if not _usable(arrays):
        return False
    lib = library()
    if lib is None:
        return False
    step_size, bc2_sqrt, decay = scalars
    fn = getattr(lib, f"xpnn_cpu_adam_{param.dtype.name}")
    # the scalars are rounded to the arrays' dtype by ctypes, as NumPy rounds a Python float operand
    fn(*(None if a is None else a.ctypes.data for a in arrays), param.size, beta1, 1 - beta1, beta2, 1 - beta2, eps,
       weight_decay, decay, step_size, bc2_sqrt, int(decoupled_weight_decay), int(amsgrad), int(maximize))
    return True


def _pool_geometry(g: Any) -> tuple[int, ...]:
    """(planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow) of a ``Conv2dGeometry`` for the pooling kernels."""
    return g.n * g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow


def pooling_applies(g: Any, *arrays: Any) -> bool:
    """Whether the pooling kernels run for geometry g (a ``Conv2dGeometry``) on these arrays: kernels on and built,
    C-contiguous NumPy arrays, the float ones float32 or float64 (one dtype), the others int32 (argmax), and padded
    planes below 2^31 elements (the kernels' index math within a plane is 32-bit)."""
    if not _dispatch.kernels_enabled() or g.hp * g.wp >= 1 << 31:
        return False
    if not all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays):
        return False
    floats = {a.dtype for a in arrays if a.dtype != np.int32}
    return len(floats) == 1 and floats <= _C_TYPES.keys() and library() is not None


def max_pool2d(x: np.ndarray, g: Any, y: np.ndarray, argmax: np.ndarray) -> bool:
    """``conv_numpy.max_pool2d_numpy`` in one compiled pass: y (N, C, OH, OW) and int32 argmax (the winning offset
    ``i * kw + j``) written for x (N, C, H, W) of geometry g, each window's winner by the CUDA kernel's rule
    (``kernels/max_pool.cuh``: the first maximum, the last NaN, padding never winning; y the winning element). False (nothing done) where ``pooling_applies`` does not hold."""
    if not pooling_applies(g, x, y, argmax):
        return False
    fn = getattr(library(), f"xpnn_cpu_max_pool2d_{x.dtype.name}")
    fn(x.ctypes.data, y.ctypes.data, argmax.ctypes.data, *_pool_geometry(g))
    return True


def max_pool2d_backward(argmax: np.ndarray, dy: np.ndarray, g: Any, dx: np.ndarray, tiles: int) -> bool:
    """``conv_numpy.max_pool2d_backward_numpy`` in one compiled pass: dx (N, C, H, W) from the int32 argmax and dy
    (N, C, OH, OW). ``tiles``: 0 where the windows do not tile the input exactly (each pixel: +0.0 plus the dy of
    the windows it won, in increasing kernel offset), 1 / 2 where they do (each pixel: the dy of its window where it
    won, else +0.0 / ``0 * dy``). False (nothing done) where ``pooling_applies`` does not hold."""
    if not pooling_applies(g, argmax, dy, dx):
        return False
    fn = getattr(library(), f"xpnn_cpu_max_pool2d_backward_{dy.dtype.name}")
    fn(argmax.ctypes.data, dy.ctypes.data, dx.ctypes.data, *_pool_geometry(g), tiles)
    return True
