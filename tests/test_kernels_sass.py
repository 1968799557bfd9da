"""Offline evidence about the machine code of the kernels (no GPU): nvcc builds every registry instantiation for
sm_80 and sm_90 and

- ``-Xptxas -v``: every kernel has a 0-byte stack frame and no spill stores or loads (no local memory at all);
- ``cuobjdump -sass`` (with nvdisasm; the pip packages ``nvidia-cuda-cuobjdump`` and ``nvidia-cuda-nvdisasm`` of the
  ``kernel-check`` extra, or the CUDA toolkit): the row kernels read their rows with 128-bit loads (``LDG.E.128``)
  and write softmax/log-softmax/gradient rows with 128-bit stores (``STG.E.128``), the optimizer kernels (the
  capturable ones and the loss-scaling unscale too) read and write the flat buffers with 128-bit accesses, and the
  float32 optimizer kernels run no double-precision instruction.
In CI (``CI=true``) a missing tool fails these tests instead of skipping them.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xpnn._cuda import registry, sources

ARCHS = ("80", "90")
IN_CI = os.environ.get("CI", "").lower() == "true"
# kernels whose hot loops must use 16-byte accesses: (entry prefix, loads, stores)
VECTOR_KERNELS = {
    "logsumexp_rows": (True, False),  # writes one value per row
    "softmax_rows": (True, True),
    "log_softmax_rows": (True, True),
    "cross_entropy_fwd_bwd": (True, True),
    "adam_update": (True, True),
    "sgd_update": (True, True),
    "adagrad_update": (True, True),
    "rmsprop_update": (True, True),
    "adam_update_mixed": (True, True),
    "row_chunk_max_sum": (True, False),  # writes (m, s) per chunk
    "row_chunk_finish": (True, True),
    "adam_update_capturable": (True, True),
    "sgd_update_capturable": (True, True),
    "adagrad_update_capturable": (True, True),
    "rmsprop_update_capturable": (True, True),
    "amp_unscale_check": (True, True),
}
# float32 kernels with no double-precision instruction at all (the capturable optimizers' step scalars are derived
# in double once per step by capturable_step_scalars, not by every thread of the update)
FP32_ONLY_KERNELS = ("adam_update_capturable", "sgd_update_capturable", "adagrad_update_capturable",
                     "rmsprop_update_capturable", "adam_update")
FP64_SASS = re.compile(r"\b(DADD|DMUL|DFMA|DSETP|DSET|DMNMX|DMMA)\b|MUFU\.\w+64H|\.F64\b")


def _missing(what: str) -> None:
    msg = f"{what} (install with: pip install -e '.[kernel-check]'; nvcc from the CUDA toolkit)"
    if IN_CI:
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def nvcc() -> str:
    path = shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")
    if path is None:
        _missing("nvcc is not installed")
    if shutil.which(os.environ.get("NVCC_CCBIN", "g++")) is None:
        _missing("nvcc needs a host C++ compiler (g++, or NVCC_CCBIN) and none was found")
    return path


def find_cuobjdump() -> tuple[str, str] | None:
    """(cuobjdump, folder holding nvdisasm) from PATH, the pip packages (nvidia/cu*/bin) or the CUDA toolkit."""
    candidates = [shutil.which("cuobjdump")]
    try:
        import nvidia

        for root in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "*", "bin", "cuobjdump")), reverse=True)
    except ImportError:
        pass
    candidates += [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump")]
    for c in candidates:
        if c and os.path.isfile(c):
            folder = os.path.dirname(c)
            nvdisasm = shutil.which("nvdisasm") or (os.path.join(folder, "nvdisasm")
                                                     if os.path.isfile(os.path.join(folder, "nvdisasm")) else None)
            if nvdisasm:
                return c, os.path.dirname(nvdisasm)
    return None


@pytest.fixture(scope="module")
def cuobjdump() -> tuple[str, str]:
    found = find_cuobjdump()
    if found is None:
        _missing("cuobjdump with nvdisasm is not installed")
    return found


def _program(source: str) -> str:
    names = registry.name_expressions(source)
    return sources.read_source(source) + "\nvoid* xpnn_instantiate[] = {" + ", ".join(
        f"(void*)&{n}" for n in names) + "};\n"


@pytest.fixture(scope="module")
def builds(nvcc, tmp_path_factory) -> dict[tuple[str, str], tuple[Path, str]]:
    """(source, arch) -> (cubin, ptxas -v report)."""
    out = {}
    tmp = tmp_path_factory.mktemp("sass")
    for source in registry.sources():
        src = tmp / source
        src.write_text(_program(source))
        for arch in ARCHS:
            cubin = tmp / f"{source}.sm_{arch}.cubin"
            cmd = [nvcc, "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-cubin", "-Xptxas", "-v",
                   str(src), "-o", str(cubin)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, f"nvcc failed:\n{' '.join(cmd)}\n{proc.stderr}"
            out[(source, arch)] = (cubin, proc.stdout + proc.stderr)
    return out


_FUNCTION = re.compile(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                       r"(\d+) bytes spill loads")


def _demangled_prefix(mangled: str) -> str:
    m = re.match(r"_Z(\d+)", mangled)
    return mangled[len(m.group(0)):len(m.group(0)) + int(m.group(1))] if m else mangled


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", registry.sources())
def test_ptxas_no_spills_no_local_memory(builds, source, arch):
    report = builds[(source, arch)][1]
    found = {}
    for name, frame, stores, loads in _FUNCTION.findall(report):
        found.setdefault(_demangled_prefix(name), []).append((name, int(frame), int(stores), int(loads)))
    expected = {row.entry.split("<")[0] for row in registry.RAW if row.source == source}
    assert expected <= set(found), f"ptxas -v reported no properties for {expected - set(found)}:\n{report}"
    for entries in found.values():
        for name, frame, stores, loads in entries:
            assert (frame, stores, loads) == (0, 0, 0), \
                f"{name} (sm_{arch}): {frame} bytes stack frame, {stores}/{loads} bytes spill stores/loads"


def _sass_by_function(cubin: Path, tool: tuple[str, str]) -> dict[str, str]:
    env = dict(os.environ, PATH=tool[1] + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([tool[0], "-sass", str(cubin)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    parts = re.split(r"\n\s*Function : (\S+)\n", proc.stdout)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("source", registry.sources())
def test_hot_loops_use_128_bit_accesses(builds, cuobjdump, source):
    """Every instantiation (float16/32/64) of the kernels in VECTOR_KERNELS has LDG.E.128 (and STG.E.128 where it
    writes rows or buffers) in its sm_90 SASS."""
    functions = _sass_by_function(builds[(source, "90")][0], cuobjdump)
    checked = 0
    for mangled, sass in functions.items():
        kernel = _demangled_prefix(mangled)
        if kernel not in VECTOR_KERNELS:
            continue
        loads, stores = VECTOR_KERNELS[kernel]
        if loads:
            assert re.search(r"LDG\.E\.128", sass), f"{mangled}: no 128-bit load in its SASS"
        if stores:
            assert re.search(r"STG\.E(\.EF)?\.128", sass), f"{mangled}: no 128-bit store in its SASS"
        checked += 1
    expected = sum(len(row.dtypes) for row in registry.RAW if row.source == source
                   and row.entry.split("<")[0] in VECTOR_KERNELS)
    assert checked == expected, f"{source}: checked {checked} of {expected} instantiations"


def test_float32_optimizer_kernels_have_no_fp64_instructions(builds, cuobjdump):
    """The float32 instantiations in FP32_ONLY_KERNELS (sm_90 SASS) contain no FP64 instruction (DADD, DMUL, DFMA,
    MUFU.RCP64H, conversions to or from F64, ...): the capturable Adam once derived its bias corrections with two
    double pow per thread (about 215 FP64 instructions before its loop)."""
    checked = []
    for source in {row.source for row in registry.RAW if row.entry.split("<")[0] in FP32_ONLY_KERNELS}:
        for mangled, sass in _sass_by_function(builds[(source, "90")][0], cuobjdump).items():
            kernel = _demangled_prefix(mangled)
            if kernel not in FP32_ONLY_KERNELS or not mangled.startswith(f"_Z{len(kernel)}{kernel}IfE"):
                continue  # (the float instantiation: template argument "f")
            bad = sorted({m.group(0) for m in FP64_SASS.finditer(sass)})
            assert not bad, f"{mangled}: FP64 instructions {bad} in its SASS"
            checked.append(kernel)
    assert sorted(checked) == sorted(FP32_ONLY_KERNELS), f"checked {checked}"


def test_split_rows_merge_their_partials_across_a_warp(builds, cuobjdump):
    """row_chunk_finish merges a row's chunk partials with a lane per chunk and butterfly shuffles (SHFL.BFLY), not
    with every thread walking all the partials serially."""
    functions = _sass_by_function(builds[("row_split.cu", "90")][0], cuobjdump)
    finish = {m: sass for m, sass in functions.items() if _demangled_prefix(m) == "row_chunk_finish"}
    assert len(finish) == len(registry.RAW_BY_NAME["row_chunk_finish"].dtypes)
    for mangled, sass in finish.items():
        assert "SHFL.BFLY" in sass, f"{mangled}: no warp shuffle in the merge of the partials"


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
_DIVISION = re.compile(r"^(CALL\b|I2F\.U(32|64)\.RP\b)")  # a call (the 64-bit division routine), a reciprocal seed


def _loops(sass: str) -> list[list[str]]:
    """The instructions of each loop: from a backward branch's target to the branch."""
    instructions = [(int(a, 16), text.strip()) for a, text in _INSTRUCTION.findall(sass)]
    loops = []
    for addr, text in instructions:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= addr:
            loops.append([t for a, t in instructions if int(m.group(1), 16) <= a <= addr])
    return loops


# kernels/conv.cu: integer division seeds (I2F.U32.RP) allowed inside one loop of each kernel. im2col and max-pool
# forward decode their flat index once per thread and step it with carries: none. The gathers (col2im, max-pool
# backward) step the pixel the same way and divide its row and column by the stride once per pixel (32-bit, skipped
# for stride 1), stepping from kernel offset to offset with a borrow: two.
CONV_LOOP_DIVISIONS = {"im2col": 0, "max_pool2d": 0, "col2im": 2, "max_pool2d_backward": 2}  # registry rows
_DIVISION_64 = re.compile(r"^(CALL\b|I2F\.U64\.RP\b)")  # the 64-bit division routine, a 64-bit reciprocal seed


@pytest.mark.parametrize("name", sorted(CONV_LOOP_DIVISIONS))
def test_conv_loops_do_not_divide_64_bit(builds, cuobjdump, name):
    """No loop of the conv kernels calls the 64-bit division routine or seeds a 64-bit division, and each has at most
    CONV_LOOP_DIVISIONS[kernel] 32-bit division seeds (I2F.U32.RP). Before, every element divided its 64-bit index
    by ow, oh, kw and kh (im2col; max-pool forward by ow and oh) or by w and h and then each kernel offset by the
    stride (col2im, max-pool backward: 3 64-bit divisions and kh + kw 32-bit ones per pixel)."""
    row = registry.RAW_BY_NAME[name]
    checked = 0
    for mangled, sass in _sass_by_function(builds[(row.source, "90")][0], cuobjdump).items():
        if _demangled_prefix(mangled) != row.entry.split("<")[0]:
            continue
        loops = _loops(sass)
        assert loops, f"{mangled}: no loop found in its SASS"
        for body in loops:
            found = [t for t in body if _DIVISION_64.match(t)]
            assert not found, f"{mangled}: 64-bit integer division in a loop: {found}"
            found = [t for t in body if _DIVISION.match(t)]
            assert len(found) <= CONV_LOOP_DIVISIONS[name], f"{mangled}: integer divisions in a loop: {found}"
        checked += 1
    assert checked == len(row.dtypes)
