"""One row per CUDA kernel: which op it serves, where its source is, its entry point and its dtypes.

A raw kernel's row is a module constant here that the op it serves names (``_dispatch.lookup(registry.ADAM_UPDATE,
...)`` in a function); an elementwise kernel's row is declared on the op itself
(``kernel = ElementwiseKernel("softplus_backward", ...)`` in ``xpnn/functional/activations.py``) and listed by
``elementwise()`` once that op is defined. Either way go-to-definition leads from the op to its row. Everything else
is generated from the rows: the template instantiations compiled into each RawModule (``name_expressions``), the
elementwise kernels and their launcher, the offline compile checks and the CPU shim build in ``tests/shim``.
Adding an elementwise kernel = one device function in ``kernels/activation_backward.cuh`` + the row on its op; a raw
kernel = its ``.cu`` source, a row here, its launch function and its entry in ``xpnn._cuda.providers.LAUNCHERS``.
"""
from __future__ import annotations

from dataclasses import dataclass

# storage dtype -> (C type in name expressions, accumulation dtype)
C_TYPES = {"float16": "__half", "float32": "float", "float64": "double"}
ACC_DTYPES = {"float16": "float32", "float32": "float32", "float64": "float64"}

ELEMENTWISE_PREAMBLE = "activation_backward.cuh"

#: every ``ElementwiseKernel`` row made so far (by the ops that declare them, ``xpnn.functional``), by name
ELEMENTWISE_BY_NAME: dict[str, "ElementwiseKernel"] = {}


@dataclass(frozen=True)
class RawKernel:
    """A ``__global__`` template in a ``.cu`` file, compiled through ``cupy.RawModule``.

    ``entry`` is a name template with ``{T}`` (storage C type) and ``{A}`` (accumulation C type).
    ``cooperative``: the kernel synchronises its block (``__syncthreads``/shuffles); the CPU shim runs such blocks
    as fibers and others as a plain loop over threads (and fails if a non-cooperative kernel synchronises).
    ``helper``: launched by another op's launcher, not an op itself (no provider entry); an ``entry`` without
    ``{T}``/``{A}`` is one kernel shared by every dtype. The function that serves an op row is in
    ``xpnn._cuda.providers.LAUNCHERS`` (keyed by the row).
    """

    name: str
    source: str
    entry: str
    dtypes: tuple[str, ...]
    cooperative: bool = False
    helper: bool = False

    def name_expression(self, dtype: str) -> str:
        return self.entry.format(T=C_TYPES[dtype], A=C_TYPES[ACC_DTYPES[dtype]])


_FLOATS = ("float16", "float32", "float64")
_FLOATS_NO_HALF = ("float32", "float64")  # optimizers keep float32 master copies of float16 parameters


@dataclass(frozen=True)
class ElementwiseKernel:
    """A ``cupy.ElementwiseKernel`` whose loop body calls the device function ``xpnn_<name>`` of
    ``kernels/activation_backward.cuh`` (the preamble) on its inputs converted to the accumulation type ``A`` and
    rounds the result to ``T``. ``in_params`` in CuPy's syntax: arrays of ``T`` first (what the op passes
    positionally), then ``float64`` scalars (the op's keyword parameters, same names). Its launcher is generated:
    ``xpnn._cuda.launch.elementwise``. The op that runs the kernel declares the row (``Op.kernel``); making it lists
    it in ``elementwise()`` (one row per name)."""

    name: str
    in_params: str
    out_params: str = "T dx"
    dtypes: tuple[str, ...] = _FLOATS
    #: (parameter, its allowed strings): a keyword parameter given as a string (``approximate="tanh"``) reaches the
    #: kernel as the string's index in that tuple (a float64 like the other scalars)
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        known = ELEMENTWISE_BY_NAME.setdefault(self.name, self)
        if known != self:
            raise ValueError(f"ElementwiseKernel {self.name!r}: declared twice, as {known} and as {self}")

    def _params(self) -> list[tuple[str, str]]:
        return [tuple(p.split()) for p in self.in_params.split(",")]  # type: ignore[misc]

    @property
    def scalars(self) -> tuple[str, ...]:
        """Names of the scalar (keyword) parameters, in kernel order."""
        return tuple(name for typ, name in self._params() if typ != "T")

    @property
    def operation(self) -> str:
        out = self.out_params.split()[-1]
        args = ", ".join(f"(A){name}" for _, name in self._params())
        return f"{out} = (T)xpnn_{self.name}({args});"

    @property
    def body(self) -> str:
        return "typedef typename xpnn_acc<T>::type A; " + self.operation

    @property
    def kernel_name(self) -> str:
        # not "xpnn_<op>": that is the preamble's device function, which the kernel would then overload
        return "xpnn_" + self.name + "_kernel"


# ---- row kernels (softmax_cross_entropy.cu, row_split.cu) ------------------------------------------------------------
LOGSUMEXP = RawKernel("logsumexp", "softmax_cross_entropy.cu", "logsumexp_rows<{T}, {A}>", _FLOATS, cooperative=True)
SOFTMAX = RawKernel("softmax", "softmax_cross_entropy.cu", "softmax_rows<{T}, {A}>", _FLOATS, cooperative=True)
LOG_SOFTMAX = RawKernel("log_softmax", "softmax_cross_entropy.cu", "log_softmax_rows<{T}, {A}>", _FLOATS,
                        cooperative=True)
CROSS_ENTROPY_COUNT = RawKernel("cross_entropy_count", "softmax_cross_entropy.cu", "cross_entropy_count", _FLOATS,
                                cooperative=True, helper=True)
CROSS_ENTROPY_WITH_GRAD = RawKernel("cross_entropy_with_grad", "softmax_cross_entropy.cu",
                                    "cross_entropy_fwd_bwd<{T}, {A}>", _FLOATS, cooperative=True)
# few wide rows split across blocks (launched by the softmax/log_softmax/logsumexp launchers)
ROW_CHUNK_MAX_SUM = RawKernel("row_chunk_max_sum", "row_split.cu", "row_chunk_max_sum<{T}, {A}>", _FLOATS,
                              cooperative=True, helper=True)
ROW_CHUNK_FINISH = RawKernel("row_chunk_finish", "row_split.cu", "row_chunk_finish<{T}, {A}>", _FLOATS,
                             cooperative=True, helper=True)

# ---- optimizer updates over flat buffers (optimizers.cu, adam_mixed.cu) ----------------------------------------------
ADAM_UPDATE = RawKernel("adam_update", "optimizers.cu", "adam_update<{T}>", _FLOATS_NO_HALF)
SGD_UPDATE = RawKernel("sgd_update", "optimizers.cu", "sgd_update<{T}>", _FLOATS_NO_HALF)
ADAGRAD_UPDATE = RawKernel("adagrad_update", "optimizers.cu", "adagrad_update<{T}>", _FLOATS_NO_HALF)
RMSPROP_UPDATE = RawKernel("rmsprop_update", "optimizers.cu", "rmsprop_update<{T}>", _FLOATS_NO_HALF)
# float16 parameters with float32 master copies (xpnn.functional.mixed_precision): keyed by the param dtype
ADAM_UPDATE_MIXED = RawKernel("adam_update_mixed", "adam_mixed.cu", "adam_update_mixed<{T}>", ("float16",))

# ---- convolution / pooling (conv.cu); the GEMMs of conv2d run through CuPy's matmul (cuBLAS) -------------------------
IM2COL = RawKernel("im2col", "conv.cu", "im2col<{T}>", _FLOATS)
COL2IM = RawKernel("col2im", "conv.cu", "col2im<{T}, {A}>", _FLOATS)
MAX_POOL2D = RawKernel("max_pool2d", "conv.cu", "max_pool2d_fwd<{T}, {A}>", _FLOATS)
MAX_POOL2D_BACKWARD = RawKernel("max_pool2d_backward", "conv.cu", "max_pool2d_bwd<{T}, {A}>", _FLOATS)

# ---- step count / lr / loss scale read from device memory (capturable.cu: capturable in CUDA graphs) -----------------
CAPTURABLE_STEP_SCALARS = RawKernel("capturable_step_scalars", "capturable.cu", "capturable_step_scalars<{T}>",
                                    _FLOATS_NO_HALF, helper=True)  # launched before the Adam / Adagrad updates below
ADAM_UPDATE_CAPTURABLE = RawKernel("adam_update_capturable", "capturable.cu", "adam_update_capturable<{T}>",
                                   _FLOATS_NO_HALF)
SGD_UPDATE_CAPTURABLE = RawKernel("sgd_update_capturable", "capturable.cu", "sgd_update_capturable<{T}>",
                                  _FLOATS_NO_HALF)
ADAGRAD_UPDATE_CAPTURABLE = RawKernel("adagrad_update_capturable", "capturable.cu",
                                      "adagrad_update_capturable<{T}>", _FLOATS_NO_HALF)
RMSPROP_UPDATE_CAPTURABLE = RawKernel("rmsprop_update_capturable", "capturable.cu",
                                      "rmsprop_update_capturable<{T}>", _FLOATS_NO_HALF)
AMP_UNSCALE_CHECK = RawKernel("amp_unscale_check", "capturable.cu", "amp_unscale_check<{T}>", _FLOATS)

# ---- recurrent cells: one step's gates, cell and hidden update (rnn_cells.cu; xpnn.functional.recurrent) -----------
LSTM_CELL = RawKernel("lstm_cell", "rnn_cells.cu", "lstm_cell_fwd<{T}, {A}>", _FLOATS)
LSTM_CELL_BACKWARD = RawKernel("lstm_cell_backward", "rnn_cells.cu", "lstm_cell_bwd<{T}, {A}>", _FLOATS)
GRU_CELL = RawKernel("gru_cell", "rnn_cells.cu", "gru_cell_fwd<{T}, {A}>", _FLOATS)
GRU_CELL_BACKWARD = RawKernel("gru_cell_backward", "rnn_cells.cu", "gru_cell_bwd<{T}, {A}>", _FLOATS)
# ---- transformer blocks (layer_norm.cu, attention.cu, embedding.cu; launchers in xpnn._cuda.transformer) ------------
LAYER_NORM = RawKernel("layer_norm", "layer_norm.cu", "layer_norm_fwd<{T}, {A}>", _FLOATS, cooperative=True)
LAYER_NORM_BACKWARD = RawKernel("layer_norm_backward", "layer_norm.cu", "layer_norm_bwd<{T}, {A}>", _FLOATS,
                                cooperative=True)
# sums the per-group dweight / dbias partials of layer_norm_bwd (launched by the layer_norm_backward launcher)
LAYER_NORM_BACKWARD_PARAMS = RawKernel("layer_norm_backward_params", "layer_norm.cu",
                                       "layer_norm_bwd_params<{T}, {A}>", _FLOATS, helper=True)
FLASH_ATTENTION = RawKernel("flash_attention", "attention.cu", "attention_fwd<{T}, {A}>", _FLOATS, cooperative=True)
# dQ (and delta = rowsum(dO * O)), then dK / dV: the flash_attention_backward launcher runs both
FLASH_ATTENTION_BACKWARD = RawKernel("flash_attention_backward", "attention.cu", "attention_bwd_dq<{T}, {A}>",
                                     _FLOATS, cooperative=True)
FLASH_ATTENTION_BACKWARD_DKV = RawKernel("flash_attention_backward_dkv", "attention.cu",
                                         "attention_bwd_dkv<{T}, {A}>", _FLOATS, cooperative=True, helper=True)
EMBEDDING_BACKWARD = RawKernel("embedding_backward", "embedding.cu", "embedding_bwd<{T}, {A}>", _FLOATS)

RAW: tuple[RawKernel, ...] = (
    LOGSUMEXP, SOFTMAX, LOG_SOFTMAX, CROSS_ENTROPY_COUNT, CROSS_ENTROPY_WITH_GRAD,
    ADAM_UPDATE, SGD_UPDATE, ADAGRAD_UPDATE, RMSPROP_UPDATE, ROW_CHUNK_MAX_SUM, ROW_CHUNK_FINISH, ADAM_UPDATE_MIXED,
    IM2COL, COL2IM, MAX_POOL2D, MAX_POOL2D_BACKWARD,
    CAPTURABLE_STEP_SCALARS, ADAM_UPDATE_CAPTURABLE, SGD_UPDATE_CAPTURABLE, ADAGRAD_UPDATE_CAPTURABLE,
    RMSPROP_UPDATE_CAPTURABLE, AMP_UNSCALE_CHECK,
    LSTM_CELL, LSTM_CELL_BACKWARD, GRU_CELL, GRU_CELL_BACKWARD,
    LAYER_NORM, LAYER_NORM_BACKWARD, LAYER_NORM_BACKWARD_PARAMS, FLASH_ATTENTION, FLASH_ATTENTION_BACKWARD,
    FLASH_ATTENTION_BACKWARD_DKV, EMBEDDING_BACKWARD,
)

RAW_BY_NAME = {row.name: row for row in RAW}


def elementwise() -> tuple[ElementwiseKernel, ...]:
    """The elementwise rows, in the order their ops were declared (all of them once ``xpnn`` is imported)."""
    return tuple(ELEMENTWISE_BY_NAME.values())


def row(name: str) -> "RawKernel | ElementwiseKernel | None":
    """The row called ``name`` (what a kernel provider is asked for), or ``None``."""
    return RAW_BY_NAME.get(name) or ELEMENTWISE_BY_NAME.get(name)


def sources() -> tuple[str, ...]:
    """The ``.cu`` files that hold RawModule kernels, in registry order."""
    return tuple(dict.fromkeys(row.source for row in RAW))


def name_expressions(source: str) -> tuple[str, ...]:
    """Every kernel (template instantiation) compiled into the RawModule of ``source``, each once."""
    return tuple(dict.fromkeys(row.name_expression(dt) for row in RAW if row.source == source for dt in row.dtypes))


def ops() -> tuple[str, ...]:
    """The ops served by kernels (helpers excluded)."""
    return tuple(r.name for r in RAW + elementwise() if not getattr(r, "helper", False))


def supports(op: str, dtype: str) -> bool:
    r = row(op)
    return r is not None and not getattr(r, "helper", False) and dtype in r.dtypes
