"""The flags of `xpnn train` / `xpnn info` as a first use meets them: every flag has help with its default, bad values are
usage errors naming the flag before any output, GPU advice spelled as flags, label smoothing named in the output."""
from __future__ import annotations

import pytest

from xpnn.backend import cuda_available
from xpnn.cli import _parser, main


def _train_actions():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return sub.choices["train"]._actions


def test_every_train_flag_has_help_with_its_default():
    for action in _train_actions():
        if action.dest in ("help", "no_progress"):
            continue
        assert action.help and "default" in action.help, action.option_strings


@pytest.mark.parametrize("argv, flag", [
    (["--seed", "-1"], "--seed"), (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "two"], "--epochs"), (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--weight-decay", "-1"], "--weight-decay"), (["--dropout", "1"], "--dropout"),
    (["--label-smoothing", "1.5"], "--label-smoothing"), (["--test-size", "1"], "--test-size"),
])
def test_bad_flag_values_are_usage_errors_before_any_output(capsys, argv, flag):
    assert main(["train", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"argument {flag}:" in err


def test_model_too_big_for_memory_fails_before_the_banner(capsys, monkeypatch):
    import xpnn.cli as cli

    monkeypatch.setattr(cli, "_available_memory", lambda: 2**30)  # 1 GiB
    assert main(["train", "--hidden", "100000,100000"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "--hidden 100000,100000" in err and "GiB" in err and "Traceback" not in err


def test_backend_cpu_is_numpy(capsys):
    assert main(["train", "--backend", "cpu", "--epochs", "1", "--no-progress"]) == 0
    assert "backend numpy" in capsys.readouterr().out


@pytest.mark.skipif(cuda_available(), reason="checks the advice shown when no GPU is present")
def test_cuda_without_gpu_advice_is_a_flag(capsys):
    assert main(["train", "--backend", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "--backend numpy" in err and "backend='numpy'" not in err


@pytest.mark.skipif(cuda_available(), reason="checks what info says when no GPU is present")
def test_info_without_gpu_says_kernels_are_not_used(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fused kernels enabled: yes, but not used here: no CUDA device or driver found" in out


def test_label_smoothing_is_named_next_to_each_loss(capsys):
    assert main(["train", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "loss and val_loss: cross-entropy with label smoothing 0.1" in out
    assert "test loss (plain cross-entropy, without label smoothing)" in out
    assert main(["train", "--epochs", "1", "--no-progress", "--label-smoothing", "0"]) == 0
    out = capsys.readouterr().out
    assert "label smoothing" not in out and "1 epoch," in out
