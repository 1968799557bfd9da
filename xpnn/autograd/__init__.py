"""The op core of reverse-mode automatic differentiation: ``Op`` (one declaration per op: forward, backward, a
per-call context) with its overrides, the graph's ``Node`` and the engine that walks it, and the grad modes
(``no_grad``...).

``xpnn.functional`` declares every op with ``Op``; on plain arrays the ops run without any graph, on Tensors they
record one. See ``xpnn.autograd.op`` for how to declare an op and register a fused kernel or fast path for it.
``xpnn.Tensor``, ``xpnn.tensor`` and ``xpnn.grad`` live above ``xpnn.functional`` (``xpnn._tensor``: the Tensor's
operators are functional ops); this package knows a Tensor only as ``op.TensorBase``.
"""
from .engine import Node
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .op import Context, Op, register_override

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "Op", "Context", "Node",
           "register_override"]


def __getattr__(name: str):  # PEP 562
    """``xpnn.autograd.Tensor``, ``.tensor`` and ``.grad``, the names this package had before the Tensor moved above
    ``xpnn.functional``: handed on from ``xpnn`` when asked for (an import at the top would run back up, and in a
    circle: ``xpnn._tensor`` imports ``xpnn.functional``, which imports this package). Deprecated: a
    ``DeprecationWarning`` names the ``xpnn`` name to use."""
    if name in ("Tensor", "tensor", "grad"):
        import warnings

        import xpnn

        warnings.warn(f"xpnn.autograd.{name} is deprecated: use xpnn.{name}", DeprecationWarning, stacklevel=2)
        return getattr(xpnn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
