"""Zarr import and export with real Zarr stores; exports open in xarray with named axes."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap

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
    assert sorted(ds.tensors) == ["frames", "meta/labels"]
    assert list(ds.groups) == ["meta"]
    np.testing.assert_array_equal(ds.frames.numpy(), frames)
    np.testing.assert_array_equal(ds.meta.labels.numpy()[:, 0], labels)  # scalars: (1,)
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


# ---------------------------------------------------------------------------------------------
# ds.to_zarr: a whole dataset into one Zarr group that xarray opens as one Dataset


def _lab_dataset(path, pieces=(13, 20, 7)):
    """frames (image), class labels, captions (text), a signal and a shorter tensor; frames
    stored in irregular chunks so export blocks cross stored-chunk boundaries."""
    rng = np.random.default_rng(5)
    n = sum(pieces)
    data = {
        "frames": rng.integers(0, 255, (n, 6, 5, 3), dtype=np.uint8),
        "labels": rng.integers(0, 2, n).astype(np.uint32),
        "captions": [f"frame {i}" for i in range(n)],
        "signal": rng.random((n, 4), dtype=np.float32),
        "baseline": rng.random((9, 4)),
    }
    ds = sw.empty(str(path), overwrite=True)
    ds.create_tensor("frames", htype="image", dtype="uint8")
    bounds = np.cumsum([0, *pieces])
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        ds.frames.extend(data["frames"][start:stop])
    ds.create_tensor("labels", htype="class_label", class_names=["control", "treated"])
    ds.labels.extend(data["labels"])
    ds.create_tensor("captions", htype="text")
    ds.captions.extend(data["captions"])
    ds.create_tensor("signal", dtype="float32")
    ds.signal.extend(data["signal"])
    ds.signal.info.update({"units": "mV", "gains": [1.5, 2.0], "setup": {"amp": "A1"}})
    ds.create_tensor("baseline", dtype="float64")
    ds.baseline.extend(data["baseline"])
    return ds, data


def test_dataset_export_opens_in_xarray_as_one_dataset(tmp_path, pool):
    ds, data = _lab_dataset(tmp_path / "lab")
    out = str(tmp_path / "lab.zarr")
    group = ds.to_zarr(out, chunk_rows=6, pool=pool)
    assert sorted(group.array_keys()) == ["baseline", "captions", "frames", "labels", "signal"]
    assert group["frames"].chunks == (6, 6, 5, 3)

    for opened in (xr.open_zarr(out), xr.open_dataset(out, engine="zarr")):
        assert opened["frames"].dims == ("sample", "height", "width", "channel")
        assert opened["captions"].dims == ("sample",)
        # default names that would clash take the array's name; "sample" is shared
        assert opened["labels"].dims == ("sample", "dim_1")
        assert opened["signal"].dims == ("sample", "signal_dim_1")
        assert opened["baseline"].dims == ("baseline_sample", "baseline_dim_1")
        np.testing.assert_array_equal(opened["frames"].values, data["frames"])
        np.testing.assert_array_equal(opened["labels"].values[:, 0], data["labels"])
        assert list(opened["captions"].values) == data["captions"]
        np.testing.assert_array_equal(opened["signal"].values, data["signal"])
        np.testing.assert_array_equal(opened["baseline"].values, data["baseline"])

    attrs = xr.open_zarr(out)
    assert attrs["labels"].attrs["class_names"] == ["control", "treated"]
    assert attrs["signal"].attrs["units"] == "mV"
    assert attrs["signal"].attrs["gains"] == [1.5, 2.0]
    assert attrs["signal"].attrs["setup"] == {"amp": "A1"}  # Zarr attributes are JSON
    assert attrs["frames"].attrs["slicewise_htype"] == "image"


def test_dataset_export_round_trips_through_from_zarr(tmp_path):
    ds, data = _lab_dataset(tmp_path / "lab")
    out = str(tmp_path / "lab.zarr")
    ds.to_zarr(out, tensors=["frames", "labels", "captions", "signal"], num_workers=0,
               dimension_names={"frames": ("time", "y", "x", "rgb")})
    back = from_zarr(out, str(tmp_path / "back"), num_workers=0)
    assert sorted(back.tensors) == ["captions", "frames", "labels", "signal"]
    assert back.captions.htype == "text"
    assert [back.captions[i].data()["value"] for i in (0, 39)] == ["frame 0", "frame 39"]
    assert back.frames.htype == "image"
    assert back.labels.htype == "class_label"
    assert back.labels.info["class_names"] == ["control", "treated"]
    np.testing.assert_array_equal(back.labels.numpy()[:, 0], data["labels"])
    assert back.frames.info["dimension_names"] == ["time", "y", "x", "rgb"]
    assert back.signal.info["units"] == "mV"
    np.testing.assert_array_equal(back.frames.numpy(), data["frames"])

    # the names it came back with are kept by the next export, which renames the arrays
    again = back.to_zarr(str(tmp_path / "again.zarr"), tensors={"frames": "movie"},
                         num_workers=0)
    assert list(again.array_keys()) == ["movie"]
    assert tuple(again["movie"].metadata.dimension_names) == ("time", "y", "x", "rgb")


def test_one_set_of_dimension_names_for_all_and_clashes_named(tmp_path):
    ds = sw.empty(str(tmp_path / "exp"), overwrite=True)
    for name, rows in (("control", 10), ("treatment", 10), ("pilot", 4)):
        ds.create_tensor(name, dtype="uint16")
        ds[name].extend(np.full((rows, 3, 2), rows, np.uint16))
    out = str(tmp_path / "exp.zarr")
    ds.to_zarr(out, tensors=["control", "treatment"], dimension_names=("time", "y", "x"),
               num_workers=0)
    opened = xr.open_zarr(out)
    assert dict(opened.sizes) == {"time": 10, "y": 3, "x": 2}
    assert float(opened["treatment"].mean("time")[0, 0]) == 10.0

    # names given that clash in size: xarray could not open the group, so it is refused
    with pytest.raises(ValueError, match=r"'time' has size 10 in array 'control' and 4 in "
                                         r"array 'pilot'.*dimension_names=\{'pilot'"):
        ds.to_zarr(str(tmp_path / "clash.zarr"), dimension_names=("time", "y", "x"))
    with pytest.raises(KeyError, match="'nope'"):
        ds.to_zarr(str(tmp_path / "k.zarr"), dimension_names={"nope": ("a",)})
    with pytest.raises(ValueError, match="'pilot' has 3 dimensions"):
        ds.to_zarr(str(tmp_path / "n.zarr"), dimension_names={"pilot": ("a",)})


def test_ragged_and_json_tensors_are_refused_by_name_before_anything_is_written(tmp_path):
    ds, _ = _lab_dataset(tmp_path / "lab")
    ds.create_tensor("masks", htype="generic", dtype="uint8")
    ds.masks.extend([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)])
    ds.create_tensor("notes", htype="json")
    ds.notes.extend([{"ok": True}])
    out = tmp_path / "lab.zarr"
    with pytest.raises(ValueError) as refused:
        ds.to_zarr(str(out))
    message = str(refused.value)
    assert "'masks' is ragged" in message and "'notes' (htype 'json'" in message
    assert ("tensors=['frames', 'labels', 'captions', 'signal', 'baseline']" in message)
    assert not out.exists()  # checked before the group was made

    with pytest.raises(ValueError, match=r"'masks' is ragged.*resize"):
        ds.to_zarr(str(out), tensors=["signal", "masks"])
    with pytest.raises(TypeError, match="'notes'.*cannot become a Zarr array"):
        ds.notes.to_zarr(str(out))
    with pytest.raises(KeyError, match="'missing'"):
        ds.to_zarr(str(out), tensors=["missing"])
    assert not out.exists()


def test_existing_arrays_need_overwrite(tmp_path):
    ds, data = _lab_dataset(tmp_path / "lab")
    out = str(tmp_path / "lab.zarr")
    ds.to_zarr(out, tensors=["signal"], num_workers=0)
    with pytest.raises(FileExistsError, match=r"\['signal'\].*overwrite=True"):
        ds.to_zarr(out, tensors=["baseline", "signal"], num_workers=0)
    assert list(zarr.open_group(out, mode="r").array_keys()) == ["signal"]  # nothing made
    ds.to_zarr(out, tensors=["baseline", "signal"], overwrite=True, num_workers=0)
    np.testing.assert_array_equal(xr.open_zarr(out)["baseline"].values, data["baseline"])


def test_export_inside_a_with_block_sees_the_pending_rows(tmp_path):
    ds, data = _lab_dataset(tmp_path / "lab")
    with ds:
        ds.signal.extend(np.ones((3, 4), np.float32))
        ds.to_zarr(str(tmp_path / "pending.zarr"), tensors=["signal"])  # workers would not
    exported = xr.open_zarr(str(tmp_path / "pending.zarr"))["signal"].values
    np.testing.assert_array_equal(exported, np.concatenate([data["signal"], np.ones((3, 4))]))


def test_export_to_a_store_object_and_to_zarr_format_2(tmp_path):
    ds, data = _lab_dataset(tmp_path / "lab")
    memory = zarr.storage.MemoryStore()
    group = ds.to_zarr(memory, tensors=["signal", "captions"])  # threads, in this process
    np.testing.assert_array_equal(group["signal"][:], data["signal"])
    assert list(group["captions"][:]) == data["captions"]

    out = str(tmp_path / "v2.zarr")
    ds.to_zarr(out, zarr_format=2, num_workers=0)
    assert zarr.open_group(out, mode="r")["signal"].attrs["_ARRAY_DIMENSIONS"] == [
        "sample", "signal_dim_1"]
    opened = xr.open_zarr(out)
    assert opened["frames"].dims == ("sample", "height", "width", "channel")
    assert list(opened["captions"].values) == data["captions"]


def test_export_blocks_are_whole_zarr_chunks_read_a_piece_at_a_time(tmp_path):
    from slicewise.integrations.zarr import EXPORT_CHUNK_BYTES, _ArrayPlan

    ds = sw.empty(str(tmp_path / "big"), overwrite=True)
    ds.create_tensor("rows", dtype="uint8")
    ds.rows.extend(np.zeros((600, 256, 256), np.uint8))  # 37.5 MiB of 64 KiB rows
    plan = _ArrayPlan(ds.rows, "rows", None, 40, "test")
    blocks = plan.blocks()
    assert blocks[0][0] == 0 and blocks[-1][1] == 600
    assert all(a == b for (_, a), (b, _) in zip(blocks[:-1], blocks[1:], strict=True))
    assert all(start % 40 == 0 for start, _ in blocks)
    assert max(stop - start for start, stop in blocks) * 65536 <= 32 * 2**20
    assert plan.piece_rows() % 40 == 0 and plan.piece_rows() * 65536 <= EXPORT_CHUNK_BYTES


def test_a_failing_export_block_names_tensor_rows_and_array(tmp_path, pool):
    ds, _ = _lab_dataset(tmp_path / "lab")
    # every sample byte is gone (only manifests remain): the workers' reads fail
    shutil.move(str(tmp_path / "lab" / "chunks"), str(tmp_path / "hidden"))
    reopened = sw.load(str(tmp_path / "lab"))
    # the worker's own error, as the stdlib pools give it (issue 8), naming the failing job
    with pytest.raises(sw.CorruptionError) as failed:
        reopened.to_zarr(str(tmp_path / "lab.zarr"), tensors=["signal"], pool=pool)
    described = "\n".join([str(failed.value), *getattr(failed.value, "__notes__", [])])
    assert "rows [0:40] of tensor 'signal' -> Zarr array 'signal'" in described
    assert "missing" in str(failed.value)


EXPORT_MEMORY = textwrap.dedent(
    """
    import sys
    import numpy as np
    import slicewise as sw

    def warm_up(_):
        import zarr, slicewise.integrations.zarr  # noqa: F401
        time.sleep(0.05)

    if __name__ == "__main__":
        path, out, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
        ds = sw.empty(path, overwrite=True)
        for name in ("a", "b"):
            ds.create_tensor(name, dtype="uint8")
            for start in range(0, rows, 16):
                frame_ids = np.arange(start, start + 16, dtype=np.uint8)[:, None, None]
                ds[name].extend(frame_ids + np.zeros((1, 1024, 1024), np.uint8))
        with sw.Pool(2) as pool:
            pool.map(warm_up, range(4), chunksize=1)  # the baseline includes the workers
            time.sleep(0.2)
            baseline = tree_memory()[0]
            peak = Peak()
            ds.to_zarr(out, pool=pool)
            peak.stop()
        print(json.dumps({"baseline": baseline, "peak_anon": peak.anon}))
    """
)


@pytest.mark.timeout(110)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dataset_export_memory_stays_bounded(tmp_path):
    """Two 128 MiB tensors go out through two workers while the process tree holds less than
    half of that above its baseline: each worker holds one piece (~16 MiB), not the data."""
    from test_bounded_memory import SAMPLER, _run

    rows = 128
    out = str(tmp_path / "big.zarr")
    measured = _run(SAMPLER + EXPORT_MEMORY, str(tmp_path / "big"), out, str(rows))
    used = measured["peak_anon"] - measured["baseline"]
    total = 2 * rows * 2**20
    assert used < total // 2, f"export used {used / 2**20:.0f} MiB above baseline"
    exported = zarr.open_group(out, mode="r")
    assert exported["b"].shape == (rows, 1024, 1024)
    np.testing.assert_array_equal(exported["b"][rows - 1, :2, :2], np.full((2, 2), rows - 1))


# ---------------------------------------------------------------------------------------------
# Groups: Zarr groups are slicewise groups (Deep Lake 3's "/" names); a round trip gives back
# the same paths, shapes, dtypes and values, 1-D and 0-D arrays included


def _zarr_tree(path: str) -> dict:
    """Every group and array of a store: path -> ("group",) or (shape, dtype, values)."""
    root = zarr.open_group(path, mode="r")
    tree = {}
    for name, obj in root.members(max_depth=None):
        if isinstance(obj, zarr.Group):
            tree[name] = ("group",)
        else:
            values = obj[()]
            tree[name] = (obj.shape, str(obj.dtype),
                          values.tolist() if isinstance(values, np.ndarray) else values)
    return tree


def _grouped_store(path: str, zarr_format: int = 3) -> str:
    rng = np.random.default_rng(5)
    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    dims = {"dimension_names": ("t", "y", "x")} if zarr_format == 3 else {}
    frames = root.create_array("Control/Experiment 1", shape=(9, 4, 3), chunks=(4, 4, 3),
                               dtype="f4", attributes={"exposure_ms": 12.5}, **dims)
    frames[:] = rng.random((9, 4, 3), dtype=np.float32)
    root.create_array("Control/Day 2/temperature", shape=(7,), chunks=(3,),
                      dtype="f8")[:] = np.linspace(20, 21, 7)                     # 1-D
    root.create_array("Control/Day 2/counts", shape=(5,), chunks=(5,),
                      dtype="i2")[:] = np.arange(5, dtype=np.int16)               # 1-D
    gain = root.create_array("Control/Day 2/deep/gain", shape=(), dtype="u1")     # 0-D
    gain[...] = 3
    root.create_array("Treatment/flags", shape=(3,), chunks=(2,),
                      dtype="bool")[:] = [True, False, True]
    root.create_group("Placebo")                                                   # empty
    root.create_group("Treatment/Later/Empty")
    if zarr_format == 3:
        root.create_array("Control/notes", shape=(2,), dtype=str)[:] = ["fine", "dusty lens"]
    return path


def test_zarr_groups_round_trip_with_paths_shapes_dtypes_and_values(tmp_path, pool):
    source = _grouped_store(str(tmp_path / "in.zarr"))
    ds = from_zarr(source, str(tmp_path / "ds"), pool=pool)
    assert sorted(ds.tensors) == [
        "Control/Day 2/counts", "Control/Day 2/deep/gain", "Control/Day 2/temperature",
        "Control/Experiment 1", "Control/notes", "Treatment/flags"]
    assert sorted(ds.groups) == ["Control", "Control/Day 2", "Control/Day 2/deep", "Placebo",
                                 "Treatment", "Treatment/Later", "Treatment/Later/Empty"]
    assert ds.Control["Experiment 1"].shape == (9, 4, 3)
    assert ds.Control["Day 2"].temperature.shape == (7, 1)   # scalars: samples of shape (1,)
    assert ds.Control["Day 2"].deep.gain.numpy().tolist() == [[3]]

    out = str(tmp_path / "out.zarr")
    ds.to_zarr(out, pool=pool)
    assert _zarr_tree(out) == _zarr_tree(source)
    back = zarr.open_group(out, mode="r")
    assert back["Control/Day 2/temperature"].shape == (7,)   # 1-D stays 1-D
    assert back["Control/Experiment 1"].attrs["exposure_ms"] == 12.5
    assert tuple(back["Control/Experiment 1"].metadata.dimension_names) == ("t", "y", "x")
    assert "zarr_ndim" not in back["Control/Day 2/counts"].attrs
    # xarray opens one group at a time, each with one size per dimension name
    day2 = xr.open_zarr(out, group="Control/Day 2")
    np.testing.assert_allclose(day2["temperature"].values, np.linspace(20, 21, 7))


def test_zarr_format_2_groups_round_trip(tmp_path):
    source = _grouped_store(str(tmp_path / "in2.zarr"), zarr_format=2)
    ds = from_zarr(source, str(tmp_path / "ds"), num_workers=0)
    out = str(tmp_path / "out2.zarr")
    ds.to_zarr(out, zarr_format=2, num_workers=0)
    assert _zarr_tree(out) == _zarr_tree(source)


def test_one_dimensional_array_comes_back_one_dimensional(tmp_path):
    """The bug of issue 8: a 1-D Zarr array came back 2-D (its rows are samples of (1,))."""
    source = str(tmp_path / "one.zarr")
    zarr.open_group(source, mode="w").create_array(
        "signal", shape=(10,), chunks=(4,), dtype="i4")[:] = np.arange(10)
    ds = from_zarr(source, str(tmp_path / "ds"), num_workers=0)
    array = ds.signal.to_zarr(str(tmp_path / "back.zarr"), num_workers=0)
    assert array.shape == (10,) and array.dtype == np.int32
    np.testing.assert_array_equal(array[:], np.arange(10))
    ds.signal.extend([10, 11])                       # still 1-D after more rows
    again = ds.signal.to_zarr(str(tmp_path / "again.zarr"), num_workers=0)
    np.testing.assert_array_equal(again[:], np.arange(12))


def test_a_deeplake3_grouped_dataset_exports_to_zarr_groups(tmp_path):
    ds = sw.empty(str(tmp_path / "dl3"))
    with ds:
        ds.create_group("Control")
        ds.create_group("Control/empty")
        ds.Control.create_tensor("frames", dtype="uint16")
        ds.create_tensor("Treatment/frames", dtype="uint16")
        ds.Control.frames.extend(np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
        ds["Treatment/frames"].extend(np.zeros((5, 3, 4), np.uint16))
    out = str(tmp_path / "dl3.zarr")
    ds.to_zarr(out, num_workers=0)
    root = zarr.open_group(out, mode="r")
    assert isinstance(root["Control/empty"], zarr.Group)
    np.testing.assert_array_equal(root["Control/frames"][:],
                                  np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
    # the same default names in two groups: each group is its own xarray Dataset, so
    # neither needs a prefix
    assert tuple(root["Treatment/frames"].metadata.dimension_names) == ("sample", "dim_1",
                                                                         "dim_2")
    back = from_zarr(out, str(tmp_path / "back"), num_workers=0)
    assert sorted(back.tensors) == sorted(ds.tensors)
    assert sorted(back.groups) == sorted(ds.groups)


def test_array_names_cannot_leave_the_store(tmp_path, make_dataset):
    ds = make_dataset(tmp_path / "ds", {"x": np.zeros((3, 2), np.uint8)})
    for bad in ("../x", "/abs", "a//b", "a/../../b"):
        with pytest.raises(ValueError, match="invalid array name"):
            ds.to_zarr(str(tmp_path / "out.zarr"), tensors={"x": bad}, num_workers=0)
    assert not os.path.exists(tmp_path / "x")
