"""The Dataset API with Deep Lake 3's names, on a local directory and memory://."""

from __future__ import annotations

import json
import os
import pickle
import time

import numpy as np
import pytest

import slicewise as sw
from slicewise.format import DatasetWriter, ReadOnlyError, SampleError


def test_seed_000_shape_serial(ds_url, jpeg_files):
    """Seed 000's dataset, written through the parent path: rows in order, JPEG bytes
    identical to the files, labels, decoded HWC uint8."""
    class_names = ["dog", "cat"]
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=class_names)
        for f in jpeg_files:
            label = class_names.index(f.split("/")[-2])
            ds.append({"labels": np.uint32(label), "images": sw.read(f)})
    assert len(ds) == 6
    for i, f in enumerate(jpeg_files):
        with open(f, "rb") as fh:
            assert ds.images[i].tobytes() == fh.read()
    img = ds.images[0].numpy()
    assert img.dtype == np.uint8 and img.shape == (40, 50, 3)
    from PIL import Image

    assert np.array_equal(img, np.asarray(Image.open(jpeg_files[0])))
    assert ds.labels.numpy().ravel().tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.labels[1].data()["text"] == ["cat"]
    assert ds.images.shape == (6, None, 50, 3)
    assert ds.images.is_ragged
    reopened = sw.load(ds_url)
    assert reopened.version == ds.version
    assert reopened.images[5].tobytes() == ds.images[5].tobytes()


def test_with_block_discards_on_exception(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.x.extend([1, 2, 3])
    before = ds.version
    with pytest.raises(RuntimeError):
        with ds:
            ds.x.extend([4, 5])
            ds.create_tensor("y")
            raise RuntimeError("boom")
    assert ds.version == before
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3]
    assert "y" not in ds.tensors
    assert sw.load(ds_url).x.numpy().ravel().tolist() == [1, 2, 3]


def test_outside_with_each_write_commits(ds_url):
    ds = sw.empty(ds_url)
    ds.create_tensor("x")
    v1 = ds.version
    ds.x.append(np.arange(3))
    v2 = ds.version
    assert v1 != v2
    assert sw.load(ds_url).x[0].numpy().tolist() == [0, 1, 2]
    old = sw.load(ds_url, version=v1)
    assert len(old.x) == 0
    assert old.read_only
    with pytest.raises(ReadOnlyError):
        old.x.append(np.arange(3))


def test_reads_inside_with_see_pending_rows(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("x", dtype="float32")
        ds.x.extend([np.ones(2), np.zeros(3)])
        assert len(ds.x) == 2
        assert ds.x[1].numpy().tolist() == [0, 0, 0]
        ds.x.append(np.ones(1))
        assert len(ds.x) == 3
    assert [len(a) for a in ds.x.numpy(aslist=True)] == [2, 3, 1]


def test_commit_inside_with_and_meta(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("x", dtype="int64")
        ds.x.extend([1, 2])
        first = ds.commit("checkpoint", meta={"done": 2})
        ds.x.extend([3])
    assert ds.version != first
    log = ds.log()
    assert log[1]["id"] == first and log[1]["meta"] == {"done": 2}
    assert sw.load(ds_url, version=first).x.numpy().ravel().tolist() == [1, 2]
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3]
    ds.checkout(first)
    assert len(ds.x) == 2 and ds.read_only
    ds.checkout()
    assert len(ds.x) == 3 and not ds.read_only


def test_writer_receipts_and_class_labels_across_writers(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("labels", htype="class_label", class_names=["cat"])
        ds.create_tensor("x", dtype="uint8")
        spec = json.loads(json.dumps(ds.writer_spec()))
        w1 = DatasetWriter.from_spec(spec, "w1")
        w2 = DatasetWriter.from_spec(spec, "w2")
        w1.append_row({"labels": "dog", "x": 1})
        w1.append_row({"labels": "cat", "x": 2})
        w2.append_row({"labels": "emu", "x": 3})
        w2.append_row({"labels": "dog", "x": 4})
        w2.append_row({"labels": ["emu", "cat"], "x": 5})
        receipts = [json.loads(json.dumps(w.finish())) for w in (w1, w2)]
        assert all(len(json.dumps(r)) < 1500 for r in receipts)
        ds.add_receipts(receipts)
        ds.commit("eval", meta={"fingerprint": "abc"})
    assert ds.labels.info.class_names == ["cat", "dog", "emu"]
    assert [d for d in ds.labels.data()["text"]] == [
        ["dog"],
        ["cat"],
        ["emu"],
        ["dog"],
        ["emu", "cat"],
    ]
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3, 4, 5]
    assert ds.version_info["meta"] == {"fingerprint": "abc"}
    assert sw.verify(ds_url).ok


def test_tensor_names_are_validated(ds_url):
    ds = sw.empty(ds_url)
    bad_names = ["", "a\\b", "..", "x..y", ".hidden", "_internal", "commit", 3,
                 # "/" separates groups (test_groups.py); a name is never a path out
                 "/abs", "a/", "a//b", "a/../b", "a/./b", "../b", "a/.hidden", "commit/x"]
    for bad in bad_names:
        with pytest.raises(sw.DatasetError):
            ds.create_tensor(bad)
    ds.create_tensor("ok")
    with pytest.raises(sw.DatasetError, match="already exists"):
        ds.create_tensor("ok")


def test_htypes_text_json_bbox_embedding(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("t", htype="text")
        ds.create_tensor("j", htype="json")
        ds.create_tensor("b", htype="bbox", coords={"type": "pixel"})
        ds.create_tensor("e", htype="embedding")
        ds.append({"t": "héllo", "j": {"a": [1, 2]}, "b": [[1, 2, 3, 4]], "e": np.ones(4)})
        ds.append({"t": "x", "j": [1, None], "b": np.zeros((2, 4)), "e": np.zeros(4)})
    assert ds.t[0].data() == {"value": "héllo"}
    assert ds.t[0].numpy().tolist() == ["héllo"]
    assert ds.j[0].data() == {"value": {"a": [1, 2]}}
    assert ds.j.data()["value"] == [{"a": [1, 2]}, [1, None]]
    assert ds.b.info.coords == {"type": "pixel"}
    assert ds.b[1].numpy().shape == (2, 4) and ds.b.dtype == np.float32
    assert ds.e.numpy().shape == (2, 4) and ds.e.numpy().dtype == np.float32
    with pytest.raises(SampleError, match="'t'"):
        ds.t.append(5)


def test_images_encode_png_webp_and_gray(ds_url):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    gray = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("png", htype="image", sample_compression="png")
        ds.create_tensor("webp", htype="image.rgb", sample_compression="webp")
        ds.create_tensor("g", htype="image.gray", sample_compression="png")
        ds.append({"png": rgb, "webp": rgb, "g": gray})
    assert np.array_equal(ds.png[0].numpy(), rgb)
    assert ds.webp[0].numpy().shape == (20, 30, 3)
    assert np.array_equal(ds.g[0].numpy(), gray[:, :, None])  # image.gray: (H, W, 1)
    assert ds.g[0].shape == (20, 30, 1)


def test_read_missing_and_corrupt_file_names_the_path(ds_url, tmp_path):
    ds = sw.empty(ds_url)
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(SampleError, match="nope.jpg"):
        ds.images.append(sw.read(missing))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(SampleError, match="garbage.jpg"):
        ds.images.append(sw.read(str(garbage)))
    assert len(ds.images) == 0


def test_read_png_into_jpeg_tensor_reencodes(ds_url, tmp_path):
    from PIL import Image

    arr = np.full((8, 9, 3), 120, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    ds = sw.empty(ds_url)
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    ds.images.append(sw.read(tmp_path / "a.png"))
    assert ds.images[0].tobytes()[:3] == b"\xff\xd8\xff"
    assert np.abs(ds.images[0].numpy().astype(int) - 120).max() <= 3


def test_indexing_views_and_iteration(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("x", dtype="int16")
        ds.create_tensor("y", dtype="float64")
        for i in range(10):
            ds.append({"x": np.full(2, i), "y": np.arange(i % 3 + 1)})
    assert ds.x[2:5].numpy()[:, 0].tolist() == [2, 3, 4]
    assert ds.x[[7, 1, -1]].numpy()[:, 0].tolist() == [7, 1, 9]
    assert isinstance(ds.y[0:3].numpy(), list)
    assert [len(a) for a in ds.y[0:3].numpy()] == [1, 2, 3]
    assert ds.x[::3].numpy()[:, 0].tolist() == [0, 3, 6, 9]
    row = ds[4]
    assert row.x.numpy().tolist() == [4, 4] and row["y"].numpy().tolist() == [0, 1]
    assert [int(t.numpy()[0]) for t in ds.x][:3] == [0, 1, 2]
    assert len(list(ds)) == 10
    assert ds.x[3].shape == (2,)
    assert ds.x.shape == (10, 2) and ds.y.shape == (10, None)
    with pytest.raises(IndexError):
        ds.x[10]


def test_setitem_writes_new_version(ds_url):
    ds = sw.empty(ds_url)
    ds.create_tensor("x", dtype="int32")
    ds.x.extend([np.arange(3) for _ in range(4)])
    before = ds.version
    ds.x[2] = np.array([9, 9])
    assert ds.x[2].numpy().tolist() == [9, 9]
    assert ds.x[1].numpy().tolist() == [0, 1, 2]
    assert sw.load(ds_url, version=before).x[2].numpy().tolist() == [0, 1, 2]
    ds.create_tensor("labels", htype="class_label", class_names=["a"])
    ds.labels.extend(["a", "b", "c"])
    ds.labels[0] = "z"
    assert ds.labels.data()["text"] == [["z"], ["b"], ["c"]]
    assert sw.verify(ds_url).ok


def test_pickle_is_a_light_read_only_handle(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("x")
    ds.x.append(np.ones(3))
    blob = pickle.dumps(ds)
    assert len(blob) < 500
    other = pickle.loads(blob)
    assert other.read_only and other.version == ds.version
    assert other.x[0].numpy().tolist() == [1, 1, 1]


def test_empty_load_exists_delete_dataset(tmp_path):
    url = str(tmp_path / "ds")
    assert not sw.exists(url)
    with pytest.raises(sw.DatasetError, match="no slicewise dataset"):
        sw.load(url)
    ds = sw.dataset(url)
    assert sw.exists(url)
    ds.create_tensor("x")
    with pytest.raises(sw.DatasetError, match="already exists"):
        sw.empty(url)
    assert "x" not in sw.empty(url, overwrite=True).tensors
    assert sw.dataset(url).version == sw.load(url).version
    sw.delete(url)
    assert not sw.exists(url)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(sw.DatasetError):
        sw.delete(str(tmp_path / "other"))
    with pytest.raises(sw.DatasetError, match="not empty"):
        sw.empty(str(tmp_path / "other"))


def test_chunking_respects_target_and_big_samples(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url, chunk_target_bytes=1000)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.x.extend([np.zeros(300, np.uint8)] * 10)
        ds.x.append(np.zeros(5000, np.uint8))
    ranges = ds.x.chunk_row_ranges()
    assert ranges[0] == (0, 4) and ranges[-1][1] == 11
    assert all(b - a <= 4 for a, b in ranges)
    assert ds.x[10].numpy().shape == (5000,)
    assert sw.load(url).chunk_target_bytes == 1000


def test_dtype_rules(ds_url):
    ds = sw.empty(ds_url)
    ds.create_tensor("g")
    ds.g.append(np.arange(3, dtype=np.int16))
    assert ds.g.dtype == np.int16
    ds.g.append([1, 2])  # python ints fit int16
    with pytest.raises(SampleError, match="'g'"):
        ds.g.append(np.array([1.5]))
    with pytest.raises(sw.DatasetError, match="htype"):
        ds.create_tensor("h", htype="nope")
    with pytest.raises(sw.DatasetError, match="sample_compression"):
        ds.create_tensor("h", htype="text", sample_compression="jpeg")


def test_summary_and_info(ds_url, capsys):
    ds = sw.empty(ds_url)
    ds.create_tensor("x", dtype="uint8")
    ds.x.info.update(unit="mm")
    assert sw.load(ds_url).x.info.unit == "mm"
    ds.summary()
    assert "x" in capsys.readouterr().out


def test_class_names_is_plain_info_on_a_tensor_that_is_not_a_class_label(ds_url):
    # e.g. an HDF5 attribute carried over by from_hdf5 onto a plain array
    ds = sw.empty(ds_url)
    ds.create_tensor("x", dtype="uint8")
    ds.create_tensor("labels", htype="class_label")
    ds.x.info.update(class_names=["a", "b"])
    ds.labels.info.update(class_names=["cat", "dog"])
    again = sw.load(ds_url)
    assert again.x.info.class_names == ["a", "b"]
    assert again.labels.info.class_names == ["cat", "dog"]


def test_failed_extend_inside_with_leaves_no_rows(ds_url):
    ds = sw.empty(ds_url, chunk_target_bytes=64)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.create_tensor("labels", htype="class_label")
        ds.x.extend([np.zeros(10, np.uint8)] * 3)
        ds.labels.extend(["a", "b", "c"])
        bad = [np.ones(40, np.uint8)] * 5 + ["not a number"]
        with pytest.raises(SampleError, match="item 5"):
            ds.x.extend(bad)  # flushes chunks before failing
        with pytest.raises(SampleError, match="row 1"):
            ds.extend({"x": [np.ones(2, np.uint8), None], "labels": ["new", "d"]})
        ds.x.append(np.full(3, 7, np.uint8))
        ds.labels.append("d")
    assert [a.tolist() for a in ds.x.numpy(aslist=True)] == [[0] * 10] * 3 + [[7, 7, 7]]
    assert ds.labels.info.class_names == ["a", "b", "c", "d"]
    assert sw.verify(ds_url).ok


def test_gc_retention_and_grace(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("x", dtype="int32")
    versions = []
    for i in range(4):
        ds.x.append(np.array([i]))
        versions.append(ds.version)
    from slicewise.format import DatasetWriter

    leftover = DatasetWriter.from_spec(ds.writer_spec(), "dead")
    leftover.append("x", np.array([99]))
    receipt = leftover.finish()  # written, never committed: a dead writer's chunk
    tensor_id = ds.x.meta.id
    dead = [f"chunks/{tensor_id}/{c['key']}" for c in receipt["tensors"]["x"]["chunks"]]
    recent = sw.gc(url, keep_last=2)  # every version was newest a moment ago: all stay
    assert recent.removed_versions == [] and recent.removed_files == []
    assert sw.load(url, version=versions[0]).x.numpy().ravel().tolist() == [0]
    an_hour_ago = time.time() - 3600  # the versions were superseded long ago
    for name in os.listdir(os.path.join(url, "versions")):
        os.utime(os.path.join(url, "versions", name), (an_hour_ago, an_hour_ago))
    fresh = sw.gc(url, keep_last=2)  # default grace: the fresh leftover stays
    assert fresh.removed_files == [] and len(fresh.removed_versions) == 4
    assert sw.load(url, version=versions[-2]).x.numpy().ravel().tolist() == [0, 1, 2]
    with pytest.raises(sw.DatasetError, match="does not exist"):
        sw.load(url, version=versions[0])
    report = sw.gc(url, grace_seconds=0)
    assert report.removed_files == dead  # every kept version still needs the other chunks
    assert sw.load(url).x.numpy().ravel().tolist() == [0, 1, 2, 3]
    assert sw.verify(url).ok


def make_uneven(url):
    """images 5 rows, vec 4, labels 3, name 3, meta 2: Deep Lake 3's uneven dataset."""
    rng = np.random.default_rng(2)
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="png")
        ds.create_tensor("vec", htype="embedding")
        ds.create_tensor("labels", htype="class_label", class_names=["a", "b"])
        ds.create_tensor("name", htype="text")
        ds.create_tensor("meta", htype="json")
        ds.images.extend([rng.integers(0, 255, (4 + i, 6, 3), dtype=np.uint8) for i in range(5)])
        ds.vec.extend(np.arange(16, dtype=np.float32).reshape(4, 4))
        ds.labels.extend(["a", "b", "a"])
        ds.name.extend(["n0", "n1", "n2"])
        ds.meta.extend([{"i": 0}, {"i": 1}])
    return ds


def test_padded_view_reads_empty_samples_past_a_short_tensor(ds_url):
    ds = make_uneven(ds_url)
    assert (len(ds), ds.min_len, ds.max_len) == (2, 2, 5)
    view = ds.padded()
    assert view.pad_tensors and view.read_only and "padded" in repr(view)
    assert not ds.pad_tensors and len(ds) == 2  # the dataset itself is unchanged
    assert (len(view), view.min_len, view.max_len) == (5, 2, 5)

    row = view[4]
    labels = row.labels.numpy()
    assert labels.shape == (0,) and labels.dtype == np.uint32
    image = row.images.numpy()
    assert image.shape == (4 + 4, 6, 3) and image.dtype == np.uint8  # images has 5 rows
    vec = row.vec.numpy()
    assert vec.shape == (0,) and vec.dtype == np.float32
    assert row.name.data() == {"value": ""}
    assert row.name.numpy().tolist() == [""]
    assert row.meta.data() == {"value": {}}
    assert row.labels.data()["text"] == []
    assert view[1].labels.data()["text"] == ["b"]  # stored rows read as before
    assert view[2].meta.data() == {"value": {}} and view[1].meta.data() == {"value": {"i": 1}}
    assert view[3].vec.numpy().tolist() == [12, 13, 14, 15]

    assert view.labels[4].tobytes() == b"" and view.labels[0].tobytes() != b""
    assert view.labels[4].shape == (0,) and view.name[4].shape == (1,)
    assert view.labels[1:5].numpy(aslist=True)[1].tolist() == [0]
    assert [a.shape for a in view.labels[1:5].numpy()] == [(1,), (1,), (0,), (0,)]
    assert [a.shape for a in view.labels[[4, 0, -1]].numpy()] == [(0,), (1,), (0,)]
    assert view.labels[3:5].numpy().shape == (2, 0)  # only empty samples: they stack
    assert view.labels[5:5].numpy(aslist=True) == [] and view.name[4:].data()["value"] == [""]
    assert view.name[2:5].data()["value"] == ["n2", "", ""]
    assert view[3:5].meta.data()["value"] == [{}, {}]
    assert [r.labels.numpy().size for r in view] == [1, 1, 1, 0, 0]

    # a tensor keeps its own length and stored rows; indexing covers the view's rows
    assert len(view.labels) == 3 and view.labels.numpy().ravel().tolist() == [0, 1, 0]
    for bad in (lambda: view[5], lambda: view.labels[5], lambda: ds.labels[3], lambda: ds[2]):
        with pytest.raises(IndexError):
            bad()


def test_padded_view_is_read_only_and_travels_padded(ds_url):
    ds = make_uneven(ds_url)
    view = ds.padded()
    before = ds.version
    writes = [
        lambda: view.labels.append("a"),
        lambda: view.labels.extend(["a"]),
        lambda: view.append({"labels": "a"}, skip_ok=True),
        lambda: view.create_tensor("z"),
        lambda: view.labels.info.update(note=1),
        lambda: view.commit("x"),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError, match="padded read view"):
            write()
    with pytest.raises(ReadOnlyError, match="padded read view"):
        view.labels[0] = "b"
    assert sw.load(ds_url).version == before and len(ds.labels) == 3

    copy = pickle.loads(pickle.dumps(view))
    assert copy.pad_tensors and len(copy) == 5 and copy.version == view.version
    assert copy[4].labels.numpy().shape == (0,)
    assert not pickle.loads(pickle.dumps(ds)).pad_tensors
    loaded = sw.load(ds_url, pad_tensors=True)
    assert loaded.pad_tensors and loaded.read_only and len(loaded) == 5
    assert loaded[3].name.data() == {"value": ""}
    assert not sw.load(ds_url).pad_tensors


def test_padded_view_of_tensors_without_samples_and_pending_changes(ds_url):
    ds = sw.empty(ds_url)
    with ds:
        ds.create_tensor("x", dtype="int16")
        ds.create_tensor("scalars")
        ds.create_tensor("nothing")
        ds.create_tensor("pics", htype="image", sample_compression="png")
        ds.x.extend([np.int16(i) for i in range(2)])
        ds.scalars.extend([np.float32(1.5)])
    view = ds.padded()
    assert len(view) == 2 and len(ds) == 0
    assert view[1].x.numpy().reshape(-1).tolist() == [1]
    scalar = view[1].scalars.numpy()  # an empty scalar has no 0-d form
    assert scalar.shape == (0,) and scalar.dtype == np.float32
    nothing = view[0].nothing.numpy()  # no samples, no dtype yet: what it would store
    assert nothing.shape == (0,) and nothing.dtype == np.float64
    pics = view[0].pics.numpy()
    assert pics.shape == (0, 0, 0) and pics.dtype == np.uint8
    with ds:
        ds.x.append(np.int16(5))
        with pytest.raises(sw.DatasetError, match="uncommitted"):
            ds.padded()
    assert len(ds.padded()) == 3


def test_deeplake_arguments_are_accepted_and_typos_are_not(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url, overwrite=False, verbose=False, token=None, org_id=None, runtime=None,
                  lock_enabled=True, memory_cache_size=256)
    ds.create_tensor("x", dtype="uint8")
    assert sw.load(url, read_only=True, verbose=False, check_integrity=True, reset=False).read_only
    assert sw.exists(url, token=None)
    assert "x" in sw.dataset(url, access_method="stream", verbose=False).tensors
    for call in (lambda: sw.empty(url, overwirte=True), lambda: sw.load(url, versoin=1),
                 lambda: sw.dataset(url, read_olny=True), lambda: sw.delete(url, forse=True),
                 lambda: sw.exists(url, creds_=None)):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            call()
    assert sw.exists(url)  # nothing happened: every call above was refused up front
    sw.delete(url, force=True, large_ok=True)
    assert not sw.exists(url)

