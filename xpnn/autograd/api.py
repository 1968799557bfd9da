"""``grad``: gradients of outputs with respect to chosen inputs, returned instead of accumulated
(``torch.autograd.grad``)."""
from __future__ import annotations

from typing import Any, Optional

from .engine import run_backward
from .tensor import Tensor, _seed_grad

__all__ = ["grad"]


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: Optional[bool] = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple[Any, ...]:
    """Gradients of ``outputs`` with respect to ``inputs`` (``torch.autograd.grad``), returned as a tuple of Tensors
    (recorded when ``create_graph``, for higher-order derivatives) without touching any ``.grad``.

    ``outputs``/``inputs``: a Tensor or a sequence of Tensors. ``grad_outputs``: one gradient per output (arrays or
    Tensors); may be omitted for 0-d outputs. Raises ``RuntimeError`` when an input was not used to compute the
    outputs, unless ``allow_unused`` (then its entry is ``None``).
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for t in ins:
        if not isinstance(t, Tensor) or not t.requires_grad:
            raise RuntimeError("xpnn.grad: every input must be a Tensor that requires grad, got "
                               + (type(t).__name__ if not isinstance(t, Tensor) else "a Tensor with requires_grad=False"))
    if grad_outputs is None:
        gouts: list[Any] = [None] * len(outs)
    elif isinstance(grad_outputs, Tensor) or not isinstance(grad_outputs, (list, tuple)):
        gouts = [grad_outputs]
    else:
        gouts = list(grad_outputs)
    if len(gouts) != len(outs):
        raise ValueError(f"xpnn.grad: got {len(gouts)} grad_outputs for {len(outs)} outputs")
    seeds = [_seed_grad(o, g, "xpnn.grad", create_graph) for o, g in zip(outs, gouts)]
    keep = create_graph if retain_graph is None else retain_graph
    result = run_backward(outs, seeds, retain_graph=keep, create_graph=create_graph, inputs=ins)
    assert result is not None
    out = []
    for t, g in zip(ins, result):
        if g is None:
            if not allow_unused:
                hint = ("; the parameters of a module with a hand-written backward are not inputs of the graph "
                        "(that backward adds into their .grad): use loss.backward() for them"
                        if t._node is None and hasattr(t, "_flat") else "")
                raise RuntimeError("xpnn.grad: one of the inputs was not used to compute the outputs "
                                   f"(shape {tuple(t.shape)}); pass allow_unused=True to get None for it{hint}")
            out.append(None)
        else:
            out.append(g if isinstance(g, Tensor) else Tensor(g))
    return tuple(out)
