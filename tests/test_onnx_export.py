"""`xpnn.onnx.export`: the exported graph, run by ONNX Runtime, gives xpnn's outputs (MLP and LeNet-5 at two batch
sizes through one file with a dynamic batch axis; every layer of xpnn.nn; float16, float64; opsets 13 and 18);
static shapes unless asked; ops without a lowering, graphs tied to a dynamic size and bad arguments are errors that
name the cause and write nothing; `xpnn export CHECKPOINT --onnx` gives predict's labels."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import models, nn
from xpnn.autograd import Op
from xpnn.cli import build_model, main

onnx = pytest.importorskip("onnx", reason="xpnn.onnx.export writes models with the onnx package (xpnn[onnx])")
import xpnn.onnx as xonnx  # noqa: E402


ORT = "ONNX Runtime is the reference that runs the exported models (xpnn[reference])"


def _session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, x):
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _xpnn_out(model, x):
    model.eval()
    with xpnn.no_grad():
        return np.asarray(model(xpnn.tensor(x)).data)


def _export_and_compare(ort, model, shape, tmp_path, *, dtype=np.float32, batches=(3, 7), atol=1e-5, rtol=0.0,
                        vocab=None, **kw):
    """Export with a dynamic batch axis from an example of batch ``batches[0]``; compare ORT with xpnn at each
    batch size on fresh random inputs (int64 ids below ``vocab`` if given); return the loaded ONNX model."""
    rng = np.random.default_rng(0)
    path = tmp_path / "model.onnx"

    def inputs(n):
        if vocab is not None:
            return rng.integers(0, vocab, size=(n,) + shape)
        return rng.standard_normal((n,) + shape).astype(dtype)

    example = inputs(batches[0])
    xonnx.export(model, example, path, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **kw)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = _session(ort, path)
    for n in batches:
        x = inputs(n)
        got = _run(sess, x)
        want = _xpnn_out(model, x)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=atol, rtol=rtol)
    return proto


def test_mlp_matches_onnxruntime_at_two_batch_sizes(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    model = build_model([64, 128, 64, 10], "relu", seed=0)
    proto = _export_and_compare(ort, model, (64,), tmp_path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 64
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # parameters are initializers under their state_dict names; the input is the only graph input
    assert {i.name for i in proto.graph.initializer} == set(model.state_dict())
    assert [i.name for i in proto.graph.input] == ["input"]


def test_lenet5_matches_onnxruntime_at_two_batch_sizes(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    _export_and_compare(ort, models.lenet5(seed=1), (1, 28, 28), tmp_path, batches=(2, 5))


def test_digits_cnn_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    _export_and_compare(ort, models.digits_cnn(seed=2), (1, 8, 8), tmp_path)


def _with_stats(bn, seed):
    """A BatchNorm with running statistics that are not the identity (as after training)."""
    rng = np.random.default_rng(seed)
    bn.running_mean[...] = rng.standard_normal(bn.num_features)
    bn.running_var[...] = rng.uniform(0.5, 2.0, bn.num_features)
    with xpnn.no_grad():
        bn.weight.data[...] = rng.uniform(0.5, 1.5, bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features)
    return bn


def _dense_model():
    return nn.Sequential(
        nn.Linear(8, 16, seed=0), _with_stats(nn.BatchNorm1d(16), 1), nn.Sigmoid(), nn.Dropout(0.3, seed=0),
        nn.Linear(16, 16, seed=1), nn.Tanh(), nn.LeakyReLU(0.1), nn.ELU(0.7), nn.SELU(), nn.PReLU(16, init=0.2),
        nn.Softplus(2.0, 0.5), nn.Mish(),
        nn.Residual(nn.Sequential(nn.Linear(16, 16, seed=2), nn.ReLU())),
        nn.DropConnect(16, 12, p=0.3, seed=3), nn.Maxout(12, 6, pieces=3, seed=4), nn.PReLU(),
        nn.BatchNorm1d(6, affine=False, track_running_stats=False), nn.Softmax(axis=1))


def _conv_model():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", seed=0), _with_stats(nn.BatchNorm2d(4), 2), nn.PReLU(4),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(4, 6, 2, dilation=2, groups=2, padding=1, seed=1),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.AdaptiveAvgPool2d((3, 2)), nn.BatchNorm2d(6, track_running_stats=False), nn.Flatten(),
        nn.Linear(36, 5, seed=2))


class _Stack(nn.Module):
    """Layers held in a ModuleList, run in turn (the usual use of a ModuleList)."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def _pool_model():
    return nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, seed=0), nn.AvgPool2d(2, padding=1),
                         _Stack(nn.MaxPool2d(2, stride=1, dilation=2), nn.Identity()), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.LogSoftmax(axis=1))


def _token_model(dtype=None):
    """Token ids (N, 6) -> embeddings, the transformer layers' normalisations and activations, then a Linear."""
    return nn.Sequential(
        nn.Embedding(11, 8, padding_idx=0, seed=0, dtype=dtype), nn.LayerNorm(8, dtype=dtype), nn.GELU(),
        nn.SiLU(), nn.GELU("tanh"), nn.LayerNorm((6, 8), bias=False, dtype=dtype), nn.Flatten(),
        nn.Linear(48, 5, seed=1, dtype=dtype))


class _CausalEncoder(nn.Module):
    """Token ids (N, 6) -> embeddings -> a causal TransformerEncoderLayer (MultiheadAttention inside) -> a
    MultiheadAttention with a float mask -> a TransformerEncoder of two post-norm layers and a final LayerNorm (causal)
    -> a Linear of the flattened sequence."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8, seed=0)
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True,
                                                activation="gelu", seed=1)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, seed=2)
        self.stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, seed=4),
                                           2, norm=nn.LayerNorm(8))
        self.head = nn.Linear(48, 5, seed=3)

    def forward(self, x):
        h = self.layer(self.embed(x), src_mask=np.triu(np.ones((6, 6), dtype=bool), 1))
        bias = np.linspace(-1.0, 1.0, 36, dtype=np.float32).reshape(6, 6)
        h = self.attn(h, h, h, attn_mask=bias, need_weights=False)[0]
        h = self.stack(h, mask=np.triu(np.ones((6, 6), dtype=bool), 1), is_causal=True)
        return self.head(F.reshape(h, (-1, 48)))


class _Seq2Seq(nn.Module):
    """Token ids (N, 6) -> embeddings -> an nn.Transformer (pre-norm, gelu; source: the 6 tokens, target: the first
    4, with a float causal tgt_mask, a bool memory_mask and a src_mask) -> a TransformerDecoder of post-norm
    TransformerDecoderLayers over the same memory -> a MultiheadAttention with kdim/vdim (separate q/k/v
    projections) -> a Linear of the flattened target."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 8, seed=0)
        self.model = nn.Transformer(8, 2, 1, 2, 16, dropout=0.0, activation="gelu", batch_first=True,
                                    norm_first=True, seed=1)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                                                        seed=2), 2)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True, kdim=3, vdim=5, seed=3)
        self.head = nn.Linear(32, 5, seed=4)

    def forward(self, x):
        h = self.embed(x)
        src, tgt = h, h[:, :4, :]
        memory_mask = np.zeros((4, 6), dtype=bool)
        memory_mask[:, 5] = True
        y = self.model(src, tgt, src_mask=np.eye(6, dtype=bool)[::-1].copy(),
                       tgt_mask=nn.Transformer.generate_square_subsequent_mask(4), memory_mask=memory_mask,
                       tgt_is_causal=True)
        y = self.decoder(y, src, tgt_mask=np.triu(np.ones((4, 4), dtype=bool), 1), tgt_is_causal=True)
        y = self.attn(y, src[:, :, :3], src[:, :, 3:], need_weights=False)[0]
        return self.head(F.reshape(y, (-1, 32)))


class _Recurrent(nn.Module):
    """The recurrent layers and cells in turn on (N, T, 4), from initial states computed from the input (a zero
    state made by the layer would be a constant of the traced batch size: with a dynamic batch axis the export
    refuses it)."""

    def __init__(self):
        super().__init__()
        self.init = nn.Linear(4, 4 * 3, seed=0)
        self.lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True, seed=1)
        self.gru = nn.GRU(6, 3, batch_first=True, seed=2)
        self.rnn = nn.RNN(3, 3, nonlinearity="relu", batch_first=True, seed=3)
        self.lstm_cell, self.gru_cell, self.rnn_cell = nn.LSTMCell(3, 3, seed=4), nn.GRUCell(3, 3, seed=5), \
            nn.RNNCell(3, 3, seed=6)

    def forward(self, x):
        h = F.permute_dims(F.reshape(self.init(x[:, 0, :]), (-1, 4, 3)), (1, 0, 2))  # (4, N, 3)
        y, _ = self.lstm(x, (h, h * 0.5))
        y, _ = self.gru(y, h[:1])
        y, _ = self.rnn(y, h[1:2])
        c, _ = self.lstm_cell(y[:, -1, :], (h[0], h[1]))
        return self.rnn_cell(self.gru_cell(c, h[2]), h[3])


LAYER_MODELS = {"dense": (_dense_model, (8,)), "conv": (_conv_model, (2, 12, 11)), "pool": (_pool_model, (2, 9, 10)),
                "tokens": (_token_model, (6,)), "attention": (_CausalEncoder, (6,)), "recurrent": (_Recurrent, (5, 4)),
                "seq2seq": (_Seq2Seq, (6,))}
VOCAB = {"tokens": 11, "attention": 11, "seq2seq": 11}  # models whose input is token ids


@pytest.mark.parametrize("case", sorted(LAYER_MODELS))
def test_layers_match_onnxruntime(case, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    make, shape = LAYER_MODELS[case]
    _export_and_compare(ort, make(), shape, tmp_path, vocab=VOCAB.get(case))


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_layer_norm_and_gelu_lowerings(opset, dtype, tmp_path):
    """LayerNorm as ONNX's LayerNormalization from opset 17 and as its formula before; GELU as ONNX's Gelu from
    opset 20 and as its formula (Erf, or Tanh) before; float16 computed in float32."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    proto = _export_and_compare(ort, _token_model(dtype), (6,), tmp_path, vocab=11, opset_version=opset,
                                atol=2e-2 if dtype == "float16" else 1e-5)
    ops = [n.op_type for n in proto.graph.node]
    assert ("LayerNormalization" in ops) == (opset >= 17) and ops.count("Gelu") == (2 if opset >= 20 else 0)
    assert ("Erf" in ops) == (opset < 20) and "Gather" in ops


def test_export_traces_in_eval_mode_and_gives_the_mode_back(tmp_path):
    model = _dense_model()
    model.train()  # Dropout, DropConnect: identity in eval; BatchNorm: the running statistics
    stats = model[1].running_mean.copy()
    xonnx.export(model, np.ones((4, 8), np.float32), tmp_path / "m.onnx")
    assert model.training and all(m.training for _, m in model.named_modules())
    np.testing.assert_array_equal(model[1].running_mean, stats)  # not updated by the trace
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert "Dropout" not in ops and "BatchNormalization" in ops


def test_every_nn_layer_is_covered():
    layers = {name for name in nn.__all__ if isinstance(getattr(nn, name), type)
              and issubclass(getattr(nn, name), nn.Module) and not name.endswith("Loss") and name != "Module"}
    covered = set()
    for make, _ in LAYER_MODELS.values():
        covered |= {type(m).__name__ for _, m in make().named_modules()}
    assert layers <= covered, f"layers without an export test: {sorted(layers - covered)}"


def test_reshape_to_a_fixed_batch_with_a_dynamic_axis_is_an_error(tmp_path):
    class FixedBatch(nn.Module):
        def forward(self, x):
            return F.reshape(x, (4, -1))  # ties the graph to batch 4

    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=r"depends on the size of the dynamic axes \[0\]"):
        xonnx.export(FixedBatch(), np.zeros((4, 2, 3), np.float32), path, dynamic_axes={"input": [0]})
    assert not path.exists()
    xonnx.export(FixedBatch(), np.zeros((4, 2, 3), np.float32), path)  # static: exact for batch 4
    assert path.exists()


def test_broadcast_to_a_batch_shape_exports_static_only(tmp_path):
    """A broadcast that stretches the batch axis to sizes given as ints holds the traced batch size: an error with a
    dynamic batch axis (expand_as exports it, test_expand_keeps_a_dynamic_batch_axis), exact when static."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Spread(nn.Module):
        def forward(self, x):
            return x + F.broadcast_to(F.min(x, axis=0, keepdims=True), tuple(x.shape))

    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="depends on the size of the dynamic axes"):
        xonnx.export(Spread(), x, tmp_path / "m.onnx", dynamic_axes={"input": [0]})
    xonnx.export(Spread(), x, tmp_path / "m.onnx")
    np.testing.assert_allclose(_run(_session(ort, tmp_path / "m.onnx"), x), _xpnn_out(Spread(), x), atol=1e-6)


def test_attention_with_bias_kv_and_zero_attn_exports_static_only(tmp_path):
    """``add_bias_kv`` / ``add_zero_attn`` append a key of the batch's size (a constant of the traced batch): a
    dynamic batch axis is refused, the static export matches."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True, add_bias_kv=True, add_zero_attn=True, kdim=3,
                                              vdim=5, seed=0)

        def forward(self, x):
            return self.attn(x, x[:, :, :3], x[:, :, 3:], attn_mask=np.triu(np.ones((6, 6), dtype=bool), 1),
                             need_weights=False)[0]

    x = np.random.default_rng(0).standard_normal((3, 6, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="depends on the size of the dynamic axes"):
        xonnx.export(Attend(), x, tmp_path / "m.onnx", dynamic_axes={"input": [0]})
    xonnx.export(Attend(), x, tmp_path / "m.onnx")
    np.testing.assert_allclose(_run(_session(ort, tmp_path / "m.onnx"), x), _xpnn_out(Attend(), x), atol=1e-6)
class _Cls(nn.Module):
    """A class token (a parameter) put in front of each sequence: ``expand_as`` a slice of the input."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 1, 4))

    def forward(self, x):                                             # (N, L, 4)
        return F.cat([self.cls.expand_as(x[:, :1]), x], dim=1)      # (N, L + 1, 4)


class _Spread(nn.Module):
    """Broadcasts of values that carry the batch axis: over a feature axis (``broadcast_to`` with the input's
    shape, ``expand`` with -1 for the batch), and over the batch axis to the input's shape (``expand_as``)."""

    def forward(self, x):                                             # (N, 4, 6)
        h = x + F.broadcast_to(F.min(x, axis=1, keepdims=True), tuple(x.shape))
        h = h.unsqueeze(1).expand(-1, 3, -1, -1).sum(axis=1)          # (N, 4, 6)
        return h - F.mean(h, axis=0, keepdims=True).expand_as(h)


@pytest.mark.parametrize("make,shape", [(_Cls, (2, 4)), (_Spread, (4, 6))], ids=["class token", "spread"])
def test_expand_keeps_a_dynamic_batch_axis(make, shape, tmp_path):
    """expand / broadcast_to of a value that carries the batch axis export with it dynamic (Expand's shape input
    holds 1 there: ONNX's Expand broadcasts both ways), and expand_as takes its sizes from ``Shape`` of its
    argument, also to stretch a constant or a batch statistic over the batch; ONNX Runtime gives xpnn's outputs at
    two batch sizes (these exports were refused as tied to the traced batch size)."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    proto = _export_and_compare(ort, make(), shape, tmp_path, atol=1e-5)
    assert "Expand" in {n.op_type for n in proto.graph.node}


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float16_and_float64_weights_export_and_run(dtype, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    np_dtype = np.dtype(dtype)
    mlp = build_model([32, 64, 10], "relu", dtype=dtype, seed=0)
    mlp.append(nn.Softmax(axis=1))
    atol = 2e-3 if dtype == "float16" else 1e-12
    proto = _export_and_compare(ort, mlp, (32,), tmp_path, dtype=np_dtype, atol=atol)
    want = onnx.helper.np_dtype_to_tensor_dtype(np_dtype)
    assert proto.graph.input[0].type.tensor_type.elem_type == want
    assert all(i.data_type == want for i in proto.graph.initializer)
    if dtype == "float16":  # (ONNX Runtime's CPU provider has no float64 Conv)
        _export_and_compare(ort, models.digits_cnn(dtype=dtype, seed=3), (1, 8, 8), tmp_path, dtype=np_dtype,
                            atol=1e-2)


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets(opset, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    # opset 18 moved the axes of ReduceMean/ReduceMax to an input (batch statistics, Maxout use them)
    model = nn.Sequential(nn.Maxout(8, 6, pieces=2, seed=0), nn.BatchNorm1d(6, track_running_stats=False),
                          nn.Softmax(axis=1))
    proto = _export_and_compare(ort, model, (8,), tmp_path, opset_version=opset)
    assert proto.opset_import[0].version == opset


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_softplus_and_mish_lowerings(opset, dtype, tmp_path):
    """Softplus with beta and threshold (Mul/Softplus/Div/Where) and with the defaults (ONNX's Softplus alone below
    the threshold), Mish as ONNX's Mish from opset 18 and as x * tanh(softplus(x)) before; float16 in float32."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    model = nn.Sequential(nn.Linear(8, 8, seed=0, dtype=dtype), nn.Softplus(), nn.Linear(8, 8, seed=1, dtype=dtype),
                          nn.Softplus(0.5, 0.25), nn.Mish())
    proto = _export_and_compare(ort, model, (8,), tmp_path, dtype=np.dtype(dtype), opset_version=opset,
                                atol=2e-3 if dtype == "float16" else 1e-5)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Softplus") == (2 if opset >= 18 else 3) and ("Mish" in ops) == (opset >= 18)


def test_a_model_on_array_api_strict_exports_the_same_graph(tmp_path):
    # the generic path: parameters and the example input of another namespace (the list form of dynamic_axes, the
    # output's batch axis named after the input's)
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    xps = pytest.importorskip("array_api_strict", reason="the strict namespace runs the generic path")
    model = models.digits_cnn(backend=xps, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    xonnx.export(model, xps.asarray(x), tmp_path / "m.onnx", dynamic_axes={"input": [0]})
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "input_dynamic_axes_1"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "input_dynamic_axes_1"
    sess = _session(ort, tmp_path / "m.onnx")
    model.eval()
    for n in (3, 5):
        xn = np.random.default_rng(n).standard_normal((n, 1, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(_run(sess, xn), np.asarray(model(xps.asarray(xn))), atol=1e-5)


def test_static_by_default_like_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    model = build_model([16, 8, 3], "tanh", seed=0)
    path = tmp_path / "m.onnx"
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    xonnx.export(model, x, path, input_names=["rows"], output_names=["scores"])
    proto = onnx.load(str(path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [5, 16]
    assert proto.graph.input[0].name == "rows" and proto.graph.output[0].name == "scores"
    sess = _session(ort, path)
    np.testing.assert_allclose(sess.run(None, {"rows": x})[0], _xpnn_out(model, x), atol=1e-6)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        sess.run(None, {"rows": x[:2]})


def test_expressions_with_constants_and_shape_ops(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    class Expr(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 6, seed=0)

        def forward(self, x):
            h = F.reshape(x, (x.shape[0], 2, 3))                     # leading axis kept: exported as 0
            h = F.permute_dims(h, (0, 2, 1)) * 0.5 + 1.0              # scalars become constants of h's dtype
            h = F.reshape(h, (-1, 6)) + F.broadcast_to(F.sum(self.lin.bias), (6,))  # folded: a constant
            w2 = self.lin.weight * 2.0                                 # parameters only: folded to a constant
            h = F.matmul(F.exp(-F.abs(h)), w2) / F.sqrt(F.clip(h * h, min=0.1, max=4.0))
            h = F.concat([h, F.log(F.sigmoid(h))], axis=1) - F.mean(h, axis=1, keepdims=True)
            return F.log_softmax(h, axis=1) + F.logsumexp(h, axis=1, keepdims=True) + F.max(h, axis=1, keepdims=True)

    model = Expr()
    proto = _export_and_compare(ort, model, (6,), tmp_path, atol=1e-5, rtol=1e-5)
    ops = {n.op_type for n in proto.graph.node}
    assert "Mul" in ops and "Transpose" in ops and "Concat" in ops
    reshapes = [n for n in proto.graph.node if n.op_type == "Reshape"]
    assert reshapes  # the folded weight is an initializer, not a Mul of the parameter
    assert not any(n.op_type == "Mul" and "lin.weight" in n.input for n in proto.graph.node)


def test_tensor_ops_of_attention_code(tmp_path):
    """split, transpose, unsqueeze/squeeze, expand, masked_fill with a causal mask, tril, where with a scalar, cat,
    clone, gather and a matmul of the pieces."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Attentionish(nn.Module):
        def forward(self, x):                                          # (N, 4, 6)
            q, k, v = x.split([2, 2, 2], dim=-1)                       # (N, 4, 2) each
            s = F.matmul(q, k.transpose(1, 2)).masked_fill(~xpnn.tensor(F.tril_mask(4)), float("-inf"))
            h = F.matmul(F.softmax(s, axis=-1), v)                     # (N, 4, 2)
            h = F.cat([h, F.tril(s.masked_fill(~xpnn.tensor(F.tril_mask(4)), 0.0), -1)], dim=-1)  # (N, 4, 6)
            h = F.where(F.triu_mask(4, 6), h, 0.25).unsqueeze(1).expand(-1, 3, -1, -1).clone()  # (N, 3, 4, 6)
            h = h.sum(axis=1).squeeze()                                # (N, 4, 6) (no axis of length 1)
            return h[:, :, :3] + h.gather(2, xpnn.tensor(np.array([[[5, 0, 1]] * 4])))  # index (1, 4, 3)

    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    path = tmp_path / "m.onnx"
    xonnx.export(Attentionish(), x, path)  # (static: expand's target shape holds the batch size)
    np.testing.assert_allclose(_run(_session(ort, path), x), _xpnn_out(Attentionish(), x), atol=1e-6)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Split", "Transpose", "Where", "Expand", "GatherElements", "Concat"} <= ops


class _Masks(nn.Module):
    """Masks computed from the input: comparisons, logical operators, a mask's cast, where and masked_fill; detach."""

    def forward(self, x):
        pos = x > 0
        band = ((x >= -0.5) & ~(x > 0.5)) | (x == 0.25)
        h = F.where(pos, x, x * 0.1)                                   # leaky ReLU by a comparison
        h = h.masked_fill(band, 2.0) + (x != h).astype(x.dtype)         # (a mask's cast: recorded, no gradient)
        h = h.where(x <= 1.0, -1.0) * F.where(x < -1.0, 3.0, x) + (x * 0.5).detach()  # (detach: the same values)
        return h + F.where(x.sum(axis=1, keepdims=True) > 0.0, h, 0.0)


@pytest.mark.parametrize("opset", [13, 18])
def test_masks_computed_from_the_input_are_exported_as_ops(opset, tmp_path):
    """A comparison of the input fed to where/masked_fill becomes ONNX's Greater/Less/Equal/Not/And/Or: ONNX Runtime
    gives xpnn's answer on inputs other than the traced one (it was the traced input's mask, a constant)."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    proto = _export_and_compare(ort, _Masks(), (8,), tmp_path, batches=(3, 7, 5), opset_version=opset)
    ops = {n.op_type for n in proto.graph.node}
    assert {"Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "Not", "And", "Or", "Where"} <= ops
    assert all(i.data_type != onnx.TensorProto.BOOL for i in proto.graph.initializer)  # no mask baked in
    x = np.array([[-2.0, -0.7, -0.5, 0.0, 0.25, 0.5, 0.9, 1.5]], np.float32)
    np.testing.assert_allclose(_run(_session(ort, tmp_path / "model.onnx"), x), _xpnn_out(_Masks(), x), atol=1e-6)



def test_a_mask_cast_with_to_exports_as_cast(tmp_path):
    """``m.to(x.dtype)`` / ``m.to(np.float32)`` of a comparison (PyTorch's usual cast of a mask) and ``x.to()`` onto
    the same backend export as ``Cast``/``Identity`` (op 'to_backend' had no lowering) and give xpnn's answer."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Casts(nn.Module):
        def forward(self, x):
            cast = (x > 0).to(x.dtype) + (x < -1).to(np.float32) * 2.0
            return x * cast + x.to("numpy") + x.to(dtype="float64").to(x.dtype)

    proto = _export_and_compare(ort, Casts(), (6,), tmp_path)
    assert "Cast" in {n.op_type for n in proto.graph.node}

def test_masks_of_integer_ids_are_exported_as_ops(tmp_path):
    """A padding mask of integer ids (ops that no gradient records: the trace records them) and an id shifted by
    integer arithmetic give xpnn's answer on other ids."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4, seed=0)

        def forward(self, ids):
            h = self.emb(F.where(ids > 8, ids - 1, ids))           # (an integer where of the input)
            return h.masked_fill((ids == 0).unsqueeze(-1), 0.0)

    proto = _export_and_compare(ort, Padded(), (6,), tmp_path, vocab=10, batches=(4, 9), atol=0.0)
    assert {"Equal", "Greater"} <= {n.op_type for n in proto.graph.node}


class _Escape(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x):
        if self.how == "data":       # a mask computed on the array: outside the recorded ops
            return F.where(xpnn.tensor(x.data > 0), x, 0.0)
        if self.how == "numpy":
            return x * xpnn.tensor(np.argsort(x.numpy(), axis=1).astype(np.float32))
        if self.how == "item":       # Python control flow on a value of the input
            return x * 2.0 if x.sum().item() > 0 else x * 3.0
        return x * float(x.max())    # float(): a value baked in


@pytest.mark.parametrize("how, op", [("data", "where"), ("numpy", "mul"), ("item", "sum"), ("float", "max")])
def test_a_value_computed_from_the_input_outside_the_ops_is_an_error(how, op, tmp_path):
    """A value read off the input during the trace would be a constant of the graph: a Python number (.item(),
    float()) is refused where it is read, naming the op that computed it; an array (.data, .numpy()) by the second
    trace, on other values, whose graph differs, naming the op that used it. Nothing is written."""
    path = tmp_path / "m.onnx"
    x = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]], np.float32)
    with pytest.raises(ValueError, match=rf"data-dependent value: .*op '{op}'"):
        xonnx.export(_Escape(how), x, path)
    assert not path.exists()
    assert float(xpnn.tensor(x).sum()) == pytest.approx(5.5)  # the trace is over: values read as usual


def test_logical_operators_of_integer_ids(tmp_path):
    """``&``/``|``/``~`` of integer values are ONNX's Bitwise ops (opset 18); before opset 18 an error names the
    op and the opset."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Parity(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(16, 3, seed=0)

        def forward(self, ids):
            return self.emb((~ids & 7) | 8)

    _export_and_compare(ort, Parity(), (5,), tmp_path, vocab=16, atol=0.0, opset_version=18)
    with pytest.raises(NotImplementedError, match=r"op 'compare' \(~ of int64 values\) needs .* opset 18"):
        xonnx.export(Parity(), np.arange(10).reshape(2, 5), tmp_path / "m.onnx", opset_version=17)


@pytest.mark.parametrize("how", ["setitem", "mask-key", "iadd", "masked_fill_"])
def test_an_in_place_write_with_values_of_the_input_is_an_error(how, tmp_path):
    """In-place writes are not recorded: one into (or with a mask or value computed from) the input's values while
    tracing would be missing from the graph, so export refuses it, naming the write."""
    class Writes(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 2, seed=0)

        def forward(self, ids):
            ids = ids + 0                      # (recorded while tracing: integer ops take no gradient)
            buf = xpnn.tensor(np.zeros(ids.shape, np.int64))
            if how == "setitem":
                ids[0, 0] = 3
            elif how == "mask-key":
                buf[ids > 4] = 1
                ids = buf
            elif how == "iadd":
                with xpnn.no_grad():
                    buf += ids
                ids = buf
            else:
                ids.masked_fill_(ids > 5, 0)
            return self.emb(ids)

    x = np.arange(6).reshape(2, 3)
    with pytest.raises(ValueError, match=r"data-dependent value: .* writes in place"):
        xonnx.export(Writes(), x, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_values_read_but_not_used_in_the_graph_export(tmp_path):
    """A value of the input read during the trace that does not reach the graph (a finiteness check) is fine."""
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Checked(nn.Module):
        def forward(self, x):
            if not bool(np.isfinite(x.numpy()).all()):
                raise ValueError("non-finite input")
            return x * 2.0

    _export_and_compare(ort, Checked(), (3,), tmp_path)


class _Scaled(Op):
    """A user op whose scale is a keyword parameter."""

    name = "scaled"

    @staticmethod
    def forward(ctx, x, *, scale):
        return x * (scale.data if hasattr(scale, "data") else scale)

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def onnx(g, x, *, scale):
        return g.op("Mul", x, g.const(scale, dtype=x))


def test_an_op_parameter_computed_from_the_input_is_an_error(tmp_path):
    class ScaleByMax(nn.Module):
        def forward(self, x):
            return _Scaled.apply(x, scale=x.max())

    with pytest.raises(ValueError, match=r"data-dependent value: parameter 'scale' of op 'scaled'"):
        xonnx.export(ScaleByMax(), np.ones((2, 3), np.float32), tmp_path / "m.onnx")


@pytest.mark.parametrize("key", [
    (slice(None), slice(1, 3)), (slice(None), 0), (slice(None), None, slice(None, None, -1)), (Ellipsis, -1),
    (slice(None), slice(-2, None), None, 1), (slice(None), slice(None, None, 2), Ellipsis, slice(3, 0, -2))],
    ids=["slice", "int", "newaxis-reversed", "ellipsis-last", "mixed", "strided"])
def test_basic_indexing(key, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)

    class Pick(nn.Module):
        def forward(self, x):
            return x[key] * 2.0

    proto = _export_and_compare(ort, Pick(), (4, 5), tmp_path, atol=0.0)
    assert "Slice" in {n.op_type for n in proto.graph.node}


def test_an_array_key_is_refused(tmp_path):
    class Gather(nn.Module):
        def forward(self, x):
            return x[:, np.array([0, 2])]

    with pytest.raises(NotImplementedError, match="op 'index' with an array or mask key"):
        xonnx.export(Gather(), np.ones((2, 3), np.float32), tmp_path / "m.onnx")


def test_a_parameter_or_constant_used_twice_is_one_initializer(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    shift = np.arange(4, dtype=np.float32)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4, seed=0)

        def forward(self, x):
            return self.lin((x - shift) * shift) + self.lin(x) * 2.0

    proto = _export_and_compare(ort, Twice(), (4,), tmp_path)
    names = [i.name for i in proto.graph.initializer]
    assert names.count("lin.weight") == 1 and len(names) == 4  # weight, bias, shift, 2.0


class _Cube(Op):
    name = "cube"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3.0 * x * x


class _CubeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, seed=0)

    def forward(self, x):
        return _Cube.apply(self.lin(x))


def test_an_op_without_lowering_is_refused_by_name_and_nothing_is_written(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(NotImplementedError, match=r"op 'cube' .*_Cube.* has no ONNX lowering"):
        xonnx.export(_CubeNet(), np.zeros((2, 4), np.float32), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temporary file left


def test_training_mode_dropout_called_explicitly_is_refused(tmp_path):
    class AlwaysDrop(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, training=True, seed=0)

    with pytest.raises(NotImplementedError, match="op 'dropout'"):
        xonnx.export(AlwaysDrop(), np.ones((2, 3), np.float32), tmp_path / "m.onnx")


def test_a_module_with_a_handwritten_backward_is_refused_by_name(tmp_path):
    class Handmade(nn.Module):
        def forward(self, x):
            return x * 2.0

        def backward(self, dy):
            return dy * 2.0

    with pytest.raises(NotImplementedError, match=r"Handmade\(\) has a hand-written backward"):
        xonnx.export(nn.Sequential(nn.Linear(3, 3, seed=0), Handmade()), np.ones((2, 3), np.float32),
                     tmp_path / "m.onnx")


def test_only_ops_on_the_path_from_the_input_are_traced(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    # an op of the forward that does not feed the output (a statistic computed and dropped) is not exported:
    # here one without a lowering, which would otherwise be refused
    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4, seed=0)
            self.seen = None

        def forward(self, x):
            self.seen = _Cube.apply(x)  # not on the path to the output
            return self.lin(x)

    proto = _export_and_compare(ort, SideBranch(), (4,), tmp_path)
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Identity"]


def test_bad_arguments(tmp_path):
    model = build_model([4, 3], "relu")
    x = np.zeros((2, 4), np.float32)
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="opset_version must be an int from 13"):
        xonnx.export(model, x, path, opset_version=7)
    with pytest.raises(ValueError, match="dynamic_axes names 'x'"):
        xonnx.export(model, x, path, dynamic_axes={"x": [0]})
    with pytest.raises(ValueError, match="dynamic axis 2 of 'input' is out of range"):
        xonnx.export(model, x, path, dynamic_axes={"input": [2]})
    with pytest.raises(ValueError, match="1 output"):
        xonnx.export(model, x, path, output_names=["a", "b"])
    with pytest.raises(TypeError, match="example_input must be an array"):
        xonnx.export(model, [[0.0] * 4], path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xonnx.export(model, x, tmp_path / "no-folder" / "m.onnx")
    assert not path.exists()


def test_without_the_onnx_package_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "xpnn\[onnx\]"'):
        xonnx.export(build_model([4, 3], "relu"), np.zeros((2, 4), np.float32), tmp_path / "m.onnx")


def test_cli_export_onnx_gives_the_labels_of_predict(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason=ORT)
    ckpt, onnx_path, rows = tmp_path / "d.npz", tmp_path / "d.onnx", tmp_path / "rows.npy"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--no-progress", "--save", str(ckpt)]) == 0
    X, _ = xpnn.data.load_digits()
    np.save(rows, X[:40])
    capsys.readouterr()
    assert main(["export", str(ckpt), "--onnx", str(onnx_path)]) == 0
    assert "standardized inside" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(rows)]) == 0
    labels = [int(v) for v in capsys.readouterr().out.split()]
    sess = _session(ort, onnx_path)
    for part in (X[:40], X[:7]):  # the batch axis is dynamic
        logits = sess.run(None, {"input": part.astype(np.float32)})[0]
        assert logits.argmax(axis=1).tolist() == labels[:len(part)]
    assert [o.name for o in sess.get_outputs()] == ["logits"]


def test_cli_export_needs_an_output_and_a_checkpoint(tmp_path, capsys):
    assert main(["export", str(tmp_path / "none.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.npz")]) == 1
    assert "--onnx PATH and/or --safetensors PATH" in capsys.readouterr().err
