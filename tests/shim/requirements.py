"""What the CPU shim needs on the machine, checked once per test module: a C++ compiler (all shim tests) and the
compiler's AddressSanitizer runtime (the sanitizer tests). Missing pieces skip the module with the reason and the
package to install -- except under ``CI=true``, where the project's own setup must provide them, so they fail."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from .loader import CXX

IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@functools.lru_cache(maxsize=None)
def cxx_problem() -> Optional[str]:
    """Why the shim cannot be built here, or None."""
    if shutil.which(CXX) is None:
        return f"the CPU shim needs a C++ compiler ({CXX!r} not found; Debian: apt-get install g++)"
    return None


@functools.lru_cache(maxsize=None)
def asan_problem() -> Optional[str]:
    """Why a sanitized shim cannot be built and run here, or None (compiles and links a one-line program)."""
    problem = cxx_problem()
    if problem is not None:
        return problem
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.cpp"
        src.write_text("int main() { return 0; }\n")
        proc = subprocess.run([CXX, "-fsanitize=address,undefined", str(src), "-o", str(Path(d) / "probe")],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        return (f"{CXX} cannot build with -fsanitize=address,undefined (Debian: apt-get install libasan8 libubsan1):"
                f" {proc.stderr.strip()[-300:]}")
    return None


def require_cxx() -> None:
    """Skip the calling test module (fail under CI=true) when the shim cannot be built."""
    problem = cxx_problem()
    if problem is not None:
        _missing(problem)


def require_asan() -> None:
    """Skip the calling test module (fail under CI=true) when the sanitized shim cannot be built."""
    problem = asan_problem()
    if problem is not None:
        _missing(problem)
