"""Big buffers through shared memory: results and arguments without pipe copies, freed
when the last view dies; shared arrays written in place by workers."""

from __future__ import annotations

import gc
import pickle

import engine_helpers as h
import numpy as np
import pytest

import slicewise as sw
from slicewise.engine import shm
from slicewise.engine.sharedarray import SharedArray

pytestmark = pytest.mark.timeout(60)


def test_dumps_loads_roundtrip_uses_segments():
    array = np.arange(1 << 19, dtype=np.float64)  # 4 MiB
    small = np.arange(10)
    payload, segments = shm.dumps({"big": array, "small": small, "text": "hi"}, "swtest0001")
    assert len(segments) == 1 and segments[0][1] == array.nbytes
    assert len(payload) < 10_000  # the data is not in the pickle
    value = shm.loads(payload, segments)
    assert h.shm_leftovers("swtest0001") == []  # unlinked as soon as it was mapped
    np.testing.assert_array_equal(value["big"], array)
    np.testing.assert_array_equal(value["small"], small)
    value["big"][0] = -1.0  # results are ordinary writable arrays


def test_big_results_come_back_through_shared_memory():
    pool = sw.Pool(2)
    prefix = pool._scheduler.backend.prefix
    results = pool.map(h.big_array, range(10))
    assert [float(a[0]) for a in results] == [float(i) for i in range(10)]
    assert all(a.nbytes == 2 * 2**20 for a in results)
    root = results[0]
    while getattr(root, "base", None) is not None and not isinstance(root.base, memoryview):
        root = root.base
    assert isinstance(root.base, memoryview)  # a view of the mapped segment, not a copy
    nested = pool.map(lambda i: {"a": h.big_array(i), "n": i}, range(3))
    assert [float(d["a"][-1]) for d in nested] == [0.0, 1.0, 2.0]
    del results, nested, root
    gc.collect()
    pool.terminate()
    assert h.shm_leftovers(prefix) == []


def test_result_segments_are_reused_once_dropped():
    pool = sw.Pool(2)
    prefix = pool._scheduler.backend.prefix
    first = pool.map(h.big_array, range(8))
    first_names = set(h.shm_leftovers(prefix))
    assert len(first_names) == 8  # one segment per result, alive while the arrays are
    del first
    gc.collect()
    second = pool.map(h.big_array, range(10, 18))
    assert [float(a[0]) for a in second] == [float(i) for i in range(10, 18)]
    names = set(h.shm_leftovers(prefix))
    assert len(names | first_names) < 16  # the workers wrote into given-back segments
    del second
    gc.collect()
    pool.terminate()
    assert h.shm_leftovers(prefix) == []


def test_big_arguments_go_through_shared_memory(process_pool):
    prefix = process_pool._scheduler.backend.prefix
    arrays = [np.full(1 << 19, i, dtype=np.float32) for i in range(6)]  # 2 MiB each
    assert process_pool.map(h.array_sum, arrays) == [float(i * (1 << 19)) for i in range(6)]
    assert h.shm_leftovers(prefix) == []


def test_shared_array_is_written_in_place_by_workers(any_pool):
    target = sw.shared_array((8, 3), dtype=np.int64)
    assert isinstance(target, SharedArray) and target.sum() == 0
    any_pool.map(h.write_into, [(target, i, i * 10) for i in range(8)])
    assert target[:, 0].tolist() == [i * 10 for i in range(8)]
    row_view = target[2:5]
    any_pool.map(h.write_into, [(row_view, 0, 7)])  # views stay shared
    assert target[2].tolist() == [7, 7, 7]


def test_shared_array_pickles_as_a_handle_and_is_freed():
    array = sw.shared_array(1 << 20, dtype=np.uint8)
    name = array.shm_name
    data = pickle.dumps(array)
    assert len(data) < 1000
    clone = pickle.loads(data)
    clone[5] = 42
    assert array[5] == 42
    assert isinstance(array + 1, np.ndarray) and not isinstance(array + 1, SharedArray)
    assert h.shm_leftovers(name) == [name]
    del array, clone
    gc.collect()
    assert h.shm_leftovers(name) == []


def test_shared_array_rejects_object_dtype():
    with pytest.raises(TypeError, match="fixed-size"):
        sw.shared_array(3, dtype=object)


def test_an_idle_pool_releases_result_memory():
    import time

    pool = sw.Pool(2)
    prefix = pool._scheduler.backend.prefix
    results = pool.map(h.big_array, range(6))
    del results
    gc.collect()
    deadline = time.monotonic() + 30
    while h.shm_leftovers(prefix) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert h.shm_leftovers(prefix) == []  # given back, then dropped while idle
    assert pool.map(h.square, [3]) == [9]
    pool.terminate()


def test_results_fall_back_to_the_pipe_when_shared_memory_refuses():
    """A full /dev/shm (64 MB in a default container) must slow results down, not fail
    them: every item came back as a pickling failure."""
    with sw.Pool(1, initializer=h.limit_file_size) as pool:
        prefix = pool._scheduler.backend.prefix
        results = pool.map(h.big_array, range(3))
        assert [float(a[-1]) for a in results] == [0.0, 1.0, 2.0]
        assert h.shm_leftovers(prefix) == []  # nothing went through shared memory


def test_segment_writer_reuses_segments_after_an_idle_release():
    """close() (the worker went idle) must reset what the reuse cache holds: it kept
    counting the released bytes, so after the first idle pause nothing was reused."""
    writer = shm.SegmentWriter("swtest0002-w", cache_bytes=8 << 20)
    data = memoryview(np.ones(1 << 20, dtype=np.float32))  # 4 MiB
    try:
        for _round in range(2):
            names = [writer.write(data), writer.write(data)]
            writer.take_back(names)
            assert sorted(writer.free) == sorted(names)  # both wait for reuse
            again = writer.write(data)
            assert again in names and writer.mappings  # rewritten in place, kept mapped
            writer.take_back([again])
            writer.close()  # idle: everything let go of
            assert writer.free == [] and not writer.mappings
            assert h.shm_leftovers("swtest0002-w") == []  # released, not leaked
    finally:
        writer.close()
        shm.unlink_prefix("swtest0002-w")
    assert h.shm_leftovers("swtest0002-w") == []
