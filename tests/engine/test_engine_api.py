"""The public API: multiprocessing.Pool and concurrent.futures.Executor compatibility,
per-call options, backends, sw.map, cpu_count."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import multiprocessing
import os
import threading
import time

import engine_helpers as h
import pytest

import slicewise as sw
from slicewise.engine import PoolClosedError, ResultList
from slicewise.engine.cpu import _cgroup_quota

pytestmark = pytest.mark.timeout(60)


def test_map_family(any_pool):
    pool = any_pool
    assert pool.map(h.square, range(20)) == [x * x for x in range(20)]
    assert pool.starmap(h.add, [(1, 2), (3, 4)]) == [3, 7]
    assert list(pool.imap(h.square, range(10))) == [x * x for x in range(10)]
    assert sorted(pool.imap_unordered(h.square, range(10))) == [x * x for x in range(10)]
    assert pool.apply(h.add, (2, 3)) == 5
    assert pool.apply(h.add, (2,), {"b": 5}) == 7
    assert pool.map(h.square, []) == []
    assert pool.map(h.square, (x for x in range(5))) == [0, 1, 4, 9, 16]


def test_async_results(any_pool):
    pool = any_pool
    seen = []
    result = pool.map_async(h.square, range(5), callback=seen.append)
    assert result.get(timeout=30) == [0, 1, 4, 9, 16]
    result.wait()
    assert result.ready() and result.successful()
    single = pool.apply_async(h.add, (1, 1))
    assert single.get(30) == 2
    errors = []
    failing = pool.apply_async(h.fail_at, (5,), error_callback=errors.append)
    with pytest.raises(ValueError, match="boom"):
        failing.get(30)
    assert not failing.successful()
    deadline = time.monotonic() + 10
    while not (seen and errors) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [[0, 1, 4, 9, 16]]
    assert isinstance(errors[0], ValueError)
    assert pool.starmap_async(h.add, [(1, 2)]).get(30) == [3]


def test_async_get_timeout(process_pool):
    result = process_pool.apply_async(h.sleep_then, (1, 1.0))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.01)
    assert not result.ready()
    assert result.get(timeout=30) == 1


@pytest.mark.parametrize("backend", ["processes", "threads"])
def test_imap_next_with_a_timeout_as_multiprocessing(backend):
    slow = functools.partial(h.sleep_then, seconds=1.0)
    with sw.Pool(2, backend) as pool:
        iterator = pool.imap(slow, range(3), chunksize=1)
        with pytest.raises(multiprocessing.TimeoutError):
            iterator.next(timeout=0.01)
        assert iterator.next(timeout=30) == 0  # still usable after a timeout
        assert iterator.next() == 1
        assert list(iterator) == [2]
        with pytest.raises(StopIteration):
            iterator.next(timeout=1)


def test_imap_next_skips_failed_items(any_pool):
    fail_at_3 = functools.partial(h.fail_at, bad=3)
    iterator = any_pool.imap(fail_at_3, range(6), chunksize=2, on_error="skip")
    assert [iterator.next(timeout=30) for _ in range(5)] == [0, 2, 4, 8, 10]
    assert [f.index for f in iterator.errors] == [3]
    with pytest.raises(StopIteration):
        next(iterator)


def test_executor_submit_and_futures(any_pool):
    pool = any_pool
    futures = [pool.submit(h.add, i, b=1) for i in range(8)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == list(range(1, 9))
    done, not_done = cf.wait(futures, timeout=30)
    assert len(done) == 8 and not not_done
    failing = pool.submit(h.fail_at, 5)
    with pytest.raises(ValueError, match="boom") as info:
        failing.result(timeout=30)
    assert "Worker traceback" in str(info.value.__cause__) or pool.backend != "processes"
    assert isinstance(failing.exception(), ValueError)


def test_executor_map_signatures(process_pool):
    pool = process_pool
    # multiprocessing.Pool.map(func, iterable, chunksize)
    assert pool.map(h.square, range(10), 3) == [x * x for x in range(10)]
    # Executor.map(fn, *iterables): zipped, shortest wins
    assert pool.map(h.add, [1, 2, 3], [10, 20]) == [11, 22]
    assert pool.map(h.add, range(3), range(3), chunksize=1) == [0, 2, 4]
    assert list(pool.map(h.square, range(3))) == [0, 1, 4]  # iterable, as Executor users expect
    with pytest.raises(TypeError):
        pool.map(h.square)
    with pytest.raises(TypeError, match="colour"):  # its real signature refuses it
        pool.imap(h.square, range(3), colour="red")


def test_executor_map_timeout_is_a_timeout_error(process_pool):
    with pytest.raises(TimeoutError):
        process_pool.map(h.hang_on, range(4), timeout=0.3)


def test_shutdown_cancel_futures():
    pool = sw.Pool(1)
    blocker = pool.submit(h.sleep_then, 0, 0.5)
    while not (blocker.running() or blocker.done()):
        time.sleep(0.005)
    queued = [pool.submit(h.square, i) for i in range(5)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert blocker.result() == 0
    assert all(f.cancelled() or f.done() for f in queued)
    assert any(f.cancelled() for f in queued)
    with pytest.raises(PoolClosedError):
        pool.submit(h.square, 1)


def test_close_join_and_closed_errors():
    pool = sw.Pool(2)
    result = pool.map_async(h.sleep_then, range(4))
    pool.close()
    with pytest.raises(PoolClosedError):
        pool.map(h.square, [1])
    pool.join()
    assert result.get(5) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        sw.Pool(1).join()  # join before close, as multiprocessing says


def test_terminate_stops_running_work():
    pool = sw.Pool(2)
    result = pool.map_async(h.sleep_then, range(4), timeout=None)
    pool.submit(h.hang_on, 3)
    pool.terminate()
    pool.join()
    with pytest.raises(PoolClosedError):
        result.get(5)


def test_context_manager_waits_for_submitted_work():
    with sw.Pool(2) as pool:
        future = pool.submit(h.sleep_then, 42, 0.2)
    assert future.result(timeout=0) == 42


@pytest.mark.timeout(30)
def test_leaving_the_with_block_finishes_a_half_read_imap():
    """An imap runs only a few batches ahead of its reader; leaving the block waits for
    submitted work, so the rest must run without a reader (this hung forever)."""
    with sw.Pool(2) as pool:
        squares = pool.imap(h.square, range(300), chunksize=1)
        assert next(squares) == 0
    assert list(squares) == [x * x for x in range(1, 300)]  # readable after the pool closed
    pool = sw.Pool(2)
    squares = pool.imap(h.square, range(300), chunksize=1)
    assert next(squares) == 0
    pool.close()
    pool.join()  # multiprocessing's pattern: close, join, then read
    assert list(squares) == [x * x for x in range(1, 300)]


@pytest.mark.timeout(30)
def test_a_submit_racing_close_is_answered():
    """close() from another thread can land between submit()'s state check and the
    moment the job is queued; the loop has ended by then, and the job must still be
    answered (it was left pending forever)."""
    pool = sw.Pool(1)
    backend = pool._scheduler.backend
    prepare = backend.prepare

    def close_in_between(job):
        prepare(job)
        closer = threading.Thread(target=lambda: (pool.close(), pool.join()))
        closer.start()
        closer.join(20)

    backend.prepare = close_in_between
    future = pool.submit(h.square, 3)
    with pytest.raises(PoolClosedError):
        future.result(timeout=20)


def test_context_manager_terminates_on_error():
    with pytest.raises(RuntimeError, match="leave"):
        with sw.Pool(2) as pool:
            pool.submit(h.hang_on, 3)
            raise RuntimeError("leave now")
    assert pool._scheduler.state == "terminated"


def test_stdlib_constructor_forms():
    with sw.Pool(2, h.init_worker, ("hello",)) as pool:  # multiprocessing.Pool positional
        assert set(pool.map(h.read_state, range(4))) == {"hello"}
    with sw.Pool(processes=1, initializer=h.init_worker, initargs=(5,), maxtasksperchild=3) as p:
        assert p.map(h.read_state, range(2)) == [5, 5]
    ctx = multiprocessing.get_context("spawn")
    with sw.Pool(max_workers=1, mp_context=ctx) as pool:  # ProcessPoolExecutor keywords
        assert pool.start_method == "spawn"
        assert pool.map(h.square, [3]) == [9]
    with sw.Pool(1, ctx, h.init_worker, (9,)) as pool:  # ProcessPoolExecutor positional
        assert pool.map(h.read_state, [0]) == [9]


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="'processes', 'threads', 'serial'"):
        sw.Pool(2, backend="gpu")


def test_bad_options():
    with pytest.raises(ValueError, match="workers"):
        sw.Pool(0, "threads")
    with sw.Pool(1, "threads") as pool:
        with pytest.raises(ValueError, match="on_error"):
            pool.map(h.square, [1], on_error="ignore")
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(h.square, [1], chunksize=0)
        with pytest.raises(ValueError, match="timeout"):
            pool.map(h.square, [1], timeout=-1)


def test_initializer_failure_is_reported():
    pool = sw.Pool(1, initializer=h.init_fails)
    with pytest.raises(sw.engine.InitializerError, match="initializer refused"):
        pool.map(h.square, range(3))
    pool.terminate()


@pytest.mark.parametrize("backend", ["threads", "serial"])
def test_initializer_other_backends(backend):
    with sw.Pool(2, backend, initializer=h.init_worker, initargs=("x",)) as pool:
        assert pool.map(h.read_state, range(3)) == ["x"] * 3


def test_max_tasks_per_worker_recycles_workers():
    with sw.Pool(1, max_tasks_per_worker=2) as pool:
        pids = pool.map(h.pid_of, range(6), chunksize=1)
        assert len(set(pids)) == 3
        assert pids[0] == pids[1] != pids[2]
        assert pool.map(h.square, range(5)) == [0, 1, 4, 9, 16]  # auto batches respect it


@pytest.mark.parametrize("backend", ["threads", "serial"])
def test_max_tasks_per_worker_other_backends(backend):
    with sw.Pool(2, backend, max_tasks_per_worker=3) as pool:
        assert pool.map(h.square, range(20)) == [x * x for x in range(20)]
        assert pool.map(h.square, range(5)) == [0, 1, 4, 9, 16]
        deadline = time.monotonic() + 10
        while pool._scheduler._retiring and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool._scheduler._retiring == []  # retired workers are reaped


def test_ordered_false_and_fixed_chunksize(process_pool):
    values = process_pool.map(h.square, range(100), ordered=False, chunksize=7)
    assert sorted(values) == [x * x for x in range(100)]


def test_infinite_generator_with_imap(any_pool):
    iterator = any_pool.imap(h.square, itertools.count())
    assert list(itertools.islice(iterator, 50)) == [x * x for x in range(50)]
    iterator.close()
    assert any_pool.map(h.square, range(3)) == [0, 1, 4]  # the pool is still fine


def test_input_is_consumed_lazily_with_bounded_memory(process_pool):
    pulled = itertools.count()

    def numbers():
        for i in itertools.count():
            next(pulled)
            yield i

    iterator = process_pool.imap(h.square, numbers())
    assert next(iterator) == 0
    time.sleep(0.3)  # give the scheduler time to run ahead as far as it may
    pulled_so_far = next(pulled)
    assert pulled_so_far < 5_000_000, "imap must not materialise an endless input"
    iterator.close()
    time.sleep(0.5)  # a batch being read when close() came may still finish
    settled = next(pulled)
    time.sleep(0.3)
    assert next(pulled) <= settled + 1  # closed: the input is no longer read


def test_input_iterable_error_propagates(any_pool):
    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        any_pool.map(h.square, broken())


def test_lambdas_closures_under_each_start_method():
    offset = 10
    methods = [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]
    for method in methods:
        with sw.Pool(2, start_method=method) as pool:
            assert pool.start_method == method
            assert pool.map(lambda x: x + offset, range(4)) == [10, 11, 12, 13]

            def local(x):
                return x * offset

            assert pool.map(local, [1, 2]) == [10, 20]


def test_default_start_method_is_safe(process_pool):
    expected = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    assert process_pool.start_method == expected


def test_progress_bar(process_pool, capsys):
    assert process_pool.map(h.square, range(30), progress="squaring") == [
        x * x for x in range(30)
    ]
    err = capsys.readouterr().err
    assert "squaring" in err and "30/30" in err


def test_threads_backend_runs_concurrently():
    # five items can only pass the barrier together: a serial run would time out on it
    barrier = threading.Barrier(5)

    def meet(_):
        barrier.wait(timeout=30)
        return True

    with sw.Pool(10, "threads") as pool:
        assert pool.map(meet, range(10), chunksize=1) == [True] * 10


def test_serial_backend_runs_in_the_caller():
    with sw.Pool(backend="serial") as pool:
        assert pool.workers == 1
        thread_ids = pool.map(lambda _: threading.get_ident(), range(3))
    assert set(thread_ids) == {threading.get_ident()}


def test_sw_map_default_pool_is_reused_and_recreated():
    from slicewise.engine import get_default_pool

    assert sw.map(h.square, range(5)) == [0, 1, 4, 9, 16]
    first = get_default_pool()
    assert sw.map(lambda x: -x, [1, 2]) == [-1, -2]
    assert get_default_pool() is first
    assert sw.map(h.square, [3], workers=1) == [9]
    assert get_default_pool(workers=1) is not first
    get_default_pool(workers=1).terminate()
    assert sw.map(h.square, [4], workers=1) == [16]  # a terminated pool is replaced
    assert sw.map(h.square, [2], backend="threads") == [4]
    result = sw.map(h.fail_at, range(8), on_error="skip")
    assert isinstance(result, ResultList) and len(result) == 7 and result.errors[0].index == 5


def test_cpu_count_respects_affinity_and_quota(tmp_path):
    count = sw.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert count <= len(os.sched_getaffinity(0))
    assert count >= 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_quota(tmp_path, own_path="") == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path, own_path="") is None
    nested = tmp_path / "user.slice" / "job"
    nested.mkdir(parents=True)
    (nested / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "user.slice" / "cpu.max").write_text("200000 100000\n")
    assert _cgroup_quota(tmp_path, own_path="user.slice/job") == 2.0  # the tightest one
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_quota(v1, own_path="") == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    assert _cgroup_quota(v1, own_path="") is None


def test_facade_exports():
    for name in ["Pool", "map", "cpu_count", "TaskError", "WorkerLostError",
                 "TaskTimeoutError", "SharedArray", "shared_array"]:
        assert getattr(sw, name) is getattr(sw.engine, name)
    assert issubclass(sw.Pool, cf.Executor)
    assert issubclass(sw.WorkerLostError, sw.TaskError)
    assert issubclass(sw.TaskTimeoutError, TimeoutError)


@pytest.mark.parametrize("backend", ["processes", "threads"])
def test_a_worker_may_run_a_pool_of_its_own(process_pool, backend):
    import functools

    fn = functools.partial(h.nested_map, backend=backend)
    assert process_pool.map(fn, [3, 4]) == [5, 14]


def test_waiting_inside_a_callback_is_refused(process_pool):
    errors = []

    def callback(_):
        try:
            process_pool.map(h.square, [1])
        except RuntimeError as exc:
            errors.append(exc)

    # slow enough that the callback is registered first and runs on the scheduler thread
    process_pool.apply_async(h.sleep_then, (2, 0.3), callback=callback).get(30)
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "deadlock" in str(errors[0])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", ["apply", "future", "imap", "map_async"])
def test_every_kind_of_wait_inside_a_callback_is_refused(process_pool, wait):
    """Callbacks run on the scheduler thread; a callback that waits there for its own
    pool's work waits forever (apply/get and Future.result did)."""
    outcome = []
    waits = {
        "apply": lambda: process_pool.apply(h.square, (2,)),
        "future": lambda: process_pool.submit(h.square, 2).result(),
        "imap": lambda: list(process_pool.imap(h.square, range(3))),
        "map_async": lambda: process_pool.map_async(h.square, range(3)).get(),
    }

    def callback(_):
        try:
            outcome.append(waits[wait]())
        except RuntimeError as exc:
            outcome.append(exc)

    process_pool.apply_async(h.sleep_then, (2, 0.3), callback=callback).get(30)
    deadline = time.monotonic() + 20
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcome and "deadlock" in str(outcome[0])
    assert process_pool.map(h.square, range(3)) == [0, 1, 4]


def test_many_threads_share_one_pool(any_pool):
    results: dict[int, list] = {}

    def caller(k):
        results[k] = any_pool.map(h.add, range(200), [k] * 200)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {k: [x + k for x in range(200)] for k in range(4)}


def test_submit_bursts_share_a_pickle_but_later_calls_see_new_state(process_pool):
    box = [1]

    def add_box(x):
        return x + box[0]

    assert [f.result(30) for f in [process_pool.submit(add_box, i) for i in range(20)]] == [
        i + 1 for i in range(20)
    ]
    box[0] = 100  # a notebook user changes state between two calls
    assert process_pool.submit(add_box, 1).result(30) == 101
    assert process_pool.map(add_box, [1]) == [101]


@pytest.mark.timeout(60)
def test_threads_backend_never_misses_a_wakeup():
    """Liveness under many small calls. Thread workers wake the scheduler through a pipe;
    a lost wake-up (one landing while the scheduler drains the pipe) leaves it asleep
    until its one-second idle tick at every batch, and this loop would then run into the
    timeout. The race is narrow: this loop does not always hit it; the same workload in
    a longer stress run did, before the fix (drain first, then clear the flag)."""
    import random

    rng = random.Random(7)
    with sw.Pool(2, "threads") as pool:
        for _ in range(300):
            count = rng.randint(0, 300)
            bad = {rng.randint(0, 299) for _ in range(rng.randint(0, 12))}
            items = [(x, x in bad) for x in range(count)]
            result = pool.map(h.fail_if_flagged, items, on_error="skip",
                              chunksize=rng.choice(["auto", 1, 7]))
            assert result == [x for x in range(count) if x not in bad]
            collected = pool.map(h.fail_if_flagged, items, on_error="collect")
            assert len(collected.errors) == len({b for b in bad if b < count})


def test_process_workers_get_their_share_of_cores_for_native_thread_pools():
    # with every worker's BLAS/OpenMP sized to the whole machine, N workers would run N x
    # cores threads; a variable set before the pool's server started is left as it was
    expected = str(max(1, sw.cpu_count() // 2))
    with sw.Pool(2) as pool:
        seen = set(pool.map(h.native_threads_seen, range(4), chunksize=1))
    for blas, omp in seen:
        assert blas == os.environ.get("OPENBLAS_NUM_THREADS", expected)
        assert omp == os.environ.get("OMP_NUM_THREADS", expected)
