"""Comparisons and logical operators as an op (``Compare``): ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``, ``&``, ``|``
and ``~``, elementwise with broadcasting; no gradient (the result is bool, or integer for ``&``/``|``/``~`` of
integers).

``Tensor``'s operators compute these on the arrays directly (no op call: a mask costs one array operation). While
``xpnn.onnx.export`` traces a model (``xpnn._tensor.tracing``), a result computed from the model's input is recorded
as a call of ``Compare``, so that a mask such as ``x > 0`` fed to ``where`` or ``masked_fill`` is lowered to ONNX's
``Greater``/``Less``/``Equal``/``Not``/``And``/``Or`` rather than baked into the graph as the traced input's mask.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from ..autograd.op import Context, Op

__all__ = ["Compare"]

#: symbol -> (the Python operator, its ONNX op, whether ONNX's op is the negation of that op)
_OPS: dict[str, tuple[Callable[..., Any], str, bool]] = {
    "<": (operator.lt, "Less", False), "<=": (operator.le, "LessOrEqual", False),
    ">": (operator.gt, "Greater", False), ">=": (operator.ge, "GreaterOrEqual", False),
    "==": (operator.eq, "Equal", False), "!=": (operator.eq, "Equal", True),
    "&": (operator.and_, "And", False), "|": (operator.or_, "Or", False), "~": (operator.invert, "Not", False),
}


class Compare(Op):
    """``x <op> y`` (``y`` absent for ``~``), ``op`` one of ``_OPS``'s symbols; no gradient."""

    name = "compare"

    @staticmethod
    def forward(ctx: Context, x: Any, y: Any = None, *, op: str) -> Any:
        fn = _OPS[op][0]
        return fn(x) if op == "~" else fn(x, y)

    @staticmethod
    def backward(ctx: Context, g: Any) -> tuple[None, None]:
        return None, None

    @staticmethod
    def onnx(g: Any, x: Any, y: Any = None, *, op: str) -> str:
        """``Less``/``LessOrEqual``/``Greater``/``GreaterOrEqual``/``Equal`` (``!=``: ``Not`` of ``Equal``), ``And``/
        ``Or``/``Not`` of bool values (``BitwiseAnd``/``BitwiseOr``/``BitwiseNot`` of integers from opset 18). A
        constant operand takes the other's dtype; two values of different dtypes are compared in their NumPy result
        type."""
        onnx_op, negate = _OPS[op][1], _OPS[op][2]
        if op == "~":
            names = [x]
        else:
            if not isinstance(x, str):
                x = g.const(x, dtype=y)
            if not isinstance(y, str):
                y = g.const(y, dtype=x)
            if g.dtype(x) != g.dtype(y):
                common = np.result_type(g.dtype(x), g.dtype(y))
                x, y = g.cast(x, common), g.cast(y, common)
            names = [x, y]
        if op in ("&", "|", "~") and g.dtype(names[0]) != np.bool_:
            if g.opset < 18:
                raise NotImplementedError(
                    f"xpnn.onnx.export: op 'compare' ({op} of {g.dtype(names[0])} values) needs ONNX's Bitwise ops "
                    f"of opset 18, got opset_version={g.opset}")
            onnx_op = "Bitwise" + {"&": "And", "|": "Or", "~": "Not"}[op]
        out = g.op(onnx_op, *names)
        return g.op("Not", out) if negate else out
