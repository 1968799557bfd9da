"""Optimizer base class: parameter groups, ``step``, ``zero_grad``, PyTorch-style ``state_dict`` /
``load_state_dict`` and the GradScaler hook. Its helpers: ``_layout`` (state per flat buffer or per parameter),
``_masters`` (float32 master copies of float16 parameters), ``_capturable`` (device step count and lr), ``_groups``
(group and state-dict checks)."""
from __future__ import annotations

from typing import Any

from .._tensor import bump_versions
from ..errors import CheckpointError
from ..functional.updates import copy_into
from ..nn.parameter import flat_buffer_of
from ._capturable import advance
from ._groups import ParamsLike, group_list, new_group, read_state_dict
from ._layout import Layout, Slot, Work, make_work
from ._masters import master_for

__all__ = ["Optimizer", "ParamsLike"]


class Optimizer:
    """Base class of xpnn's optimizers. ``param_groups[i]["lr"]`` etc. may change between steps (schedules).

    A new optimizer is its update rule and its state, nothing else. ``xpnn.optim.Adagrad``, less its docstring::

        class Adagrad(Optimizer):
            state_names = ("sum",)               # every array a saved state entry may hold (besides "step")

            def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                         eps=1e-10, *, maximize=False):
                super().__init__(params, dict(lr=lr, lr_decay=lr_decay, ...))   # the defaults of every group

            def _validate(self, group):          # ValueError naming the optimizer and the bad hyperparameter
                check_non_negative("Adagrad", "learning rate", "lr", group["lr"]) ...

            def _state(self, group):             # the arrays a step with these hyperparameters keeps:
                return {"sum": group["initial_accumulator_value"]}   # name -> initial value (made on first use)

            def _update(self, param, grad, state, group, step, lr, scratch, new):
                adagrad_update(param, grad, state["sum"], step=step, lr=lr, lr_decay=group["lr_decay"], ...,
                               scratch=scratch)

    ``_update`` calls one function of ``xpnn.functional.updates`` on ``param`` in place: a model's whole flat
    buffer when a group is one (one kernel on CUDA), else one parameter. ``state``: the arrays ``_state`` declared,
    like ``param``; ``new``: the names made for this step (SGD's first momentum step); ``step`` (counting this
    one) and ``lr``: an int and the group's lr, or 0-d device arrays on capturable slots; ``scratch``: work arrays
    kept between steps. The base class does the rest: layouts, float32 master copies of float16 parameters (an
    optional ``_update_mixed`` fuses cast, update and cast back: Adam), device step and lr for CUDA graphs, state
    dicts (per parameter, PyTorch's layout), the GradScaler hook.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, params: ParamsLike, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self._validate(self.defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._index: dict[int, int] = {}  # id(param) -> number: every parameter, in group order (state dicts)
        self._layout = Layout(self._index)
        # [(xp, grad), ...] -> bool: sees every gradient the updates will read (float32 copies for float16
        # parameters) before any update, and says whether to update (GradScaler: unscale, check, skip on inf/NaN)
        self._grad_hook: Any = None
        #: step count and lr as 0-d device arrays (None: on every namespace but NumPy; True also on NumPy)
        self.capturable: Any = None
        self._stepped: list[tuple[Slot, dict]] = []  # (slot, group) of the last step's updates
        self._steps_advanced = 0  # steps that advanced the counts (graph capture checks it)
        for group in group_list(self._name, params):
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a dict with ``"params"`` and optional per-group hyperparameters (the defaults fill the rest)."""
        new = new_group(self._name, group, self.defaults, self._index)
        self._validate(new)
        for p in new["params"]:
            self._index[id(p)] = len(self._index)
        self.param_groups.append(new)

    def _validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the optimizer and the bad value (subclasses)."""

    def _state(self, group: dict[str, Any]) -> dict[str, float]:
        """The state arrays a step with ``group``'s hyperparameters keeps: name -> initial value (subclasses)."""
        return {}

    def _update(self, param: Any, grad: Any, state: dict[str, Any], group: dict[str, Any], step: Any, lr: Any,
                scratch: list, new: tuple[str, ...]) -> None:
        raise NotImplementedError  # subclasses: see the class docstring

    _update_mixed: Any = None  # optional (data16, master, grad16, grad32, state, group, step, lr, scratch)

    def step(self) -> None:
        """Update every parameter from its ``.grad`` (one call over the flat buffer when the group is one)."""
        written: list[Any] = []  # the parameters the updates write
        targets = self._layout.targets(self.param_groups, written)
        work = [self._bind(slot, data, grad, group) for slot, data, grad, group in targets]
        hook = self._grad_hook
        if hook is not None and not hook([(w.slot.xp, w.grad) for w in work]):
            return  # e.g. GradScaler found inf/NaN in the gradients: skip this step (step counts unchanged)
        for w in work:
            self._apply(w)  # the one place a step writes parameters: w.data of each work item
        # in-place writes, as PyTorch counts them: a backward through a graph that saved one of these parameters
        # before this step raises instead of using the new values
        bump_versions(written)
        self._stepped = [(w.slot, w.group) for w in work]
        self._steps_advanced += 1

    def _bind(self, slot: Slot, data: Any, grad: Any, group: dict[str, Any]) -> Work:
        """The work item of one update; float16 ``data``: its master copy, up to date, and the gradient cast to
        float32 now unless one fused call (no hook) will read it as it is."""
        bound = slot.bound
        if bound is None or bound[0] is not data:  # not the array of the last step
            bound = slot.bind(data)
        xp, half = bound[1], bound[2]
        if not half:
            slot.master = None
            return make_work(Work, (slot, data, grad, data, group, False))
        master = master_for(slot, xp, data)
        if self._update_mixed is not None and self._grad_hook is None:
            return make_work(Work, (slot, master.array, grad, data, group, True))
        return make_work(Work, (slot, master.array, master.cast(grad), data, group, False))  # hooks see float32

    def _apply(self, w: Work) -> None:
        """One update: counts the step, makes missing state, then writes ``w.data`` (directly or via its master)."""
        slot, group, state, master = w.slot, w.group, w.slot.arrays, w.slot.master
        step, lr = advance(slot, group["lr"], self.capturable, w.target)
        declared, new = self._state(group), ()
        if declared is not slot.declared:  # (a declaration seen last step: its arrays exist)
            new = tuple(k for k in declared if k not in state)
            for k in new:
                state[k] = slot.xp.full_like(w.target, declared[k])
            slot.declared = declared
        if w.grad16 and lr is group["lr"]:  # host step and lr: one fused call (one kernel on CUDA)
            self._update_mixed(w.data, w.target, w.grad, master.grad32, state, group, step, lr, slot.scratch)
        else:  # the update rule on data or on the master (float16: then cast back into data)
            self._update(w.target, master.cast(w.grad) if w.grad16 else w.grad, state, group, step, lr, slot.scratch,
                         new)
            if master is not None:
                copy_into(w.data, w.target)
        if master is not None:
            master.record(slot.xp, w.data)

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

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {number: {"step": int, name: array, ...}}, "param_groups": [{hyperparameters, "params":
        [numbers]}]}``, PyTorch's layout. Arrays are copies in the parameters' namespace, shaped like their
        parameter; a float16 parameter's state also holds its float32 master copy under ``"master_param"``."""
        state = {i: {"step": int(s.step), **{k: s.xp.asarray(v, copy=True) for k, v in s.saved().items()}}
                 for i, s in sorted(self._layout.all_per_param(self.param_groups).items())}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [self._index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` (arrays of any namespace, e.g. NumPy from a checkpoint; moved to the parameters'
        namespace and dtype). Hyperparameters come from the saved groups. Raises ``CheckpointError`` when groups,
        parameter counts, state names or shapes do not match; nothing changes then."""
        groups, slots = read_state_dict(self, state_dict)
        layout = Layout(self._index, slots)
        for gi, group in enumerate(groups):  # flat groups' state back into the flat layout
            if flat_buffer_of(group["params"]) is not None:
                layout.gather(gi, group["params"], self._name, CheckpointError)
        self.param_groups, self._layout = groups, layout

    # --- CUDA graphs (xpnn.cuda) ----------------------------------------------------------------------------
    def _sync_device_hyperparameters(self) -> None:
        """Write each capturable slot's device lr from its group's ``lr`` where a schedule changed it (no read)."""
        for slot, group in self._stepped:
            if slot.device is not None:
                slot.device.set_lr(group["lr"])

    def _count_replayed_step(self, n: int = 1) -> None:
        """Add ``n`` to the host step count of every slot of the last step (a graph replay advanced the device
        counts; ``-1`` undoes the count of a step that was only recorded)."""
        for slot, _group in self._stepped:
            slot.step += n
        self._steps_advanced += n

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, group in enumerate(self.param_groups):
            lines += [f"Parameter Group {i}"] + [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"
