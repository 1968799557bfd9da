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


def test_load_trained_lives_in_xpnn_models_and_the_cli_name_is_the_same_function(checkpoint):
    import xpnn.cli
    import xpnn.models

    assert xpnn.cli.load_trained is xpnn.models.load_trained and xpnn.cli.build_model is xpnn.models.mlp
    model, scaler, config = xpnn.models.load_trained(checkpoint)  # a Path works too
    X, y = D.load_digits()
    logits = np.asarray(model(scaler.transform(X[:100])))
    assert np.mean(logits.argmax(axis=1) == y[:100]) > 0.85


def test_the_checkpoint_saves_the_input_range_of_the_training_data(checkpoint):
    assert xpnn.load(checkpoint)["config"]["input_range"] == [0.0, 1.0]  # digits: pixels in [0, 1]


@pytest.mark.parametrize("scale, dtype, given, hint", [
    (255, np.uint8, "[0, 255]", "X / 255"),  # 8-bit pixels
    (16, np.float64, "[0, 16]", "X / 16"),  # raw digit counts (sklearn's load_digits)
])
def test_predict_warns_when_the_input_is_far_outside_the_trained_range(checkpoint, tmp_path, capsys, scale, dtype,
                                                                       given, hint):
    X, _ = D.load_digits()
    np.save(tmp_path / "raw.npy", np.round(X[:20] * scale).astype(dtype))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "raw.npy")]) == 0
    out, err = capsys.readouterr()
    assert len(_printed(out)) == 20  # still predicts
    assert "xpnn predict: warning: --input" in err and f"holds values in {given}" in err
    assert "far outside [0, 1]" in err and str(checkpoint) in err and f"e.g. {hint}" in err


def test_predict_does_not_warn_for_input_in_the_trained_range(checkpoint, tmp_path, capsys):
    X, _ = D.load_digits()
    np.save(tmp_path / "rows.npy", X[:20])
    np.save(tmp_path / "noisy.npy", X[:20] * 1.5 - 0.2)  # a little outside: not far
    capsys.readouterr()
    for name in ("rows.npy", "noisy.npy"):
        assert main(["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / name)]) == 0
        assert capsys.readouterr().err == ""


def test_predict_says_a_file_that_is_no_checkpoint_is_not_one(checkpoint, tmp_path, capsys):
    from xpnn.data import write_idx

    np.save(tmp_path / "rows.npy", np.zeros((2, 64)))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "rows.csv").write_text("1,2,3\n")
    cases = [("train-images-idx3-ubyte", "it is an IDX file"), ("rows.csv", "it is a text file"),
             ("rows.npy", "it is a single .npy array")]
    for name, what in cases:
        path = tmp_path / name
        assert main(["predict", "--checkpoint", str(path), "--input", str(tmp_path / "rows.npy")]) == 1
        err = capsys.readouterr().err
        assert f"xpnn predict: error: --checkpoint {path} is not an xpnn checkpoint: {what}" in err, err
        assert "expected an NPZ archive written by xpnn.save or `xpnn train --save`" in err
        assert "pickle" not in err and "truncated" not in err
