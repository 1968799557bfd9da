"""Smoke run of ``xpnn bench`` (tiny preset: seconds) and checks of its timing and floor helpers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xpnn import bench
from xpnn.bench import numpy_reference as ref
from xpnn.bench.cases import CASES, IMPLS, Unavailable, make_runner, subnormal_count
from xpnn.bench.report import Row, format_table
from xpnn.bench.timing import copy_bandwidth, measure


def test_tiny_run_prints_table_and_writes_json_and_png(tmp_path, capsys):
    js, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = bench.main(["--preset", "tiny", "--max-time", "0.01", "--impls", "xpnn-numpy", "numpy-plain",
                     "--json", str(js), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    header = out.splitlines()[1]
    for col in ("case", "backend", "median", "spread", "ratio to numpy-plain", "of floor"):
        assert col in header
    for case in CASES:
        assert case in out
    doc = json.loads(js.read_text())
    assert doc["command"].startswith("xpnn bench --preset tiny")
    assert doc["machine"]["numpy"] == np.__version__
    results = doc["results"]
    assert {(r["case"], r["impl"]) for r in results} == {(c, i) for c in CASES for i in ("xpnn-numpy", "numpy-plain")
                                                          if i in CASES[c].builders}
    for r in results:
        assert r["median"] > 0 and r["rounds"] >= 5 and r["subnormals"] == 0
        if "numpy-plain" in CASES[r["case"]].builders:
            assert r["ratio"] == pytest.approx(1.0) if r["impl"] == "numpy-plain" else r["ratio"] > 0
        memory_bound = r["case"] in ("sigmoid_backward", "cross_entropy", "adam", "sgd", "softmax", "logsumexp",
                                     "adam_fp16", "amp_unscale")
        assert (r["floor_fraction"] is not None) == memory_bound
        if memory_bound:
            assert r["floor_fraction"] == pytest.approx(r["bytes_moved"] / r["median"] / r["copy_bandwidth"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cases_filter_and_bad_arguments(capsys):
    assert bench.main(["--preset", "tiny", "--cases", "adam", "--impls", "numpy-plain", "--max-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "adam" in out and "sigmoid_backward" not in out
    with pytest.raises(SystemExit):
        bench.main(["--cases", "no_such_case"])
    assert bench.main(["--max-time", "0"]) == 2


def test_gpu_impls_skip_with_reason_without_gpu():
    from xpnn.backend import cuda_available

    if cuda_available():
        pytest.skip("a GPU is present: the CUDA implementations run")
    for impl in ("xpnn-cuda", "xpnn-cuda-generic"):
        with pytest.raises(Unavailable, match="CUDA"):
            make_runner("sigmoid_backward", "1e4", impl)
    with pytest.raises(Unavailable, match="CUDA only"):
        make_runner("sigmoid_backward", "1e8", "xpnn-numpy")


def test_measure_counts_rounds_and_reports_spread():
    calls = []
    t = measure(lambda: calls.append(1), max_time=0.0, min_rounds=7, warmup=2)
    assert t.rounds == 7 and len(calls) == 9
    assert t.min <= t.median and t.iqr >= 0


def test_copy_bandwidth_is_plausible():
    bw = copy_bandwidth("cpu", 8 << 20, max_time=0.02)
    assert 1e8 < bw < 1e13  # bytes/s: between 0.1 GB/s and 10 TB/s


def test_floor_fraction_and_ratio_in_table():
    r = Row("adam", "1e6", "xpnn-numpy", "cpu", median=2e-3, iqr=1e-4, min=1.9e-3, rounds=10,
            bytes_moved=28_000_000, copy_bandwidth=20e9, ratio=0.5)
    assert r.bandwidth == pytest.approx(14e9) and r.floor_fraction == pytest.approx(0.7)
    line = format_table([r], "numpy-plain").splitlines()[2]
    assert "2 ms" in line and "0.50" in line and "70%" in line and "14.0" in line


def test_subnormal_count_finds_subnormals():
    x = np.ones(10, dtype=np.float32)
    assert subnormal_count([x]) == 0
    x[3] = np.float32(1e-40)
    x[4] = 0.0
    assert subnormal_count([x, np.arange(3)]) == 1


def test_reference_implementations_match_xpnn():
    import xpnn.functional as F

    rng = np.random.default_rng(0)
    y, dy = rng.random(100, dtype=np.float32), rng.standard_normal(100, dtype=np.float32)
    np.testing.assert_allclose(ref.sigmoid_backward(y, dy), F.sigmoid_backward(y, dy), rtol=1e-6)
    logits, target = rng.standard_normal((32, 7)).astype(np.float32), rng.integers(0, 7, 32)
    loss, grad = ref.cross_entropy_with_grad(logits, target)
    loss_x, grad_x = F.cross_entropy_with_grad(logits, target)
    np.testing.assert_allclose(loss, loss_x, rtol=1e-5)
    np.testing.assert_allclose(grad, grad_x, rtol=1e-4, atol=1e-7)


def test_reference_adam_matches_xpnn_adam():
    from xpnn import nn, optim

    rng = np.random.default_rng(1)
    p0, g = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    plain = [p0.copy()]
    opt_plain = ref.Adam(plain, lr=1e-2)
    p = nn.Parameter(p0.copy())
    p.grad = g.copy()
    opt = optim.Adam([p], lr=1e-2)
    for _ in range(3):
        opt_plain.step([g])
        opt.step()
    np.testing.assert_allclose(plain[0], p.data, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_every_cpu_runner_runs(case):
    size = {"sigmoid_backward": "1e4", "cross_entropy": "256x10", "adam": "1e4", "sgd": "1e4", "mlp_step": "batch16",
            "seed_net": "64x1000", "tiny_step": "batch8", "conv2d": "lenet2", "lenet_step": "batch64",
            "softmax": "256x10", "logsumexp": "256x10", "adam_fp16": "1e4", "small_calls": "linear",
            "amp_unscale": "1e4", "attention": "b32h4t64d32", "gpt_step": "d32l1h2t16b4", "generate": "tiny",
            "lstm_step": "h16-T5-batch4"}[case]
    impls = [i for i in ("xpnn-numpy", "numpy-plain", "xpnn-numpy-tape") if i in CASES[case].builders]
    for impl in impls:
        r = make_runner(case, size, impl)
        assert IMPLS[impl].device == r.device == "cpu"
        r.fn()
        r.fn()
        assert subnormal_count(r.state()) == 0


@pytest.mark.parametrize("n", [50, 5000])  # (5000: past cpu_kernels.MIN_ELEMENTS, the compiled update)
def test_reference_sgd_matches_xpnn_sgd(n):
    from xpnn import nn, optim

    rng = np.random.default_rng(2)
    p0, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    plain = [p0.copy()]
    opt_plain = ref.SGD(plain, lr=1e-2, momentum=0.9)
    p = nn.Parameter(p0.copy())
    p.grad = g.copy()
    opt = optim.SGD([p], lr=1e-2, momentum=0.9)
    for _ in range(3):
        opt_plain.step([g])
        opt.step()
    np.testing.assert_allclose(plain[0], p.data, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(opt_plain.state()[0], opt.state_dict()["state"][0]["momentum_buffer"], rtol=1e-6)


def _plotted_figure(monkeypatch, tmp_path, rows):
    """Render ``write_plot`` and keep its figure (it closes it) to inspect the artists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xpnn.bench.report import write_plot

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    write_plot(str(tmp_path / "bench.png"), rows, "numpy-plain")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = kept
    return fig


def test_plot_draws_the_spread_and_marks_unstable_rows(monkeypatch, tmp_path):
    from matplotlib.container import BarContainer, ErrorbarContainer

    rows = [
        Row("adam", "1e6", "numpy-plain", "cpu", median=2e-3, iqr=1e-4, min=1.8e-3, rounds=20, max=2.6e-3,
            repeat_spread=1.05, ratio=1.0),
        Row("adam", "1e6", "xpnn-numpy", "cpu", median=1.5e-3, iqr=1.2e-3, min=0.9e-3, rounds=20, max=4e-3,
            repeat_spread=2.5, ratio=0.75),  # the table says UNSTABLE
        Row("adam", "1e6", "torch-cpu", "cpu", median=1e-3, iqr=1e-5, min=0.8e-3, rounds=20, ratio=0.5),  # no max
    ]
    assert "UNSTABLE" in format_table(rows, "numpy-plain").splitlines()[3] and rows[1].unstable()
    fig = _plotted_figure(monkeypatch, tmp_path, rows)
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_hatch() for bar in bars] == [None, "//", None]
    (whiskers,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = [lines.get_segments() for lines in whiskers.lines[2]]
    spans = [(float(seg[0][0]), float(seg[1][0])) for seg in segments]  # in ms: fastest to slowest call
    assert spans == [pytest.approx((1.8, 2.6)), pytest.approx((0.9, 4.0)), pytest.approx((0.8, 1.0))]
    labels = [t.get_text() for t in ax.texts]
    assert ["UNSTABLE" in label for label in labels] == [False, True, False]
    assert ax.get_xlim()[1] >= 4.0  # the longest whisker is inside the axes
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][0].startswith("UNSTABLE")
    assert legend.legend_handles[0].get_hatch() == "//"


def test_plot_of_stable_rows_has_no_unstable_legend(monkeypatch, tmp_path):
    rows = [Row("softmax", "1e4", impl, "cpu", median=5e-5, iqr=1e-6, min=4.5e-5, rounds=20, max=7e-5,
                repeat_spread=1.0, ratio=1.0) for impl in ("numpy-plain", "xpnn-numpy")]
    fig = _plotted_figure(monkeypatch, tmp_path, rows)
    assert fig.legends == [] and not any("UNSTABLE" in t.get_text() for t in fig.axes[0].texts)


def test_bench_rows_record_the_slowest_call(tmp_path):
    rows, _ = bench.run([("adam", "1e4")], ["numpy-plain"], max_time=0.01, repeats=2)
    (row,) = rows
    assert row.min <= row.median <= row.max and row.to_dict()["max"] == row.max
