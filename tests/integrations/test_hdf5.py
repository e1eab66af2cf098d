"""HDF5 import and export with real h5py files: seed 003's Control/Treatment experiments."""

from __future__ import annotations

import dask.array as da
import h5py
import numpy as np
import pytest

import slicewise as sw
from slicewise.integrations.hdf5 import dataset_to_hdf5, from_hdf5

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def experiments(tmp_path):
    """The seed's file: /Control/Experiment i and /Treatment/Experiment i, chunked frames."""
    path = str(tmp_path / "experiments.h5")
    rng = np.random.default_rng(0)
    data = {}
    with h5py.File(path, "w") as f:
        for group in ("Control", "Treatment"):
            for i in range(1, 4):
                frames = rng.integers(0, 4000, size=(25 + i, 48, 40), dtype=np.uint16)
                name = f"/{group}/Experiment {i}"
                dset = f.create_dataset(name, data=frames, chunks=(10, 24, 20),
                                        compression="gzip")
                dset.attrs["exposure_ms"] = 12.5 * i
                dset.attrs["objective"] = "40x"
                data[name] = frames
        f.create_dataset("/meta/temperature", data=np.linspace(20, 21, 7))
    return path, data


def test_seed_experiments_import_in_parallel(experiments, tmp_path, pool):
    path, data = experiments
    ds = from_hdf5(path, str(tmp_path / "exp"), datasets=["Control", "Treatment"], pool=pool,
                   block_bytes=10 * 48 * 40 * 2)
    assert sorted(ds.tensors) == sorted(
        f"{g}/Experiment {i}" for g in ("Control", "Treatment") for i in range(1, 4)
    )
    assert sorted(ds.groups) == ["Control", "Treatment"]
    for name, frames in data.items():
        tensor = ds[name.strip("/")]
        np.testing.assert_array_equal(tensor.numpy(), frames)
        assert tensor.info["hdf5_path"] == name
        assert tensor.info["objective"] == "40x"

    # seed: lazily, through dask, only when needed
    controls = [ds.Control[f"Experiment {i}"].dask() for i in range(1, 4)]
    means = da.stack([c.mean() for c in controls]).compute()
    np.testing.assert_allclose(means, [data[f"/Control/Experiment {i}"].mean()
                                       for i in range(1, 4)])


def test_whole_file_and_renamed_datasets(experiments, tmp_path):
    path, data = experiments
    ds = from_hdf5(path, str(tmp_path / "all"), num_workers=2)
    assert "meta/temperature" in ds.tensors and len(ds.tensors) == 7
    # a 1-D dataset's rows are scalars, stored as samples of shape (1,) like Deep Lake's
    np.testing.assert_allclose(ds.meta.temperature.numpy()[:, 0], np.linspace(20, 21, 7))

    one = from_hdf5(path, str(tmp_path / "one"), datasets={"/Control/Experiment 2": "ctrl2"},
                    num_workers=0)
    assert list(one.tensors) == ["ctrl2"]
    np.testing.assert_array_equal(one.ctrl2.numpy(), data["/Control/Experiment 2"])


def test_import_is_one_commit(experiments, tmp_path):
    path, _ = experiments
    ds = from_hdf5(path, str(tmp_path / "c"), datasets="Treatment", num_workers=0)
    data_commits = [entry for entry in ds.log() if "from_hdf5" in str(entry)]
    assert len(data_commits) == 1


def test_export_round_trip_restores_paths_and_attributes(experiments, tmp_path):
    path, data = experiments
    ds = from_hdf5(path, str(tmp_path / "exp"), num_workers=2)
    out = str(tmp_path / "copy.h5")
    assert ds.to_hdf5(out, compression="gzip") == out
    with h5py.File(out, "r") as f:
        for name, frames in data.items():
            np.testing.assert_array_equal(f[name][...], frames)
            assert f[name].attrs["objective"] == "40x"
        assert f["/Control/Experiment 1"].attrs["exposure_ms"] == pytest.approx(12.5)
        # a 1-D dataset's rows became samples of shape (1,); the export drops that axis again
        np.testing.assert_allclose(f["/meta/temperature"][...], np.linspace(20, 21, 7))
        assert "hdf5_ndim" not in f["/meta/temperature"].attrs


def test_export_of_text_and_refusal_of_ragged(tmp_path):
    ds = sw.empty(str(tmp_path / "mixed"), overwrite=True)
    ds.create_tensor("captions", htype="text")
    ds.captions.extend(["first frame", "second frame"])
    ds.create_tensor("masks", htype="generic", dtype="uint8")
    ds.masks.extend([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)])
    with pytest.raises(ValueError, match=r"'masks' is ragged"):
        dataset_to_hdf5(ds, str(tmp_path / "bad.h5"))
    out = dataset_to_hdf5(ds, str(tmp_path / "text.h5"), tensors=["captions"])
    with h5py.File(out, "r") as f:
        assert [v.decode() for v in f["captions"][...]] == ["first frame", "second frame"]


def test_clear_errors(experiments, tmp_path):
    path, _ = experiments
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        from_hdf5(str(tmp_path / "nope.h5"), str(tmp_path / "x"))
    with pytest.raises(KeyError, match="Placebo"):
        from_hdf5(path, str(tmp_path / "x"), datasets=["Placebo"])


def test_a_failing_read_names_tensor_file_dataset_and_rows(tmp_path, pool):
    from slicewise.integrations._common import import_blocks
    from slicewise.integrations.hdf5 import HDF5Rows

    path = str(tmp_path / "e.h5")
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((4, 2))
    ds = sw.empty(str(tmp_path / "ds"), overwrite=True)
    ds.create_tensor("a", dtype="float64")
    # the error h5py raised, as the stdlib pools give it (issue 8), naming the failing job
    with pytest.raises(KeyError) as info:
        import_blocks(ds, [("a", HDF5Rows(path, "/gone"), 0, 4)], pool=pool)
    assert "rows [0:4] of HDF5 '/gone' in e.h5 -> tensor 'a'" in _described(info.value)


def test_export_attributes_carry_what_hdf5_holds_and_warn_about_the_rest(tmp_path):
    ds = sw.empty(str(tmp_path / "labels"), overwrite=True)
    ds.create_tensor("labels", htype="class_label", class_names=["control", "treated"])
    ds.labels.extend(np.array([0, 1, 1], np.uint32))
    ds.labels.info.update({"gains": [1, 2.5], "site": "B", "setup": {"amp": "A1"},
                           "note": None})
    out = str(tmp_path / "labels.h5")
    with pytest.warns(UserWarning, match=r"'labels'.*\['setup', 'note'\]") as caught:
        ds.to_hdf5(out)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with h5py.File(out, "r") as f:
        attrs = f["labels"].attrs
        assert list(attrs["class_names"]) == ["control", "treated"]
        np.testing.assert_allclose(attrs["gains"], [1.0, 2.5])
        assert attrs["site"] == "B" and attrs["slicewise_htype"] == "class_label"
        assert "setup" not in attrs and "note" not in attrs

    # and back: class labels are class labels again, with their names
    back = from_hdf5(out, str(tmp_path / "back"), num_workers=0)
    assert back.labels.htype == "class_label"
    assert back.labels.info["class_names"] == ["control", "treated"]
    assert back.labels.info["gains"] == [1.0, 2.5]
    assert "slicewise_htype" not in back.labels.info
    np.testing.assert_array_equal(back.labels.numpy()[:, 0], [0, 1, 1])


def test_export_refuses_every_unexportable_tensor_at_once(tmp_path):
    ds = sw.empty(str(tmp_path / "mixed"), overwrite=True)
    ds.create_tensor("frames", dtype="uint8")
    ds.frames.extend(np.zeros((2, 3), np.uint8))
    ds.create_tensor("masks", dtype="uint8")
    ds.masks.extend([np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8)])
    ds.create_tensor("notes", htype="json")
    ds.notes.extend([{"a": 1}])
    out = tmp_path / "mixed.h5"
    with pytest.raises(ValueError) as refused:
        ds.to_hdf5(str(out))
    message = str(refused.value)
    assert "'masks' is ragged" in message and "'notes' (htype 'json'" in message
    assert message.endswith("export the others with tensors=['frames']")
    assert not out.exists()
    with pytest.raises(TypeError, match="'notes'.*cannot become an HDF5 dataset"):
        ds.to_hdf5(str(out), tensors=["frames", "notes"])


# Text, and the round trip of everything to_hdf5 writes


def _strings(rows):
    return [str(v) for v in rows]


def test_every_tensor_to_hdf5_writes_comes_back_from_hdf5(tmp_path, pool):
    """ds.to_hdf5 then sw.from_hdf5: numeric N-D, text and class labels (with their names),
    values, htypes and info; and exporting the import again writes the same file."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 4000, size=(30, 6, 5), dtype=np.uint16)
    captions = [f"frame {i}: ünïcode ✓" if i % 7 else "" for i in range(300)]
    ds = sw.empty(str(tmp_path / "src"), overwrite=True)
    ds.create_tensor("frames", dtype="uint16")
    for piece in np.split(frames, [7, 19]):  # three stored chunks
        ds.frames.extend(piece)
    ds.create_tensor("captions", htype="text")
    for start in range(0, 300, 110):  # text in several stored chunks
        ds.captions.extend(captions[start:start + 110])
    ds.create_tensor("labels", htype="class_label", class_names=["control", "treated"])
    ds.labels.extend(np.array([0, 1, 1, 0], np.uint32))
    ds.create_tensor("weights", dtype="float32")
    ds.weights.extend(np.linspace(0, 1, 12, dtype=np.float32).reshape(4, 3))
    ds.captions.info.update({"language": "de", "sources": ["cam1", "cam2"]})
    assert len(ds.captions.chunk_row_ranges()) == 3

    first = str(tmp_path / "first.h5")
    ds.to_hdf5(first)
    with h5py.File(first, "r") as f:
        assert f["captions"].shape == (300,)
        assert h5py.check_string_dtype(f["captions"].dtype).encoding == "utf-8"
        assert list(f["captions"].asstr()[...]) == captions

    back = from_hdf5(first, str(tmp_path / "back"), pool=pool)
    assert sorted(back.tensors) == ["captions", "frames", "labels", "weights"]
    np.testing.assert_array_equal(back.frames.numpy(), frames)
    assert back.frames.dtype == np.uint16
    assert back.captions.htype == "text"
    assert back.captions.data()["value"] == captions
    assert back.captions.info["language"] == "de"
    assert back.captions.info["sources"] == ["cam1", "cam2"]
    assert back.labels.htype == "class_label"
    assert back.labels.info["class_names"] == ["control", "treated"]
    assert back.labels.text() == [["control"], ["treated"], ["treated"], ["control"]]
    np.testing.assert_array_equal(back.weights.numpy(), ds.weights.numpy())

    second = str(tmp_path / "second.h5")
    back.to_hdf5(second)
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype
            np.testing.assert_array_equal(a[name][()], b[name][()])
            assert sorted(a[name].attrs) == sorted(b[name].attrs)


@pytest.fixture
def foreign_strings(tmp_path):
    """String datasets as other tools write them, next to a number."""
    path = str(tmp_path / "strings.h5")
    with h5py.File(path, "w") as f:
        f["vlen"] = np.array(["alpha", "béta", ""], dtype=object)  # h5py's default for str
        f["fixed"] = np.array([b"ten bytes!", b"short", b""], dtype="S10")
        f.create_dataset("utf8", data=["x", "ÿ", "日本"], dtype=h5py.string_dtype())
        f.create_dataset("ascii", data=[b"a", b"b", b"c"], dtype=h5py.string_dtype("ascii"))
        f["fixed_utf8"] = np.array(["é".encode(), b"ok", b"x"], dtype="S8").astype(
            h5py.string_dtype("utf-8", 8))
        f.create_dataset("chunked", data=np.array([f"row {i}" for i in range(1000)],
                                                  dtype=object),
                         dtype=h5py.string_dtype(), chunks=(64,), compression="gzip")
        f["title"] = "a scalar string"
        f["gain"] = 2.5
        f["gain"].attrs["unit"] = "dB"
    return path


def test_string_datasets_from_other_tools_import_as_text(foreign_strings, tmp_path, pool):
    ds = from_hdf5(foreign_strings, str(tmp_path / "text"), pool=pool, block_bytes=1)
    expected = {
        "vlen": ["alpha", "béta", ""],
        "fixed": ["ten bytes!", "short", ""],
        "utf8": ["x", "ÿ", "日本"],
        "ascii": ["a", "b", "c"],
        "fixed_utf8": ["é", "ok", "x"],
        "chunked": [f"row {i}" for i in range(1000)],
        "title": ["a scalar string"],  # 0-D: a text tensor of one row
    }
    for name, values in expected.items():
        assert ds[name].htype == "text", name
        assert ds[name].data()["value"] == values, name
        assert ds[name].info["hdf5_path"] == f"/{name}"
    assert ds.title.info["hdf5_ndim"] == 0 and "hdf5_ndim" not in ds.vlen.info
    # a 0-D number is one row of shape (1,), as a 1-D dataset's rows are
    np.testing.assert_array_equal(ds.gain.numpy(), [[2.5]])
    assert ds.gain.info["unit"] == "dB" and ds.gain.info["hdf5_ndim"] == 0
    # small blocks: the 1000 chunked strings came in several worker jobs, in order
    assert len(ds.chunked.chunk_row_ranges()) > 1


def test_scalars_and_one_axis_datasets_go_back_with_their_shape(foreign_strings, tmp_path):
    ds = from_hdf5(foreign_strings, str(tmp_path / "s"), datasets=["title", "gain", "vlen"],
                   num_workers=0)
    out = str(tmp_path / "out.h5")
    ds.to_hdf5(out)
    with h5py.File(out, "r") as f:
        assert f["title"].shape == () and f["title"].asstr()[()] == "a scalar string"
        assert f["gain"].shape == () and f["gain"][()] == 2.5
        assert f["gain"].attrs["unit"] == "dB"
        assert f["vlen"].shape == (3,)
        assert list(f["vlen"].asstr()[...]) == ["alpha", "béta", ""]
        assert all("hdf5_ndim" not in f[name].attrs for name in f)

    # a scalar that gained rows is written as the 1-D dataset it has become
    more = sw.load(str(tmp_path / "s"))
    more.title.extend(["a second string"])
    more.to_hdf5(out)
    with h5py.File(out, "r") as f:
        assert list(f["title"].asstr()[...]) == ["a scalar string", "a second string"]


def test_strings_that_are_not_utf8_name_dataset_and_row(tmp_path, pool):
    path = str(tmp_path / "latin.h5")
    with h5py.File(path, "w") as f:
        f["names"] = np.array([b"Zurich", "Zürich".encode("latin-1")], dtype="S10")
    target = tmp_path / "latin"
    with pytest.raises(ValueError) as failed:
        from_hdf5(path, str(target), pool=pool)
    assert "HDF5 '/names' in latin.h5: row 1 is not UTF-8" in str(failed.value)
    assert "b'Z\\xfcrich'" in str(failed.value) and "datasets=[...]" in str(failed.value)
    assert not sw.exists(str(target))  # nothing half-imported is left behind


def test_compound_enum_and_reference_datasets_are_refused_by_name(experiments, tmp_path):
    path, _ = experiments
    with h5py.File(path, "a") as f:
        f.create_dataset("/odd/records", data=np.zeros(3, dtype=[("x", "i4"), ("y", "f8")]))
        f.create_dataset("/odd/colour", data=np.array([0, 1, 1], "u1"),
                         dtype=h5py.enum_dtype({"red": 0, "green": 1}, basetype="u1"))
        refs = f.create_dataset("/odd/links", (1,), dtype=h5py.ref_dtype)
        refs[0] = f["/meta/temperature"].ref
        f.create_dataset("/odd/grid", data=np.array([["a", "b"]], dtype=object),
                         dtype=h5py.string_dtype())
        f.create_dataset("/odd/ragged", (2,), dtype=h5py.vlen_dtype("i4"))
        f.create_dataset("/odd/nothing", data=h5py.Empty("f4"))
    target = tmp_path / "x"
    with pytest.raises(ValueError) as refused:
        from_hdf5(path, str(target), datasets=["odd", "meta"])
    message = str(refused.value)
    assert "/odd/records (shape (3,), compound dtype {x: int32, y: float64}" in message
    assert "split its fields" in message
    colour = message[message.index("/odd/colour"):]
    assert colour.startswith("/odd/colour (shape (3,), enum {")
    assert "'red': 0" in colour.split(")")[1] and "} over uint8: copy its codes" in colour
    assert "/odd/links (shape (1,), object references" in message
    assert "/odd/grid (shape (1, 2), strings: a text tensor holds one string per row" in message
    assert "/odd/ragged (shape (2,), variable-length sequences of int32" in message
    assert "/odd/nothing (dtype float32, an empty dataspace" in message
    assert message.endswith("import the others with datasets=['/meta/temperature']")
    assert not sw.exists(str(target))

    with pytest.raises(ValueError, match="nothing else was chosen to import"):
        from_hdf5(path, str(target), datasets=["/odd/colour"])
    # following the advice works
    ds = from_hdf5(path, str(target), datasets=["/meta/temperature", "Control"],
                   num_workers=0)
    assert len(ds.tensors) == 4


def _described(error: BaseException) -> str:
    """An error's message with the notes slicewise adds (the failing item)."""
    return "\n".join([str(error), *getattr(error, "__notes__", [])])


# ---------------------------------------------------------------------------------------------
# Groups: HDF5 groups are slicewise groups (Deep Lake 3's "/" names), and come back as they were


def _hdf5_tree(path: str) -> dict:
    """Every group and dataset of a file: path -> ("group",) or (shape, dtype, values)."""
    tree = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group):
                tree[name] = ("group",)
            elif h5py.check_string_dtype(obj.dtype) is not None:
                tree[name] = (obj.shape, "str", obj.asstr()[()].tolist()
                              if obj.ndim else obj.asstr()[()])
            else:
                tree[name] = (obj.shape, str(obj.dtype), obj[()].tolist())
        f.visititems(visit)
    return tree


@pytest.fixture
def grouped_file(tmp_path):
    """Nested groups, an empty group, and 0-D, 1-D and N-D datasets of several dtypes."""
    path = str(tmp_path / "grouped.h5")
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f["Control/Experiment 1"] = rng.random((5, 4, 3)).astype(np.float32)
        f["Control/Experiment 1"].attrs["exposure_ms"] = 12.5
        f["Control/Day 2/Experiment 2"] = rng.integers(0, 9, (6, 2), dtype=np.int16)
        f["Control/Day 2/temperature"] = np.linspace(20, 21, 7)                 # 1-D
        f["Control/Day 2/deep/er/gain"] = np.uint8(3)                            # 0-D
        f["Control/notes"] = np.array(["fine", "dusty lens"], dtype=h5py.string_dtype())
        f["Treatment/flags"] = np.array([True, False, True])
        f["title"] = "grouped experiments"                                       # 0-D text
        f.create_group("Placebo")                                                # empty
        f.create_group("Treatment/Later/Empty")
    return path


def test_hdf5_groups_round_trip_with_paths_shapes_dtypes_and_values(grouped_file, tmp_path, pool):
    ds = from_hdf5(grouped_file, str(tmp_path / "g"), pool=pool)
    assert sorted(ds.tensors) == [
        "Control/Day 2/Experiment 2", "Control/Day 2/deep/er/gain", "Control/Day 2/temperature",
        "Control/Experiment 1", "Control/notes", "Treatment/flags", "title"]
    assert sorted(ds.groups) == ["Control", "Control/Day 2", "Control/Day 2/deep",
                                 "Control/Day 2/deep/er", "Placebo", "Treatment",
                                 "Treatment/Later", "Treatment/Later/Empty"]
    # Deep Lake 3's ways to reach them
    assert ds.Control["Experiment 1"].shape == (5, 4, 3)
    assert ds.Control["Experiment 1"].info["exposure_ms"] == 12.5
    assert ds["Control/Day 2"]["Experiment 2"].dtype == np.int16
    assert ds.Control["Day 2"].deep.er.gain.numpy().tolist() == [[3]]
    assert ds.Placebo.tensors == {} and "Empty" in ds.Treatment.Later

    out = str(tmp_path / "back.h5")
    ds.to_hdf5(out)
    assert _hdf5_tree(out) == _hdf5_tree(grouped_file)
    with h5py.File(out, "r") as f:
        assert f["Control/Experiment 1"].attrs["exposure_ms"] == 12.5
        assert not any("hdf5_" in key for name in ("Control/Experiment 1", "title")
                       for key in f[name].attrs)


def test_hdf5_choosing_a_group_brings_its_empty_groups_and_no_others(grouped_file, tmp_path):
    ds = from_hdf5(grouped_file, str(tmp_path / "t"), datasets=["Treatment"], num_workers=0)
    assert list(ds.tensors) == ["Treatment/flags"]
    assert sorted(ds.groups) == ["Treatment", "Treatment/Later", "Treatment/Later/Empty"]


def test_a_deeplake3_grouped_dataset_exports_to_hdf5_groups(tmp_path):
    ds = sw.empty(str(tmp_path / "dl3"))
    with ds:
        ds.create_group("Control")
        ds.create_group("Control/empty")
        ds.Control.create_tensor("frames", dtype="uint16")
        ds.create_tensor("Treatment/labels", htype="text")
        ds.Control.frames.extend(np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
        ds["Treatment/labels"].extend(["a", "b"])
    out = ds.to_hdf5(str(tmp_path / "dl3.h5"))
    with h5py.File(out, "r") as f:
        assert isinstance(f["Control"], h5py.Group) and len(f["Control/empty"]) == 0
        np.testing.assert_array_equal(f["Control/frames"][()],
                                      np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
        assert f["Treatment/labels"].asstr()[()].tolist() == ["a", "b"]
    back = from_hdf5(out, str(tmp_path / "back"), num_workers=0)
    assert sorted(back.tensors) == sorted(ds.tensors)
    assert sorted(back.groups) == sorted(ds.groups)


def test_hdf5_names_that_cannot_be_tensor_names_say_how_to_rename(tmp_path):
    path = str(tmp_path / "odd.h5")
    with h5py.File(path, "w") as f:
        f["Control/_hidden"] = np.zeros(3)
    with pytest.raises(ValueError, match="Control/_hidden") as refused:
        from_hdf5(path, str(tmp_path / "x"), num_workers=0)
    assert "name it yourself" in str(refused.value)
    ds = from_hdf5(path, str(tmp_path / "y"), datasets={"Control/_hidden": "Control/hidden"},
                   num_workers=0)
    assert list(ds.Control.tensors) == ["hidden"]
