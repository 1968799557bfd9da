"""``xpnn bench``: a quick side-by-side benchmark of xpnn against straightforward NumPy, PyTorch (when installed)
and, when a GPU is present, xpnn's CUDA backend with and without its fused kernels.

Prints one table (case, size, backend, median, spread, ratio to the reference, bandwidth, fraction of the copy
floor); ``--json PATH`` writes the results with machine and versions, ``--plot PATH`` a PNG bar chart.
The full suite is ``pytest benchmarks --benchmark-only`` (same cases, more sizes).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional, Sequence

from .cases import CASES, IMPLS, Unavailable, make_runner, subnormal_count, unavailable_reason
from .report import Row, format_bytes, format_table, machine_info, write_json, write_plot
from .timing import copy_bandwidth, free_gpu_memory, measure, settle_allocator

__all__ = ["main", "run", "PRESETS"]

# (case, size) pairs per preset; GPU-only sizes run only when a GPU is present
PRESETS: dict[str, list[tuple[str, str]]] = {
    "quick": [
        ("sigmoid_backward", "1e6"), ("sigmoid_backward", "1e8"),
        ("cross_entropy", "4096x1000"), ("cross_entropy", "8192x32768"),
        ("adam", "1e6"), ("adam", "1e8"), ("adam", "200-tensors"),
        ("mlp_step", "batch256"),
        ("seed_net", "64x1000"),
        ("softmax", "4096x1000"), ("softmax", "65536x10"), ("logsumexp", "4096x1000"), ("adam_fp16", "1e7"),
    ],
    "tiny": [  # a smoke run: seconds, every case once
        ("sigmoid_backward", "1e4"), ("cross_entropy", "256x10"), ("adam", "1e4"), ("mlp_step", "batch16"),
        ("seed_net", "64x1000"), ("softmax", "256x10"), ("logsumexp", "256x10"), ("adam_fp16", "1e4"),
    ],
}


def run(
    plan: Sequence[tuple[str, str]],
    impls: Sequence[str],
    *,
    reference: str = "numpy-plain",
    max_time: float = 0.25,
    min_rounds: int = 5,
) -> tuple[list[Row], list[dict[str, str]]]:
    """Measure every (case, size) of ``plan`` for every impl in ``impls``.

    Returns (rows, skipped), skipped being ``{"case", "size", "impl", "reason"}`` dicts for rows that cannot run here.
    """
    rows: list[Row] = []
    skipped: list[dict[str, str]] = []
    copy_bw: dict[tuple[str, int], float] = {}
    for case, size in plan:
        group: list[Row] = []
        nbytes = CASES[case].bytes_moved(CASES[case].sizes[size])
        for impl in impls:
            try:
                runner = make_runner(case, size, impl)
            except Unavailable as exc:
                skipped.append({"case": case, "size": size, "impl": impl, "reason": str(exc)})
                continue
            t = measure(runner.fn, device=runner.device, max_time=max_time, min_rounds=min_rounds)
            row = Row(case, size, impl, runner.device, t.median, t.iqr, t.min, t.rounds, nbytes,
                      subnormals=subnormal_count(runner.state()))
            del runner
            if nbytes is not None:
                key = (row.device, nbytes)
                if key not in copy_bw:
                    copy_bw[key] = copy_bandwidth(row.device, nbytes, max_time=max_time)
                row.copy_bandwidth = copy_bw[key]
            group.append(row)
            if row.device != "cpu":
                free_gpu_memory()
        ref = next((r for r in group if r.impl == reference), None)
        for r in group:
            r.ratio = None if ref is None else r.median / ref.median
        rows.extend(group)
    return rows, skipped


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
    p.add_argument("--json", metavar="PATH", help="write results, machine and versions as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart (needs matplotlib)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``xpnn bench``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.max_time <= 0:
        print("xpnn bench: --max-time must be positive", file=sys.stderr)
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
    rows, skipped = run(plan, impls, reference=args.reference, max_time=args.max_time)
    machine = machine_info(gpu=gpu)

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
    noisy = [f"{r.case} {r.size} {r.impl}" for r in rows if r.iqr > 0.5 * r.median]
    if noisy:
        print(f"note: spread above 50% of the median in {len(noisy)} row(s) ({'; '.join(noisy)}): something else "
              "was using the machine; re-run for stable numbers")
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
