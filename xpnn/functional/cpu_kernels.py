"""CPU kernels: loops that NumPy can only run as many array passes, compiled into one pass.

NumPy runs an optimizer update as one ufunc call per operation: Adam is ~13 passes over its arrays. The same
expressions compiled into one loop read and write each element once: Adam over the 0.67 M parameters of a
784-512-512-10 MLP takes 0.7 ms instead of 1.7-2.4 ms on one core (2026-12-06). No NumPy formulation or BLAS call
fuses elementwise passes, and splitting them over Python threads does not pay at this size (see ``cpu_threads``), so
these few loops are compiled. The column-free convolution's copies and shifted sums (``conv_numpy``'s shift-add path,
``kernels/cpu/conv.cpp``) likewise: several NumPy calls per sample, each holding the GIL while the batch's chunks run
on threads, become one call. Likewise the im2col convolution path's column build and col2im (``im2col``,
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
from typing import Any, Callable, Optional

import numpy as np

from .. import _dispatch

__all__ = ["library", "status", "adam_update", "shift_planes_fn", "shift_row_sum_fn", "shift_dw_rows_fn",
           "im2col_ready", "im2col", "col2im", "SOURCES", "FLAGS"]

#: the sources compiled into the library, in ``kernels/cpu``
SOURCES = ("optimizers.cpp", "conv.cpp", "im2col.cpp")
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
        # xpnn_cpu_shift_planes_<dtype>(xs, src, lo, hi, c, h, w, 4 src strides, kw, hp, wp, pt, pl, dw)
        sig[f"xpnn_cpu_shift_planes_{dtype.name}"] = [ctypes.c_void_p] * 2 + [ctypes.c_longlong] * 15
        # xpnn_cpu_shift_row_sum_<dtype>(z, y, bias or NULL, groups, kh, cog, plane, wp, dh, oh, ow)
        sig[f"xpnn_cpu_shift_row_sum_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] * 8
        # xpnn_cpu_shift_dw_rows_<dtype>(est, pg, groups, kh, cog, plane, channel stride of pg, at, dh, wp)
        sig[f"xpnn_cpu_shift_dw_rows_{dtype.name}"] = [ctypes.c_void_p] * 2 + [ctypes.c_longlong] * 8
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


# The column-free convolution's loops (kernels/cpu/conv.cpp; conv_numpy's shift-add path). Each ``*_fn`` checks its
# arrays once and returns a function that runs the loop for one sample (or a range) in one ctypes call (~3 us of
# Python where the checks and pointer look-ups are ~15 us: conv_numpy's chunks call them per sample on threads, and
# the Python in between holds the GIL), or None where it does not apply: then the caller runs its NumPy passes.


def _conv_kernel(name: str, *arrays: Any) -> Any:
    """The entry point ``xpnn_cpu_<name>_<dtype>`` for NumPy arrays of one float32/float64 dtype (None entries
    skipped), or None: kernels off or not built, another array type or dtype."""
    dtype = arrays[0].dtype
    if dtype not in _C_TYPES or not _dispatch.kernels_enabled():
        return None
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype != dtype):
            return None
    lib = library()
    return None if lib is None else getattr(lib, f"xpnn_cpu_{name}_{dtype.name}")


def shift_planes_fn(xs: np.ndarray, src: np.ndarray, pt: int, pl: int, wp: int,
                    dw: int) -> Optional[Callable[[int, int], None]]:
    """``fill(lo, hi)``: ``conv_numpy._fill_shifts`` for samples ``lo:hi`` in one pass, xs (N, C, kw, hp*wp)
    C-contiguous receiving the column-shifted zero-padded planes of src (N, C, H, W, any strides) placed at row
    ``pt``, column ``pl`` of a plane of pitch ``wp``, shifted by ``j*dw`` (the same bytes, zeros included); None
    where it does not apply."""
    fn = _conv_kernel("shift_planes", xs, src)
    if fn is None or not xs.flags.c_contiguous or xs.ndim != 4 or src.ndim != 4 or xs.shape[:2] != src.shape[:2]:
        return None
    it = src.itemsize
    n, c, kw, plane = xs.shape
    if any(s % it for s in src.strides) or plane % wp or pt + src.shape[2] > plane // wp or pl + src.shape[3] > wp:
        return None
    xp, sp = xs.ctypes.data, src.ctypes.data
    rest = (c, src.shape[2], src.shape[3], *(s // it for s in src.strides), kw, plane // wp, wp, pt, pl, dw)

    def fill(lo: int, hi: int, _keep: Any = (xs, src)) -> None:  # (_keep: the arrays stay while fill does)
        if not 0 <= lo <= hi <= n:
            raise IndexError(f"shift_planes: samples {lo}:{hi} of {n}")
        fn(xp, sp, lo, hi, *rest)

    return fill


def shift_row_sum_fn(z: np.ndarray, y: np.ndarray, bias: Optional[np.ndarray], wp: int,
                     dh: int) -> Optional[Callable[[int], None]]:
    """``row_sum(n)``: sample n of ``conv_numpy.shift_add_product``'s kernel-row sum in one pass, y[n] (groups,
    C_out/G, oh, ow) = ``((z_0 + z_1) + z_2) + ... + bias``, z_i the row-i shifted view of z (groups, kh, C_out/G,
    plane) (pitch ``wp``, rows ``dh`` apart), in the NumPy passes' order (equal bit for bit). y (N, groups, C_out/G,
    oh, ow) and z C-contiguous, bias (C_out,) or None; None where it does not apply."""
    fn = _conv_kernel("shift_row_sum", z, y, bias)
    if fn is None or not (z.flags.c_contiguous and y.flags.c_contiguous) or z.ndim != 4 or y.ndim != 5 \
            or (z.shape[0], z.shape[2]) != y.shape[1:3] \
            or y.shape[4] > wp or (y.shape[3] - 1 + (z.shape[1] - 1) * dh) * wp + y.shape[4] > z.shape[3] \
            or (bias is not None and not (bias.flags.c_contiguous and bias.size == y.shape[1] * y.shape[2])):
        return None
    groups, kh, cog, plane = z.shape
    n, step = y.shape[0], y.strides[0]
    zp, yp, bp = z.ctypes.data, y.ctypes.data, None if bias is None else bias.ctypes.data
    rest = (groups, kh, cog, plane, wp, dh, y.shape[3], y.shape[4])

    def row_sum(k: int, _keep: Any = (z, y, bias)) -> None:
        if not 0 <= k < n:
            raise IndexError(f"shift_row_sum: sample {k} of {n}")
        fn(zp, yp + k * step, bp, *rest)

    return row_sum


def shift_dw_rows_fn(est: np.ndarray, pg: np.ndarray, at: int, dh: int, wp: int) -> Optional[Callable[[int], None]]:
    """``rows(n)``: sample n of ``conv_numpy.conv2d_weight_grad_shift_numpy``'s operand in one pass, ``est[gi, i, o,
    s:s+m] = pg[n, gi, o, at:at+m]``, s = i*dh*wp, m = plane - max(s, at) (est's other entries untouched), for est
    (groups, kh, C_out/G, plane) C-contiguous and pg (N, groups, C_out/G, plane) with contiguous rows equally spaced
    in a sample; None where it does not apply."""
    fn = _conv_kernel("shift_dw_rows", est, pg)
    if fn is None or not est.flags.c_contiguous or est.ndim != 4 or pg.shape[1:] != (est.shape[0],) + est.shape[2:] \
            or not 0 <= at <= est.shape[3]:
        return None
    it = pg.itemsize
    sn, s0, s1, s2 = pg.strides
    groups, kh, cog, plane = est.shape
    cstride = s1 if cog > 1 else s0  # (the stride of a length-1 axis is arbitrary)
    if s2 != it or cstride % it or (groups > 1 and cog > 1 and s0 != s1 * cog):
        return None
    n, ep, pp = pg.shape[0], est.ctypes.data, pg.ctypes.data
    rest = (groups, kh, cog, plane, cstride // it, at, dh, wp)

    def rows(k: int, _keep: Any = (est, pg)) -> None:
        if not 0 <= k < n:
            raise IndexError(f"shift_dw_rows: sample {k} of {n}")
        fn(ep, pp + k * sn, *rest)

    return rows
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
