"""Reverse-mode automatic differentiation: ``Tensor``, the graph recorded by ops on Tensors, ``grad``,
``no_grad``, and ``Op`` (one declaration per op: forward, backward, a per-call context) with its overrides.

``xpnn.functional`` declares every op with ``Op``; on plain arrays the ops run without any graph, on Tensors they
record one. See ``xpnn.autograd.op`` for how to declare an op and register a fused kernel or fast path for it.
"""
from .api import grad
from .engine import Node
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .op import Context, Op, register_override
from .tensor import Tensor, tensor

__all__ = ["Tensor", "tensor", "grad", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
           "Op", "Context", "Node", "register_override"]
