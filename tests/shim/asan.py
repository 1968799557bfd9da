"""The CPU shim under AddressSanitizer and UndefinedBehaviorSanitizer: build flags, and a Python subprocess with the
ASan runtime preloaded that runs kernel cases (``asan_runner.py``) from a sanitized shim library.

Python itself is not instrumented, so ASan's runtime must be loaded first (``LD_PRELOAD``); leak detection is off
because CPython leaks by design. Any finding aborts the subprocess with the sanitizer's report on stderr.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from .loader import CXX, HERE, Build, build

# -O1: ASan's recommended level (and a third faster to build than -O2); -g1: file:line in reports.
# -fno-sanitize-recover=all: the first UBSan finding aborts, whatever UBSAN_OPTIONS says.
SANITIZE_FLAGS = ("-O1", "-g1", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=all")
RUNNER = HERE / "asan_runner.py"
REPORT_MARKERS = ("ERROR: AddressSanitizer", "runtime error:")  # ASan's and UBSan's report headers


def build_sanitized(kernels: Optional[Path] = None) -> Build:
    """The shim built with ``SANITIZE_FLAGS`` (cached by sources and flags like the normal build)."""
    return build(SANITIZE_FLAGS, kernels=kernels)


def runtime_library(name: str = "libasan.so") -> Path:
    """Path of a sanitizer runtime shipped with the compiler (``g++ -print-file-name``)."""
    out = subprocess.run([CXX, f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout
    path = Path(out.strip())
    if not path.is_absolute() or not path.exists():
        raise RuntimeError(f"{CXX} has no {name} (got {out.strip()!r}): install the compiler's sanitizer runtime "
                           f"(Debian: libasan8 / libubsan1)")
    return path.resolve()


def sanitizer_env() -> dict[str, str]:
    """Environment of the sanitized subprocess: ASan's runtime preloaded, leak checks off, halt on any finding."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(runtime_library())
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=23"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    tests_dir, repo = str(HERE.parent), str(HERE.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo, tests_dir] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_cases(library: Path, cases: Sequence[str] = (), *, numpy_buffers: bool = False,
              timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``asan_runner.py`` on ``library`` in a sanitized Python subprocess (all cases when ``cases`` is empty).
    ``numpy_buffers``: hand the kernels the NumPy arrays themselves instead of exactly-sized copies."""
    cmd = [sys.executable, str(RUNNER), "--library", str(library), *(["--numpy-buffers"] if numpy_buffers else []),
           *cases]
    return subprocess.run(cmd, capture_output=True, text=True, env=sanitizer_env(), timeout=timeout)


def sanitizer_report(proc: subprocess.CompletedProcess) -> Optional[str]:
    """The sanitizer report in the subprocess's stderr, from its first line on, or None."""
    starts = [i for i in (proc.stderr.find(m) for m in REPORT_MARKERS) if i >= 0]
    if not starts:
        return None
    begin = proc.stderr.rfind("\n", 0, min(starts)) + 1
    return proc.stderr[begin:]
