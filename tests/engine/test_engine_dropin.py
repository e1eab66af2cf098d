"""Drop-in means drop-in: code written for `multiprocessing.Pool` and
`concurrent.futures.ProcessPoolExecutor`, exceptions included, runs unchanged on
`sw.Pool`. Each test is written the way a user of the stdlib pool writes it, and most run
against the stdlib pool too, to prove the expectation is the stdlib's own."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import slicewise as sw

pytestmark = pytest.mark.timeout(120)

CTX = multiprocessing.get_context("forkserver")


def fails_at_3(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x * 2


def add(a, b):
    if a == 3:
        raise ValueError("bad pair")
    return a + b


def slow_low_fast_high(x):
    """Items 3 and 5 fail; 3 only after 5 has long failed."""
    if x == 3:
        time.sleep(0.4)
        raise KeyError(3)
    if x == 5:
        raise KeyError(5)
    return x


def square(x):
    return x * x


def broken_input(n):
    yield from range(n)
    raise LookupError("the input broke")


# ------------------------------------------------------------ pools under test


def stdlib_pool():
    return CTX.Pool(2)


def sw_processes():
    return sw.Pool(2)


def sw_threads():
    return sw.Pool(2, backend="threads")


def sw_serial():
    return sw.Pool(backend="serial")


MP_POOLS = [stdlib_pool, sw_processes, sw_threads, sw_serial]
SW_POOLS = [sw_processes, sw_threads, sw_serial]


def ids(factories):
    return [f.__name__ for f in factories]


def check_own_exception(error, stdlib):
    assert type(error) is ValueError  # of its own class, not a wrapper
    assert error.__cause__ is not None or not stdlib  # the worker's traceback
    if not stdlib:  # slicewise names the item, in a note and attributes
        assert error.index == 3 and error.item_repr in ("3", "(3, 10)")
        assert any("item 3" in note for note in error.__notes__)


# ------------------------------------------------------------ the map family


@pytest.mark.parametrize("make_pool", MP_POOLS, ids=ids(MP_POOLS))
def test_except_valueerror_around_every_map_call(make_pool):
    stdlib = make_pool is stdlib_pool
    with make_pool() as pool:
        calls = {
            "map": lambda: pool.map(fails_at_3, range(8)),
            "map_async": lambda: pool.map_async(fails_at_3, range(8)).get(60),
            "imap": lambda: list(pool.imap(fails_at_3, range(8))),
            "imap_unordered": lambda: list(pool.imap_unordered(fails_at_3, range(8))),
            "starmap": lambda: pool.starmap(add, [(i, 10) for i in range(8)]),
            "starmap_async": lambda: pool.starmap_async(add, [(i, 10) for i in range(8)]).get(60),
            "apply": lambda: pool.apply(fails_at_3, (3,)),
            "apply_async": lambda: pool.apply_async(fails_at_3, (3,)).get(60),
        }
        for name, call in calls.items():
            try:
                call()
            except ValueError as error:
                if name not in ("apply", "apply_async"):
                    check_own_exception(error, stdlib)
            else:
                pytest.fail(f"{name} did not raise")
        assert pool.map(square, range(4)) == [0, 1, 4, 9]  # still usable


@pytest.mark.parametrize("make_pool", [cf.ProcessPoolExecutor, sw_processes],
                         ids=["ProcessPoolExecutor", "sw.Pool"])
def test_executor_map_and_submit_raise_the_functions_exception(make_pool):
    stdlib = make_pool is cf.ProcessPoolExecutor
    with (make_pool(2, mp_context=CTX) if stdlib else make_pool()) as executor:
        with pytest.raises(ValueError) as info:
            list(executor.map(fails_at_3, range(8)))
        check_own_exception(info.value, stdlib)
        with pytest.raises(ValueError):
            list(executor.map(add, range(8), [10] * 8))  # several iterables, zipped
        with pytest.raises(ValueError, match="bad item 3"):
            executor.submit(fails_at_3, 3).result(timeout=60)


def test_sw_map_raises_the_functions_exception():
    try:
        sw.map(fails_at_3, range(8))
    except ValueError as error:
        check_own_exception(error, stdlib=False)
        assert "bad item 3" in error.worker_traceback
    else:
        pytest.fail("sw.map did not raise")


@pytest.mark.parametrize("make_pool", SW_POOLS, ids=ids(SW_POOLS))
def test_map_raises_the_lowest_failing_index(make_pool):
    """Item 5 fails at once, item 3 much later: map still reports item 3, every time,
    from a cold pool and a warm one (multiprocessing reports whichever finished first)."""
    for _ in range(2):
        with make_pool() as pool:
            for chunksize in (1, 2, "auto"):
                with pytest.raises(KeyError) as info:
                    pool.map(slow_low_fast_high, range(8), chunksize=chunksize)
                assert info.value.args == (3,) and info.value.index == 3


@pytest.mark.parametrize("make_pool", [cf.ProcessPoolExecutor, sw_processes],
                         ids=["ProcessPoolExecutor", "sw.Pool"])
def test_executor_map_reports_the_first_failure_in_input_order(make_pool):
    stdlib = make_pool is cf.ProcessPoolExecutor
    with (make_pool(2, mp_context=CTX) if stdlib else make_pool()) as executor:
        with pytest.raises(KeyError) as info:
            list(executor.map(slow_low_fast_high, range(8)))
        assert info.value.args == (3,)


@pytest.mark.parametrize("make_pool", MP_POOLS, ids=ids(MP_POOLS))
def test_imap_yields_every_result_before_the_failure(make_pool):
    with make_pool() as pool:
        got = []
        with pytest.raises(KeyError) as info:
            for value in pool.imap(slow_low_fast_high, range(8), 1):
                got.append(value)
        assert got == [0, 1, 2] and info.value.args == (3,)
        got = []
        with pytest.raises(ValueError):
            for value in pool.imap(fails_at_3, range(100)):
                got.append(value)
        assert got == [0, 2, 4]


@pytest.mark.parametrize("make_pool", MP_POOLS, ids=ids(MP_POOLS))
def test_an_input_that_raises_surfaces_at_its_position(make_pool):
    with make_pool() as pool:
        got = []
        with pytest.raises(LookupError, match="the input broke"):
            for value in pool.imap(square, broken_input(5)):
                got.append(value)
        assert got == [0, 1, 4, 9, 16]
        with pytest.raises(LookupError, match="the input broke"):
            pool.map(square, broken_input(5))
        if make_pool is not stdlib_pool:
            with pytest.raises(LookupError) as info:
                list(pool.imap(square, broken_input(300), chunksize=7))
            assert "position 300" in info.value.__notes__[-1]
        assert pool.map(square, range(3)) == [0, 1, 4]


@pytest.mark.parametrize("make_pool", SW_POOLS, ids=ids(SW_POOLS))
def test_a_failure_before_the_input_broke_wins(make_pool):
    def both():
        yield from range(6)  # item 3 fails, then the input fails at position 6
        raise LookupError("the input broke")

    with make_pool() as pool:
        with pytest.raises(ValueError):
            pool.map(fails_at_3, both())
        with pytest.raises(LookupError):  # collect: the input's error still ends the call
            pool.map(fails_at_3, both(), on_error="collect")


# ------------------------------------------------------------ a pool's lifetime


@pytest.mark.parametrize("make_pool", [stdlib_pool, sw_processes, sw_threads],
                         ids=["multiprocessing.Pool", "sw.Pool", "sw.Pool-threads"])
def test_a_closed_pool_raises_valueerror(make_pool):
    pool = make_pool()
    pool.close()
    with pytest.raises(ValueError):
        pool.map(square, range(3))
    with pytest.raises(ValueError):
        pool.apply_async(square, (2,))
    with pytest.raises(ValueError):
        with pool:
            pass
    pool.join()
    pool = make_pool()
    pool.terminate()
    with pytest.raises(ValueError):
        pool.imap(square, range(3))
    with pytest.raises(ValueError):
        with pool:
            pass
    pool.join()


@pytest.mark.parametrize("make_pool", [cf.ProcessPoolExecutor, sw_processes],
                         ids=["ProcessPoolExecutor", "sw.Pool"])
def test_submit_after_shutdown_raises_runtimeerror(make_pool):
    executor = make_pool(2, mp_context=CTX) if make_pool is cf.ProcessPoolExecutor else make_pool()
    assert executor.submit(square, 3).result(timeout=60) == 9
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(square, 3)
    with pytest.raises(RuntimeError):
        executor.map(square, range(3))


@pytest.mark.parametrize("make_pool", [stdlib_pool, sw_processes],
                         ids=["multiprocessing.Pool", "sw.Pool"])
def test_a_running_pool_dropped_warns(make_pool):
    pool = make_pool()
    assert pool.map(square, range(3)) == [0, 1, 4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_a_closed_pool_dropped_does_not_warn():
    pool = sw.Pool(1)
    pool.map(square, range(3))
    pool.close()
    pool.join()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pool
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ------------------------------------------------------------ how the function travels


SCRIPT = """
import sys
import threading

LOCK = threading.Lock()          # cloudpickle cannot send this by value


def locked_double(x):
    with LOCK:
        return 2 * x


class Holder:
    def __init__(self):
        self.lock = threading.Lock()
        self.factor = 3

    def __getstate__(self):      # the object drops its lock when pickled
        return {"factor": self.factor}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock())

    def triple(self, x):
        with self.lock:
            return self.factor * x


if __name__ == "__main__":
    if sys.argv[1] == "stdlib":
        import multiprocessing
        pool = multiprocessing.get_context("spawn").Pool(2)
    else:
        import slicewise as sw
        pool = sw.Pool(2)
    with pool:
        print(pool.map(locked_double, range(5)))
        print(pool.map(Holder().triple, range(5)))
        print(pool.map(lambda x: x + 1, range(3)) if sys.argv[1] != "stdlib" else [1, 2, 3])
"""


@pytest.mark.parametrize("which", ["stdlib", "slicewise"])
def test_a_function_only_picklable_by_reference_is_sent_by_reference(tmp_path, which):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script), which], capture_output=True,
                          text=True, timeout=90, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[0, 2, 4, 6, 8]", "[0, 3, 6, 9, 12]", "[1, 2, 3]"]


def test_a_function_from_an_interactive_main_that_will_not_pickle_says_so():
    code = textwrap.dedent("""
        import threading, slicewise as sw, pickle
        LOCK = threading.Lock()
        def f(x):
            with LOCK:
                return x
        try:
            sw.Pool(1).map(f, range(3))
        except pickle.PicklingError as e:
            print("refused:", "interactive __main__" in str(e))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90, env=env)
    assert "refused: True" in done.stdout, done.stdout + done.stderr
