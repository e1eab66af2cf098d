"""Every failure kind at every point, on real processes: the item is named, the rest of
the call is right, and the pool keeps working."""

from __future__ import annotations

import functools
import pickle

import engine_helpers as h
import pytest

import slicewise as sw
from slicewise.engine import Failure, ResultList

pytestmark = pytest.mark.timeout(90)

DEATHS = ["exit", "sigkill", "sigsegv"]
EXPECTED_EXIT = {"exit": (7, None), "sigkill": (-9, "SIGKILL"), "sigsegv": (-11, "SIGSEGV")}
ITEMS = list(range(12))
BAD = 5


def described(error: BaseException) -> str:
    """What a traceback shows of an exception: its message and its PEP 678 notes."""
    return "\n".join([str(error), *getattr(error, "__notes__", [])])


def check_collected(result, stage, kind, how=None, factor=1):
    assert isinstance(result, ResultList)
    assert [r for i, r in enumerate(result) if i != BAD] == [x * factor for x in ITEMS if x != BAD]
    failure = result[BAD]
    assert isinstance(failure, Failure)
    assert result.errors == [failure]
    assert (failure.index, failure.kind, failure.stage) == (BAD, kind, stage)
    if how in EXPECTED_EXIT:
        assert (failure.exitcode, failure.signal) == EXPECTED_EXIT[how]


@pytest.mark.parametrize("how", ["raise", *DEATHS])
def test_failure_in_the_function(process_pool, how):
    fn = functools.partial(h.fail_at, bad=BAD, how=how)
    result = process_pool.map(fn, ITEMS, chunksize=4, on_error="collect")
    check_collected(result, "call", "exception" if how == "raise" else "worker_lost", how, 2)
    expected = ValueError if how == "raise" else sw.WorkerLostError
    with pytest.raises(expected) as info:
        process_pool.map(fn, ITEMS, chunksize=4)
    error = info.value
    assert error.index == BAD and error.item_repr == repr(BAD)
    assert f"item {BAD} ({BAD})" in described(error)
    if how == "raise":  # the function's own exception, the worker's traceback as its cause
        assert type(error) is ValueError and "boom from the worker" in str(error)
        assert "boom from the worker" in error.worker_traceback
        assert "boom from the worker" in str(error.__cause__)
        assert "fail_at" in error.worker_traceback
    else:
        assert (error.exitcode, error.signal) == EXPECTED_EXIT[how]
        assert (error.signal or f"exit code {error.exitcode}") in str(error)
    skipped = process_pool.map(fn, ITEMS, chunksize=4, on_error="skip")
    assert skipped == [x * 2 for x in ITEMS if x != BAD]
    assert [f.index for f in skipped.errors] == [BAD]
    assert process_pool.map(h.square, range(4)) == [0, 1, 4, 9]


def test_failure_pickling_arguments_in_the_parent(process_pool):
    items = [*range(BAD), h.RefusesPickling(), *range(BAD + 1, 12)]
    result = process_pool.map(h.identity, items, chunksize=4, on_error="collect")
    check_collected(result, "pickling_args", "pickling")
    assert "refuses to be pickled" in str(result[BAD].exception)
    with pytest.raises(Exception, match="refuses to be pickled") as info:
        process_pool.map(h.identity, items)
    assert "pickling the arguments in the parent" in described(info.value)
    assert info.value.index == BAD


@pytest.mark.parametrize("how", ["raise", *DEATHS])
def test_failure_unpickling_arguments_in_the_worker(process_pool, how):
    items = [*range(BAD), h.ExplodesOnUnpickle(how), *range(BAD + 1, 12)]
    result = process_pool.map(h.identity, items, chunksize=4, on_error="collect")
    check_collected(result, "unpickling_args", "pickling" if how == "raise" else "worker_lost", how)
    expected = sw.WorkerLostError if how in DEATHS else ValueError
    with pytest.raises(expected) as info:
        process_pool.map(h.identity, items, chunksize=4)
    assert info.value.index == BAD
    assert "unpickling the arguments in the worker" in described(info.value)


@pytest.mark.parametrize("how", ["raise", *DEATHS])
def test_failure_pickling_the_result_in_the_worker(process_pool, how):
    fn = functools.partial(h.result_that_fails_to_pickle, bad=BAD, how=how)
    result = process_pool.map(fn, ITEMS, chunksize=4, on_error="collect")
    check_collected(result, "pickling_result", "pickling" if how == "raise" else "worker_lost", how)
    with pytest.raises(Exception) as info:
        process_pool.map(fn, ITEMS, chunksize=4)
    assert info.value.index == BAD
    assert "pickling the result in the worker" in described(info.value)


def test_failure_unpickling_the_result_in_the_parent(process_pool):
    fn = functools.partial(h.result_that_fails_to_unpickle, bad=BAD)
    result = process_pool.map(fn, ITEMS, chunksize=4, on_error="collect")
    check_collected(result, "unpickling_result", "pickling")
    with pytest.raises(ValueError) as info:
        process_pool.map(fn, ITEMS, chunksize=4)
    assert info.value.index == BAD
    assert "unpickling the result in the parent" in described(info.value)


def test_exit_in_one_of_a_thousand_items(process_pool):
    fn = functools.partial(h.fail_at, bad=637, how="exit")
    with pytest.raises(sw.WorkerLostError) as info:
        process_pool.map(fn, range(1000))
    assert info.value.index == 637 and info.value.exitcode == 7
    assert "item 637 (637)" in str(info.value) and "exit code 7" in str(info.value)
    result = process_pool.map(fn, range(1000), on_error="skip")
    assert result == [x * 2 for x in range(1000) if x != 637]
    assert [(f.index, f.kind) for f in result.errors] == [(637, "worker_lost")]


def test_several_deaths_in_one_call(process_pool):
    def deadly(x):
        if x % 100 == 13:
            h.die("sigkill" if x % 200 == 13 else "exit")
        return x

    result = process_pool.map(deadly, range(500), on_error="skip")
    assert result == [x for x in range(500) if x % 100 != 13]
    assert [f.index for f in result.errors] == [13, 113, 213, 313, 413]


def test_submit_worker_death_raises_worker_lost(process_pool):
    future = process_pool.submit(h.die, "sigkill")
    with pytest.raises(sw.WorkerLostError) as info:
        future.result(timeout=30)
    assert info.value.signal == "SIGKILL"
    assert process_pool.submit(h.square, 7).result(timeout=30) == 49


def test_imap_reports_errors_as_it_goes(any_pool):
    fn = functools.partial(h.fail_at, bad=3)
    iterator = any_pool.imap(fn, range(8), on_error="skip")
    assert list(iterator) == [x * 2 for x in range(8) if x != 3]
    assert [f.index for f in iterator.errors] == [3]
    with pytest.raises(ValueError) as info:
        list(any_pool.imap(fn, range(8)))
    assert info.value.index == 3
    collected = list(any_pool.imap_unordered(fn, range(8), on_error="collect"))
    assert sum(isinstance(v, Failure) for v in collected) == 1


def test_same_semantics_on_every_backend(any_pool):
    fn = functools.partial(h.fail_at, bad=BAD)
    result = any_pool.map(fn, ITEMS, on_error="collect")
    check_collected(result, "call", "exception", factor=2)
    with pytest.raises(ValueError) as info:
        any_pool.map(fn, ITEMS)
    assert info.value.index == BAD and type(info.value) is ValueError


def test_retries(any_pool, tmp_path):
    items = [(str(tmp_path), i) for i in range(6)]
    assert any_pool.map(h.flaky, items, retries=1) == list(range(6))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(RuntimeError, match="first attempt at 0"):
        any_pool.map(h.flaky, [(str(fresh), 0)], retries=0)


def test_retries_after_worker_death(process_pool, tmp_path):
    marker = tmp_path / "died-once"

    def dies_once(x):
        if x == 2 and not marker.exists():
            marker.touch()
            h.die("sigkill")
        return x

    assert process_pool.map(dies_once, range(5), retries=1) == list(range(5))


@pytest.mark.parametrize("backend", ["processes", "threads", "serial"])
def test_per_item_timeout(backend):
    with sw.Pool(2, backend) as pool:
        result = pool.map(h.hang_on, range(6), timeout=0.5, on_error="collect")
        assert [r for i, r in enumerate(result) if i != 3] == [0, 1, 2, 4, 5]
        assert (result[3].kind, result[3].index, result[3].timeout) == ("timeout", 3, 0.5)
        with pytest.raises(sw.TaskTimeoutError) as info:
            pool.map(h.hang_on, range(6), timeout=0.5)
        assert info.value.index == 3 and "timeout of 0.5 s" in str(info.value)
        assert pool.map(h.square, range(3), timeout=5) == [0, 1, 4]


def test_task_error_pickles():
    failure = Failure(index=3, item_repr="'x'", kind="worker_lost", exitcode=-9, signal="SIGKILL")
    error = failure.to_error()
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is sw.WorkerLostError
    assert (clone.index, clone.exitcode, clone.signal) == (3, -9, "SIGKILL")


def test_no_shared_memory_leaks_after_crashes():
    pool = sw.Pool(2)
    prefix = pool._scheduler.backend.prefix

    def big_or_crash(i):
        if i == 7:
            h.die("sigkill")
        return h.big_array(i)

    result = pool.map(big_or_crash, range(12), on_error="skip")
    assert [float(a[0]) for a in result] == [float(i) for i in range(12) if i != 7]
    del result
    pool.terminate()
    assert h.shm_leftovers(prefix) == []


def test_death_among_tiny_items_is_pinned_exactly(process_pool):
    """Items of microseconds are tracked per window of items; the window is re-run one
    by one, so the culprit is still named exactly."""
    fn = functools.partial(h.fail_at, bad=31_337, how="exit")
    with pytest.raises(sw.WorkerLostError) as info:
        process_pool.map(fn, range(60_000))
    assert info.value.index == 31_337
    result = process_pool.map(fn, range(60_000), on_error="skip")
    assert len(result) == 59_999 and result[31_337] == 31_338 * 2
    assert [f.index for f in result.errors] == [31_337]


@pytest.mark.parametrize("backend", ["processes", "threads", "serial"])
def test_random_failures_are_reported_exactly(backend):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    with sw.Pool(2, backend) as pool:

        @settings(max_examples=15, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.integers(0, 300), st.sets(st.integers(0, 299), max_size=12),
               st.sampled_from(["auto", 1, 7]))
        def check(count, bad, chunksize):
            bad = {b for b in bad if b < count}
            items = [(x, x in bad) for x in range(count)]
            result = pool.map(h.fail_if_flagged, items, on_error="skip", chunksize=chunksize)
            assert result == [x for x in range(count) if x not in bad]
            assert [f.index for f in result.errors] == sorted(bad)
            collected = pool.map(h.fail_if_flagged, items, on_error="collect")
            assert [isinstance(v, Failure) for v in collected] == [x in bad for x in range(count)]

        check()


def test_failure_unpickling_the_function_in_the_worker(process_pool):
    fn = h.FunctionThatWillNotUnpickle()
    result = process_pool.map(fn, range(6), chunksize=2, on_error="collect")
    assert all(isinstance(f, Failure) for f in result)
    assert {(f.kind, f.stage) for f in result} == {("pickling", "unpickling_function")}
    assert [f.index for f in result.errors] == list(range(6))
    with pytest.raises(ValueError) as info:
        process_pool.map(fn, range(6))
    assert "unpickling the function in the worker" in described(info.value)
    assert process_pool.map(h.square, range(3)) == [0, 1, 4]


def test_a_function_that_cannot_be_pickled_fails_at_the_call(process_pool):
    import threading

    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match="cannot send the function"):
        process_pool.map(lambda x: (lock, x), range(3))


def test_workers_that_cannot_start_break_the_pool_clearly():
    """A worker that dies before it reads any work is the environment's fault, not an
    item's: after a few in a row the call fails with a clear error instead of looping."""
    pool = sw.Pool(1, initializer=h.die, initargs=("exit",))  # os._exit while starting
    with pytest.raises(RuntimeError, match="exited while starting"):
        pool.map(h.square, range(10))
    pool.terminate()


@pytest.mark.timeout(30)
def test_imap_retries_are_not_held_back_by_the_stream_limit(process_pool, tmp_path):
    """One batch whose every other item fails once settles as many separate runs; the
    ordered stream then holds more segments than it may run ahead, while the item it
    waits for sits in the retry queue. Retries must run anyway (this hung)."""
    items = [(str(tmp_path), x) for x in range(40)]
    result = list(process_pool.imap(h.flaky_if_even, items, retries=1, chunksize=40))
    assert result == list(range(40))
