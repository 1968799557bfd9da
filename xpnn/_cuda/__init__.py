"""CUDA kernels for CuPy arrays: registry, sources, loaders and launch code (see ``kernels/`` for the sources).

``provider(op, xp, dtype)`` is what ``xpnn._dispatch.lookup`` calls for CuPy namespaces. Importing this package
never touches the GPU, nor imports CuPy: kernels are compiled on first use, per device and dtype.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

__all__ = ["provider", "make_provider", "info"]


def provider(op: str, xp: Any, dtype: Any) -> Optional[Callable[..., Any]]:
    """The fused kernel for ``op`` on CuPy arrays of ``dtype`` (same signature as the functional op), or None."""
    from .providers import cupy_provider

    return cupy_provider()(op, xp, dtype)


def make_provider(loader: Any) -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """A provider over another kernel loader (the CPU shim in tests)."""
    from .providers import make_provider as _make

    return _make(loader)


def info() -> dict[str, Any]:
    """CuPy/CUDA versions, device and kernel status for ``xpnn info`` (never raises)."""
    from .info import cuda_info

    return cuda_info()
