"""Mixed precision: ``GradScaler``, dynamic loss scaling for float16 training (``torch.amp.GradScaler``'s names and
defaults).

float16 gradients below ~6e-8 flush to zero (and below ~6e-5 lose digits), so a small loss gradient can vanish
on its way back through a float16 network and training stalls. The scaler multiplies the loss (or, in the explicit
API, the loss gradient) by ``scale`` before backward, so the gradients are ``scale`` times larger while they are
float16; ``step`` divides them by ``scale`` again in float32 -- for float16 parameters on the optimizer's float32
copy of the gradient, so nothing underflows after unscaling -- checks them for inf/NaN in the same pass, and skips
the step when it finds any. Each optimizer keeps its own inf/NaN flag (PyTorch's per-optimizer state): with two
optimizers, only the one whose gradients overflowed skips its step. ``update`` then halves the scale when any
optimizer found an overflow since the last ``update`` and doubles it after ``growth_interval`` clean steps::

    scaler = GradScaler()
    for xb, yb in batches:
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        model.backward(scaler.scale(loss_fn.backward()), need_input_grad=False)  # explicit API
        # (tape API: scaler.scale(loss).backward())
        scaler.step(opt)      # unscale + finite check in one pass per gradient buffer; skips on inf/NaN
        scaler.update()

Host reads: ``step`` reads one flag (whether any of this optimizer's gradients was inf/NaN) to decide whether to
call the optimizer -- the read PyTorch's ``GradScaler.step`` makes too. We chose it over a device-side skip because a
skipped step must leave the step count, every moment buffer and the learning-rate schedule's view of the step
untouched, which every optimizer (and its fused kernel) would otherwise have to implement as a masked update; the
cost is one device sync per optimizer step when a scaler is used. ``scale``, the unscaling, the check and ``update``
read nothing.
"""
from __future__ import annotations

from typing import Any, Optional

from . import _dispatch
from ._cuda import registry
from .backend import dtype_name, is_numpy_namespace, namespace_of
from .debug import no_host_read_while_capturing
from .functional._inplace import InPlace

__all__ = ["GradScaler", "unscale_and_check_"]

_READY, _UNSCALED, _STEPPED = 0, 1, 2  # an optimizer's stage since the last update() (PyTorch's OptState)


def unscale_and_check_(grad: Any, inv_scale: Any, found_inf: Any) -> None:
    """``grad *= inv_scale`` in place and ``found_inf = 1`` if ``grad`` holds any inf or NaN (before scaling).

    grad: floating array of any shape (normally a flat gradient buffer); inv_scale: 0-d float32 array;
    found_inf: 0-d float32 array (0 or 1), updated in place; nothing is read on the host. One pass over ``grad``
    in the CUDA kernel (``amp_unscale_check``); NumPy and the array-API path make one check and one multiply.
    (PyTorch: ``torch._amp_foreach_non_finite_check_and_unscale_``.)
    """
    xp = namespace_of(grad, inv_scale, found_inf, where="unscale_and_check_")
    kernel = _dispatch.lookup(registry.AMP_UNSCALE_CHECK, xp, grad.dtype)
    if kernel is not None and kernel(grad, inv_scale, found_inf) is not NotImplemented:
        return
    bad = xp.logical_not(xp.all(xp.isfinite(grad)))
    found_inf[...] = xp.where(bad, xp.ones_like(found_inf), found_inf)
    if grad.dtype == inv_scale.dtype:
        InPlace.of(xp).mul(grad, inv_scale, out=grad)
    else:  # float64 gradients: the factor in their dtype (a power of two, exact)
        InPlace.of(xp).mul(grad, xp.astype(inv_scale, grad.dtype), out=grad)


class GradScaler:
    """Dynamic loss scaling (``torch.amp.GradScaler``): ``scale(loss)``, ``step(optimizer)``, ``update()``,
    ``unscale_(optimizer)``, ``get_scale()``, ``state_dict()``/``load_state_dict()``; see the module docstring.

    init_scale=2**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True (PyTorch's
    defaults). The scale lives on the device of the first array scaled (a 0-d float32 array). With
    ``enabled=False`` every method is a pass-through (``step`` just calls ``optimizer.step()``).
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        if not init_scale > 0:
            raise ValueError(f"GradScaler: init_scale must be > 0, got {init_scale!r}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor!r}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor!r}")
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError(f"GradScaler: growth_interval must be an int >= 1, got {growth_interval!r}")
        self._enabled = bool(enabled)
        self._init_scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = growth_interval
        self._init_tracker = 0
        self._xp: Any = None
        self._scale: Any = None  # 0-d float32 on the device
        self._tracker: Any = None  # 0-d int32: clean steps since the last change of scale
        # id(optimizer) -> [stage, found_inf]: _READY / _UNSCALED / _STEPPED, and a 0-d float32 flag (1: inf/NaN in
        # this optimizer's gradients) once they were checked; cleared by update() (PyTorch's _per_optimizer_states)
        self._per_optimizer: dict[int, list[Any]] = {}

    # --- device state ---------------------------------------------------------------------------------------
    def _lazy_init(self, like: Any) -> Any:
        xp = namespace_of(like, where="GradScaler")
        if self._scale is None:
            dev = _device(like)
            self._xp = xp
            self._scale = xp.asarray(self._init_scale, dtype=xp.float32, device=dev)
            self._tracker = xp.asarray(self._init_tracker, dtype=xp.int32, device=dev)
        elif xp is not self._xp:
            raise ValueError(f"GradScaler: its scale lives on {_describe(self._xp)}, got arrays of {_describe(xp)}; "
                             "use one scaler per backend")
        return xp

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs: Any) -> Any:
        """``outputs * scale``: the loss (tape API, then ``.backward()``) or the loss gradient (explicit API, then
        ``model.backward(...)``); an array or an ``xpnn.Tensor``, in its dtype. Nothing is read on the host."""
        if not self._enabled:
            return outputs
        import array_api_compat

        data = outputs if array_api_compat.is_array_api_obj(outputs) else outputs.data  # an array, or a Tensor
        xp = self._lazy_init(data)
        if data.dtype == self._scale.dtype:
            return outputs * self._scale
        if data is outputs and dtype_name(data.dtype) == "float16":  # 2**16 itself overflows float16: multiply
            return xp.astype(xp.astype(data, xp.float32) * self._scale, data.dtype)  # in float32, round once
        return outputs * xp.astype(self._scale, data.dtype)

    def _inv_scale(self) -> Any:
        return 1.0 / self._scale  # float32: 2**-k exactly for the power-of-two scales used here

    def _grads_of(self, optimizer: Any) -> list[tuple[Any, Any]]:
        """(namespace, gradient array) of every gradient ``optimizer.step`` would read: flat buffers, or
        per-parameter gradients."""
        from .nn.parameter import flat_buffer_of

        out = []
        for group in optimizer.param_groups:
            flat = flat_buffer_of(group["params"])
            grads = [flat.grad] if flat is not None else [p.grad for p in group["params"] if p.has_grad]
            out += [(namespace_of(g), g) for g in grads]
        return out

    def _state(self, optimizer: Any) -> list[Any]:
        return self._per_optimizer.setdefault(id(optimizer), [_READY, None])

    def _require_scale(self, method: str) -> None:
        if self._scale is None:
            raise RuntimeError(f"GradScaler.{method}: nothing was scaled since the scaler was made; call "
                               "scaler.scale(loss) (or scale the loss gradient) before backward")

    def unscale_(self, optimizer: Any) -> None:
        """Divide ``optimizer``'s gradients by the scale in place now (e.g. to clip them before ``step``) and
        record whether any is inf/NaN (for this optimizer only). Once per optimizer between ``update`` calls, and
        not after ``step``: ``RuntimeError`` otherwise (as PyTorch). float16 gradients are refused, as in
        PyTorch: unscaled in float16 they would underflow again; ``step`` unscales them into the optimizer's
        float32 copy instead."""
        if not self._enabled:
            return
        self._require_scale("unscale_")
        state = self._state(optimizer)
        if state[0] == _UNSCALED:
            raise RuntimeError("GradScaler.unscale_: unscale_() was already called on this optimizer since the last "
                               "update()")
        if state[0] == _STEPPED:
            raise RuntimeError("GradScaler.unscale_: unscale_() is being called after step() (call it before "
                               "step(), once per optimizer between update() calls)")
        grads = self._grads_of(optimizer)
        for _xp, g in grads:
            if dtype_name(g.dtype) == "float16":
                raise ValueError("GradScaler.unscale_: float16 gradients cannot be unscaled in place (they would "
                                 "underflow again); call scaler.step(optimizer), which unscales into the optimizer's "
                                 "float32 gradient copy")
        state[1] = self._unscale_all(grads)
        state[0] = _UNSCALED

    def _unscale_all(self, grads: list[tuple[Any, Any]]) -> Any:
        """Unscale ``grads`` in place; return a new 0-d float32 flag on the scale's device: 1 if any was inf/NaN.
        ``RuntimeError`` when there is no gradient to check (PyTorch: "No inf checks were recorded")."""
        if not grads:
            raise RuntimeError("GradScaler: the optimizer has no gradients to unscale and check (no parameter of "
                               "its groups has a .grad); run backward on the scaled loss before step()")
        xp = self._lazy_init(grads[0][1])  # the check that the scale and the gradients share a backend
        found_inf = xp.zeros((), dtype=xp.float32, device=_device(self._scale))
        inv = self._inv_scale()
        for _xp, g in grads:
            unscale_and_check_(g, inv, found_inf)
        return found_inf

    @staticmethod
    def _read_found_inf(found_inf: Any) -> bool:
        """The one host read of a step: whether this optimizer's gradients held an inf/NaN."""
        no_host_read_while_capturing("GradScaler.step (deciding whether to skip the step)")
        return bool(found_inf > 0)

    def step(self, optimizer: Any) -> Optional[bool]:
        """Unscale ``optimizer``'s gradients (unless ``unscale_`` did), check them for inf/NaN in the same pass and
        call ``optimizer.step()`` only when all of *its* gradients are finite (another optimizer's overflow does
        not skip this one). Returns ``True`` when the step ran, ``False`` when it was skipped (PyTorch returns the
        optimizer's ``step`` return value; xpnn's optimizers return ``None``). Once per optimizer between
        ``update`` calls: ``RuntimeError`` otherwise (as PyTorch)."""
        if not self._enabled:
            optimizer.step()
            return True
        self._require_scale("step")
        state = self._state(optimizer)
        if state[0] == _STEPPED:
            raise RuntimeError("GradScaler.step: step() was already called on this optimizer since the last "
                               "update()")
        if state[0] == _UNSCALED:
            ran = not self._read_found_inf(state[1])
            if ran:
                optimizer.step()
        else:
            ran = False

            def hook(grads: list[tuple[Any, Any]]) -> bool:
                nonlocal ran
                state[1] = self._unscale_all(grads)
                ran = not self._read_found_inf(state[1])
                return ran

            old, optimizer._grad_hook = optimizer._grad_hook, hook
            try:
                optimizer.step()
            finally:
                optimizer._grad_hook = old
        state[0] = _STEPPED
        return ran

    def update(self, new_scale: Optional[float] = None) -> None:
        """After an inf/NaN in any optimizer's gradients since the last update: ``scale *= backoff_factor`` and the
        growth count restarts; else after ``growth_interval`` clean updates in a row: ``scale *= growth_factor``
        (``torch._amp_update_scale_``). Computed on the device (no host read). ``new_scale`` sets the scale
        directly instead (the growth count is kept, as in PyTorch). Then every optimizer's state is cleared for the
        next iteration. ``RuntimeError`` when nothing was scaled, or (without ``new_scale``) when no ``step`` or
        ``unscale_`` checked any gradient since the last update (as PyTorch)."""
        if not self._enabled:
            return
        self._require_scale("update")
        xp = self._xp
        if new_scale is not None:
            self._scale[...] = float(new_scale)
        else:
            flags = [f for _stage, f in self._per_optimizer.values() if f is not None]
            if not flags:
                raise RuntimeError("GradScaler.update: no gradients were checked since the last update(); call "
                                   "scaler.step(optimizer) (or unscale_) for each optimizer first")
            found_sum = flags[0]
            for f in flags[1:]:
                found_sum = found_sum + f
            found = found_sum > 0
            zero = xp.zeros_like(self._tracker)
            tracker = xp.where(found, zero, self._tracker + 1)
            grow = tracker >= self._growth_interval
            grown = self._scale * self._growth_factor
            grown = xp.where(xp.isfinite(grown), grown, self._scale)  # never grow to inf
            self._scale[...] = xp.where(found, self._scale * self._backoff_factor,
                                        xp.where(grow, grown, self._scale))
            self._tracker[...] = xp.where(grow, zero, tracker)
        self._per_optimizer.clear()

    # --- inspection and state ---------------------------------------------------------------------------------
    def get_scale(self) -> float:
        """The current scale (a host read); ``init_scale`` before the first ``scale``, 1.0 when disabled."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def _get_growth_tracker(self) -> int:
        return self._init_tracker if self._tracker is None else int(self._tracker)

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's keys: ``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``,
        ``_growth_tracker`` (empty when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (saved from a disabled scaler?)")
        self._init_scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_tracker = int(state_dict["_growth_tracker"])
        if self._scale is not None:
            self._scale[...] = self._init_scale
            self._tracker[...] = self._init_tracker


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _describe(xp: Any) -> str:
    return "NumPy" if is_numpy_namespace(xp) else getattr(xp, "__name__", repr(xp))
