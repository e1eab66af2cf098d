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
        f"{g}.Experiment {i}" for g in ("Control", "Treatment") for i in range(1, 4)
    )
    for name, frames in data.items():
        tensor = ds[name.strip("/").replace("/", ".")]
        np.testing.assert_array_equal(tensor.numpy(), frames)
        assert tensor.info["hdf5_path"] == name
        assert tensor.info["objective"] == "40x"

    # seed: lazily, through dask, only when needed
    controls = [ds[f"Control.Experiment {i}"].dask() for i in range(1, 4)]
    means = da.stack([c.mean() for c in controls]).compute()
    np.testing.assert_allclose(means, [data[f"/Control/Experiment {i}"].mean()
                                       for i in range(1, 4)])


def test_whole_file_and_renamed_datasets(experiments, tmp_path):
    path, data = experiments
    ds = from_hdf5(path, str(tmp_path / "all"), num_workers=2)
    assert "meta.temperature" in ds.tensors and len(ds.tensors) == 7
    # a 1-D dataset's rows are scalars, stored as samples of shape (1,) like Deep Lake's
    np.testing.assert_allclose(ds["meta.temperature"].numpy()[:, 0], np.linspace(20, 21, 7))

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
        assert f["/meta/temperature"].shape == (7, 1)


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
    with h5py.File(path, "a") as f:
        f.create_dataset("/notes", data=np.array([b"calibrated"], dtype=object),
                         dtype=h5py.string_dtype())
    with pytest.raises(ValueError, match=r"/notes.*datasets=\["):
        from_hdf5(path, str(tmp_path / "x"))


def test_a_failing_read_names_tensor_file_dataset_and_rows(tmp_path, pool):
    from slicewise.integrations._common import import_blocks
    from slicewise.integrations.hdf5 import HDF5Rows

    path = str(tmp_path / "e.h5")
    with h5py.File(path, "w") as f:
        f["a"] = np.zeros((4, 2))
    ds = sw.empty(str(tmp_path / "ds"), overwrite=True)
    ds.create_tensor("a", dtype="float64")
    with pytest.raises(sw.TaskError) as info:
        import_blocks(ds, [("a", HDF5Rows(path, "/gone"), 0, 4)], pool=pool)
    assert "rows [0:4] of HDF5 '/gone' in e.h5 -> tensor 'a'" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


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
