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

_pending: dict[tuple, list] = {}  # key -> [flag (0-d bool device array), namespace, make_error]


def defers_checks(xp: Any) -> bool:
    """Whether checks on arrays of namespace ``xp`` are deferred (not NumPy, debug mode off)."""
    import array_api_compat

    return not _debug[0] and not array_api_compat.is_numpy_namespace(xp)


def defer_check(xp: Any, flag: Any, key: tuple, make_error: Any) -> None:
    """Record ``flag`` (0-d boolean array of namespace ``xp``, True = error) under ``key`` without reading it;
    flags of one key are OR-ed on the device. ``make_error()`` builds the exception ``check_device_errors`` raises
    (called only then, so its message costs nothing per step)."""
    import array_api_compat

    full = key + (id(xp), str(array_api_compat.device(flag)))
    entry = _pending.get(full)
    if entry is None:
        _pending[full] = [flag, xp, make_error]
    else:
        entry[0] = xp.logical_or(entry[0], flag)


def check_device_errors() -> None:
    """Read every flag recorded by ``defer_check`` (one host read each) and raise the first recorded error;
    clears them all. Cheap when nothing is pending. Called by ``fit`` when it reads its metrics, by ``evaluate``
    and by ``optimizer state_dict``-style reads; call it yourself after a loop of hand-written steps."""
    if not _pending:
        return
    entries = list(_pending.values())
    _pending.clear()
    for flag, _xp, make_error in entries:
        if bool(flag):
            raise make_error()


def pending_device_checks() -> int:
    """How many flags are waiting for ``check_device_errors`` (tests, diagnostics)."""
    return len(_pending)
