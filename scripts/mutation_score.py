"""Per-module kill rates of the last ``mutmut run`` (run from the repository root, after ``mutmut run``).

    python scripts/mutation_score.py            # one table: module, mutants, string-only, killed, rate
    python scripts/mutation_score.py --survivors # also list the surviving non-string mutants (see `mutmut show NAME`)

A mutant is *string-only* when its function differs from the original only inside string literals (error messages,
docstrings): mutmut's ``"XXtextXX"`` and case changes. The rate counts the others: killed (a test failed, or the
mutant timed out) over all that were run, "no tests" (no test reaches the function) counting as survived.
Reads mutmut's own result files under ``mutants/`` (mutmut 3.8, pinned in the ``dev`` extra).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from pathlib import Path

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SURVIVED = {"survived", "no tests", "suspicious"}


def _status(code):
    from mutmut.stats import status_by_exit_code  # noqa: PLC0415 (reads [tool.mutmut] of the current folder)

    return status_by_exit_code[code]


class _Strip(ast.NodeTransformer):
    """Blank every string literal (f-strings included) so two functions compare on their code alone."""

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(""), node) if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):
        return ast.copy_location(ast.Constant(""), node)


def _functions(tree):
    return {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _normal(fn):
    fn = ast.parse(ast.unparse(fn)).body[0]
    fn.name = "f"
    return ast.dump(_Strip().visit(fn))


def score(root: Path, show_survivors: bool) -> int:
    metas = sorted((root / "mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 1
    print(f"{'module':34} {'mutants':>7} {'string':>6} {'run':>5} {'killed':>6} {'rate':>7}")
    for meta in metas:
        src = meta.with_suffix("")  # the mutated copy of the module: every mutant is a function in it
        funcs = _functions(ast.parse(src.read_text(encoding="utf-8")))
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        total = strings = run = killed = 0
        survivors = []
        for name, code in codes.items():
            total += 1
            short = name.rsplit(".", 1)[1]
            orig = re.sub(r"__mutmut_\d+$", "__mutmut_orig", short)
            if short in funcs and orig in funcs and _normal(funcs[short]) == _normal(funcs[orig]):
                strings += 1
                continue
            status = "not checked" if code is None else _status(code)
            if status not in KILLED | SURVIVED:  # not run (a run restricted to other modules), skipped, interrupted
                continue
            run += 1
            if status in KILLED:
                killed += 1
            elif status in SURVIVED:
                survivors.append(f"{name} ({status})")
        module = str(src.relative_to(root / "mutants"))
        rate = f"{100 * killed / run:6.1f}%" if run else "   n/a"
        print(f"{module:34} {total:7d} {strings:6d} {run:5d} {killed:6d} {rate}")
        if show_survivors:
            for s in survivors:
                print(f"    {s}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true", help="list the surviving non-string mutants")
    ap.add_argument("--root", type=Path, default=Path("."), help="repository root (holds mutants/)")
    args = ap.parse_args()
    root = args.root.resolve()
    os.chdir(root)  # mutmut reads its configuration from the current folder
    return score(root, args.survivors)


if __name__ == "__main__":
    sys.exit(main())
