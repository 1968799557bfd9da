"""``BatchNorm1d``: batch normalisation over the batch axis of (N, C) input (and the length axis of (N, C, L)
input), with running statistics."""
from __future__ import annotations

import math
from typing import Any, Optional

from .. import functional as F
from ..backend import BackendLike
from ..debug import get_debug
from .._tensor import Tensor
from ..errors import ShapeError
from .linear import check_features, check_input_dtype
from .explicit import Module
from .module import layer_namespace, not_an_array
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["BatchNorm1d"]


class BatchNorm1d(Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` per feature of x (N, C), or per channel of x (N, C, L)
    with the statistics over N and L, like ``torch.nn.BatchNorm1d``.

    Training uses the batch mean and (biased) variance and updates ``running_mean``/``running_var`` (the latter
    with the unbiased variance) by ``momentum`` (``None``: cumulative average); eval uses the running statistics
    (or batch statistics when ``track_running_stats=False``). weight starts at 1, bias at 0.
    """

    _ndims: tuple[int, ...] = (2, 3)  # the input's numbers of axes

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *,
                 backend: BackendLike = None, dtype: Any = None, seed: Any = None) -> None:
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"BatchNorm1d: num_features must be a positive integer, got {num_features!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        be, dt, _ = factory(backend, dtype, seed)
        xp = be.xp
        if affine:
            self.weight = Parameter(xp.ones((num_features,), dtype=dt))
            self.bias = Parameter(xp.zeros((num_features,), dtype=dt))
            FlatBuffer.pack(self.parameters())
        else:
            self.weight = None
            self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", xp.zeros((num_features,), dtype=dt))
            self.register_buffer("running_var", xp.ones((num_features,), dtype=dt))
            self.register_buffer("num_batches_tracked", xp.zeros((), dtype=xp.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _where(self) -> str:
        return f"BatchNorm1d({self.num_features})"

    def _check(self, x: Any) -> None:
        """The layer's check of x (N, num_features) or (N, num_features, L): errors name the layer."""
        ref = self.weight.data if self.weight is not None else self.running_mean
        d = x.data if isinstance(x, Tensor) else x
        dtype = ref.dtype if ref is not None else d.dtype
        if d.ndim == 2:
            check_features(self, None, x, self.num_features, dtype)  # (with its hint for a (C, N) layout)
            return
        if d.ndim != 3 or d.shape[1] != self.num_features:
            raise ShapeError(f"{self._where()}: expected input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L), got {tuple(d.shape)}")
        xp = layer_namespace(self, d) if ref is None else layer_namespace(self, d, ref)
        check_input_dtype(self, xp, d, dtype)

    def forward(self, x: Any) -> Any:
        """The op validates the arguments (the channels and dtype against ``weight``); a failed check is
        re-diagnosed by ``_check`` so that the error names the layer. ``_check`` runs first only where the op cannot
        see the rule: no ``weight``, the layer's 2-D or 3-D (BatchNorm2d: 4-D) input, debug mode. An empty batch
        gives an empty output and leaves the running statistics as they are (``torch.nn.BatchNorm1d``)."""
        try:
            checks = x.ndim not in self._ndims or self.weight is None or get_debug()
        except AttributeError:
            raise not_an_array(self, x) from None
        if checks:
            self._check(x)
        try:
            return self._normalize(x)
        except (ValueError, TypeError):  # (ShapeError, DTypeError, NamespaceMismatchError among them)
            self._check(x)
            raise

    def _normalize(self, x: Any) -> Any:
        batch_stats = self.training or not self.track_running_stats
        if batch_stats and math.prod(int(s) for i, s in enumerate(x.shape) if i != 1) == 1:  # (PyTorch's rule: 0 is
            # an empty batch)
            raise ShapeError(f"{self._where()}: expected more than 1 value per channel when training, "
                             f"got input of shape {tuple(x.shape)}")
        w, b = self.weight, self.bias
        if self.training and self.track_running_stats:
            return F.batch_norm(x, self.running_mean, self.running_var, w, b, training=True, momentum=self.momentum,
                                eps=self.eps, num_batches_tracked=self.num_batches_tracked)
        if batch_stats:
            return F.batch_norm(x, None, None, w, b, training=True, eps=self.eps)
        return F.batch_norm(x, self.running_mean, self.running_var, w, b, training=False, eps=self.eps)
