"""A sw.Pool as dask's scheduler: seed 003's delayed graph, arrays, errors and crashes."""

from __future__ import annotations

import os
import time

import dask
import dask.array as da
import numpy as np
import pytest
from dask import delayed

import slicewise as sw
from slicewise.integrations.dask import pool_scheduler

pytestmark = pytest.mark.timeout(90)


def inc(x):
    time.sleep(0.2)
    return x + 1


def add(x, y):
    time.sleep(0.2)
    return x + y


def timed_inc(x):
    start = time.monotonic()
    time.sleep(0.4)
    return x + 1, os.getpid(), start, time.monotonic()


def test_seed_delayed_graph_runs_on_the_pool(pool):
    x = delayed(inc)(1)
    y = delayed(inc)(2)
    z = delayed(add)(x, y)
    assert z.compute(scheduler=pool) == 5
    assert dask.compute(z, scheduler=pool) == (5,)
    with dask.config.set(scheduler=pool_scheduler(pool)):
        assert z.compute() == 5


def test_independent_tasks_run_in_worker_processes_at_once(pool):
    a, b = dask.compute(delayed(timed_inc)(1), delayed(timed_inc)(2), scheduler=pool)
    assert (a[0], b[0]) == (2, 3)
    assert os.getpid() not in (a[1], b[1])
    # both were handed out before either finished: their running intervals overlap
    assert a[2] < b[3] and b[2] < a[3]


def test_array_reduction_on_the_pool(pool):
    x = da.arange(100_000, chunks=10_000)
    assert int(x.sum().compute(scheduler=pool)) == int(np.arange(100_000).sum())


def test_task_error_reaches_the_caller_with_its_cause(pool):
    def fails(v):
        raise KeyError(f"no calibration for {v}")

    with pytest.raises(Exception) as info:
        delayed(fails)("frame 7").compute(scheduler=pool)
    chain = []
    error = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, KeyError) and "frame 7" in str(e) for e in chain)
    assert delayed(inc)(41).compute(scheduler=pool) == 42  # the pool still works


def test_worker_crash_raises_instead_of_hanging(pool):
    def dies(v):
        os._exit(3)

    with pytest.raises(sw.WorkerLostError):
        delayed(dies)(1).compute(scheduler=pool)
    assert delayed(inc)(1).compute(scheduler=pool) == 2  # replaced worker, pool still works
