"""scripts/gpu_check.sh, the one-call check on a GPU machine, as far as it runs without a GPU: its interpreter
fallback, its early stops (no device: exit 2; no CuPy/NVRTC: exit 4, saying why) and the summary table it prints
last (scripts/gpu_check_summary.py) from fabricated step outputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xpnn.backend import cuda_available

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check_summary  # noqa: E402

needs_no_gpu = pytest.mark.skipif(cuda_available(), reason="a CUDA device is present: the script would run for real")


def _run(tmp_path: Path, env_extra: dict[str, str], path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "CI")}
    env.update(env_extra)
    env["OUT"] = str(tmp_path / "out")
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)


def test_script_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@needs_no_gpu
def test_falls_back_to_python3_and_stops_without_a_device(tmp_path):
    """With no `python` on PATH the script uses `python3`; without a device it exits 2 and says so."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a wrapper, not a symlink: a venv's interpreter reached through a symlink elsewhere loses the venv's packages
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    assert shutil.which("python", path=path) is None, "this test needs a PATH without `python`"
    proc = _run(tmp_path, {"PYTHONPATH": str(REPO)}, path=path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CuPy sees no CUDA device" in proc.stderr
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["numpy"] and "device" in info


def test_stops_early_without_cupy_or_nvrtc(tmp_path):
    fake = tmp_path / "fake"
    (fake / "cupy").mkdir(parents=True)
    (fake / "cupy" / "__init__.py").write_text("raise ImportError('no CuPy in this test')\n")
    proc = _run(tmp_path, {"PYTHONPATH": str(fake)})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "stopping early: CuPy is not installed" in proc.stderr


def _junit(path: Path, cuda_skipped: int) -> None:
    cases = ['<testcase classname="tests.test_kernels_shim" name="a"/>',
             '<testcase classname="tests.test_kernels_shim" name="b"><failure message="x"/></testcase>',
             '<testcase classname="tests.test_kernels_compile" name="c"><skipped message="no nvcc"/></testcase>']
    cases += ['<testcase classname="tests.test_cuda_kernels" name="d%d"><skipped message="no GPU"/></testcase>' % i
              for i in range(cuda_skipped)]
    path.write_text(f'<testsuites><testsuite tests="{len(cases)}" failures="1" errors="0" '
                    f'skipped="{1 + cuda_skipped}">{"".join(cases)}</testsuite></testsuites>')


def _bench(path: Path) -> None:
    def b(case, size, impl, median, floor=None):
        extra = dict(case=case, size=size, impl=impl)
        if floor is not None:
            extra["floor_fraction"] = floor
        return dict(name=f"test_{case}[{size}-{impl}]", stats=dict(median=median, min=median * 0.9), extra_info=extra)

    path.write_text(json.dumps({"benchmarks": [
        b("cross_entropy", "4096x1000", "xpnn-cuda", 20e-6, 0.85), b("cross_entropy", "4096x1000", "torch-cuda", 40e-6,
                                                                    0.42),
        b("adam", "1e7", "xpnn-cuda", 100e-6, 0.9), b("adam", "1e7", "torch-cuda", 150e-6, 0.6),
        b("mlp_step", "batch256", "xpnn-cuda", 300e-6), b("mlp_step", "batch256", "torch-cuda", 250e-6),
        b("sigmoid_backward", "1e7", "xpnn-cuda", 30e-6, 0.88),
    ]}))


def test_summary_table(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps(dict(device="NVIDIA H200", compute_capability="90", cupy="14.0",
                                                        nvrtc="13.0", torch="2.9")))
    _junit(tmp_path / "tests.xml", cuda_skipped=0)
    _bench(tmp_path / "bench.json")
    text, failed = gpu_check_summary.render(tmp_path, dict(tests="1", memcheck="0", racecheck="skipped", bench="0"))
    assert failed  # the tests step failed
    assert "NVIDIA H200" in text and "cupy 14.0" in text
    assert "1 passed, 1 failed, 1 skipped (0 cuda-marked skipped" in text
    assert "85%" in text and "88%" in text
    lines = {line.split()[0] + " " + line.split()[1]: line for line in text.splitlines() if line.count("x") and
             line.strip().endswith("x")}
    assert lines["cross_entropy 4096x1000"].strip().endswith("2.00x")
    assert lines["adam 1e7"].strip().endswith("1.50x")
    assert lines["mlp_step batch256"].strip().endswith("0.83x")
    assert text.rstrip().splitlines()[-2].startswith("bench")  # the step table closes the output


def test_summary_fails_when_cuda_tests_skip(tmp_path):
    _junit(tmp_path / "tests.xml", cuda_skipped=2)
    text, failed = gpu_check_summary.render(tmp_path, dict(tests="0"))
    assert failed and "2 cuda-marked skipped" in text
    text, failed = gpu_check_summary.render(tmp_path, dict(tests="not run", bench="skipped"))
    assert not failed and "device   ?" in text
