"""Tests marked ``cuda`` need CuPy and a CUDA device: skipped (with the reason shown) when there is none, never
skipped when there is one. Tests that compare with PyTorch, scikit-learn or ONNX Runtime are marked ``reference``
(from their source) and counted at the end of the run, so a run says how many comparisons actually ran. A test that
skips because one of them is missing counts as a skipped comparison too (even when its source only calls a helper
that imports it); ``--record-reference-skips PATH`` writes their ids to PATH and ``--rerun-reference-skips PATH``
runs only those (CI: the suite without the references, then what skipped for want of them, with them)."""
from __future__ import annotations

import inspect
import re

import pytest

_REFERENCE = re.compile(r"""importorskip\(\s*["'](torch|sklearn|onnxruntime)|^\s*(import|from) (torch|sklearn)\b""",
                        re.M)
_SKIPPED_FOR_REFERENCE = re.compile(r"torch|sklearn|scikit-learn|onnxruntime|ONNX ?Runtime", re.I)
_reference_outcomes: dict[str, str] = {}


def pytest_addoption(parser):
    parser.addoption("--record-reference-skips", metavar="PATH", default=None,
                     help="write the ids of tests that skipped for want of PyTorch/scikit-learn/ONNX Runtime to PATH")
    parser.addoption("--rerun-reference-skips", metavar="PATH", default=None,
                     help="run only the tests whose ids PATH lists (written by --record-reference-skips)")


def _compares_with_reference(item) -> bool:
    if "torch" in getattr(item, "fixturenames", ()):
        return True
    fn = getattr(item, "function", None)
    try:
        return fn is not None and _REFERENCE.search(inspect.getsource(fn)) is not None
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    rerun = config.getoption("--rerun-reference-skips")
    if rerun:
        with open(rerun) as f:
            wanted = set(f.read().split("\n")) - {""}
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in wanted])
        items[:] = [item for item in items if item.nodeid in wanted]
    for item in items:
        if _compares_with_reference(item):
            item.add_marker(pytest.mark.reference)
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    from xpnn.backend import cuda_available

    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def torch():
    """PyTorch, the reference for tests that compare semantics; such a test skips, naming the reason, without it
    (no extra of the README's test command installs PyTorch; `.ci/run` does, so CI runs them)."""
    return pytest.importorskip("torch", reason="PyTorch is not installed (the reference for this comparison); "
                                               "`pip install torch` runs it")


def _skipped_for_reference(report) -> bool:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return report.skipped and _SKIPPED_FOR_REFERENCE.search(reason) is not None


def pytest_runtest_logreport(report):
    if ("reference" in report.keywords and (report.when == "call" or report.outcome != "passed")) or \
            _skipped_for_reference(report):
        _reference_outcomes.setdefault(report.nodeid, report.outcome)


def pytest_sessionfinish(session):
    path = session.config.getoption("--record-reference-skips")
    if path:
        with open(path, "w") as f:
            f.writelines(f"{nodeid}\n" for nodeid, outcome in _reference_outcomes.items() if outcome == "skipped")


def pytest_terminal_summary(terminalreporter):
    if _reference_outcomes:
        counts = {k: list(_reference_outcomes.values()).count(k) for k in ("passed", "skipped", "failed")}
        terminalreporter.write_line(
            "reference comparisons (PyTorch / scikit-learn / ONNX Runtime): {passed} passed, {skipped} skipped, "
            "{failed} failed".format(**counts))
