"""Where an optimizer's state lives: one ``Slot`` per flat group (the state of the whole buffer, updated in one
call), or one per parameter (loose parameters, and flat groups with frozen members or members whose states
differ). State moves between the two layouts as groups change; state dicts always speak per parameter.
"""
from __future__ import annotations

import operator
from typing import Any, NamedTuple, Optional

from ..backend import get_backend, is_numpy_namespace, namespace_of
from ..nn.parameter import flat_buffer_of
from ._masters import MASTER, MasterCopy, keeps_master


class Slot:
    """State of one updated array (one Parameter's values, or a whole flat buffer).

    ``step``: the host step count; ``arrays``: the algorithm's state arrays, in the compute dtype ``dtype`` of
    namespace ``xp`` (float32 for float16 parameters; ``on_numpy``: whether ``xp`` is NumPy); ``master``: the
    ``MasterCopy`` of a float16 parameter (else ``None``); ``device``: the ``DeviceCounts`` of a capturable slot
    (else ``None``); ``scratch``: work arrays of the update function; ``bound``: ``(data, namespace, half)`` of the
    last step, so a step on the same array skips re-deriving them (``bind``).
    """

    __slots__ = ("step", "arrays", "declared", "master", "device", "scratch", "xp", "dtype", "on_numpy", "bound")

    def __init__(self, step: int = 0, xp: Any = None, dtype: Any = None):
        self.step = step
        self.arrays: dict[str, Any] = {}
        self.declared: Any = None  # the state declaration whose arrays ``arrays`` holds (all of them)
        self.master: Optional[MasterCopy] = None
        self.device: Any = None
        self.scratch: list = []
        self.xp, self.dtype, self.on_numpy = xp, dtype, xp is not None and is_numpy_namespace(xp)
        self.bound: Optional[tuple] = None

    def saved(self) -> dict[str, Any]:
        """The arrays a state dict holds: the algorithm's, then the master copy under ``"master_param"``."""
        if self.master is None:
            return self.arrays
        return {**self.arrays, MASTER: self.master.array}

    def put(self, name: str, value: Any) -> None:
        """Set a state-dict array (``"master_param"``: the master copy)."""
        if name == MASTER:
            self.master = MasterCopy(value)
        else:
            self.arrays[name] = value

    def bind(self, data: Any) -> tuple[Any, Any, bool]:
        """Bind the slot to ``data``, the array it updates from now on (when ``bound[0]`` is not ``data``): returns
        ``bound``, ``(data, namespace, half)``; moves the state to that namespace and dtype first when they changed
        (after ``model.to(...)``)."""
        xp = namespace_of(data)  # (a gradient always has its parameter's namespace, shape and dtype)
        half = keeps_master(data.dtype)
        dtype = xp.float32 if half else data.dtype
        if self.xp is not xp or self.dtype != dtype:
            if self.xp is not None:
                backend = get_backend(xp)
                for k, v in list(self.saved().items()):
                    self.put(k, xp.astype(backend.asarray(v), dtype))
                self.scratch = []
            self.xp, self.dtype, self.on_numpy, self.device = xp, dtype, is_numpy_namespace(xp), None
        self.bound = (data, xp, half)
        return self.bound


class Work(NamedTuple):
    """One update of a step."""

    slot: Slot
    target: Any  # the array the update rule writes: ``data``, or the float32 master copy of float16 ``data``
    grad: Any  # the gradient it reads (for a master: the float32 copy, unless ``grad16``)
    data: Any  # the parameter values (one Parameter's, or a whole flat buffer)
    group: dict
    grad16: bool  # the float16 gradient, left for one fused mixed-precision update to read


make_work = tuple.__new__  # make_work(Work, (...)): a Work without the Python-level __new__ (once per update)


_REQUIRES_GRAD = operator.attrgetter("_requires_grad")  # (Tensor.requires_grad without the property's frame)


class Layout:
    """The slots of an optimizer: ``flat`` by group index, ``per_param`` by parameter number (``index``:
    ``id(param) -> number``, shared with the optimizer)."""

    def __init__(self, index: dict[int, int], per_param: Optional[dict[int, Slot]] = None):
        self.index = index
        self.flat: dict[int, Slot] = {}
        self.per_param: dict[int, Slot] = per_param or {}

    def targets(self, groups: list[dict[str, Any]], written: list[Any]) -> list[tuple[Slot, Any, Any, dict]]:
        """``(slot, data, grad, group)`` of every update of a step: one over each flat group's buffer, else one
        per parameter that has a gradient and requires one (frozen flat members: PyTorch leaves their ``.grad``
        None and skips them); the parameters those updates write are appended to ``written``. State moves to the
        layout the step uses."""
        out = []
        for gi, group in enumerate(groups):
            params = group["params"]
            flat = flat_buffer_of(params)
            if flat is not None and all(map(_REQUIRES_GRAD, params)) and (
                    not self.per_param or self.agree(params)):
                if self.per_param:  # per-parameter state left from another layout: join it
                    self.gather(gi, params)
                slot = self.flat.get(gi)
                if slot is None:
                    slot = self.flat[gi] = Slot()
                out.append((slot, flat.data, flat.grad, group))
                written += params
                continue
            self.scatter(gi, params)
            for p in params:
                if p.has_grad and p.requires_grad:
                    i = self.index[id(p)]
                    slot = self.per_param.get(i)
                    if slot is None:
                        slot = self.per_param[i] = Slot()
                    out.append((slot, p.data, p.grad, group))
                    written.append(p)
        return out

    def all_per_param(self, groups: list[dict[str, Any]]) -> dict[int, Slot]:
        """Every parameter's state, flat slots split into per-parameter views (state dicts copy them)."""
        slots = dict(self.per_param)
        for gi, slot in self.flat.items():
            slots.update(self._split(groups[gi]["params"], slot))
        return slots

    def scatter(self, gi: int, params: list) -> None:
        """Turn group ``gi``'s flat state (if any) into per-parameter state."""
        slot = self.flat.pop(gi, None)
        if slot is not None:
            self.per_param.update(self._split(params, slot))

    def _split(self, params: list, slot: Slot) -> dict[int, Slot]:
        out: dict[int, Slot] = {}
        for p in params:
            n, shape, offset = p.size, p.shape, p._offset  # slices of the flat buffer (padded: see FlatBuffer)
            s = out[self.index[id(p)]] = Slot(slot.step, slot.xp, slot.dtype)
            for k, v in slot.saved().items():
                s.put(k, namespace_of(v).reshape(v[offset:offset + n], shape))  # views (state dicts copy)
        return out

    def _states(self, params: list) -> tuple[list[Optional[Slot]], set, set]:
        slots = [self.per_param.get(self.index[id(p)]) for p in params]
        steps = {s.step if s is not None else 0 for s in slots}
        keys = {tuple(sorted(s.saved())) if s is not None else () for s in slots}
        return slots, steps, keys

    def agree(self, params: list) -> bool:
        """Whether the parameters' states (if any) have one step count and one set of arrays (so they can join)."""
        slots, steps, keys = self._states(params)
        return all(s is None for s in slots) or (len(steps) == 1 and len(keys) == 1)

    def gather(self, gi: int, params: list, where: str = "Optimizer", error: type = ValueError) -> None:
        """Turn the per-parameter state (if any) of flat group ``gi`` into one flat slot (buffer order)."""
        slots, steps, keys = self._states(params)
        if all(s is None for s in slots):
            return
        if len(steps) > 1 or len(keys) > 1:
            raise error(
                f"{where}: parameter group {gi} is one flat buffer, but its parameters' states differ "
                f"(steps {sorted(steps)}, state arrays {sorted(keys)}); a flat buffer is updated as a whole, so "
                "all its parameters need the same state (e.g. all stepped together, or none)")
        first = slots[0]
        assert first is not None and first.xp is not None  # every slot gets its namespace when made
        xp, flat = first.xp, Slot(steps.pop(), first.xp, first.dtype)
        size = params[0]._flat.size  # (a flat group: its parameters live in one FlatBuffer)
        for k, like in first.saved().items():
            joined = xp.zeros((size,), dtype=like.dtype)  # the buffer's padding between parameters stays 0
            for p, s in zip(params, slots):
                if s is not None:
                    joined[p._offset:p._offset + p.size] = xp.reshape(s.saved()[k], (p.size,))
            flat.put(k, joined)
        for p in params:
            self.per_param.pop(self.index[id(p)], None)
        self.flat[gi] = flat
