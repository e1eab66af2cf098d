"""Zarr import and export with real Zarr stores; exports open in xarray with named axes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import slicewise as sw
from slicewise.integrations.zarr import from_zarr, tensor_to_zarr

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "lab.zarr")
    rng = np.random.default_rng(7)
    root = zarr.open_group(path, mode="w")
    frames = rng.random((33, 16, 12), dtype=np.float32)
    a = root.create_array("frames", shape=frames.shape, chunks=(5, 8, 12), dtype="f4",
                          dimension_names=("time", "y", "x"), attributes={"units": "au"})
    a[:] = frames
    labels = np.arange(33, dtype=np.int16)
    b = root.create_group("meta").create_array("labels", shape=(33,), chunks=(10,), dtype="i2")
    b[:] = labels
    return path, frames, labels


def test_import_group_in_parallel_keeps_names_and_attributes(store, tmp_path, pool):
    path, frames, labels = store
    ds = from_zarr(path, str(tmp_path / "ds"), pool=pool, block_bytes=5 * 16 * 12 * 4)
    assert sorted(ds.tensors) == ["frames", "meta.labels"]
    np.testing.assert_array_equal(ds.frames.numpy(), frames)
    np.testing.assert_array_equal(ds["meta.labels"].numpy()[:, 0], labels)  # scalars: (1,)
    assert ds.frames.info["dimension_names"] == ["time", "y", "x"]
    assert ds.frames.info["units"] == "au"
    assert [e["message"] for e in ds.log()].count("from_zarr") == 1


def test_import_one_array_by_url_by_name_and_from_an_object(store, tmp_path):
    path, frames, labels = store
    one = from_zarr(path + "/frames", str(tmp_path / "one"), num_workers=0)
    assert list(one.tensors) == ["frames"]
    picked = from_zarr(path, str(tmp_path / "picked"), arrays={"meta/labels": "y"},
                       num_workers=0)
    np.testing.assert_array_equal(picked.y.numpy()[:, 0], labels)

    memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    memory.create_array("m", shape=(9, 2), chunks=(4, 2), dtype="u1")[:] = np.ones((9, 2))
    in_memory = from_zarr(memory, str(tmp_path / "mem"))  # read with threads in-process
    assert in_memory.m.numpy().sum() == 18

    with pytest.raises(KeyError, match="nothing_here"):
        from_zarr(path, str(tmp_path / "x"), arrays=["nothing_here"], num_workers=0)


def test_export_opens_in_xarray_with_dimension_names(tmp_path, pool, make_dataset):
    data = np.random.default_rng(0).integers(0, 255, (40, 6, 5), dtype=np.uint8)
    ds = make_dataset(tmp_path / "ds", {"frames": [data[:13], data[13:]]})
    out = str(tmp_path / "out.zarr")
    array = ds.frames.to_zarr(out, dimension_names=("time", "y", "x"), chunk_rows=8, pool=pool)
    assert array.chunks == (8, 6, 5)

    opened = xr.open_zarr(out)
    assert opened["frames"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(opened["frames"].values, data)
    assert float(opened["frames"].mean("time")[0, 0]) == pytest.approx(data[:, 0, 0].mean())

    # and back: Zarr -> slicewise keeps the names, and the next export reuses them
    back = from_zarr(out, str(tmp_path / "back"), num_workers=0)
    assert back.frames.info["dimension_names"] == ["time", "y", "x"]
    np.testing.assert_array_equal(back.frames.numpy(), data)
    again = back.frames.to_zarr(str(tmp_path / "again.zarr"), num_workers=0)
    assert tuple(again.metadata.dimension_names) == ("time", "y", "x")


def test_export_defaults_zarr2_and_dask_reads_it(tmp_path, make_dataset):
    data = np.arange(30 * 4, dtype=np.float64).reshape(30, 4)
    ds = make_dataset(tmp_path / "ds", {"signal": data})
    v3 = ds.signal.to_zarr(str(tmp_path / "v3.zarr"), num_workers=0)
    assert tuple(v3.metadata.dimension_names) == ("sample", "dim_1")
    v2 = tensor_to_zarr(ds.signal, str(tmp_path / "v2.zarr"), zarr_format=2, num_workers=0)
    assert v2.attrs["_ARRAY_DIMENSIONS"] == ["sample", "dim_1"]
    assert xr.open_zarr(str(tmp_path / "v2.zarr"))["signal"].dims == ("sample", "dim_1")
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "v2.zarr"), component="signal")
                                  .compute(), data)


def test_image_tensor_gets_image_axes(tmp_path):
    ds = sw.empty(str(tmp_path / "img"), overwrite=True)
    ds.create_tensor("images", htype="image", dtype="uint8")
    ds.images.extend(np.zeros((3, 4, 5, 3), np.uint8))
    ds.images.to_zarr(str(tmp_path / "img.zarr"), num_workers=0)
    assert xr.open_zarr(str(tmp_path / "img.zarr"))["images"].dims == (
        "sample", "height", "width", "channel")


def test_export_refuses_ragged_and_wrong_dimension_names(tmp_path):
    ds = sw.empty(str(tmp_path / "r"), overwrite=True)
    ds.create_tensor("masks", htype="generic", dtype="uint8")
    ds.masks.extend([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)])
    with pytest.raises(ValueError, match="ragged"):
        ds.masks.to_zarr(str(tmp_path / "r.zarr"))
    ds.create_tensor("x", htype="generic", dtype="uint8")
    ds.x.extend(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="dimension_names"):
        ds.x.to_zarr(str(tmp_path / "x.zarr"), dimension_names=("only_one",))
