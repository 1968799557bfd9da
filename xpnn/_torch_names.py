"""PyTorch's argument names accepted next to xpnn's: ``dim=`` for ``axis=``.

Each function that takes ``axis=`` where PyTorch takes ``dim=`` has a keyword-only ``dim=None`` and calls
``axis_from_dim`` only when ``dim`` is given (one ``None`` check on the common path).
"""
from __future__ import annotations

from typing import Any

__all__ = ["axis_from_dim", "dim_index"]


def axis_from_dim(axis: Any, dim: Any, where: str) -> Any:
    """``dim`` (PyTorch's name) as the axis of ``where``; ``TypeError`` if ``axis`` was given as well (``axis`` is
    ``None`` when the caller did not pass it)."""
    if axis is not None:
        raise TypeError(f"{where}: got both axis={axis!r} and dim={dim!r}; dim is PyTorch's name for axis, pass one")
    return dim


def dim_index(dim: Any, n: int, where: str) -> int:
    """``dim`` in ``[-n, n)`` as an index in ``[0, n)``; ``IndexError`` otherwise (PyTorch's "Dimension out of
    range")."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{where}: dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise IndexError(f"{where}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n
