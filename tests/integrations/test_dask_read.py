"""Tensors as dask arrays and bags: lazy, aligned with stored chunks, correct on every
scheduler (dask's own and our pool)."""

from __future__ import annotations

import os
import pickle
import shutil
import time

import dask
import dask.array as da
import dask.base
import dask.threaded
import numpy as np
import pytest

import slicewise as sw

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def frames(tmp_path, make_dataset, irregular_pieces):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, size=(60, 32, 24), dtype=np.uint8)
    ds = make_dataset(tmp_path / "video", {"frames": irregular_pieces(data, [7, 20, 1, 32])})
    return ds, data


def _block_edges(chunks: tuple[int, ...]) -> set[int]:
    return set(np.cumsum((0, *chunks)).tolist())


def test_dask_array_is_aligned_with_stored_chunks(frames):
    ds, data = frames
    ranges = ds.frames.chunk_row_ranges()
    stored = tuple(stop - start for start, stop in ranges)
    assert stored == (7, 20, 1, 32)
    row_bytes = 32 * 24
    # up to 64 MiB of whole chunks: here all of them
    x = ds.frames.dask(block_bytes=64 * 2**20)
    assert x.chunks[0] == (60,)
    assert x.chunks[1:] == ((32,), (24,))
    assert x.shape == data.shape and x.dtype == data.dtype
    np.testing.assert_array_equal(x.compute(), data)
    # the default cuts a tensor this small finer (two blocks per core), still at chunk edges
    x = ds.frames.dask()
    assert len(x.chunks[0]) > 1
    assert _block_edges(x.chunks[0]) <= _block_edges(stored)
    np.testing.assert_array_equal(x.compute(), data)
    # block_bytes=0: one block per stored chunk
    assert ds.frames.dask(block_bytes=0).chunks[0] == stored
    # in between: runs of whole chunks of at most block_bytes (a bigger chunk stands alone)
    for rows in (1, 7, 21, 27, 28, 59):
        x = ds.frames.dask(block_bytes=rows * row_bytes)
        assert _block_edges(x.chunks[0]) <= _block_edges(stored), rows
        for size in x.chunks[0]:
            assert size <= rows or size in stored, (rows, x.chunks[0])
        np.testing.assert_array_equal(x.compute(), data)
    assert ds.frames.dask(block_bytes=21 * row_bytes).chunks[0] == (7, 21, 32)


def test_block_bytes_must_be_a_size(frames):
    ds, _ = frames
    for bad in (-1, 1.5, "64MB", True):
        with pytest.raises(ValueError, match="'frames'.*block_bytes"):
            ds.frames.dask(block_bytes=bad)


def test_seed_mean_of_every_tenth_column_scaled_down(frames):
    ds, data = frames
    x = ds.frames.dask()
    y = x[:, :10].mean()
    assert float(y.compute()) == pytest.approx(float(data[:, :10].mean()))
    np.testing.assert_array_equal(x[5].compute(), data[5])
    np.testing.assert_array_equal(x[-1, 3].compute(), data[-1, 3])
    np.testing.assert_array_equal(x[6:9, ::2].compute(), data[6:9, ::2])
    np.testing.assert_allclose(x.mean(axis=(1, 2)).compute(), data.mean(axis=(1, 2)))


def test_row_selections_of_every_kind(frames):
    ds, data = frames
    x = ds.frames.dask()
    for rows in ([3, 59, 7], np.arange(60) % 9 == 0, slice(50, 2, -4), [0, 0, 1]):
        np.testing.assert_array_equal(x[rows].compute(), data[rows])
    np.testing.assert_array_equal(x[[2, 40], 5, ::3].compute(), data[[2, 40], 5, ::3])


def test_building_the_array_reads_no_sample_data(frames, tmp_path):
    ds, _ = frames
    chunk_dir = os.path.join(str(tmp_path / "video"), "chunks")
    assert os.path.isdir(chunk_dir)
    hidden = str(tmp_path / "hidden_chunks")
    shutil.move(chunk_dir, hidden)  # every sample byte is gone; only manifests remain
    try:
        reopened = sw.load(str(tmp_path / "video"))
        x = reopened.frames.dask()  # must not touch a chunk file
        assert x.shape == (60, 32, 24)
        with pytest.raises(sw.CorruptionError, match="missing"):
            x[0].compute()
    finally:
        shutil.move(hidden, chunk_dir)
    np.testing.assert_array_equal(sw.load(str(tmp_path / "video")).frames.dask()[0].compute(),
                                  frames[1][0])


def test_ragged_tensor_points_to_dask_bag(tmp_path):
    ds = sw.empty(str(tmp_path / "ragged"), overwrite=True)
    ds.create_tensor("masks", htype="generic", dtype="uint8")
    ds.masks.append(np.ones((3, 4), np.uint8))
    ds.masks.append(np.ones((5, 4), np.uint8))
    with pytest.raises(ValueError, match=r"ragged.*dask_bag\(\)"):
        ds.masks.dask()
    bag = ds.masks.dask_bag()
    shapes = bag.map(lambda a: a.shape).compute(scheduler="sync")
    assert shapes == [(3, 4), (5, 4)]


def test_text_tensor_has_a_bag_not_an_array(tmp_path):
    ds = sw.empty(str(tmp_path / "text"), overwrite=True)
    ds.create_tensor("captions", htype="text")
    ds.captions.extend(["a cat", "two dogs", "a bird"])
    with pytest.raises(TypeError, match="dask_bag"):
        ds.captions.dask()
    assert ds.captions.dask_bag().compute(scheduler="sync") == ["a cat", "two dogs", "a bird"]


def test_bag_partitions_follow_chunks_on_processes(frames):
    ds, data = frames
    bag = ds.frames.dask_bag()
    assert bag.npartitions == len(ds.frames.chunk_row_ranges())
    sums = bag.map(lambda a: int(a.sum())).compute(scheduler="processes", num_workers=2)
    assert sums == [int(frame.sum()) for frame in data]


def test_array_pickles_lightly_and_computes_in_other_processes(frames, pool):
    ds, data = frames
    x = ds.frames.dask()
    assert len(pickle.dumps(x)) < 20_000  # the graph carries the dataset's URL, not its data
    total = x.astype(np.int64).sum()
    assert int(total.compute(scheduler="threads")) == int(data.sum())
    assert int(dask.compute(total, scheduler=pool)[0]) == int(data.sum())  # worker processes


def test_empty_tensor_gives_an_empty_array(tmp_path):
    ds = sw.empty(str(tmp_path / "empty"), overwrite=True)
    ds.create_tensor("x", htype="generic", dtype="float32")
    ds.x.extend(np.zeros((0, 3), np.float32))
    x = ds.x.dask()
    assert x.shape[0] == 0
    assert x.compute().shape[0] == 0


def test_dask_arrays_compose_with_other_dask_code(frames):
    ds, data = frames
    x = ds.frames.dask()
    other = da.from_array(data, chunks=(10, 32, 24))
    diff = (x.astype(np.int16) - other.astype(np.int16)).max()
    assert int(diff.compute()) == 0


# Blocks of real size: samples of 256 KiB, so a stored chunk (8 MiB by default) holds 32 and
# one chunk is big enough to be read through a private map rather than copied.


@pytest.fixture(scope="module")
def big_samples(tmp_path_factory):
    data = np.random.default_rng(7).random((100, 256, 256), dtype=np.float32)
    path = tmp_path_factory.mktemp("big") / "samples"
    ds = sw.empty(str(path), overwrite=True)
    with ds:
        ds.create_tensor("x", htype="generic", dtype="float32")
        ds.x.extend(data)
    return sw.load(str(path)), data


def test_blocks_span_whole_chunks_and_match_numpy(big_samples):
    ds, data = big_samples
    stored = tuple(b - a for a, b in ds.x.chunk_row_ranges())
    assert len(stored) >= 3  # 100 samples of 256 KiB in 8 MiB chunks
    x = ds.x.dask(block_bytes=2 * stored[0] * data[0].nbytes)
    assert len(x.chunks[0]) < len(stored)  # several chunks per block
    assert _block_edges(x.chunks[0]) <= _block_edges(stored)
    np.testing.assert_array_equal(x.compute(), data)
    np.testing.assert_array_equal(x[stored[0] - 1 : stored[0] + 2].compute(),
                                  data[stored[0] - 1 : stored[0] + 2])
    np.testing.assert_array_equal(x[:, :10, 5].compute(), data[:, :10, 5])
    np.testing.assert_array_equal(x[::7, 3].compute(), data[::7, 3])
    np.testing.assert_array_equal(x[-1].compute(), data[-1])
    np.testing.assert_allclose(x.sum(axis=0).compute(), data.sum(axis=0), rtol=1e-5)


def test_float32_mean_is_as_precise_as_numpy(big_samples):
    ds, data = big_samples
    exact = float(data.astype(np.float64).mean())
    for x in (ds.x.dask(block_bytes=64 * 2**20), ds.x.dask(block_bytes=0)):
        mean = x.mean().compute()
        assert mean.dtype == np.float32 == data.mean().dtype
        # a float32 running sum of these 6.5 million values is off by 4e-6 (relative);
        # numpy's pairwise sum, and dask's per-block sums of it, by 2e-8: within a float32
        # ulp (1.2e-7) of the exact mean
        assert abs(float(mean) - exact) <= 2.4e-7 * exact
        assert abs(float(mean) - float(data.mean())) <= 2.4e-7 * exact


def test_the_default_scheduler_is_dasks_threads(big_samples):
    ds, _ = big_samples
    x = ds.x.dask()
    assert dask.base.get_scheduler(collections=[x]) is dask.threaded.get
    assert dask.base.get_scheduler(collections=[x.mean()]) is dask.threaded.get


def test_blocks_are_writable_and_writes_never_reach_the_dataset(big_samples):
    ds, data = big_samples
    stored = tuple(b - a for a, b in ds.x.chunk_row_ranges())
    # one chunk per block: a private map of the chunk file, no copy
    mapped = ds.x.dask(block_bytes=0)
    assert mapped.chunks[0] == stored
    view = ds.x._private_rows(0, stored[0])
    assert view is not None and not view.flags.owndata
    # several chunks per block: read into memory of its own
    copied = ds.x.dask(block_bytes=64 * 2**20)
    assert copied.chunks[0][0] > stored[0]
    for x in (mapped, copied):
        block = x.blocks[0].compute()
        assert block.flags.writeable
        block[:] = -1.0
        assert float(block.max()) == -1.0
        np.testing.assert_array_equal(x.blocks[0].compute(), data[: x.chunks[0][0]])
    view[:] = 7.0
    np.testing.assert_array_equal(ds.x[0:3].numpy(), data[0:3])
    np.testing.assert_array_equal(sw.load(ds.path).x.dask()[:5].compute(), data[:5])


def test_a_block_still_held_is_never_reused(big_samples):
    ds, data = big_samples
    x = ds.x.dask(block_bytes=2 * 32 * data[0].nbytes)
    rows = x.chunks[0][0]
    held = x.blocks[0].compute()
    before = held.copy()
    for _ in range(3):  # blocks come and go; their buffers are reused, never `held`'s
        x.mean().compute()
        np.testing.assert_array_equal(x.blocks[0].compute(), data[:rows])
    np.testing.assert_array_equal(held, before)
    np.testing.assert_array_equal(held, data[:rows])


def test_block_buffers_are_reused_then_given_back_when_idle():
    from slicewise.integrations.dask import _BlockBuffers

    buffers = _BlockBuffers()
    buffers.IDLE_SECONDS = 0.05
    shape, dtype = (4, 1024, 1024), np.dtype(np.float32)  # 16 MiB
    first = buffers.take(shape, dtype)
    address = first.__array_interface__["data"][0]
    held = buffers.take(shape, dtype)  # while `first` lives, a second buffer
    assert held.__array_interface__["data"][0] != address
    del first
    assert buffers.idle_bytes() == 16 * 2**20
    again = buffers.take(shape, dtype)
    assert again.__array_interface__["data"][0] == address  # reused, not fresh pages
    del again, held
    assert buffers.idle_bytes() == 32 * 2**20
    while buffers.idle_bytes():  # the idle timer gives them back (pytest-timeout bounds it)
        time.sleep(0.01)
    small = buffers.take((4, 4), dtype)  # small blocks are plain numpy arrays
    assert small.flags.owndata


def test_other_storage_forms_read_through_the_same_blocks(tmp_path):
    rng = np.random.default_rng(11)
    images = rng.integers(0, 255, size=(40, 16, 16, 3), dtype=np.uint8)
    values = rng.random((40, 300), dtype=np.float32)
    ds = sw.empty(str(tmp_path / "forms"), overwrite=True)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="png")
        ds.create_tensor("values", htype="generic", dtype="float32", chunk_compression="lz4")
        ds.images.extend(images)
        ds.values.extend(values)
    ds = sw.load(str(tmp_path / "forms"))
    np.testing.assert_array_equal(ds.images.dask().compute(), images)
    np.testing.assert_array_equal(ds.values.dask().compute(), values)
    np.testing.assert_array_equal(ds.values.dask(block_bytes=0)[3:9, ::5].compute(),
                                  values[3:9, ::5])


@pytest.mark.parametrize("rows", [64, 2048], ids=["read-into-a-buffer", "mapped"])
def test_a_corrupted_chunk_is_named_when_its_block_is_read(tmp_path, rows):
    data = np.arange(rows * 1024, dtype=np.float32).reshape(rows, 1024)  # 256 KiB, 8 MiB
    ds = sw.empty(str(tmp_path / "corrupt"), overwrite=True)
    with ds:
        ds.create_tensor("x", htype="generic", dtype="float32")
        ds.x.extend(data)
    chunk_dir = tmp_path / "corrupt" / "chunks"
    chunk = max((p for p in chunk_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(chunk.read_bytes())
    raw[-100] ^= 0xFF  # a payload byte: the header still parses
    chunk.write_bytes(bytes(raw))
    reopened = sw.load(str(tmp_path / "corrupt"))
    assert reopened.x.chunk_row_ranges() == [(0, rows)]  # one chunk, one block
    x = reopened.x.dask()
    with pytest.raises(sw.CorruptionError, match="checksum") as error:
        x.sum().compute()
    assert chunk.name in str(error.value)
