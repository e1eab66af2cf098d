"""Crash tests with real processes: a writer SIGKILLed at random points while writing
chunks and while committing. After every kill the dataset opens, every committed sample is
byte-identical, verify finds nothing wrong, and gc removes the dead writer's leftovers."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
from kill_helpers import run_and_kill

import slicewise as sw
from slicewise.format.manifest import list_version_seqs
from slicewise.format.storage import open_storage

CHILD = r"""
import os, signal, sys
import numpy as np
import slicewise as sw
from slicewise.format import storage as storage_mod

path, mode, target = sys.argv[1], sys.argv[2], int(sys.argv[3])

def row(i):
    return {"x": np.arange(i % 7 + 1, dtype=np.int64) * i,
            "b": np.full(i % 50, i % 256, dtype=np.uint8)}

calls = {"put": 0, "link": 0}
def die():
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "put-mid":  # die halfway through writing the target-th chunk file
    original = storage_mod.LocalStorage.put
    def put(self, key, data, **kwargs):
        calls["put"] += 1
        if calls["put"] == target:
            path_ = self._path(key)
            self._ensure_parent(path_)
            blob = b"".join(data) if isinstance(data, list) else bytes(data)
            with open(path_, "wb") as f:
                f.write(blob[: len(blob) // 2])
                f.flush(); os.fsync(f.fileno())
            die()
        return original(self, key, data, **kwargs)
    storage_mod.LocalStorage.put = put
elif mode in ("before-link", "after-link"):  # die inside the commit's put-if-absent
    original_tmp = storage_mod.LocalStorage.put_tmp
    original_link = os.link
    def put_tmp(self, tmp, data):
        original_tmp(self, tmp, data)
        calls["link"] += 1
        if mode == "before-link" and calls["link"] == target:
            die()
    def link(src, dst, *a, **k):
        original_link(src, dst, *a, **k)
        if mode == "after-link" and calls["link"] == target:
            die()
    storage_mod.LocalStorage.put_tmp = put_tmp
    os.link = link

ds = sw.load(path)
print("ready", flush=True)
i = len(ds)
while True:
    with ds:
        for _ in range(7):
            ds.append(row(i))
            i += 1
"""


def expected_row(i: int) -> dict:
    return {
        "x": np.arange(i % 7 + 1, dtype=np.int64) * i,
        "b": np.full(i % 50, i % 256, dtype=np.uint8),
    }


def check_rows(ds, upto: int | None = None) -> None:
    n = len(ds) if upto is None else upto
    assert len(ds.x) == len(ds.b) == n
    xs = ds.x.numpy(aslist=True)
    bs = ds.b.numpy(aslist=True)
    for i in range(n):
        want = expected_row(i)
        assert xs[i].tobytes() == want["x"].tobytes(), f"row {i} of x"
        assert bs[i].tobytes() == want["b"].tobytes(), f"row {i} of b"


def leftovers(url: str) -> list[str]:
    storage = open_storage(url)
    referenced = set()
    from slicewise.format.manifest import chunk_key, read_version

    for seq in list_version_seqs(storage):
        for state in read_version(storage, seq).tensors.values():
            referenced.update(chunk_key(state.meta.id, k) for k in state.keys)
    return [
        k
        for k in storage.list("")
        if k not in referenced and (k.startswith("chunks/") or "/.tmp-" in k)
    ]


MODES = (
    [("random", 0)] * 10
    + [("put-mid", n) for n in (1, 2, 3, 5)]
    + [("before-link", n) for n in (1, 2, 4)]
    + [("after-link", n) for n in (1, 2, 3)]
)


@pytest.mark.timeout(110)
def test_sigkill_during_writes_and_commits(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url, chunk_target_bytes=300)
    with ds:
        ds.create_tensor("x", dtype="int64")
        ds.create_tensor("b", dtype="uint8")
        for i in range(5):
            ds.append(expected_row(i))
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    saw_leftovers = 0
    for trial, (mode, target) in enumerate(MODES):
        before = sw.load(url)
        before_seq = list_version_seqs(open_storage(url))[-1]
        before_len = len(before)
        delay = rng.uniform(0.0, 0.15) if mode == "random" else None  # else it kills itself
        code, stderr = run_and_kill(CHILD, [url, mode, str(target)], delay, env)
        assert code == -signal.SIGKILL, (trial, mode, stderr)

        after = sw.load(url)
        seqs = list_version_seqs(open_storage(url))
        assert seqs[-1] >= before_seq
        if mode == "before-link":  # the target-th commit died before its manifest appeared
            assert seqs[-1] == before_seq + target - 1
        if mode == "after-link":  # ... or right after: that commit landed, whole
            assert seqs[-1] == before_seq + target
        assert len(after) >= before_len
        check_rows(after)
        old = sw.load(url, version=before_seq)
        assert old.version == before.version
        check_rows(old, before_len)
        report = sw.verify(url)
        assert report.ok, str(report)
        found = leftovers(url)
        saw_leftovers += bool(found)
        gc_report = sw.gc(url, grace_seconds=0)
        assert sorted(gc_report.removed_files) == sorted(found)
        assert leftovers(url) == []
        check_rows(sw.load(url))
    assert saw_leftovers >= 5  # the kills really interrupted writers mid-way
    assert len(sw.load(url)) > 5
