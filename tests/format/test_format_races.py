"""Races and retention: a commit that lands while gc runs, a writer slower than gc's grace
period, a listing that lags behind the versions that landed, readers of a version that gc
would retire, and class ids that cannot be told apart from writer-local ones."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import slicewise as sw
from slicewise.dataset.dataset import Dataset
from slicewise.format import DatasetWriter, SampleError
from slicewise.format.manifest import read_latest, version_key
from slicewise.format.storage import LocalStorage


def backdate(path: str, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def chunk_paths(url: str, receipt: dict, ds: sw.Dataset, tensor: str) -> list[str]:
    tid = ds[tensor].meta.id
    return [
        os.path.join(url, "chunks", tid, c["key"]) for c in receipt["tensors"][tensor]["chunks"]
    ]


def test_commit_refuses_chunks_gc_took(tmp_path):
    """A writer slower than gc's grace period: gc removes its chunk files before the commit
    names them. The commit must fail loudly instead of publishing a version that points at
    nothing."""
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("x", dtype="int32")
    ds.x.append(np.array([1]))
    writer = DatasetWriter.from_spec(ds.writer_spec(), "slow")
    writer.append("x", np.array([2]))
    receipt = writer.finish()
    for path in chunk_paths(url, receipt, ds, "x"):
        backdate(path)  # written an hour ago, not committed yet
    removed = sw.gc(url)  # default grace: the hour-old unreferenced chunk goes
    assert len(removed.removed_files) == 1
    before = ds.version
    ds.add_receipts([receipt])
    with pytest.raises(sw.CorruptionError, match="missing"):
        ds.commit("late")
    assert sw.load(url).version == before
    assert sw.verify(url).ok


def test_commit_refreshes_the_grace_period_of_its_chunks(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("x", dtype="int32")
    writer = DatasetWriter.from_spec(ds.writer_spec(), "slow")
    writer.append("x", np.array([2]))
    receipt = writer.finish()
    paths = chunk_paths(url, receipt, ds, "x")
    for path in paths:
        backdate(path)
    backdated = {p: os.path.getmtime(p) for p in paths}
    ds.add_receipts([receipt])
    ds.commit("late")
    assert all(os.path.getmtime(p) > backdated[p] for p in paths)


class _CommitDuringListing(LocalStorage):
    """A local directory whose first full listing lets another committer land first: the
    moment a gc has listed the files but not yet deleted any."""

    def __init__(self, root, commit):
        super().__init__(root)
        self._commit = commit

    def list(self, prefix="", refresh=True):
        found = super().list(prefix, refresh)
        if prefix == "" and self._commit is not None:
            commit, self._commit = self._commit, None
            commit()
        return found


def test_gc_spares_chunks_of_a_commit_that_lands_while_it_lists(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("x", dtype="int32")
    ds.x.append(np.array([1]))
    writer = DatasetWriter.from_spec(ds.writer_spec(), "slow")
    writer.append("x", np.array([2]))
    receipt = writer.finish()
    paths = chunk_paths(url, receipt, ds, "x")
    for path in paths:
        backdate(path)

    def land():
        ds.add_receipts([receipt])
        ds.commit("landed during gc")
        for path in paths:  # as if the listing had happened before the commit's touch
            backdate(path)

    from slicewise.format.maintenance import gc_storage

    report = gc_storage(_CommitDuringListing(url, land))
    assert report.removed_files == []
    assert sw.load(url).x.numpy().ravel().tolist() == [1, 2]
    assert sw.verify(url).ok


class _LaggingListing(LocalStorage):
    """Listings that miss one version file, as a stale object-store listing cache does."""

    hidden: set[str] = set()

    def list(self, prefix="", refresh=True):
        return [k for k in super().list(prefix, refresh) if k not in self.hidden]


def test_a_version_missing_from_the_listing_is_still_checked(tmp_path):
    """Committer B, built on version s, loses the race to A (s+1, rows replaced) and C
    (s+2, an append elsewhere). B's listing misses s+1. B replaces rows of the chunk A
    replaced: it must get a conflict, not silently undo A's change."""
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.create_tensor("y", dtype="int32")
        ds.x.extend([np.array([i]) for i in range(4)])
    storage = _LaggingListing(url)
    b = Dataset(storage, read_latest(storage))
    a = sw.load(url)
    a.x[0] = np.array([100])
    hidden_seq = int(a.version.split("-")[0][1:])
    c = sw.load(url)
    c.y.append(np.array([7]))
    _LaggingListing.hidden = {version_key(hidden_seq)}
    try:
        with pytest.raises(sw.CommitConflictError):
            b.x[1] = np.array([200])
    finally:
        _LaggingListing.hidden = set()
    assert sw.load(url).x.numpy().ravel().tolist() == [100, 1, 2, 3]


def test_gc_keeps_a_version_superseded_within_the_grace_period(tmp_path):
    """A reader that opened the newest version keeps reading it after a newer commit and a
    gc with retention: the version was the newest a moment ago."""
    url = str(tmp_path / "ds")
    ds = sw.empty(url, chunk_target_bytes=64)
    ds.create_tensor("x", dtype="int64")
    ds.x.extend([np.arange(8) * i for i in range(6)])
    reader = sw.load(url)
    ds.x[0] = np.arange(8) * 100  # replaces chunk 0: only the old version references it
    report = sw.gc(url, keep_last=1)
    assert report.removed_versions == [] and report.removed_files == []
    assert [a.tolist() for a in reader.x.numpy(aslist=True)] == [
        (np.arange(8) * i).tolist() for i in range(6)
    ]
    retired = sw.gc(url, keep_last=1, grace_seconds=0)
    assert len(retired.removed_versions) >= 1 and retired.removed_files
    assert sw.verify(url).ok


def test_unnamed_class_ids_never_share_a_chunk_with_new_names(tmp_path):
    """An int id past the known class names and a new string name in one writer: the
    commit would remap the int by the new names' table (silently another class, or an
    IndexError on read). The writer refuses at append, naming the tensor."""
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("labels", htype="class_label", class_names=["a"])
    for first, second in ((5, "b"), ("b", 5), (np.array([0, 7]), "c"), ("c", np.array([9]))):
        writer = DatasetWriter.from_spec(ds.writer_spec(), "w")
        writer.append("labels", first)
        with pytest.raises(SampleError, match="labels"):
            writer.append("labels", second)
    writer = DatasetWriter.from_spec(ds.writer_spec(), "w")
    writer.extend("labels", ["b", 0, 1, "c", 2])  # ids of names this writer knows: fine
    ints = DatasetWriter.from_spec(ds.writer_spec(), "ints")
    ints.extend("labels", [0, 5, 9])  # ids without names, and no new names: fine
    ds.add_receipts([writer.finish(), ints.finish()])
    ds.commit("labels")
    assert ds.labels.info.class_names == ["a", "b", "c"]
    assert ds.labels.numpy().ravel().tolist() == [1, 0, 1, 2, 2, 0, 5, 9]
