"""The durability contract of FORMAT.md 3.1, counted on a real local directory: one data
flush per chunk file (never per sample), directory flushes once per commit, a receipt
only after every flush succeeded, and a failed flush never becomes a receipt."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import slicewise as sw
from slicewise.format import DatasetWriter
from slicewise.format.commit import Transaction, publish
from slicewise.format.htypes import TensorMeta
from slicewise.format.manifest import read_latest
from slicewise.format.storage import LocalStorage


class CountingStorage(LocalStorage):
    """A local directory that records which files and folders were flushed, and can be
    told to fail a file flush (as a disk reporting EIO would)."""

    def __init__(self, root, fail_sync_of: int | None = None):
        super().__init__(root)
        self.synced_files: list[str] = []
        self.synced_dirs: list[str] = []
        self.puts: list[tuple[str, bool]] = []
        self.fail_sync_of = fail_sync_of

    def put(self, key, data, sync=True):
        super().put(key, data, sync)
        self.puts.append((key, sync))
        if sync:
            self.synced_files.append(key)

    def sync_file(self, key):
        if self.fail_sync_of is not None and len(self.synced_files) + 1 == self.fail_sync_of:
            raise OSError(errno.EIO, "injected I/O error", self.full_path(key))
        super().sync_file(key)
        self.synced_files.append(key)

    def sync(self, prefix):
        super().sync(prefix)
        self.synced_dirs.append(prefix)


def metas(spec: dict) -> dict:
    return {name: TensorMeta.from_json(meta) for name, meta in spec["tensors"].items()}


def spec_for(root: str) -> dict:
    ds = sw.empty(root, chunk_target_bytes=1000)
    ds.create_tensor("x", dtype="uint8")
    ds.create_tensor("y", dtype="uint8")
    return ds.writer_spec()


def test_one_flush_per_chunk_file_not_per_sample(tmp_path):
    root = str(tmp_path / "ds")
    spec = spec_for(root)
    storage = CountingStorage(root)
    writer = DatasetWriter(storage, metas(spec), spec["chunk_target_bytes"])
    for i in range(200):  # 200 samples of 100 bytes per tensor: 20 chunks each
        writer.append_row({"x": np.full(100, i, np.uint8), "y": np.full(100, i, np.uint8)})
    receipt = writer.finish()
    keys = [
        f"chunks/{spec['tensors'][t]['id']}/{c['key']}"
        for t in ("x", "y")
        for c in receipt["tensors"][t]["chunks"]
    ]
    assert len(keys) == 40
    assert sorted(storage.synced_files) == sorted(keys)  # each chunk file exactly once
    assert [k for k, _ in storage.puts] == [k for k, _ in storage.puts if k in keys]
    assert any(not sync for _, sync in storage.puts)  # flushed off the writing thread


def test_commit_flushes_each_folder_once(tmp_path):
    root = str(tmp_path / "ds")
    spec = spec_for(root)
    receipts = []
    for w in range(3):
        writer = DatasetWriter.from_spec(spec, f"w{w}")
        for i in range(50):
            writer.append_row({"x": np.full(100, i, np.uint8), "y": np.full(100, w, np.uint8)})
        receipts.append(writer.finish())
    storage = CountingStorage(root)
    txn = Transaction()
    for receipt in receipts:
        txn.add_receipt(receipt, {"x", "y"})
    publish(storage, read_latest(storage), txn, "three writers")
    folders = sorted(f"chunks/{spec['tensors'][t]['id']}" for t in ("x", "y"))
    assert sorted(storage.synced_dirs) == sorted([*folders, "chunks", ""])
    assert len(sw.load(root).x) == 150


def test_a_failed_flush_never_becomes_a_receipt(tmp_path):
    root = str(tmp_path / "ds")
    spec = spec_for(root)
    storage = CountingStorage(root, fail_sync_of=3)
    writer = DatasetWriter(storage, metas(spec), spec["chunk_target_bytes"])
    with pytest.raises(OSError, match="injected"):
        for i in range(100):
            writer.append("x", np.full(100, i, np.uint8))
        writer.finish()
    assert len(sw.load(root).x) == 0
    # the files written stay unreferenced; gc removes them
    assert os.listdir(os.path.join(root, "chunks", spec["tensors"]["x"]["id"]))
    assert sw.gc(root, grace_seconds=0).removed_files


def _unsynced_keys(spec, receipt):
    return [
        f"chunks/{spec['tensors'][t]['id']}/{c['key']}"
        for t, tensor in receipt["tensors"].items()
        for c in tensor["chunks"]
        if c.get("synced") is False
    ]


def test_chunks_left_unsynced_are_synced_once_before_the_commit(tmp_path):
    from slicewise.dataset.dataset import Dataset

    root = str(tmp_path / "ds")
    spec = spec_for(root)
    storage = CountingStorage(root)
    writer = DatasetWriter(storage, metas(spec), spec["chunk_target_bytes"])
    for i in range(25):  # 25 samples of 100 bytes per tensor: 3 chunks each
        writer.append_row({"x": np.full(100, i, np.uint8), "y": np.full(100, i, np.uint8)})
    receipt = writer.finish(sync=False)
    unsynced = _unsynced_keys(spec, receipt)
    assert len(unsynced) == 2  # the last chunk of each tensor; every other one is durable
    assert not set(unsynced) & set(storage.synced_files) and len(storage.synced_files) == 4
    ds = Dataset(storage, read_latest(storage))
    ds.sync_receipt(receipt)  # flushes start now, on helper threads
    ds.add_receipts([receipt])
    ds.commit("unsynced chunks")
    assert sorted(storage.synced_files) == sorted(set(storage.synced_files))  # once each
    assert set(unsynced) <= set(storage.synced_files)
    manifest = open(os.path.join(root, "versions", "000000000002.json")).read()
    assert "synced" not in manifest
    np.testing.assert_array_equal(sw.load(root).x.numpy()[:, 0], np.arange(25))


def test_a_failed_flush_of_an_unsynced_chunk_stops_the_commit(tmp_path):
    root = str(tmp_path / "ds")
    spec = spec_for(root)
    writer = DatasetWriter(LocalStorage(root), metas(spec), spec["chunk_target_bytes"])
    for i in range(5):
        writer.append_row({"x": np.full(100, i, np.uint8), "y": np.full(100, i, np.uint8)})
    receipt = writer.finish(sync=False)
    assert len(_unsynced_keys(spec, receipt)) == 2
    storage = CountingStorage(root, fail_sync_of=1)
    txn = Transaction()
    txn.add_receipt(receipt, {"x", "y"})
    with pytest.raises(OSError, match="injected"):
        publish(storage, read_latest(storage), txn, "never published")
    assert len(sw.load(root).x) == 0
