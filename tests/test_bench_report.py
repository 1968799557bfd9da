"""`xpnn bench`'s report: --json/--plot checked before anything runs, unstable rows and a busy machine named in
the output, repeated passes recorded; the pytest-benchmark suite prints its ratio table last."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpnn import bench
from xpnn.bench.report import Row, format_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_run(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the benchmark ran although its outputs cannot be written")

    monkeypatch.setattr(bench, "run", fail)


@pytest.mark.parametrize("argv, message", [
    (["--json", "/nonexistent/x.json"], "--json /nonexistent/x.json: folder /nonexistent does not exist"),
    (["--plot", "out.txt"], "--plot out.txt: unsupported image format 'txt'"),
    (["--plot", "/nonexistent/p.png"], "--plot /nonexistent/p.png: folder"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_outputs_checked_before_the_run(no_run, capsys, argv, message):
    assert bench.main(argv) == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_fails_first(no_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backend_bases", None)
    assert bench.main(["--plot", "p.png"]) == 2
    assert 'needs matplotlib: pip install "xpnn[plot]"' in capsys.readouterr().err


def test_stability_column():
    def row(spread, iqr):
        return Row("adam", "1e6", "xpnn-numpy", "cpu", median=1e-3, iqr=iqr, min=9e-4, rounds=9, repeat_spread=spread)

    table = format_table([row(1.1, 1e-4), row(100.0, 1e-4), row(1.0, 8e-4), row(None, 1e-4)], "numpy-plain")
    lines = table.splitlines()
    assert "stability" in lines[0]
    assert lines[2].endswith("ok") and lines[3].endswith("UNSTABLE: passes 100.0x apart")
    assert lines[4].endswith("UNSTABLE: wide spread") and lines[5].endswith("-")
    assert row(100.0, 1e-4).unstable() and not row(1.1, 1e-4).unstable()


def test_repeated_passes_and_busy_machine_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "_load_average", lambda: 50.0)
    js = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--cases", "adam", "--impls", "numpy-plain", "--max-time", "0.01",
                       "--repeats", "2", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "warning: the machine was busy: load average 50.0" in out
    doc = json.loads(js.read_text())
    (r,) = doc["results"]
    assert r["repeat_spread"] >= 1.0 and r["rounds"] >= 4  # two passes of at least 2 calls
    assert doc["machine"]["load_average"] == {"before": 50.0, "after": 50.0}


def test_pytest_benchmark_summary_prints_last():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "benchmarks/test_bench_sigmoid_backward.py",
         "--benchmark-only", "-k", "1e6 and numpy", "--benchmark-max-time", "0.005", "--benchmark-min-rounds", "3",
         "-q"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    ours, theirs = out.find("xpnn: ratio to straightforward NumPy"), out.find("benchmark 'sigmoid_backward 1e6'")
    assert theirs >= 0 and ours > theirs and out.find("Legend") < ours
