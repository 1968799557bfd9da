"""``Conv2d``: 2-D convolution over (N, C, H, W) input with PyTorch's arguments, state_dict names and init."""
from __future__ import annotations

import math
from typing import Any, Union

import numpy as np

from .. import init
from ..backend import BackendLike, dtype_name
from ..debug import check_finite, get_debug
from ..errors import DTypeError, ShapeError
from .. import functional as F
from .._tensor import Tensor
from ..functional.conv import IntPair, conv2d_geometry, pair_arg
from .explicit import Module
from .module import layer_namespace, not_an_array
from .parameter import FlatBuffer, Parameter, factory

__all__ = ["Conv2d", "check_image"]


def check_image(module: Module, xp: Any, x: Any, channels: Any, dtype: Any, unbatched: bool = False) -> None:
    """Shared input check of the image layers: 4-D (N, C, H, W) (array or Tensor) with ``channels`` channels
    (None: any) of ``dtype`` (None: any floating dtype); ``unbatched``: one (C, H, W) sample is accepted too (as
    ``torch.nn.Conv2d`` and the 2-D pools do). Errors name the layer, the expected and the given shape/dtype.
    ``xp`` None: found from x and the layer's parameters."""
    if isinstance(x, Tensor):
        x = x.data
    if xp is None:
        ref = module._ref_array()
        xp = layer_namespace(module, x) if ref is None else layer_namespace(module, x, ref)
    c = channels if channels is not None else "C"
    want = f"(N, {c}, H, W)"
    if x.ndim != 4 and not (unbatched and x.ndim == 3):
        ranks = f"3-D ({c}, H, W) or 4-D {want} input" if unbatched else f"4-D input {want}"
        raise ShapeError(f"{module._where()}: expected {ranks}, got shape {tuple(x.shape)}")
    if x.ndim == 3:
        want = f"({c}, H, W)"
    if channels is not None and x.shape[-3] != channels:
        raise ShapeError(f"{module._where()}: expected input {want} with {channels} channels, "
                         f"got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        want_dt, got = dtype_name(dtype), dtype_name(x.dtype)
        raise DTypeError(f"{module._where()}: expected input of dtype {want_dt} (the parameters' dtype), got {got}; "
                         f"cast the input or build the model with dtype='{got}'")
    if dtype is None and not xp.isdtype(x.dtype, "real floating"):
        raise DTypeError(f"{module._where()}: expected floating input, got dtype {dtype_name(x.dtype)}")
    if get_debug():
        check_finite(xp, x, module._where())


class Conv2d(Module):
    """2-D cross-correlation like ``torch.nn.Conv2d``: x (N, in_channels, H, W) -> (N, out_channels, OH, OW); one
    unbatched sample (in_channels, H, W) -> (out_channels, OH, OW).

    weight (out_channels, in_channels // groups, kH, kW) and bias (out_channels,) are initialised as PyTorch does
    (``kaiming_uniform(a=sqrt(5))``, bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels/groups*kH*kW)
    from a NumPy Generator seeded by ``seed``. ``padding``: int, pair, ``"valid"`` or ``"same"``; only
    ``padding_mode="zeros"`` is supported.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, backend: BackendLike = None, dtype: Any = None,
                 seed: Any = None) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Conv2d: {name} must be a positive integer, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                             f"divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"Conv2d: padding_mode {padding_mode!r} is not supported (only 'zeros'); "
                             "pad the input yourself for 'reflect', 'replicate' or 'circular'")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair_arg(kernel_size, "kernel_size", "Conv2d")
        self.stride = pair_arg(stride, "stride", "Conv2d")
        self.dilation = pair_arg(dilation, "dilation", "Conv2d")
        self.padding: Union[tuple[int, int], str] = (
            padding if isinstance(padding, str) else pair_arg(padding, "padding", "Conv2d", minimum=0))
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided convolutions")
        self.padding_mode = padding_mode
        be, dt, rng = factory(backend, dtype, seed)
        kh, kw = self.kernel_size
        w = np.empty((out_channels, in_channels // groups, kh, kw))
        init.kaiming_uniform(w, a=math.sqrt(5), seed=rng)
        self.weight = Parameter(be.asarray(w, dtype=dt))
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt(in_channels // groups * kh * kw)
            self.bias = Parameter(be.asarray(rng.uniform(-bound, bound, size=(out_channels,)), dtype=dt))
        FlatBuffer.pack(self.parameters())

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def forward(self, x: Any) -> Any:
        """The op validates the arguments; a failed check is re-diagnosed here so that the error names the layer.
        In debug mode the finite check runs first. An empty batch (N = 0) gives an empty output, and one (C, H, W)
        sample a (C_out, OH, OW) output, as in PyTorch."""
        w = self.weight.data
        try:
            checks = (x.ndim != 4 and x.ndim != 3) or get_debug()
        except AttributeError:
            raise not_an_array(self, x) from None
        if checks:
            check_image(self, None, x, self.in_channels, w.dtype, unbatched=True)
        try:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        except (ValueError, TypeError):  # (ShapeError, DTypeError, NamespaceMismatchError among them)
            check_image(self, None, x, self.in_channels, w.dtype, unbatched=True)
            shape = tuple(x.shape) if x.ndim == 4 else (1, *tuple(x.shape))
            conv2d_geometry(shape, w.shape, self.stride, self.padding, self.dilation, self.groups,
                            where=self._where())
            raise
