"""``BatchNorm1d``: batch normalisation over the batch axis of (N, C) input, with running statistics."""
from __future__ import annotations

from typing import Any, Optional

from ..backend import BackendLike
from ..errors import ShapeError
from ..functional.layers import batch_norm_backward, batch_norm_eval, batch_norm_train
from .linear import check_features, check_grad_output
from .module import Module, layer_namespace
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["BatchNorm1d"]


class BatchNorm1d(Module):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` per feature of x (N, C), like ``torch.nn.BatchNorm1d``.

    Training uses the batch mean and (biased) variance and updates ``running_mean``/``running_var`` (the latter
    with the unbiased variance) by ``momentum`` (``None``: cumulative average); eval uses the running statistics
    (or batch statistics when ``track_running_stats=False``). weight starts at 1, bias at 0.
    """

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
        self._cache: Any = None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _where(self) -> str:
        return f"BatchNorm1d({self.num_features})"

    def forward(self, x: Any) -> Any:
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        ref = w if w is not None else self.running_mean
        xp = layer_namespace(self, x, ref)
        check_features(self, xp, x, self.num_features, ref.dtype if ref is not None else x.dtype)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            if x.shape[0] < 2:
                raise ShapeError(f"{self._where()}: expected more than 1 value per channel when training, "
                                 f"got input of shape {tuple(x.shape)}")
            y, xhat, invstd, mean, var = batch_norm_train(x, w, b, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(xp, mean, var, x.shape[0])
        else:
            y, xhat, invstd = batch_norm_eval(x, self.running_mean, self.running_var, w, b, self.eps)
        self._cache = (xhat, invstd, batch_stats)
        return y

    def _update_running(self, xp: Any, mean: Any, var: Any, n: int) -> None:
        nbt = self.num_batches_tracked
        nbt += 1
        f = 1.0 / float(nbt) if self.momentum is None else float(self.momentum)
        rm, rv = self.running_mean, self.running_var
        rm *= 1.0 - f
        rm += f * mean
        rv *= 1.0 - f
        rv += (f * n / (n - 1)) * var  # unbiased variance, like PyTorch

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        if self._cache is None:
            raise self._no_forward()
        xhat, invstd, batch_stats = self._cache
        w = self.weight.data if self.weight is not None else None
        xp = layer_namespace(self, dy, xhat)
        check_grad_output(self, xp, dy, tuple(xhat.shape), xhat.dtype)
        dx, dw, db = batch_norm_backward(dy, xhat, invstd, w, batch_stats)
        if self.weight is not None:
            g = self.weight.grad
            g += dw
            gb = self.bias.grad
            gb += db
        return dx if need_input_grad else None

    def _moved(self) -> None:
        self._cache = None
