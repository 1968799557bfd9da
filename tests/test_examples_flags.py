"""The example scripts' flags: incompatible or bad flags rejected before any work, whole descriptions in --help, honest
epoch messages, titled log-scale loss plots."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from _fake_mnist import write_fake_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name)] + [str(a) for a in args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--pca", 20, "--cutout", 3], "--cutout blanks squares"),
    (["--epochs", 0], "argument --epochs: must be >= 1"),
    (["--pca", 65], "argument --pca"),
    (["--dropconnect", 1.0], "argument --dropconnect"),
])
def test_digits_rejects_bad_flags_up_front(monkeypatch, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        run_example("digits_classifier.py", argv, monkeypatch, capsys)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and message in err and out == ""


@pytest.mark.parametrize("name", ["digits_classifier.py", "mnist.py", "two_layer_numpy.py", "two_layer_xpnn.py"])
def test_help_description_is_whole_sentences(monkeypatch, capsys, name):
    with pytest.raises(SystemExit):
        run_example(name, ["--help"], monkeypatch, capsys)
    out = capsys.readouterr().out
    description = " ".join(out.split("\n\n")[1].split())
    assert description.endswith((".", ")")), description


def test_digits_says_whether_early_stopping_fired(monkeypatch, capsys):
    out = run_example("digits_classifier.py", ["--epochs", 2, "--hidden", 16, "--no-progress"], monkeypatch,
                      capsys).out
    assert "ran all 2 epochs (early stopping did not trigger)" in out and "stopped after" not in out
    assert "test loss (plain cross-entropy)" in out and "label smoothing 0.1" in out
    # a large learning rate on 16 hidden units overfits quickly: val_loss turns up and early stopping fires
    out = run_example("digits_classifier.py", ["--epochs", 60, "--hidden", 16, "--lr", 0.05, "--no-progress"],
                      monkeypatch, capsys).out
    assert "early stopping after epoch" in out and "restored" in out


def test_mnist_one_epoch_is_singular(monkeypatch, capsys, tmp_path):
    write_fake_mnist(tmp_path)
    out = run_example("mnist.py", ["--path", tmp_path, "--backend", "cpu", "--hidden", 16, "--epochs", 1,
                                   "--limit", 100, "--no-progress"], monkeypatch, capsys).out
    assert "after 1 epoch " in out and "1 epochs" not in out


@pytest.mark.parametrize("name", ["two_layer_numpy.py", "two_layer_xpnn.py"])
def test_two_layer_plots_are_titled_and_log_scale(monkeypatch, capsys, tmp_path, name):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    seen = {}
    real = Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        seen.update(title=ax.get_title(), yscale=ax.get_yscale())
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    run_example(name, ["--n", 8, "--d-in", 20, "--hidden", 10, "--d-out", 3, "--steps", 201, "--lr", 1e-3,
                       "--plot", tmp_path / "loss.png"], monkeypatch, capsys)
    assert seen["yscale"] == "log" and "two-layer sigmoid net" in seen["title"]
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
