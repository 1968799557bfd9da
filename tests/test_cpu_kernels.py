"""xpnn.functional.cpu_kernels: the compiled CPU loops (kernels/cpu/*.cpp) against the NumPy paths they replace, and
how they are built, cached and left out (no compiler, a failing build, kernels off)."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xpnn import _dispatch, nn, optim
from xpnn.functional import cpu_kernels
from xpnn.functional.updates import adam_update

REPO = Path(__file__).resolve().parents[1]

needs_library = pytest.mark.skipif(cpu_kernels.library() is None,
                                   reason=f"the CPU kernels are not built here: {cpu_kernels.status()}")

ADAM_OPTIONS = [dict(weight_decay=wd, decoupled_weight_decay=dec, amsgrad=ams, maximize=mx)
                for wd, dec, ams, mx in itertools.product((0.0, 0.1), (False, True), (False, True), (False, True))]


def _adam_run(dtype, size, options, steps=3, kernels=True, seed=0):
    """``steps`` Adam updates of fresh arrays (grads with a NaN, an inf and zeros among them); the final arrays."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    m, v, vmax = (np.zeros(size, dtype) for _ in range(3))
    with _dispatch.use_kernels(kernels), np.errstate(all="ignore"):  # (the NumPy passes warn about the NaN)
        for step in range(1, steps + 1):
            g = rng.standard_normal(size).astype(dtype)
            g[:5] = (np.nan, np.inf, -np.inf, 0.0, -0.0)
            adam_update(p, g, m, v, vmax, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **options)
    return p, m, v, vmax


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=lambda o: ",".join(k for k, v in o.items() if v) or "plain")
def test_adam_compiled_equals_the_numpy_passes_bit_for_bit(dtype, options):
    """Every option set and both dtypes, 4097 elements (not a multiple of any vector width), three steps with
    non-finite gradients: the compiled pass gives the NumPy passes' values exactly (``-ffp-contract=off``)."""
    size = cpu_kernels.MIN_ELEMENTS + 1
    got = _adam_run(dtype, size, options, kernels=True)
    want = _adam_run(dtype, size, options, kernels=False)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


@needs_library
def test_adam_takes_the_compiled_pass_only_where_it_applies(monkeypatch):
    """The compiled pass runs for C-contiguous NumPy float arrays from ``MIN_ELEMENTS`` on, each its own memory; a
    smaller, strided, overlapping or float16 update, and any update with kernels off, runs the NumPy passes."""
    calls = []
    real = cpu_kernels.adam_update
    monkeypatch.setattr(cpu_kernels, "adam_update", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    n = cpu_kernels.MIN_ELEMENTS

    def run(p, g, m, v):
        calls.clear()
        adam_update(p, g, m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
        return calls

    z = lambda k, dt=np.float32: np.zeros(k, dt)  # noqa: E731
    assert run(z(n), z(n), z(n), z(n)) == [True]
    assert not any(run(z(n - 1), z(n - 1), z(n - 1), z(n - 1)))
    wide = z(2 * n)
    assert not any(run(wide[::2], z(n), z(n), z(n)))  # a strided parameter
    shared = z(n)
    assert not any(run(z(n), shared, shared, z(n)))  # exp_avg is the gradient's memory
    half = [z(n, np.float16) for _ in range(4)]
    adam_update(*half, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)  # float16: NumPy (no compiled loop)
    with _dispatch.use_kernels(False):
        assert not any(run(z(n), z(n), z(n), z(n)))


@needs_library
def test_an_mlp_trained_with_the_compiled_adam_matches_the_numpy_one():
    """Through the optimizer's flat buffer: ten Adam steps of a 64-128-10 MLP (the flat buffer, 9.6 K elements,
    takes the compiled pass) give the same parameters as with the kernels off."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((32, 64)).astype(np.float32), rng.integers(0, 10, 32)
    finals = []
    for kernels in (True, False):
        with _dispatch.use_kernels(kernels):
            model = nn.Sequential(nn.Linear(64, 128, seed=0), nn.ReLU(), nn.Linear(128, 10, seed=1))
            opt = optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(10):
                opt.zero_grad()
                loss_fn(model(x), y)
                model.backward(loss_fn.backward(), need_input_grad=False)
                opt.step()
            finals.append([p.data.copy() for p in model.parameters()])
    assert sum(p.size for p in finals[0]) >= cpu_kernels.MIN_ELEMENTS
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)


def test_the_sources_compile_without_warnings(tmp_path):
    """kernels/cpu/*.cpp with the build's flags plus -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Werror
    (as the CUDA sources are checked), with g++."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed")
    src = REPO / "kernels" / "cpu"
    cmd = [cxx, *cpu_kernels.FLAGS, "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Werror",
           "-o", str(tmp_path / "lib.so"), *(str(src / s) for s in cpu_kernels.SOURCES)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


_PROBE = textwrap.dedent("""
    import numpy as np
    from xpnn.functional import cpu_kernels
    from xpnn.functional.updates import adam_update
    p = np.ones(cpu_kernels.MIN_ELEMENTS, np.float32); g = np.full_like(p, 0.5)
    m, v = np.zeros_like(p), np.zeros_like(p)
    adam_update(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    print(cpu_kernels.library() is not None, float(p[0]))
    print(cpu_kernels.status())
""")


def _probe(env_changes: dict, cwd: Path) -> tuple[bool, float, str]:
    env = {**os.environ, **env_changes}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    first, status = out.stdout.strip().split("\n", 1)
    built, value = first.split()
    return built == "True", float(value), status


def test_without_a_compiler_the_numpy_passes_run_and_status_says_why(tmp_path):
    """CXX naming no program: no library, the same Adam result (from the NumPy passes), and a status naming the
    missing compiler."""
    built, value, status = _probe({"CXX": str(tmp_path / "no-such-compiler"), "XPNN_CACHE_DIR": str(tmp_path)},
                                  tmp_path)
    assert not built
    assert value == pytest.approx(1 - 0.1, rel=1e-6)  # Adam's first step moves each weight by lr
    assert "no C++ compiler" in status


def test_a_failing_build_leaves_the_numpy_passes_and_its_message(tmp_path):
    """A compiler that fails (``false``): no library, no partial file left in the cache, the NumPy result."""
    false = shutil.which("false")
    if false is None:
        pytest.skip("no 'false' program")
    built, value, status = _probe({"CXX": false, "XPNN_CACHE_DIR": str(tmp_path)}, tmp_path)
    assert not built
    assert value == pytest.approx(1 - 0.1, rel=1e-6)
    assert "failed" in status
    assert list(tmp_path.iterdir()) == []


@needs_library
def test_the_library_is_built_once_into_the_cache_and_reused(tmp_path):
    """A fresh cache folder: the first process builds ``cpu-<hash>.so`` there, a second loads that file unchanged;
    two processes starting together on an empty cache both load a whole library (built under a temporary name,
    then renamed)."""
    cache = tmp_path / "cache"
    built, value, status = _probe({"XPNN_CACHE_DIR": str(cache)}, tmp_path)
    assert built and value == pytest.approx(0.9, rel=1e-6)
    (lib,) = cache.glob("cpu-*.so")
    assert str(lib) in status
    stamp = lib.stat().st_mtime_ns
    assert _probe({"XPNN_CACHE_DIR": str(cache)}, tmp_path)[0]
    assert lib.stat().st_mtime_ns == stamp

    racing = tmp_path / "racing"
    env = {**os.environ, "XPNN_CACHE_DIR": str(racing)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    procs = [subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.split()[0] == "True"
    assert len(list(racing.glob("cpu-*.so"))) == 1
    assert not list(racing.glob("*.tmp"))


def test_kernels_off_reports_it():
    with _dispatch.use_kernels(False):
        assert cpu_kernels.status().startswith("off")


@needs_library
def test_im2col_kernels_run_only_where_they_apply():
    """``cpu_kernels.im2col`` / ``col2im`` run for C-contiguous float32/float64 arrays of the geometry's shapes (dx
    may be a view with contiguous rows) and the strides each path takes; otherwise, and with kernels off, they do
    nothing and say so (the NumPy path runs); an unknown path is an error."""
    from xpnn.functional.conv import conv2d_geometry

    g = conv2d_geometry((2, 3, 6, 6), (4, 3, 3, 3), 1, 1)
    cols = np.zeros((2, 3, 3, 3, 6, 6), np.float32)
    x = np.ones((2, 3, 6, 6), np.float32)
    assert cpu_kernels.im2col(x, cols, g) and cols[0, 0, 1, 1].sum() == 36
    assert not cpu_kernels.im2col(x.astype(np.float16), cols.astype(np.float16), g)
    assert not cpu_kernels.im2col(np.asfortranarray(x), cols, g)
    assert not cpu_kernels.im2col(x[:1], cols, g)  # not the geometry's shape
    dx = np.zeros((2, 3, 6, 8), np.float32)[..., 1:7]  # rows of a wider buffer
    assert cpu_kernels.col2im("cols", cols, dx, g, 1) and dx.sum() == cols.sum()
    assert not cpu_kernels.col2im("cols", cols, dx[..., ::2], g, 1)  # strided rows
    assert not cpu_kernels.col2im("cols", cols[:1], dx, g, 1)
    assert not cpu_kernels.col2im("cols", cols, dx.astype(np.float64), g, 1)
    g2 = conv2d_geometry((2, 3, 6, 6), (4, 3, 3, 3), 2, 1)
    assert not cpu_kernels.col2im("rows", np.zeros((2, 3, 3, 3, 3, 3), np.float32), dx, g2, 1)  # stride 2
    with _dispatch.use_kernels(False):
        assert not cpu_kernels.im2col(x, cols, g) and not cpu_kernels.col2im("cols", cols, dx, g, 1)
    with pytest.raises(ValueError, match="path must be one of"):
        cpu_kernels.col2im("scatter", cols, dx, g, 1)
