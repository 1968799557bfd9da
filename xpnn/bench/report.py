"""Benchmark results: the row record, the machine description, the text table, JSON and the PNG bar chart."""
from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

UNSTABLE_REPEATS = 1.5  # a row whose repeated passes' medians differ by more than this factor is unstable
UNSTABLE_IQR = 0.5  # ... or whose spread (IQR) is above this fraction of its median

__all__ = ["UNSTABLE_REPEATS", "UNSTABLE_IQR", "Row", "machine_info", "format_bytes", "format_time", "format_table", "write_json", "write_plot"]


@dataclass
class Row:
    """One measured (case, size, impl). Times in seconds (``min``/``max``: the fastest and slowest call); ``ratio`` =
    median / reference median (below 1 is faster); ``floor_fraction`` = (bytes moved / median) / plain-copy
    bandwidth of the same device (1.0 = at the floor)."""

    case: str
    size: str
    impl: str
    device: str
    median: float
    iqr: float
    min: float
    rounds: int
    bytes_moved: Optional[int] = None
    copy_bandwidth: Optional[float] = None  # bytes/s of a plain copy moving the same bytes, same device, same run
    ratio: Optional[float] = None
    subnormals: int = 0
    repeat_spread: Optional[float] = None  # largest / smallest median of the repeated passes (1.0: they agree)
    max: Optional[float] = None  # the slowest call (None in results written before it was recorded)

    def unstable(self, repeats_factor: float = UNSTABLE_REPEATS, iqr_fraction: float = UNSTABLE_IQR) -> bool:
        """Whether the passes disagree by more than ``repeats_factor`` or the spread exceeds ``iqr_fraction``."""
        apart = self.repeat_spread is not None and self.repeat_spread > repeats_factor
        return apart or (self.median > 0 and self.iqr > iqr_fraction * self.median)

    @property
    def bandwidth(self) -> Optional[float]:
        return None if self.bytes_moved is None else self.bytes_moved / self.median

    @property
    def floor_fraction(self) -> Optional[float]:
        bw = self.bandwidth
        return None if bw is None or not self.copy_bandwidth else bw / self.copy_bandwidth

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bandwidth"] = self.bandwidth
        d["floor_fraction"] = self.floor_fraction
        return d


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module)
    except Exception:
        return None
    return getattr(mod, "__version__", "?")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(gpu: bool = False) -> dict[str, Any]:
    """Machine, library versions and BLAS threading: what is needed to read (and reproduce) the numbers."""
    import numpy as np

    from .._version import __version__

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "xpnn": __version__,
        "numpy": np.__version__,
        "torch": _version("torch") if "torch" in sys.modules else None,
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                           "OPENBLAS_NUM_THREADS", "XPNN_DISABLE_KERNELS") if k in os.environ},
    }
    try:
        import threadpoolctl

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for p in threadpoolctl.threadpool_info()]
    except Exception:
        pass
    if gpu:
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["cupy"] = cupy.__version__
            info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception as exc:  # report, never fail the run over a description
            info["gpu"] = f"unknown ({type(exc).__name__}: {exc})"
    return info


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def format_table(rows: Sequence[Row], reference: str) -> str:
    """The results as an aligned text table, one line per row, grouped by case and size in the given order."""
    header = ("case", "size", "backend", "median", "spread (IQR)", f"ratio to {reference}", "GB/s", "of floor",
              "stability")
    lines = []
    for r in rows:
        ratio = "-" if r.ratio is None else ("1 (ref)" if r.impl == reference else f"{r.ratio:.2f}")
        bw = "-" if r.bandwidth is None else f"{r.bandwidth / 1e9:.1f}"
        frac = "-" if r.floor_fraction is None else f"{100 * r.floor_fraction:.0f}%"
        spread = f"{format_time(r.iqr)} ({100 * r.iqr / r.median:.0f}%)" if r.median > 0 else "-"
        lines.append((r.case, r.size, r.impl, format_time(r.median), spread, ratio, bw, frac, _stability(r)))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 or i == 8 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    prev = None
    for r, line in zip(rows, lines):
        if prev is not None and (r.case, r.size) != prev:
            out.append("")
        prev = (r.case, r.size)
        out.append(fmt.format(*line))
    return "\n".join(line.rstrip() for line in out)


def _stability(r: Row) -> str:
    """``ok``, or ``UNSTABLE`` with why (passes apart, wide spread); ``-`` for a single pass with a narrow spread."""
    why = []
    if r.repeat_spread is not None and r.repeat_spread > UNSTABLE_REPEATS:
        why.append(f"passes {r.repeat_spread:.1f}x apart")
    if r.median > 0 and r.iqr > UNSTABLE_IQR * r.median:
        why.append("wide spread")
    if why:
        return "UNSTABLE: " + ", ".join(why)
    return "ok" if r.repeat_spread is not None else "-"


def write_json(path: str, rows: Sequence[Row], *, machine: dict[str, Any], reference: str,
               skipped: Sequence[dict[str, str]], command: str) -> None:
    doc = {
        "command": command,
        "machine": machine,
        "reference": reference,
        "notes": {
            "median": "seconds per call; GPU calls timed with CUDA events",
            "ratio": "median / median of the reference implementation for the same case and size",
            "repeat_spread": "largest / smallest median of the repeated passes over the plan (1.0: they agree)",
            "floor_fraction": "(bytes that must move / median) / bandwidth of a plain copy of the same bytes, "
                              "same device, same run",
            "data": "float32 data scaled to stay clear of subnormal floats; "
                    "'subnormals' counts any found after the run",
        },
        "results": [r.to_dict() for r in rows],
        "skipped": list(skipped),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def write_plot(path: str, rows: Sequence[Row], reference: str) -> None:
    """PNG with one panel per (case, size): a horizontal bar of median time per implementation with a whisker from
    the fastest to the slowest call (to the median when the slowest is unknown), labelled with the ratio to the
    reference and the fraction of the copy floor. Rows the table marks UNSTABLE are hatched, say so in their label
    and get a legend entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.case, r.size), []).append(r)
    if not groups:
        raise ValueError("write_plot: no results to plot")
    ncols = 2 if len(groups) > 1 else 1
    nrows = (len(groups) + ncols - 1) // ncols
    height = max(1.0, 0.42 * max(len(g) for g in groups.values()) + 0.9)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, height * nrows), squeeze=False)
    colors = {"cpu": "#4C72B0", "cuda": "#55A868", "torch-cuda": "#C44E52"}
    any_unstable = False
    for ax, ((case, size), grp) in zip(axes.flat, groups.items()):
        scale, unit = (1e3, "ms") if max(r.median for r in grp) >= 1e-3 else (1e6, "us")
        ms = [r.median * scale for r in grp]
        lows = [r.min * scale for r in grp]
        highs = [(r.median if r.max is None else r.max) * scale for r in grp]
        unstable = [r.unstable() for r in grp]
        any_unstable = any_unstable or any(unstable)
        bars = ax.barh(range(len(grp)), ms, color=[colors.get(r.device, "gray") for r in grp])
        for bar, bad in zip(bars, unstable):
            if bad:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
                bar.set_alpha(0.55)
        spread = [[m - lo for m, lo in zip(ms, lows)], [hi - m for m, hi in zip(ms, highs)]]
        ax.errorbar(ms, range(len(grp)), xerr=spread, fmt="none", ecolor="black", elinewidth=1, capsize=3)
        ax.set_yticks(range(len(grp)), [r.impl for r in grp])
        ax.invert_yaxis()
        ax.set_title(f"{case}  {size}", fontsize=10)
        ax.set_xlabel(f"median time per call ({unit}); whisker: fastest to slowest call")
        ax.set_xlim(0, max(highs) * 1.6)
        for i, r in enumerate(grp):
            bits = []
            if r.impl == reference:
                bits.append("reference")
            elif r.ratio is not None:
                bits.append(f"{r.ratio:.2f}x ref")
            if r.floor_fraction is not None:
                bits.append(f"{100 * r.floor_fraction:.0f}% floor")
            if unstable[i]:
                bits.append("UNSTABLE")
            ax.text(highs[i], i, "  " + ", ".join(bits), va="center", fontsize=8,
                    fontweight="bold" if unstable[i] else "normal")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(f"xpnn bench (ratio: time / {reference} time; floor: plain copy bandwidth)", fontsize=11)
    if any_unstable:
        fig.legend(handles=[Patch(facecolor="lightgray", edgecolor="black", hatch="//",
                                  label="UNSTABLE (see the table's stability column): passes disagree or the "
                                        "spread is wide; rerun on an idle machine")],
                   loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if any_unstable else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
