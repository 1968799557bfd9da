"""Kernel providers for ``xpnn._dispatch``: ``(op, xp, dtype) -> callable | None`` built over a kernel loader, and
``LAUNCHERS``, the one table from a registry row to the function that launches it."""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

from ..backend import dtype_name
from . import launch, launch_capturable, registry, transformer
from .loader import CupyLoader, KernelLoader


#: raw registry row -> launch function ``fn(loader, xp, *args, **kwargs)`` with the signature of the function it
#: overrides after ``loader`` and ``xp``, written by hand (``xpnn._cuda.launch``, ``xpnn._cuda.launch_capturable``);
#: an elementwise row's is generated (``launcher``)
LAUNCHERS: dict[Any, Callable[..., Any]] = {
    registry.LOGSUMEXP: launch.logsumexp,
    registry.SOFTMAX: launch.softmax,
    registry.LOG_SOFTMAX: launch.log_softmax,
    registry.CROSS_ENTROPY_WITH_GRAD: launch.cross_entropy_with_grad,
    registry.ADAM_UPDATE: launch.adam_update,
    registry.SGD_UPDATE: launch.sgd_update,
    registry.ADAGRAD_UPDATE: launch.adagrad_update,
    registry.RMSPROP_UPDATE: launch.rmsprop_update,
    registry.ADAM_UPDATE_MIXED: launch.adam_update_mixed,
    registry.IM2COL: launch.im2col,
    registry.COL2IM: launch.col2im,
    registry.MAX_POOL2D: launch.max_pool2d,
    registry.MAX_POOL2D_BACKWARD: launch.max_pool2d_backward,
    registry.ADAM_UPDATE_CAPTURABLE: launch_capturable.adam_update_capturable,
    registry.SGD_UPDATE_CAPTURABLE: launch_capturable.sgd_update_capturable,
    registry.ADAGRAD_UPDATE_CAPTURABLE: launch_capturable.adagrad_update_capturable,
    registry.RMSPROP_UPDATE_CAPTURABLE: launch_capturable.rmsprop_update_capturable,
    registry.AMP_UNSCALE_CHECK: launch_capturable.amp_unscale_check,
    registry.LSTM_CELL: launch.lstm_cell,
    registry.LSTM_CELL_BACKWARD: launch.lstm_cell_backward,
    registry.GRU_CELL: launch.gru_cell,
    registry.GRU_CELL_BACKWARD: launch.gru_cell_backward,
    registry.LAYER_NORM: transformer.layer_norm,
    registry.LAYER_NORM_BACKWARD: transformer.layer_norm_backward,
    registry.FLASH_ATTENTION: transformer.flash_attention,
    registry.FLASH_ATTENTION_BACKWARD: transformer.flash_attention_backward,
    registry.EMBEDDING_BACKWARD: transformer.embedding_backward,
}


def launcher(row: Any) -> Optional[Callable[..., Any]]:
    """The launch function of ``row``: ``LAUNCHERS[row]`` for a raw kernel, ``launch.elementwise`` bound to an
    elementwise row (declared on its op), ``None`` for a helper kernel."""
    if isinstance(row, registry.ElementwiseKernel):
        return functools.partial(launch.elementwise, row)
    return LAUNCHERS.get(row)


def make_provider(loader: KernelLoader) -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """A provider running the launch functions of the rows (``launcher``) on ``loader``'s kernels.

    ``op`` is a registry row's name (``xpnn._dispatch.lookup`` passes ``row.name``). It answers ``None`` for ops
    without a kernel and for dtypes a kernel's registry row does not list.
    """
    cache: dict[tuple[str, int, str], Callable[..., Any]] = {}

    def provider(op: str, xp: Any, dtype: Any) -> Optional[Callable[..., Any]]:
        try:
            name = dtype_name(dtype)
        except Exception:
            return None
        key = (op, id(xp), name)
        fn = cache.get(key)
        if fn is None:
            row = registry.row(op)
            launch_fn = launcher(row) if row is not None and name in row.dtypes else None
            if launch_fn is None:
                return None
            fn = cache[key] = functools.partial(launch_fn, loader, xp)
        return fn

    return provider


@functools.lru_cache(maxsize=1)
def cupy_provider() -> Callable[[str, Any, Any], Optional[Callable[..., Any]]]:
    """The provider for CuPy arrays (created on first lookup; kernels compile on their first call)."""
    return make_provider(CupyLoader())
