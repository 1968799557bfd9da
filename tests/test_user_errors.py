"""What first-time users (PyTorch habits, hand-written NumPy code) run into: the README's Python blocks run as
written, and common mistakes give errors that say what to do instead of a deep traceback or a silent no-op."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import xpnn
import xpnn.functional as F
from xpnn import nn, optim
from xpnn.cli import main
from xpnn.errors import CheckpointError, DTypeError, NonFiniteError, ShapeError
from xpnn.train import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def _mlp(seed: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8, seed=seed), nn.ReLU(), nn.Linear(8, 3, seed=seed + 1))


def _data(n: int = 40):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


# --- the README ---------------------------------------------------------------------------------------------------

def test_readme_has_python_blocks():
    assert len(README_BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_python_block_runs_verbatim(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # blocks may write files (curves.png, run.npz)
    for module in re.findall(r"^(?:import|from) (torch|sklearn|onnxruntime)\b", README_BLOCKS[index], re.M):
        pytest.importorskip(module, reason=f"README block {index} compares with {module}, which is not installed")
    exec(compile(README_BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "a README example should show its result"


def test_readme_dotted_names_work_after_a_plain_import_xpnn():
    """Every ``xpnn.a.b`` the README writes outside shell blocks and import lines (``xpnn.models.load_trained(...)``,
    ``xpnn.amp.GradScaler``) is reachable after ``import xpnn`` alone, checked in a fresh interpreter (here the
    tests have imported every submodule already)."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # drop shell blocks (command lines, mutmut's mutant names); python blocks and prose stay
    text = re.sub(r"```(\w*)\n(.*?)```", lambda m: m[2] if m[1] == "python" else "", text, flags=re.S)
    names = sorted(set(re.findall(r"(?<![\w/.])(?<!from )(?<!import )xpnn(?:\.[A-Za-z_]\w*)+", text)))
    assert "xpnn.models.load_trained" in names and len(names) > 10
    check = ("import functools, sys, xpnn\n"
             "def ok(name):\n"
             "    try:\n"
             "        functools.reduce(getattr, name.split('.')[1:], xpnn)\n"
             "    except AttributeError:\n"
             "        return False\n"
             "    return True\n"
             "print([n for n in sys.argv[1:] if not ok(n)])")
    proc = subprocess.run([sys.executable, "-c", check, *names], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"README names that `import xpnn` does not reach: {proc.stdout}"


# --- xpnn train ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, path, message", [
    ("--save", "missing_dir/run.npz", "folder"),
    ("--plot", "missing_dir/curves.png", "folder"),
    ("--plot", "curves.txt", "unsupported image format 'txt'"),
])
def test_cli_bad_output_path_fails_before_training(tmp_path, capsys, flag, path, message):
    assert main(["train", "--no-progress", flag, str(tmp_path / path)]) == 1
    out, err = capsys.readouterr()
    assert f"xpnn train: error: {flag}" in err and message in err
    assert "epoch" not in out  # nothing was trained (and lost)


def test_cli_expands_home_in_dataset_and_save_paths(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    assert main(["train", "--dataset", "mnist:~/mnist"]) == 1  # the shell does not expand "~" after "mnist:"
    err = capsys.readouterr().err
    assert str(tmp_path / "mnist") in err and "~" not in err
    assert main(["train", "--epochs", "1", "--no-progress", "--save", "~/run.npz"]) == 0
    assert (tmp_path / "run.npz").is_file()


def test_cli_final_test_loss_says_it_has_no_label_smoothing(capsys):
    assert main(["train", "--epochs", "1", "--no-progress"]) == 0
    assert "without label smoothing" in capsys.readouterr().out
    assert main(["train", "--epochs", "1", "--no-progress", "--label-smoothing", "0"]) == 0
    assert "without label smoothing" not in capsys.readouterr().out


# --- fit ----------------------------------------------------------------------------------------------------------

def test_fit_casts_float64_targets_to_the_model_dtype():
    X, y = _data()
    Y = np.eye(3)[y]  # float64 one-hot targets, as NumPy makes them
    model = _mlp()
    history = fit(model, nn.MSELoss(), optim.Adam(model.parameters(), lr=1e-2), X, Y, epochs=3, batch_size=8,
                  progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert np.isfinite(evaluate(model, nn.MSELoss(), X, Y)["loss"])


def test_fit_refuses_an_optimizer_of_another_model():
    X, y = _data()
    model, other = _mlp(), _mlp(5)
    with pytest.raises(ValueError, match=r"fit: the Adam optimizer holds none of the model's parameters"):
        fit(model, nn.CrossEntropyLoss(), optim.Adam(other.parameters()), X, y, epochs=1, batch_size=8,
            progress=False)
    # a subset (fine-tuning the last layer) is fine
    before = model[0].weight.data.copy()
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model[2].parameters(), lr=0.1), X, y, epochs=1, batch_size=8,
        progress=False)
    np.testing.assert_array_equal(model[0].weight.data, before)


# --- backends and devices -----------------------------------------------------------------------------------------

def test_bad_xpnn_backend_variable_is_named(monkeypatch):
    monkeypatch.setenv("XPNN_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"unknown backend 'tpu'.*XPNN_BACKEND environment variable"):
        xpnn.get_backend()


def test_cpu_is_the_numpy_backend():
    assert xpnn.get_backend("cpu") is xpnn.get_backend("numpy")
    model = _mlp().to("cpu")
    assert isinstance(model[0].weight.data, np.ndarray)


@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64")])
def test_to_takes_a_dtype_in_place_of_the_backend(dtype):
    model = _mlp()
    assert model.to(dtype) is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    x, _ = _data(4)
    assert model(x.astype(np.float64)).dtype == np.float64


# --- messages that say what to do ---------------------------------------------------------------------------------

def test_float64_input_to_float32_model_suggests_the_fix():
    x, _ = _data(4)
    with pytest.raises(DTypeError, match=r"Linear\(in_features=4, out_features=8\): expected input of dtype float32 "
                                         r".*got float64; cast the input .*dtype='float64'"):
        _mlp()(x.astype(np.float64))


def test_linear_with_numpy_weight_layout_suggests_transpose():
    x, w = np.ones((5, 4)), np.ones((4, 6))
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 6\) for weight \(4, 6\), got \(5, 4\); .*w\.T"):
        F.linear(x, w)
    assert F.linear(x, w.T).shape == (5, 6)


def test_parameter_converts_with_numpy_and_is_a_tensor_for_functional():
    layer = nn.Linear(3, 2, seed=0)
    a = np.asarray(layer.weight)
    assert a.shape == (2, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, layer.weight.data)
    assert np.asarray(layer.weight, dtype=np.float64).dtype == np.float64
    y = F.linear(np.ones((1, 3), np.float32), layer.weight)  # a Parameter is a Tensor: the call is recorded
    assert isinstance(y, xpnn.Tensor) and y.grad_fn is not None
    np.testing.assert_allclose(y.data, np.ones((1, 3), np.float32) @ layer.weight.data.T, rtol=1e-6)
    with pytest.raises(TypeError, match=r"expected arrays, got list"):
        F.linear(np.ones((1, 3), np.float32), [[1.0, 2.0, 3.0]])


def test_loading_a_whole_checkpoint_into_a_model_points_to_the_model_entry(tmp_path):
    model, opt = _mlp(), None
    opt = optim.Adam(model.parameters())
    xpnn.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "run.npz")
    state = xpnn.load(tmp_path / "run.npz")
    with pytest.raises(CheckpointError, match=r"checkpoint holding \['model', 'optimizer'\]: pass e\.g\. state\['model'\]"):
        model.load_state_dict(state)
    model.load_state_dict(state["model"])


# --- debug mode ---------------------------------------------------------------------------------------------------

def test_debug_mode_catches_nan_targets_and_names_the_layer_with_nan_weights():
    x, _ = _data(4)
    model = _mlp()
    target = np.zeros((4, 3), np.float32)
    target[1, 2] = np.nan
    with xpnn.debug.debug_mode(True):
        with pytest.raises(NonFiniteError, match=r"mse_loss: target contains 1 NaN"):
            nn.MSELoss()(model(x), target)
        model[0].weight.data[0, 0] = np.inf
        with pytest.raises(NonFiniteError, match=r"Linear\(in_features=4, out_features=8\): weight contains 0 NaN and 1 inf"):
            model(x)
    assert np.isnan(float(nn.MSELoss()(model(x), target)))  # off by default: no sync, no check
