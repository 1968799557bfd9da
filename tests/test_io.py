"""Checkpoints: exact round trips, metadata, atomic writes, clear errors for bad files."""
from __future__ import annotations

import collections
import math
import os

import array_api_strict as xs
import numpy as np
import pytest

import xpnn.io as xio
from xpnn.errors import CheckpointError


def _sample_state():
    rng = np.random.default_rng(0)
    model = collections.OrderedDict(
        [("0.weight", rng.normal(size=(4, 3)).astype(np.float32)), ("0.bias", rng.normal(size=4).astype(np.float32)),
         ("1.running_mean", np.zeros(4, np.float64)), ("1.num_batches", np.array(7, np.int64))]
    )
    optimizer = {
        "state": {0: {"step": 3, "exp_avg": rng.normal(size=(4, 3)), "max": None}, 1: {"step": np.float32(3.0)}},
        "param_groups": [{"params": [0, 1], "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                          "weight_decay": 0.0, "name": "main"}],
    }
    return {"model": model, "optimizer": optimizer, "epoch": 12, "extra": [1.5, "text", True, None, (2, [3])]}


def _assert_identical(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            _assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_identical(u, v)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # bit for bit
    elif isinstance(a, float):
        assert a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    else:
        assert a == b


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_exact(tmp_path, compress):
    state = _sample_state()
    path = tmp_path / "ckpt.npz"
    xio.save(state, path, compress=compress)
    _assert_identical(state, xio.load(path))


def test_round_trip_scalars_and_special_values(tmp_path):
    obj = [0.1, -0.0, float("inf"), -float("inf"), 5e-324, 1.7976931348623157e308, 2 ** 80, -3, True, False, None,
           "", "ünïcode ✓", {}, [], (), {None: 1, 2: "two", "2": 3, 1.5: 4, False: 5},
           np.float16(0.1), np.int8(-3), np.bool_(True),
           np.array([np.nan, -0.0, np.inf], np.float32), np.zeros((0, 2)), np.array("abc"),
           np.arange(6).reshape(2, 3).T]
    xio.save(obj, tmp_path / "s.npz")
    back = xio.load(tmp_path / "s.npz")
    _assert_identical(obj, back)
    assert math.isnan(xio.load(tmp_path / "s.npz")[20][0])
    xio.save(float("nan"), tmp_path / "nan.npz")
    assert math.isnan(xio.load(tmp_path / "nan.npz"))


def test_arrays_from_other_namespaces_are_saved_as_numpy(tmp_path):
    a = xs.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=xs.float32)
    xio.save({"w": a}, tmp_path / "x.npz")
    back = xio.load(tmp_path / "x.npz")["w"]
    assert isinstance(back, np.ndarray) and back.dtype == np.float32 and back.tolist() == [[1, 2], [3, 4]]


def test_metadata(tmp_path):
    state = _sample_state()
    xio.save(state, tmp_path / "m.npz", metadata={"config": {"hidden": [128], "lr": 1e-3}, "note": "digits"})
    obj, meta = xio.load(tmp_path / "m.npz", with_metadata=True)
    _assert_identical(state, obj)
    import xpnn

    assert meta["xpnn_version"] == xpnn.__version__ and meta["format_version"] == xio.FORMAT_VERSION
    assert meta["arrays"]["/model/0.weight"] == {"dtype": "float32", "shape": (4, 3)}
    assert meta["arrays"]["/optimizer/state/0/exp_avg"] == {"dtype": "float64", "shape": (4, 3)}
    assert meta["metadata"] == {"config": {"hidden": [128], "lr": 1e-3}, "note": "digits"}


def test_files_are_plain_npz_without_pickle(tmp_path):
    xio.save({"w": np.ones(3)}, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["__xpnn_metadata__", "a0"]


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="object array"):
        xio.save({"w": np.array([1, "a"], dtype=object)}, tmp_path / "o.npz")
    with pytest.raises(TypeError, match="set"):
        xio.save({"w": {1, 2}}, tmp_path / "o.npz")

    class Model:
        def state_dict(self):
            return {}

    with pytest.raises(TypeError, match="state_dict"):
        xio.save(Model(), tmp_path / "o.npz")
    with pytest.raises(TypeError, match="dict key"):
        xio.save({(1, 2): 3}, tmp_path / "o.npz")
    assert not os.listdir(tmp_path)  # nothing written, no temp file left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xio.save({}, tmp_path / "missing" / "x.npz")


def test_missing_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(xio.CheckpointNotFoundError, match="no checkpoint file"):
        xio.load(path)
    assert issubclass(xio.CheckpointNotFoundError, FileNotFoundError)
    xio.save(_sample_state(), path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            xio.load(tmp_path / "t.npz")
    # flip one byte inside the data of a stored array: the zip CRC catches it
    xio.save({"w": np.arange(1000.0)}, path)
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[data.index(b"\x93NUMPY") + 128 + 4000] ^= 0x01
    (tmp_path / "f.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="CRC"):
        xio.load(tmp_path / "f.npz")
    np.savez(tmp_path / "plain.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="not an xpnn checkpoint"):
        xio.load(tmp_path / "plain.npz")
    np.save(tmp_path / "single.npy", np.ones(2))
    with pytest.raises(CheckpointError, match="single .npy"):
        xio.load(tmp_path / "single.npy")


def _write_zip(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.mark.parametrize("make, what", [
    (lambda p: p.write_text("label,pixel0\n3,0.5\n"), "is not an xpnn checkpoint: it is a text file"),
    (lambda p: __import__("xpnn.data", fromlist=["write_idx"]).write_idx(p, np.zeros((2, 3, 3), np.uint8)),
     "is not an xpnn checkpoint: it is an IDX file"),
    (lambda p: p.write_bytes(bytes(range(256))), "is not an xpnn checkpoint: it is a file starting with the bytes"),
    (lambda p: p.write_bytes(b"\x80\x04K\x01."), "is not an xpnn checkpoint: it is a Python pickle"),
    (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20)), "is not an xpnn checkpoint: it is a gzip-compressed"),
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: _write_zip(p, {"model.pt": b"x", "notes.txt": b"y"}), "is a ZIP archive but not an xpnn checkpoint"),
    (lambda p: np.savez(p, w=np.ones(2)), "is an NPZ file but not an xpnn checkpoint"),
    (lambda p: np.save(p, np.ones(2)), "is not an xpnn checkpoint: it is a single .npy array"),
], ids=["text", "idx", "random-bytes", "pickle", "gzip", "empty", "zip", "npz", "npy"])
def test_a_file_that_is_no_checkpoint_is_named_and_described(tmp_path, make, what):
    """Any file that is no checkpoint: a CheckpointError naming the file and what it is, never numpy's guess that an
    unknown file holds pickled data ("allow_pickle=")."""
    path = tmp_path / "ckpt.bin"
    make(path)
    path = next(tmp_path.iterdir())  # np.save / np.savez add their own suffix
    with pytest.raises(CheckpointError) as caught:
        xio.load(path)
    message = str(caught.value)
    assert message.startswith(f"xpnn.load: {path} ") and what in message
    assert "allow_pickle" not in message and "pickled (object) data" not in message


def test_damaged_metadata_is_a_checkpoint_error(tmp_path):
    import json

    for meta in ({"format": xio.FORMAT, "format_version": 1, "arrays": []},
                 {"format": xio.FORMAT, "format_version": 1, "arrays": {}}):  # no table / no structure
        np.savez(tmp_path / "m.npz", **{xio.META_KEY: np.frombuffer(json.dumps(meta).encode(), np.uint8)})
        with pytest.raises(CheckpointError, match="damaged metadata"):
            xio.load(tmp_path / "m.npz")


def test_odd_dtypes_and_file_names_round_trip(tmp_path):
    obj = {"be": np.arange(4, dtype=">f8"), "bei": np.arange(3, dtype=">i4"), "u": np.array(["ab", "ü"]),
           "empty": np.zeros((0, 3), np.float32), "c": np.array([1 + 2j], np.complex64)}
    path = tmp_path / "we ird 'näme' ✓ [1].npz"
    xio.save(obj, path)
    _assert_identical(obj, xio.load(path))


def test_failed_rename_removes_the_temporary_file(tmp_path):
    (tmp_path / "d.npz").mkdir()  # os.replace(file, directory) fails
    with pytest.raises(OSError):
        xio.save({"x": np.ones(3)}, tmp_path / "d.npz")
    assert os.listdir(tmp_path) == ["d.npz"]


def test_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(xio, "FORMAT_VERSION", 99)
    xio.save({"a": 1}, tmp_path / "n.npz")
    monkeypatch.setattr(xio, "FORMAT_VERSION", 1)
    with pytest.raises(CheckpointError, match="format 99.*upgrade"):
        xio.load(tmp_path / "n.npz")


def test_interrupted_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = {"w": np.arange(1000, dtype=np.float32)}
    xio.save(old, path)
    before = path.read_bytes()

    real_write = np.lib.format.write_array
    calls = []

    def crash_midway(fp, array, *args, **kwargs):  # write part of the second array, then die
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x00" * 100)
            raise KeyboardInterrupt("simulated crash during save")
        return real_write(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        xio.save({"w": np.zeros(1000, np.float32), "v": np.ones(5000)}, path)
    monkeypatch.undo()
    assert len(calls) == 2
    assert path.read_bytes() == before
    _assert_identical(old, xio.load(path))
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file was removed


def test_save_replaces_and_keeps_file_mode(tmp_path):
    path = tmp_path / "a.npz"
    xio.save({"x": 1}, path)
    os.chmod(path, 0o640)
    xio.save({"x": 2}, path)
    assert xio.load(path) == {"x": 2}
    assert os.stat(path).st_mode & 0o777 == 0o640


# --- with real models and optimizers -------------------------------------------------------------------------------

def _model(seed):
    from xpnn import nn

    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(6, 16, seed=rng), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3, seed=rng))


def _train_steps(model, opt, X, y, steps):
    from xpnn import nn

    loss_fn = nn.CrossEntropyLoss()
    for i in range(steps):
        xb, yb = X[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]
        opt.zero_grad()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()


def test_model_and_optimizer_checkpoint_resumes_exactly(tmp_path):
    """Save -> load -> identical predictions, and training resumed from the checkpoint matches training that
    never stopped, bit for bit."""
    from xpnn import optim

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = rng.integers(0, 3, 80)
    model = _model(0)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    _train_steps(model, opt, X, y, 5)
    xio.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "run.npz")

    restored = _model(1)  # different initial weights
    ropt = optim.Adam(restored.parameters(), lr=1e-2)
    ckpt = xio.load(tmp_path / "run.npz")
    restored.load_state_dict(ckpt["model"])
    ropt.load_state_dict(ckpt["optimizer"])
    model.eval(), restored.eval()
    assert np.array_equal(model(X), restored(X))  # identical predictions
    model.train(), restored.train()
    _train_steps(model, opt, X[40:], y[40:], 5)
    _train_steps(restored, ropt, X[40:], y[40:], 5)
    for (k, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert np.array_equal(a, b), k


def test_loading_into_a_mismatched_model_fails_clearly(tmp_path):
    from xpnn import nn

    xio.save(_model(0).state_dict(), tmp_path / "m.npz")
    other = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="shape"):
        other.load_state_dict(xio.load(tmp_path / "m.npz"))
