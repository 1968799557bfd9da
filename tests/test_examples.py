"""The scripts in examples/ run (small sizes) and do what they say."""
from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from _fake_mnist import write_fake_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name)] + [str(a) for a in args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr()


def _losses(out):
    rows = [line.split() for line in out.splitlines() if line and line.split()[0].isdigit()]
    return np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def test_two_layer_numpy_and_xpnn_print_the_same_losses(monkeypatch, capsys, tmp_path):
    small = ["--n", 16, "--d-in", 50, "--hidden", 20, "--d-out", 5, "--steps", 301, "--lr", 1e-3]
    out_np = run_example("two_layer_numpy.py", small + ["--plot", tmp_path / "a.png"], monkeypatch, capsys).out
    out_xp = run_example("two_layer_xpnn.py", small + ["--backend", "numpy"], monkeypatch, capsys).out
    steps_np, loss_np = _losses(out_np)
    steps_xp, loss_xp = _losses(out_xp)
    assert steps_np.tolist() == steps_xp.tolist() == [0, 100, 200, 300]
    assert np.allclose(loss_np, loss_xp, rtol=1e-9)
    assert loss_np[-1] < loss_np[0] / 5  # it learns
    assert (tmp_path / "a.png").stat().st_size > 0
    assert "backend numpy, dtype float64" in out_xp


def test_two_layer_xpnn_float32(monkeypatch, capsys):
    out = run_example("two_layer_xpnn.py", ["--n", 8, "--d-in", 20, "--hidden", 10, "--d-out", 3, "--steps", 101,
                                            "--lr", 1e-3, "--dtype", "float32"], monkeypatch, capsys).out
    _, losses = _losses(out)
    assert losses[-1] < losses[0] and "dtype float32" in out


def test_digits_classifier(monkeypatch, capsys, tmp_path):
    out = run_example("digits_classifier.py", ["--epochs", 6, "--hidden", 32, "--no-progress", "--cutout", 2,
                                               "--dropconnect", 0.1, "--save", tmp_path / "d.npz",
                                               "--plot", tmp_path / "d.png"], monkeypatch, capsys).out
    acc = float(out.split("test accuracy ")[1].split(",")[0])
    assert acc > 0.9
    assert "reloaded model gives identical predictions: True" in out
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_digits_classifier_with_pca(monkeypatch, capsys):
    out = run_example("digits_classifier.py", ["--epochs", 4, "--hidden", 32, "--pca", 20, "--no-progress"],
                      monkeypatch, capsys).out
    assert "train (1212, 20)" in out and float(out.split("test accuracy ")[1].split(",")[0]) > 0.85


def test_mnist_example_on_tiny_idx_files(monkeypatch, capsys, tmp_path):
    write_fake_mnist(tmp_path)
    out = run_example("mnist.py", ["--path", tmp_path, "--backend", "numpy", "--hidden", 32, "--epochs", 3,
                                   "--limit", 200, "--no-progress", "--save", tmp_path / "m.npz"],
                      monkeypatch, capsys).out
    assert "MNIST: 200 train / 100 test images" in out
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.9
    assert (tmp_path / "m.npz").exists()


def test_mnist_example_reports_missing_files(monkeypatch, capsys, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        run_example("mnist.py", ["--path", tmp_path, "--backend", "numpy"], monkeypatch, capsys)


def test_cnn_digits_example(monkeypatch, capsys, tmp_path):
    out = run_example("cnn_digits.py", ["--epochs", 3, "--channels", "4,8", "--no-progress",
                                        "--save", tmp_path / "c.npz"], monkeypatch, capsys).out
    assert "digits: train (1347, 1, 8, 8), test (450, 1, 8, 8)" in out and "Conv2d(1, 4" in out
    assert float(out.split("test accuracy ")[1].split(",")[0]) > 0.9
    assert "reloaded model gives identical predictions: True" in out


def test_mnist_example_cnn_on_tiny_idx_files(monkeypatch, capsys, tmp_path):
    write_fake_mnist(tmp_path)
    out = run_example("mnist.py", ["--path", tmp_path, "--backend", "numpy", "--model", "cnn", "--epochs", 3,
                                   "--limit", 200, "--lr", 3e-3, "--no-progress"], monkeypatch, capsys).out
    assert "MNIST: 200 train / 100 test images" in out
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.8


def test_autograd_custom_example(monkeypatch, capsys):
    out = run_example("autograd_custom.py", ["--epochs", 8], monkeypatch, capsys).out
    acc = float(re.search(r"test accuracy \(0-4 vs 5-9\) after 8 epochs: ([0-9.]+)", out).group(1))
    assert acc > 0.9
    rel = float(re.search(r"relative difference ([0-9.e+-]+)", out).group(1))
    assert rel < 1e-6


def test_adding_problem_example_learns(monkeypatch, capsys):
    """An LSTM on packed variable-length sequences learns the adding problem (guessing the mean: MSE ~0.167)."""
    out = run_example("adding_problem.py", ["--steps", 400, "--length", 10], monkeypatch, capsys).out
    mse = float(re.search(r"test mean squared error after 400 steps: ([0-9.]+)", out).group(1))
    assert mse < 0.02


@pytest.mark.parametrize("name", ["two_layer_xpnn.py", "cnn_digits.py", "autograd_custom.py", "digits_classifier.py",
                                  "mnist.py", "adding_problem.py"])
def test_examples_accept_every_backend_name_of_the_cli(name, monkeypatch, capsys):
    """``--backend cpu`` works in the examples as in ``xpnn train`` (cpu is numpy)."""
    with pytest.raises(SystemExit) as caught:
        run_example(name, ["--help"], monkeypatch, capsys)
    assert caught.value.code == 0
    choices = re.search(r"--backend \{([\w,]+)\}", capsys.readouterr().out)[1].split(",")
    assert sorted(choices) == ["auto", "cpu", "cuda", "numpy"]


def test_two_layer_xpnn_backend_cpu_is_numpy(monkeypatch, capsys):
    out = run_example("two_layer_xpnn.py", ["--n", 8, "--d-in", 20, "--hidden", 10, "--d-out", 3, "--steps", 101,
                                            "--backend", "cpu"], monkeypatch, capsys).out
    assert "backend numpy" in out
def test_readme_numpy_network_converts_in_a_few_lines_and_gives_the_same_numbers():
    """README "From NumPy code": the NumPy network and its xpnn.functional version, each run; the xpnn one differs in
    fewer than 10 lines and ends with the same weights and loss."""
    import difflib

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### From NumPy code\n", 1)[1].split("\n### ", 1)[0]
    numpy_code, xpnn_code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "import xpnn.functional as F" in xpnn_code and "xpnn.functional" not in numpy_code
    edited = [line for line in difflib.ndiff(numpy_code.splitlines(), xpnn_code.splitlines()) if line[:2] == "+ "]
    assert 0 < len(edited) < 10, edited
    runs = []
    for code in (numpy_code, xpnn_code):
        scope: dict = {"__name__": "__readme__"}
        exec(compile(code, "README.md", "exec"), scope)
        runs.append(scope)
    np.testing.assert_allclose(runs[1]["loss"], runs[0]["loss"], rtol=1e-9)
    for name in ("W1", "b1", "W2", "b2"):
        assert runs[1][name].shape == runs[0][name].shape  # the (1, H) biases kept their shape
        np.testing.assert_allclose(runs[1][name], runs[0][name], rtol=1e-7, atol=1e-10)
    assert runs[0]["loss"] < 2.0  # it trains (from above log(10) = 2.3)
