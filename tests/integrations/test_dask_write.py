"""Dask arrays written into tensors: blocks computed and written by engine workers, one
atomic commit, clear errors."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest

import slicewise as sw
from slicewise.integrations.dask import extend_from_dask, from_dask

pytestmark = pytest.mark.timeout(90)


def _versions(ds) -> int:
    return len(ds.log())


def test_from_dask_writes_every_block_in_workers(tmp_path, pool):
    x = da.random.randint(0, 255, size=(64, 48, 40), chunks=(8, 48, 40), dtype=np.uint8)
    expected = x.compute()
    ds = from_dask(x, str(tmp_path / "video"), "frames", pool=pool, block_bytes=8 * 48 * 40)
    np.testing.assert_array_equal(ds.frames.numpy(), expected)
    assert ds.frames.dtype == np.uint8
    assert sw.load(str(tmp_path / "video")).frames.shape == (64, 48, 40)


def test_extend_appends_in_one_commit(tmp_path, pool, make_dataset):
    first = np.arange(10 * 6, dtype=np.float32).reshape(10, 6)
    ds = make_dataset(tmp_path / "ds", {"x": first})
    before = _versions(ds)
    more = da.arange(40 * 6, dtype=np.float32).reshape(40, 6).rechunk((7, 3))
    extend_from_dask(ds.x, more, pool=pool, block_bytes=7 * 6 * 4)
    assert _versions(ds) == before + 1
    np.testing.assert_array_equal(ds.x.numpy(), np.concatenate([first, more.compute()]))


def test_tensor_extend_accepts_a_dask_array(tmp_path, make_dataset):
    ds = make_dataset(tmp_path / "ds", {"x": np.zeros((2, 3), np.int64)})
    ds.x.extend(da.ones((5, 3), dtype=np.int64, chunks=2))
    assert ds.x.numpy().tolist() == [[0, 0, 0]] * 2 + [[1, 1, 1]] * 5


def test_non_blockwise_graph_computes_shared_parts_once(tmp_path, pool):
    base = da.arange(200, dtype=np.float64, chunks=25).reshape(50, 4)
    centered = base - base.mean()  # every block depends on one global reduction
    ds = from_dask(centered, str(tmp_path / "c"), "x", pool=pool, block_bytes=10 * 4 * 8)
    np.testing.assert_allclose(ds.x.numpy(), centered.compute())


def test_failing_block_leaves_the_dataset_unchanged(tmp_path, pool, make_dataset):
    ds = make_dataset(tmp_path / "ds", {"x": np.zeros((3, 2), np.float64)})
    before = _versions(ds)

    def explode(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("sensor glitch in block 2")
        return block

    bad = da.ones((40, 2), chunks=(5, 2)).map_blocks(explode, dtype=np.float64)
    with pytest.raises(Exception, match="sensor glitch"):
        extend_from_dask(ds.x, bad, pool=pool, block_bytes=5 * 2 * 8)
    reopened = sw.load(str(tmp_path / "ds"))
    assert _versions(reopened) == before
    assert len(reopened.x) == 3


def test_shape_and_dtype_mismatch_errors_name_the_tensor(tmp_path, make_dataset):
    ds = make_dataset(tmp_path / "ds", {"x": np.zeros((3, 4), np.int32)})
    with pytest.raises(ValueError, match=r"'x'.*\(4,\).*\(5,\)"):
        extend_from_dask(ds.x, da.zeros((2, 5), dtype=np.int32), num_workers=0)
    with pytest.raises(TypeError, match=r"'x'.*astype"):
        extend_from_dask(ds.x, da.zeros((2, 4), dtype=np.float64), num_workers=0)


def test_unknown_chunk_sizes_are_refused_clearly(tmp_path):
    x = da.arange(10, chunks=5)
    filtered = x[x > 3]  # chunk sizes unknown until computed
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        from_dask(filtered, str(tmp_path / "f"), "x", num_workers=0)


def test_serial_mode_writes_in_this_process(tmp_path):
    pid = os.getpid()
    seen = []

    def record(block):
        seen.append(os.getpid())
        return block

    x = da.ones((12, 2), chunks=(3, 2)).map_blocks(record, dtype=np.float64)
    ds = from_dask(x, str(tmp_path / "s"), "x", num_workers=0, block_bytes=3 * 2 * 8)
    assert seen and set(seen) == {pid}
    assert ds.x.numpy().sum() == 24


def test_dict_of_arrays_becomes_tensors_of_one_commit(tmp_path, pool):
    images = da.zeros((6, 4, 4), dtype=np.uint8, chunks=2)
    labels = da.arange(6, dtype=np.int64, chunks=3)
    ds = from_dask({"images": images, "labels": labels}, str(tmp_path / "d"), pool=pool)
    assert ds.images.shape == (6, 4, 4)
    assert ds.labels.numpy()[:, 0].tolist() == list(range(6))  # scalar rows: shape (1,)


def test_progress_bar_counts_written_blocks(tmp_path, capfd):
    x = da.zeros((12, 2), dtype=np.uint8, chunks=(3, 2))
    from_dask(x, str(tmp_path / "p"), "x", num_workers=0, block_bytes=3 * 2, progress=True)
    assert "4/4" in capfd.readouterr().err


def test_extend_inside_a_with_block_joins_its_commit(tmp_path, make_dataset):
    ds = make_dataset(tmp_path / "ds", {"x": np.zeros((2, 3), np.int64)})
    before = _versions(ds)
    with ds:
        ds.x.extend(da.ones((4, 3), dtype=np.int64, chunks=2))
        ds.create_tensor("notes", htype="text")
        ds.notes.append("calibrated")
    assert _versions(ds) == before + 1
    assert len(ds.x) == 6 and ds.notes[0].text() == "calibrated"
