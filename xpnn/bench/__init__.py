"""``xpnn bench``: a quick side-by-side benchmark of xpnn against straightforward NumPy, PyTorch (when installed)
and, when a GPU is present, xpnn's CUDA backend with and without its fused kernels.

Prints one table (case, size, backend, median, spread, ratio to the reference, bandwidth, fraction of the copy
floor, stability); ``--json PATH`` writes the results with machine and versions, ``--plot PATH`` a PNG bar chart
(both paths are checked before anything runs). The plan runs ``--repeats`` times; a row whose passes disagree or
whose spread is wide is marked UNSTABLE, and a load average above half the cores before the run is reported.
The full suite is ``pytest benchmarks --benchmark-only`` (same cases, more sizes).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import conv_cases  # noqa: F401  (adds the convolution cases to CASES)
from . import transformer_cases  # noqa: F401  (adds attention and gpt_step to CASES)
from . import rnn_cases  # noqa: F401  (adds the recurrent case to CASES)
from .cases import CASES, IMPLS, Unavailable, make_runner, subnormal_count, unavailable_reason
from .report import UNSTABLE_IQR, UNSTABLE_REPEATS, Row, format_bytes, format_table, machine_info, write_json, write_plot
from .timing import Timing, copy_bandwidth, free_gpu_memory, measure, settle_allocator

__all__ = ["main", "run", "PRESETS"]

# (case, size) pairs per preset; GPU-only sizes run only when a GPU is present
PRESETS: dict[str, list[tuple[str, str]]] = {
    "quick": [
        ("sigmoid_backward", "1e6"), ("sigmoid_backward", "1e8"),
        ("cross_entropy", "4096x1000"), ("cross_entropy", "8192x32768"),
        ("adam", "1e6"), ("adam", "1e8"), ("adam", "200-tensors"), ("sgd", "1e6"),
        ("mlp_step", "batch256"), ("tiny_step", "batch8"),
        ("seed_net", "64x1000"), ("small_calls", "sigmoid"), ("small_calls", "cross_entropy"),
        ("small_calls", "linear"),
        ("softmax", "4096x1000"), ("softmax", "65536x10"), ("logsumexp", "4096x1000"), ("adam_fp16", "1e7"),
        ("amp_unscale", "1e7"),
    ],
    "conv": [  # the convolution cases (compare with --reference torch-cpu: there is no plain-NumPy version)
        ("conv2d", "lenet1"), ("conv2d", "lenet2"), ("conv2d", "3x3-64"), ("lenet_step", "batch64"),
    ],
    "transformer": [  # attention and a GPT training step (compare with --reference torch-cpu)
        ("attention", "b32h4t64d32"), ("attention", "b8h8t256d64"), ("attention", "b4h8t1024d64"),
        ("gpt_step", "d128l4h4t64b32"), ("generate", "kv-cache"), ("generate", "recompute"),
    ],
    "graphs": [  # training steps: eager vs CUDA-graph replay (run with --impls xpnn-cuda xpnn-cuda-graph torch-cuda)
        ("mlp_step", "batch16"), ("mlp_step", "batch256"), ("tiny_step", "batch8"),
    ],
    "tiny": [  # a smoke run: seconds, every case once
        ("sigmoid_backward", "1e4"), ("cross_entropy", "256x10"), ("adam", "1e4"), ("sgd", "1e4"),
        ("mlp_step", "batch16"), ("tiny_step", "batch8"), ("seed_net", "64x1000"), ("conv2d", "lenet2"), ("lenet_step", "batch64"),
        ("softmax", "256x10"), ("logsumexp", "256x10"), ("adam_fp16", "1e4"), ("small_calls", "linear"),
        ("amp_unscale", "1e4"), ("attention", "b32h4t64d32"), ("gpt_step", "d32l1h2t16b4"), ("generate", "tiny"),
        ("lstm_step", "h16-T5-batch4"),
    ],
    "rnn": [("lstm_step", "h256-T50-batch32")],  # compare with --reference torch-cpu (no plain-NumPy version)
}


def run(
    plan: Sequence[tuple[str, str]],
    impls: Sequence[str],
    *,
    reference: str = "numpy-plain",
    max_time: float = 0.25,
    min_rounds: int = 5,
    repeats: int = 3,
) -> tuple[list[Row], list[dict[str, str]]]:
    """Measure every (case, size) of ``plan`` for every impl in ``impls``.

    The whole plan runs ``repeats`` times in a row (each pass with fresh data and ``max_time / repeats`` per row),
    so a burst of load from another process hits one pass of a row, not all: a row's times are those of every pass
    together, and ``Row.repeat_spread`` (largest over smallest pass median) shows whether the passes agree.
    Returns (rows, skipped), skipped being ``{"case", "size", "impl", "reason"}`` dicts for rows that cannot run here.
    """
    if repeats < 1:
        raise ValueError(f"run: repeats must be >= 1, got {repeats}")
    skipped: list[dict[str, str]] = []
    copy_bw: dict[tuple[str, int], float] = {}
    times: dict[tuple[str, str, str], list[list[float]]] = {}  # (case, size, impl) -> times of each pass
    devices: dict[tuple[str, str, str], str] = {}
    subnormals: dict[tuple[str, str, str], int] = {}
    per_pass_rounds = max(2, -(-min_rounds // repeats))
    for rep in range(repeats):
        for case, size in plan:
            for impl in impls:
                key = (case, size, impl)
                if impl not in CASES[case].builders:  # e.g. autograd rows exist for training steps only
                    continue
                try:
                    runner = make_runner(case, size, impl)
                except Unavailable as exc:
                    if rep == 0:
                        skipped.append({"case": case, "size": size, "impl": impl, "reason": str(exc)})
                    continue
                t = measure(runner.fn, device=runner.device, max_time=max_time / repeats, min_rounds=per_pass_rounds)
                times.setdefault(key, []).append(t.times)
                devices[key] = runner.device
                subnormals[key] = max(subnormals.get(key, 0), subnormal_count(runner.state()))
                del runner
                if devices[key] != "cpu":
                    free_gpu_memory()
    rows: list[Row] = []
    for case, size in plan:
        group: list[Row] = []
        nbytes = CASES[case].bytes_moved(CASES[case].sizes[size])
        for impl in impls:
            key = (case, size, impl)
            if key not in times:
                continue
            t = Timing([x for pass_times in times[key] for x in pass_times])
            medians = [statistics.median(pass_times) for pass_times in times[key]]
            row = Row(case, size, impl, devices[key], t.median, t.iqr, t.min, t.rounds, nbytes, max=t.max,
                      subnormals=subnormals[key], repeat_spread=max(medians) / min(medians) if min(medians) > 0 else None)
            if nbytes is not None:
                bw_key = (row.device, nbytes)
                if bw_key not in copy_bw:
                    copy_bw[bw_key] = copy_bandwidth(row.device, nbytes, max_time=max_time)
                row.copy_bandwidth = copy_bw[bw_key]
            group.append(row)
        ref = next((r for r in group if r.impl == reference), None)
        for r in group:
            r.ratio = None if ref is None else r.median / ref.median
        rows.extend(group)
    return rows, skipped


def _load_average() -> Optional[float]:
    """The 1-minute load average (``None`` where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _check_outputs(args: argparse.Namespace) -> Optional[str]:
    """The error message for a ``--json``/``--plot`` path that cannot be written, before anything is measured."""
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            folder = Path(path).expanduser().resolve().parent
            if not folder.is_dir():
                return f"{flag} {path}: folder {folder} does not exist"
            if not os.access(folder, os.W_OK):
                return f"{flag} {path}: folder {folder} is not writable"
    if args.plot:
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            return '--plot needs matplotlib: pip install "xpnn[plot]" (or leave out --plot)'
        suffix = Path(args.plot).suffix.lstrip(".").lower()
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix and suffix not in formats:
            return (f"--plot {args.plot}: unsupported image format {suffix!r} (use .png, or one of "
                    f"{', '.join(sorted(formats))})")
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xpnn bench",
        description="Quick benchmark: xpnn against straightforward NumPy, PyTorch (if installed) and, on a GPU, "
                    "xpnn's CUDA backend with and without fused kernels. "
                    "Full suite: pytest benchmarks --benchmark-only",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="which cases and sizes to run (quick: the default, under a minute on 2 CPU cores; "
                        "tiny: a smoke run)")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), metavar="CASE",
                   help=f"run only these cases ({', '.join(CASES)})")
    p.add_argument("--impls", nargs="+", choices=list(IMPLS), metavar="IMPL",
                   help=f"run only these implementations ({', '.join(IMPLS)}); default: all available")
    p.add_argument("--cpu-only", action="store_true", help="skip the GPU implementations even when a GPU is present")
    p.add_argument("--reference", choices=list(IMPLS), default="numpy-plain",
                   help="implementation the ratio column divides by (default: numpy-plain)")
    p.add_argument("--max-time", type=float, default=0.25, metavar="SECONDS",
                   help="time spent measuring each row, after one warm-up call (default 0.25; at least 5 calls)")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="passes over the whole plan, each with max-time / N per row; rows whose passes disagree "
                        f"by more than {UNSTABLE_REPEATS}x are marked unstable (default 3)")
    p.add_argument("--json", metavar="PATH", help="write results, machine and versions as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (needs matplotlib)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``xpnn bench``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.max_time <= 0:
        print("xpnn bench: --max-time must be positive", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("xpnn bench: --repeats must be >= 1", file=sys.stderr)
        return 2
    problem = _check_outputs(args)  # fail now, not after the whole run
    if problem:
        print(f"xpnn bench: error: {problem}", file=sys.stderr)
        return 2
    plan = [(c, s) for c, s in PRESETS[args.preset] if args.cases is None or c in args.cases]
    impls = list(args.impls or IMPLS)
    if args.cpu_only:
        impls = [i for i in impls if IMPLS[i].device == "cpu"]
    gpu = any(IMPLS[i].device != "cpu" and unavailable_reason(i) is None for i in impls)
    if not gpu:  # a CPU-only run: drop GPU-only sizes instead of listing every GPU row as skipped
        plan = [(c, s) for c, s in plan if s not in CASES[c].gpu_only]
        impls = [i for i in impls if IMPLS[i].device == "cpu"]
    settle_allocator()
    load_before = _load_average()
    rows, skipped = run(plan, impls, reference=args.reference, max_time=args.max_time, repeats=args.repeats)
    load_after = _load_average()
    machine = machine_info(gpu=gpu)
    machine["load_average"] = {"before": load_before, "after": load_after}

    where = f"CPU: {machine['cpu']} ({machine['cpu_count']} cores)" + (f"; GPU: {machine.get('gpu')}" if gpu else "")
    print(f"xpnn bench ({args.preset}) - {where}")
    print(format_table(rows, args.reference))
    print(f"\nratio: median / {args.reference} median (below 1 = faster). of floor: (bytes that must move / median) "
          "/ plain-copy bandwidth (dst[...] = src, same bytes, same device, same run).")
    copies = sorted({(r.device, r.bytes_moved, r.copy_bandwidth) for r in rows if r.copy_bandwidth})
    if copies:
        print("plain copy: " + "; ".join(f"{d} {format_bytes(b)} {bw / 1e9:.1f} GB/s" for d, b, bw in copies))
    if not gpu:
        print("no GPU: CUDA rows and GPU-only sizes skipped")
    for reason in sorted({s["reason"] for s in skipped}):
        print(f"skipped: {reason}")
    unstable = [r for r in rows if r.unstable()]
    if unstable:
        print(f"warning: {len(unstable)} of {len(rows)} row(s) unstable (passes {UNSTABLE_REPEATS}x apart or spread "
              f"above {UNSTABLE_IQR:.0%} of the median; marked in the table): something else was using the machine; "
              "re-run for stable numbers")
    cores = os.cpu_count() or 1
    if load_before is not None and load_before >= max(1.0, 0.5 * cores):
        print(f"warning: the machine was busy: load average {load_before:.1f} on {cores} cores before the run "
              f"({load_after:.1f} after); other processes compete for the CPU and the times are not reliable")
    bad = [r for r in rows if r.subnormals]
    for r in bad:
        print(f"warning: {r.case} {r.size} {r.impl}: {r.subnormals} subnormal values after the run", file=sys.stderr)
    command = " ".join(["xpnn bench", shlex.join(list(argv) if argv is not None else sys.argv[1:])]).strip()
    if args.json:
        write_json(args.json, rows, machine=machine, reference=args.reference, skipped=skipped, command=command)
        print(f"wrote {args.json}")
    if args.plot:
        if not rows:
            print("xpnn bench: nothing was measured, no plot written", file=sys.stderr)
            return 1
        write_plot(args.plot, rows, args.reference)
        print(f"wrote {args.plot}")
    return 0 if rows else 1
