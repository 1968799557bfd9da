"""float32 master copies of float16 parameters: what an optimizer updates in place of the float16 values.

Small steps round away in float16, so the update runs on a float32 copy (the master) and the float16 parameter is
rewritten from it. ``written`` keeps a float16 copy of what the last step wrote; before the next update the master
follows any write made since then, element by element on the device: where the parameter differs from
``written`` (bit patterns compared), ``master = float32(param)``; elsewhere the master keeps its float32 digits.
So ``p.data[...] = 0``, ``p.data = a``, ``p.data *= 2``, ``np.multiply(..., out=p.data)``, ``load_state_dict``,
``xpnn.init`` or a write through the flat buffer is honoured, with no ``mark_changed()`` call and no device value
read on the host. When ``written`` is unknown (just loaded or moved), ``float16(master)`` stands in for it once.
Cost per step: 2 bytes per element more memory, one integer compare, one masked copy and one float16 copy.
"""
from __future__ import annotations

from typing import Any

from ..backend import dtype_name, is_cupy_namespace, is_numpy_namespace
from ..functional.updates import copy_into

MASTER = "master_param"  # state-dict key of the master copy


def keeps_master(dtype: Any) -> bool:
    """Whether parameters of ``dtype`` are updated through a float32 master copy (float16)."""
    return dtype_name(dtype) == "float16"  # (array_api_strict has no float16)


class MasterCopy:
    """``array``: the float32 master; ``written``: the float16 values the last step wrote (``None``: unknown);
    ``grad32``: the float32 copy of the gradient the update reads (a work array reused every step)."""

    __slots__ = ("array", "written", "grad32")

    def __init__(self, array: Any):
        self.array = array
        self.written: Any = None
        self.grad32: Any = None

    def cast(self, grad: Any) -> Any:
        """The float16 ``grad`` copied into ``grad32`` (returned)."""
        copy_into(self.grad32, grad)
        return self.grad32

    def record(self, xp: Any, data: Any) -> None:
        """Keep a copy of the float16 values the step just wrote into ``data``."""
        if self.written is None or tuple(self.written.shape) != tuple(data.shape):
            self.written = xp.empty_like(data)
        copy_into(self.written, data)

    def follow_writes(self, xp: Any, data: Any) -> None:
        """``array = float32(data)`` where ``data`` was written since the last step (see the module docstring)."""
        if self.written is not None and tuple(self.written.shape) == tuple(data.shape):
            changed = _bits(xp, data) != _bits(xp, self.written)
        else:  # unknown what was written: the master rounded to float16 is what a step would have written
            changed = data != xp.astype(self.array, data.dtype)
        if is_numpy_namespace(xp) or is_cupy_namespace(xp):
            xp.copyto(self.array, data, where=changed)  # in place, no float32 temporary
        else:  # float16 and float32 promote to float32
            self.array = xp.where(changed, data, self.array)


def master_for(slot: Any, xp: Any, data: Any) -> MasterCopy:
    """``slot``'s master copy of float16 ``data``: made on the first step (or after a reshape, which also drops the
    slot's work arrays), else brought up to date with the writes since the last step."""
    master = slot.master
    if master is None or tuple(master.array.shape) != tuple(data.shape):
        master = slot.master = MasterCopy(xp.astype(data, xp.float32))
        slot.scratch = []
    else:
        master.follow_writes(xp, data)
    if master.grad32 is None:
        master.grad32 = xp.empty_like(master.array)
    return master


def _bits(xp: Any, a: Any) -> Any:
    """The float16 array ``a`` as its 16-bit patterns where the library offers a view (NumPy, CuPy: an integer
    compare is several times faster than a float16 one and also matches NaN with NaN), else ``a`` itself."""
    try:
        return a.view(xp.uint16)
    except (AttributeError, TypeError, ValueError):
        return a
