"""Parameter groups and optimizer state dicts: the checks of ``add_param_group`` and ``load_state_dict`` (each
raising an error that names the optimizer and the value), and the hyperparameter checks the optimizers share."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Union

import numpy as np

from .._tensor import Tensor
from ..backend import dtype_name, get_backend, namespace_of, to_numpy
from ..errors import CheckpointError
from ..nn.parameter import Parameter
from ._layout import Slot
from ._masters import MASTER, keeps_master

ParamsLike = Union[Parameter, Iterable[Parameter], Iterable[dict]]

EXTRA_GROUP_KEYS = ("initial_lr",)  # group entries besides the hyperparameters (set by learning-rate schedulers)


def group_list(name: str, params: ParamsLike) -> list[dict[str, Any]]:
    """The constructor's ``params`` as a list of group dicts."""
    if isinstance(params, (Parameter, dict)):
        params = [params]
    groups = list(params)
    if not groups:
        raise ValueError(f"{name}: got an empty parameter list")
    return groups if isinstance(groups[0], dict) else [{"params": groups}]


def new_group(name: str, group: dict[str, Any], defaults: dict[str, Any], index: dict[int, int]) -> dict[str, Any]:
    """``group`` completed from ``defaults`` (``params`` as a list), after checking its parameters and keys."""
    if not isinstance(group, dict) or "params" not in group:
        raise TypeError(f"{name}: a parameter group must be a dict with a 'params' entry")
    params = group["params"]
    plist = [params] if isinstance(params, Parameter) else list(params)
    for p in plist:
        if not isinstance(p, Parameter):
            raise TypeError(f"{name}: can only optimize xpnn.nn.Parameter objects, got {type(p).__name__}"
                            + ("; make the leaf with xpnn.nn.Parameter(array) (a Tensor that requires grad) "
                               "instead of xpnn.tensor(array, requires_grad=True)" if isinstance(p, Tensor) else ""))
    if len({id(p) for p in plist}) != len(plist):
        raise ValueError(f"{name}: a parameter appears more than once in a parameter group")
    if any(id(p) in index for p in plist):
        raise ValueError(f"{name}: some parameters appear in more than one parameter group")
    unknown = sorted(set(group) - set(defaults) - {"params", *EXTRA_GROUP_KEYS})
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown} in parameter group; "
                         f"expected some of {sorted(defaults)}")
    return {**defaults, **{k: v for k, v in group.items() if k != "params"}, "params": plist}


def read_state_dict(opt: Any, state_dict: Any) -> tuple[list[dict[str, Any]], dict[int, Slot]]:
    """``(param_groups, per-parameter slots)`` that ``opt.load_state_dict(state_dict)`` installs, checked against
    ``opt``'s groups, parameters and state names; ``CheckpointError`` on any mismatch."""
    where = f"{opt._name}.load_state_dict"
    if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
        got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
        raise CheckpointError(f"{where}: expected a dict with keys 'state' and 'param_groups', got {got}")
    saved_groups = list(state_dict["param_groups"])
    if len(saved_groups) != len(opt.param_groups):
        raise CheckpointError(f"{where}: the state has {len(saved_groups)} parameter groups, "
                              f"the optimizer has {len(opt.param_groups)}")
    groups, saved_to_param = [], {}
    for gi, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
        ids = list(saved.get("params", []))
        if len(ids) != len(group["params"]):
            raise CheckpointError(f"{where}: parameter group {gi} has {len(ids)} parameters in the state, "
                                  f"{len(group['params'])} in the optimizer")
        unknown = sorted(set(saved) - set(opt.defaults) - {"params", *EXTRA_GROUP_KEYS})
        if unknown:
            raise CheckpointError(f"{where}: unknown hyperparameter(s) {unknown} in parameter group {gi}")
        new = {**group, **{k: _plain(v) for k, v in saved.items() if k != "params"}, "params": group["params"]}
        try:
            opt._validate(new)
        except ValueError as exc:
            raise CheckpointError(f"{where}: parameter group {gi}: {exc}") from None
        groups.append(new)
        saved_to_param.update({int(i): (p, new) for i, p in zip(ids, group["params"])})
    slots: dict[int, Slot] = {}
    for key, entry in dict(state_dict["state"]).items():
        try:
            p, group = saved_to_param[int(key)]
        except (KeyError, ValueError):
            raise CheckpointError(f"{where}: state entry {key!r} names no parameter of the saved groups") from None
        slots[opt._index[id(p)]] = _read_entry(where, key, entry, p, opt.state_names,
                                              tuple(opt._state(group)), opt._name)
    return groups, slots


def _read_entry(where: str, key: Any, entry: Any, p: Parameter, names: tuple[str, ...],
                required: tuple[str, ...], name: str) -> Slot:
    if not isinstance(entry, dict) or "step" not in entry:
        raise CheckpointError(f"{where}: state entry {key!r} must be a dict with a 'step' count")
    step = int(to_numpy(entry["step"])) if not isinstance(entry["step"], int) else entry["step"]
    if step < 0:
        raise CheckpointError(f"{where}: state entry {key!r} has a negative step {step}")
    xp = namespace_of(p.data)
    half = keeps_master(p.dtype)
    allowed = set(names) | ({MASTER} if half else set())
    given = set(entry) - {"step"}
    unknown = sorted(given - allowed)
    missing = sorted(set(required) - given) if step > 0 else []
    if unknown or missing:
        raise CheckpointError(f"{where}: state entry {key!r} for parameter of shape {p.shape}: "
                              + (f"unexpected arrays {unknown}; " if unknown else "")
                              + (f"missing arrays {missing}; " if missing else "")
                              + f"{name} keeps {sorted(allowed)}")
    dtype = xp.float32 if half else p.dtype
    slot, backend = Slot(step, xp, dtype), get_backend(xp)
    for k in sorted(given):
        value = np.asarray(to_numpy(entry[k]))
        if tuple(value.shape) != p.shape:
            raise CheckpointError(f"{where}: state entry {key!r}, array {k!r} has shape {tuple(value.shape)}, "
                                  f"the parameter has {p.shape}")
        slot.put(k, backend.asarray(value, dtype=dtype_name(dtype)))
    return slot


def _plain(v: Any) -> Any:
    """Hyperparameters read back from a checkpoint may be NumPy scalars or lists: make them Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return tuple(v.tolist()) if v.ndim else v.item()
    if isinstance(v, list):
        return tuple(v)
    return v


def _real(value: Any) -> bool:
    """A real number: a Python or NumPy int or float (``np.float32(0.1)`` too, as PyTorch takes it), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_non_negative(optimizer: str, what: str, name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is a real number >= 0 (NaN fails too)."""
    if not _real(value) or not value >= 0 or math.isinf(value):
        raise ValueError(f"{optimizer}: invalid {what}: {name}={value!r} (expected a finite number >= 0)")


def check_unit_interval(optimizer: str, what: str, name: str, value: Any, closed: bool = False) -> None:
    """``ValueError`` unless ``0 <= value < 1`` (``<= 1`` when ``closed``)."""
    ok = _real(value) and 0 <= value and (
        value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{optimizer}: invalid {what}: {name}={value!r} "
                         f"(expected 0 <= {name} {'<=' if closed else '<'} 1)")
