"""One row per CUDA kernel: which op it serves, where its source is, its entry point and its dtypes.

Everything else is generated from these rows: the template instantiations compiled into each RawModule
(``name_expressions``), the dispatch table of ``xpnn._cuda.provider``, the offline compile checks and the CPU shim
build in ``tests/shim``. Adding a kernel = one source (or one elementwise body) + one row here.
"""
from __future__ import annotations

from dataclasses import dataclass

# storage dtype -> (C type in name expressions, accumulation dtype)
C_TYPES = {"float16": "__half", "float32": "float", "float64": "double"}
ACC_DTYPES = {"float16": "float32", "float32": "float32", "float64": "float64"}

ELEMENTWISE_PREAMBLE = "activation_backward.cuh"


@dataclass(frozen=True)
class RawKernel:
    """A ``__global__`` template in a ``.cu`` file, compiled through ``cupy.RawModule``.

    ``entry`` is a name template with ``{T}`` (storage C type) and ``{A}`` (accumulation C type).
    ``cooperative``: the kernel synchronises its block (``__syncthreads``/shuffles); the CPU shim runs such blocks
    as fibers and others as a plain loop over threads (and fails if a non-cooperative kernel synchronises).
    ``helper``: launched by another op's launcher, not an op itself (no provider entry); an ``entry`` without
    ``{T}``/``{A}`` is one kernel shared by every dtype.
    ``launch``: the function that serves the op (``launch.OPS`` is built from it): a name in ``xpnn._cuda.launch``,
    or ``"module.name"`` for one in another module of ``xpnn._cuda`` (``"capturable.adam_update_capturable"``);
    empty for helpers.
    """

    name: str
    source: str
    entry: str
    dtypes: tuple[str, ...]
    cooperative: bool = False
    helper: bool = False
    launch: str = ""

    def __post_init__(self) -> None:
        if not self.helper and not self.launch:
            raise ValueError(f"registry row {self.name!r}: an op row must name its launch function (launch=...)")

    def name_expression(self, dtype: str) -> str:
        return self.entry.format(T=C_TYPES[dtype], A=C_TYPES[ACC_DTYPES[dtype]])


@dataclass(frozen=True)
class ElementwiseKernel:
    """A ``cupy.ElementwiseKernel``: CuPy's parameter lists and a loop body calling a function from
    ``kernels/activation_backward.cuh`` (the preamble). ``A`` is the accumulation type inside the body.
    ``launch``: the function of ``xpnn._cuda.launch`` that serves the op."""

    name: str
    in_params: str
    out_params: str
    operation: str
    dtypes: tuple[str, ...]
    launch: str

    @property
    def body(self) -> str:
        return "typedef typename xpnn_acc<T>::type A; " + self.operation

    @property
    def kernel_name(self) -> str:
        # not "xpnn_<op>": that is the preamble's device function, which the kernel would then overload
        return "xpnn_" + self.name + "_kernel"


_FLOATS = ("float16", "float32", "float64")
_FLOATS_NO_HALF = ("float32", "float64")  # optimizers keep float32 master copies of float16 parameters

ELEMENTWISE: tuple[ElementwiseKernel, ...] = (
    ElementwiseKernel("sigmoid_backward", "T y, T dy", "T dx",
                      "dx = (T)xpnn_sigmoid_backward((A)y, (A)dy);", _FLOATS, "sigmoid_backward"),
    ElementwiseKernel("tanh_backward", "T y, T dy", "T dx",
                      "dx = (T)xpnn_tanh_backward((A)y, (A)dy);", _FLOATS, "tanh_backward"),
    ElementwiseKernel("relu_backward", "T x, T dy", "T dx",
                      "dx = (T)xpnn_relu_backward((A)x, (A)dy);", _FLOATS, "relu_backward"),
    ElementwiseKernel("leaky_relu_backward", "T x, T dy, float64 negative_slope", "T dx",
                      "dx = (T)xpnn_leaky_relu_backward((A)x, (A)dy, (A)negative_slope);", _FLOATS,
                      "leaky_relu_backward"),
    ElementwiseKernel("elu_backward", "T x, T dy, float64 alpha", "T dx",
                      "dx = (T)xpnn_elu_backward((A)x, (A)dy, (A)alpha);", _FLOATS, "elu_backward"),
    ElementwiseKernel("selu_backward", "T x, T dy", "T dx",
                      "dx = (T)xpnn_selu_backward((A)x, (A)dy);", _FLOATS, "selu_backward"),
)

RAW: tuple[RawKernel, ...] = (
    RawKernel("logsumexp", "softmax_cross_entropy.cu", "logsumexp_rows<{T}, {A}>", _FLOATS, cooperative=True,
              launch="logsumexp"),
    RawKernel("softmax", "softmax_cross_entropy.cu", "softmax_rows<{T}, {A}>", _FLOATS, cooperative=True,
              launch="softmax"),
    RawKernel("log_softmax", "softmax_cross_entropy.cu", "log_softmax_rows<{T}, {A}>", _FLOATS, cooperative=True,
              launch="log_softmax"),
    RawKernel("cross_entropy_count", "softmax_cross_entropy.cu", "cross_entropy_count", _FLOATS, cooperative=True,
              helper=True),
    RawKernel("cross_entropy_with_grad", "softmax_cross_entropy.cu", "cross_entropy_fwd_bwd<{T}, {A}>", _FLOATS,
              cooperative=True, launch="cross_entropy_with_grad"),
    RawKernel("adam_update", "optimizers.cu", "adam_update<{T}>", _FLOATS_NO_HALF, launch="adam_update"),
    RawKernel("sgd_update", "optimizers.cu", "sgd_update<{T}>", _FLOATS_NO_HALF, launch="sgd_update"),
    RawKernel("adagrad_update", "optimizers.cu", "adagrad_update<{T}>", _FLOATS_NO_HALF, launch="adagrad_update"),
    RawKernel("rmsprop_update", "optimizers.cu", "rmsprop_update<{T}>", _FLOATS_NO_HALF, launch="rmsprop_update"),
    # few wide rows split across blocks (launched by the softmax/log_softmax/logsumexp launchers)
    RawKernel("row_chunk_max_sum", "row_split.cu", "row_chunk_max_sum<{T}, {A}>", _FLOATS, cooperative=True,
              helper=True),
    RawKernel("row_chunk_finish", "row_split.cu", "row_chunk_finish<{T}, {A}>", _FLOATS, cooperative=True,
              helper=True),
    # float16 parameters with float32 master copies (xpnn.functional.mixed_precision): keyed by the param dtype
    RawKernel("adam_update_mixed", "adam_mixed.cu", "adam_update_mixed<{T}>", ("float16",),
              launch="adam_update_mixed"),
    # convolution / pooling (kernels/conv.cu); the GEMMs of conv2d run through CuPy's matmul (cuBLAS)
    RawKernel("im2col", "conv.cu", "im2col<{T}>", _FLOATS, launch="im2col"),
    RawKernel("col2im", "conv.cu", "col2im<{T}, {A}>", _FLOATS, launch="col2im"),
    RawKernel("max_pool2d", "conv.cu", "max_pool2d_fwd<{T}, {A}>", _FLOATS, launch="max_pool2d"),
    RawKernel("max_pool2d_backward", "conv.cu", "max_pool2d_bwd<{T}, {A}>", _FLOATS, launch="max_pool2d_backward"),
    # issue 13: step count / lr / loss scale read from device memory (capturable in CUDA graphs)
    RawKernel("capturable_step_scalars", "capturable.cu", "capturable_step_scalars<{T}>", _FLOATS_NO_HALF,
              helper=True),  # launched before the Adam / Adagrad updates below
    RawKernel("adam_update_capturable", "capturable.cu", "adam_update_capturable<{T}>", _FLOATS_NO_HALF,
              launch="capturable.adam_update_capturable"),
    RawKernel("sgd_update_capturable", "capturable.cu", "sgd_update_capturable<{T}>", _FLOATS_NO_HALF,
              launch="capturable.sgd_update_capturable"),
    RawKernel("adagrad_update_capturable", "capturable.cu", "adagrad_update_capturable<{T}>", _FLOATS_NO_HALF,
              launch="capturable.adagrad_update_capturable"),
    RawKernel("rmsprop_update_capturable", "capturable.cu", "rmsprop_update_capturable<{T}>", _FLOATS_NO_HALF,
              launch="capturable.rmsprop_update_capturable"),
    RawKernel("amp_unscale_check", "capturable.cu", "amp_unscale_check<{T}>", _FLOATS,
              launch="capturable.amp_unscale_check"),
)

RAW_BY_NAME = {row.name: row for row in RAW}
ELEMENTWISE_BY_NAME = {row.name: row for row in ELEMENTWISE}


def sources() -> tuple[str, ...]:
    """The ``.cu`` files that hold RawModule kernels, in registry order."""
    return tuple(dict.fromkeys(row.source for row in RAW))


def name_expressions(source: str) -> tuple[str, ...]:
    """Every kernel (template instantiation) compiled into the RawModule of ``source``, each once."""
    return tuple(dict.fromkeys(row.name_expression(dt) for row in RAW if row.source == source for dt in row.dtypes))


def ops() -> tuple[str, ...]:
    """The ops served by kernels (helpers excluded)."""
    return tuple(row.name for row in RAW + ELEMENTWISE if not getattr(row, "helper", False))


def launchers() -> dict[str, str]:
    """op -> name of its launch function in ``xpnn._cuda.launch`` (helpers excluded), from the rows."""
    return {row.name: row.launch for row in RAW + ELEMENTWISE if not getattr(row, "helper", False)}


def supports(op: str, dtype: str) -> bool:
    row = RAW_BY_NAME.get(op) or ELEMENTWISE_BY_NAME.get(op)
    return row is not None and not getattr(row, "helper", False) and dtype in row.dtypes
