"""xpnn.functional.cpu_threads: the loop splitting of the NumPy fast paths (chunks, parallel_for over a thread pool
with NumPy's BLAS limited to one thread meanwhile), get_num_threads / set_num_threads (also as xpnn.*), and how it
behaves with exceptions, KeyboardInterrupt, nesting, concurrent callers, threadpoolctl limits, fork and exit."""
import contextlib
import contextvars
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import xpnn
from xpnn.functional import cpu_threads

WAIT_S = 60  # a hang fails after this long


@pytest.fixture(autouse=True)
def default_threads():
    """Every test starts and ends at the default thread count."""
    cpu_threads.set_num_threads(None)
    yield
    cpu_threads.set_num_threads(None)


def _blas_threads():
    """The thread count of NumPy's BLAS as the calling thread sees it."""
    return cpu_threads._numpy_blas()[0].num_threads


def _set_blas_from_a_passing_thread(k):
    """Set NumPy's BLAS threads from a short-lived thread (threadpoolctl >= 3.8 hands OpenBLAS's process-wide limit
    to the first thread that sets it while it is alive: this one dies at once)."""
    t = threading.Thread(target=lambda: [lc.set_num_threads(k) for lc in cpu_threads._numpy_blas()])
    t.start()
    t.join()


@pytest.fixture
def blas_two_threads():
    """NumPy's BLAS at >= 2 threads for the test (so that a limit of one is seen), restored after."""
    if not cpu_threads._numpy_blas():
        pytest.skip("threadpoolctl finds no BLAS of NumPy's here: nothing to limit")
    before = _blas_threads()
    if before < 2:
        _set_blas_from_a_passing_thread(2)
    yield
    _set_blas_from_a_passing_thread(before)


def test_chunks_cover_the_range_contiguously_in_near_equal_sizes():
    for n in range(0, 40):
        for parts in range(1, 9):
            got = cpu_threads.chunks(n, parts)
            assert len(got) == min(parts, n)
            assert [i for lo, hi in got for i in range(lo, hi)] == list(range(n))
            assert all(hi > lo for lo, hi in got)
            assert all(a[1] == b[0] for a, b in zip(got, got[1:]))
            sizes = [hi - lo for lo, hi in got]
            assert not sizes or max(sizes) - min(sizes) <= 1
    assert cpu_threads.chunks(0, 4) == []
    assert cpu_threads.chunks(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert cpu_threads.chunks(5, 0) == [(0, 5)]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100])
def test_parallel_for_visits_every_index_exactly_once(threads, n):
    cpu_threads.set_num_threads(threads)
    seen = np.zeros(n, dtype=np.int64)

    def body(lo, hi):
        seen[lo:hi] += 1

    k = cpu_threads.parallel_for(n, body)
    assert k == min(threads, n)
    np.testing.assert_array_equal(seen, np.ones(n, dtype=np.int64))


def test_parallel_for_runs_chunks_on_several_threads():
    cpu_threads.set_num_threads(2)
    assert cpu_threads.get_num_threads() == 2
    idents = {}

    def body(lo, hi):
        idents[lo] = threading.get_ident()

    assert cpu_threads.parallel_for(10, body) == 2
    assert idents[0] == threading.get_ident()  # the first chunk in the calling thread
    assert len(set(idents.values())) == 2


def test_parallel_for_limits_numpy_blas_to_one_thread_and_restores_it(blas_two_threads):
    cpu_threads.set_num_threads(2)
    before = _blas_threads()
    inside = []

    def body(lo, hi):
        inside.append(_blas_threads())

    assert cpu_threads.parallel_for(4, body) == 2
    assert inside == [1, 1]
    assert _blas_threads() == before

    def failing(lo, hi):
        inside.append(_blas_threads())
        raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        cpu_threads.parallel_for(4, failing)
    assert inside[2:] == [1, 1]
    assert _blas_threads() == before


@pytest.mark.parametrize("failing_chunk", [0, 1])
def test_an_exception_in_a_chunk_is_raised_after_every_chunk_finished(failing_chunk):
    """The first chunk (the calling thread) or a worker's fails at once; the others are slow: the exception comes
    once they are done, and the next call splits again (the pool and its lock are free)."""
    cpu_threads.set_num_threads(3)
    done = set()

    def body(lo, hi):
        if lo == failing_chunk:
            raise KeyError(f"chunk {lo}")
        time.sleep(0.2)
        done.add(lo)

    with pytest.raises(KeyError, match=f"chunk {failing_chunk}"):
        cpu_threads.parallel_for(3, body)
    assert done == {0, 1, 2} - {failing_chunk}
    assert cpu_threads.parallel_for(3, lambda lo, hi: None) == 3


def test_a_keyboard_interrupt_raised_in_a_chunk_waits_for_the_others():
    cpu_threads.set_num_threads(2)
    done = []

    def body(lo, hi):
        if lo == 0:
            raise KeyboardInterrupt
        time.sleep(0.2)
        done.append(lo)

    with pytest.raises(KeyboardInterrupt):
        cpu_threads.parallel_for(2, body)
    assert done == [1]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill (POSIX)")
def test_ctrl_c_while_waiting_for_the_chunks_is_raised_after_they_finished(blas_two_threads):
    """SIGINT delivered to the main thread while it waits for a worker's chunk: KeyboardInterrupt comes once that
    chunk is done (no chunk keeps writing after the call returned), with NumPy's BLAS threads restored."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    cpu_threads.set_num_threads(2)
    before = _blas_threads()
    done = []

    main = threading.main_thread().ident

    def body(lo, hi):
        if lo > 0:  # the worker's chunk: Ctrl-C reaches the main thread (waiting, or in its own chunk) meanwhile
            time.sleep(0.1)
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.5)
            done.append(lo)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            cpu_threads.parallel_for(2, body)
            time.sleep(WAIT_S)  # not reached when the interrupt came inside parallel_for
    finally:
        signal.signal(signal.SIGINT, old)
    assert done == [1]
    assert _blas_threads() == before


def test_ctrl_c_while_handing_out_chunks_waits_for_those_handed_out(monkeypatch):
    """A KeyboardInterrupt while chunks are being handed out (here: when worker 1 is fetched, as while a new worker
    thread starts) is raised only after the chunk already handed to worker 0 finished: no chunk keeps writing into
    the caller's arrays after parallel_for has raised."""
    cpu_threads.set_num_threads(3)
    cpu_threads.parallel_for(3, lambda lo, hi: None)  # the workers exist
    real, done = cpu_threads._worker, []

    def interrupted(k):
        if k == 1:
            raise KeyboardInterrupt
        return real(k)

    def body(lo, hi):
        time.sleep(0.3)
        done.append(lo)

    monkeypatch.setattr(cpu_threads, "_worker", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cpu_threads.parallel_for(3, body)
    assert done == [1]  # worker 0's chunk (samples 1-2) finished; neither the caller's nor worker 1's ran
    assert not cpu_threads._busy.locked()


_CALLER = contextvars.ContextVar("caller", default="unset")


def test_chunks_run_under_the_callers_numpy_error_state_and_context():
    """np.errstate / np.seterr (context-local in NumPy 2) and other context variables hold in every chunk, not only
    the calling thread's: an overflow raises in whichever chunk it happens."""
    cpu_threads.set_num_threads(3)
    seen = {}

    def body(lo, hi):
        try:
            np.array([1e308]) * 10
            seen[lo] = ("no error", _CALLER.get())
        except FloatingPointError:
            seen[lo] = ("raised", _CALLER.get())

    token = _CALLER.set("set by the caller")
    try:
        with np.errstate(over="raise"):
            assert cpu_threads.parallel_for(3, body) == 3
    finally:
        _CALLER.reset(token)
    assert seen == {lo: ("raised", "set by the caller") for lo in range(3)}
    with np.errstate(over="ignore"):
        cpu_threads.parallel_for(3, body)
    assert seen == {lo: ("no error", "unset") for lo in range(3)}


def test_a_nested_parallel_for_runs_in_its_chunk_sequentially():
    cpu_threads.set_num_threads(2)
    inner = {}

    def body(lo, hi):
        me = threading.get_ident()
        seen = []
        inner[lo] = cpu_threads.parallel_for(6, lambda a, b: seen.append((a, b, threading.get_ident())))
        assert seen == [(0, 6, me)]

    assert cpu_threads.parallel_for(2, body) == 2
    assert inner == {0: 1, 1: 1}


def test_two_threads_calling_parallel_for_at_once_both_get_their_results():
    cpu_threads.set_num_threads(2)
    n, rounds = 500, 30
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def caller(k):
        try:
            out = np.zeros(n)
            barrier.wait()
            for r in range(rounds):
                def body(lo, hi):
                    out[lo:hi] += np.arange(lo, hi) * (k + 1)
                cpu_threads.parallel_for(n, body)
            results[k] = out
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not errors and not any(t.is_alive() for t in threads)
    for k in range(2):
        np.testing.assert_array_equal(results[k], np.arange(n) * (k + 1) * rounds)


def test_parallel_for_keeps_chunks_at_least_min_chunk_long():
    cpu_threads.set_num_threads(4)
    for n, min_chunk, want in ((10, 4, 2), (10, 3, 3), (10, 11, 1), (10, 0, 4), (16, 4, 4), (3, 2, 1)):
        got = []
        assert cpu_threads.parallel_for(n, lambda lo, hi: got.append(hi - lo), min_chunk=min_chunk) == want
        assert sum(got) == n and len(got) == want
        assert want == 1 or min(got) >= min_chunk


def test_set_num_threads_validates_and_none_resets():
    default = cpu_threads.get_num_threads()
    assert default >= 1
    for bad in (True, False, 2.0, "2", np.float64(2)):
        with pytest.raises(TypeError, match="set_num_threads"):
            cpu_threads.set_num_threads(bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="set_num_threads"):
            cpu_threads.set_num_threads(bad)
    assert cpu_threads.get_num_threads() == default
    cpu_threads.set_num_threads(3)
    assert cpu_threads.get_num_threads() == 3
    cpu_threads.set_num_threads(None)
    assert cpu_threads.get_num_threads() == default


def test_set_num_threads_takes_numpy_integers_as_torch_does():
    cpu_threads.set_num_threads(np.int64(3))
    assert cpu_threads.get_num_threads() == 3 and type(cpu_threads.get_num_threads()) is int
    with pytest.raises(ValueError, match="set_num_threads"):
        cpu_threads.set_num_threads(np.int32(0))


def test_get_num_threads_from_another_thread_while_a_split_runs_is_the_setting(blas_two_threads, monkeypatch):
    """While a split loop holds NumPy's BLAS at one thread, get_num_threads (the default: NumPy's BLAS threads)
    still answers the setting from before the limit, in another thread and inside the chunks."""
    monkeypatch.setattr(cpu_threads, "_cpus", lambda: 4)
    want = cpu_threads.get_num_threads()
    assert want == _blas_threads() >= 2
    started, release, seen = threading.Event(), threading.Event(), []

    def body(lo, hi):
        seen.append(cpu_threads.get_num_threads())
        started.set()
        assert release.wait(WAIT_S)

    t = threading.Thread(target=cpu_threads.parallel_for, args=(2, body))
    t.start()
    try:
        assert started.wait(WAIT_S)
        assert _blas_threads() == 1  # the split's limit is in force
        assert cpu_threads.get_num_threads() == want
    finally:
        release.set()
        t.join(WAIT_S)
    assert seen == [want, want]
    assert cpu_threads.get_num_threads() == want


def test_get_and_set_num_threads_are_public_as_in_torch():
    assert xpnn.get_num_threads is cpu_threads.get_num_threads
    assert xpnn.set_num_threads is cpu_threads.set_num_threads
    assert {"get_num_threads", "set_num_threads"} <= set(xpnn.__all__)
    xpnn.set_num_threads(2)
    assert xpnn.get_num_threads() == 2
    xpnn.set_num_threads(None)


def test_the_default_follows_numpy_blas_and_threadpool_limits(blas_two_threads, monkeypatch):
    import threadpoolctl  # (a dependency of xpnn)
    cpus = cpu_threads._cpus()
    with monkeypatch.context() as m:
        m.setattr(cpu_threads, "_cpus", lambda: 1)  # at most the CPUs this process may use
        assert cpu_threads.get_num_threads() == 1
    assert cpu_threads.get_num_threads() == min(_blas_threads(), cpus)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert cpu_threads.get_num_threads() == 1
        assert cpu_threads.parallel_for(8, lambda lo, hi: None) == 1
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        assert cpu_threads.get_num_threads() == min(2, cpus)


def test_parallel_for_leaves_threadpool_limits_usable_in_other_threads(blas_two_threads):
    """threadpoolctl >= 3.8 lets only one living thread set OpenBLAS's process-wide limit: parallel_for hands it
    back when done, so a limit of the user's or a parallel_for in another thread takes effect afterwards."""
    import threadpoolctl  # (a dependency of xpnn)
    cpu_threads.set_num_threads(2)
    assert cpu_threads.parallel_for(4, lambda lo, hi: None) == 2  # in this (the main) thread, which stays alive
    seen = {}

    def other():
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            seen["user limit"] = _blas_threads()
        seen["chunks"] = cpu_threads.parallel_for(4, lambda lo, hi: seen.setdefault(lo, _blas_threads()))

    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT_S)
    assert seen == {"user limit": 1, "chunks": 2, 0: 1, 2: 1}


def test_a_users_threadpool_limits_keeps_its_hold_across_parallel_for(blas_two_threads):
    """Under threadpoolctl >= 3.8 a thread inside ``threadpool_limits`` holds OpenBLAS's process-wide limit (other
    threads' settings are ignored); a parallel_for inside that block leaves the hold with it."""
    import threadpoolctl  # (a dependency of xpnn)
    lib = cpu_threads._numpy_blas()[0]
    if cpu_threads._ownership is None or (lib.internal_api, getattr(lib, "threading_layer", None)) != (
            "openblas", "pthreads"):
        pytest.skip("needs OpenBLAS with pthreads under threadpoolctl >= 3.8 (a process-wide limit with an owner)")
    cpu_threads.set_num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert cpu_threads.parallel_for(4, lambda lo, hi: None) == 2
        _set_blas_from_a_passing_thread(3)  # ignored: this thread still holds the limit
        assert _blas_threads() == 1


@contextlib.contextmanager
def _fake_blas(per_thread, limit_takes=True):
    """cpu_threads' BLAS replaced by a fake library controller whose thread count is per thread, 4 until set in
    that thread (``limit_takes`` False: settings are ignored, as OpenBLAS's under threadpoolctl >= 3.8 when another
    living thread holds its limit). Yields the controller and the list of (thread, value) of each setting."""
    local = threading.local()
    settings = []

    class Lib:
        internal_api = "mkl" if per_thread else "openblas"
        threading_layer = "intel" if per_thread else "pthreads"

        @property
        def num_threads(self):
            return getattr(local, "n", 4)

        def set_num_threads(self, n):
            settings.append((threading.get_ident(), n))
            if limit_takes:
                local.n = n

    saved = cpu_threads._blas, cpu_threads._blas_per_thread
    cpu_threads._blas, cpu_threads._blas_per_thread = [Lib()], per_thread
    try:
        yield Lib(), settings
    finally:
        cpu_threads._blas, cpu_threads._blas_per_thread = saved


@pytest.mark.parametrize("per_thread", [False, True])
def test_every_chunk_runs_under_a_limit_of_one_blas_thread(per_thread):
    """A process-wide limit (OpenBLAS with pthreads) is set once by the calling thread and restored after; a
    per-thread one (MKL through threadpoolctl >= 3.8, OpenBLAS with OpenMP) also in each worker that runs a chunk."""
    cpu_threads.set_num_threads(3)
    me = threading.get_ident()
    with _fake_blas(per_thread) as (lib, settings):
        inside = {}

        def body(lo, hi):
            inside[lo] = (threading.get_ident(), lib.num_threads)

        assert cpu_threads.parallel_for(3, body) == 3
        workers = [ident for lo, (ident, _) in sorted(inside.items()) if lo > 0]
        assert me not in workers  # (one worker may run both of theirs)
        assert inside[0][1] == 1 and lib.num_threads == 4
        mine = [v for t, v in settings if t == me]
        assert mine == [1, 4]
        if per_thread:
            assert all(t == 1 for _, t in inside.values())
            for w in set(workers):
                assert [v for t, v in settings if t == w] == [1, 4] * workers.count(w)
        else:
            assert len(settings) == 2


def test_a_blas_limit_that_does_not_take_runs_one_chunk():
    cpu_threads.set_num_threads(2)
    with _fake_blas(per_thread=False, limit_takes=False):
        got = []
        assert cpu_threads.parallel_for(4, lambda lo, hi: got.append((lo, hi, threading.get_ident()))) == 1
        assert got == [(0, 4, threading.get_ident())]


def test_without_a_blas_of_numpy_s_the_default_is_one_thread(monkeypatch):
    """threadpoolctl finds no BLAS (Apple's Accelerate, a BLAS it does not know): one thread by default; a
    set_num_threads value still splits."""
    monkeypatch.setattr(cpu_threads, "_blas", [])
    assert cpu_threads.get_num_threads() == 1
    assert cpu_threads.parallel_for(4, lambda lo, hi: None) == 1
    cpu_threads.set_num_threads(2)
    idents = set()
    assert cpu_threads.parallel_for(4, lambda lo, hi: idents.add(threading.get_ident())) == 2
    assert len(idents) == 2


def _wait_child(pid):
    """The exit status of child ``pid``, killing it (and failing) if it runs longer than WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung for {WAIT_S} s in parallel_for")


def _child_splits():
    """In a forked child: parallel_for over two threads gives the right sums (exit code 0)."""
    try:
        cpu_threads.set_num_threads(2)
        out = np.zeros(100)

        def body(lo, hi):
            out[lo:hi] = np.arange(lo, hi, dtype=np.float64) @ np.eye(hi - lo)  # a BLAS call in each chunk

        ok = cpu_threads.parallel_for(100, body) == 2 and np.array_equal(out, np.arange(100))
        os._exit(0 if ok else 1)
    except BaseException:  # noqa: BLE001
        os._exit(2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_parallel_for_works_in_a_child_forked_after_the_pool_was_used():
    cpu_threads.set_num_threads(2)
    assert cpu_threads.parallel_for(4, lambda lo, hi: None) == 2  # the pool's threads exist in this process
    pid = os.fork()
    if pid == 0:
        _child_splits()
    assert _wait_child(pid) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_a_split_limits_blas_gets_numpy_s_blas_threads_back(blas_two_threads, monkeypatch):
    """Forked while another thread's split held NumPy's BLAS at one thread: the thread that would restore it does
    not run in the child, so the child restores it (else NumPy runs single-threaded there for good, and the
    default thread count is 1)."""
    monkeypatch.setattr(cpu_threads, "_cpus", lambda: 4)
    want = _blas_threads()
    started, release = threading.Event(), threading.Event()

    def body(lo, hi):
        started.set()
        assert release.wait(WAIT_S)

    t = threading.Thread(target=cpu_threads.parallel_for, args=(2, body))
    t.start()
    try:
        assert started.wait(WAIT_S) and _blas_threads() == 1
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if _blas_threads() == want == cpu_threads.get_num_threads() else 1)
            except BaseException:  # noqa: BLE001
                os._exit(2)
        assert _wait_child(pid) == 0
    finally:
        release.set()
        t.join(WAIT_S)
    assert _blas_threads() == want


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_parallel_for_works_in_a_child_forked_while_another_thread_ran_it():
    """Forked while another thread held the pool (its lock taken, its chunks running): the child has a lock and a
    pool of its own."""
    cpu_threads.set_num_threads(2)
    started = threading.Event()

    def slow(lo, hi):
        started.set()
        time.sleep(0.5)

    t = threading.Thread(target=cpu_threads.parallel_for, args=(2, slow))
    t.start()
    assert started.wait(WAIT_S)
    pid = os.fork()
    if pid == 0:
        _child_splits()
    try:
        assert _wait_child(pid) == 0
    finally:
        t.join(WAIT_S)


def _run_python(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        os.path.abspath(xpnn.__file__))), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=WAIT_S, env=env)


def test_a_process_that_used_the_pool_exits_and_atexit_handlers_can_still_use_it():
    """The pool's threads do not hold the interpreter at exit; an atexit handler (after the pool was shut down for
    exit) still gets its loop done, in the calling thread."""
    r = _run_python("""
        import atexit
        import numpy as np
        from xpnn.functional import cpu_threads

        cpu_threads.set_num_threads(2)
        out = np.zeros(10)

        def body(lo, hi):
            out[lo:hi] += 1

        def at_exit():
            cpu_threads.parallel_for(10, body)
            print("at exit", out.tolist())

        atexit.register(at_exit)
        print("chunks", cpu_threads.parallel_for(10, body))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["chunks 2", f"at exit {[2.0] * 10}"], r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


@pytest.mark.parametrize("shape", [(300, 400, 200), (1, 2000, 4000), (64, 400, 120), (5, 7, 3)])
@pytest.mark.parametrize("recent_split", [False, True])
def test_dot_is_numpy_s_product_split_or_not(blas_two_threads, monkeypatch, shape, recent_split):
    """``dot`` gives np.dot's product: right after a split (products then keep OpenBLAS off its own threads: rows
    in chunks from SPLIT_MIN_MACS, else one BLAS thread), and otherwise (np.dot itself); transposed operands and
    vectors too; NumPy's BLAS threads are restored after."""
    m, k, n = shape
    monkeypatch.setattr(cpu_threads, "SPLIT_MIN_MACS", 1 << 20)
    cpu_threads.set_num_threads(2)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    runs = []
    real_run = cpu_threads._run
    monkeypatch.setattr(cpu_threads, "_run", lambda n_, t, body: runs.append(t) or real_run(n_, t, body))
    monkeypatch.setattr(cpu_threads, "_last_split", time.monotonic() if recent_split else -np.inf)
    got = cpu_threads.dot(a, b.T)
    np.testing.assert_allclose(got, np.dot(a, b.T), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu_threads.dot(a[0], b.T), np.dot(a[0], b.T), rtol=1e-12, atol=1e-12)
    split = recent_split and m * k * n >= cpu_threads.SPLIT_MIN_MACS and m > 1
    assert runs == ([2] if split else [])
    assert _blas_threads() >= 2


def test_linear_products_after_a_split_keep_openblas_off_its_threads(blas_two_threads, monkeypatch):
    """A Linear layer's products right after a split loop (a conv net's head) run through ``dot`` with NumPy's BLAS
    limited to one thread (seen from inside the product), and give the same result as without the split."""
    import xpnn.functional as F

    cpu_threads.set_num_threads(2)
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((64, 4096)), rng.standard_normal((256, 4096))
    want = F.linear(x, w)
    seen = []
    real_dot = cpu_threads._dot
    monkeypatch.setattr(cpu_threads, "_dot", lambda a, b, *out: seen.append(_blas_threads()) or real_dot(a, b, *out))
    cpu_threads.parallel_for(2, lambda lo, hi: None)  # a split: the products of the next second avoid BLAS threads
    got = F.linear(x, w)
    assert seen and set(seen) == {1}
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert _blas_threads() >= 2
