import os
import subprocess
import sys

import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn.backend import cuda_available, namespace_of, resolve_dtype


def test_default_is_numpy_and_context_nesting():
    assert xpnn.get_backend().name == "numpy"
    with xpnn.use_backend(array_api_strict) as b:
        assert b.name == "array_api_strict"
        assert xpnn.get_backend() is b
        with xpnn.use_backend("numpy"):
            assert xpnn.get_backend().name == "numpy"
        assert xpnn.get_backend() is b
    assert xpnn.get_backend().name == "numpy"


def test_set_backend_and_reset():
    try:
        xpnn.set_backend(array_api_strict)
        assert xpnn.get_backend().name == "array_api_strict"
    finally:
        xpnn.set_backend(None)
    assert xpnn.get_backend().name == "numpy"


def test_env_variable_is_read(monkeypatch):
    monkeypatch.setenv("XPNN_BACKEND", "numpy")
    assert xpnn.get_backend().name == "numpy"
    monkeypatch.setenv("XPNN_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        xpnn.get_backend()


def test_unknown_backend_error_lists_every_accepted_name():
    with pytest.raises(ValueError) as caught:
        xpnn.get_backend("tpu")
    for name in ("numpy", "cuda", "auto", "cpu", "cupy", "gpu"):
        assert f" {name}" in str(caught.value)
    assert "cpu = numpy" in str(caught.value)
    assert xpnn.get_backend("CPU").name == "numpy"  # what the message lists is accepted


def test_auto_falls_back_to_numpy_without_gpu():
    expected = "cuda" if cuda_available() else "numpy"
    assert xpnn.get_backend("auto").name == expected


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU, so 'cuda' is available")
def test_cuda_without_gpu_says_what_is_missing():
    with pytest.raises(xpnn.BackendUnavailableError) as info:
        xpnn.get_backend("cuda")
    msg = str(info.value)
    assert "cuda" in msg and ("pip install" in msg or "GPU" in msg)


def test_cuda_without_cupy_says_how_to_install():
    code = (
        "import sys; sys.modules['cupy'] = None\n"
        "import xpnn\n"
        "try:\n    xpnn.get_backend('cuda')\nexcept xpnn.BackendUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "xpnn[cuda12]"' in out


def test_import_does_not_touch_cupy():
    code = "import sys, xpnn, xpnn.functional; print('cupy' in sys.modules)"
    env = dict(os.environ)
    env.pop("XPNN_BACKEND", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"


def test_asarray_and_to_numpy_round_trip():
    strict = xpnn.get_backend(array_api_strict)
    a = strict.asarray(np.arange(6.0).reshape(2, 3), dtype="float32")
    assert a.dtype == array_api_strict.float32
    np.testing.assert_array_equal(strict.to_numpy(a), np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert xpnn.get_backend("numpy").asarray(a).dtype == np.float32


def test_mixed_namespaces_are_named():
    with pytest.raises(xpnn.NamespaceMismatchError, match="mixed"):
        namespace_of(np.zeros(2), array_api_strict.zeros(2), where="Linear")
    with pytest.raises(TypeError, match="expected arrays"):
        namespace_of(np.zeros(2), [1.0, 2.0], where="Linear")


def test_resolve_dtype_spellings():
    assert resolve_dtype(np, "float64") == np.float64
    assert resolve_dtype(np, np.float32) == np.float32
    assert resolve_dtype(array_api_strict, np.float64) == array_api_strict.float64
    with pytest.raises(xpnn.DTypeError):
        resolve_dtype(np, "complex128")


def test_kernel_switch_context():
    assert xpnn.kernels_enabled() in (True, False)
    before = xpnn.kernels_enabled()
    with xpnn.use_kernels(False):
        assert not xpnn.kernels_enabled()
    assert xpnn.kernels_enabled() == before
