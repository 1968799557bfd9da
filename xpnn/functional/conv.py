"""2-D convolution (NCHW, PyTorch's ``torch.nn.functional.conv2d`` arguments and layout) as im2col + GEMM.

Shapes: x (N, C_in, H, W), weight (C_out, C_in // groups, kH, kW), bias (C_out,) -> y (N, C_out, OH, OW) with
``OH = (H + pad_top + pad_bottom - dilation_h * (kH - 1) - 1) // stride_h + 1`` (likewise OW).

The array-API reference builds the column tensor ``cols`` (N, C_in, kH, kW, OH, OW) from kH*kW strided slices of
the zero-padded input and multiplies it by the weight, one batched ``matmul`` over the groups:
``y[n, g] = W[g] (C_out/G, C_in/G*kH*kW) @ cols[n, g] (C_in/G*kH*kW, OH*OW)``. Backward:
``dW[g] = sum_n dy[n, g] @ cols[n, g].T`` (computed as ``(sum_n cols[n, g] @ dy[n, g].T).T``),
``dcols = W[g].T @ dy[n, g]`` scattered back by ``col2im`` (a sum of strided slice additions, one per kernel offset;
no ``add.at``), ``db = sum(dy, (0, 2, 3))``.
The column tensor is the only piece a backend changes: NumPy builds it with ``sliding_window_view`` (one copy),
CuPy with the ``im2col``/``col2im`` kernels in ``kernels/conv.cu``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

from .. import _dispatch
from .._cuda import registry
from ..autograd.op import Context, Op
from ..backend import dtype_name, namespace_of
from ..errors import DTypeError, ShapeError
from . import _checks
from .shape import reshape

IntPair = Union[int, Sequence[int]]

__all__ = ["conv2d", "conv2d_backward", "conv2d_geometry", "Conv2dGeometry", "im2col", "col2im", "pair_arg",
           "is_unbatched_image", "per_sample"]


def _index(value: Any) -> Optional[int]:
    """``value`` as a Python int if it is an integer (``operator.index``) and not a bool, else None."""
    if isinstance(value, bool):  # (NumPy's bool has no __index__)
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def pair_arg(value: IntPair, name: str, where: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints -> (h, w) of Python ints; each must be an int >= ``minimum`` (error names ``where``).
    Integer scalars of other types (``np.int64``, a 0-d integer array: anything with ``__index__``) count as ints, as
    in PyTorch; bools do not."""
    single = _index(value)
    if single is not None:
        out = (single, single)
    else:
        try:
            pair = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            pair = ()
        out = tuple(_index(v) for v in pair)  # type: ignore[assignment]
        if len(out) != 2 or None in out:
            raise ValueError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Conv2dGeometry:
    """Sizes of one sliding-window op over (N, C, H, W): kernel (kh, kw), stride, dilation, padding per side
    (top, bottom, left, right; bottom/right may exceed the zero padding the op asked for when ceil_mode adds a
    partial window), output (oh, ow) and the padded input size the windows reach (hp, wp)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    oh: int
    ow: int

    @property
    def hp(self) -> int:
        return self.h + self.pt + self.pb

    @property
    def wp(self) -> int:
        return self.w + self.pl + self.pr

    @property
    def offsets(self) -> int:
        return self.kh * self.kw

    def window(self, i: int, j: int) -> tuple[slice, slice]:
        """The strided slices of the padded input that kernel offset (i, j) sees for every output position."""
        h0, w0 = i * self.dh, j * self.dw
        return (slice(h0, h0 + self.sh * (self.oh - 1) + 1, self.sh),
                slice(w0, w0 + self.sw * (self.ow - 1) + 1, self.sw))


def conv2d_geometry(x_shape: Sequence[int], w_shape: Sequence[int], stride: IntPair = 1,
                    padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1,
                    where: str = "conv2d") -> Conv2dGeometry:
    """Validate the arguments of ``conv2d`` against the input and weight shapes; return the geometry."""
    if len(x_shape) != 4:
        raise ShapeError(f"{where}: expected 4-D input (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ShapeError(f"{where}: expected 4-D weight (C_out, C_in/groups, kH, kW), got shape {tuple(w_shape)}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive integer, got {groups!r}")
    n, c, h, w = (int(s) for s in x_shape)
    c_out, c_in_g, kh, kw = (int(s) for s in w_shape)
    if c_out % groups:
        raise ValueError(f"{where}: out_channels ({c_out}) must be divisible by groups ({groups})")
    if c != c_in_g * groups:
        raise ShapeError(f"{where}: expected input with {c_in_g * groups} channels (weight {tuple(w_shape)}, "
                         f"groups={groups}), got input of shape {tuple(x_shape)}")
    if min(kh, kw) < 1:
        raise ShapeError(f"{where}: empty kernel in weight of shape {tuple(w_shape)}")
    sh, sw = pair_arg(stride, "stride", where)
    dh, dw = pair_arg(dilation, "dilation", where)
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if isinstance(padding, str):
        if padding == "valid":
            pt = pb = pl = pr = 0
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"{where}: padding='same' is not supported for strided convolutions "
                                 f"(stride={stride!r}), as in PyTorch")
            pt, pl = (ekh - 1) // 2, (ekw - 1) // 2  # the odd pixel goes to the bottom/right, as in PyTorch
            pb, pr = ekh - 1 - pt, ekw - 1 - pl
        else:
            raise ValueError(f"{where}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    else:
        pt, pl = pair_arg(padding, "padding", where, minimum=0)
        pb, pr = pt, pl
    hp, wp = h + pt + pb, w + pl + pr
    if hp < ekh or wp < ekw:
        raise ShapeError(f"{where}: input of shape {tuple(x_shape)} (padded to {hp}x{wp}) is smaller than the "
                         f"kernel ({ekh}x{ekw} with dilation)")
    return Conv2dGeometry(n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pb, pl, pr,
                          (hp - ekh) // sh + 1, (wp - ekw) // sw + 1)


def _pad(xp: Any, x: Any, g: Conv2dGeometry, value: float = 0.0) -> Any:
    """x (N, C, H, W) inside a (N, C, hp, wp) array filled with ``value``."""
    if g.pt == g.pb == g.pl == g.pr == 0:
        return x
    out = xp.full((g.n, g.c, g.hp, g.wp), value, dtype=x.dtype)
    out[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x
    return out


def im2col(x: Any, g: Conv2dGeometry, pad_value: float = 0.0) -> Any:
    """x (N, C, H, W) -> cols (N, C, kh, kw, oh, ow): ``cols[n, c, i, j, p, q] =
    xpad[n, c, p*sh + i*dh, q*sw + j*dw]`` (``xpad``: x padded with ``pad_value``). Kernel / NumPy overrides first."""
    xp = namespace_of(x, where="im2col")
    fast = _dispatch.lookup(registry.IM2COL, xp, x.dtype) if pad_value == 0.0 else None
    if fast is not None:
        out = fast(x, g)
        if out is not NotImplemented:
            return out
    xpad = _pad(xp, x, g, pad_value)
    slices = [xpad[(slice(None), slice(None)) + g.window(i, j)] for i in range(g.kh) for j in range(g.kw)]
    return xp.reshape(xp.stack(slices, axis=2), (g.n, g.c, g.kh, g.kw, g.oh, g.ow))


def col2im(cols: Any, g: Conv2dGeometry) -> Any:
    """Adjoint of ``im2col``: cols (N, C, kh, kw, oh, ow) -> dx (N, C, H, W), each column entry added to the input
    pixel it was read from (padding dropped). One strided slice addition per kernel offset."""
    xp = namespace_of(cols, where="col2im")
    fast = _dispatch.lookup(registry.COL2IM, xp, cols.dtype)
    if fast is not None:
        out = fast(cols, g)
        if out is not NotImplemented:
            return out
    dxp = xp.zeros((g.n, g.c, g.hp, g.wp), dtype=cols.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            dxp[(slice(None), slice(None)) + g.window(i, j)] += cols[:, :, i, j, :, :]
    if g.pt == g.pb == g.pl == g.pr == 0:
        return dxp
    return dxp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]


def _check(x: Any, weight: Any, bias: Any, where: str) -> Any:
    xp = namespace_of(x, weight, bias, where=where)
    _checks.floating(xp, x, where)
    if x.dtype != weight.dtype:
        raise DTypeError(f"{where}: input dtype {dtype_name(x.dtype)} differs from weight dtype "
                         f"{dtype_name(weight.dtype)}")
    if bias is not None:
        if tuple(bias.shape) != (weight.shape[0],):
            raise ShapeError(f"{where}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
        _checks.same_dtype(weight, bias, where, ("weight", "bias"))
    return xp


def conv2d_forward(x: Any, weight: Any, bias: Any, g: Conv2dGeometry, groups: int,
                   im2col_fn: Callable[[Any, Conv2dGeometry], Any] = im2col) -> tuple[Any, Any]:
    """(y, cols) for validated arguments: cols (N, groups, C_in/groups*kh*kw, oh*ow) is what backward needs.
    ``im2col_fn``: how the columns are built (the NumPy override passes its ``sliding_window_view`` version)."""
    xp = namespace_of(x, weight, bias, where="conv2d")
    c_out = int(weight.shape[0])
    cols = xp.reshape(im2col_fn(x, g), (g.n, groups, g.c // groups * g.offsets, g.oh * g.ow))
    w3 = xp.reshape(weight, (groups, c_out // groups, g.c // groups * g.offsets))
    y = xp.reshape(xp.matmul(w3, cols), (g.n, c_out, g.oh, g.ow))
    if bias is not None:
        y += xp.reshape(bias, (1, c_out, 1, 1))
    return y, cols


def no_higher_order(ctx: Context, op: str) -> None:
    """The backwards of the convolution and pooling ops are array code, not recorded ops: refuse ``create_graph``."""
    if ctx.create_graph:
        raise NotImplementedError(f"{op}: higher-order gradients (create_graph=True) are not supported; its "
                                  "backward runs on arrays")


class Conv2d(Op):
    """``conv2d`` declared once: forward saves x, weight and the column tensor; backward is ``conv2d_backward``.
    NumPy arrays take the override in ``conv_numpy`` (``sliding_window_view`` columns); CuPy arrays build the
    columns with the ``im2col``/``col2im`` kernels (looked up inside ``im2col``/``col2im``)."""

    name = "conv2d"

    @staticmethod
    def check(x: Any, weight: Any, bias: Any = None, **params: Any) -> None:
        _check(x, weight, bias, "conv2d")

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any = None, *, stride: IntPair = 1,
                padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1,
                im2col_fn: Callable[[Any, Conv2dGeometry], Any] = im2col) -> Any:
        g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups)
        y, cols = conv2d_forward(x, weight, bias, g, groups, im2col_fn)
        ctx.save_for_backward(x, weight)
        ctx.cols, ctx.params, ctx.has_bias = cols, (stride, padding, dilation, groups), bias is not None
        return y

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        no_higher_order(ctx, "conv2d")
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = conv2d_backward(x, weight, dy, *ctx.params, cols=ctx.cols, need_input_grad=need[0],
                                     need_bias_grad=ctx.has_bias and len(need) > 2 and need[2])
        return dx, (dw if need[1] else None), db

    @staticmethod
    def onnx(g: Any, x: str, weight: str, bias: Optional[str] = None, *, stride: IntPair = 1,
             padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1, **_: Any) -> str:
        """``Conv`` with explicit pads (``"same"``: the odd pixel at the bottom/right, as the geometry says)."""
        geo = conv2d_geometry(g.shape(x), g.shape(weight), stride, padding, dilation, groups)
        return g.op("Conv", x, weight, bias, kernel_shape=[geo.kh, geo.kw], strides=[geo.sh, geo.sw],
                    dilations=[geo.dh, geo.dw], pads=[geo.pt, geo.pl, geo.pb, geo.pr], group=groups)


def is_unbatched_image(x: Any, where: str) -> bool:
    """True for a 3-D (C, H, W) sample, which ``conv2d`` and the 2-D pools take as PyTorch does (a batch of one,
    the batch axis dropped from the output); False for 4-D (N, C, H, W) and for a non-array (the op's own check
    names it). Raises ShapeError for another rank."""
    ndim = getattr(x, "ndim", None)
    if ndim == 3:
        return True
    if ndim is not None and ndim != 4:
        raise ShapeError(f"{where}: expected 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    return False


def per_sample(apply: Callable[..., Any], x: Any, *args: Any, **kwargs: Any) -> Any:
    """``apply`` (an op over (N, C, H, W)) on one (C, H, W) sample: x viewed as (1, C, H, W), the output's batch
    axis dropped; both reshapes are recorded on Tensors, so gradients come back in x's shape."""
    y = apply(reshape(x, (1, *tuple(x.shape))), *args, **kwargs)
    return reshape(y, tuple(y.shape[1:]))


def conv2d(x: Any, weight: Any, bias: Optional[Any] = None, stride: IntPair = 1,
           padding: Union[IntPair, str] = 0, dilation: IntPair = 1, groups: int = 1) -> Any:
    """2-D cross-correlation like ``torch.nn.functional.conv2d``: x (N, C_in, H, W), weight
    (C_out, C_in/groups, kH, kW), bias (C_out,) or None -> (N, C_out, OH, OW); one unbatched sample (C_in, H, W)
    -> (C_out, OH, OW). ``padding``: int, pair, ``"valid"`` or ``"same"`` (stride 1 only). Arrays or Tensors (then
    recorded). Raises ShapeError/DTypeError/ValueError naming the mismatch."""
    if is_unbatched_image(x, "conv2d"):
        return per_sample(Conv2d.apply, x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                          groups=groups)
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv2d_backward(x: Any, weight: Any, dy: Any, stride: IntPair = 1, padding: Union[IntPair, str] = 0,
                    dilation: IntPair = 1, groups: int = 1, *, cols: Any = None, need_input_grad: bool = True,
                    need_bias_grad: bool = True) -> tuple[Any, Any, Any]:
    """``(dx, dweight, dbias)`` of ``conv2d`` for output gradient ``dy`` (N, C_out, OH, OW). ``cols``: the column
    tensor of the forward call (recomputed from ``x`` when None). ``dx``/``dbias`` are None when not needed."""
    xp = _check(x, weight, None, "conv2d_backward")
    g = conv2d_geometry(x.shape, weight.shape, stride, padding, dilation, groups, where="conv2d_backward")
    c_out = int(weight.shape[0])
    if tuple(dy.shape) != (g.n, c_out, g.oh, g.ow):
        raise ShapeError(f"conv2d_backward: dy must have shape {(g.n, c_out, g.oh, g.ow)}, got {tuple(dy.shape)}")
    _checks.same_dtype(x, dy, "conv2d_backward", ("input", "dy"))
    kg = g.c // groups * g.offsets
    if cols is None:
        cols = xp.reshape(im2col(x, g), (g.n, groups, kg, g.oh * g.ow))
    dy4 = xp.reshape(dy, (g.n, groups, c_out // groups, g.oh * g.ow))
    # dW = sum_n dy[n] @ cols[n]^T, computed transposed (sum_n cols[n] @ dy[n]^T): a tall (kg, C_out/G) product
    # per sample, which OpenBLAS runs 1.2-1.5x faster than the wide one on conv shapes (LeNet, 3x3 64->64)
    dw_t = xp.sum(xp.matmul(cols, xp.matrix_transpose(dy4)), axis=0)  # (G, kg, C_out/G)
    dw = xp.reshape(xp.matrix_transpose(dw_t), tuple(weight.shape))
    db = xp.sum(dy, axis=(0, 2, 3)) if need_bias_grad else None
    dx = None
    if need_input_grad:
        w3 = xp.reshape(weight, (groups, c_out // groups, kg))
        dcols = xp.matmul(xp.matrix_transpose(w3), dy4)  # (N, G, kg, L)
        dx = col2im(xp.reshape(dcols, (g.n, g.c, g.kh, g.kw, g.oh, g.ow)), g)
    return dx, dw, db

