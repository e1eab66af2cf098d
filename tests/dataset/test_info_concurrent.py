"""ds.info written by two writers at once: each commit replays its own edits on the version
it lands on, so neither loses the other's keys (before: the last commit's whole dict won)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

import slicewise as sw


def _dataset(path):
    ds = sw.empty(str(path))
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.x.append(np.int32(1))
    ds.info.update(old="kept?", shared=0)
    return ds


def test_two_handles_keep_each_others_keys(tmp_path):
    _dataset(tmp_path / "ds")
    first = sw.load(str(tmp_path / "ds"))
    second = sw.load(str(tmp_path / "ds"))  # opened before `first` commits
    first.info.update(a=1, shared=1)
    second.info.update(b=2)  # lands on top of first's commit
    second.info["shared"] = 2  # the same key: the later commit's value
    del second.info["old"]
    info = dict(sw.load(str(tmp_path / "ds"), read_only=True).info)
    assert info == {"a": 1, "b": 2, "shared": 2}


def test_edits_inside_a_with_block_rebase_as_one(tmp_path):
    _dataset(tmp_path / "ds")
    first = sw.load(str(tmp_path / "ds"))
    second = sw.load(str(tmp_path / "ds"))
    with second:
        second.info.update(b=2)
        second.x.append(np.int32(2))
        first.info.update(a=1)  # commits while second's block is open
        assert dict(second.info) == {"old": "kept?", "shared": 0, "b": 2}
    reread = sw.load(str(tmp_path / "ds"), read_only=True)
    assert dict(reread.info) == {"old": "kept?", "shared": 0, "a": 1, "b": 2}
    assert reread.x.numpy().ravel().tolist() == [1, 2]


def _writer(path: str, prefix: str, count: int, start) -> None:
    ds = sw.load(path)
    start.wait(60)  # both loaded: their updates overlap
    for i in range(count):
        ds.info.update({f"{prefix}{i}": i})


@pytest.mark.timeout(120)
def test_two_processes_updating_info_at_once(tmp_path):
    path = str(tmp_path / "ds")
    _dataset(path)
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    writers = [ctx.Process(target=_writer, args=(path, prefix, 30, start)) for prefix in "pq"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(100)
        assert w.exitcode == 0
    info = dict(sw.load(path, read_only=True).info)
    assert {k: v for k, v in info.items() if k[0] in "pq"} == {
        f"{p}{i}": i for p in "pq" for i in range(30)}
    assert sw.verify(path).ok
