"""CPU kernels: loops that NumPy can only run as many array passes, compiled into one pass.

NumPy runs an optimizer update as one ufunc call per operation: Adam is ~13 passes over its arrays. The same
expressions compiled into one loop read and write each element once: Adam over the 0.67 M parameters of a
784-512-512-10 MLP takes 0.7 ms instead of 1.7-2.4 ms on one core (2026-12-06). No NumPy formulation or BLAS call
fuses elementwise passes, and splitting them over Python threads does not pay at this size (see ``cpu_threads``), so
these few loops are compiled. Likewise the im2col convolution path's column build and col2im (``im2col``,
``col2im``; kernels/cpu/im2col.cpp): NumPy scatters column gradients with kh*kw strided additions into a padded
accumulator and a transpose, where one loop gathers each dx row once.

- The sources are ``kernels/cpu/*.cpp``: C++ that includes the element math of the CUDA kernels (``kernels/adam.cuh``)
  so each update is written once for CUDA and the CPU. Built with ``-ffp-contract=off`` (no a*b+c -> FMA), their
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

__all__ = ["library", "status", "adam_update", "SOURCES", "FLAGS", "im2col_ready", "im2col", "col2im"]

#: the sources compiled into the library, in ``kernels/cpu``
SOURCES = ("optimizers.cpp", "im2col.cpp")
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
        # xpnn_cpu_im2col_<dtype>(x, cols, geometry); xpnn_cpu_col2im_<path>_<dtype>(columns, dx, geometry, dx's
        # element strides over n, c, h)
        sig[f"xpnn_cpu_im2col_{dtype.name}"] = [ctypes.c_void_p] * 3
        for path in COL2IM_PATHS:
            sig[f"xpnn_cpu_col2im_{path}_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] * 3
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


#: the scatters of ``conv_numpy`` with a compiled gather-form col2im (kernels/cpu/im2col.cpp)
COL2IM_PATHS = ("batch_last", "channels_last", "rows", "cols")


def _geometry(g: Any, groups: int) -> Any:
    """The geometry array the im2col kernels read: n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow, groups."""
    return (ctypes.c_longlong * 15)(g.n, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow,
                                    groups)


def im2col_ready(dtype: Any) -> bool:
    """Whether the im2col kernels run for NumPy arrays of ``dtype`` (kernels on and built, float32/float64)."""
    return _dispatch.kernels_enabled() and np.dtype(dtype) in _C_TYPES and library() is not None


def _im2col_lib(*arrays: np.ndarray) -> Optional[ctypes.CDLL]:
    """The library where the im2col kernels apply to these NumPy arrays (kernels on and built, one float32/float64
    dtype, all C-contiguous), else None."""
    if not _dispatch.kernels_enabled():
        return None
    dtype = arrays[0].dtype
    if dtype not in _C_TYPES or any(type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous
                                    for a in arrays):
        return None
    return library()


def im2col(x: np.ndarray, cols: np.ndarray, g: Any) -> bool:
    """``conv_numpy.im2col_numpy``'s column tensor in one pass: ``cols[n, c, i, j, p, q] = x[n, c, i*dh + p*sh - pt,
    j*dw + q*sw - pl]`` (0 in the padding) for x (N, C, H, W) and cols (N, C, kh, kw, oh, ow), both C-contiguous
    and of one float dtype; g the ``Conv2dGeometry``. False (nothing done) where it does not apply (``_im2col_lib``)."""
    lib = _im2col_lib(x, cols)
    if lib is None or x.shape != (g.n, g.c, g.h, g.w) or cols.shape != (g.n, g.c, g.kh, g.kw, g.oh, g.ow):
        return False
    getattr(lib, f"xpnn_cpu_im2col_{x.dtype.name}")(x.ctypes.data, cols.ctypes.data, _geometry(g, 1))
    return True


def col2im(path: str, columns: np.ndarray, dx: np.ndarray, g: Any, groups: int) -> bool:
    """The scatter of ``conv_numpy``'s dx path ``path`` (one of ``COL2IM_PATHS``) from its GEMM output ``columns``
    (C-contiguous, in that path's layout: see kernels/cpu/im2col.cpp) straight into dx (N, C_in, H, W), an array or
    a view whose rows are contiguous (e.g. the interior of a padded buffer): each dx element the NumPy path's terms
    in its order from 0, so the same values bit for bit. False (nothing done) where it does not apply
    (``_im2col_lib``, dx of another dtype or with strided rows, shapes other than the geometry's, a stride the path
    does not take). Raises ValueError for an unknown path."""
    if path not in COL2IM_PATHS:
        raise ValueError(f"cpu_kernels.col2im: path must be one of {COL2IM_PATHS}, got {path!r}")
    lib = _im2col_lib(columns)
    item = columns.itemsize
    if lib is None or type(dx) is not np.ndarray or dx.dtype != columns.dtype or dx.shape != (g.n, g.c, g.h, g.w) \
            or not dx.flags.writeable or (g.w > 1 and dx.strides[3] != item) or any(s % item for s in dx.strides) \
            or columns.size != g.n * g.c * g.offsets * g.oh * g.ow or g.c % groups \
            or path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        return False
    sn, sc, sh = (s // item for s in dx.strides[:3])
    getattr(lib, f"xpnn_cpu_col2im_{path}_{columns.dtype.name}")(columns.ctypes.data, dx.ctypes.data,
                                                                 _geometry(g, groups), sn, sc, sh)
    return True
