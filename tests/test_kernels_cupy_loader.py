"""The CuPy side of the launch code without a GPU: ``CupyLoader`` builds real ``cupy.RawModule`` /
``cupy.ElementwiseKernel`` objects (construction needs no device), and, over a stand-in ``cupy`` whose kernels run
on the CPU shim, serves every op with CuPy's call conventions and the per-device cache.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import xpnn.functional as F
from xpnn import _dispatch
from xpnn._cuda import loader as loader_mod
from xpnn._cuda import make_provider, registry, sources
from xpnn.errors import NamespaceMismatchError
from xpnn.functional import updates

from shim.requirements import require_cxx

require_cxx()  # skip (with the reason) without a C++ compiler, before anything builds the shim

from shim import ShimLoader


# ---- real CuPy objects, built without a device ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cupy():
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - any import failure means: no CuPy here
        pytest.skip(f"CuPy is not importable ({type(exc).__name__}: {exc})")
    return cupy


def test_raw_module_as_cupy_builds_it(cupy, monkeypatch):
    """RawModule(code=<inlined source>, name_expressions=<every registry instantiation>), default options (CuPy adds
    its include paths and --std), compiled by NVRTC: nothing here touches a device."""
    monkeypatch.setattr(loader_mod.CupyLoader, "_device", staticmethod(lambda: 0))
    cl = loader_mod.CupyLoader()
    for source in registry.sources():
        mod = cl._module(0, source)
        assert isinstance(mod, cupy.RawModule)
        assert mod.code == sources.read_source(source) and "#include \"" not in mod.code
        assert mod.name_expressions == registry.name_expressions(source)
        assert len(set(mod.name_expressions)) == len(mod.name_expressions)
        assert mod.backend == "nvrtc" and mod.options == ()
        assert cl._module(0, source) is mod and cl._module(1, source) is not mod  # one module per device


def test_elementwise_kernels_as_cupy_builds_them(cupy):
    cl = loader_mod.CupyLoader()
    for row in registry.elementwise():
        k = cl.elementwise(row, "float32")
        assert isinstance(k, cupy.ElementwiseKernel)
        assert k.name == row.kernel_name and k.name != "xpnn_" + row.name  # no overload of the preamble function
        assert k.nin == len(row.in_params.split(",")) and k.nout == 1
        assert not k.no_return
        assert cl.elementwise(row, "float64") is k  # CuPy compiles per dtype and device itself


# ---- CupyLoader over a stand-in cupy running the shim ---------------------------------------------------------

class _FakeRawKernel:
    def __init__(self, shim: ShimLoader, row: registry.RawKernel, name: str, calls: list):
        self.shim, self.row, self.name, self.calls = shim, row, name, calls

    def __call__(self, grid, block, args, **kwargs):
        # CuPy's RawKernel.__call__(grid, block, args, *, shared_mem=0): tuples for the dimensions
        assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)
        assert set(kwargs) <= {"shared_mem", "stream"}
        for a in args:  # what CuPy can pass: device arrays and numpy scalars (Python numbers would widen)
            assert isinstance(a, (np.ndarray, np.generic)), type(a)
        self.calls.append((self.name, grid, block))
        self.shim._launch(self.name, grid[0], block[0], args, self.row.cooperative)


def _fake_cupy(shim: ShimLoader, calls: list) -> types.ModuleType:
    rows = {row.name_expression(dt): row for row in registry.RAW for dt in row.dtypes}
    ew_rows = {row.kernel_name: row for row in registry.elementwise()}

    class RawModule:
        def __init__(self, *, code, name_expressions=None, options=(), **kwargs):
            assert not kwargs, kwargs
            self.code, self.name_expressions, self.options = code, tuple(name_expressions), options

        def get_function(self, name):
            assert name in self.name_expressions, name
            return _FakeRawKernel(shim, rows[name], name, calls)

    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name, preamble=""):
            row = ew_rows[name]
            assert (in_params, out_params, operation) == (row.in_params, row.out_params, row.body)
            assert preamble == sources.read_source(registry.ELEMENTWISE_PREAMBLE)
            self.row = row

        def __call__(self, *args):
            calls.append((self.row.kernel_name,))
            return shim.elementwise(self.row, np.asarray(args[0]).dtype.name)(*args)

    return types.SimpleNamespace(RawModule=RawModule, ElementwiseKernel=ElementwiseKernel)


@pytest.fixture()
def cupy_loader(monkeypatch):
    calls: list = []
    shim = ShimLoader()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(shim, calls))
    monkeypatch.setattr(loader_mod.CupyLoader, "_device", staticmethod(lambda: 0))
    monkeypatch.setattr(loader_mod.CupyLoader, "_sm_count", staticmethod(lambda device: 2))  # small grid caps
    cl = loader_mod.CupyLoader()
    cl.calls = calls
    return cl


def _both(cl, fn, *args, **kwargs):
    with _dispatch.use_kernels(False):
        want = fn(*args, **kwargs)
    before = len(cl.calls)
    with _dispatch.use_provider(make_provider(cl)):
        got = fn(*args, **kwargs)
    assert len(cl.calls) > before, f"{fn.__name__} did not launch through CupyLoader"
    return got, want


def test_cupy_loader_serves_every_op(cupy_loader):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 300)).astype(np.float32)
    t = rng.integers(0, 300, 37)
    t[5] = -100
    for fn in (F.logsumexp, F.softmax, F.log_softmax):
        got, want = _both(cupy_loader, fn, x)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    for reduction in ("mean", "sum", "none"):
        got, want = _both(cupy_loader, F.cross_entropy_with_grad, x, t, reduction=reduction, label_smoothing=0.1)
        np.testing.assert_allclose(got[0], want[0], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=2e-5, atol=1e-6)
    names = [c[0] for c in cupy_loader.calls]
    assert "cross_entropy_count" in names  # the helper kernel ran before each cross-entropy launch
    got, want = _both(cupy_loader, F.sigmoid_backward, x, x[::-1].copy())
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert names.count("cross_entropy_fwd_bwd<float, float>") == 3

    p, g = rng.standard_normal(1000), rng.standard_normal(1000)
    results = []
    for use in (False, True):
        param, m, v = p.copy(), np.zeros(1000), np.zeros(1000)
        with _dispatch.use_provider(make_provider(cupy_loader)), _dispatch.use_kernels(use):
            updates.adam_update(param, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
        results.append(param)
    np.testing.assert_array_equal(results[0], results[1])


def test_cupy_loader_caches_per_device(cupy_loader, monkeypatch):
    row = registry.RAW_BY_NAME["softmax"]
    a = cupy_loader.raw(row, "float32")
    assert cupy_loader.raw(row, "float32") is a
    monkeypatch.setattr(loader_mod.CupyLoader, "_device", staticmethod(lambda: 1))
    assert cupy_loader.raw(row, "float32") is not a
    assert {k[0] for k in cupy_loader._modules} == {0, 1}


def test_cupy_loader_refuses_arrays_of_another_device(cupy_loader):
    class OnDevice1(np.ndarray):
        device = types.SimpleNamespace(id=1)

    x = np.ones((2, 40), np.float32).view(OnDevice1)
    kernel = cupy_loader.raw(registry.RAW_BY_NAME["softmax"], "float32")
    with pytest.raises(NamespaceMismatchError, match="device 1 but the current device is 0"):
        kernel.launch(1, 64, (x, np.empty((2, 40), np.float32), np.int64(2), np.int64(40), np.int32(1)))


def test_flat_grids_are_capped_by_the_devices_multiprocessors(cupy_loader):
    """With 2 multiprocessors (the fixture's stand-in) an optimizer launch over 100,003 float32 entries (25,001
    packs: 98 blocks of 256 threads) gets FLAT_BLOCKS_PER_SM * 2 = 64 blocks, whose grid-stride loop still updates
    every entry like the reference."""
    from xpnn._cuda import launch

    n = 100_003
    rng = np.random.default_rng(1)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    results = []
    for use in (False, True):
        param, m, v = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        with _dispatch.use_provider(make_provider(cupy_loader)), _dispatch.use_kernels(use):
            updates.adam_update(param, g, m, v, step=3, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
        results.append((param, m, v))
    assert cupy_loader.calls == [("adam_update<float>", (launch.FLAT_BLOCKS_PER_SM * 2,), (launch.FLAT_BLOCK,))]
    for want, got in zip(*results):
        np.testing.assert_array_equal(got, want)
