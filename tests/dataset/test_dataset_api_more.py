"""delete_tensor, pop, ds.info, rechunk, deepcopy/copy, as Deep Lake 3's pages use them;
kill -9 during pop and rechunk leaves the previous version."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import slicewise as deeplake

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "format"))
from kill_helpers import run_and_kill  # noqa: E402


def make(url, rows=10, **kwargs):
    ds = deeplake.empty(url, chunk_target_bytes=64, **kwargs)  # small chunks: many of them
    with ds:
        ds.create_tensor("x", dtype="int64")
        ds.create_tensor("labels", htype="class_label")
        for i in range(rows):
            ds.append({"x": np.arange(3) + i, "labels": ["a", "b", "c"][i % 3]})
    return ds


def test_delete_tensor(ds_url):
    ds = make(ds_url)
    old = ds.version
    ds.delete_tensor("x")
    assert list(ds.tensors) == ["labels"]
    assert deeplake.load(ds_url, version=old).x.numpy().shape == (10, 3)
    assert ds.diff(as_dict=True)["dataset"][0]["deleted"] == ["x"]
    with ds:  # a tensor created and deleted in one block never existed
        ds.create_tensor("tmp")
        ds.delete_tensor("tmp")
    assert "tmp" not in ds
    with pytest.raises(deeplake.DatasetError):
        ds.delete_tensor("nope")
    assert deeplake.verify(ds_url).ok


def test_pop_keeps_old_rows_in_the_log(ds_url):
    ds = make(ds_url)
    old = ds.version
    ds.pop(4)
    assert len(ds) == 9
    assert ds.x.numpy()[:, 0].tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert ds.labels.data()["text"][4] == ["c"]  # row 5's label
    ds.pop()  # the last row
    assert ds.x.numpy()[-1, 0] == 8
    assert ds.diff(as_dict=True)["tensor"][0]["x"]["data_deleted"] == {8}
    ds.checkout(old)
    assert len(ds) == 10 and ds.x[4].numpy().tolist() == [4, 5, 6]
    with pytest.raises(IndexError):
        deeplake.load(ds_url).pop(100)
    assert deeplake.verify(ds_url).ok


def test_dataset_info(ds_url):
    ds = make(ds_url)
    ds.info.update(description="animals", source={"url": "x"})
    assert ds.info.description == "animals"
    again = deeplake.load(ds_url)
    assert dict(again.info) == {"description": "animals", "source": {"url": "x"}}
    again.info = {"only": 1}
    assert dict(deeplake.load(ds_url).info) == {"only": 1}
    assert deeplake.verify(ds_url).ok


def test_rechunk(ds_url):
    ds = make(ds_url, rows=30)
    before = ds.numpy()
    chunks = len(ds._base.tensors["x"].keys)
    ds.rechunk(target_bytes=1 << 20)
    assert len(ds._base.tensors["x"].keys) == 1 < chunks
    assert len(ds._base.tensors["labels"].keys) == 1
    after = ds.numpy()
    assert np.array_equal(before["x"], after["x"])
    assert np.array_equal(before["labels"], after["labels"])
    assert ds.labels.data()["text"][:3] == [["a"], ["b"], ["c"]]
    assert ds.log()[0]["meta"]["rechunk"] is True
    assert deeplake.verify(ds_url).ok


def test_copy_and_deepcopy(ds_url, tmp_path):
    ds = make(ds_url)
    ds.checkout("alt", create=True)
    ds.x.append(np.array([7, 7, 7]))
    ds.checkout("main")
    deep = deeplake.deepcopy(ds_url, str(tmp_path / "deep"))
    assert deep.log() == ds.log() and deep.branches == ["main", "alt"]
    deep.checkout("alt")
    assert len(deep.x) == 11
    flat = ds.copy(str(tmp_path / "flat"))
    assert len(flat.log()) == 2 and np.array_equal(flat.x.numpy(), ds.x.numpy())
    assert flat.labels.data()["text"] == ds.labels.data()["text"]
    only_x = deeplake.deepcopy(ds, str(tmp_path / "only_x"), tensors=["x"])
    assert list(only_x.tensors) == ["x"]
    with pytest.raises(deeplake.DatasetError):
        deeplake.deepcopy(ds, str(tmp_path / "deep"))
    for path in ("deep", "flat", "only_x"):
        assert deeplake.verify(str(tmp_path / path)).ok


@pytest.mark.timeout(120)
def test_deepcopy_to_s3(tmp_path, s3_options, s3_url):
    pytest.importorskip("moto.server")
    ds = make(str(tmp_path / "ds"))
    copy = deeplake.deepcopy(ds, s3_url, storage_options=s3_options)
    assert np.array_equal(copy.x.numpy(), ds.x.numpy())
    assert deeplake.verify(s3_url, storage_options=s3_options).ok


CHILD = r"""
import os, signal, sys
import slicewise as sw
from slicewise.format import storage as storage_mod
path, what = sys.argv[1], sys.argv[2]
original = storage_mod.LocalStorage.set_if_not_exists
def put(self, key, data):
    if key.startswith("versions/"):  # the new version: die right before it lands
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, key, data)
ds = sw.load(path)
print("ready", flush=True)
storage_mod.LocalStorage.set_if_not_exists = put
if what == "pop":
    ds.pop(3)
else:
    ds.rechunk(target_bytes=1 << 20)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("what", ["pop", "rechunk"])
def test_kill_during_pop_and_rechunk(tmp_path, what):
    url = str(tmp_path / "ds")
    ds = make(url, rows=20)
    before, data = ds.version, ds.numpy()
    code, _ = run_and_kill(CHILD, [url, what], after=None)
    assert code == -9
    again = deeplake.load(url)
    assert again.version == before
    assert np.array_equal(again.x.numpy(), data["x"])
    assert deeplake.verify(url).ok
    report = deeplake.gc(url, grace_seconds=0)  # the dead run's chunks: unreferenced
    assert report.removed_files
    assert deeplake.verify(url).ok


def test_annotation_htypes(tmp_path):
    ds = deeplake.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("masks", htype="binary_mask", sample_compression="lz4")
        ds.create_tensor("seg", htype="segment_mask", class_names=["bg", "cat"])
        ds.create_tensor("kp", htype="keypoints_coco", keypoints=["nose", "eye"],
                         connections=[[0, 1]])
        ds.create_tensor("pc", htype="point_cloud")
        ds.append({"masks": np.ones((4, 5, 2), bool), "seg": np.ones((4, 5), np.uint32),
                   "kp": np.array([[1], [2], [2], [3], [4], [1]]),
                   "pc": np.zeros((7, 3))})
    again = deeplake.load(str(tmp_path / "ds"))
    assert again.masks[0].numpy().dtype == bool and again.masks[0].numpy().shape == (4, 5, 2)
    assert again.seg.numpy().dtype == np.uint32 and again.seg.info.class_names == ["bg", "cat"]
    assert again.kp[0].numpy().dtype == np.int32 and again.kp.info.keypoints == ["nose", "eye"]
    assert again.pc[0].numpy().dtype == np.float32 and again.pc[0].numpy().shape == (7, 3)


def test_read_array_is_a_property(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 5, 3), 7, np.uint8)).save(tmp_path / "a.png")
    sample = deeplake.read(str(tmp_path / "a.png"))
    assert isinstance(sample.array, np.ndarray) and sample.array.shape == (4, 5, 3)
    assert np.array_equal(sample.numpy(), sample.array)
