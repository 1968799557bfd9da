"""Pooling layers over (N, C, H, W) input or one unbatched (C, H, W) sample: ``MaxPool2d``, ``AvgPool2d``,
``AdaptiveAvgPool2d`` (PyTorch's arguments, defaults and shapes; no parameters). One ``forward`` each over
``xpnn.functional``'s ops."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from .. import functional as F
from ..functional import pooling as P
from ..functional.conv import IntPair, pair_arg
from .conv import check_image
from .explicit import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class MaxPool2d(Module):
    """Max over sliding windows, like ``torch.nn.MaxPool2d`` (``stride`` defaults to ``kernel_size``)."""

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                 dilation: IntPair = 1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = pair_arg(kernel_size, "kernel_size", "MaxPool2d")
        self.stride = self.kernel_size if stride is None else pair_arg(stride, "stride", "MaxPool2d")
        self.padding = pair_arg(padding, "padding", "MaxPool2d", minimum=0)
        self.dilation = pair_arg(dilation, "dilation", "MaxPool2d")
        self.ceil_mode = bool(ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")

    def forward(self, x: Any) -> Any:
        check_image(self, None, x, None, None, unbatched=True)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class AvgPool2d(Module):
    """Mean over sliding windows, like ``torch.nn.AvgPool2d`` (``stride`` defaults to ``kernel_size``)."""

    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = pair_arg(kernel_size, "kernel_size", "AvgPool2d")
        self.stride = self.kernel_size if stride is None else pair_arg(stride, "stride", "AvgPool2d")
        self.padding = pair_arg(padding, "padding", "AvgPool2d", minimum=0)
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}")

    def forward(self, x: Any) -> Any:
        check_image(self, None, x, None, None, unbatched=True)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """Average pooling to ``output_size`` (int, pair; None entries keep the input size), like
    ``torch.nn.AdaptiveAvgPool2d``."""

    def __init__(self, output_size: Union[int, None, Sequence[Optional[int]]]) -> None:
        super().__init__()
        P.adaptive_output_size((1, 1, 1, 1), output_size, "AdaptiveAvgPool2d")  # validates the argument
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size!r}"

    def forward(self, x: Any) -> Any:
        check_image(self, None, x, None, None, unbatched=True)
        return F.adaptive_avg_pool2d(x, self.output_size)
