"""The xpnn command line: train (digits, MNIST files, save, plot), info, bench, errors; python -m xpnn."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import xpnn
import xpnn.data as D
from xpnn.backend import cuda_available
from xpnn.cli import main

from _fake_mnist import write_fake_mnist

ROOT = Path(__file__).resolve().parents[1]


def _accuracy(out: str) -> float:
    return float(out.split("test accuracy: ")[1].split()[0])


def test_train_defaults_reach_97_percent_on_digits_with_a_progress_bar(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: bars (not on a file/pipe)
    assert main(["train"]) == 0
    out, err = capsys.readouterr()
    assert "digits: 1347 train / 450 test rows" in out and "model 64-128-10 relu, adam lr 0.003" in out
    assert _accuracy(out) >= 0.97
    assert "epoch 20/20" in err and "43/43" in err  # tqdm bars on stderr


@pytest.mark.parametrize("seed", [1, 2])
def test_train_defaults_hold_for_other_seeds(capsys, seed):
    assert main(["train", "--seed", str(seed), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert _accuracy(out) >= 0.97
    assert out.count("\nepoch ") == 20  # one plain line per epoch


def test_train_options_save_and_plot(capsys, tmp_path):
    ckpt, png = tmp_path / "run.npz", tmp_path / "curves.png"
    code = main(["train", "--hidden", "32,16", "--activation", "tanh", "--optimizer", "momentum", "--lr", "0.02",
                 "--epochs", "3", "--batch-size", "64", "--seed", "3", "--dtype", "float64", "--no-progress",
                 "--save", str(ckpt), "--plot", str(png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "model 64-32-16-10 tanh, momentum lr 0.02, 3 epochs, batch 64" in out
    assert _accuracy(out) > 0.8
    state, meta = xpnn.load(ckpt, with_metadata=True)
    assert set(state) == {"model", "optimizer", "standardizer", "config"}
    assert state["config"]["sizes"] == [64, 32, 16, 10] and state["config"]["epochs"] == 3
    assert state["model"]["0.weight"].shape == (32, 64) and state["model"]["0.weight"].dtype == np.float64
    assert meta["arrays"]["/standardizer/mean"]["shape"] == (64,)
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the checkpoint rebuilds the model: same test accuracy as printed
    from xpnn import nn
    from xpnn.cli import build_model
    from xpnn.train import evaluate

    model = build_model(state["config"]["sizes"], "tanh", dtype="float64")
    model.load_state_dict(state["model"])
    X, y = D.load_digits()
    _, X_test, _, y_test = D.train_test_split(X, y, 0.25, seed=3, stratify=True)
    scaler = D.Standardizer().load_state_dict(state["standardizer"])
    acc = evaluate(model, nn.CrossEntropyLoss(), scaler.transform(X_test.astype(np.float64)), y_test)["accuracy"]
    assert acc == pytest.approx(state["config"]["test_accuracy"], abs=1e-9)


def test_train_on_mnist_files(capsys, tmp_path):
    write_fake_mnist(tmp_path, 200, 50, noise=40, gz=False)
    assert main(["train", "--dataset", f"mnist:{tmp_path}", "--hidden", "16", "--epochs", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "200 train / 50 test rows, 784 features, 10 classes" in out and _accuracy(out) > 0.9


def test_train_errors(capsys, tmp_path):
    assert main(["train", "--dataset", f"mnist:{tmp_path}"]) == 1
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["train", "--dataset", "cifar"]) == 1
    assert "digits' or 'mnist:PATH'" in capsys.readouterr().err
    assert main(["train", "--hidden", "12,x"]) == 2
    assert "--hidden" in capsys.readouterr().err
    assert main(["train", "--optimizer", "lbfgs"]) == 2
    capsys.readouterr()


@pytest.mark.skipif(cuda_available(), reason="checks the error shown when no GPU is present")
def test_train_cuda_without_gpu_explains(capsys):
    assert main(["train", "--backend", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "xpnn train: error: --backend cuda: backend 'cuda'" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 1
    assert "{train,predict,info,bench}" in capsys.readouterr().out
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"xpnn {xpnn.__version__}" in out and "numpy: available" in out and "cuda:" in out
    assert "fused kernels enabled:" in out and "array-api-compat" in out


def test_bench_delegates_to_xpnn_bench(monkeypatch):
    seen = []
    fake = types.ModuleType("xpnn.bench")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "xpnn.bench", fake)
    monkeypatch.setattr(xpnn, "bench", fake, raising=False)
    assert main(["bench", "--quick", "--help"]) == 3
    assert seen == [["--quick", "--help"]]


def test_python_dash_m_xpnn():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "xpnn", "info"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("xpnn ")


@pytest.mark.parametrize("argv, flags", [
    (["--model", "cnn", "--hidden", "64"], "--hidden applies"),
    (["--model", "cnn", "--activation", "tanh"], "--activation applies"),
    (["--model", "cnn", "--dropout", "0.1", "--hidden", "0"], "--hidden, --dropout apply"),
])
def test_mlp_only_flags_with_the_cnn_are_usage_errors(capsys, argv, flags):
    assert main(["train", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: xpnn train" in err
    assert f"xpnn train: error: {flags} to --model mlp only; --model cnn has a fixed architecture" in err


def test_test_size_with_mnist_is_a_usage_error(capsys, tmp_path):
    assert main(["train", "--dataset", f"mnist:{tmp_path}", "--test-size", "0.2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--test-size applies to --dataset digits only" in err and "usage: xpnn train" in err


def test_mlp_defaults_still_apply_and_are_saved(capsys, tmp_path):
    assert main(["train", "--epochs", "1", "--no-progress", "--save", str(tmp_path / "c.npz")]) == 0
    config = xpnn.load(tmp_path / "c.npz")["config"]
    assert (config["sizes"], config["activation"], config["dropout"]) == ([64, 128, 10], "relu", 0.0)
    assert "digits: 1347 train / 450 test rows" in capsys.readouterr().out  # --test-size default 0.25


@pytest.mark.parametrize("command, argv", [("train", []), ("predict", ["--checkpoint", "c.npz", "--input", "x.npy"])])
def test_an_unknown_flag_shows_the_subcommands_usage(capsys, command, argv):
    assert main([command, *argv, "--bogus"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"usage: xpnn {command} ")
    assert f"xpnn {command}: error: unrecognized arguments: --bogus" in err


def test_train_help_describes_both_models(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Train an MLP classifier" not in text
    assert "Train a classifier (an MLP, or with --model cnn a small CNN" in text and "LeNet-5" in text
    assert "mlp only: hidden layer widths" in text


def test_train_with_output_redirected_prints_lines_without_carriage_returns(tmp_path):
    """stdout and stderr to files (a log): one plain line per epoch, no tqdm bar redrawn with carriage returns."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        proc = subprocess.run([sys.executable, "-m", "xpnn", "train", "--epochs", "2", "--hidden", "16"], stdout=out,
                              stderr=err, env=env, cwd=tmp_path, timeout=300)
    stdout, stderr = (tmp_path / "out.log").read_text(), (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, stderr
    assert "\r" not in stdout + stderr and stderr == ""
    assert [line.split("  ")[0] for line in stdout.splitlines() if line.startswith("epoch ")] == ["epoch 1/2",
                                                                                                 "epoch 2/2"]


def test_a_reader_that_leaves_early_stops_train_quietly(tmp_path):
    """``xpnn train | head -1``: the later lines meet a closed pipe; the command stops with 141 (128 + SIGPIPE,
    like cat), without a BrokenPipeError traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "xpnn", "train", "--epochs", "3", "--hidden", "16", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline().startswith(b"xpnn train: digits")
        proc.stdout.close()  # the reader leaves
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 141, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err and "BrokenPipeError" not in err
def test_train_stops_with_a_clear_error_when_the_loss_is_nan(capsys):
    """A diverging run (lr 1e30) stops at the first NaN loss: exit code 1 and one line naming epoch and batch."""
    code = main(["train", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "3", "--hidden", "16", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "xpnn train: error: fit: the training loss became nan at epoch 1, batch" in err
    assert "Traceback" not in err
