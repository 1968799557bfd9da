"""Verification layer 1: every CUDA source compiles offline, as CuPy compiles it (NVRTC) and with nvcc.

NVRTC runs through CuPy's private helpers (pinned: cupy-cuda12x==14.2.0 in the ``kernel-check`` extra) with the
option pipeline CuPy uses for ``RawModule``/``ElementwiseKernel``, for sm_80 and sm_90; no GPU is needed. The
ElementwiseKernel sources are reproduced exactly as CuPy generates them for each dtype. nvcc builds the same sources
with ``-Werror all-warnings`` and register spills / local-memory use reported as warnings (hence errors).
In CI (``CI=true``) a missing toolchain fails these tests instead of skipping them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import numpy as np
import pytest

from xpnn._cuda import registry, sources

ARCHS = ("80", "90")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(what: str) -> None:
    msg = f"{what} (install with: pip install -e '.[kernel-check]'; nvcc from the CUDA toolkit)"
    if IN_CI:
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


@contextlib.contextmanager
def _private_cupy_api():
    """CuPy's private helpers are pinned (cupy-cuda12x==14.2.0); another CuPy (e.g. cupy-cuda13x on a GPU machine,
    where the ``cuda``-marked tests compile every kernel through CuPy's public API) may differ: skip, don't error."""
    try:
        yield
    except (AttributeError, TypeError, ValueError, ImportError) as exc:
        import cupy

        _missing(f"CuPy {cupy.__version__}'s private compile helpers differ from the pinned 14.2.0 "
                 f"({type(exc).__name__}: {exc})")


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's compiler module and core helpers, usable without a GPU."""
    try:
        import cupy  # noqa: F401
        import cupy._core._carray as carray
        import cupy._core._kernel as kernel
        import cupy._core._scalar as scalar
        import cupy._core.core as core
        import cupy.cuda.compiler as compiler
        compiler.nvrtc.getVersion()
    except Exception as exc:  # ImportError, or NVRTC library missing
        _missing(f"CuPy with NVRTC is not usable here ({type(exc).__name__}: {exc})")
    with _private_cupy_api():
        for mod, names in ((core, ("assemble_cupy_compiler_options", "_cupy_header_list")),
                           (compiler, ("_NVRTCProgram", "_get_nvrtc_version", "CompileException")),
                           (kernel, ("_ArgInfo", "_get_elementwise_kernel_code"))):
            for name in names:
                getattr(mod, name)
    return compiler, core, kernel, carray, scalar


def _nvrtc_options(compiler, core, arch: str) -> tuple[str, ...]:
    """What CuPy adds for a RawModule/ElementwiseKernel on a device of compute capability ``arch``:
    its include paths and --std (assemble_cupy_compiler_options), -ftz=true, -arch=sm_XX (cubin), and the
    execution-space flag of the non-jitify path (plus --pch where CuPy uses it)."""
    opts = core.assemble_cupy_compiler_options(()) + ("-ftz=true", f"-arch=sm_{arch}",
                                                      "--device-as-default-execution-space")
    major, minor = compiler._get_nvrtc_version()
    if (major, minor) >= (12, 8) and compiler._use_pch:
        opts += ("--pch",)
    return opts


def _compile(compiler, source: str, name: str, options, name_expressions=None):
    with _private_cupy_api():
        prog = compiler._NVRTCProgram(source, name, name_expressions=name_expressions, method="cubin")
    try:
        return prog.compile(options)
    except compiler.CompileException as exc:
        pytest.fail(f"NVRTC failed on {name}:\n{exc.get_message()}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", registry.sources())
def test_nvrtc_raw_module(nvrtc, source, arch):
    compiler, core, *_ = nvrtc
    names = registry.name_expressions(source)
    with _private_cupy_api():
        options = _nvrtc_options(compiler, core, arch)
    cubin, mapping = _compile(compiler, sources.read_source(source), source, options, list(names))
    assert len(cubin) > 0
    assert set(mapping) == set(names)  # every registry instantiation exists (lowered names resolved)


def _elementwise_code(nvrtc, row: registry.ElementwiseKernel, dtype: str) -> str:
    """The source CuPy generates for ``row`` called on 1-D contiguous arrays of ``dtype`` (what the launcher
    passes), with CuPy's prepended headers."""
    import cupy

    _, core, kernel, carray, scalar = nvrtc
    ek = cupy.ElementwiseKernel(row.in_params, row.out_params, row.body, row.kernel_name,
                                preamble=sources.read_source(registry.ELEMENTWISE_PREAMBLE))
    t = np.dtype(dtype).type
    in_arrays = tuple(t if len(p.split()[0]) == 1 else None for p in row.in_params.split(","))
    in_types, out_types, type_map = ek._decide_params_type(in_arrays, (t,))
    infos = []
    for p_type, arr in zip(in_types, in_arrays):
        if arr is None:  # a scalar parameter
            infos.append(kernel._ArgInfo(3, scalar.CScalar, np.dtype(p_type).type, 0, True, True))
        else:
            infos.append(kernel._ArgInfo(1, cupy.ndarray, t, 1, True, True))
    infos.append(kernel._ArgInfo(1, cupy.ndarray, t, 1, True, True))  # the output
    infos.append(kernel._ArgInfo(2, carray.Indexer, None, 1, True, True))
    code = kernel._get_elementwise_kernel_code(tuple(infos), type_map, ek.params, ek.operation, ek.name,
                                               ek.preamble)
    headers = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
    return headers + code


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("row,dtype", [(r, d) for r in registry.elementwise() for d in r.dtypes],
                         ids=lambda v: getattr(v, "name", v))
def test_nvrtc_elementwise(nvrtc, row, dtype, arch):
    compiler, core, *_ = nvrtc
    with _private_cupy_api():
        code = _elementwise_code(nvrtc, row, dtype)
    assert row.operation in code
    with _private_cupy_api():
        options = _nvrtc_options(compiler, core, arch)
    cubin, _ = _compile(compiler, code, f"{row.name}_{dtype}.cu", options)
    assert len(cubin) > 0


# ---- nvcc ---------------------------------------------------------------------------------------------------------

NVCC_FLAGS = ("-std=c++17", "-Werror", "all-warnings", "-Xptxas", "-warn-spills,-warn-lmem-usage",
              "--resource-usage")


@pytest.fixture(scope="module")
def nvcc():
    path = shutil.which("nvcc") or (shutil.which("nvcc", path="/usr/local/cuda/bin"))
    if path is None:
        _missing("nvcc is not installed")
    if shutil.which(os.environ.get("NVCC_CCBIN", "g++")) is None:
        _missing("nvcc needs a host C++ compiler (g++, or NVCC_CCBIN) and none was found")
    return path


def _instantiations(names) -> str:
    """Host-side references that make nvcc instantiate every registry template."""
    return "\nvoid* xpnn_instantiate[] = {" + ", ".join(f"(void*)&{n}" for n in names) + "};\n"


def _elementwise_probe() -> str:
    """Each activation function of the elementwise preamble in a kernel per storage type, as the bodies use it."""
    text = sources.read_source(registry.ELEMENTWISE_PREAMBLE) + "\n#include <cuda_fp16.h>\n"
    for ctype in ("__half", "float", "double"):
        body = []
        for row in registry.elementwise():
            op = row.body.replace("(T)", "(T)(A)")  # __half has no cast from double: go through A
            names = [p.split()[1] for p in row.in_params.split(",")]
            decl = "".join(f"const T {n} = in[i]; " if n in ("x", "y") else
                           f"const T {n} = in[i + n]; " if n == "dy" else f"const double {n} = s; "
                           for n in names)
            out = row.out_params.split()[-1]  # dx for the backwards, y for the forwards (gelu, silu)
            body.append(f"{{ {decl}T {out}; {op} out[i] = {out}; }}")
        text += (f"__global__ void probe_{ctype.strip('_')}(const {ctype}* in, {ctype}* out, double s, long long n) "
                 f"{{ typedef {ctype} T; long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; "
                 f"if (i < n) {{ {' '.join(body)} }} }}\n")
    return text


def _nvcc_sources():
    for source in registry.sources():
        yield source, sources.read_source(source) + _instantiations(registry.name_expressions(source))
    yield registry.ELEMENTWISE_PREAMBLE, _elementwise_probe()


@pytest.mark.parametrize("name,text", list(_nvcc_sources()), ids=lambda v: v if v.endswith(("cu", "cuh")) else "")
def test_nvcc_warnings_as_errors(nvcc, tmp_path, name, text):
    src = tmp_path / (name.replace(".cuh", "_probe") + (".cu" if name.endswith(".cuh") else ""))
    src.write_text(text)
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    cmd = [nvcc, *NVCC_FLAGS, *gencode, "-fatbin", str(src), "-o", str(tmp_path / "out.fatbin")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"nvcc failed:\n{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    usage = proc.stdout + proc.stderr
    assert "spill" in usage  # --resource-usage printed the per-kernel report we rely on
    for line in usage.splitlines():
        if "spill stores" in line:
            assert " 0 bytes spill stores, 0 bytes spill loads" in line, line
