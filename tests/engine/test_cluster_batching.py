"""Batching on the cluster backends: a function the pool has run before starts from what
that call measured (batching.SizerMemory), so trivial items go out in batches from the
first one instead of one per task; a new function's first tasks take their share of the
input with a time budget and hand back a prefix, the rest re-sized by what it measured;
the semantics stay: input order, the first error in input order, the item that kills its
worker named. Real clusters: a
Dask `LocalCluster` (2 worker processes, one thread each) and a local Ray (2 CPUs)."""

from __future__ import annotations

import os

import pytest

import slicewise as sw
from slicewise.engine import Failure
from slicewise.engine.batching import BatchSizer, SizerMemory

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

KILLER = -1  # the item that makes its worker process exit


def add_one(x):
    if x == KILLER:
        os._exit(1)
    return x + 1


def first_batches(report) -> list[int]:
    """Sizes of the batches sent first to each slot, in the order they started."""
    records = sorted(report.records, key=lambda r: r.t0)
    return [r.size for r in records[:2]]


def test_a_new_function_is_measured_then_the_next_call_starts_batched():
    memory = SizerMemory(size=2)
    first = BatchSizer(2)
    memory.seed(b"f", first)
    assert first.next_size(10_000) == 1  # nothing known yet: one item, to measure
    first.observe(100, 100e-6)  # 1 us per item
    first.observe_overhead(0.010)  # a 10 ms round trip
    second = BatchSizer(2)
    memory.seed(b"f", second)
    # 10,000 items are 10 ms of work, under one round trip: one batch
    assert second.next_size(10_000) == 10_000
    # work of 1 ms per item: a batch aims at 4 round trips, within remaining/(2 workers)
    third = BatchSizer(2)
    memory.seed(b"g", third)
    assert third.next_size(10_000) == 1  # another function starts from nothing
    third.observe(10, 0.010)
    third.observe_overhead(0.010)
    fourth = BatchSizer(2)
    memory.seed(b"g", fourth)
    assert fourth.next_size(10_000) == 40
    assert fourth.next_size(100) == 25  # the tail rule still bounds it
    fixed = BatchSizer(2, chunksize=3)
    memory.seed(b"g", fixed)
    assert fixed.next_size(10_000) == 3
    memory.seed(b"h", BatchSizer(2))  # size 2: "f", the least recently called, goes
    forgotten = BatchSizer(2)
    memory.seed(b"f", forgotten)
    assert forgotten.next_size(10_000) == 1


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_trivial_items_go_out_batched_once_the_function_is_known(engine, request):
    request.getfixturevalue("dask_client" if engine == "dask" else "ray_session")
    with sw.Pool(backend=engine) as pool:
        cold = pool.map(add_one, range(2_000), report=True)
        assert cold == [x + 1 for x in range(2_000)]
        # nothing measured yet: each slot's first task takes its share, with a budget;
        # trivial items all run within it: one task round trip for the whole call
        assert first_batches(cold.report) == [1_000, 1_000]
        assert len(cold.report.records) == 2
        warm = pool.map(add_one, range(2_000), report=True)
        assert warm == [x + 1 for x in range(2_000)]
        assert min(first_batches(warm.report)) > 1
        # a new function (other captured values: other bytes) starts budgeted again
        other = pool.map(lambda x: x + 2, range(50), report=True)
        assert other == [x + 2 for x in range(50)]
        assert first_batches(other.report) == [25, 25]


def nap(x):
    import time

    time.sleep(0.02)
    if x == 33:
        raise ValueError(f"bad item {x}")
    return x


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_a_budgeted_first_task_hands_back_a_prefix_and_the_rest_runs(engine, request):
    """20 ms items: a first task of 30 stops after its 50 ms budget (a few items); the
    rest of its share runs in batches sized by what the prefix measured, in order, and
    the first error in input order is raised as the function's own exception."""
    request.getfixturevalue("dask_client" if engine == "dask" else "ray_session")
    with sw.Pool(backend=engine) as pool:
        report = pool.map(nap, range(60), on_error="collect", report=True)
        assert [v for i, v in enumerate(report) if i != 33] == [
            x for x in range(60) if x != 33]
        assert isinstance(report[33], Failure) and report[33].index == 33
        records = sorted(report.report.records, key=lambda r: r.t0)
        assert [r.size for r in records[:2]] == [30, 30]
        assert len(records) > 2  # the prefixes came back early; the rest went out again
        with pytest.raises(ValueError, match="bad item 33") as caught:
            pool.map(lambda x: nap(x), range(60))  # a new function: budgeted again
        assert caught.value.index == 33


def test_a_batched_first_task_that_kills_its_worker_names_the_item(dask_client):
    # One killing call only: each costs about 12 worker deaths (Dask retries the batch,
    # then the lone item, on new workers), and after a few dozen quick deaths a
    # LocalCluster's nannies may stop restarting workers, whatever runs on it.
    items = list(range(400))
    items[157] = KILLER
    with sw.Pool(backend="dask") as pool:
        assert pool.map(add_one, range(400)) == [x + 1 for x in range(400)]  # measured
        collected = pool.map(add_one, items, on_error="collect", report=True)
        records = sorted(collected.report.records, key=lambda r: r.t0)
        assert records[0].size > 1 and records[0].start == 0
        lost = [r for r in records if r.outcome == "lost"]
        assert any(r.start <= 157 < r.start + r.size and r.size > 1 for r in lost)
        failure = collected[157]
        assert isinstance(failure, Failure) and failure.kind == "worker_lost"
        assert failure.index == 157 and failure.item_repr == repr(KILLER)
        assert [v for i, v in enumerate(collected) if i != 157] == [
            x + 1 for i, x in enumerate(items) if i != 157
        ]
        assert pool.map(add_one, range(10)) == list(range(1, 11))  # the pool still works
