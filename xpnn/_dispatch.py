"""Kernel overrides: the one place where a fused kernel may replace the array-API reference code.

A function in ``xpnn.functional`` asks ``lookup(row, xp, dtype)`` with the kernel's row of ``xpnn._cuda.registry``
(``registry.ADAM_UPDATE``; an ``xpnn.autograd.Op`` names its row in ``kernel``); it gets a callable with the same
signature as the reference (arguments already validated) or ``None``, and then runs the generic code. A provider
is asked by the row's name: ``provider(name, xp, dtype)``. By default kernels are
found only for CuPy namespaces, from ``xpnn._cuda`` (imported lazily: importing xpnn never touches the GPU).
Tests install another provider (the CPU shim) with ``use_provider`` to run the same launch code without a GPU.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Optional

import array_api_compat

Provider = Callable[[str, Any, Any], Optional[Callable[..., Any]]]

# (any case: XPNN_DISABLE_KERNELS=True, as a shell or a YAML file writes it, turns them off too)
_enabled: list[bool] = [os.environ.get("XPNN_DISABLE_KERNELS", "").strip().lower() not in ("1", "true", "yes", "on")]
_provider: list[Optional[Provider]] = [None]


def kernels_enabled() -> bool:
    """Whether fused kernels are used where they exist (``XPNN_DISABLE_KERNELS=1`` turns them off)."""
    return _enabled[0]


def set_kernels_enabled(flag: bool) -> None:
    """Turn fused kernels on or off for the whole process (off: the generic array-API path runs everywhere)."""
    _enabled[0] = bool(flag)


@contextlib.contextmanager
def use_kernels(flag: bool) -> Iterator[None]:
    """Context manager: kernels on/off inside the ``with`` block."""
    old = _enabled[0]
    _enabled[0] = bool(flag)
    try:
        yield
    finally:
        _enabled[0] = old


@contextlib.contextmanager
def use_provider(provider: Optional[Provider]) -> Iterator[None]:
    """Route kernel lookups to ``provider(op, xp, dtype)`` inside the block (tests: the CPU shim)."""
    old = _provider[0]
    _provider[0] = provider
    try:
        yield
    finally:
        _provider[0] = old


def lookup(op: Any, xp: Any, dtype: Any) -> Optional[Callable[..., Any]]:
    """The fused kernel for ``op`` (a registry row, or a kernel name) on arrays of namespace ``xp`` and ``dtype``,
    or ``None`` for the generic path."""
    if not _enabled[0]:
        return None
    provider = _provider[0]
    if provider is None:
        if not array_api_compat.is_cupy_namespace(xp):
            return None
        try:
            from ._cuda import provider  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return provider(op if type(op) is str else op.name, xp, dtype)
