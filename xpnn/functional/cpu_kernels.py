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

The Winograd F(2x2, 3x3) convolution's tile transforms (``winograd_input``, ``winograd_output``, ``winograd_dy``;
kernels/cpu/winograd.cpp) are the one exception to "the same values as a NumPy path": they serve another algorithm
(``conv_numpy.winograd_conv``), whose NumPy-only form would be slower than the shift path it replaces.

- The sources are ``kernels/cpu/*.cpp``: C++ that includes the element math of the CUDA kernels (``kernels/adam.cuh``;
  SGD, Adagrad and RMSprop: ``kernels/updates.cuh``) so each update is written once for CUDA and the CPU. Max pooling (``max_pool2d``, ``max_pool2d_backward``: one call
  per batch chunk, the window rule of ``kernels/max_pool.cuh``) likewise, and ReLU's backward (``relu_backward``: one
  pass where ``zero_where`` makes three; the rule of ``kernels/activation_backward.cuh``, in
  ``kernels/cpu/activations.cpp``), with ReLU's forward and leaky ReLU's forward and backward (``relu_forward``,
  ``leaky_relu_forward``, ``leaky_relu_backward``). Built with ``-ffp-contract=off`` (no a*b+c -> FMA), their
  results equal the NumPy path's bit for bit.
- Built on first use with the system C++ compiler (``$CXX``, else the first of ``c++``, ``g++``, ``clang++`` on
  PATH; ~1 s), cached as ``cpu-<hash>.so`` in ``$XPNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/xpnn``, else
  ``~/.cache/xpnn``; where that cannot be written or loaded from, in this user's private ``xpnn-<uid>`` in the
  temporary folder. The hash covers the sources, the flags, the machine and the compiler's ``--version``. The file
  is written under a temporary name and renamed, with its SHA-256 next to it (a library cut short by a crash is
  rebuilt, never loaded); processes starting together (MPI ranks, test workers) wait on a lock of the folder for
  one build. A build past ``BUILD_TIMEOUT_S`` is killed with everything the compiler started.
- Called through ctypes, which releases the GIL for the call.
- Where no compiler is found or the build fails, ``library()`` is None, ``status()`` says why, and the NumPy paths
  run (the same results, slower). ``XPNN_DISABLE_KERNELS=1`` / ``xpnn.set_kernels_enabled(False)`` turn these off
  together with the CUDA kernels.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .. import _dispatch
from . import _fpe

__all__ = ["library", "status", "adam_update", "shift_planes_fn", "shift_row_sum_fn", "shift_dw_rows_fn",
           "im2col_ready", "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "pooling_applies", "relu_backward",
           "SOURCES", "FLAGS", "winograd_ready", "winograd_input", "winograd_output", "winograd_dy", "relu_forward",
           "leaky_relu_forward", "leaky_relu_backward", "sgd_update", "adagrad_update", "rmsprop_update"]

#: the sources compiled into the library, in ``kernels/cpu``
SOURCES = ("optimizers.cpp", "conv.cpp", "im2col.cpp", "pooling.cpp", "activations.cpp", "winograd.cpp")
#: -fno-fast-math -fno-unsafe-math-optimizations: cancel those in $CXX (CXX="g++ -ffast-math" would reorder the math,
#: and link crtfastmath.o, whose loading turns on flush-to-zero for the whole process, NumPy included);
#: -ffp-contract=off: each a*b+c rounded twice, as NumPy's separate ufuncs (results equal the NumPy path's);
#: -fno-math-errno: sqrt as one instruction (no errno to set; its result is the same correctly rounded value)
FLAGS = ("-std=c++17", "-O3", "-fno-fast-math", "-fno-unsafe-math-optimizations", "-ffp-contract=off",
         "-fno-math-errno", "-fPIC", "-shared", "-fvisibility=hidden")
_COMPILERS = ("c++", "g++", "clang++")
#: elements from which an update takes the compiled loop: below, a ctypes call (~5 us with its arguments) costs
#: more than NumPy's passes over a small array
MIN_ELEMENTS = 1 << 12
#: seconds the compiler may take (~1.5 s alone here; ~10 s with 8 processes building at once on 2 cores) before the
#: build is given up (the compiler and everything it started killed) and the NumPy paths run: a hung compiler
#: delays the first training step by this much once, never more
BUILD_TIMEOUT_S = 120.0
#: seconds for ``$CXX --version`` (part of the cache key)
VERSION_TIMEOUT_S = 20.0

_lock = threading.Lock()
# "loaded": (the loaded library or None, the status line), set once (under _lock) in one assignment
_state: dict[str, tuple[Optional[ctypes.CDLL], str]] = {}
_C_TYPES = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}
_ADVICE = "the NumPy paths run"
_PLAIN = (float, int)  # scalar types that NumPy rounds to an array's dtype as ctypes does


def _after_fork_in_child() -> None:
    """A fork while another thread held ``_lock`` (building) leaves the child's copy held by a thread that does not
    exist there: a new lock, so that the child's first kernel call builds or loads instead of waiting forever."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _source_dir() -> Optional[Path]:
    """``kernels/cpu`` (the installed package's copy first, as for the CUDA sources), or None."""
    here = Path(__file__).resolve().parent.parent
    for d in (here / "_kernels" / "cpu", here.parent / "kernels" / "cpu"):
        if all((d / s).is_file() for s in SOURCES):
            return d
    return None


def _compiler() -> tuple[Optional[list[str]], str]:
    """The C++ compiler command: ``$CXX`` (split like a shell word list) if set, else the first of ``c++``, ``g++``,
    ``clang++`` on PATH; ``(None, why)`` when there is none."""
    env = os.environ.get("CXX", "").strip()
    if env:
        try:
            cmd = shlex.split(env)
        except ValueError as e:
            return None, f"$CXX={env!r} is not a command line ({e}): {_ADVICE} (set CXX to a C++ compiler)"
        if shutil.which(cmd[0]):
            return cmd, ""
        return None, f"no C++ compiler: $CXX={env!r} names no program on PATH: {_ADVICE} (set CXX to an installed one)"
    for name in _COMPILERS:
        path = shutil.which(name)
        if path:
            return [path], ""
    return None, (f"no C++ compiler found ($CXX, c++, g++ or clang++ on PATH): {_ADVICE} (install one, e.g. g++, "
                  "for the compiled CPU kernels)")


def _uid() -> str:
    return str(os.getuid()) if hasattr(os, "getuid") else "user"


def _cache_dirs() -> list[Path]:
    """Where the built library may be kept, in order of preference: ``$XPNN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/xpnn`` (an absolute path only, as the XDG specification says), else ``~/.cache/xpnn`` (none
    where there is no home folder: a container's user without one); then this user's folder in the temporary folder
    (where the first cannot be written or loaded from, e.g. a read-only or ``noexec`` home)."""
    dirs = []
    env = os.environ.get("XPNN_CACHE_DIR", "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    home = os.path.expanduser("~")  # ("~" itself where no home folder is known)
    if env:
        dirs.append(Path(env).expanduser())
    elif os.path.isabs(xdg):
        dirs.append(Path(xdg) / "xpnn")
    elif home != "~":
        dirs.append(Path(home) / ".cache" / "xpnn")
    dirs.append(Path(tempfile.gettempdir()) / f"xpnn-{_uid()}")
    return dirs


def _key(cxx: list[str], src: Path) -> str:
    """Hash of the sources (with the headers they include), the flags, the machine and the compiler's version."""
    h = hashlib.sha256()
    for f in sorted(src.parent.glob("*.cuh")) + [src / s for s in SOURCES]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(" ".join(FLAGS).encode())
    try:
        version = _run([*cxx, "--version"], VERSION_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    # (the machine: a home folder shared by x86-64 and arm64 hosts keeps one library of each; the version line of
    # g++ does not name its target)
    h.update(" ".join(cxx).encode() + b"\0" + version.encode() + b"\0" + platform.machine().encode())
    return h.hexdigest()[:20]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` capturing its output, in its own process group: on a timeout (``subprocess.TimeoutExpired``) or
    an interrupt, the whole group is killed (a compiler driver's ``cc1plus`` and ``ld`` too, which killing the
    driver alone leaves running)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=hasattr(os, "killpg"))
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # a timeout, or Ctrl-C (which no longer reaches the compiler in its own session)
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:  # (all of it had exited)
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _checksum_file(target: Path) -> Path:
    return target.with_suffix(".sha256")


def _intact(target: Path) -> bool:
    """Whether ``target`` is whole: its SHA-256 is the one its build recorded next to it (``.sha256``, written
    after the library). A library cut short (power lost before the disk was written, a copy that stopped) would
    crash the process that loads it (SIGBUS) instead of raising, so it is rebuilt instead of loaded."""
    try:
        return hashlib.sha256(target.read_bytes()).hexdigest() == _checksum_file(target).read_text().strip()
    except OSError:
        return False


def _private_folder(folder: Path) -> None:
    """Create ``folder`` for this user only, and check that it is this user's and no one else may write to it
    (an OSError if not): a library in the shared temporary folder planted by another user must never be loaded."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if hasattr(os, "getuid") and (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
                                  or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        raise PermissionError(f"{folder} is not a folder of this user's that only this user may write to")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (POSIX): processes starting together (MPI ranks, test workers)
    wait for one build instead of each compiling. Where locks are not supported, or the holder takes past
    ``BUILD_TIMEOUT_S`` (a stopped process), the caller goes on without the lock (the build is atomic anyway)."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT_S + 10
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except OSError:  # (no locks on this file system)
                break
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` as a whole (a temporary file in its folder, then a rename), readable by all."""
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # (mkstemp's 0600: others sharing $XPNN_CACHE_DIR could not read it)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(cxx: list[str], src: Path, target: Path) -> Optional[str]:
    """Compile the sources into ``target`` (atomically: a temporary file in its folder, then a rename), then record
    its checksum (see ``_intact``); the compiler's message when it fails, else None. Raises
    ``subprocess.TimeoutExpired`` past ``BUILD_TIMEOUT_S``."""
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        proc = _run([*cxx, *FLAGS, "-o", tmp, *(str(src / s) for s in SOURCES)], BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()[-2000:] or f"exit status {proc.returncode}"
        os.chmod(tmp, 0o755)  # (some linkers keep mkstemp's 0600: others sharing $XPNN_CACHE_DIR could not load it)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.replace(tmp, target)
        _write_atomically(_checksum_file(target), digest.encode())
        return None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> tuple[Optional[ctypes.CDLL], str]:
    src = _source_dir()
    if src is None:
        return None, f"the CPU kernel sources (kernels/cpu) were not found: {_ADVICE} (reinstall xpnn)"
    cxx, why = _compiler()
    if cxx is None:
        return None, why
    key = _key(cxx, src)
    errors = []
    folders = _cache_dirs()
    for folder in folders:
        target = folder / f"cpu-{key}.so"
        try:
            if folder == folders[-1]:  # (the temporary folder's)
                _private_folder(folder)
            else:
                folder.mkdir(parents=True, exist_ok=True)
            if not _intact(target):
                with _folder_lock(folder):
                    if not _intact(target):  # (not built by the process that held the lock)
                        message = _build(cxx, src, target)
                        if message is not None:
                            return None, (f"building the CPU kernels with {' '.join(cxx)} failed: {_ADVICE} (set CXX "
                                          f"to a working C++ compiler): {message}")
            lib = ctypes.CDLL(str(target))
        except subprocess.TimeoutExpired:
            return None, (f"building the CPU kernels with {' '.join(cxx)} took over {BUILD_TIMEOUT_S:g} s and was "
                          f"stopped: {_ADVICE} (set CXX to a working C++ compiler)")
        except OSError as e:  # a folder we cannot write, or load from (noexec), or a library that does not load
            errors.append(f"{folder}: {e}")
            continue
        _declare(lib)
        return lib, f"compiled with {' '.join(cxx)} ({target})"
    return None, (f"the CPU kernels could not be built or loaded in a cache folder: {_ADVICE} (set XPNN_CACHE_DIR to a "
                  "writable folder, or CXX to a C++ compiler for this machine): " + "; ".join(errors))


def _signatures() -> dict[str, list[Any]]:
    """Entry point -> ctypes argument types, for every kernel and dtype (each returns nothing but
    ``xpnn_cpu_winograd_output_*`` and ``xpnn_cpu_leaky_relu_*``, an int)."""
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
        # xpnn_cpu_max_pool2d_<dtype>(x, y, argmax, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow)
        sig[f"xpnn_cpu_max_pool2d_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [ctypes.c_int] * 12
        # xpnn_cpu_max_pool2d_backward_<dtype>(argmax, dy, dx, planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow,
        #                                      tiles)
        sig[f"xpnn_cpu_max_pool2d_backward_{dtype.name}"] = ([ctypes.c_void_p] * 3 + [ctypes.c_longlong]
                                                             + [ctypes.c_int] * 13)
        # xpnn_cpu_relu_backward_<dtype>(x, dy, dx, n)
        sig[f"xpnn_cpu_relu_backward_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong]
        # xpnn_cpu_winograd_input_<dtype>(x, v, lo, hi, c, h, w, pt, pl, th, tw, v's entry stride);
        # xpnn_cpu_winograd_output_<dtype>(m, y, bias or NULL, lo, hi, co, oh, ow, th, tw, m's entry stride) -> int
        # (1: some output not finite); xpnn_cpu_winograd_dy_<dtype>(dy, e, lo, hi, co, oh, ow, th, tw, e's stride)
        sig[f"xpnn_cpu_winograd_input_{dtype.name}"] = [ctypes.c_void_p] * 2 + [ctypes.c_longlong] * 10
        sig[f"xpnn_cpu_winograd_output_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] * 8
        sig[f"xpnn_cpu_winograd_dy_{dtype.name}"] = [ctypes.c_void_p] * 2 + [ctypes.c_longlong] * 8
        # xpnn_cpu_relu_forward_<dtype>(x, y, n); xpnn_cpu_leaky_relu_forward_<dtype>(x, slope, y, n) -> int and
        # xpnn_cpu_leaky_relu_backward_<dtype>(x, dy, slope, dx, n) -> int (the floating-point exceptions raised)
        sig[f"xpnn_cpu_relu_forward_{dtype.name}"] = [ctypes.c_void_p] * 2 + [ctypes.c_longlong]
        sig[f"xpnn_cpu_leaky_relu_forward_{dtype.name}"] = [ctypes.c_void_p, c, ctypes.c_void_p, ctypes.c_longlong]
        sig[f"xpnn_cpu_leaky_relu_backward_{dtype.name}"] = [ctypes.c_void_p] * 2 + [c, ctypes.c_void_p,
                                                                                      ctypes.c_longlong]
        # xpnn_cpu_sgd_<dtype>(param, grad, buf, n, lr, momentum, 1 - dampening, weight_decay, use_momentum,
        #                      nesterov, first_step, maximize)
        sig[f"xpnn_cpu_sgd_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [c] * 4 + [ctypes.c_int] * 4
        # xpnn_cpu_adagrad_<dtype>(param, grad, state_sum, n, clr, weight_decay, eps, maximize)
        sig[f"xpnn_cpu_adagrad_{dtype.name}"] = [ctypes.c_void_p] * 3 + [ctypes.c_longlong] + [c] * 3 + [ctypes.c_int]
        # xpnn_cpu_rmsprop_<dtype>(param, grad, square_avg, grad_avg, buf, n, lr, alpha, 1 - alpha, eps,
        #                          weight_decay, momentum, centered, use_momentum, maximize)
        sig[f"xpnn_cpu_rmsprop_{dtype.name}"] = ([ctypes.c_void_p] * 5 + [ctypes.c_longlong] + [c] * 6
                                                 + [ctypes.c_int] * 3)
    return sig


def _declare(lib: ctypes.CDLL) -> None:
    """ctypes signatures of the entry points."""
    for name, argtypes in _signatures().items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int if name.startswith(("xpnn_cpu_winograd_output_", "xpnn_cpu_leaky_relu_")) else None


def library() -> Optional[ctypes.CDLL]:
    """The compiled CPU kernels (built and loaded on the first call), or None where they cannot be built (see
    ``status``). Never raises."""
    loaded = _state.get("loaded")
    if loaded is None:
        with _lock:
            loaded = _state.get("loaded")
            if loaded is None:
                try:
                    loaded = _load()
                except Exception as e:  # noqa: BLE001 (never fail a training step over an optional speed-up)
                    loaded = None, f"the CPU kernels could not be loaded: {_ADVICE}: {e!r}"
                _state["loaded"] = loaded
    return loaded[0]


def status() -> str:
    """Whether the compiled CPU kernels are in use, and why not. Builds them if that was not tried yet, unless the
    kernels are off (then nothing is compiled: ``XPNN_DISABLE_KERNELS=1`` is the way to skip a build that fails or
    hangs)."""
    if not _dispatch.kernels_enabled():
        loaded = _state.get("loaded")
        return ("off (XPNN_DISABLE_KERNELS=1 or xpnn.set_kernels_enabled(False)): the NumPy paths run"
                + ("" if loaded is None else f"; when on: {loaded[1]}"))
    library()
    return _state["loaded"][1]


def _pointers(arrays: tuple[Any, ...]) -> Optional[list[Optional[int]]]:
    """The arrays' data addresses (None for None entries) where they are C-contiguous, aligned, writeable NumPy
    float32/float64 arrays of one shape and dtype (native byte order), at least ``MIN_ELEMENTS`` long, each its own
    memory; else None. (A read-only array makes NumPy raise where the C loop would write it; a misaligned one is
    undefined behaviour in C.) Each address is read once (``ndarray.ctypes.data``: ~1 us each)."""
    first = arrays[0]
    if first.dtype not in _C_TYPES or first.size < MIN_ELEMENTS:
        return None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not np.ndarray or a.shape != first.shape or a.dtype != first.dtype:
            return None
        flags = a.flags
        if not (flags.c_contiguous and flags.aligned and flags.writeable):
            return None
    pointers = [None if a is None else a.ctypes.data for a in arrays]
    spans = sorted(p for p in pointers if p is not None)
    nbytes = first.nbytes
    return pointers if all(lo + nbytes <= nxt for lo, nxt in zip(spans, spans[1:])) else None  # no two overlap


def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                max_exp_avg_sq: Optional[np.ndarray], scalars: tuple[float, float, float], beta1: float,
                beta2: float, eps: float, weight_decay: float, decoupled_weight_decay: bool, amsgrad: bool,
                maximize: bool) -> bool:
    """``updates.adam_update`` on NumPy arrays in one compiled pass; ``scalars`` = ``(step_size, bc2_sqrt, decay)``
    as ``updates._adam_scalars`` gives them. False (nothing done) where it does not apply: kernels off or not built,
    arrays that ``_pointers`` refuses, or a ``step_size``, ``decay`` or ``weight_decay`` that is not a Python float or
    int (a NumPy float64 lr, e.g. from ``np.cos`` in a schedule, makes NumPy compute those products of float32
    arrays in float64, where the compiled loop rounds the scalar to float32 first), or an L2 ``weight_decay`` that
    is not 0 but rounds to 0 in the arrays' dtype. The floating-point exceptions the pass raised (an inf gradient:
    invalid) are reported as the NumPy passes' are, by ``np.errstate`` (``_fpe``; a FloatingPointError after the
    whole update), where the C library's flags are known; with ``amsgrad`` all but invalid, which the vectorized max
    of a NaN raises where ``np.maximum`` does not."""
    if not _dispatch.kernels_enabled():
        return False
    step_size, bc2_sqrt, decay = scalars
    if type(step_size) not in _PLAIN or type(decay) not in _PLAIN or type(weight_decay) not in _PLAIN:
        return False
    if weight_decay != 0 and not decoupled_weight_decay and param.dtype.type(weight_decay) == 0:
        return False  # (the NumPy passes add p * 0: NaN where p is infinite; the loop, seeing 0, adds nothing)
    pointers = _pointers((param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else None))
    if pointers is None:
        return False
    lib = library()
    if lib is None:
        return False
    fn = getattr(lib, f"xpnn_cpu_adam_{param.dtype.name}")
    fenv = _fpe.FENV
    if fenv is not None:
        fenv[0](fenv[3])  # (clear the flags NumPy reports)
    # the scalars are rounded to the arrays' dtype by ctypes, as NumPy rounds a Python float operand
    fn(*pointers, param.size, beta1, 1 - beta1, beta2, 1 - beta2, eps, weight_decay, decay, step_size, bc2_sqrt,
       int(decoupled_weight_decay), int(amsgrad), int(maximize))
    if fenv is not None:
        raised = fenv[1](fenv[3] - fenv[2][3] if amsgrad else fenv[3])  # (fenv[2][3]: FE_INVALID)
        if raised:
            _fpe.report(raised, "adam_update")
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
    for a in arrays:  # (misaligned: undefined behaviour in C; the arrays written are conv_numpy's own buffers)
        if a is not None and (type(a) is not np.ndarray or a.dtype != dtype or not a.flags.aligned):
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
                                    or not a.flags.aligned for a in arrays):
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
            or not (dx.flags.writeable and dx.flags.aligned) or (g.w > 1 and dx.strides[3] != item) or any(s % item for s in dx.strides) \
            or columns.size != g.n * g.c * g.offsets * g.oh * g.ow or g.c % groups \
            or path == "rows" and g.sh != 1 or path == "batch_last" and (g.sh, g.sw) != (1, 1):
        return False
    sn, sc, sh = (s // item for s in dx.strides[:3])
    getattr(lib, f"xpnn_cpu_col2im_{path}_{columns.dtype.name}")(columns.ctypes.data, dx.ctypes.data,
                                                                 _geometry(g, groups), sn, sc, sh)
    return True


def _pool_geometry(g: Any) -> tuple[int, ...]:
    """(planes, h, w, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow) of a ``Conv2dGeometry`` for the pooling kernels."""
    return g.n * g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.oh, g.ow


def pooling_applies(g: Any, *arrays: Any) -> bool:
    """Whether the pooling kernels run for geometry g (a ``Conv2dGeometry``) on these arrays: kernels on and built,
    C-contiguous aligned NumPy arrays (misaligned, e.g. ``np.frombuffer`` at an odd offset: undefined behaviour in
    C), the float ones float32 or float64 (one dtype), the others int32 (argmax), padded planes below 2^31
    elements (the kernels' index math within a plane is 32-bit) and strides and dilations below 2^31 (passed as C
    ints, which ctypes would truncate silently)."""
    if not _dispatch.kernels_enabled() or g.hp * g.wp >= 1 << 31 or max(g.sh, g.sw, g.dh, g.dw) >= 1 << 31:
        return False
    if not all(type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned for a in arrays):
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


_RELU_BACKWARD = {dt: f"xpnn_cpu_relu_backward_{dt.name}" for dt in _C_TYPES}  # (dtype.name is a Python property)


def relu_backward(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> bool:
    """``activations.relu_backward`` in one compiled pass into ``dx``: +0.0 where ``x <= 0`` else dy (a NaN x passes
    dy; the rule of ``kernels/activation_backward.cuh``), bit for bit the NumPy path's (``zero_where``: three
    passes). False (nothing done) where it does not apply: kernels off or not built, fewer than ``MIN_ELEMENTS``
    elements, or arrays ``_elementwise`` refuses (dx may be x or dy itself, not overlap them in part)."""
    if not _elementwise((x, dy), dx):
        return False
    lib = library()
    if lib is None:
        return False
    getattr(lib, _RELU_BACKWARD[x.dtype])(x.ctypes.data, dy.ctypes.data, dx.ctypes.data, x.size)
    return True


# The Winograd F(2x2, 3x3) convolution's tile transforms (kernels/cpu/winograd.cpp; conv_numpy's Winograd path),
# one call per chunk of samples [lo, hi); T below is that chunk's tiles, (hi - lo) * th * tw.


def winograd_ready(dtype: Any) -> bool:
    """Whether the Winograd transforms run for NumPy arrays of ``dtype`` (kernels on and built, float32/float64)."""
    return _dispatch.kernels_enabled() and np.dtype(dtype) in _C_TYPES and library() is not None


def _winograd_fn(name: str, planes: tuple[tuple[Any, tuple[int, ...]], ...], tiles: Any,
                 tile_shape: tuple[int, int, int]) -> tuple[Any, int]:
    """(the entry point ``xpnn_cpu_winograd_<name>_<dtype>``, the element stride between ``tiles``' 16 entries) for
    these (array, expected shape) pairs and the tile array (``tile_shape``, each entry ``tiles[k]`` C-contiguous,
    the entries apart by a whole number of elements, not overlapping); ValueError unless every array is an aligned
    NumPy array of the first one's float32/float64 dtype (``planes`` C-contiguous), or where the library is not
    built (check ``winograd_ready``; the on/off switch is the caller's to check, once per convolution: another
    thread turning the kernels off midway must not fail it)."""
    dtype = planes[0][0].dtype
    if dtype not in _C_TYPES:
        raise ValueError(f"cpu_kernels.winograd_{name}: float32 or float64 arrays only, got {dtype}")
    for a, shape in planes + ((tiles, tile_shape),):
        entry = a is tiles and type(a) is np.ndarray and a.ndim == 3 and a[0].flags.c_contiguous \
            and a.strides[0] % a.itemsize == 0 and a.strides[0] >= a[0].nbytes
        if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape or not a.flags.aligned \
                or not (entry or a is not tiles and a.flags.c_contiguous):
            got = (type(a).__name__, getattr(a, "shape", None), getattr(a, "dtype", None))
            raise ValueError(f"cpu_kernels.winograd_{name}: needs aligned contiguous NumPy arrays of shape {shape} "
                             f"and dtype {dtype}, got {got}")
    lib = library()
    if lib is None:
        raise ValueError(f"cpu_kernels.winograd_{name}: the compiled kernels are not built ({status()})")
    return getattr(lib, f"xpnn_cpu_winograd_{name}_{dtype.name}"), tiles.strides[0] // tiles.itemsize


def winograd_input(x: np.ndarray, v: np.ndarray, lo: int, hi: int, pt: int, pl: int, th: int, tw: int) -> None:
    """``v[k, c, t] = (B^T d B)[k // 4, k % 4]`` for every 4x4 tile d of x (N, C, H, W) C-contiguous, samples
    ``lo:hi``, into v (16, C, T) (each ``v[k]`` C-contiguous; a padded stride between them is kept): tile (ty, tx)
    of sample n (t = ((n - lo) * th + ty) * tw + tx) reads rows ``2*ty - pt`` to ``2*ty - pt + 3`` and columns
    ``2*tx - pl`` to ``2*tx - pl + 3`` (0 outside x). ValueError for arrays or a range that do not fit
    (``_winograd_fn``)."""
    n, c, h, w = x.shape
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"cpu_kernels.winograd_input: samples {lo}:{hi} of {n}")
    fn, ks = _winograd_fn("input", ((x, x.shape),), v, (16, c, (hi - lo) * th * tw))
    fn(x.ctypes.data, v.ctypes.data, lo, hi, c, h, w, pt, pl, th, tw, ks)


def winograd_output(m: np.ndarray, y: np.ndarray, bias: Optional[np.ndarray], lo: int, hi: int, th: int,
                    tw: int) -> bool:
    """Samples ``lo:hi`` of y (N, C_out, oh, ow) C-contiguous from m (16, C_out, T) (as ``winograd_input``'s v):
    each 2x2 tile ``A^T m A`` (+ bias (C_out,)), its rows and columns past oh, ow dropped. Returns whether some
    output written is not finite. ValueError for arrays or a range that do not fit (``_winograd_fn``)."""
    n, co, oh, ow = y.shape
    if not 0 <= lo <= hi <= n or th != -(-oh // 2) or tw != -(-ow // 2) or not y.flags.writeable:
        raise ValueError(f"cpu_kernels.winograd_output: samples {lo}:{hi} of {n}, tiles {th}x{tw} for {oh}x{ow}")
    planes = ((y, y.shape),) + (() if bias is None else ((bias, (co,)),))
    fn, ks = _winograd_fn("output", planes, m, (16, co, (hi - lo) * th * tw))
    return bool(fn(m.ctypes.data, y.ctypes.data, None if bias is None else bias.ctypes.data, lo, hi, co, oh, ow,
                   th, tw, ks))


def winograd_dy(dy: np.ndarray, e: np.ndarray, lo: int, hi: int) -> None:
    """``e[k, o, t] = (A dY A^T)[k // 4, k % 4]`` for every 2x2 tile dY of dy (N, C_out, oh, ow) C-contiguous (0
    past its edge), samples ``lo:hi``, into e (16, C_out, T) (as ``winograd_input``'s v). ValueError for arrays or
    a range that do not fit (``_winograd_fn``)."""
    n, co, oh, ow = dy.shape
    th, tw = -(-oh // 2), -(-ow // 2)
    if not 0 <= lo <= hi <= n:
        raise ValueError(f"cpu_kernels.winograd_dy: samples {lo}:{hi} of {n}")
    fn, ks = _winograd_fn("dy", ((dy, dy.shape),), e, (16, co, (hi - lo) * th * tw))
    fn(dy.ctypes.data, e.ctypes.data, lo, hi, co, oh, ow, th, tw, ks)


# ReLU's forward and leaky ReLU's forward and backward (kernels/cpu/activations.cpp): one pass each, the NumPy
# path's bits.
_RELU_FORWARD = {dt: f"xpnn_cpu_relu_forward_{dt.name}" for dt in _C_TYPES}
_LEAKY_RELU = {(dt, way): f"xpnn_cpu_leaky_relu_{way}_{dt.name}" for dt in _C_TYPES for way in ("forward", "backward")}
#: the largest Python float rounded to a finite float32 / float64 (a larger slope: NumPy warns of an overflow in
#: the cast, which the compiled loop would not)
_FINITE = {np.dtype(np.float32): float(np.finfo(np.float32).max), np.dtype(np.float64): float(np.finfo(np.float64).max)}


def _elementwise(inputs: tuple[np.ndarray, ...], out: np.ndarray) -> bool:
    """Whether one elementwise pass over ``inputs`` into ``out`` applies: kernels on, at least ``MIN_ELEMENTS``
    elements, C-contiguous aligned float32/float64 NumPy arrays of one shape and dtype, ``out`` writeable and
    either the very array memory of an input (in place: each element is read before it is written) or apart from
    all of them (a partial overlap would read elements already written)."""
    first = inputs[0]
    dt, shape = first.dtype, first.shape
    if first.size < MIN_ELEMENTS or dt not in _C_TYPES or not _dispatch.kernels_enabled():
        return False
    for a in inputs + (out,):
        if type(a) is not np.ndarray or a.dtype != dt or a.shape != shape:
            return False
        flags = a.flags
        if not (flags.c_contiguous and flags.aligned):
            return False
    if not out.flags.writeable:
        return False
    po, nbytes = out.ctypes.data, out.nbytes
    for a in inputs:
        pa = a.ctypes.data
        if pa != po and po < pa + nbytes and pa < po + nbytes:
            return False
    return True


def relu_forward(x: np.ndarray, out: np.ndarray) -> bool:
    """``np.maximum(x, x.dtype.type(0), out=out)`` (``activations.Relu``) in one compiled pass, bit for bit: +0.0
    where ``x <= 0`` (-0.0 and -inf included), else x (a NaN unchanged: payload, sign, a signalling NaN not
    quieted). ``out`` may be ``x`` (in place). False (nothing done) where ``_elementwise`` does not apply (kernels
    off or not built, fewer than ``MIN_ELEMENTS`` elements, not C-contiguous aligned float32/float64 NumPy arrays of
    one shape and dtype, a read-only out, an out partly overlapping x)."""
    if not _elementwise((x,), out):
        return False
    lib = library()
    if lib is None:
        return False
    getattr(lib, _RELU_FORWARD[x.dtype])(x.ctypes.data, out.ctypes.data, x.size)
    return True


def _slope_applies(slope: Any, dt: np.dtype) -> bool:
    """Whether ctypes rounds ``slope`` to ``dt`` as NumPy rounds it as the operand of ``array * slope`` (NEP 50: a
    Python float or int takes the array's dtype): a Python float finite in ``dt`` (not NaN: of two NaN operands the
    compiled multiply may keep the other's payload), or a Python int exact in a double (ctypes goes through one, NumPy
    converts a larger int directly). Any other type (a NumPy float64 scalar makes NumPy compute float32 products in
    float64) does not apply."""
    t = type(slope)
    if t is float:
        return -_FINITE[dt] <= slope <= _FINITE[dt]
    return t is int and -(1 << 53) <= slope <= 1 << 53


def leaky_relu_forward(x: np.ndarray, negative_slope: float, out: np.ndarray) -> bool:
    """``np.where(x > 0, x, x * negative_slope)`` (``activations.LeakyRelu``) into ``out`` in one compiled pass, bit
    for bit (the product in x's dtype, NaN x passed as the product passes it). ``out`` may be ``x``. False where it
    does not apply (as ``relu_forward``, or a ``negative_slope`` that ``_slope_applies`` refuses) and where a product
    raised a floating-point exception (overflow, invalid, underflow; or the compare of a NaN): then the caller runs
    the NumPy path, which reports it as ``np.errstate`` says, on x as it was (``_leaky_out``)."""
    dt = x.dtype
    if not (_elementwise((x,), out) and _slope_applies(negative_slope, dt)):
        return False
    lib = library()
    if lib is None:
        return False
    dst = _leaky_out(out, x)
    raised = getattr(lib, _LEAKY_RELU[dt, "forward"])(x.ctypes.data, negative_slope, dst.ctypes.data, x.size)
    return _leaky_done(raised, dst, out)


def leaky_relu_backward(x: np.ndarray, dy: np.ndarray, negative_slope: float, dx: np.ndarray) -> bool:
    """``np.where(x > 0, dy, dy * negative_slope)`` (``activations.LeakyReluBackward``) into ``dx`` in one compiled
    pass, bit for bit (the rule of ``xpnn_leaky_relu_backward``, ``kernels/activation_backward.cuh``). ``dx`` may be
    ``x`` or ``dy``. False where it does not apply or a product raised a floating-point exception, as for
    ``leaky_relu_forward`` (x and dy then as they were)."""
    dt = x.dtype
    if not (_elementwise((x, dy), dx) and _slope_applies(negative_slope, dt)):
        return False
    lib = library()
    if lib is None:
        return False
    dst = _leaky_out(dx, x, dy)
    raised = getattr(lib, _LEAKY_RELU[dt, "backward"])(x.ctypes.data, dy.ctypes.data, negative_slope, dst.ctypes.data,
                                                       x.size)
    return _leaky_done(raised, dst, dx)


def _leaky_out(out: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
    """Where a leaky ReLU pass writes: ``out``, or a new array where ``out`` is an input (in place). The pass may
    end in a floating-point exception, after which the caller's NumPy path runs on the inputs: written in place,
    they would be partly overwritten by then (their products, not their values)."""
    if any(out.ctypes.data == a.ctypes.data for a in inputs):
        return np.empty_like(out)
    return out


def _leaky_done(raised: int, dst: np.ndarray, out: np.ndarray) -> bool:
    """False where the pass raised a floating-point exception (``out`` then as it was where it is an input);
    else True, with the result copied into ``out`` where the pass wrote a new array (``_leaky_out``)."""
    if raised:
        return False
    if dst is not out:
        np.copyto(out, dst)
    return True


# SGD, Adagrad and RMSprop (kernels/cpu/optimizers.cpp, the element rules of kernels/updates.cuh): one pass where
# updates.sgd_update / adagrad_update / rmsprop_update run 2-12 NumPy passes.


def _update_fn(name: str, pointers: Optional[list[Optional[int]]], dtype: Any, scalars: tuple[Any, ...],
               weight_decay: Any) -> Any:
    """The entry point ``xpnn_cpu_<name>_<dtype>``, or None where the update does not apply: kernels off or not
    built, arrays that ``_pointers`` refused (``pointers`` None), or a scalar (``scalars``, ``weight_decay``) that
    is not a Python float or int (a NumPy float64 lr from a schedule: NumPy computes its products with float32
    arrays in float64, where the loop rounds it to float32 first), or a nonzero ``weight_decay`` that rounds to 0
    in ``dtype`` (the NumPy passes add ``0 * p``, NaN where p is infinite; the loop, seeing 0, adds nothing)."""
    if pointers is None or not _dispatch.kernels_enabled():
        return None
    for v in scalars:
        if type(v) not in _PLAIN:
            return None
    if type(weight_decay) not in _PLAIN or weight_decay != 0 and dtype.type(weight_decay) == 0:
        return None
    lib = library()
    return None if lib is None else getattr(lib, f"xpnn_cpu_{name}_{dtype.name}")


def _run_reporting(name: str, fn: Any, *args: Any) -> None:
    """``fn(*args)`` with the floating-point exceptions it raised reported as the NumPy passes' are, by
    ``np.errstate`` (``_fpe``, naming ``name``; a FloatingPointError after the whole update), where the C library's
    flags are known."""
    fenv = _fpe.FENV
    if fenv is not None:
        fenv[0](fenv[3])  # (clear the flags NumPy reports)
    fn(*args)
    if fenv is not None:
        raised = fenv[1](fenv[3])
        if raised:
            _fpe.report(raised, name)


def sgd_update(param: np.ndarray, grad: np.ndarray, momentum_buffer: Optional[np.ndarray], lr: Any, momentum: Any,
               dampening: Any, nesterov: bool, weight_decay: Any, first_step: bool, maximize: bool) -> bool:
    """``updates.sgd_update`` on NumPy arrays in one compiled pass (``momentum_buffer`` used only where
    ``momentum != 0``; on ``first_step`` it receives the gradient as is), the same values as the NumPy passes.
    False (nothing done) where it does not apply (see ``_update_fn``). Floating-point exceptions are reported as
    the NumPy passes' are (``_run_reporting``)."""
    use_momentum = momentum != 0
    one_minus_dampening = 1 - dampening  # (not a Python float where dampening is not: then refused)
    pointers = _pointers((param, grad, momentum_buffer if use_momentum else None))
    fn = _update_fn("sgd", pointers, param.dtype, (lr, momentum, one_minus_dampening), weight_decay)
    if fn is None:
        return False
    # the scalars are rounded to the arrays' dtype by ctypes, as NumPy rounds a Python float operand
    _run_reporting("sgd_update", fn, *pointers, param.size, lr, momentum, one_minus_dampening, weight_decay,
                   int(use_momentum), int(bool(nesterov)), int(bool(first_step)), int(bool(maximize)))
    return True


def adagrad_update(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, clr: Any, weight_decay: Any,
                   eps: Any, maximize: bool) -> bool:
    """``updates.adagrad_update`` on NumPy arrays in one compiled pass; ``clr`` as ``updates._adagrad_clr`` gives it
    (a Python float for a Python lr, step and lr_decay). False (nothing done) where it does not apply (see
    ``_update_fn``)."""
    pointers = _pointers((param, grad, state_sum))
    fn = _update_fn("adagrad", pointers, param.dtype, (clr, eps), weight_decay)
    if fn is None:
        return False
    _run_reporting("adagrad_update", fn, *pointers, param.size, clr, weight_decay, eps, int(bool(maximize)))
    return True


def rmsprop_update(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, grad_avg: Optional[np.ndarray],
                   momentum_buffer: Optional[np.ndarray], lr: Any, alpha: Any, eps: Any, weight_decay: Any,
                   momentum: Any, centered: bool, maximize: bool) -> bool:
    """``updates.rmsprop_update`` on NumPy arrays in one compiled pass (``grad_avg`` used only where ``centered``,
    ``momentum_buffer`` only where ``momentum > 0``), the same values as the NumPy passes. False (nothing done)
    where it does not apply (see ``_update_fn``)."""
    centered, use_momentum = bool(centered), momentum > 0
    one_minus_alpha = 1 - alpha
    pointers = _pointers((param, grad, square_avg, grad_avg if centered else None,
                          momentum_buffer if use_momentum else None))
    fn = _update_fn("rmsprop", pointers, param.dtype, (lr, alpha, one_minus_alpha, eps, momentum), weight_decay)
    if fn is None:
        return False
    _run_reporting("rmsprop_update", fn, *pointers, param.size, lr, alpha, one_minus_alpha, eps, weight_decay,
                   momentum, int(centered), int(use_momentum), int(bool(maximize)))
    return True
