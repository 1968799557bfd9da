"""Kernel providers for ``xpnn._dispatch``: ``(op, xp, dtype) -> callable | None`` built over a kernel loader."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from ..backend import dtype_name
from . import registry
from .launch import OPS  # every registry row's launch function (xpnn._cuda.launch and xpnn._cuda.capturable)
from .loader import CupyLoader, KernelLoader


def make_provider(loader: KernelLoader) -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """A provider running the launch code of ``xpnn._cuda.launch`` on ``loader``'s kernels.

    It answers ``None`` for ops without a kernel and for dtypes a kernel's registry row does not list.
    """
    cache: dict[tuple[str, int, str], Callable[..., Any]] = {}

    def provider(op: str, xp: Any, dtype: Any) -> Optional[Callable[..., Any]]:
        try:
            name = dtype_name(dtype)
        except Exception:
            return None
        if op not in OPS or not registry.supports(op, name):
            return None
        key = (op, id(xp), name)
        fn = cache.get(key)
        if fn is None:
            fn = cache[key] = functools.partial(OPS[op], loader, xp)
        return fn

    return provider


@functools.lru_cache(maxsize=1)
def cupy_provider() -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """The provider for CuPy arrays (created on first lookup; kernels compile on their first call)."""
    return make_provider(CupyLoader())
