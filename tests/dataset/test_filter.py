"""ds.filter and ds.query as Deep Lake 3's filtering page writes them: a lambda, an
@deeplake.compute filter function with bound arguments, in parallel on threads and
processes; the view reads, goes into eval, is saved and exported; kill -9 while a filter
saves its result leaves the dataset as it was."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import slicewise as deeplake
from slicewise.dataset.filtering import QueryError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "format"))
from kill_helpers import run_and_kill  # noqa: E402


@pytest.fixture
def animals(tmp_path, jpeg_files):
    ds = deeplake.empty(str(tmp_path / "animals"))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=["dog", "cat"])
        ds.create_tensor("size", dtype="int32")
        ds.create_tensor("name", htype="text")
        for i, f in enumerate(jpeg_files):
            ds.append({"images": deeplake.read(f), "labels": f.split("/")[-2],
                       "size": np.int32(i), "name": f"animal {i}"})
    return ds


@deeplake.compute
def filter_labels(sample_in, labels_list):
    return sample_in.labels.data()["text"][0] in labels_list


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduler,workers", [("serial", 0), ("threaded", 2),
                                               ("processed", 2)])
def test_filter_like_deeplake(animals, scheduler, workers):
    view = animals.filter(filter_labels(labels_list=["cat"]), scheduler=scheduler,
                          num_workers=workers, progressbar=False)
    assert view.index == [1, 3, 5]
    assert len(view) == 3
    assert view.labels.data()["text"] == [["cat"]] * 3
    assert view.images[0].numpy().shape == animals.images[1].numpy().shape
    assert view[2].size.numpy().tolist() == [5]
    lam = animals.filter(lambda s: int(s.size.numpy()[0]) % 3 == 0, scheduler=scheduler,
                         num_workers=workers, progressbar=False)
    assert lam.index == [0, 3]
    assert lam.filter(lambda s: s.labels.text()[0] == "cat").index == [3]


def test_query_subset(animals):
    assert animals.query("labels == 'cat'").index == [1, 3, 5]
    assert animals.query("select * where labels = 'dog' AND size > 1").index == [2, 4]
    assert animals.query("size >= 4 or labels in ['cat']").index == [1, 3, 4, 5]
    assert animals.query("not (size < 5)").index == [5]
    assert animals.query("name == 'animal 2'").index == [2]
    assert animals.filter("labels == 'cat'").index == [1, 3, 5]  # filter takes TQL too
    for bad in ("images > 3", "size.mean() > 1", "nosuch == 1", "size ="):
        with pytest.raises(QueryError):
            animals.query(bad)


@deeplake.compute
def copy_size(sample_in, sample_out):
    sample_out.append({"size": sample_in.size.numpy() * 10})


@pytest.mark.timeout(120)
def test_view_into_eval_save_and_export(animals, tmp_path):
    view = animals.query("labels == 'cat'")
    out = deeplake.empty(str(tmp_path / "out"))
    out.create_tensor("size", dtype="int32")
    copy_size().eval(view, out, num_workers=2, scheduler="threaded", progressbar=False)
    assert out.size.numpy().ravel().tolist() == [10, 30, 50]

    view_id = view.save_view(message="cats")
    again = deeplake.load(animals.path).load_view(view_id)
    assert again.index == [1, 3, 5] and again.version == animals.version
    assert [v["id"] for v in animals.get_views()] == [view_id]

    copied = deeplake.copy(view, str(tmp_path / "cats"))
    assert len(copied) == 3
    assert copied.images[0].tobytes() == animals.images[1].tobytes()  # stored as it was
    assert copied.labels.data()["text"] == [["cat"]] * 3

    saved = animals.filter(lambda s: s.labels.text()[0] == "dog", save_result=True,
                           result_path=str(tmp_path / "dogs"), progressbar=False)
    assert deeplake.load(str(tmp_path / "dogs")).size.numpy().ravel().tolist() == saved.index


FILTER_CHILD = r"""
import os, signal, sys
import slicewise as sw
from slicewise.format import storage as storage_mod
path, result = sys.argv[1], sys.argv[2]
original = storage_mod.LocalStorage.set_if_not_exists
count = {"n": 0}
def put(self, key, data):
    if key.startswith("versions/") and "result" in self.root:
        count["n"] += 1
        if count["n"] == 2:  # the result's data commit: die right before it lands
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, key, data)
storage_mod.LocalStorage.set_if_not_exists = put
ds = sw.load(path)
print("ready", flush=True)
ds.filter(lambda s: True, save_result=True, result_path=result, progressbar=False)
"""


@pytest.mark.timeout(90)
def test_kill_during_filter_save_result(animals, tmp_path):
    before = animals.version
    result = str(tmp_path / "result")
    code, _ = run_and_kill(FILTER_CHILD, [animals.path, result], after=None)
    assert code == -9
    again = deeplake.load(animals.path)
    assert again.version == before and deeplake.verify(animals.path).ok
    partial = deeplake.load(result)  # the result dataset: created, its rows never published
    assert len(partial) == 0
    assert deeplake.verify(result).ok


def test_a_slice_of_rows_is_a_view_as_in_deeplake(animals, tmp_path):
    """Deep Lake 3 writes `ds[a:b].save_view()`, `ds[a:b].filter(...)`: a slice of rows is
    a view of the dataset, and the rows keep their numbers in it."""
    n = len(animals)
    view_id = animals[2:n].save_view(message="from row 2", id="tail")
    loaded = deeplake.load(animals.path, read_only=True).load_view(view_id)
    assert loaded.index == list(range(2, n))
    assert loaded.size.numpy().ravel().tolist() == list(range(2, n))
    odd = animals[1:n].filter(lambda s: int(s.size.numpy().ravel()[0]) % 2 == 1)
    assert odd.index == list(range(1, n, 2))
    assert animals[[0, 3]].query("size == 3").index == [3]
    copied = animals[[4, 1]].copy(str(tmp_path / "two"))
    assert copied.name.data()["value"] == ["animal 4", "animal 1"]
    with pytest.raises(TypeError, match="one row"):
        animals[0].save_view()
