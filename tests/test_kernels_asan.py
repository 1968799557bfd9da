"""The CPU-shim kernels under AddressSanitizer and UndefinedBehaviorSanitizer.

The shim is built with ``-fsanitize=address,undefined`` (``shim.asan``) and every kernel and dtype runs in a Python
subprocess with ASan's runtime preloaded (``shim/asan_runner.py``), on exactly-sized buffers: an out-of-bounds
access by one element, or undefined behaviour such as signed overflow, aborts it with the sanitizer's report.
A deliberately broken copy of the kernel sources, built the same way, shows that both findings are caught.
"""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shim.requirements import require_asan

require_asan()  # skip (with the reason) without g++ or its sanitizer runtimes

from shim.asan import SANITIZE_FLAGS, build_sanitized, run_cases, sanitizer_report
from shim.loader import Build
from xpnn._cuda.sources import kernel_dir

# (file, correct text, broken text): one bug for each sanitizer, in a copy of kernels/
BUGS = (
    # softmax reads its rows shifted by one element: past the end of the input on the last row (ASan)
    ("softmax_cross_entropy.cu", "xpnn_row_two_pass(row, out + (active ? r : 0) * n_cols, n, g, lanes, "
                                 "[&](xpnn_max_sum<A> st) {\n            st = xpnn_row_poison(st);\n            m = st.m;"
                                 "\n            inv_s",
     "xpnn_row_two_pass(row + 1, out + (active ? r : 0) * n_cols, n, g, lanes, "
     "[&](xpnn_max_sum<A> st) {\n            st = xpnn_row_poison(st);\n            m = st.m;\n            inv_s"),
    # the optimizers (xpnn_flat_update, common.cuh) index their packs through an int product that overflows from
    # the third pack on (UBSan)
    ("common.cuh", "p[a] = xpnn_load_pack(arrays[a] + k * V);",
     "p[a] = xpnn_load_pack(arrays[a] + (int)k * 1073741824 / 1073741824 * V);"),
)


def broken_kernels(dest: Path) -> Path:
    """A copy of ``kernels/`` with the bugs of ``BUGS`` put in."""
    shutil.copytree(kernel_dir(), dest)
    for name, good, bad in BUGS:
        text = (dest / name).read_text()
        assert text.count(good) == 1, f"{name} changed: update BUGS in {__file__}"
        (dest / name).write_text(text.replace(good, bad))
    return dest


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[Build, Build]:
    """(sanitized shim, sanitized shim of the broken sources), built side by side (each cached by its sources)."""
    broken = broken_kernels(tmp_path_factory.mktemp("asan") / "kernels")
    with ThreadPoolExecutor(2) as pool:
        good, bad = pool.submit(build_sanitized), pool.submit(build_sanitized, broken)
        return good.result(), bad.result()


def test_sanitized_build_is_warning_free(builds):
    assert builds[0].log == "", f"g++ {' '.join(SANITIZE_FLAGS)} warned:\n{builds[0].log}"


def test_every_kernel_is_clean_under_asan_and_ubsan(builds):
    proc = run_cases(builds[0].library)
    report = sanitizer_report(proc)
    assert report is None, f"sanitizer finding in the CPU-shim kernels:\n{report}"
    assert proc.returncode == 0, f"asan_runner failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "ok every kernel and dtype" in proc.stdout
    assert "WARNING" not in proc.stderr, proc.stderr  # e.g. ASan not told about a fiber switch


def test_out_of_bounds_read_by_one_element_is_caught(builds):
    proc = run_cases(builds[1].library, ["row_kernels"])
    report = sanitizer_report(proc)
    assert proc.returncode != 0 and report is not None, f"no ASan report:\n{proc.stdout}\n{proc.stderr}"
    assert "heap-buffer-overflow" in report and "READ of size 2" in report, report  # float16 rows come first
    assert "softmax_rows" in report and "softmax_cross_entropy.cu:" in report, report  # where, with its line
    assert "0 bytes to the right of 10-byte region" in report, report  # the (5, 1) input, in its own buffer


def test_out_of_bounds_read_hides_in_numpy_slack_without_exact_buffers(builds):
    """Control: handed the NumPy views themselves, the same kernel reads the arrays' slack unseen by ASan (the
    results are wrong, which the runner's comparison reports) -- why the loader copies into exact buffers."""
    proc = run_cases(builds[1].library, ["row_kernels"], numpy_buffers=True)
    assert sanitizer_report(proc) is None, proc.stderr
    assert proc.returncode != 0 and "Not equal to tolerance" in proc.stderr, proc.stderr


def test_signed_overflow_is_caught(builds):
    proc = run_cases(builds[1].library, ["optimizers"])
    report = sanitizer_report(proc)
    assert proc.returncode != 0 and report is not None, f"no UBSan report:\n{proc.stdout}\n{proc.stderr}"
    assert "signed integer overflow" in report and "optimizers.cu" in report, report
