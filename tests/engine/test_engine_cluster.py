"""The cluster backends on real clusters: a Dask `LocalCluster` (2 worker processes, one
thread each) and a local Ray (`ray.init(num_cpus=2)`). The same user code as on the
processes backend, with the same semantics: input order, the function's own exception
at the lowest failing index, on_error, a worker-killing item named, the pool still
usable afterwards."""

from __future__ import annotations

import functools
import os

import engine_helpers as h
import pytest

import slicewise as sw
from slicewise.engine import Failure

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

distributed = pytest.importorskip("distributed")


@pytest.fixture(params=["dask", "ray"])
def cluster_pool(request):
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    else:
        request.getfixturevalue("ray_session")
    pool = sw.Pool(backend=request.param)
    yield pool
    pool.terminate()


def kills_its_worker(x):
    if x == 3:
        os._exit(1)
    return x


def test_map_family_in_input_order(cluster_pool):
    assert cluster_pool.workers == 2  # the cluster's CPUs
    assert cluster_pool.map(lambda x: x * x, range(2000)) == [x * x for x in range(2000)]
    assert list(cluster_pool.imap(h.square, range(50))) == [x * x for x in range(50)]
    assert sorted(cluster_pool.imap_unordered(h.square, range(50))) == [x * x for x in range(50)]
    assert cluster_pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert cluster_pool.submit(divmod, 7, 2).result(timeout=60) == (3, 1)
    assert cluster_pool.map_async(h.square, range(5)).get(60) == [0, 1, 4, 9, 16]


def test_the_functions_own_exception_at_the_lowest_index(cluster_pool):
    fn = functools.partial(h.fail_at, bad=7)
    try:
        cluster_pool.map(fn, range(40))
    except ValueError as error:  # the function's own class, as on the processes backend
        assert error.index == 7 and "boom from the worker" in error.worker_traceback
    else:
        pytest.fail("no ValueError")
    got = []
    with pytest.raises(ValueError):
        for value in cluster_pool.imap(fn, range(40), chunksize=1):
            got.append(value)
    assert got == [x * 2 for x in range(7)]
    with pytest.raises(ValueError):
        cluster_pool.submit(fn, 7).result(timeout=60)


def test_on_error_skip_and_collect(cluster_pool):
    fn = functools.partial(h.fail_at, bad=5)
    skipped = cluster_pool.map(fn, range(12), on_error="skip")
    assert skipped == [x * 2 for x in range(12) if x != 5]
    assert [f.index for f in skipped.errors] == [5]
    collected = cluster_pool.map(fn, range(12), on_error="collect")
    assert isinstance(collected[5], Failure) and collected[5].kind == "exception"


def test_an_item_that_kills_its_worker_is_named_and_the_pool_survives(cluster_pool):
    with pytest.raises(sw.WorkerLostError) as info:
        cluster_pool.map(kills_its_worker, range(8), chunksize=4)
    assert info.value.index == 3
    kept = cluster_pool.map(kills_its_worker, range(8), on_error="skip")
    assert kept == [0, 1, 2, 4, 5, 6, 7]
    assert cluster_pool.map(h.square, range(4)) == [0, 1, 4, 9]


def test_per_item_timeouts_as_on_the_processes_backend(cluster_pool):
    # more in test_cluster_timeout.py
    with pytest.raises(sw.TaskTimeoutError) as info:
        cluster_pool.map(h.hang_on, range(6), timeout=0.5)
    assert info.value.index == 3 and "timeout of 0.5 s" in str(info.value)


def test_the_initializer_runs_on_the_cluster(dask_client):
    with sw.Pool(backend="dask", initializer=h.init_worker, initargs=(42,)) as pool:
        assert pool.map(h.read_state, range(6)) == [42] * 6


def test_dask_by_address_and_sw_map(dask_client):
    address = dask_client.scheduler.address
    with sw.Pool(backend="dask", client=address) as pool:
        assert pool.map(h.square, range(10)) == [x * x for x in range(10)]
    assert sw.map(h.square, range(10), backend="dask") == [x * x for x in range(10)]
    with pytest.raises(ValueError, match="client="):
        sw.Pool(2, backend="processes", client=address)
