"""Whether ops record the graph: ``no_grad()``, ``enable_grad()``, ``set_grad_enabled(mode)`` (PyTorch's names).

The flag is per thread (a ``threading.local``), on by default.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled"]

class _State(threading.local):
    enabled = True  # (a class default: each thread starts with recording on, read without a getattr default)


_state = _State()
F = TypeVar("F", bound=Callable[..., Any])


def is_grad_enabled() -> bool:
    """Whether ops on Tensors record the graph (False inside ``no_grad()``)."""
    return _state.enabled


class set_grad_enabled:
    """Turn recording on or off: as a call (``set_grad_enabled(False)``), a context manager or a decorator."""

    def __init__(self, mode: bool) -> None:
        self.prev = is_grad_enabled()
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __enter__(self) -> None:
        _state.enabled = self.mode

    def __exit__(self, *exc: Any) -> None:
        _state.enabled = self.prev

    def __call__(self, fn: F) -> F:
        """As a decorator (``@set_grad_enabled(False)``): the mode applies inside each call of ``fn`` only, so
        undo the switch that building this object made (as PyTorch does)."""
        import functools

        _state.enabled = self.prev
        mode = self.mode

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapped  # type: ignore[return-value]


class _Mode:
    mode = True

    def __new__(cls, fn: Any = None) -> Any:
        # a bare decorator, ``@xpnn.no_grad`` without parentheses (PyTorch accepts it too): the decorated function
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"{cls.__name__}() takes no arguments (or a function, as a bare decorator), "
                                f"got {type(fn).__name__}")
            return object.__new__(cls)(fn)
        return object.__new__(cls)

    def __init__(self, fn: Any = None) -> None:
        pass

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        _state.enabled = self.mode

    def __exit__(self, *exc: Any) -> None:
        _state.enabled = self.prev

    def __call__(self, fn: F) -> F:
        import functools

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with type(self)():
                return fn(*args, **kwargs)

        return wrapped  # type: ignore[return-value]


class no_grad(_Mode):
    """Context manager / decorator: ops inside record nothing and return Tensors without history, and modules
    called on arrays keep nothing for a later ``backward`` (``evaluate`` and ``predict`` run under it)."""

    mode = False


class enable_grad(_Mode):
    """Context manager / decorator: record again inside a ``no_grad`` block."""

    mode = True
