"""``xpnn.models.GPT``: logits and gradients equal to the same model in PyTorch, greedy generation with the KV-cache
equal to recomputation (and fed one token per step), the errors, and a short run on the sorting task that learns
(``xpnn train --model gpt`` and ``xpnn predict`` on its checkpoint)."""
import numpy as np
import pytest

import xpnn
from xpnn import data
from xpnn.errors import ShapeError
from xpnn.models import GPT, NextTokenLoss, sort_digits


def test_logits_and_gradients_match_pytorch(torch):
    from xpnn.bench.transformer_cases import torch_gpt

    rng = np.random.default_rng(0)
    m = GPT(11, 9, n_layer=2, n_head=2, d_model=8, dtype="float64", seed=0)
    tm = torch_gpt(11, 9, 8, 2, 2).double()
    tm.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    idx = rng.integers(0, 11, (3, 9))
    target = rng.integers(0, 11, (3, 9))
    target[:, :4] = -100
    t_logits = tm(torch.tensor(idx))
    torch.nn.functional.cross_entropy(t_logits.reshape(-1, 11), torch.tensor(target).reshape(-1)).backward()
    logits = m(xpnn.tensor(idx))
    NextTokenLoss()(logits, target).backward()
    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), atol=1e-10)
    t_params = dict(tm.named_parameters())
    assert sorted(n for n, _ in m.named_parameters()) == sorted(t_params)
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[name].grad.numpy(), atol=1e-10, err_msg=name)


def test_generate_with_the_kv_cache_equals_recomputation_and_feeds_one_token_per_step(monkeypatch):
    m = GPT(13, 40, n_layer=3, n_head=4, d_model=32, dtype="float64", seed=1)
    idx = np.random.default_rng(1).integers(0, 13, (4, 7))
    seen = []
    run = GPT._run

    def spy(self, tokens, caches=None, start=0):
        seen.append((int(tokens.shape[1]), start))
        return run(self, tokens, caches, start)

    monkeypatch.setattr(GPT, "_run", spy)
    cached = m.generate(idx, 30)
    assert seen == [(7, 0)] + [(1, 7 + i) for i in range(29)]  # the prompt once, then one new token per step
    seen.clear()
    full = m.generate(idx, 30, use_cache=False)
    assert seen == [(7 + i, 0) for i in range(30)]
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(cached[:, :7], idx)
    assert cached.shape == (4, 37) and cached.dtype == idx.dtype
    # the cached logits are the full forward's (not only their argmax)
    logits = m(xpnn.tensor(cached[:, :-1])).numpy()
    assert np.array_equal(np.argmax(logits[:, 6:], axis=-1), cached[:, 7:])


def test_generate_keeps_the_training_mode_and_records_nothing():
    m = GPT(5, 8, n_layer=1, n_head=1, d_model=4, dropout=0.1)
    out = m.generate(np.zeros((1, 2), dtype=np.int64), 3)
    assert m.training and out.shape == (1, 5)
    assert all(p.grad is None or not np.any(p.grad) for p in m.parameters())


def test_bad_arguments_raise_naming_the_model():
    with pytest.raises(ValueError, match=r"GPT\(d_model=10, n_head=4\): d_model must be divisible by n_head"):
        GPT(5, 8, d_model=10, n_head=4)
    m = GPT(5, 8, n_layer=1, n_head=1, d_model=4)
    with pytest.raises(ShapeError, match=r"GPT\(.*\): expected tokens of shape \(B, T\) with T <= 8, got \(2, 9\)"):
        m(xpnn.tensor(np.zeros((2, 9), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"6 prompt \+ 3 new tokens exceed block_size 8"):
        m.generate(np.zeros((1, 6), dtype=np.int64), 3)
    with pytest.raises(IndexError):
        m(xpnn.tensor(np.full((1, 3), 5, dtype=np.int64)))  # token id out of range: never clamped


def test_sorting_task_rows():
    X, Y = data.sorting_task(50, seed=0)
    assert X.shape == Y.shape == (50, 25)
    for row, target in zip(X, Y):
        n = list(row).index(data.sorting.SORT_SEP)
        assert 6 <= n <= 12
        np.testing.assert_array_equal(row[n + 1:2 * n + 1], np.sort(row[:n]))
        np.testing.assert_array_equal(target[n:2 * n], np.sort(row[:n]))
        assert np.all(target[:n] == -100) and np.all(target[2 * n:] == -100)
        assert np.all(row[2 * n + 1:] == data.sorting.SORT_PAD)


def test_a_short_cli_run_learns_and_predict_prints_sorted_answers(tmp_path, monkeypatch, capsys):
    from xpnn import cli

    monkeypatch.setitem(cli.GPT_ROWS, "train", 4000)
    monkeypatch.setitem(cli.GPT_ROWS, "test", 200)
    ckpt = tmp_path / "gpt.npz"
    assert cli.main(["train", "--model", "gpt", "--epochs", "2", "--save", str(ckpt),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    first, last = (float(line.split("val_loss ")[1].split()[0]) for line in (lines[0], lines[-1]))
    exact = float(out.split("held-out sequences sorted exactly: ")[1].split()[0])
    assert last < 1.2 and last < first, out  # next-token loss on the answers (a guessed digit: ln 10 = 2.3)
    assert exact > 0.02, out  # (11% in 2 epochs of 4000 rows with seed 0)
    inp = tmp_path / "digits.txt"
    inp.write_text("3 1 4 1 5 9 2 6\n271828\n")
    assert cli.main(["predict", "--checkpoint", str(ckpt), "--input", str(inp)]) == 0
    answers = [[int(t) for t in line.split()] for line in capsys.readouterr().out.splitlines()]
    assert [len(a) for a in answers] == [8, 6] and all(0 <= t <= 9 for a in answers for t in a)
    assert cli.main(["export", str(ckpt), "--onnx", str(tmp_path / "gpt.onnx")]) == 1  # classifiers only
    assert "for a --model gpt checkpoint use xpnn.models.load_trained" in capsys.readouterr().err
    model, _, config = xpnn.models.load_trained(ckpt)
    assert config["model"] == "gpt" and sort_digits(model, [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8]]) == answers


def test_exports_to_onnx_with_the_same_logits(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported model")
    import xpnn.onnx as xonnx

    m = GPT(12, 10, n_layer=2, n_head=2, d_model=16, seed=0)
    idx = np.random.default_rng(0).integers(0, 12, (3, 7))
    xonnx.export(m, idx, tmp_path / "gpt.onnx")
    session = ort.InferenceSession(str(tmp_path / "gpt.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: idx})[0]
    np.testing.assert_allclose(got, m(xpnn.tensor(idx)).numpy(), atol=1e-5)
    other = np.random.default_rng(1).integers(0, 12, (3, 7))  # (the traced tokens were once baked in)
    got = session.run(None, {session.get_inputs()[0].name: other})[0]
    np.testing.assert_allclose(got, m(xpnn.tensor(other)).numpy(), atol=1e-5)


def test_generate_rejects_bad_prompts_and_counts_naming_the_model():
    """An empty prompt, a negative or fractional count and a list of tokens: errors naming GPT.generate, not an
    IndexError from inside the decoding loop or a silent no-op."""
    m = GPT(5, 8, n_layer=1, n_head=1, d_model=4)
    with pytest.raises(ValueError, match=r"GPT\(.*\)\.generate: expected a prompt of at least one token per row, got "
                                         r"tokens of shape \(2, 0\)"):
        m.generate(np.zeros((2, 0), dtype=np.int64), 3)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match=r"GPT\(.*\)\.generate: expected max_new_tokens to be an integer >= 0, "
                                             r"got " + repr(bad)):
            m.generate(np.zeros((1, 2), dtype=np.int64), bad)
    with pytest.raises(TypeError, match=r"GPT\(.*\): expected tokens as an integer array or Tensor of shape \(B, T\), "
                                        r"got list"):
        m.generate([[1, 2]], 2)
    assert m.generate(np.zeros((1, 2), dtype=np.int64), np.int64(0)).shape == (1, 2)
