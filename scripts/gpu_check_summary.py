"""The short table ``scripts/gpu_check.sh`` prints last, from the files its steps left in its output folder.

    python scripts/gpu_check_summary.py OUT tests=RC memcheck=RC racecheck=RC graphs=RC bench=RC

RC: a step's exit status, "skipped" or "not run". Reads ``info.json`` (``xpnn._cuda.info()`` plus versions),
``tests.xml`` (pytest's JUnit report) and ``bench.json`` (pytest-benchmark's), each optional. Prints: device and
versions; each step's result with test counts; the benchmarks' medians, each implementation's fraction of the
memory floor; and xpnn CUDA vs PyTorch CUDA for cross-entropy, Adam and the MLP training step. Exit status 1 when a
step failed or a ``cuda``-marked test was skipped on this GPU machine, else 0. Standard library only.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional

STEPS = ("tests", "memcheck", "racecheck", "graphs", "bench")
VERSUS_TORCH = ("cross_entropy", "adam", "mlp_step")


def word(rc: str) -> str:
    return {"0": "ok", "skipped": "skipped", "not run": "not run", "124": "TIMED OUT"}.get(rc, f"FAILED (exit {rc})")


def test_counts(xml_path: Path) -> dict[str, int]:
    """passed/failed/skipped of a JUnit report, and cuda_skipped: skipped tests of tests/test_cuda_kernels.py."""
    root = ET.parse(xml_path).getroot()
    counts = {k: sum(int(s.get(k, 0)) for s in root.iter("testsuite")) for k in ("tests", "failures", "errors",
                                                                               "skipped")}
    cuda_skipped = sum(1 for c in root.iter("testcase")
                       if "test_cuda_kernels" in c.get("classname", "") and c.find("skipped") is not None)
    failed = counts["failures"] + counts["errors"]
    return {"passed": counts["tests"] - failed - counts["skipped"], "failed": failed, "skipped": counts["skipped"],
            "cuda_skipped": cuda_skipped}


def bench_rows(json_path: Path) -> list[dict[str, Any]]:
    """(case, size, impl, median s, min s, floor_fraction or None) of every benchmark in a pytest-benchmark report."""
    rows = []
    for b in json.loads(json_path.read_text())["benchmarks"]:
        extra, stats = b.get("extra_info", {}), b["stats"]
        rows.append(dict(case=extra.get("case", b.get("group") or b["name"]), size=str(extra.get("size", "")),
                         impl=extra.get("impl", ""), median=stats["median"], min=stats["min"],
                         floor=extra.get("floor_fraction")))
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def render(out: Path, status: dict[str, str]) -> tuple[str, bool]:
    """(table text, failed)."""
    lines = ["", "==== xpnn GPU check " + "=" * 60]
    info: dict[str, Any] = {}
    try:
        info = json.loads((out / "info.json").read_text())
    except (OSError, ValueError):
        pass
    lines.append(f"device   {info.get('device', '?')} (compute capability {info.get('compute_capability', '?')})")
    lines.append("versions " + ", ".join(f"{k} {info.get(k, '?')}" for k in ("xpnn", "cupy", "cuda_runtime",
                                                                         "cuda_driver", "nvrtc", "numpy", "torch")))
    failed = any(rc not in ("0", "skipped", "not run") for rc in status.values())

    detail = {k: "" for k in STEPS}
    if status.get("tests", "not run") != "not run":
        try:
            c = test_counts(out / "tests.xml")
            detail["tests"] = (f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
                               f"({c['cuda_skipped']} cuda-marked skipped: must be 0)")
            failed = failed or c["cuda_skipped"] > 0 or c["failed"] > 0
        except (OSError, ET.ParseError, KeyError, ValueError) as exc:
            detail["tests"] = f"no report ({type(exc).__name__}: {exc})"

    rows: list[dict[str, Any]] = []
    try:
        rows = bench_rows(out / "bench.json")
    except (OSError, ValueError, KeyError):
        pass
    if rows:
        lines.append("")
        lines.append(f"{'benchmark':<22}{'size':<12}{'impl':<20}{'median us':>12}{'min us':>12}{'floor':>8}")
        for r in sorted(rows, key=lambda r: (r["case"], r["size"], r["impl"])):
            floor = "-" if r["floor"] is None else f"{100 * r['floor']:.0f}%"
            lines.append(f"{r['case']:<22}{r['size']:<12}{r['impl']:<20}{_us(r['median']):>12}{_us(r['min']):>12}"
                         f"{floor:>8}")
        by_key = {(r["case"], r["size"], r["impl"]): r for r in rows}
        versus = []
        for (case, size, impl), r in sorted(by_key.items()):
            if impl != "xpnn-cuda" or case not in VERSUS_TORCH or (case, size, "torch-cuda") not in by_key:
                continue
            t = by_key[(case, size, "torch-cuda")]
            versus.append(f"{case:<22}{size:<12}{_us(r['median']):>12}{_us(t['median']):>12}"
                          f"{t['median'] / r['median']:>10.2f}x")
        if versus:
            lines.append("")
            lines.append(f"{'xpnn vs PyTorch CUDA':<34}{'xpnn us':>12}{'torch us':>12}{'speed-up':>11}")
            lines += versus

    lines.append("")
    lines.append(f"{'step':<12}{'result':<20}detail")
    for k in STEPS:
        rc = status.get(k, "not run")
        lines.append(f"{k:<12}{word(rc):<20}{detail[k]}")
    lines.append(f"outputs: {out}")
    return "\n".join(lines), failed


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    status = dict(a.split("=", 1) for a in argv[1:])
    text, failed = render(out, status)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
