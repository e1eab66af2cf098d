"""Batching on the cluster backends: a function the pool has run before starts from what
that call measured (batching.SizerMemory), so trivial items go out in batches from the
first one instead of one per task; the semantics stay: input order, the item that kills
its worker named, a new function still measured one item at a time. Real clusters: a
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
        assert first_batches(cold.report) == [1, 1]  # measured one item at a time first
        warm = pool.map(add_one, range(2_000), report=True)
        assert warm == [x + 1 for x in range(2_000)]
        assert min(first_batches(warm.report)) > 1
        assert len(warm.report.records) < len(cold.report.records)
        # a new function (other captured values: other bytes) is measured again
        other = pool.map(lambda x: x + 2, range(50), report=True)
        assert other == [x + 2 for x in range(50)]
        assert first_batches(other.report) == [1, 1]


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
