"""`xpnn predict --checkpoint PATH --input FILE.npy|.csv`: the labels of a checkpoint written by `xpnn train --save`
equal the model's own argmax on the same rows; inputs as .npy rows, .npy images, .csv with and without a header;
--output files; errors that name the flag."""
from __future__ import annotations

import numpy as np
import pytest

import xpnn
import xpnn.data as D
from xpnn.cli import build_model, load_trained, main
from xpnn.train import predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits.npz"
    assert main(["train", "--epochs", "3", "--hidden", "32", "--dropout", "0.1", "--no-progress",
                 "--save", str(path)]) == 0
    return path


def _expected(path, X):
    """Labels computed by hand from the checkpoint: standardize, forward, argmax."""
    state = xpnn.load(path)
    cfg = state["config"]
    model = build_model(cfg["sizes"], cfg["activation"], dtype=cfg["dtype"], dropout=cfg["dropout"])
    model.load_state_dict(state["model"])
    scaler = D.Standardizer().load_state_dict(state["standardizer"])
    logits = predict(model, scaler.transform(X.astype(np.float32)))
    return np.argmax(np.asarray(logits), axis=1)


def _printed(out: str) -> np.ndarray:
    return np.array([int(v) for v in out.split()])


def test_predict_prints_the_labels_of_npy_rows(checkpoint, tmp_path, capsys):
    X, y = D.load_digits()
    X = X[:200]
    np.save(tmp_path / "rows.npy", X)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "rows.npy")]) == 0
    labels = _printed(capsys.readouterr().out)
    np.testing.assert_array_equal(labels, _expected(checkpoint, X))
    assert labels.shape == (200,) and np.mean(labels == y[:200]) > 0.85  # a trained model, not noise


def test_predict_images_csv_header_and_output_files(checkpoint, tmp_path, capsys):
    images, _ = D.load_digits(images=True)
    X = images[:30].reshape(30, -1)
    want = _expected(checkpoint, X)
    np.save(tmp_path / "img.npy", images[:30])  # (30, 8, 8): flattened to rows
    np.savetxt(tmp_path / "rows.csv", X, delimiter=",", header=",".join(f"p{i}" for i in range(64)), comments="")
    np.savetxt(tmp_path / "plain.csv", X[:1], delimiter=",")  # one row
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "img.npy"),
                 "--output", str(tmp_path / "out.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "rows.csv"),
                 "--output", str(tmp_path / "out.csv")]) == 0
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "out.csv", dtype=np.int64), want)
    assert "wrote 30 class labels" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "plain.csv")]) == 0
    np.testing.assert_array_equal(_printed(capsys.readouterr().out), want[:1])


def test_load_trained_rebuilds_model_in_eval_mode(checkpoint):
    model, scaler, config = load_trained(str(checkpoint))
    assert not model.training and config["sizes"] == [64, 32, 10] and scaler.mean_.shape == (64,)


def test_predict_errors_name_the_flag(checkpoint, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((3, 10)))
    (tmp_path / "x.json").write_text("{}")
    xpnn.save({"w": np.zeros(2)}, tmp_path / "other.npz")
    cases = [
        (["--checkpoint", str(tmp_path / "none.npz"), "--input", str(tmp_path / "wide.npy")], 1, "--checkpoint"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "wide.npy")], 1, "expects rows of 64 features"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "x.json")], 1, "--input"),
        (["--checkpoint", str(tmp_path / "other.npz"), "--input", str(tmp_path / "wide.npy")], 1,
         "not a checkpoint written by `xpnn train --save`"),
        (["--checkpoint", str(checkpoint), "--input", str(tmp_path / "wide.npy"), "--output", "/nonexistent/o.npy"],
         1, "--output"),
        (["--checkpoint", str(checkpoint)], 2, "--input"),
        (["--checkpoint", str(checkpoint), "--input", "x.npy", "--batch-size", "0"], 2, "--batch-size"),
    ]
    for argv, code, message in cases:
        assert main(["predict", *argv]) == code, argv
        assert message in capsys.readouterr().err, argv
