"""Per-module kill rates of the last ``mutmut run`` (run from the repository root, after ``mutmut run``).

    python scripts/mutation_score.py              # one table: module, mutants, string-only, killed, rate
    python scripts/mutation_score.py --survivors  # also list the surviving non-string mutants (see `mutmut show NAME`)
    python scripts/mutation_score.py --pending    # names of the non-string mutants not run yet (for `mutmut run`)
    python scripts/mutation_score.py --recheck tests/test_io_files.py --module "xpnn.io*"
                                                  # run the mutants not killed yet against these test files only

A mutant is *string-only* when its function differs from the original only inside string literals (error messages,
docstrings): mutmut's ``"XXtextXX"`` and case changes. The rate counts the others: killed (a test failed, or the
mutant timed out) over all that were run, "no tests" (no test reaches the function) counting as survived.
Reads mutmut's own result files under ``mutants/`` (mutmut 3.8, pinned in the ``dev`` extra).

``--recheck`` is the fast way to check new tests against the survivors, or a module's mutants against its own test
files: ``mutmut run NAME...`` reruns every test that reaches each mutant, which for the autograd core is most of the
suite. It takes every non-string mutant of ``--module`` that is not killed yet (survivors and mutants not run),
collects the given test files once (the package imported from ``mutants/``), forks one process per mutant that runs
them with the mutant active (``MUTANT_UNDER_TEST``, mutmut's own switch) up to the first failure, and keeps the verdicts in
``mutants/recheck.json`` next to mutmut's, each tied to the mutant's source (a verdict for code that has changed
since is ignored). A mutant counts as killed when those files fail on it or it runs past ``--timeout`` seconds. Fewer
test files can only kill fewer mutants, so a rate reached this way is a lower bound of mutmut's.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SURVIVED = {"survived", "no tests", "suspicious"}
RECHECK = "recheck.json"


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


def _mutants(root: Path):
    """Yield (module path, mutant name, status or None when not run, source digest) for every non-string mutant."""
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        src = meta.with_suffix("")  # the mutated copy of the module: every mutant is a function in it
        funcs = _functions(ast.parse(src.read_text(encoding="utf-8")))
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        module = str(src.relative_to(root / "mutants"))
        yield module, None, None, None  # so that modules whose mutants are all string-only still get a row
        for name, code in codes.items():
            short = name.rsplit(".", 1)[1]
            orig = re.sub(r"__mutmut_\d+$", "__mutmut_orig", short)
            if short in funcs and orig in funcs and _normal(funcs[short]) == _normal(funcs[orig]):
                yield module, name, "string", None
                continue
            body = ast.unparse(funcs[short]) if short in funcs else name
            digest = hashlib.sha256(body.encode()).hexdigest()[:16]
            yield module, name, None if code is None else _status(code), digest


def _load_recheck(root: Path) -> dict:
    path = root / "mutants" / RECHECK
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _save_recheck(root: Path, verdicts: dict) -> None:
    """Add ``verdicts`` to the file (re-read first, so runs for other modules at the same time keep theirs)."""
    path = root / "mutants" / RECHECK
    merged = {**_load_recheck(root), **verdicts}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def score(root: Path, show_survivors: bool) -> int:
    if not list((root / "mutants").rglob("*.py.meta")):
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 1
    rechecked = _load_recheck(root)
    rows: dict[str, dict] = {}
    for module, name, status, digest in _mutants(root):
        row = rows.setdefault(module, {"total": 0, "string": 0, "run": 0, "killed": 0, "recheck": 0, "left": []})
        if name is None:
            continue
        row["total"] += 1
        if status == "string":
            row["string"] += 1
            continue
        again = rechecked.get(name)
        if again and again["digest"] != digest:
            again = None  # a verdict for code that has changed since
        if status is None and again:
            status = "survived"  # run by --recheck only
        if status not in KILLED | SURVIVED:  # not run (a run restricted to other modules), skipped, interrupted
            continue
        row["run"] += 1
        if status in KILLED:
            row["killed"] += 1
        elif again and again["killed"]:
            row["killed"] += 1
            row["recheck"] += 1
        else:
            row["left"].append(f"{name} ({status})")
    print(f"{'module':34} {'mutants':>7} {'string':>6} {'run':>5} {'killed':>6} {'rate':>7}  (killed on recheck)")
    for module, row in rows.items():
        rate = f"{100 * row['killed'] / row['run']:6.1f}%" if row["run"] else "   n/a"
        print(f"{module:34} {row['total']:7d} {row['string']:6d} {row['run']:5d} {row['killed']:6d} {rate}"
              + (f"  ({row['recheck']})" if row["recheck"] else ""))
        if show_survivors:
            for s in row["left"]:
                print(f"    {s}")
    return 0


def pending(root: Path, pattern: str) -> int:
    for _module, name, status, _digest in _mutants(root):
        if name is not None and status is None and fnmatch.fnmatch(name, pattern):
            print(name)
    return 0


class _ForkPerMutant:
    """A pytest plugin: collect the test files once, then, in place of pytest's own loop, fork one process per mutant
    that runs the collected tests with the mutant active and exits 1 at the first failure (0 when all pass)."""

    def __init__(self, todo: list[tuple[str, str]], jobs: int, timeout: float, record) -> None:
        self.todo, self.jobs, self.timeout, self.record = todo, jobs, timeout, record
        self.clean_failed = False

    def _child(self, session, name: str) -> None:
        from _pytest.runner import runtestprotocol  # noqa: PLC0415

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.environ["MUTANT_UNDER_TEST"] = name
        factory = session.config._tmp_path_factory  # a temporary folder of its own: no child cleans up another's
        factory._given_basetemp, factory._basetemp = Path(f"/tmp/xpnn-recheck-{os.getpid()}"), None
        items, took = session.items, []
        for i, item in enumerate(items):
            start = time.perf_counter()
            reports = runtestprotocol(item, nextitem=items[i + 1] if i + 1 < len(items) else None, log=False)
            took.append(time.perf_counter() - start)
            if any(r.failed for r in reports):
                os._exit(1)
        if not name:  # the clean run: its times order the tests for the mutants, fastest first (as mutmut does)
            Path(self.times).write_text(json.dumps(took), encoding="utf-8")
        os._exit(0)

    def _run(self, session, jobs: list[tuple[str, str | None]]) -> None:
        running: dict[int, tuple[str, str | None, float]] = {}
        while jobs or running:
            while jobs and len(running) < self.jobs:
                name, digest = jobs.pop(0)
                pid = os.fork()
                if pid == 0:
                    self._child(session, name)
                running[pid] = (name, digest, time.monotonic())
            time.sleep(0.005)
            for pid, (name, digest, start) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                over = not done and time.monotonic() - start > self.timeout
                if over:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                if done or over:
                    del running[pid]
                    shutil.rmtree(f"/tmp/xpnn-recheck-{pid}", ignore_errors=True)
                    self.record(name, digest, os.waitstatus_to_exitcode(status) if done else None)

    def pytest_runtestloop(self, session) -> bool:
        self.times = f"/tmp/xpnn-recheck-times-{os.getpid()}.json"
        self._run(session, [("", None)])  # no mutant: the files must pass on the real code
        if self.clean_failed:
            return True
        took = json.loads(Path(self.times).read_text(encoding="utf-8"))
        os.unlink(self.times)
        in_order = list(session.items)
        session.items[:] = [item for _, _, item in sorted(zip(took, range(len(took)), in_order))]
        self._run(session, [("", None)])  # the same, fastest first: tests that need an order keep the files' order
        if self.clean_failed:
            print("some of these tests fail out of their files' order: running them in that order", file=sys.stderr)
            session.items[:] = in_order
            self.clean_failed = False
        self._run(session, self.todo)
        return True  # the tests ran in the children


def _refresh_mutants() -> None:
    """Regenerate the mutated copy of every module changed since the last run, as ``mutmut run`` does first (the
    verdicts of changed functions are dropped)."""
    from mutmut.__main__ import create_mutants  # noqa: PLC0415
    from mutmut.utils.file_utils import copy_src_dir  # noqa: PLC0415

    with contextlib.redirect_stdout(io.StringIO()):  # it prints every file's name
        copy_src_dir()
        create_mutants(1)


def recheck(root: Path, files: list[str], pattern: str, jobs: int, timeout: float) -> int:
    _refresh_mutants()
    rechecked = _load_recheck(root)
    todo = [(name, digest) for module, name, status, digest in _mutants(root)
            if name is not None and (status is None or status in SURVIVED) and fnmatch.fnmatch(name, pattern)
            and not (name in rechecked and rechecked[name]["digest"] == digest and rechecked[name]["killed"])]
    if not todo:
        print("no mutant left to kill matches", pattern)
        return 0
    shutil.copytree(root / "tests", root / "mutants" / "tests", dirs_exist_ok=True)  # the tests as they are now
    os.chdir(root / "mutants")
    sys.path.insert(0, str(root / "mutants"))
    import pytest  # noqa: PLC0415
    import xpnn  # noqa: PLC0415 (imported once here, so every child starts warm)

    if not Path(xpnn.__file__).resolve().is_relative_to((root / "mutants").resolve()):
        print(f"xpnn imports from {xpnn.__file__}, not from mutants/: uninstall other copies first", file=sys.stderr)
        return 1
    killed = 0
    rechecked_now: list[str] = []

    def record(name: str, digest: str | None, code: int | None) -> None:
        nonlocal killed
        if digest is None:  # the clean run
            plugin.clean_failed = code != 0
            return
        if code not in (0, 1, None):
            print(f"{name}: status {code} (not counted)")
            return
        rechecked[name] = {"digest": digest, "killed": code != 0, "tests": files}
        rechecked_now.append(name)
        if len(rechecked_now) % 20 == 0:  # keep what is done if the run is stopped
            _save_recheck(root, {n: rechecked[n] for n in rechecked_now})
        killed += code != 0
        print(f"{'killed  ' if code else 'survived'} {name}" + (" (timeout)" if code is None else ""), flush=True)

    plugin = _ForkPerMutant(todo, jobs, timeout, record)
    pytest.main(["-q", "-s", "--tb=native", "-p", "no:cacheprovider", "-p", "no:randomly", "-m", "not slow", *files],
                plugins=[plugin])  # --tb=native: pytest's own style takes seconds through the mutated modules
    if plugin.clean_failed:
        print("the test files fail without a mutant: fix them first", file=sys.stderr)
        return 1
    _save_recheck(root, {n: rechecked[n] for n in rechecked_now})
    print(f"{killed} of {len(rechecked_now)} killed by {' '.join(files)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true", help="list the surviving non-string mutants")
    ap.add_argument("--pending", action="store_true", help="print the names of the non-string mutants not yet run")
    ap.add_argument("--recheck", nargs="+", metavar="TEST_FILE", help="run the survivors against these test files")
    ap.add_argument("--module", default="*", help="mutant name pattern for --pending/--recheck, e.g. 'xpnn.io*'")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="--recheck: processes at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="--recheck: seconds before a mutant counts as hung")
    ap.add_argument("--root", type=Path, default=Path("."), help="repository root (holds mutants/)")
    args = ap.parse_args()
    root = args.root.resolve()
    os.chdir(root)  # mutmut reads its configuration from the current folder
    if args.pending:
        return pending(root, args.module)
    if args.recheck:
        files = [str(Path(f).resolve().relative_to(root)) for f in args.recheck]
        return recheck(root, files, args.module, args.jobs, args.timeout)
    return score(root, args.survivors)


if __name__ == "__main__":
    sys.exit(main())
