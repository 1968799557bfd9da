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


# --- checks deferred on the device -------------------------------------------------------------------------------
# On NumPy a check reads its result at once (a read is free there). On other namespaces a read waits for all queued
# device work (and cannot be captured in a CUDA graph), so inside a training step a check instead ORs its outcome
# into a 0-d boolean flag kept on the device; ``check_device_errors`` reads the flags where a read happens anyway
# (fit's progress bar and end of epoch, evaluate) and raises the first recorded error. The op that recorded a flag
# also makes its result NaN, so an error never turns silently into a number.

_pending: dict[tuple, list] = {}  # key -> [flag (0-d bool device array, updated in place), make_error]


def defers_checks(xp: Any) -> bool:
    """Whether checks on arrays of namespace ``xp`` are deferred (not NumPy, debug mode off)."""
    import array_api_compat

    return not _debug[0] and not array_api_compat.is_numpy_namespace(xp)


def defer_check(xp: Any, flag: Any, key: tuple, make_error: Any) -> None:
    """Record ``flag`` (0-d boolean array of namespace ``xp``, True = error) under ``key`` without reading it.

    Each key owns one flag array, kept for the life of the process and updated in place (``|=``): a step captured
    in a CUDA graph then ORs into that same array at every replay. ``make_error()`` builds the exception that
    ``check_device_errors`` raises (called only then, so its message costs nothing per step)."""
    import array_api_compat

    full = key + (id(xp), str(array_api_compat.device(flag)))
    entry = _pending.get(full)
    if entry is None:
        _pending[full] = [flag, make_error]
    else:
        entry[0][...] = xp.logical_or(entry[0], flag)
        entry[1] = make_error


def check_device_errors() -> None:
    """Read every flag recorded by ``defer_check`` (one host read each), reset them all (in place) and raise the
    first recorded error. Called by ``fit`` and ``evaluate`` when they read their metrics; call it yourself after
    a loop of hand-written steps."""
    if not _pending:
        return
    no_host_read_while_capturing("xpnn.debug.check_device_errors (reading the deferred label checks)")
    error = None
    for flag, make_error in _pending.values():
        if bool(flag):
            flag[...] = False
            if error is None:
                error = make_error()
    if error is not None:
        raise error


def pending_device_checks() -> int:
    """How many deferred checks have raised their flag and wait for ``check_device_errors`` (a host read each;
    tests and diagnostics)."""
    return sum(1 for flag, _ in _pending.values() if bool(flag))


# --- CUDA graph capture --------------------------------------------------------------------------------------------
_capturing: list[Any] = [None]  # what is being captured (a description), or None


@contextlib.contextmanager
def capturing(what: str) -> Iterator[None]:
    """Mark a CUDA graph capture in progress (``xpnn.cuda.make_graphed_step``): xpnn's own host reads refuse."""
    old = _capturing[0]
    _capturing[0] = what
    try:
        yield
    finally:
        _capturing[0] = old


def no_host_read_while_capturing(op: str) -> None:
    """Raise ``CaptureError`` naming ``op`` when called during a capture (a host read there cannot be captured)."""
    if _capturing[0] is not None:
        from .errors import CaptureError

        raise CaptureError(f"{op} reads a device value on the host, which cannot be captured in a CUDA graph "
                           f"({_capturing[0]}); move the read out of the captured step")
