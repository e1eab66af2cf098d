"""Version control as Deep Lake 3's getting-started page writes it: commit, checkout a new
branch, commit there, log per branch, diff, merge with conflict policies, reset, delete
branches; on local disk, memory:// and S3 (moto); kill -9 during a merge."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import slicewise as deeplake
from slicewise.format.branches import list_branches
from slicewise.format.manifest import list_version_seqs
from slicewise.format.storage import open_storage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "format"))
from kill_helpers import run_and_kill  # noqa: E402


def make(url, **options):
    ds = deeplake.empty(url, storage_options=options or None)
    with ds:
        ds.create_tensor("abc")
        ds.create_tensor("labels", htype="class_label", class_names=["cat", "dog"])
        ds.abc.extend([np.array([1, 2, 3])] * 3)
        ds.labels.extend(["cat", "dog", "cat"])
    return ds


def test_getting_started_version_control(ds_url):
    ds = make(ds_url)
    first_commit = ds.commit("Added three rows")
    assert ds.branch == "main" and ds.branches == ["main"]

    ds.checkout("alt", create=True)
    assert ds.branch == "alt" and ds.version == first_commit
    with ds:  # Deep Lake 3 commits explicitly; slicewise commits each write outside `with`
        ds.abc.append(np.array([4, 5, 6]))
        alt_commit = ds.commit("Appended on alt")
    assert ds.abc.numpy().tolist() == [[1, 2, 3]] * 3 + [[4, 5, 6]]

    ds.checkout("main")
    assert ds.abc.numpy().tolist() == [[1, 2, 3]] * 3  # main never saw alt's row
    assert [e["id"] for e in ds.log()][0] == first_commit
    assert alt_commit not in [e["id"] for e in ds.log()]

    ds.checkout("alt")
    assert ds.log()[0]["id"] == alt_commit and ds.log()[1]["id"] == first_commit
    ds.checkout(first_commit)  # an old version: read-only
    assert ds.abc.numpy().tolist() == [[1, 2, 3]] * 3
    with pytest.raises(deeplake.DatasetError):
        ds.abc.append(np.array([0, 0, 0]))
    ds.checkout("main")
    assert sorted(ds.branches) == ["alt", "main"]

    # reopen: branches are in the storage, not in this handle
    again = deeplake.load(ds_url)
    assert again.branch == "main" and sorted(again.branches) == ["alt", "main"]
    again.checkout("alt")
    assert len(again.abc) == 4
    assert deeplake.verify(ds_url).ok


def test_diff_result_shape(ds_url):
    ds = make(ds_url)
    base = ds.version
    ds.checkout("alt", create=True)
    ds.abc.append(np.array([4, 5, 6]))
    ds.abc[0] = np.array([9, 9, 9])
    ds.checkout("main")
    ds.labels.append("dog")

    diff = ds.diff("alt", as_dict=True)
    ours, theirs = diff["tensor"]
    assert [c["commit_id"] for c in ours] == [ds.version]
    assert ours[0]["labels"]["data_added"] == [3, 4]
    assert [c["abc"]["data_added"] for c in theirs] == [[0, 0], [3, 4]]
    assert theirs[0]["abc"]["data_updated"] == {0}
    assert set(theirs[0]["abc"]) == {"created", "cleared", "info_updated", "data_added",
                                     "data_updated", "data_deleted",
                                     "data_transformed_in_place"}
    ds_changes = diff["dataset"][0][0]
    assert {"commit_id", "author", "message", "date", "info_updated", "renamed",
            "deleted"} <= set(ds_changes)

    one = ds.diff(as_dict=True)  # the current commit against its parent
    assert isinstance(one["tensor"], list) and one["tensor"][0]["labels"]["data_added"] == [3, 4]
    with pytest.raises(ValueError):
        ds.diff(None, base)
    with ds:
        ds.abc.append(np.array([0, 0, 0]))
        head = ds.diff(as_dict=True)["tensor"][0]
        assert head["commit_id"] == "HEAD" and head["abc"]["data_added"] == [3, 4]
        ds.reset()
    assert len(ds.abc) == 3 and not ds.has_pending
    assert ds.diff() is None  # prints


def test_merge_appends_updates_and_class_names(ds_url):
    ds = make(ds_url)
    ds.checkout("alt", create=True)
    with ds:
        ds.abc.append(np.array([4, 5, 6]))
        ds.labels.append("bird")  # a class name only alt has
        ds.abc[1] = np.array([7, 7, 7])
    ds.create_tensor("extra", htype="text")
    ds.extra.extend(["a", "b"])
    ds.checkout("main")
    with ds:
        ds.abc.append(np.array([0, 0, 0]))
        ds.labels.append("fish")  # another name: same new id on each side
    merged = ds.merge("alt")
    assert ds.version == merged and ds.log()[0]["meta"]["merge"]["from"] == "alt"
    assert ds.abc.numpy().tolist() == [[1, 2, 3], [7, 7, 7], [1, 2, 3], [0, 0, 0], [4, 5, 6]]
    assert ds.labels.data()["text"] == [["cat"], ["dog"], ["cat"], ["fish"], ["bird"]]
    assert ds.extra.data()["value"] == ["a", "b"]
    assert ds.merge("alt") == merged  # nothing new on alt
    # alt goes on; a second merge brings only what is new
    ds.checkout("alt")
    ds.abc.append(np.array([5, 5, 5]))
    ds.checkout("main")
    ds.merge("alt")
    assert ds.abc.numpy().tolist()[-2:] == [[4, 5, 6], [5, 5, 5]] and len(ds.abc) == 6
    assert deeplake.verify(ds_url).ok


def test_merge_conflicts_and_policies(tmp_path):
    url = str(tmp_path / "ds")
    ds = make(url)
    ds.checkout("alt", create=True)
    ds.abc[0] = np.array([1, 1, 1])
    ds.labels[2] = "dog"
    ds.checkout("main")
    ds.abc[0] = np.array([2, 2, 2])
    before = ds.version
    with pytest.raises(deeplake.MergeConflictError) as info:
        ds.merge("alt")
    assert info.value.conflicts == {"abc": {0}}
    assert ds.version == before and not ds.has_pending  # nothing was written
    with pytest.raises(ValueError):
        ds.merge("alt", conflict_resolution="mine")

    ds.merge("alt", conflict_resolution="ours")
    assert ds.abc[0].numpy().tolist() == [2, 2, 2]
    assert ds.labels.data()["text"][2] == ["dog"]  # not a conflict: taken from alt

    other = make(str(tmp_path / "other"))
    other.checkout("alt", create=True)
    other.abc[0] = np.array([1, 1, 1])
    other.checkout("main")
    other.abc[0] = np.array([2, 2, 2])
    other.merge("alt", conflict_resolution="theirs")
    assert other.abc[0].numpy().tolist() == [1, 1, 1]


def test_delete_branch_and_sub_branches(ds_url):
    ds = make(ds_url)
    ds.checkout("alt", create=True)
    ds.abc.append(np.array([4, 5, 6]))
    ds.checkout("alt2", create=True)  # a branch of a branch
    ds.abc.append(np.array([7, 8, 9]))
    assert len(ds.abc) == 5 and len(ds.log()) == len(deeplake.load(ds_url).log()) + 2
    with pytest.raises(deeplake.DatasetError, match="checked out"):
        ds.delete_branch("alt2")
    ds.checkout("main")
    with pytest.raises(deeplake.DatasetError, match="sub-branches"):
        ds.delete_branch("alt")
    with pytest.raises(deeplake.DatasetError):
        ds.delete_branch("main")
    with pytest.raises(deeplake.DatasetError, match="already exists"):
        ds.checkout("alt", create=True)
    ds.delete_branch("alt2")
    ds.delete_branch("alt")
    assert ds.branches == ["main"]
    with pytest.raises(deeplake.DatasetError):
        ds.checkout("alt")


def test_two_writers_on_two_branches_never_conflict(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    a, b = deeplake.load(url), deeplake.load(url)
    a.checkout("a", create=True)
    b.checkout("b", create=True)
    for i in range(5):
        a.abc.append(np.array([i, i, i]))
        b.abc.append(np.array([-i, -i, -i]))
    storage = open_storage(url)
    assert {br.name for br in list_branches(storage)} == {"main", "a", "b"}
    a.checkout("a")
    b.checkout("b")
    assert len(a.abc) == len(b.abc) == 8
    assert a.abc[-1].numpy().tolist() == [4, 4, 4] and b.abc[-1].numpy().tolist() == [-4] * 3
    # main's manifests are untouched, and stay version-2 files a reader from before opens
    main_seqs = list_version_seqs(storage)
    assert len(main_seqs) == len(deeplake.load(url).log())
    for seq in main_seqs:
        doc = storage.get(f"versions/{seq:012d}.json")
        assert json.loads(doc)["format_version"] == 2


def test_one_branch_two_writers_rebase(tmp_path):
    url = str(tmp_path / "ds")
    ds = make(url)
    ds.checkout("alt", create=True)
    other = deeplake.load(url)
    other.checkout("alt")
    ds.abc.append(np.array([1, 1, 1]))
    other.abc.append(np.array([2, 2, 2]))  # slot taken: rebased (both only append)
    ds.checkout("alt")
    assert sorted(ds.abc.numpy()[3:, 0].tolist()) == [1, 2]


def test_gc_spares_branch_chunks(tmp_path):
    url = str(tmp_path / "ds")
    ds = make(url)
    ds.checkout("alt", create=True)
    ds.abc.append(np.array([4, 5, 6]))
    ds.checkout("main")
    for i in range(3):
        ds.abc.append(np.array([i, i, i]))
    deeplake.gc(url, keep_last=1, grace_seconds=0)
    ds.checkout("alt")
    assert ds.abc.numpy().tolist() == [[1, 2, 3]] * 3 + [[4, 5, 6]]


@pytest.mark.timeout(120)
def test_branches_on_s3(s3_options, s3_url):
    pytest.importorskip("moto.server")
    ds = make(s3_url, **s3_options)
    ds.checkout("alt", create=True)
    ds.abc.append(np.array([4, 5, 6]))
    other = deeplake.load(s3_url, storage_options=s3_options)
    other.checkout("alt")
    other.abc.append(np.array([7, 7, 7]))  # the slot race, through If-None-Match
    ds.abc.append(np.array([8, 8, 8]))
    ds.checkout("main")
    assert len(ds.abc) == 3
    ds.merge("alt")
    assert sorted(ds.abc.numpy()[3:, 0].tolist()) == [4, 7, 8]
    assert deeplake.verify(s3_url, storage_options=s3_options).ok


MERGE_CHILD = r"""
import os, signal, sys
import slicewise as sw
from slicewise.format import storage as storage_mod
path = sys.argv[1]
original = storage_mod.LocalStorage.set_if_not_exists
def put(self, key, data):
    if key.startswith("versions/"):  # the merge's manifest: die right before it lands
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, key, data)
ds = sw.load(path)
print("ready", flush=True)
storage_mod.LocalStorage.set_if_not_exists = put
ds.merge("alt", conflict_resolution="theirs")
"""


@pytest.mark.timeout(90)
def test_kill_during_merge_leaves_previous_version(tmp_path):
    url = str(tmp_path / "ds")
    ds = make(url)
    ds.checkout("alt", create=True)
    ds.abc.append(np.array([4, 5, 6]))
    ds.abc[0] = np.array([5, 5, 5])
    ds.checkout("main")
    ds.abc[0] = np.array([6, 6, 6])  # a conflict: the merge writes a chunk by value
    before = ds.version
    code, _ = run_and_kill(MERGE_CHILD, [url], after=None)
    assert code == -9
    again = deeplake.load(url)
    assert again.version == before and len(again.abc) == 3
    assert again.abc[0].numpy().tolist() == [6, 6, 6]
    assert deeplake.verify(url).ok
    again.merge("alt", conflict_resolution="theirs")  # and the merge still works
    assert again.abc[0].numpy().tolist() == [5, 5, 5] and len(again.abc) == 4
