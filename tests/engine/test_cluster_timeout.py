"""Per-item `timeout=` on the cluster backends (worker.run_timed_remote): the same
semantics as the processes backend (a TaskTimeoutError with the item's index, the first
in input order under on_error="raise"; skip; collect), on a real Dask LocalCluster and a
local Ray. The task runs its items in a helper thread it watches; an item past its
timeout is reported, its thread abandoned and asked to stop (pure Python stops at once)."""

from __future__ import annotations

import threading
import time

import engine_helpers as h
import pytest

import slicewise as sw
from slicewise.engine.worker import MODE_ONE, run_timed_remote

pytestmark = [pytest.mark.timeout(120)]


def spin(x, bad=(2,), seconds=30.0):
    """Pure Python busy work: an asynchronous exception stops it at once."""
    if x in bad:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    return x


def spin_two(x):
    return spin(x, bad=(2, 5))


def fail_or_spin(x):
    if x == 1:
        raise ValueError("one")
    return spin(x, bad=(4,))


def timed_threads(_=None) -> int:
    return sum(t.name == "slicewise-timed-items" for t in threading.enumerate())


def test_the_task_reports_the_late_item_and_stops_its_thread():
    values, failures, _spent = run_timed_remote(fail_or_spin, MODE_ONE, list(range(6)), 0.3)
    assert values == [0, None, 2, 3, None, 5]
    assert [f[:2] for f in failures] == [(1, "call"), (4, "timeout")]
    deadline = time.monotonic() + 10
    while timed_threads() and time.monotonic() < deadline:  # bounded: asked to stop
        time.sleep(0.01)
    assert timed_threads() == 0  # the spinning item's thread stopped, not abandoned alive


@pytest.fixture(params=["dask", "ray"])
def cluster_pool(request):
    if request.param == "dask":
        pytest.importorskip("distributed")
        request.getfixturevalue("dask_client")
    else:
        pytest.importorskip("ray")
        request.getfixturevalue("ray_session")
    pool = sw.Pool(backend=request.param)
    yield pool
    pool.terminate()


@pytest.mark.slow
def test_per_item_timeout_on_a_cluster(cluster_pool):
    result = cluster_pool.map(spin, range(6), timeout=0.5, on_error="collect")
    assert [r for i, r in enumerate(result) if i != 2] == [0, 1, 3, 4, 5]
    assert (result[2].kind, result[2].index, result[2].timeout) == ("timeout", 2, 0.5)
    with pytest.raises(sw.TaskTimeoutError) as info:  # an item asleep in C: abandoned
        cluster_pool.map(h.hang_on, range(6), timeout=0.5)
    assert info.value.index == 3 and "timeout of 0.5 s" in str(info.value)
    with pytest.raises(sw.TaskTimeoutError) as info:  # the first in input order
        cluster_pool.map(spin_two, range(8), timeout=0.5, chunksize=1)
    assert info.value.index == 2
    assert cluster_pool.map(spin, range(6), timeout=0.5, on_error="skip") == [0, 1, 3, 4, 5]
    assert cluster_pool.map(h.square, range(3), timeout=5) == [0, 1, 4]


@pytest.mark.slow
def test_a_late_python_item_stops_on_the_dask_worker(dask_client):
    # (an item asleep in C, as hang_on's of another test, ends only when its sleep does)
    before = sum(dask_client.run(timed_threads).values())
    with sw.Pool(backend="dask", client=dask_client) as pool:
        assert pool.map(spin, range(4), timeout=0.5, on_error="skip") == [0, 1, 3]
    deadline = time.monotonic() + 30
    while sum(dask_client.run(timed_threads).values()) > before:
        assert time.monotonic() < deadline, "the late item's thread did not stop"
        time.sleep(0.1)
