"""`xpnn.io.save_safetensors` / `load_safetensors`: bit-exact round trips on NumPy (every dtype, 0-d, non-contiguous,
metadata), PyTorch models saved with `safetensors.torch.save_file` load into the xpnn model of the same layout and
give PyTorch's outputs (and back), bad files and mismatching states are errors that name the key or the file, a failed
save writes nothing; `xpnn export --safetensors` and `xpnn predict` on .safetensors files."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import xpnn
from xpnn import io as xio
from xpnn import models, nn
from xpnn.cli import build_model, main
from xpnn.errors import CheckpointError

pytest.importorskip("safetensors", reason="xpnn.io's safetensors functions need the safetensors package "
                                          "(xpnn[safetensors])")


def test_round_trip_is_bit_exact_with_metadata(tmp_path):
    rng = np.random.default_rng(0)
    state = {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal(5),
        "w16": rng.standard_normal((2, 2)).astype(np.float16),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324]),
        "count": np.array(7, dtype=np.int64),           # 0-d stays 0-d (num_batches_tracked)
        "strided": rng.standard_normal((4, 6)).astype(np.float32)[::2, ::3],  # not contiguous
        "flags": np.array([True, False]),
    }
    path = tmp_path / "s.safetensors"
    xio.save_safetensors(state, path, metadata={"model": "mlp", "sizes": "4,3"})
    back, meta = xio.load_safetensors(path, with_metadata=True)
    assert meta == {"model": "mlp", "sizes": "4,3"}
    assert set(back) == set(state)
    for key, arr in state.items():
        got = back[key]
        assert type(got) is np.ndarray and got.dtype == arr.dtype and got.shape == arr.shape, key
        assert got.tobytes() == np.ascontiguousarray(arr).tobytes(), key
    assert xio.load_safetensors(path, with_metadata=True)[1] == meta
    xio.save_safetensors({"a": np.ones(2)}, path)  # overwrite; no metadata -> {}
    assert xio.load_safetensors(path, with_metadata=True)[1] == {}


def test_model_state_dict_round_trip_loads_and_gives_the_same_outputs(tmp_path):
    model = models.digits_cnn(seed=0)
    bn = nn.Sequential(nn.Linear(4, 6, seed=0), nn.BatchNorm1d(6))
    bn.train()
    bn(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))  # running statistics move
    for m, shape in ((model, (3, 1, 8, 8)), (bn, (3, 4))):
        path = tmp_path / "m.safetensors"
        xio.save_safetensors(m.state_dict(), path)
        fresh = models.digits_cnn(seed=9) if m is model else nn.Sequential(nn.Linear(4, 6, seed=5), nn.BatchNorm1d(6))
        fresh.load_state_dict(xio.load_safetensors(path))
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(fresh.state_dict()[k], v)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        m.eval(), fresh.eval()
        np.testing.assert_array_equal(fresh(x), m(x))


def test_backend_argument_gives_arrays_of_that_backend(tmp_path):
    xps = pytest.importorskip("array_api_strict", reason="the strict namespace checks the backend argument")
    path = tmp_path / "s.safetensors"
    xio.save_safetensors({"w": np.arange(6.0).reshape(2, 3)}, path)
    back = xio.load_safetensors(path, backend=xps)
    assert type(back["w"]).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(np.asarray(xpnn.backend.to_numpy(back["w"])), np.arange(6.0).reshape(2, 3))
    model = nn.Linear(3, 2, backend=xps, dtype="float64")
    xio.save_safetensors(model.state_dict(), path)  # arrays of another backend are saved through NumPy
    assert set(xio.load_safetensors(path)) == {"weight", "bias"}


def _torch_mlp(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).double()


def _torch_cnn(torch):
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16), torch.nn.PReLU(), torch.nn.Linear(16, 3))
    net.double().train()
    with torch.no_grad():  # a few training-mode passes: running statistics that are not the initial ones
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8, dtype=torch.float64))
    return net.eval()


def _xpnn_cnn():
    kw = dict(dtype="float64")
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, **kw), nn.BatchNorm2d(4, **kw), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 16, **kw), nn.BatchNorm1d(16, **kw), nn.PReLU(**kw),
                         nn.Linear(16, 3, **kw))


def test_a_torch_safetensors_file_loads_and_gives_torchs_outputs(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for loading its safetensors files")
    st_torch = pytest.importorskip("safetensors.torch", reason="safetensors' PyTorch writer")
    cases = [(_torch_mlp(torch), build_model([64, 32, 10], "relu", dtype="float64"), (5, 64)),
             (_torch_cnn(torch), _xpnn_cnn(), (5, 1, 8, 8))]
    for net, ours, shape in cases:
        path = tmp_path / "torch.safetensors"
        st_torch.save_file(net.state_dict(), str(path))
        result = ours.load_state_dict(xio.load_safetensors(path))
        assert result.missing_keys == [] and result.unexpected_keys == []
        ours.eval()
        x = np.random.default_rng(0).standard_normal(shape)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours(x), want, rtol=1e-6, atol=1e-6)
        # and back: xpnn's file loads into the torch model (same names, dtypes and 0-d num_batches_tracked)
        xio.save_safetensors(ours.state_dict(), path)
        loaded = st_torch.load_file(str(path))
        net.load_state_dict(loaded)
        assert all(loaded[k].shape == v.shape and loaded[k].dtype == v.dtype for k, v in net.state_dict().items())


def _state(tmp_path, state):
    path = tmp_path / "s.safetensors"
    xio.save_safetensors(state, path)
    return xio.load_safetensors(path)


def test_a_state_that_does_not_match_the_model_names_the_key(tmp_path):
    model = build_model([4, 3, 2], "relu")
    good = model.state_dict()
    missing = {k: v for k, v in good.items() if k != "2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \['2.bias'\]"):
        model.load_state_dict(_state(tmp_path, missing))
    extra = dict(good, **{"3.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \['3.weight'\]"):
        model.load_state_dict(_state(tmp_path, extra))
    wrong = dict(good, **{"0.weight": np.zeros((3, 5), np.float32)})
    with pytest.raises(CheckpointError, match=r"shape mismatch for '0.weight'.*\(3, 4\).*\(3, 5\)"):
        model.load_state_dict(_state(tmp_path, wrong))
    np.testing.assert_array_equal(model.state_dict()["0.weight"], good["0.weight"])  # unchanged by a failed load


@pytest.mark.parametrize("damage", ["truncated", "header", "garbage", "empty"])
def test_a_truncated_or_corrupt_file_names_the_file(damage, tmp_path):
    path = tmp_path / "m.safetensors"
    xio.save_safetensors(build_model([8, 4], "relu").state_dict(), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-7])
    elif damage == "header":
        path.write_bytes(data[:8] + b"{" * 4 + data[12:])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a safetensors file at all")
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{path.name} \(\d+ bytes\) is truncated or not a safetensors file"):
        xio.load_safetensors(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(xio.CheckpointNotFoundError, match="no file"):
        xio.load_safetensors(tmp_path / "none.safetensors")


def test_a_failed_save_writes_nothing(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"previous")
    with pytest.raises(TypeError, match=r"entry 'model' is a dict, not an array"):
        xio.save_safetensors({"w": np.ones(2), "model": {"x": np.ones(2)}}, path)
    with pytest.raises(TypeError, match="metadata must map str to str"):
        xio.save_safetensors({"w": np.ones(2)}, path, metadata={"epochs": 3})
    with pytest.raises(TypeError, match="keys must be str"):
        xio.save_safetensors({0: np.ones(2)}, path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xio.save_safetensors({"w": np.ones(2)}, tmp_path / "no-folder" / "m.safetensors")
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.safetensors"]


def test_without_the_package_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r'pip install "xpnn\[safetensors\]"'):
        xio.save_safetensors({"w": np.ones(2)}, tmp_path / "m.safetensors")
    with pytest.raises(ImportError, match=r'pip install "xpnn\[safetensors\]"'):
        xio.load_safetensors(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# --- the command line ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    X, _ = xpnn.data.load_digits()
    np.save(path, X[:60])
    return path


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_cli_export_safetensors_then_predict_gives_the_checkpoints_labels(model, rows, tmp_path, capsys):
    ckpt, st = tmp_path / "d.npz", tmp_path / "d.safetensors"
    train = ["train", "--epochs", "1", "--no-progress", "--save", str(ckpt), "--model", model]
    mlp_flags = ["--hidden", "16", "--activation", "prelu", "--dropout", "0.2"]
    assert main(train + (mlp_flags if model == "mlp" else [])) == 0
    assert main(["export", str(ckpt), "--safetensors", str(st)]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(rows)]) == 0
    want = capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(st), "--input", str(rows)]) == 0
    assert capsys.readouterr().out == want
    meta = xio.load_safetensors(st, with_metadata=True)[1]
    assert meta["xpnn_model"] == model and "standardizer" in meta
    other = "cnn" if model == "mlp" else "mlp"
    assert main(["predict", "--checkpoint", str(st), "--input", str(rows), "--model", other]) == 1
    assert f"holds a {model} model" in capsys.readouterr().err


def test_cli_predict_on_a_torch_safetensors_file(rows, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="PyTorch writes the file xpnn predict reads")
    st_torch = pytest.importorskip("safetensors.torch", reason="safetensors' PyTorch writer")
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    path = tmp_path / "torch.safetensors"
    st_torch.save_file(net.state_dict(), str(path))
    X = np.load(rows)
    with torch.no_grad():
        want = net(torch.from_numpy(X.astype(np.float32))).numpy().argmax(axis=1)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(path), "--input", str(rows), "--model", "mlp",
                 "--activation", "tanh"]) == 0
    assert [int(v) for v in capsys.readouterr().out.split()] == want.tolist()  # no standardizer: rows as they are
    assert main(["predict", "--checkpoint", str(path), "--input", str(rows)]) == 1
    assert "--model mlp or --model cnn" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(path), "--input", str(rows), "--model", "cnn"]) == 1
    assert "not those of xpnn.models' CNNs" in capsys.readouterr().err
