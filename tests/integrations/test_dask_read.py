"""Tensors as dask arrays and bags: lazy, aligned with stored chunks, correct on every
scheduler (dask's own and our pool)."""

from __future__ import annotations

import os
import pickle
import shutil

import dask
import dask.array as da
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


def test_dask_array_is_aligned_with_stored_chunks(frames):
    ds, data = frames
    x = ds.frames.dask()
    ranges = ds.frames.chunk_row_ranges()
    assert len(ranges) >= 4
    assert x.chunks[0] == tuple(stop - start for start, stop in ranges)
    assert x.chunks[1:] == ((32,), (24,))
    assert x.shape == data.shape and x.dtype == data.dtype
    np.testing.assert_array_equal(x.compute(), data)


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
