"""Optimizer base class: parameter groups, state (per parameter or over a flat buffer), float16 master copies,
``zero_grad`` and PyTorch-style ``state_dict`` / ``load_state_dict``.

A subclass defines its defaults, ``_validate(group)``, the state arrays it keeps and ``_update``, which calls one
function of ``xpnn.functional.updates``. When a group's parameters are exactly one ``FlatBuffer`` (a model's
``parameters()``), ``step`` calls that function once over the whole buffer; otherwise once per parameter that has a
gradient. State dicts always speak per parameter (``{"state": {index: {...}}, "param_groups": [...]}``), so they
load into either layout.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Union

import numpy as np

from array_api_compat import device as _device

from ..backend import dtype_name, get_backend, is_cupy_namespace, is_numpy_namespace, namespace_of, to_numpy
from ..errors import CheckpointError
from ..functional.updates import copy_into
from ..autograd.tensor import Tensor, bump_versions
from ..nn.parameter import Parameter, flat_buffer_of

ParamsLike = Union[Parameter, Iterable[Parameter], Iterable[dict]]

MASTER = "master_param"  # state-dict key of the float32 master copy of a float16 parameter
DEVICE_STEP = "step_device"  # state key of the 0-d device copy of "step" (capturable slots; never saved)
EXTRA_GROUP_KEYS = ("initial_lr",)  # group entries besides the hyperparameters (set by learning-rate schedulers)


class _Slot:
    """State of one updated array (one Parameter's data, or a whole flat buffer).

    ``state``: ``"step"`` (int) and the algorithm's arrays, in the compute dtype (float32 for float16 params).
    ``master``: float32 copy of a float16 param (``None`` otherwise); ``written``: the float16 values the last step
    wrote into the param (``None``: unknown, e.g. just loaded or moved); see ``Optimizer._prepare`` for how the
    two follow writes into the parameter. ``grad32``, ``scratch``: work arrays reused every step.

    Capturable slots (namespaces other than NumPy): ``state[DEVICE_STEP]`` is the step count as a 0-d device array
    (compute dtype) incremented on the device, ``lr_device`` the learning rate as one, written from the group's
    ``lr`` only when that changes (a host-to-device write, never a read). The update kernels/code read both from
    device memory, so a step launches the same work whatever the schedule does (what a CUDA graph needs).
    ``bound``: ``(data, namespace, half)`` of the last step, so a step on the same array skips re-deriving them.
    """

    __slots__ = ("state", "master", "written", "grad32", "scratch", "xp", "dtype", "lr_device", "lr_host", "bound")

    def __init__(self, step: int = 0):
        self.state: dict[str, Any] = {"step": step}
        self.master: Any = None
        self.written: Any = None
        self.grad32: Any = None
        self.scratch: list = []
        self.xp: Any = None
        self.dtype: Any = None
        self.lr_device: Any = None
        self.lr_host: Any = None
        self.bound: Optional[tuple] = None

    def arrays(self) -> dict[str, Any]:
        out = {k: v for k, v in self.state.items() if k != "step" and k != DEVICE_STEP}
        if self.master is not None:
            out[MASTER] = self.master
        return out

    def conform(self, xp: Any, dtype: Any) -> None:
        """Move/cast the state to namespace ``xp`` and ``dtype`` (after ``model.to(...)``); drop work arrays."""
        if self.xp is xp and self.dtype == dtype:
            return
        if self.xp is not None:
            backend = get_backend(xp)
            self.state.pop(DEVICE_STEP, None)
            for k, v in list(self.state.items()):
                if k != "step":
                    self.state[k] = xp.astype(backend.asarray(v), dtype)
            if self.master is not None:
                self.master = xp.astype(backend.asarray(self.master), dtype)
            self.grad32, self.scratch, self.written = None, [], None
        self.xp, self.dtype = xp, dtype
        self.lr_device = self.lr_host = self.bound = None

    def advance(self, lr: Any, capturable: Optional[bool]) -> Optional[Any]:
        """Count one step: the host int, and on capturable slots the device copy (``+= 1`` on the device, made from
        the int on first use); returns the learning rate to pass to the update (the device array there).
        ``capturable``: ``None`` = capturable unless the namespace is NumPy."""
        self.state["step"] += 1
        xp = self.xp
        if not capturable and (capturable is not None or is_numpy_namespace(xp)):
            self.state.pop(DEVICE_STEP, None)
            self.lr_device = self.lr_host = None
            return lr
        step = self.state.get(DEVICE_STEP)
        if step is None:
            self.state[DEVICE_STEP] = xp.asarray(float(self.state["step"]), dtype=self.dtype,
                                                 device=_device(self.lr_like))
        else:
            step += 1
        if self.lr_device is None:
            self.lr_device = xp.asarray(float(lr), dtype=self.dtype, device=_device(self.lr_like))
            self.lr_host = lr
        elif self.lr_host != lr:
            self.lr_device[...] = float(lr)  # a host-to-device write, only when a schedule changed lr
            self.lr_host = lr
        return self.lr_device

    @property
    def lr_like(self) -> Any:
        """An array on the slot's device (where its device scalars go)."""
        return self.master if self.master is not None else self.bound[0]


class Optimizer:
    """Base class of xpnn's optimizers (see the module docstring). ``param_groups[i]["lr"]`` etc. may be changed
    between steps (learning-rate schedules do this)."""

    #: names of the state arrays this algorithm may keep (what a state dict may hold besides "step")
    state_names: tuple[str, ...] = ()

    def __init__(self, params: ParamsLike, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._index: dict[int, int] = {}  # id(param) -> index: every parameter, numbered in group order (state dicts)
        self._param_slots: dict[int, _Slot] = {}  # per-parameter state, by index
        self._flat_slots: dict[int, _Slot] = {}  # flat-buffer state, by group index
        # [(xp, grad), ...] -> bool: sees every gradient the updates will read (float32 copies for float16
        # parameters) before any update, and says whether to update (GradScaler: unscale, check, skip on inf/NaN)
        self._grad_hook: Any = None
        #: step count and lr as 0-d device arrays read by the update (None: on every namespace but NumPy, where a
        #: host scalar costs nothing; True also on NumPy, e.g. to test the capturable path on the CPU)
        self.capturable: Optional[bool] = None
        self._stepped: list = []  # (slot, group) of the last step's updates
        self._steps_advanced = 0  # steps that advanced the counts (graph capture checks it)
        if isinstance(params, Parameter):
            params = [params]
        if isinstance(params, dict):
            params = [params]
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    # --- groups -------------------------------------------------------------------------------------------
    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a dict with ``"params"`` and optional per-group hyperparameters (the defaults fill the rest)."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        plist = [params] if isinstance(params, Parameter) else list(params)
        for p in plist:
            if not isinstance(p, Parameter):
                raise TypeError(f"{self._name}: can only optimize xpnn.nn.Parameter objects, got {type(p).__name__}"
                                + ("; make the leaf with xpnn.nn.Parameter(array) (a Tensor that requires grad) "
                                   "instead of xpnn.tensor(array, requires_grad=True)" if isinstance(p, Tensor) else ""))
        if len({id(p) for p in plist}) != len(plist):
            raise ValueError(f"{self._name}: a parameter appears more than once in a parameter group")
        if any(id(p) in self._index for p in plist):
            raise ValueError(f"{self._name}: some parameters appear in more than one parameter group")
        unknown = sorted(set(group) - set(self.defaults) - {"params", *EXTRA_GROUP_KEYS})
        if unknown:
            raise ValueError(f"{self._name}: unknown hyperparameter(s) {unknown} in parameter group; "
                             f"expected some of {sorted(self.defaults)}")
        new = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}, "params": plist}
        self._validate(new)
        for p in plist:
            self._index[id(p)] = len(self._index)
        self.param_groups.append(new)

    def _validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the optimizer and the bad value (subclasses)."""

    # --- stepping -----------------------------------------------------------------------------------------
    def step(self) -> None:
        """Update every parameter from its ``.grad`` (one call over the flat buffer when the group is one)."""
        work = []  # (slot, array to update, gradient it reads, group, data, half): every gradient first, then updates
        written: list[Parameter] = []  # the parameters the updates write (their version counters move)
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            flat = flat_buffer_of(params)
            if flat is not None and (not all(p.requires_grad for p in params)
                                     or self._param_slots and not self._states_agree(gi)):
                flat = None  # frozen members (PyTorch: their .grad is None), or states that differ since some were
                # frozen: per-parameter updates that skip the frozen ones
            if flat is not None:
                if self._param_slots:  # per-parameter state left from another layout: join it
                    self._gather(gi)
                slot = self._flat_slots.setdefault(gi, _Slot())
                work.append(self._prepare(slot, flat.data, flat.grad, group))
                written += params
            else:
                self._scatter(gi)
                for p in params:
                    if p.has_grad and p.requires_grad:
                        slot = self._param_slots.setdefault(self._index[id(p)], _Slot())
                        work.append(self._prepare(slot, p.data, p.grad, group))
                        written.append(p)
        hook = self._grad_hook
        if hook is not None and not hook([(w[0].xp, w[2]) for w in work]):
            return  # e.g. GradScaler found inf/NaN in the gradients: skip this step (step counts unchanged)
        for slot, param, g, group, data, half in work:
            lr = slot.advance(group["lr"], self.capturable)
            if half == "fused" and lr is group["lr"]:  # float16 with host step and lr: one call (one kernel on CUDA)
                self._update_mixed(data, param, g, slot.grad32, slot.state, group, slot.scratch)
            else:
                if half == "fused":  # capturable slot (device step and lr): the three passes
                    copy_into(slot.grad32, g)
                    g = slot.grad32
                self._update(param, g, slot.state, group if lr is group["lr"] else {**group, "lr": lr}, slot.scratch)
                if half:
                    copy_into(data, param)
            if half:
                if slot.written is None or tuple(slot.written.shape) != tuple(data.shape):
                    slot.written = slot.xp.empty_like(data)
                copy_into(slot.written, data)
        # in-place writes, as PyTorch counts them: a backward through a graph that saved one of these parameters
        # before this step raises instead of using the new values
        bump_versions(written)
        self._stepped = [(w[0], w[3]) for w in work]
        self._steps_advanced += 1

    # --- CUDA graph support (xpnn.cuda) ---------------------------------------------------------------------
    def _sync_device_hyperparameters(self) -> None:
        """Write each capturable slot's device learning rate from its group's ``lr`` where a schedule changed it
        (host-to-device, no read): a replayed graph reads them from device memory."""
        for slot, group in self._stepped:
            lr = group["lr"]
            if slot.lr_device is not None and slot.lr_host != lr:
                slot.lr_device[...] = float(lr)
                slot.lr_host = lr

    def _count_replayed_step(self, n: int = 1) -> None:
        """Add ``n`` to the host step count of every slot of the last step (a graph replay advanced the device
        counts; ``-1`` undoes the count of a step that was only recorded)."""
        for slot, _group in self._stepped:
            slot.state["step"] += n
        self._steps_advanced += n

    def _prepare(self, slot: _Slot, data: Any, grad: Any, group: dict[str, Any]) -> tuple:
        """Bind ``slot`` to ``data``/``grad`` (the values of one Parameter, or of a whole flat buffer) and return what
        the update needs.

        float16 ``data`` is updated through a float32 master copy (small steps would round away in float16) and
        written back after the update; ``slot.written`` keeps a float16 copy of what was written. Before the next
        update the master copy is reconciled with ``data`` on the device, element by element: where ``data``
        differs from ``written`` (bit patterns compared), ``master = float32(data)``; elsewhere ``master`` keeps
        its float32 digits. So any write since the last step (``p.data[...] = 0``, ``p.data = a``, ``p.data *= 2``,
        ``np.multiply(..., out=p.data)``, ``load_state_dict``, ``xpnn.init``, a write through the flat buffer) is
        honoured, with no ``mark_changed()`` call and no device value read on the host. When ``written`` is
        unknown (after loading optimizer state or moving it), ``float16(master)`` stands in for it once. Cost per
        step: a 2-byte copy per element more memory, one integer compare, one masked copy and one float16 copy.
        The update reads a float32 copy of the float16 gradient.
        """
        bound = slot.bound
        if bound is not None and bound[0] is data:  # the same array as last step
            xp, half = bound[1], bound[2]
        else:  # (a gradient always has its parameter's namespace, shape and dtype: Parameter and FlatBuffer check)
            xp = namespace_of(data)
            half = dtype_name(data.dtype) == "float16"  # array_api_strict has no float16
            slot.conform(xp, xp.float32 if half else data.dtype)
            slot.bound = (data, xp, half)
        if half:
            if slot.master is None or tuple(slot.master.shape) != tuple(data.shape):  # first step, or reshaped
                slot.master, slot.grad32, slot.scratch = xp.astype(data, xp.float32), None, []
            else:  # follow writes made since the last step (see the docstring)
                _follow_writes(xp, slot, data)
            if slot.grad32 is None:
                slot.grad32 = xp.empty_like(slot.master)
            if type(self)._update_mixed is not Optimizer._update_mixed and self._grad_hook is None:
                return slot, slot.master, grad, group, data, "fused"  # float16 grad: see step()
            copy_into(slot.grad32, grad)
            return slot, slot.master, slot.grad32, group, data, True
        slot.master = None
        return slot, data, grad, group, data, False

    @staticmethod
    def _step_of(state: dict[str, Any]) -> Any:
        """The step count an update gets: the int, or on capturable slots its 0-d device copy."""
        return state.get(DEVICE_STEP, state["step"])

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], scratch: list) -> None:
        """Apply one step to ``param`` in place (``state["step"]`` already counts it). Subclasses."""
        raise NotImplementedError

    def _update_mixed(self, data: Any, master: Any, grad: Any, grad32: Any, state: dict[str, Any],
                      group: dict[str, Any], scratch: list) -> None:
        """Optional, for float16 parameters: one step on float32 ``master`` from float16 ``grad``, then ``data``
        (float16) rewritten from it, in one call (``grad32``: a float32 work array; ``state["step"]`` already counts
        the step). Subclasses that define it replace the three passes of ``step`` (cast the gradient, ``_update``,
        cast back) when the step and learning rate are host numbers (not capturable slots) and no gradient hook
        (GradScaler) must see the float32 gradients first."""
        raise NotImplementedError

    @staticmethod
    def _buffer(state: dict[str, Any], name: str, like: Any, fill: float = 0.0) -> Any:
        """``state[name]``, created on first use as an array like ``like`` filled with ``fill``."""
        if name not in state:
            xp = namespace_of(like)
            state[name] = xp.full(like.shape, fill, dtype=like.dtype) if fill else xp.zeros_like(like)
        return state[name]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every gradient: one fill of the flat gradient buffer when a group is one. With ``set_to_none``,
        lone parameters drop their gradient (flat members are zeroed: their gradient is a view)."""
        for group in self.param_groups:
            flat = flat_buffer_of(group["params"])
            if flat is not None:
                flat.grad[...] = 0
                continue
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.has_grad:
                    p.grad[...] = 0

    # --- layouts: flat-buffer state <-> per-parameter state -----------------------------------------------
    def _scatter(self, gi: int) -> None:
        """Turn group ``gi``'s flat-buffer state (if any) into per-parameter state."""
        slot = self._flat_slots.pop(gi, None)
        if slot is not None:
            self._param_slots.update(self._split(gi, slot))

    def _split(self, gi: int, slot: _Slot) -> dict[int, _Slot]:
        """Per-parameter copies of a flat slot (each parameter's slice, reshaped)."""
        out: dict[int, _Slot] = {}
        for i, p in enumerate(self.param_groups[gi]["params"]):
            n, shape, offset = p.size, p.shape, p._offset  # slices of the flat buffer (padded: see FlatBuffer)
            s = _Slot(slot.state["step"])
            for k, v in slot.arrays().items():
                xp = namespace_of(v)
                piece = xp.reshape(v[offset:offset + n], shape)  # a view: _scatter drops the flat slot, state_dict copies
                if k == MASTER:
                    s.master = piece
                else:
                    s.state[k] = piece
            s.xp, s.dtype = slot.xp, slot.dtype
            out[self._index[id(p)]] = s
        return out

    def _states_agree(self, gi: int) -> bool:
        """Whether group ``gi``'s per-parameter states (if any) have one step count and one set of arrays (so
        ``_gather`` can join them)."""
        slots = [self._param_slots.get(self._index[id(p)]) for p in self.param_groups[gi]["params"]]
        if all(s is None for s in slots):
            return True
        steps = {s.state["step"] if s is not None else 0 for s in slots}
        keys = {tuple(sorted(s.arrays())) if s is not None else () for s in slots}
        return len(steps) == 1 and len(keys) == 1

    def _gather(self, gi: int, error: type = ValueError) -> None:
        """Turn group ``gi``'s per-parameter state (if any) into one flat slot (parameters in buffer order)."""
        idx = [self._index[id(p)] for p in self.param_groups[gi]["params"]]
        slots = [self._param_slots.get(i) for i in idx]
        if all(s is None for s in slots):
            return
        steps = {s.state["step"] if s is not None else 0 for s in slots}
        keys = {tuple(sorted(s.arrays())) if s is not None else () for s in slots}
        if len(steps) > 1 or len(keys) > 1:
            raise error(
                f"{self._name}: parameter group {gi} is one flat buffer, but its parameters' states differ "
                f"(steps {sorted(steps)}, state arrays {sorted(keys)}); a flat buffer is updated as a whole, so "
                "all its parameters need the same state (e.g. all stepped together, or none)"
            )
        flat = _Slot(steps.pop())
        first = slots[0]
        assert first is not None and first.xp is not None  # every slot gets its namespace when made
        xp = first.xp
        params = self.param_groups[gi]["params"]
        size = params[0]._flat.size  # (a flat group: its parameters live in one FlatBuffer)
        for k in first.arrays():
            like = first.arrays()[k]
            joined = xp.zeros((size,), dtype=like.dtype)  # the buffer's padding between parameters stays 0
            for p, s in zip(params, slots):
                if s is not None:
                    joined[p._offset:p._offset + p.size] = xp.reshape(s.arrays()[k], (p.size,))
            if k == MASTER:
                flat.master = joined
            else:
                flat.state[k] = joined
        flat.xp, flat.dtype = first.xp, first.dtype
        for i in idx:
            del self._param_slots[i]
        self._flat_slots[gi] = flat

    def _all_param_slots(self) -> dict[int, _Slot]:
        slots = dict(self._param_slots)
        for gi, slot in self._flat_slots.items():
            slots.update(self._split(gi, slot))
        return slots

    # --- state dicts --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {"step": int, name: array, ...}}, "param_groups": [{hyperparameters, "params":
        [indices]}]}``, PyTorch's layout. Arrays are copies in the parameters' namespace, shaped like their
        parameter; a float16 parameter's state also holds its float32 master copy under ``"master_param"``."""
        state: dict[int, dict[str, Any]] = {}
        for i, slot in sorted(self._all_param_slots().items()):
            entry: dict[str, Any] = {"step": int(slot.state["step"])}
            for k, v in slot.arrays().items():
                entry[k] = namespace_of(v).asarray(v, copy=True)
            state[i] = entry
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [self._index[id(p)] for p in group["params"]]
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (arrays of any namespace, e.g. NumPy from a checkpoint; moved to the parameters'
        namespace and dtype). Hyperparameters come from the saved groups. Raises ``CheckpointError`` when groups,
        parameter counts, state names or shapes do not match; nothing changes then."""
        where = f"{self._name}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise CheckpointError(f"{where}: expected a dict with keys 'state' and 'param_groups', got {got}")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise CheckpointError(f"{where}: the state has {len(saved_groups)} parameter groups, "
                                  f"the optimizer has {len(self.param_groups)}")
        new_groups = []
        saved_to_param: dict[int, Parameter] = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            ids = list(saved.get("params", []))
            if len(ids) != len(group["params"]):
                raise CheckpointError(f"{where}: parameter group {gi} has {len(ids)} parameters in the state, "
                                      f"{len(group['params'])} in the optimizer")
            unknown = sorted(set(saved) - set(self.defaults) - {"params", *EXTRA_GROUP_KEYS})
            if unknown:
                raise CheckpointError(f"{where}: unknown hyperparameter(s) {unknown} in parameter group {gi}")
            new = {**group, **{k: _plain(v) for k, v in saved.items() if k != "params"}, "params": group["params"]}
            try:
                self._validate(new)
            except ValueError as exc:
                raise CheckpointError(f"{where}: parameter group {gi}: {exc}") from None
            new_groups.append(new)
            saved_to_param.update({int(i): p for i, p in zip(ids, group["params"])})
        group_of = {id(p): gi for gi, g in enumerate(new_groups) for p in g["params"]}
        slots: dict[int, _Slot] = {}
        for key, entry in dict(state_dict["state"]).items():
            try:
                p = saved_to_param[int(key)]
            except (KeyError, ValueError):
                raise CheckpointError(f"{where}: state entry {key!r} names no parameter of the saved groups") from None
            slots[self._index[id(p)]] = self._load_entry(where, key, entry, p, new_groups[group_of[id(p)]])
        # everything checked: commit (then put flat groups' state back into flat layout)
        old = (self.param_groups, self._param_slots, self._flat_slots)
        self.param_groups, self._param_slots, self._flat_slots = new_groups, slots, {}
        try:
            for gi, group in enumerate(self.param_groups):
                if flat_buffer_of(group["params"]) is not None:
                    self._gather(gi, error=CheckpointError)
        except CheckpointError:
            self.param_groups, self._param_slots, self._flat_slots = old
            raise

    def _load_entry(self, where: str, key: Any, entry: Any, p: Parameter, group: dict[str, Any]) -> _Slot:
        if not isinstance(entry, dict) or "step" not in entry:
            raise CheckpointError(f"{where}: state entry {key!r} must be a dict with a 'step' count")
        step = int(to_numpy(entry["step"])) if not isinstance(entry["step"], int) else entry["step"]
        if step < 0:
            raise CheckpointError(f"{where}: state entry {key!r} has a negative step {step}")
        xp = namespace_of(p.data)
        half = dtype_name(p.dtype) == "float16"
        allowed = set(self.state_names) | ({MASTER} if half else set())
        names = set(entry) - {"step"}
        unknown = sorted(names - allowed)
        missing = sorted(set(self._required_state(group)) - names) if step > 0 else []
        if unknown or missing:
            raise CheckpointError(f"{where}: state entry {key!r} for parameter of shape {p.shape}: "
                                  + (f"unexpected arrays {unknown}; " if unknown else "")
                                  + (f"missing arrays {missing}; " if missing else "")
                                  + f"{self._name} keeps {sorted(allowed)}")
        slot = _Slot(step)
        dtype = xp.float32 if half else p.dtype
        backend = get_backend(xp)
        for k in sorted(names):
            value = np.asarray(to_numpy(entry[k]))
            if tuple(value.shape) != p.shape:
                raise CheckpointError(f"{where}: state entry {key!r}, array {k!r} has shape {tuple(value.shape)}, "
                                      f"the parameter has {p.shape}")
            arr = backend.asarray(value, dtype=dtype_name(dtype))
            if k == MASTER:
                slot.master = arr
            else:
                slot.state[k] = arr
        slot.xp, slot.dtype = xp, dtype
        return slot

    def _required_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        """State arrays that must exist after a step with these hyperparameters (subclasses)."""
        return ()

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines) + "\n)"


def _bits(xp: Any, a: Any) -> Any:
    """The float16 array ``a`` as its 16-bit patterns where the library offers a view (NumPy, CuPy: an integer
    compare is several times faster than a float16 one and also matches NaN with NaN), else ``a`` itself."""
    try:
        return a.view(xp.uint16)
    except (AttributeError, TypeError, ValueError):
        return a


def _follow_writes(xp: Any, slot: _Slot, data: Any) -> None:
    """``master = float32(data)`` where ``data`` was written since the last step (see ``Optimizer._prepare``)."""
    if slot.written is not None and tuple(slot.written.shape) == tuple(data.shape):
        changed = _bits(xp, data) != _bits(xp, slot.written)
    else:  # unknown what was written: the master rounded to float16 is what a step would have written
        changed = data != xp.astype(slot.master, data.dtype)
    if is_numpy_namespace(xp) or is_cupy_namespace(xp):
        xp.copyto(slot.master, data, where=changed)  # in place, no float32 temporary
    else:  # float16 and float32 promote to float32
        slot.master = xp.where(changed, data, slot.master)


def _plain(v: Any) -> Any:
    """Hyperparameters read back from a checkpoint may be NumPy scalars or lists: make them Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return tuple(v.tolist()) if v.ndim else v.item()
    if isinstance(v, list):
        return tuple(v)
    return v


def check_non_negative(optimizer: str, what: str, name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is a real number >= 0 (NaN fails too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{optimizer}: invalid {what}: {name}={value!r} (expected a finite number >= 0)")


def check_unit_interval(optimizer: str, what: str, name: str, value: Any, closed: bool = False) -> None:
    """``ValueError`` unless ``0 <= value < 1`` (``<= 1`` when ``closed``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{optimizer}: invalid {what}: {name}={value!r} "
                         f"(expected 0 <= {name} {'<=' if closed else '<'} 1)")
