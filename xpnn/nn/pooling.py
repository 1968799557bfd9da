"""Pooling layers over (N, C, H, W) input: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (PyTorch's
arguments and defaults; no parameters)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from ..functional import pooling as P
from ..functional.conv import IntPair, pair_arg
from .conv import check_image
from .linear import check_grad_output
from .module import Module, layer_namespace

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class _Pool(Module):
    def _input(self, x: Any) -> Any:
        xp = layer_namespace(self, x)
        check_image(self, xp, x, None, None)
        return xp

    def _grad_input(self, dy: Any) -> tuple[Any, tuple[int, ...]]:
        if self._cache is None:
            raise self._no_forward()
        shape, out_shape = self._cache[0], self._cache[1]
        xp = layer_namespace(self, dy)
        check_grad_output(self, xp, dy, out_shape, self._cache[2])
        return xp, shape

    def _moved(self) -> None:
        self._cache = None


class MaxPool2d(_Pool):
    """Max over sliding windows, like ``torch.nn.MaxPool2d`` (``stride`` defaults to ``kernel_size``)."""

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                 dilation: IntPair = 1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = pair_arg(kernel_size, "kernel_size", "MaxPool2d")
        self.stride = self.kernel_size if stride is None else pair_arg(stride, "stride", "MaxPool2d")
        self.padding = pair_arg(padding, "padding", "MaxPool2d", minimum=0)
        self.dilation = pair_arg(dilation, "dilation", "MaxPool2d")
        self.ceil_mode = bool(ceil_mode)
        self._cache: Any = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def _args(self) -> tuple[Any, ...]:
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode

    def forward(self, x: Any) -> Any:
        self._input(x)
        y, arg = P.max_pool2d_with_argmax(x, *self._args())
        self._cache = (tuple(x.shape), tuple(y.shape), x.dtype, arg)
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        _, shape = self._grad_input(dy)
        return P.max_pool2d_backward(self._cache[3], dy, shape, *self._args()) if need_input_grad else None


class AvgPool2d(_Pool):
    """Mean over sliding windows, like ``torch.nn.AvgPool2d`` (``stride`` defaults to ``kernel_size``)."""

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = pair_arg(kernel_size, "kernel_size", "AvgPool2d")
        self.stride = self.kernel_size if stride is None else pair_arg(stride, "stride", "AvgPool2d")
        self.padding = pair_arg(padding, "padding", "AvgPool2d", minimum=0)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self._cache: Any = None

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}")

    def _args(self) -> tuple[Any, ...]:
        return self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad

    def forward(self, x: Any) -> Any:
        self._input(x)
        y = P.avg_pool2d(x, *self._args())
        self._cache = (tuple(x.shape), tuple(y.shape), x.dtype)
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        _, shape = self._grad_input(dy)
        return P.avg_pool2d_backward(dy, shape, *self._args()) if need_input_grad else None


class AdaptiveAvgPool2d(_Pool):
    """Average pooling to ``output_size`` (int, pair; None entries keep the input size), like
    ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size: Union[int, None, Sequence[Optional[int]]]) -> None:
        super().__init__()
        P.adaptive_output_size((1, 1, 1, 1), output_size, "AdaptiveAvgPool2d")  # validates the argument
        self.output_size = output_size
        self._cache: Any = None

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"

    def forward(self, x: Any) -> Any:
        self._input(x)
        y = P.adaptive_avg_pool2d(x, self.output_size)
        self._cache = (tuple(x.shape), tuple(y.shape), x.dtype)
        return y

    def backward(self, dy: Any, need_input_grad: bool = True) -> Any:
        _, shape = self._grad_input(dy)
        return P.adaptive_avg_pool2d_backward(dy, shape, self.output_size) if need_input_grad else None
