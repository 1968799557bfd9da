"""xpnn.functional.cpu_kernels: the compiled CPU loops (kernels/cpu/*.cpp) against the NumPy paths they replace, and
how they are built, cached and left out (no compiler, a failing build, kernels off)."""
from __future__ import annotations

import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from xpnn import _dispatch, nn, optim
from xpnn.functional import _fpe, cpu_kernels
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
@pytest.mark.skipif(_fpe.FENV is None, reason="the C library's floating-point flags are not known on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", ADAM_OPTIONS, ids=lambda o: ",".join(k for k, v in o.items() if v) or "plain")
def test_adam_compiled_reports_floating_point_exceptions_as_the_numpy_passes(dtype, options):
    """An inf gradient makes the NumPy passes warn "invalid value" (or raise under ``np.errstate``); the compiled
    pass raised the same flag unseen. Now the same kinds are reported (with "adam_update" named), and finite or NaN
    gradients report nothing either way (no spurious flags from the compiled loop). With amsgrad, invalid is not
    reported (the vectorized max of a NaN raises it where np.maximum does not)."""
    import warnings

    size = cpu_kernels.MIN_ELEMENTS + 1

    def kinds(grad_values, kernels):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(size).astype(dtype)
        m, v, vmax = (np.zeros(size, dtype) for _ in range(3))
        g = rng.standard_normal(size).astype(dtype)
        g[:len(grad_values)] = grad_values
        found = set()
        with _dispatch.use_kernels(kernels):
            for kind in ("divide", "over", "under", "invalid"):
                with np.errstate(all="ignore", **{kind: "raise"}):
                    try:
                        adam_update(p.copy(), g, m.copy(), v.copy(), vmax.copy(), step=1, lr=1e-2, beta1=0.9,
                                    beta2=0.999, eps=1e-8, **options)
                    except FloatingPointError:
                        found.add(kind)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                adam_update(p, g, m, v, vmax, step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, **options)
        return found, bool(caught)

    for grad_values in ((), (np.inf,), (np.nan, 0.0)):
        on, off = kinds(grad_values, True), kinds(grad_values, False)
        if options["amsgrad"]:
            off = (off[0] - {"invalid"}, bool(off[0] - {"invalid"}))
        assert on == off, grad_values
    assert kinds((np.inf,), True) == (({"invalid"}, True) if not options["amsgrad"] else (set(), False))

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


@needs_library
def test_adam_leaves_read_only_and_misaligned_arrays_to_the_numpy_passes(monkeypatch):
    """A read-only parameter or state (``flags.writeable`` False; ``np.frombuffer`` of immutable bytes) makes the
    NumPy passes raise, and the compiled loop must not write it instead; a misaligned float32 view (undefined
    behaviour in C) runs the NumPy passes too, with their values."""
    calls = []
    real = cpu_kernels.adam_update
    monkeypatch.setattr(cpu_kernels, "adam_update", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    n = cpu_kernels.MIN_ELEMENTS
    kw = dict(step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
    for which in range(4):
        if which == 1:
            continue  # (the gradient is only read)
        arrays = [np.ones(n, np.float32) for _ in range(4)]
        arrays[which].flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            adam_update(*arrays, **kw)
        assert calls == [False]
        calls.clear()
    frozen = b"\0" * (4 * n)
    with pytest.raises(ValueError, match="read-only"):
        adam_update(np.frombuffer(frozen, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32),
                    np.zeros(n, np.float32), **kw)
    assert frozen == b"\0" * (4 * n)
    calls.clear()

    finals = []
    for kernels in (True, False):
        buf = np.zeros(4 * 4 * n + 1, np.uint8)
        p, g, m, v = (buf[1 + 4 * n * i:1 + 4 * n * (i + 1)].view(np.float32) for i in range(4))
        p[:], g[:] = np.linspace(-1, 1, n), np.linspace(2, -3, n)
        assert not p.flags.aligned and p.flags.c_contiguous
        with _dispatch.use_kernels(kernels):
            adam_update(p, g, m, v, **kw)
        finals.append(p.copy())
    assert calls == [False, False]
    np.testing.assert_array_equal(*finals)


@needs_library
@pytest.mark.parametrize("options", [dict(lr=np.float64(1e-2)), dict(weight_decay=np.float64(0.1)),
                                     dict(weight_decay=np.float64(0.1), decoupled_weight_decay=True),
                                     dict(beta1=np.float64(0.9))], ids=["lr", "l2", "decoupled", "beta1"])
def test_adam_with_numpy_float64_hyperparameters_equals_the_numpy_passes(options):
    """An lr (or weight decay, beta1) that is a NumPy float64 (a schedule computed with ``np.cos``): NumPy computes
    its products with float32 arrays in float64; the compiled loop, which would round it to float32 first, is not
    taken, so the values stay the NumPy passes'."""
    def run(kernels):
        rng = np.random.default_rng(0)
        n = cpu_kernels.MIN_ELEMENTS + 1
        p = rng.standard_normal(n).astype(np.float32)
        m, v = np.zeros_like(p), np.zeros_like(p)
        kw = dict(dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8), **options)
        with _dispatch.use_kernels(kernels):
            for step in (1, 2, 3):
                adam_update(p, rng.standard_normal(n).astype(np.float32), m, v, step=step, **kw)
        return p, m, v

    for a, b in zip(run(True), run(False)):
        np.testing.assert_array_equal(a, b)


def _run_probe(env_changes: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_changes}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@needs_library
def test_a_library_cut_short_in_the_cache_is_rebuilt_not_loaded(tmp_path):
    """A cached library cut short (power lost before the disk was written, a copy that stopped) or emptied would
    crash every later process that loads it (SIGBUS): it is checked against the checksum its build recorded, and
    rebuilt. The files are readable by others sharing the folder (not mkstemp's 0600)."""
    cache = tmp_path / "cache"
    assert _probe({"XPNN_CACHE_DIR": str(cache)}, tmp_path)[0]
    (lib,) = cache.glob("cpu-*.so")
    whole = lib.read_bytes()
    for f in cache.iterdir():
        assert f.stat().st_mode & 0o044 == 0o044, f
    for size in (20000, 0):
        lib.write_bytes(whole[:size])
        out = _run_probe({"XPNN_CACHE_DIR": str(cache)}, tmp_path)
        assert out.returncode == 0, (out.returncode, out.stderr)
        assert out.stdout.split()[0] == "True"
        assert lib.stat().st_size == len(whole)  # (rebuilt whole)


def test_without_a_home_folder_the_cache_is_in_a_private_temporary_folder(monkeypatch, tmp_path):
    """No $HOME and no passwd entry (a container's user): the cache is this user's folder in the temporary
    folder, not an exception. That folder is used only when this user owns it and no one else may write to it
    (a library planted there by another user must never be loaded)."""
    pwd = pytest.importorskip("pwd", reason="POSIX users")

    def no_user(uid):
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XPNN_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_user)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cpu_kernels._cache_dirs() == [tmp_path / f"xpnn-{os.getuid()}"]

    planted = tmp_path / f"xpnn-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    monkeypatch.setenv("CXX", shutil.which("false") or "false")  # (nothing is compiled: the folder is refused)
    lib, status = cpu_kernels._load()
    assert lib is None
    assert "only this user may write" in status and "XPNN_CACHE_DIR" in status


def test_an_unwritable_cache_dir_falls_back_to_the_temporary_folder(monkeypatch, tmp_path):
    """$XPNN_CACHE_DIR that cannot be created (under a regular file): the library goes to this user's temporary
    folder instead of being left out."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XPNN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cpu_kernels._cache_dirs() == [blocker / "cache", tmp_path / f"xpnn-{cpu_kernels._uid()}"]


def test_a_hung_compiler_is_stopped_with_what_it_started(monkeypatch, tmp_path):
    """A compiler that never finishes: the build is given up after ``BUILD_TIMEOUT_S`` (once: not again in the next
    cache folder), the NumPy paths run, and the process the compiler started (as g++ starts cc1plus) is killed too,
    not left running."""
    if os.name != "posix":
        pytest.skip("a POSIX shell script stands for the compiler")
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "hung-c++"
    script.write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec echo hung 1.0\nsleep 300 &\necho $! > "{pidfile}"\n'
                      "wait\n")
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setenv("XPNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "BUILD_TIMEOUT_S", 2.0)
    start = time.monotonic()
    lib, status = cpu_kernels._load()
    assert time.monotonic() - start < 3 * 2.0
    assert lib is None and "was stopped" in status and "CXX" in status
    child = int(pidfile.read_text())
    for _ in range(100):  # (SIGKILL is delivered asynchronously)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the compiler's child process {child} still runs")


def test_a_cxx_that_is_not_a_command_line_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", 'g++ "-m64')
    monkeypatch.setenv("XPNN_CACHE_DIR", str(tmp_path))
    lib, status = cpu_kernels._load()
    assert lib is None and status.startswith("$CXX=") and "NumPy paths run" in status


def test_the_cache_key_names_the_machine(monkeypatch):
    """A home folder shared by x86-64 and arm64 hosts: each builds its own library (g++ --version does not name
    its target), instead of one failing to load the other's."""
    src, cxx = cpu_kernels._source_dir(), ["true"]
    monkeypatch.setattr(cpu_kernels, "_run", lambda cmd, timeout: subprocess.CompletedProcess(cmd, 0, "c++ 1", ""))
    keys = set()
    for machine in ("x86_64", "aarch64"):
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        keys.add(cpu_kernels._key(cxx, src))
    assert len(keys) == 2


def test_processes_starting_together_compile_once(tmp_path):
    """Three processes on an empty cache (MPI ranks): one compiles, the others wait for its library (a lock on the
    cache folder) instead of each compiling on the same cores."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None or os.name != "posix":
        pytest.skip("g++ and a POSIX shell are needed")
    log = tmp_path / "builds.log"
    script = tmp_path / "logging-c++"
    script.write_text(f'#!/bin/sh\n[ "$1" = --version ] || echo build >> "{log}"\nexec "{cxx}" "$@"\n')
    script.chmod(0o755)
    env = {**os.environ, "XPNN_CACHE_DIR": str(tmp_path / "cache"), "CXX": str(script)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    procs = [subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path) for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.split()[0] == "True", out
    assert log.read_text().split() == ["build"]


def test_status_with_kernels_off_compiles_nothing(monkeypatch):
    """``XPNN_DISABLE_KERNELS=1`` is the way to skip a build that fails or hangs: ``status()`` (``xpnn info``) then
    reports "off" without building."""
    loads = []
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(cpu_kernels, "_load", lambda: loads.append(1) or (None, "not built"))
    with _dispatch.use_kernels(False):
        assert cpu_kernels.status().startswith("off")
    assert loads == []
    assert cpu_kernels.status() == "not built" and loads == [1]


@pytest.mark.parametrize("value", ["True", "ON", "Yes"])
def test_xpnn_disable_kernels_is_read_in_any_case(value):
    env = {**os.environ, "XPNN_DISABLE_KERNELS": value}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = subprocess.run([sys.executable, "-c", "import xpnn; print(xpnn.kernels_enabled())"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_fork_while_another_thread_builds_does_not_deadlock_the_child(monkeypatch):
    """A process forked while another thread holds the build lock (a DataLoader's workers started during the first
    Adam step): the child's first kernel call builds or loads on its own instead of waiting forever."""
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(cpu_kernels, "_load", lambda: (None, "stub"))
    with cpu_kernels._lock:
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 once library() returned
            os._exit(0 if cpu_kernels.library() is None else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child waited on the build lock forever")


_FAST_MATH_PROBE = textwrap.dedent("""
    import numpy as np
    from xpnn import _dispatch
    from xpnn.functional import cpu_kernels
    from xpnn.functional.updates import adam_update
    assert cpu_kernels.library() is not None, cpu_kernels.status()
    tiny = np.float32(1e-38) / np.float32(1e4)
    print("subnormals kept:", bool(tiny != 0))
    finals = []
    for kernels in (True, False):
        rng = np.random.default_rng(0)
        p = rng.standard_normal(cpu_kernels.MIN_ELEMENTS).astype(np.float32)
        m, v, vmax = (np.zeros_like(p) for _ in range(3))
        with _dispatch.use_kernels(kernels), np.errstate(all="ignore"):
            for step in (1, 2, 3):
                g = rng.standard_normal(p.size).astype(np.float32)
                g[:5] = (np.nan, np.inf, -np.inf, 0.0, -0.0)
                adam_update(p, g, m, v, vmax, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                            weight_decay=0.1, amsgrad=True, maximize=True)
        finals.append(np.concatenate([p, m, v, vmax]).view(np.uint32))
    print("bit for bit:", bool((finals[0] == finals[1]).all()))
""")


@needs_library
def test_fast_math_in_cxx_is_cancelled(tmp_path):
    """CXX="g++ -ffast-math" (or -Ofast): the build's flags cancel it, so the compiled Adam still equals the NumPy
    passes bit for bit (NaN and inf gradients included), and loading the library leaves the process's
    floating-point mode alone (GCC links crtfastmath.o into a -ffast-math library, which turns on flush-to-zero
    for the whole process: NumPy's subnormals would become 0)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    for fast in ("-ffast-math", "-Ofast"):
        env = {**os.environ, "CXX": f"{gxx} {fast}", "XPNN_CACHE_DIR": str(tmp_path / "cache")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        out = subprocess.run([sys.executable, "-c", _FAST_MATH_PROBE], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[:2] == ["subnormals kept: True", "bit for bit: True"], (fast, out.stdout)


@needs_library
def test_adam_on_views_at_odd_offsets_of_one_buffer_equals_the_numpy_passes(monkeypatch):
    """Parameter, gradient and states as adjacent views of one buffer, starting 3 elements in (not at a vector
    boundary): the compiled pass runs (each is its own memory) and gives the NumPy passes' values."""
    calls = []
    real = cpu_kernels.adam_update
    monkeypatch.setattr(cpu_kernels, "adam_update", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    n = cpu_kernels.MIN_ELEMENTS + 5
    finals = []
    for kernels in (True, False):
        rng = np.random.default_rng(3)
        buf = np.zeros(3 + 5 * n, np.float64)
        p, g, m, v, vmax = (buf[3 + i * n:3 + (i + 1) * n] for i in range(5))
        p[:] = rng.standard_normal(n)
        with _dispatch.use_kernels(kernels):
            for step in (1, 2):
                g[:] = rng.standard_normal(n)
                adam_update(p, g, m, v, vmax, step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True)
        finals.append(buf.copy())
    assert calls == [True, True, False, False]
    np.testing.assert_array_equal(*finals)


def test_the_cache_folder_settings_are_read_as_documented(monkeypatch, tmp_path):
    """``XPNN_CACHE_DIR`` with a ``~`` (written unexpanded in a .env or YAML file) is the home folder's; a relative
    ``XDG_CACHE_HOME`` is ignored (the XDG specification); the private temporary folder comes last."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    last = tmp_path / f"xpnn-{cpu_kernels._uid()}"
    monkeypatch.setenv("XPNN_CACHE_DIR", "~/xpnn-cache")
    assert cpu_kernels._cache_dirs() == [tmp_path / "home" / "xpnn-cache", last]
    monkeypatch.delenv("XPNN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cpu_kernels._cache_dirs() == [tmp_path / "home" / ".cache" / "xpnn", last]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cpu_kernels._cache_dirs() == [tmp_path / "xdg" / "xpnn", last]


# ---- max pooling (kernels/cpu/pooling.cpp) ----------------------------------------------------------------------

# (input shape, kernel, stride, padding, dilation, ceil_mode)
POOL_GEOMETRIES = [
    ((3, 6, 28, 28), 2, 2, 0, 1, False),  # LeNet's tiles
    ((2, 4, 10, 10), 2, None, 0, 1, False),
    ((2, 3, 13, 11), 3, 2, 1, 1, False),
    ((2, 3, 12, 12), 3, 2, 1, 1, True),
    ((2, 3, 11, 13), 3, 1, 1, 2, False),  # dilation 2
    ((2, 2, 10, 9), 3, 2, 0, 1, True),  # ceil_mode: partial last windows
    ((2, 3, 9, 8), 3, 1, 0, 1, False),  # stride < kernel: overlapping windows
    ((2, 3, 9, 10), (2, 3), (1, 2), (1, 1), (2, 1), True),
    ((2, 2, 7, 7), 2, 2, 1, 1, False),  # padding, but the windows do not tile
    ((1, 2, 1, 5), 2, 1, 1, 2, False),  # dilation steps over the one row: windows with no in-bounds pixel
]


def _pool_input(shape, dtype, seed, specials=True):
    """Few distinct values (ties), signed zeros, and where ``specials`` -inf runs, whole -inf planes and NaNs of
    both signs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    x[rng.random(shape) < 0.2] = -0.0
    if specials:
        x[rng.random(shape) < 0.3] = -np.inf
        x[0, 0] = -np.inf
        nan = rng.random(shape) < 0.03
        x[nan] = np.where(rng.random(shape) < 0.5, np.nan, -np.nan)[nan]
    return x


def _pool_dy(shape, dtype, seed, specials):
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(shape).astype(dtype)
    dy[rng.random(shape) < 0.2] = -0.0
    if specials:
        dy.flat[::7] = np.inf
        dy.flat[3::11] = -np.inf
        dy.flat[5::13] = np.nan
    return dy


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


def _pool_both(fn, *args):
    """fn(*args) with the compiled kernels and with the NumPy path (copies: the results are recycled buffers)."""
    with _dispatch.use_kernels(True):
        got = [np.array(a) for a in fn(*args)]
    with _dispatch.use_kernels(False), np.errstate(invalid="ignore"):
        want = [np.array(a) for a in fn(*args)]
    return got, want


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("specials", [False, True], ids=["finite", "nan-inf"])
@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOL_GEOMETRIES)
def test_max_pool2d_compiled_equals_the_numpy_path_bit_for_bit(xs, k, s, p, d, ceil, specials, dtype):
    """Every geometry, both dtypes, ties and signed zeros; with specials -inf windows (padding never wins), NaN
    windows (argmax the last NaN, as the reference, and y that NaN) and inf/NaN in dy (0 for the pixels that did not
    win): the compiled forward and backward give the NumPy path's y, argmax and dx bit for bit."""
    from xpnn.functional import conv_numpy, pooling

    g = pooling.pool2d_geometry(xs, k, s, p, d, ceil, "test")
    x = _pool_input(xs, dtype, seed=len(xs) + g.kh, specials=specials)
    (y, arg), (y_ref, arg_ref) = _pool_both(conv_numpy.max_pool2d_numpy, x, g)
    _same_bits(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert arg.dtype == np.int32
    for finite_dy in (True, False) if specials else (True,):
        dy = _pool_dy(y.shape, dtype, seed=1, specials=not finite_dy)
        (dx,), (dx_ref,) = _pool_both(lambda *a: (conv_numpy.max_pool2d_backward_numpy(*a),), arg_ref, dy, g)
        _same_bits(dx, dx_ref)


@needs_library
def test_max_pool2d_compiled_sums_overlapping_windows_in_the_numpy_order():
    """Stride 1 with a 3x3 kernel: a pixel that wins up to nine windows gets their dy summed in increasing kernel
    offset (the NumPy path's pass order), which differs in rounding from other orders for these values."""
    from xpnn.functional import conv_numpy, pooling

    xs = (1, 1, 6, 6)
    x = np.zeros(xs, np.float32)
    x[0, 0, 2, 2] = 1.0  # the maximum of every window that holds it
    g = pooling.pool2d_geometry(xs, 3, 1, 0, 1, False, "test")
    dy = np.array([1e8, 1.0, -1e8, 3.0], np.float32).repeat(4)[:g.oh * g.ow].reshape(1, 1, g.oh, g.ow)
    (y, arg), _ = _pool_both(conv_numpy.max_pool2d_numpy, x, g)
    (dx,), (dx_ref,) = _pool_both(lambda *a: (conv_numpy.max_pool2d_backward_numpy(*a),), arg, dy, g)
    _same_bits(dx, dx_ref)
    assert dx[0, 0, 2, 2] != np.float32(dy[arg == arg].sum(dtype=np.float64))  # the order matters here


@needs_library
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunks"])
def test_max_pool2d_layer_through_the_tape_equals_the_numpy_path(chunked, monkeypatch):
    """F.max_pool2d on a tensor and its backward through the tape (LeNet's first pooling), whole and split over two
    threads (one compiled call per chunk), for a batch, an unbatched (C, H, W) input and an empty batch: y and dx
    equal the NumPy path's (kernels on, the compiled ones left out) bit for bit, and the reference's
    (``use_kernels(False)``) in value (the reference's y of a +0.0/-0.0 tie is NumPy's max, the last of them; the
    NumPy path's and the kernel's is the winning element, the first)."""
    import xpnn
    from xpnn import functional as F
    from xpnn.functional import conv_numpy, cpu_threads

    def run(kernels, compiled, x, dy):
        with _dispatch.use_kernels(kernels), monkeypatch.context() as m:
            if not compiled:
                m.setattr(cpu_kernels, "pooling_applies", lambda *a: False)
            t = xpnn.tensor(x, requires_grad=True)
            out = F.max_pool2d(t, 2)
            out.backward(dy)
            return out.numpy().copy(), np.array(t.grad)

    if chunked:
        monkeypatch.setattr(conv_numpy, "CHUNK_MIN_ELEMENTS", 1)
        cpu_threads.set_num_threads(2)
    try:
        for shape in ((8, 6, 28, 28), (6, 28, 28), (0, 6, 28, 28)):
            x = _pool_input(shape, np.float32, seed=3, specials=False)
            dy = _pool_dy(shape[:-2] + (14, 14), np.float32, seed=4, specials=False)
            got = run(True, True, x, dy)
            for a, b in zip(got, run(True, False, x, dy)):
                _same_bits(a, b)
            for a, b in zip(got, run(False, False, x, dy)):
                np.testing.assert_array_equal(a, b)
    finally:
        cpu_threads.set_num_threads(None)


@needs_library
def test_max_pool2d_takes_the_compiled_kernel_only_where_it_applies(monkeypatch):
    """C-contiguous float32/float64 NumPy input takes the compiled kernel; float16 and kernels off take the NumPy
    path (the same results)."""
    from xpnn.functional import conv_numpy, pooling

    calls = []
    real = cpu_kernels.max_pool2d
    monkeypatch.setattr(cpu_kernels, "max_pool2d", lambda *a: calls.append(real(*a)) or calls[-1])
    g = pooling.pool2d_geometry((2, 3, 8, 8), 2, None, 0, 1, False, "test")
    for dtype, on, want in ((np.float32, True, True), (np.float64, True, True), (np.float16, True, False),
                            (np.float32, False, False)):
        calls.clear()
        with _dispatch.use_kernels(on):
            conv_numpy.max_pool2d_numpy(np.ones((2, 3, 8, 8), dtype), g)
        assert calls == [want]


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_leaves_misaligned_arrays_to_the_numpy_path(monkeypatch, dtype):
    """A C-contiguous but misaligned input or dy (``np.frombuffer`` at an odd byte offset, as from a packed file or
    record; undefined behaviour in C, reported by -fsanitize=alignment) takes the NumPy path, forward and backward,
    with its values; the same arrays aligned take the compiled kernels."""
    from xpnn.functional import conv_numpy, pooling

    calls = []
    for name in ("max_pool2d", "max_pool2d_backward"):
        real = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *a, _real=real, _name=name: calls.append(
            (_name, _real(*a))) or calls[-1][1])

    def misaligned(a):
        out = np.frombuffer(bytearray(a.nbytes + 1), a.dtype, a.size, 1).reshape(a.shape)
        out[...] = a
        assert out.flags.c_contiguous and not out.flags.aligned
        return out

    xs = (2, 3, 9, 10)
    g = pooling.pool2d_geometry(xs, 3, 2, 1, 1, True, "test")
    x = _pool_input(xs, dtype, seed=5, specials=False)
    dy = _pool_dy((2, 3, g.oh, g.ow), dtype, seed=6, specials=False)
    with _dispatch.use_kernels(False):
        y_ref, arg_ref = (np.array(a) for a in conv_numpy.max_pool2d_numpy(x, g))
        dx_ref = np.array(conv_numpy.max_pool2d_backward_numpy(arg_ref, dy, g))
    calls.clear()
    y, arg = conv_numpy.max_pool2d_numpy(misaligned(x), g)
    _same_bits(np.array(y), y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    _same_bits(np.array(conv_numpy.max_pool2d_backward_numpy(arg_ref, misaligned(dy), g)), dx_ref)
    assert calls == [("max_pool2d", False)]  # (the backward's pooling_applies already said no)
    calls.clear()
    conv_numpy.max_pool2d_numpy(x, g)
    conv_numpy.max_pool2d_backward_numpy(arg_ref, dy, g)
    assert calls == [("max_pool2d", True), ("max_pool2d_backward", True)]


@needs_library
@pytest.mark.parametrize("stride,dilation", [((2**31, 2), 1), ((2, 2**32 + 2), 1), (2, (1, 2**31))])
def test_max_pool2d_kernels_are_not_given_what_a_c_int_cannot_hold(stride, dilation):
    """The pooling kernels take their geometry as C ints (ctypes truncates larger Python ints silently): a stride or
    dilation from 2^31 on (a valid geometry where one window fits in that axis) leaves them out; below, they run."""
    from xpnn.functional import pooling

    x = np.ones((2, 3, 9, 10), np.float32)
    kernel = (2, 1) if dilation != 1 else 2
    g = pooling.pool2d_geometry(x.shape, kernel, stride, 0, dilation, False, "test")
    y, arg = np.empty((2, 3, g.oh, g.ow), np.float32), np.empty((2, 3, g.oh, g.ow), np.int32)
    assert not cpu_kernels.pooling_applies(g, x, y, arg)
    small = pooling.pool2d_geometry(x.shape, kernel, 2**31 - 1, 0, 1, False, "test")
    assert cpu_kernels.pooling_applies(small, x, np.empty((2, 3, small.oh, small.ow), np.float32),
                                       np.empty((2, 3, small.oh, small.ow), np.int32))


def _relu_pair(dtype, shape, seed=0):
    """x and dy with NaNs (two payloads), infinities, +-0.0 and subnormals placed where x <= 0 and where x > 0."""
    rng = np.random.default_rng(seed)
    x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    nan1, nan2 = np.array([np.nan, np.nan], dtype)
    nan2 = (np.array(nan2).view(bits) | bits.type(1)).view(dtype)  # another quiet NaN payload
    tiny = np.finfo(dtype).smallest_subnormal
    specials = np.array([np.nan, nan2, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny], dtype)
    flat_x, flat_dy = x.reshape(-1), dy.reshape(-1)
    k = len(specials)
    if flat_x.size < 4 * k:  # (a tiny array: special x and dy side by side)
        flat_x[:k], flat_dy[k:2 * k] = specials, specials[::-1]
        flat_x[k:2 * k] = -1.0
        return x, dy
    flat_x[:k] = specials  # each special x with a finite dy
    flat_dy[k:3 * k] = np.concatenate([specials, specials])  # each special dy at x <= 0 and at x > 0
    flat_x[k:2 * k], flat_x[2 * k:3 * k] = -1.0, 1.0
    flat_x[3 * k:4 * k] = specials  # special x with special dy
    flat_dy[3 * k:4 * k] = specials[::-1]
    return x, dy


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(cpu_kernels.MIN_ELEMENTS + 3,), (7, 1031), (256, 512), (5, 5)],
                         ids=["odd", "small-fresh", "recycled", "tiny"])
def test_relu_backward_compiled_equals_the_numpy_path_bit_for_bit(dtype, shape):
    """``relu_backward`` and the ReluBackward op (the recycled-buffer path from 65536 elements) with the compiled
    pass give zero_where's bits: +0.0 where x <= 0 (-0.0 and -inf included; a NaN dy there too), dy where x > 0 or x
    is NaN (NaN payloads and -0.0 dy kept)."""
    from xpnn.functional import activations

    x, dy = _relu_pair(dtype, shape)
    got = activations.relu_backward(x, dy).copy()
    with _dispatch.use_kernels(False):
        want = activations.relu_backward(x, dy).copy()
    assert got.dtype == want.dtype == dtype and got.shape == shape
    assert got.tobytes() == want.tobytes()
    k = 8
    flat = got.reshape(-1)
    if flat.size >= 4 * k:  # (the rule itself, not only agreement)
        passed = np.array([1, 1, 1, 0, 0, 0, 1, 0], bool)  # x = NaN, NaN, inf, -inf, 0, -0, tiny, -tiny
        assert flat[:k][passed].tobytes() == dy.reshape(-1)[:k][passed].tobytes()
        assert not np.signbit(flat[:k][~passed]).any() and (flat[:k][~passed] == 0).all()
        assert not np.signbit(flat[k:2 * k]).any() and (flat[k:2 * k] == 0).all()
        assert flat[2 * k:3 * k].tobytes() == dy.reshape(-1)[2 * k:3 * k].tobytes()


@needs_library
def test_relu_backward_takes_the_compiled_pass_only_where_it_applies(monkeypatch):
    """C-contiguous float32/float64 NumPy arrays from ``MIN_ELEMENTS`` on (read-only inputs too) take the compiled
    pass; smaller, strided or float16 inputs, a dx overlapping an input, and kernels off take zero_where (the same
    values)."""
    from xpnn.functional import activations

    calls = []
    real = cpu_kernels.relu_backward
    monkeypatch.setattr(cpu_kernels, "relu_backward", lambda *a: calls.append(real(*a)) or calls[-1])
    n = 1 << 16

    def run(x, dy):
        calls.clear()
        got = activations.relu_backward(x, dy)
        with _dispatch.use_kernels(False):
            want = activations.relu_backward(x, dy)
        assert got.tobytes() == want.tobytes()
        return any(calls)

    x, dy = _relu_pair(np.float32, (2, n))
    assert run(x, dy) and run(x[0], dy[0]) and run(x[0, :cpu_kernels.MIN_ELEMENTS], dy[0, :cpu_kernels.MIN_ELEMENTS])
    assert not run(x[0, :cpu_kernels.MIN_ELEMENTS - 1], dy[0, :cpu_kernels.MIN_ELEMENTS - 1])
    assert not run(x[:, ::2], dy[:, ::2])  # strided
    assert not run(x.T, dy.T)  # (2, n) transposed: not C-contiguous
    assert not run(x.astype(np.float16), dy.astype(np.float16))
    frozen = x.copy()
    frozen.flags.writeable = False
    assert run(frozen, dy)
    out = np.empty_like(x)
    assert real(x, dy, out) and out.tobytes() == activations.relu_backward(x, dy).tobytes()
    both = np.empty(2 * x.size + 1, np.float32)  # dx one element past dy's start: overlapping
    shared_dy, shared_dx = both[:x.size].reshape(x.shape), both[1:x.size + 1].reshape(x.shape)
    assert not real(x, shared_dy, shared_dx) and not real(shared_dy, x, shared_dx)
    assert not real(x, dy, out[:, ::-1])  # a reversed (negative-stride) dx
    raw = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = np.frombuffer(raw, np.float32, x.size, offset=1).reshape(x.shape)
    misaligned_copy = np.ndarray(x.shape, np.float32, raw, offset=1)  # (writeable, misaligned)
    misaligned_copy[...] = x
    assert not misaligned.flags.aligned and not run(misaligned, dy)
    with _dispatch.use_kernels(False):
        calls.clear()
        activations.relu_backward(x, dy)
        assert not any(calls)


@needs_library
def test_relu_backward_compiled_from_several_threads_at_once():
    """Eight threads each running the compiled ReLU backward (no GIL held in the C call) on arrays of their own
    get the NumPy path's bits (the kernel keeps no state; each thread's recycled buffer is its own)."""
    from concurrent.futures import ThreadPoolExecutor

    from xpnn.functional import activations

    pairs = [_relu_pair(np.float32, (64, 1024 + 16 * i), seed=i) for i in range(8)]
    with _dispatch.use_kernels(False):
        want = [activations.relu_backward(x, dy).copy() for x, dy in pairs]

    def run(i):
        x, dy = pairs[i]
        return [activations.relu_backward(x, dy).copy() for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    for got, w in zip(results, want):
        assert all(g.tobytes() == w.tobytes() for g in got)


@needs_library
def test_relu_mlp_gradients_with_the_compiled_relu_backward_match_the_numpy_path():
    """Explicit API and tape: a 784-512-512-10 ReLU MLP's parameter gradients (the recycled-buffer path at batch
    256) with the compiled ReLU backward equal those with the kernels off, bit for bit."""
    import xpnn

    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256)

    def grads(kernels, tape):
        model = nn.Sequential(nn.Linear(784, 512, seed=0), nn.ReLU(), nn.Linear(512, 512, seed=1), nn.ReLU(),
                              nn.Linear(512, 10, seed=2))
        loss_fn = nn.CrossEntropyLoss()
        with _dispatch.use_kernels(kernels):
            if tape:
                loss_fn(model(xpnn.tensor(x)), y).backward()
            else:
                loss_fn(model(x), y)
                model.backward(loss_fn.backward(), need_input_grad=False)
        return [p.grad.copy() for p in model.parameters()]

    for tape in (False, True):
        for a, b in zip(grads(True, tape), grads(False, tape)):
            assert a.tobytes() == b.tobytes()


# --- ReLU forward, leaky ReLU forward and backward (kernels/cpu/activations.cpp) --------------------------------

_ODD_SIZES = [cpu_kernels.MIN_ELEMENTS - 1, cpu_kernels.MIN_ELEMENTS, cpu_kernels.MIN_ELEMENTS + 1,
              cpu_kernels.MIN_ELEMENTS + 15]


def _specials(dtype):
    """Every value whose bits np.maximum and np.where may treat apart: quiet NaNs of both signs and two payloads, a
    signalling NaN of each sign, +-inf, +-0.0, +-the smallest subnormal and +-the largest finite value."""
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    nan = np.array(np.nan, dtype).view(bits)
    inf = np.array(np.inf, dtype).view(bits)
    sign = bits.type(1) << bits.type(8 * np.dtype(dtype).itemsize - 1)
    nans = np.array([nan, nan | sign, nan | bits.type(5), nan | bits.type(5) | sign, inf | bits.type(1),
                     inf | bits.type(1) | sign], bits).view(dtype)
    fi = np.finfo(dtype)
    return np.concatenate([nans, np.array([np.inf, -np.inf, 0.0, -0.0, fi.smallest_subnormal,
                                           -fi.smallest_subnormal, fi.max, -fi.max, 1.0, -1.0], dtype)])


def _with_specials(dtype, shape, seed=0, at=0):
    """Standard normal values of ``shape`` with ``_specials`` written from flat index ``at`` (as many as fit)."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat, sp = x.reshape(-1), _specials(dtype)
    k = min(len(sp), flat.size - at)
    flat[at:at + k] = sp[:k]
    return x


def _bits(a):
    return a.dtype, a.shape, a.tobytes()


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(n,) for n in _ODD_SIZES] + [(256, 512), (7, 1031)],
                         ids=["min-1", "min", "min+1", "min+15", "recycled", "fresh"])
def test_relu_forward_compiled_equals_np_maximum_bit_for_bit(dtype, shape):
    """``relu`` with the compiled pass gives ``np.maximum(x, 0)``'s bits (the NumPy path, kernels off): NaNs
    unchanged (payload, sign, signalling NaNs not quieted), +0.0 for -0.0, -inf and negative subnormals; the specials
    at the start, in the middle and in the last (scalar tail) elements."""
    from xpnn.functional import activations

    size = int(np.prod(shape))
    for at in (0, size // 2 + 1, max(size - 9, 0)):
        x = _with_specials(dtype, shape, at=at)
        got = activations.relu(x).copy()
        with _dispatch.use_kernels(False):
            want = activations.relu(x).copy()
        assert _bits(got) == _bits(want) == _bits(np.maximum(x, dtype(0)))
    sp = np.tile(_specials(dtype), -(-cpu_kernels.MIN_ELEMENTS // len(_specials(dtype))))
    out = np.empty_like(sp)
    assert cpu_kernels.relu_forward(sp, out)  # (the kernel itself, NaNs included)
    assert out.tobytes() == np.maximum(sp, dtype(0)).tobytes()
    passed = ~(sp <= 0)  # the rule: x itself where not x <= 0 (NaN included), else +0.0
    assert out[passed].tobytes() == sp[passed].tobytes()
    assert not np.signbit(out[~passed]).any() and (out[~passed] == 0).all()


@needs_library
def test_relu_forward_takes_the_compiled_pass_only_where_it_applies(monkeypatch):
    """C-contiguous aligned float32/float64 NumPy arrays from ``MIN_ELEMENTS`` on (a read-only x too, and in place:
    out is x) take the compiled pass; smaller, strided, transposed, misaligned or float16 inputs, a read-only or
    partly overlapping out, and kernels off take np.maximum (the same values)."""
    from xpnn.functional import activations

    calls = []
    real = cpu_kernels.relu_forward
    monkeypatch.setattr(cpu_kernels, "relu_forward", lambda *a: calls.append(real(*a)) or calls[-1])
    n = 1 << 16

    def run(x):
        calls.clear()
        got = activations.relu(x)
        with _dispatch.use_kernels(False):
            want = activations.relu(x)
        assert _bits(got) == _bits(want)
        return any(calls)

    x = _with_specials(np.float32, (2, n))
    m = cpu_kernels.MIN_ELEMENTS
    with np.errstate(invalid="ignore", over="ignore"):  # (the casts of signalling NaNs, of max to float16)
        x64, x16 = x.astype(np.float64), x.astype(np.float16)
    assert run(x) and run(x[0]) and run(x[0, :m]) and run(x64)
    assert not run(x[0, :m - 1])
    assert not run(x[:, ::2]) and not run(x.T)  # strided; (2, n) transposed
    assert not run(x16)
    frozen = x.copy()
    frozen.flags.writeable = False
    assert run(frozen)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = np.ndarray(x.shape, np.float32, raw, offset=1)
    misaligned[...] = x
    assert not misaligned.flags.aligned and not run(misaligned)
    with _dispatch.use_kernels(False):
        calls.clear()
        activations.relu(x)
        assert not any(calls)
    want = np.maximum(x, np.float32(0))
    inplace = x.copy()
    assert real(inplace, inplace) and inplace.tobytes() == want.tobytes()  # out is x
    assert not real(x, frozen)  # read-only out
    both = np.empty(x.size + 1, np.float32)
    both[:x.size] = x.reshape(-1)
    assert not real(both[:x.size].reshape(x.shape), both[1:].reshape(x.shape))  # out one element past x
    assert not real(x, np.empty_like(x)[:, ::-1])  # a reversed out
    assert not real(x, np.empty(x.shape, np.float64))  # another dtype


_SLOPES = [0.01, 0.2, -0.5, 0.0, 1.0, 3, -2, 1e-3]


def _leaky_pair(dtype, shape, seed=0):
    """x and dy with _specials (no NaN, no subnormal: those raise the compare's or the product's exceptions) where
    x <= 0 and where x > 0, dy's also where x is special."""
    sp = np.array([v for v in _specials(dtype) if np.isfinite(v) and (v == 0 or abs(v) >= 1) or np.isinf(v)],
                  dtype)
    sp = sp[np.abs(sp) < np.finfo(dtype).max]  # (max * 3 overflows: its own test)
    rng = np.random.default_rng(seed)
    x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    fx, fd, k = x.reshape(-1), dy.reshape(-1), len(sp)
    for at in (0, fx.size - 3 * k):  # at the start and in the scalar tail
        fx[at:at + k], fd[at:at + k] = sp, 1.5
        fx[at + k:at + 2 * k], fd[at + k:at + 2 * k] = -1.0, sp
        fx[at + 2 * k:at + 3 * k], fd[at + 2 * k:at + 3 * k] = 1.0, sp
    return x, dy
# ---- SGD, Adagrad and RMSprop (kernels/cpu/optimizers.cpp, the element rules of kernels/updates.cuh) -------------

SGD_OPTIONS = [dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
               for m, d, n, wd, mx in itertools.product((0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.1),
                                                        (False, True))]
ADAGRAD_OPTIONS = [dict(lr_decay=ld, weight_decay=wd, maximize=mx)
                   for ld, wd, mx in itertools.product((0.0, 0.1), (0.0, 0.1), (False, True))]
RMSPROP_OPTIONS = [dict(centered=c, momentum=m, weight_decay=wd, maximize=mx)
                   for c, m, wd, mx in itertools.product((False, True), (0.0, 0.5), (0.0, 0.1), (False, True))]


def _options_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items() if v) or "plain"


def _assert_same_bits(a, b):
    """The same values bit for bit (signed zeros told apart), NaN where the other has NaN (its sign and payload
    aside: the loop negates a NaN gradient where NumPy multiplies it by -1, which keeps its sign)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    ints = np.uint32 if a.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(np.where(nan, 0, a).view(ints), np.where(nan, 0, b).view(ints))


_DEFAULTS = {"sgd": dict(lr=0.1), "adagrad": dict(lr=0.1, eps=1e-10),
             "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)}


def _update_run(name, dtype, size, options, kernels, steps=3, seed=0, scalars=None):
    """``steps`` updates by ``updates.<name>_update`` of fresh arrays (a parameter with +-inf and -0.0, gradients
    with NaN, +-inf and signed zeros among them): the final parameter and states."""
    from xpnn.functional import updates

    rng = np.random.default_rng(seed)
    p = rng.standard_normal(size).astype(dtype)
    p[5:8] = (np.inf, -np.inf, -0.0)
    states = [np.zeros(size, dtype) for _ in range(3)]
    fn = getattr(updates, f"{name}_update")
    with _dispatch.use_kernels(kernels), np.errstate(all="ignore"):  # (the NumPy passes warn about the NaN)
        for step in range(1, steps + 1):
            g = rng.standard_normal(size).astype(dtype)
            g[:5] = (np.nan, np.inf, -np.inf, 0.0, -0.0)
            kw = {**_DEFAULTS[name], **(scalars or {}), **options}
            if name == "sgd":
                fn(p, g, states[0], first_step=step == 1, **kw)
            elif name == "adagrad":
                fn(p, g, states[0], step=step, **kw)
            else:
                fn(p, g, *states, **kw)
    return [p, *states]


def _misaligned(a):
    """A C-contiguous copy of float32 ``a`` one byte into a buffer (``flags.aligned`` False)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = buf[1:].view(np.float32)
    out[:] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def _counting(monkeypatch, name):
    """A list that receives what ``cpu_kernels.<name>_update`` returns at each call."""
    calls = []
    real = getattr(cpu_kernels, f"{name}_update")
    monkeypatch.setattr(cpu_kernels, f"{name}_update", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    return calls


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(n,) for n in _ODD_SIZES] + [(256, 512), (7, 1031)],
                         ids=["min-1", "min", "min+1", "min+15", "recycled", "fresh"])
def test_leaky_relu_compiled_equals_the_numpy_path_bit_for_bit(dtype, shape):
    """``leaky_relu`` and ``leaky_relu_backward`` with the compiled pass give ``np.where(x > 0, a, a * slope)``'s
    bits (kernels off), the product in x's dtype (a Python float slope rounded to float32 for float32 x, NEP 50),
    for slopes below and above 1, negative, 0 and Python ints; +-0.0, +-inf and +-1 in x and in dy, at the start and
    in the scalar tail. From ``MIN_ELEMENTS`` the kernel itself runs (no exception on these values)."""
    from xpnn.functional import activations

    x, dy = _leaky_pair(dtype, shape)
    compiled = x.size >= cpu_kernels.MIN_ELEMENTS
    for slope in _SLOPES:
        with np.errstate(invalid="ignore"):  # (inf * 0: both paths warn; the NaN made is compared below)
            got_y = activations.leaky_relu(x, slope).copy()
            got_dx = activations.leaky_relu_backward(x, dy, slope).copy()
            with _dispatch.use_kernels(False):
                want_y = activations.leaky_relu(x, slope)
                want_dx = activations.leaky_relu_backward(x, dy, slope)
        assert _bits(got_y) == _bits(want_y) and got_y.dtype == dtype
        assert _bits(got_dx) == _bits(want_dx) and got_dx.dtype == dtype
        if slope != 0:  # (the kernel ran: no exception from these values)
            out = np.empty_like(x)
            assert cpu_kernels.leaky_relu_forward(x, slope, out) == compiled
            assert not compiled or out.tobytes() == want_y.tobytes()
            assert cpu_kernels.leaky_relu_backward(x, dy, slope, out) == compiled
            assert not compiled or out.tobytes() == want_dx.tobytes()
    assert (got_y[x > 0] == x[x > 0]).all() and (got_dx[x > 0] == dy[x > 0]).all()  # the rule (slope 1e-3)
    neg = ~(x > 0) & np.isfinite(x)
    assert (got_y[neg] == x[neg] * dtype(1e-3)).all()


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_with_nans_and_subnormals_equals_the_numpy_path(dtype):
    """NaNs (quiet and signalling, both signs, two payloads) and subnormals in x and dy: the same bits as the NumPy
    path and the same warnings (a signalling NaN's product: invalid; the compiled pass falls back to NumPy where
    its products or compares raised an exception)."""
    import warnings

    from xpnn.functional import activations

    n = cpu_kernels.MIN_ELEMENTS + 5
    for at in (0, n - 9):
        x = _with_specials(dtype, (n,), at=at)
        dy = _with_specials(dtype, (n,), seed=1, at=n // 3 if at == 0 else 5)
        results = []
        for kernels in (True, False):
            with warnings.catch_warnings(record=True) as caught, _dispatch.use_kernels(kernels):
                warnings.simplefilter("always")
                y = activations.leaky_relu(x, 0.25).copy()
                dx = activations.leaky_relu_backward(x, dy, 0.25).copy()
            results.append((_bits(y), _bits(dx), sorted(str(w.message) for w in caught)))
        assert results[0] == results[1]
        assert any("invalid" in m for m in results[0][2])  # (the signalling NaNs' products)


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_compiled_reports_overflow_and_invalid_as_numpy_does(dtype):
    """NumPy multiplies every element by the slope, x > 0 too: an overflow there warns (or raises under
    ``np.errstate(over="raise")``), inf * 0 warns of an invalid value; with the compiled pass the same (it takes
    every product and hands such arrays back to NumPy), and the values agree."""
    from xpnn.functional import activations

    n = cpu_kernels.MIN_ELEMENTS + 1
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    dy = np.ones(n, dtype)
    big = x.copy()
    big[n // 2] = np.finfo(dtype).max  # x > 0: the result is x, the unused product overflows
    out = np.empty_like(x)
    assert not cpu_kernels.leaky_relu_forward(big, 2.0, out)
    assert not cpu_kernels.leaky_relu_backward(x, big, 2.0, out)
    for kernels in (True, False):
        with _dispatch.use_kernels(kernels):
            with pytest.warns(RuntimeWarning, match="overflow"):
                y = activations.leaky_relu(big, 2.0)
            assert y[n // 2] == np.finfo(dtype).max
            with pytest.warns(RuntimeWarning, match="overflow"):
                activations.leaky_relu_backward(x, big, 2.0)
            with np.errstate(over="raise"), pytest.raises(FloatingPointError):
                activations.leaky_relu(big, 2.0)
            inf = x.copy()
            inf[3] = np.inf
            with pytest.warns(RuntimeWarning, match="invalid"):
                y = activations.leaky_relu(inf, 0.0)
            assert y[3] == np.inf
            with pytest.warns(RuntimeWarning, match="invalid"):
                activations.leaky_relu_backward(x + 1e3, inf, 0)
    assert cpu_kernels.leaky_relu_forward(x, 2.0, out)  # (the same arrays without those values: compiled)



@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("way", ["forward, out is x", "backward, dx is dy", "backward, dx is x"])
def test_leaky_relu_in_place_with_an_exception_leaves_the_input_for_the_numpy_path(dtype, way):
    """In place (out is x, dx is dy or x), a product that overflows in the 12th block of 256 sends the caller to
    the NumPy path, which must find the inputs as they were: the compiled pass had written its products over the
    first blocks (x <= 0 times the slope), so NumPy's where() then multiplied those by the slope again. The
    overflow is reported as ``np.errstate`` says; without an exception the in-place result is NumPy's."""
    n = cpu_kernels.MIN_ELEMENTS + 904
    rng = np.random.default_rng(7)
    x0, dy0 = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    a0 = x0 if way.startswith("forward") else dy0
    a0[3000] = np.finfo(dtype).max  # (its product by 3 overflows)

    def run(x, dy, slope):
        out = dy if way.endswith("dy") else x
        if way.startswith("forward"):
            return cpu_kernels.leaky_relu_forward(x, slope, out)
        return cpu_kernels.leaky_relu_backward(x, dy, slope, out)

    x, dy = x0.copy(), dy0.copy()
    assert not run(x, dy, 3.0)
    assert x.tobytes() == x0.tobytes() and dy.tobytes() == dy0.tobytes()
    x, dy = x0.copy(), dy0.copy()
    assert run(x, dy, 0.5)
    assert (dy if way.endswith("dy") else x).tobytes() == np.where(x0 > 0, a0, a0 * 0.5).tobytes()


@needs_library
def test_leaky_relu_takes_the_compiled_pass_only_where_it_applies(monkeypatch):
    """Python float or int slopes on C-contiguous aligned float32/float64 arrays from ``MIN_ELEMENTS`` (read-only
    inputs too; out may be an input) take the compiled pass; a NumPy float64 slope (NumPy then computes float32 in
    float64), a NaN, infinite or out-of-float32-range slope, an int past 2**53, float16, strided or smaller
    arrays, and kernels off take the NumPy path (the same values and dtype)."""
    from xpnn.functional import activations

    calls = []
    for name in ("leaky_relu_forward", "leaky_relu_backward"):
        real_fn = getattr(cpu_kernels, name)
        monkeypatch.setattr(cpu_kernels, name, lambda *a, _f=real_fn: calls.append(_f(*a)) or calls[-1])
    n = 1 << 16

    def run(x, dy, slope):
        calls.clear()
        with np.errstate(over="ignore", invalid="ignore"):  # (inf and NaN slopes times x = 0)
            got = (activations.leaky_relu(x, slope), activations.leaky_relu_backward(x, dy, slope))
            hit = list(calls)  # (forward and backward: both compiled or neither)
            with _dispatch.use_kernels(False):
                want = (activations.leaky_relu(x, slope), activations.leaky_relu_backward(x, dy, slope))
        for g, w in zip(got, want):
            assert _bits(g) == _bits(w)
        assert len(hit) in (0, 2) and len(set(hit)) <= 1
        return any(hit)

    x, dy = _leaky_pair(np.float32, (2, n))
    m = cpu_kernels.MIN_ELEMENTS
    assert run(x, dy, 0.01) and run(x[0, :m], dy[0, :m], 0.01) and run(x, dy, 2)
    assert run(x.astype(np.float64), dy.astype(np.float64), 1e300)
    assert not run(x[0, :m - 1], dy[0, :m - 1], 0.01)
    assert not run(x[:, ::2], dy[:, ::2], 0.01) and not run(x.T, dy.T, 0.01)
    assert not run(x.astype(np.float16), dy.astype(np.float16), 0.01)
    for slope in (np.float64(0.01), np.float32(0.01), float("nan"), float("inf"), 3.5e38, 1e300, 2**53 + 1, True):
        calls.clear()
        assert not run(x, dy, slope)
    assert activations.leaky_relu(x, np.float64(0.01)).dtype == np.float64  # (NumPy's promotion, kept)
    zeros, out = np.zeros(m, np.float32), np.empty(m, np.float32)
    assert cpu_kernels.leaky_relu_forward(zeros, 3.0e38, out)  # (a slope finite in float32)
    frozen_x, frozen_dy = x.copy(), dy.copy()
    frozen_x.flags.writeable = frozen_dy.flags.writeable = False
    assert run(frozen_x, frozen_dy, 0.01)
    with _dispatch.use_kernels(False):
        calls.clear()
        activations.leaky_relu(x, 0.01)
        assert not any(calls)
    monkeypatch.undo()
    want_y, want_dx = np.where(x > 0, x, x * 0.01), np.where(x > 0, dy, dy * 0.01)
    a, b = x.copy(), dy.copy()
    assert cpu_kernels.leaky_relu_forward(a, 0.01, a) and a.tobytes() == want_y.tobytes()  # out is x
    a = x.copy()
    assert cpu_kernels.leaky_relu_backward(a, b, 0.01, b) and b.tobytes() == want_dx.tobytes()  # dx is dy
    b = dy.copy()
    assert cpu_kernels.leaky_relu_backward(a, b, 0.01, a) and a.tobytes() == want_dx.tobytes()  # dx is x
    both = np.empty(x.size + 1, np.float32)
    both[:x.size] = x.reshape(-1)
    assert not cpu_kernels.leaky_relu_forward(both[:x.size].reshape(x.shape), 0.01, both[1:].reshape(x.shape))
    assert not cpu_kernels.leaky_relu_backward(x, dy, 0.01, frozen_x)  # read-only dx


@needs_library
def test_leaky_relu_gradients_from_the_compiled_passes_match_finite_differences():
    """float64, ``MIN_ELEMENTS + 3`` elements (the compiled forward and backward run): the tape's gradient of
    ``sum(w * leaky_relu(x, 0.3))`` equals central differences, and the NumPy path's gradient bit for bit."""
    import xpnn
    from _numgrad import numeric_grad
    from xpnn import functional as F

    rng = np.random.default_rng(4)
    n = cpu_kernels.MIN_ELEMENTS + 3
    x = rng.standard_normal(n)
    x[np.abs(x) < 1e-3] = 0.5  # (away from the kink)
    w = rng.standard_normal(n)

    def grad(kernels):
        with _dispatch.use_kernels(kernels):
            X = xpnn.tensor(x, requires_grad=True)
            (F.leaky_relu(X, 0.3) * w).sum().backward()
            return np.asarray(X.grad)

    got = grad(True)
    assert got.tobytes() == grad(False).tobytes()
    num = numeric_grad(lambda: float((F.leaky_relu(x, 0.3) * w).sum()), x)
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)


def test_relu_and_leaky_relu_baseline_loops_equal_numpy_bit_for_bit(tmp_path):
    """The loops a CPU without AVX2 runs (activations.cpp built with ``-DXPNN_CPU_CLONES=``: no AVX2 variant; this
    machine's library runs the AVX2 one where the CPU has it): ReLU forward and backward, leaky ReLU forward and
    backward on float32/float64 specials at the start and in the tail equal the NumPy expressions bit for bit."""
    import ctypes

    from xpnn.functional import activations

    cxx, why = cpu_kernels._compiler()
    if cxx is None:
        pytest.skip(why)
    lib_path = tmp_path / "activations.so"
    proc = subprocess.run([*cxx, *cpu_kernels.FLAGS, "-DXPNN_CPU_CLONES=", "-o", str(lib_path),
                           str(REPO / "kernels" / "cpu" / "activations.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(lib_path))
    sig = cpu_kernels._signatures()
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        fns = {}
        for kind in ("relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward"):
            fn = fns[kind] = getattr(lib, f"xpnn_cpu_{kind}_{name}")
            fn.argtypes = sig[f"xpnn_cpu_{kind}_{name}"]
            fn.restype = ctypes.c_int if kind.startswith("leaky") else None
        n = cpu_kernels.MIN_ELEMENTS + 15
        for at in (0, n - 9):
            x, dy = _with_specials(dtype, (n,), at=at), _with_specials(dtype, (n,), seed=1, at=n - 16 - at + 7)
            out = np.empty_like(x)
            fns["relu_forward"](x.ctypes.data, out.ctypes.data, n)
            assert out.tobytes() == np.maximum(x, dtype(0)).tobytes()
            fns["relu_backward"](x.ctypes.data, dy.ctypes.data, out.ctypes.data, n)
            with _dispatch.use_kernels(False):
                assert out.tobytes() == activations.relu_backward(x, dy).tobytes()
            fx, fd = _leaky_pair(dtype, (n,), seed=at)
            assert fns["leaky_relu_forward"](fx.ctypes.data, 0.2, out.ctypes.data, n) == 0
            assert out.tobytes() == np.where(fx > 0, fx, fx * 0.2).tobytes()
            assert fns["leaky_relu_backward"](fx.ctypes.data, fd.ctypes.data, 0.2, out.ctypes.data, n) == 0
            assert out.tobytes() == np.where(fx > 0, fd, fd * 0.2).tobytes()
            with np.errstate(all="ignore"):  # (NaNs, subnormals: the bits still equal; exceptions are reported)
                fns["leaky_relu_forward"](x.ctypes.data, 0.2, out.ctypes.data, n)
                assert out.tobytes() == np.where(x > 0, x, x * 0.2).tobytes()


@needs_library
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", [("sgd", o) for o in SGD_OPTIONS] + [("adagrad", o) for o in ADAGRAD_OPTIONS]
                         + [("rmsprop", o) for o in RMSPROP_OPTIONS],
                         ids=lambda v: _options_id(v) if isinstance(v, dict) else v)
def test_sgd_adagrad_rmsprop_compiled_equal_the_numpy_passes_bit_for_bit(monkeypatch, name, options, dtype):
    """Every option set and both dtypes, 4097 elements, three steps (SGD's first with ``first_step``: the buffer
    takes the gradient) with non-finite gradients and parameters: the compiled pass runs and gives the NumPy
    passes' values exactly."""
    calls = _counting(monkeypatch, name)
    size = cpu_kernels.MIN_ELEMENTS + 1
    got = _update_run(name, dtype, size, options, kernels=True)
    assert calls == [True] * 3
    want = _update_run(name, dtype, size, options, kernels=False)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.parametrize("name, options", [("sgd", dict(momentum=0.9, nesterov=True)), ("adagrad", {}),
                                           ("rmsprop", dict(centered=True, momentum=0.5))])
@pytest.mark.parametrize("size", [cpu_kernels.MIN_ELEMENTS - 1, cpu_kernels.MIN_ELEMENTS,
                                  cpu_kernels.MIN_ELEMENTS + 3, 3 * cpu_kernels.MIN_ELEMENTS + 7])
def test_sgd_adagrad_rmsprop_compiled_from_min_elements_on(monkeypatch, name, options, size):
    """Sizes around ``MIN_ELEMENTS`` (not multiples of a vector width): the compiled pass from ``MIN_ELEMENTS`` on,
    the NumPy passes below, the same values either way."""
    calls = _counting(monkeypatch, name)
    got = _update_run(name, np.float32, size, options, kernels=True)
    assert calls == [True] * 3 if size >= cpu_kernels.MIN_ELEMENTS else calls == []
    for a, b in zip(got, _update_run(name, np.float32, size, options, kernels=False)):
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.parametrize("name, scalars", [
    ("sgd", dict(lr=np.float64(0.1))), ("sgd", dict(momentum=np.float64(0.9))),
    ("sgd", dict(momentum=0.9, dampening=np.float64(0.3))), ("sgd", dict(weight_decay=np.float64(0.1))),
    ("adagrad", dict(lr=np.float64(0.1))), ("adagrad", dict(lr_decay=np.float64(0.1))),
    ("adagrad", dict(eps=np.float64(1e-10))), ("adagrad", dict(weight_decay=np.float64(0.1))),
    ("rmsprop", dict(lr=np.float64(1e-2))), ("rmsprop", dict(alpha=np.float64(0.99))),
    ("rmsprop", dict(eps=np.float64(1e-8))), ("rmsprop", dict(momentum=np.float64(0.5))),
    ("rmsprop", dict(weight_decay=np.float64(0.1)))], ids=lambda v: _options_id(v) if isinstance(v, dict) else v)
def test_sgd_adagrad_rmsprop_with_numpy_float64_hyperparameters_equal_the_numpy_passes(monkeypatch, name, scalars):
    """A hyperparameter that is a NumPy float64 (a schedule computed with ``np.cos``): NumPy computes its products
    with float32 arrays in float64; the compiled loop, which would round it to float32 first, is not taken."""
    calls = _counting(monkeypatch, name)
    size = cpu_kernels.MIN_ELEMENTS + 1
    got = _update_run(name, np.float32, size, {}, kernels=True, scalars=scalars)
    assert calls == [False] * 3
    for a, b in zip(got, _update_run(name, np.float32, size, {}, kernels=False, scalars=scalars)):
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.parametrize("name", ["adam", "sgd", "adagrad", "rmsprop"])
def test_a_weight_decay_that_rounds_to_zero_leaves_the_update_to_the_numpy_passes(monkeypatch, name):
    """``weight_decay=1e-50`` is not 0, so the NumPy passes add ``p * 1e-50`` (0 in float32; NaN where p is
    infinite) to the gradient; the compiled loop sees a float32 0 and would add nothing: it is not taken."""
    calls = _counting(monkeypatch, name)
    size = cpu_kernels.MIN_ELEMENTS + 1
    finals = []
    for kernels in (True, False):
        if name == "adam":
            p = np.linspace(-1, 1, size, dtype=np.float32)
            p[5:7] = (np.inf, -np.inf)
            states = [np.zeros_like(p) for _ in range(2)]
            with _dispatch.use_kernels(kernels), np.errstate(all="ignore"):
                adam_update(p, np.ones_like(p), *states, step=1, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                            weight_decay=1e-50)
            finals.append([p, *states])
        else:
            finals.append(_update_run(name, np.float32, size, {}, kernels, scalars=dict(weight_decay=1e-50)))
    assert calls == [False] * (2 if name == "adam" else 6)
    assert np.isnan(finals[1][0][5:7]).all()  # (the infinite parameters: inf * 0 in the NumPy passes)
    for a, b in zip(*finals):
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop"])
def test_sgd_adagrad_rmsprop_take_the_compiled_pass_only_where_it_applies(monkeypatch, name):
    """Read-only arrays make the NumPy passes raise (never written by the loop instead); strided, misaligned,
    overlapping and float16 arrays, and kernels off, run the NumPy passes, with their values."""
    from xpnn.functional import updates

    calls = _counting(monkeypatch, name)
    n = cpu_kernels.MIN_ELEMENTS
    fn = getattr(updates, f"{name}_update")
    kw = {"sgd": dict(lr=0.1, momentum=0.9), "adagrad": dict(step=1, lr=0.1),
          "rmsprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.5, centered=True)}[name]
    n_arrays = {"sgd": 3, "adagrad": 3, "rmsprop": 5}[name]

    def run(arrays, kernels=True):
        calls.clear()
        with _dispatch.use_kernels(kernels):
            fn(*arrays, **kw)
        return list(calls)

    def fresh(k=n, dtype=np.float32):
        arrays = [np.linspace(0.25, 1, k).astype(dtype) for _ in range(n_arrays)]
        arrays[2] += 1  # (the squares' average above the average's square: no sqrt of a negative)
        return arrays

    assert run(fresh()) == [True]
    for which in range(n_arrays):
        if which == 1:
            continue  # (the gradient is only read)
        arrays = fresh()
        arrays[which].flags.writeable = False
        before = arrays[which].copy()
        with pytest.raises(ValueError, match="read-only"):
            run(arrays)
        assert calls == [False]
        np.testing.assert_array_equal(arrays[which], before)
    for make in (lambda a: np.repeat(a, 2)[::2], _misaligned):  # strided, misaligned
        finals = []
        for kernels in (True, False):
            arrays = fresh()
            arrays[0] = make(arrays[0])
            assert run(arrays, kernels) == [False]
            finals.append([a.copy() for a in arrays])
        for a, b in zip(*finals):
            _assert_same_bits(a, b)
    arrays = fresh()
    arrays[-1] = arrays[1]  # a state in the gradient's memory
    assert run(arrays) == [False]
    assert run(fresh(dtype=np.float16)) == [False]  # (float16: no compiled loop)
    assert run(fresh(), kernels=False) == [False]


OPTIMIZERS = {
    "sgd-nesterov": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4), "sgd"),
    "sgd-dampening": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, maximize=True), "sgd"),
    "sgd-plain": (lambda ps: optim.SGD(ps, lr=0.05), "sgd"),
    "adagrad": (lambda ps: optim.Adagrad(ps, lr=0.05, lr_decay=0.01, weight_decay=1e-4), "adagrad"),
    "rmsprop-centered": (lambda ps: optim.RMSprop(ps, lr=1e-3, centered=True, momentum=0.5, weight_decay=1e-4),
                         "rmsprop"),
    "rmsprop": (lambda ps: optim.RMSprop(ps, lr=1e-3, maximize=True), "rmsprop"),
}


@needs_library
@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_an_mlp_trained_with_compiled_sgd_adagrad_rmsprop_matches_the_numpy_one(monkeypatch, which):
    """Through the optimizer's flat buffer: ten steps of a 64-128-10 MLP (9.6 K elements in one update) take the
    compiled pass and give the same parameters as with the kernels off."""
    make, name = OPTIMIZERS[which]
    calls = _counting(monkeypatch, name)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((32, 64)).astype(np.float32), rng.integers(0, 10, 32)
    finals = []
    for kernels in (True, False):
        with _dispatch.use_kernels(kernels):
            model = nn.Sequential(nn.Linear(64, 128, seed=0), nn.ReLU(), nn.Linear(128, 10, seed=1))
            opt = make(model.parameters())
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(10):
                opt.zero_grad()
                loss_fn(model(x), y)
                model.backward(loss_fn.backward(), need_input_grad=False)
                opt.step()
            finals.append([p.data.copy() for p in model.parameters()])
    assert calls == [True] * 10 + [False] * 10
    for a, b in zip(*finals):
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_lone_parameters_with_compiled_sgd_adagrad_rmsprop_match_the_numpy_ones(monkeypatch, which):
    """Parameters outside a flat buffer, each updated by itself: the large one (float64, 5,000 elements) takes the
    compiled pass, the small one (float64, 10) the NumPy passes; both end as with the kernels off."""
    from xpnn.nn.parameter import Parameter

    make, name = OPTIMIZERS[which]
    calls = _counting(monkeypatch, name)
    finals = []
    for kernels in (True, False):
        rng = np.random.default_rng(2)
        big, small = Parameter(rng.standard_normal(5000)), Parameter(rng.standard_normal(10))
        opt = make([big, small])
        with _dispatch.use_kernels(kernels):
            for _ in range(4):
                big.grad, small.grad = rng.standard_normal(5000), rng.standard_normal(10)
                opt.step()
        finals.append([big.data.copy(), small.data.copy()])
    assert calls == [True] * 4 + [False] * 4  # (the small parameter: below MIN_ELEMENTS, not asked)
    for a, b in zip(*finals):
        _assert_same_bits(a, b)


@needs_library
@pytest.mark.skipif(_fpe.FENV is None, reason="the C library's floating-point flags are not known on this machine")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, options", [("sgd", o) for o in SGD_OPTIONS] + [("adagrad", o) for o in ADAGRAD_OPTIONS]
                         + [("rmsprop", o) for o in RMSPROP_OPTIONS],
                         ids=lambda v: _options_id(v) if isinstance(v, dict) else v)
def test_sgd_adagrad_rmsprop_compiled_report_floating_point_exceptions_as_the_numpy_passes(name, options, dtype):
    """The kinds of floating-point exception the compiled pass reports (``np.errstate(kind="raise")``, and whether
    it warns by default) are those of the NumPy passes, for finite, inf, -inf and NaN gradients and an infinite
    parameter (e.g. Adagrad's inf / inf: invalid)."""
    import warnings

    from xpnn.functional import updates

    size = cpu_kernels.MIN_ELEMENTS + 1
    fn = getattr(updates, f"{name}_update")

    def run(p, g, states, step):
        kw = {**_DEFAULTS[name], **options}
        if name == "sgd":
            fn(p, g, states[0], first_step=step == 1, **kw)
        elif name == "adagrad":
            fn(p, g, states[0], step=step, **kw)
        else:
            fn(p, g, *states, **kw)

    def kinds(grad_values, param_values, kernels):
        rng = np.random.default_rng(0)
        p0 = rng.standard_normal(size).astype(dtype)
        p0[:len(param_values)] = param_values
        g = rng.standard_normal(size).astype(dtype)
        g[:len(grad_values)] = grad_values
        found = set()
        with _dispatch.use_kernels(kernels):
            for kind in ("divide", "over", "under", "invalid"):
                for step in (1, 2):
                    with np.errstate(all="ignore", **{kind: "raise"}):
                        try:
                            run(p0.copy(), g, [np.full(size, 0.5, dtype) for _ in range(3)], step)
                        except FloatingPointError:
                            found.add((kind, step))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run(p0.copy(), g, [np.full(size, 0.5, dtype) for _ in range(3)], 2)
        return found, bool(caught)

    for grads, params in (((), ()), ((np.inf,), ()), ((-np.inf, np.inf), ()), ((np.nan,), ()), ((), (np.inf,))):
        assert kinds(grads, params, True) == kinds(grads, params, False), (grads, params)
