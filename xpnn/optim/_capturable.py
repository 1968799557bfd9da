"""Capturable optimizer state: the step count and learning rate as 0-d device arrays (what a CUDA graph needs).

On namespaces other than NumPy (or with ``optimizer.capturable = True``) each slot keeps a ``DeviceCounts``: the
step count, incremented on the device, and the learning rate, written from the group's ``lr`` only when a schedule
changed it (a host-to-device write, never a read). The update functions read both from device memory, so a step
launches the same work whatever the schedule does. Both are in the slot's compute dtype (float32 for float16
parameters), on the device of the array the update writes.
"""
from __future__ import annotations

from typing import Any, Optional

from array_api_compat import device as _device


class DeviceCounts:
    """``step``: the step count as a 0-d device array; ``lr``: the learning rate as one; ``lr_host``: the value
    last written into ``lr``."""

    __slots__ = ("step", "lr", "lr_host")

    def __init__(self, step: int, lr: Any, xp: Any, dtype: Any, like: Any):
        self.step = xp.asarray(float(step), dtype=dtype, device=_device(like))
        self.lr = xp.asarray(float(lr), dtype=dtype, device=_device(like))
        self.lr_host = lr

    def set_lr(self, lr: Any) -> None:
        """Write ``lr`` into the device learning rate if it changed (host to device, no read)."""
        if self.lr_host != lr:
            self.lr[...] = float(lr)
            self.lr_host = lr


def advance(slot: Any, lr: Any, capturable: Optional[bool], like: Any) -> tuple[Any, Any]:
    """Count one step of ``slot`` and return the ``(step, lr)`` its update reads: the host int and ``lr``, or on
    capturable slots the device arrays (the count ``+= 1`` on the device, made from the host count on first use,
    on the device of ``like``). ``capturable``: ``None`` = capturable unless the namespace is NumPy; a slot that
    stops being capturable drops its device copies (a later switch back starts again from the host count)."""
    slot.step += 1
    if not capturable and (capturable is not None or slot.on_numpy):
        slot.device = None
        return slot.step, lr
    counts = slot.device
    if counts is None:
        counts = slot.device = DeviceCounts(slot.step, lr, slot.xp, slot.dtype, like)
    else:
        counts.step += 1
        counts.set_lr(lr)
    return counts.step, counts.lr
