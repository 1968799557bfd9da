"""In-place elementwise arithmetic: ``out = a <op> b`` without temporaries where the namespace allows it."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import is_cupy_namespace, is_numpy_namespace


def _array(r: Any) -> Any:
    """A ufunc's result as an array (NumPy returns a scalar for 0-d inputs, which ``out=`` cannot take)."""
    return np.asarray(r) if isinstance(r, np.generic) else r


class InPlace:
    """``out = a <op> b`` for arrays of namespace ``xp``; ``out`` may alias ``a`` or ``b``. Returns ``out``.

    NumPy/CuPy: the library ufunc with ``out=`` (no temporary). Elsewhere: the array-API expression, then
    ``out[...] = result`` (one temporary, the standard has no ``out=``).
    """

    def __init__(self, xp: Any):
        self.xp = xp
        self.ufuncs = xp if (is_numpy_namespace(xp) or is_cupy_namespace(xp)) else None
        if self.ufuncs is not None:  # the ufuncs themselves take (a, b, out=out) and return out: no Python frame
            for name, ufunc in _UFUNCS.items():  # per call (these instance attributes shadow the methods below)
                setattr(self, name, getattr(xp, ufunc))

    @classmethod
    def of(cls, xp: Any) -> "InPlace":
        """The ``InPlace`` of namespace ``xp``, built once (small calls on NumPy should not pay for it each time)."""
        ops = _BY_NAMESPACE.get(xp)
        if ops is None:
            ops = _BY_NAMESPACE[xp] = cls(xp)
        return ops

    def neg(self, a: Any) -> Any:
        """``-a`` as a new array (NumPy/CuPy: one ufunc call, no ``empty_like`` wrapper)."""
        if self.ufuncs is not None:
            return _array(self.ufuncs.negative(a))
        return -a

    def rsub(self, s: float, a: Any) -> Any:
        """``s - a`` as a new array, ``s`` a Python scalar."""
        if self.ufuncs is not None:
            return _array(self.ufuncs.subtract(s, a))
        return s - a

    def mul(self, a: Any, b: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.multiply(a, b, out=out)
        out[...] = a * b
        return out

    def add(self, a: Any, b: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.add(a, b, out=out)
        out[...] = a + b
        return out

    def sub(self, a: Any, b: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.subtract(a, b, out=out)
        out[...] = a - b
        return out

    def div(self, a: Any, b: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.divide(a, b, out=out)
        out[...] = a / b
        return out

    def sqrt(self, a: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.sqrt(a, out=out)
        out[...] = self.xp.sqrt(a)
        return out

    def maximum(self, a: Any, b: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.maximum(a, b, out=out)
        out[...] = self.xp.maximum(a, b)
        return out

    def copy(self, src: Any, out: Any) -> Any:
        """``out[...] = src``, casting to ``out.dtype`` (e.g. float16 <-> float32)."""
        if self.ufuncs is not None:
            self.ufuncs.copyto(out, src, casting="same_kind")
            return out
        out[...] = src if src.dtype == out.dtype else self.xp.astype(src, out.dtype)
        return out

    def exp(self, a: Any, out: Any) -> Any:
        if self.ufuncs is not None:
            return self.ufuncs.exp(a, out=out)
        out[...] = self.xp.exp(a)
        return out


_BY_NAMESPACE: dict[Any, InPlace] = {}
# InPlace methods that are exactly one ufunc call with ``out=`` on NumPy/CuPy
_UFUNCS = {"mul": "multiply", "add": "add", "sub": "subtract", "div": "divide", "sqrt": "sqrt", "maximum": "maximum",
           "exp": "exp"}
