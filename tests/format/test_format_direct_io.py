"""Large chunk files on local disks: copied into page-aligned memory and written with
O_DIRECT on a helper thread, under an exclusive file lock (storage.PendingPut, FORMAT.md
3.1). The files must be byte-identical to the buffered path's, whatever their size
relative to the block size and whatever the file system refuses; a flush (in any
process) must wait for the writer; and a writer that dies or fails mid-write must never
get its file published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from kill_helpers import run_and_kill

import slicewise as sw
from slicewise.format import DatasetWriter
from slicewise.format import storage as storage_mod
from slicewise.format.commit import Transaction, publish
from slicewise.format.errors import CorruptionError
from slicewise.format.htypes import TensorMeta
from slicewise.format.manifest import read_latest
from slicewise.format.storage import (
    DIRECT_ALIGN,
    DIRECT_MIN_BYTES,
    LocalStorage,
    PendingPut,
    SyncQueue,
    open_storage,
)
from slicewise.format.writer import unfinished_chunks

needs_o_direct = pytest.mark.skipif(
    not storage_mod._O_DIRECT, reason="the platform has no O_DIRECT: always buffered"
)


def metas(spec: dict) -> dict:
    return {name: TensorMeta.from_json(meta) for name, meta in spec["tensors"].items()}


def new_dataset(root: str, target: int) -> dict:
    ds = sw.empty(root, chunk_target_bytes=target)
    ds.create_tensor("x", dtype="uint8")
    ds.create_tensor("y", dtype="uint8")
    return ds.writer_spec()


def rows(count: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        yield {
            "x": rng.integers(0, 256, size + i % 3, dtype=np.uint8),  # ragged sizes
            "y": np.full(3, i % 256, np.uint8),  # small chunks: the buffered path
        }


def chunk_files(root: str, spec: dict, receipt: dict, tensor: str) -> list[bytes]:
    folder = os.path.join(root, "chunks", spec["tensors"][tensor]["id"])
    out = []
    for entry in receipt["tensors"][tensor]["chunks"]:
        with open(os.path.join(folder, entry["key"]), "rb") as f:
            out.append(f.read())
    return out


@pytest.mark.parametrize("extra", [0, 1, DIRECT_ALIGN - 1])  # last file's end past a block
@pytest.mark.parametrize("finish_sync", [True, False])
def test_direct_and_buffered_writes_store_identical_chunk_files(tmp_path, extra, finish_sync):
    sample = 100_000
    target = 3 * sample  # chunks of 3 samples: every one above DIRECT_MIN_BYTES
    assert target >= DIRECT_MIN_BYTES
    # 9 rows fill 3 chunks; a 10th, alone in the last chunk, makes that file (36-byte
    # prefix + 34-byte header body: offsets, shape, one checksum block, "uint8|"; then the
    # payload) end `extra` bytes past a block boundary
    last = np.arange(100 * DIRECT_ALIGN + extra - 70, dtype=np.uint64).astype(np.uint8)
    expected = [r["x"].tobytes() for r in rows(9, sample)] + [last.tobytes()]
    written = {}
    for mode in ("direct", "buffered"):
        root = str(tmp_path / mode)
        spec = new_dataset(root, target)
        storage = LocalStorage(root, direct_io=(mode == "direct"))
        writer = DatasetWriter(storage, metas(spec), target)
        for row in rows(9, sample):
            writer.append_row(row)
        writer.append_row({"x": last, "y": np.zeros(3, np.uint8)})
        receipt = writer.finish(sync=finish_sync)
        if finish_sync:
            assert not any(e.get("synced") is False
                           for t in receipt["tensors"].values() for e in t["chunks"])
        ds = sw.load(root)
        ds.sync_receipt(receipt)
        ds.add_receipts([receipt])
        ds.commit(mode)
        files = chunk_files(root, spec, receipt, "x")
        assert len(files) == 4 and len(files[-1]) == 100 * DIRECT_ALIGN + extra
        written[mode] = (files, chunk_files(root, spec, receipt, "y"))
        assert [a.tobytes() for a in sw.load(root).x.numpy(aslist=True)] == expected
        assert sw.verify(root).ok
    assert written["direct"] == written["buffered"]


@pytest.mark.parametrize("nbytes", [DIRECT_MIN_BYTES, DIRECT_MIN_BYTES + 1,
                                    4 * DIRECT_ALIGN * 100 - 1, 1_000_003])
def test_a_pending_put_writes_exactly_its_bytes(tmp_path, nbytes):
    storage = LocalStorage(str(tmp_path / "s"), direct_io=True)
    payload = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    parts = [b"head", memoryview(payload.tobytes())[: nbytes - 10], payload.tobytes()[-6:]]
    pending = storage.begin_put("chunks/t1/a", parts)
    assert isinstance(pending, PendingPut)
    parts.clear()  # the caller's buffers are free once begin_put returns
    pending.complete()
    with open(os.path.join(str(tmp_path / "s"), "chunks", "t1", "a"), "rb") as f:
        data = f.read()
    assert data == b"head" + payload.tobytes()[: nbytes - 10] + payload.tobytes()[-6:]
    assert storage.written_size("chunks/t1/a") == nbytes
    # small files never take the direct path
    assert storage.begin_put("chunks/t1/b", [b"x" * (DIRECT_MIN_BYTES - 1)]) is None


def test_a_direct_write_the_file_system_refuses_falls_back_to_buffered(tmp_path, monkeypatch):
    """An alignment the device does not take (here 1000 bytes, not a multiple of any sector
    size) makes the direct write fail with EINVAL on file systems that check it: the file
    is written through the page cache instead, and direct I/O stays off for the storage.
    File systems that take any alignment (tmpfs) write it directly: identical bytes."""
    monkeypatch.setattr(storage_mod, "DIRECT_ALIGN", 1000)
    storage = LocalStorage(str(tmp_path / "s"), direct_io=True)
    blob = np.random.default_rng(1).integers(0, 256, 300_007, dtype=np.uint8).tobytes()
    storage.put("chunks/t1/a", [blob[:5], blob[5:]])
    storage.put("chunks/t1/b", blob)
    assert storage.get("chunks/t1/a") == blob == storage.get("chunks/t1/b")


def test_direct_io_is_off_where_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICEWISE_DIRECT_IO", "0")
    assert LocalStorage(str(tmp_path)).direct_io is False
    assert LocalStorage(str(tmp_path)).begin_put("k", [b"x" * DIRECT_MIN_BYTES]) is None
    monkeypatch.setenv("SLICEWISE_DIRECT_IO", "1")
    assert LocalStorage(str(tmp_path)).direct_io is bool(storage_mod._O_DIRECT)


def test_a_remote_store_never_takes_the_direct_path():
    url = "memory://sw-direct-io-remote"
    spec = new_dataset(url, 3 * 100_000)
    storage = open_storage(url)
    assert storage.begin_put("chunks/t/a", [b"x" * DIRECT_MIN_BYTES]) is None
    writer = DatasetWriter(storage, metas(spec), spec["chunk_target_bytes"])
    for row in rows(7, 100_000):
        writer.append_row(row)
    receipt = writer.finish(sync=False)  # a finished PUT is durable: nothing left unsynced
    assert not any(e.get("synced") is False
                   for t in receipt["tensors"].values() for e in t["chunks"])
    ds = sw.load(url)
    ds.add_receipts([receipt])
    ds.commit("remote")
    assert [a.tobytes() for a in sw.load(url).x.numpy(aslist=True)] == [
        r["x"].tobytes() for r in rows(7, 100_000)
    ]
    storage.delete_all()


@needs_o_direct
def test_finish_without_sync_hands_over_writes_still_running(tmp_path):
    """A writer's helper thread that has not written a chunk yet (here: held busy) does
    not hold up finish(sync=False): the chunk is handed over unsynced, under its lock,
    and a commit waits for the lock before it flushes and checks the file."""
    root = str(tmp_path / "ds")
    spec = new_dataset(root, 300_000)
    writer = DatasetWriter(LocalStorage(root), metas(spec), spec["chunk_target_bytes"])
    release = threading.Event()
    blocker = storage_mod._sync_pool(1).submit(release.wait)  # the writer's helper, busy
    try:
        for row in rows(4, 100_000):  # one full chunk (queued), one last chunk
            writer.append_row(row)
        receipt = writer.finish(sync=False)
        unsynced = [e for e in receipt["tensors"]["x"]["chunks"] if e.get("synced") is False]
        assert len(unsynced) == 2  # both still to be written when the receipt was made
        done = {}
        ds = sw.load(root)
        ds.sync_receipt(receipt)
        committer = threading.Thread(
            target=lambda: (ds.add_receipts([receipt]), done.setdefault("v", ds.commit("c")))
        )
        committer.start()
        committer.join(0.3)
        assert committer.is_alive() and sw.load(root).version == read_latest(
            open_storage(root)).id  # still waiting for the writer: nothing published
        assert len(sw.load(root)) == 0
    finally:
        release.set()
        blocker.result()
    committer.join(30)
    assert not committer.is_alive() and done["v"]
    assert [a.tobytes() for a in sw.load(root).x.numpy(aslist=True)] == [
        r["x"].tobytes() for r in rows(4, 100_000)
    ]
    assert sw.verify(root).ok


@needs_o_direct
def test_a_failed_direct_write_is_never_published(tmp_path):
    """The write fails for real (its descriptor was closed behind its back): the failure
    surfaces in the writer, the file is left empty (or gone), and a commit of a receipt
    naming it refuses with an error naming the file."""
    root = str(tmp_path / "ds")
    spec = new_dataset(root, 300_000)
    storage = LocalStorage(root)
    pending = storage.begin_put("chunks/t1/broken", [b"x" * 300_000])
    os.close(pending._fd)
    with pytest.raises(OSError):
        pending.complete()
    assert not os.path.exists(pending.path) or os.path.getsize(pending.path) == 0

    class FailingStorage(LocalStorage):
        def begin_put(self, key, parts, size_hint=0):
            pending = super().begin_put(key, parts, size_hint)
            if pending is not None:
                os.close(pending._fd)
                pending._fd = os.open(os.devnull, os.O_RDONLY)  # writes fail with EBADF
            return pending

    writer = DatasetWriter(FailingStorage(root), metas(spec), spec["chunk_target_bytes"])
    with pytest.raises(OSError):
        for row in rows(4, 100_000):
            writer.append_row(row)
        writer.finish()  # sync=True: waits, and re-raises the helper's failure
    assert len(sw.load(root)) == 0


CHILD = r"""
import os, sys, threading
import numpy as np
from slicewise.format import DatasetWriter
from slicewise.format import storage as storage_mod
from slicewise.format.htypes import TensorMeta
import json

spec = json.loads(sys.argv[1])
mode = sys.argv[2]
metas = {n: TensorMeta.from_json(m) for n, m in spec["tensors"].items()}
writer = DatasetWriter(storage_mod.LocalStorage(spec["url"]), metas,
                       spec["chunk_target_bytes"])
gate = threading.Event()
storage_mod._sync_pool(1).submit(gate.wait)  # the helper thread: busy until told
rng = np.random.default_rng(0)
for i in range(4):
    writer.append_row({"x": rng.integers(0, 256, 150_000 + i % 3, dtype=np.uint8),
                       "y": np.full(3, i % 256, np.uint8)})
print(json.dumps(writer.finish(sync=False)), flush=True)  # 2 chunks of x, never written
line = sys.stdin.readline()  # "go": let the helper write; EOF or anything else: hang
if line.strip() == "go":
    gate.set()
    storage_mod._sync_pool(1).submit(lambda: None).result()
    print("written", flush=True)
threading.Event().wait()
"""


def _start_writer(spec: dict, mode: str) -> tuple[subprocess.Popen, dict]:
    import json

    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec), mode],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline()
    assert line, proc.stderr.read().decode()
    return proc, json.loads(line)


@needs_o_direct
@pytest.mark.timeout(60)
def test_a_flush_in_another_process_waits_for_the_writer(tmp_path):
    root = str(tmp_path / "ds")
    spec = new_dataset(root, 300_000)
    proc, receipt = _start_writer(spec, "wait")
    try:
        keys = [f"chunks/{spec['tensors']['x']['id']}/{e['key']}"
                for e in receipt["tensors"]["x"]["chunks"] if e.get("synced") is False]
        assert len(keys) == 2
        storage = LocalStorage(root)
        sizes = {}
        waiter = threading.Thread(
            target=lambda: sizes.update({k: storage.written_size(k) for k in keys})
        )
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # the writer holds its lock: its files are not whole yet
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == b"written"
        waiter.join(30)
        assert not waiter.is_alive()
        nbytes = {f"chunks/{spec['tensors']['x']['id']}/{e['key']}": e["nbytes"]
                  for e in receipt["tensors"]["x"]["chunks"]}
        assert sizes == {k: nbytes[k] for k in keys}
        assert unfinished_chunks(storage, spec, receipt) == []
        ds = sw.load(root)
        ds.add_receipts([receipt])
        ds.commit("from another process")
        assert len(sw.load(root)) == 4 and sw.verify(root).ok
    finally:
        proc.kill()
        proc.wait()


@needs_o_direct
@pytest.mark.timeout(60)
def test_a_writer_killed_before_its_handed_over_writes_never_gets_them_published(tmp_path):
    root = str(tmp_path / "ds")
    spec = new_dataset(root, 300_000)
    before = sw.load(root).version
    proc, receipt = _start_writer(spec, "die")
    proc.send_signal(signal.SIGKILL)  # its helper never wrote the handed-over chunks
    proc.wait()
    storage = LocalStorage(root)
    short = unfinished_chunks(storage, spec, receipt)
    assert len(short) == 2 and all(root in path for path in short)
    ds = sw.load(root)
    ds.sync_receipt(receipt)
    ds.add_receipts([receipt])
    with pytest.raises(CorruptionError, match="died or failed before it finished") as caught:
        ds.commit("never")
    assert caught.value.path in short
    assert sw.load(root).version == before and len(sw.load(root)) == 0
    removed = sw.gc(root, grace_seconds=0).removed_files
    assert len(removed) == len(receipt["tensors"]["x"]["chunks"]) + len(
        receipt["tensors"]["y"]["chunks"])


def test_sync_queue_wait_flushes_files_left_unflushed(tmp_path):
    storage = LocalStorage(str(tmp_path / "s"))
    queue = SyncQueue(storage)
    queue.put("chunks/t/a", [b"a" * DIRECT_MIN_BYTES], flush=False)
    queue.put("chunks/t/b", [b"b" * 10], flush=False)
    queue.put("chunks/t/c", [b"c" * 10])
    assert not queue.idle
    queue.wait()
    assert queue.idle and queue.hand_over() == set()
    assert storage.get("chunks/t/a") == b"a" * DIRECT_MIN_BYTES
    queue.put("chunks/t/d", [b"d" * 10], flush=False)
    assert queue.hand_over() == {"chunks/t/d"}


def test_commit_of_a_short_unsynced_chunk_names_the_file(tmp_path):
    """Whatever made it short (a writer that died mid-write), a chunk whose file does not
    hold the bytes its receipt reports is never published."""
    root = str(tmp_path / "ds")
    spec = new_dataset(root, 300_000)
    writer = DatasetWriter(LocalStorage(root), metas(spec), spec["chunk_target_bytes"])
    for row in rows(2, 100_000):
        writer.append_row(row)
    receipt = writer.finish(sync=False)
    last = [e for e in receipt["tensors"]["x"]["chunks"] if e.get("synced") is False][-1]
    path = os.path.join(root, "chunks", spec["tensors"]["x"]["id"], last["key"])
    with open(path, "r+b") as f:
        f.truncate(last["nbytes"] - 1)
    txn = Transaction()
    txn.add_receipt(receipt, {"x", "y"})
    storage = LocalStorage(root)
    with pytest.raises(CorruptionError, match=last["key"]):
        publish(storage, read_latest(storage), txn, "never")
    assert len(sw.load(root)) == 0


KILLED_CHILD = r"""
import sys
import numpy as np
import slicewise as sw

ds = sw.load(sys.argv[1])
print("ready", flush=True)
i = len(ds)
while True:
    with ds:  # 3 rows of 200 KB per commit: chunks of 300 KB+ take the direct path
        for _ in range(3):
            ds.append({"x": np.full(200_000 + i, i % 256, np.uint8)})
            i += 1
"""


@needs_o_direct
@pytest.mark.timeout(110)
def test_sigkill_during_direct_writes_and_commits(tmp_path):
    import random

    url = str(tmp_path / "ds")
    ds = sw.empty(url, chunk_target_bytes=300_000)
    ds.create_tensor("x", dtype="uint8")
    ds.commit("tensor")
    rng = random.Random(7)
    for trial in range(8):
        before = len(sw.load(url))
        run_and_kill(KILLED_CHILD, [url], rng.uniform(0.0, 0.3))
        after = sw.load(url)
        assert len(after) >= before, trial
        stored = after.x.numpy(aslist=True)
        for i, sample in enumerate(stored):
            assert sample.tobytes() == np.full(200_000 + i, i % 256, np.uint8).tobytes()
        assert sw.verify(url).ok
        sw.gc(url, grace_seconds=0)
    assert len(sw.load(url)) > 0
