"""Opt-in checks that cost a device sync: NaN/inf detection at layer boundaries."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .errors import NonFiniteError

_debug: list[bool] = [False]


def set_debug(flag: bool) -> None:
    """When on, layers and losses raise ``NonFiniteError`` on NaN/inf inputs and gradients."""
    _debug[0] = bool(flag)


def get_debug() -> bool:
    return _debug[0]


@contextlib.contextmanager
def debug_mode(flag: bool = True) -> Iterator[None]:
    old = _debug[0]
    _debug[0] = bool(flag)
    try:
        yield
    finally:
        _debug[0] = old


def check_finite(xp: Any, x: Any, where: str, what: str = "input") -> None:
    """Raise ``NonFiniteError`` if debug mode is on and ``x`` holds NaN or inf (floating arrays only)."""
    if not _debug[0] or x is None or not xp.isdtype(x.dtype, "real floating"):
        return
    if not bool(xp.all(xp.isfinite(x))):
        n_nan = int(xp.sum(xp.astype(xp.isnan(x), xp.int64)))
        n_inf = int(xp.sum(xp.astype(xp.isinf(x), xp.int64)))
        raise NonFiniteError(f"{where}: {what} contains {n_nan} NaN and {n_inf} inf values (shape {tuple(x.shape)})")
