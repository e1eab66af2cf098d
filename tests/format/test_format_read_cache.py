"""The reader's caches: a version-2 chunk is checked on every read (nothing is remembered
as verified); a version-1 chunk's payload checksum is checked the first time a process
reads it (and again when the file changes); `verify` always checks, mapped files are
bounded by bytes, and `numpy(copy=False)` hands out read-only views."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

import slicewise as sw
from slicewise.format import chunk as chunk_module
from slicewise.format import reader as reader_module
from slicewise.format.chunk import crc32
from slicewise.format.errors import CorruptionError


def make(tmp_path, rows=40, target=40_000):
    root = str(tmp_path / "ds")
    ds = sw.empty(root, chunk_target_bytes=target)
    ds.create_tensor("x", dtype="float32")
    data = np.random.default_rng(0).random((rows, 32, 32), dtype=np.float32)
    with ds:
        ds.x.extend(data)
    return root, data


def chunk_paths(root):
    folder = os.path.join(root, "chunks")
    return sorted(
        os.path.join(folder, t, name) for t in os.listdir(folder)
        for name in os.listdir(os.path.join(folder, t))
    )


def flip_payload_byte(path, keep_mtime):
    stat = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(stat.st_size - 5)
        byte = f.read(1)
        f.seek(stat.st_size - 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_version_2_chunks_are_checked_on_every_read(tmp_path):
    """Nothing is remembered as verified: a byte changed after a reader read the chunk
    (even with its mtime kept) is caught by that same reader's next read, on every path."""
    root, data = make(tmp_path)
    ds = sw.load(root)
    np.testing.assert_array_equal(ds.x.numpy(), data)
    np.testing.assert_array_equal(ds.x[-1].numpy(), data[-1])
    path = next(p for p in chunk_paths(root) if data[-1].tobytes() in open(p, "rb").read())
    before = open(path, "rb").read()
    flip_payload_byte(path, keep_mtime=True)  # in the last sample of the last chunk
    for read in (lambda: ds.x.numpy(), lambda: ds.x[-1].numpy(), lambda: ds.x[-1].tobytes(),
                 lambda: ds.x[-2:].numpy(), lambda: ds.x.dask()[-1:].compute()):
        with pytest.raises(CorruptionError, match=os.path.basename(path)):
            read()
    with open(path, "wb") as f:
        f.write(before)
    np.testing.assert_array_equal(ds.x.numpy(), data)


def test_version_1_chunks_checked_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_module, "WRITE_VERSION", 1)
    root, data = make(tmp_path)
    path = next(p for p in chunk_paths(root) if data[0].tobytes() in open(p, "rb").read())
    assert open(path, "rb").read(6)[4:] == b"\x01\x00"
    np.testing.assert_array_equal(sw.load(root).x.numpy(), data)
    stat = os.stat(path)
    assert (path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev) in (
        reader_module._VERIFIED
    )
    flip_payload_byte(path, keep_mtime=False)  # a changed file: checked again, on first read
    with pytest.raises(CorruptionError, match=os.path.basename(path)):
        sw.load(root).x.numpy()
    with pytest.raises(CorruptionError, match=os.path.basename(path)):
        sw.load(root).x[0].numpy()  # a version-1 row read checks its whole payload first


def test_verify_checks_everything_even_what_readers_trust(tmp_path):
    root, data = make(tmp_path)
    np.testing.assert_array_equal(sw.load(root).x.numpy(), data)
    path = chunk_paths(root)[1]
    flip_payload_byte(path, keep_mtime=True)
    report = sw.verify(root)
    assert not report.ok and [p["file"] for p in report.problems] == [path]


def test_mapped_files_are_bounded_by_bytes(tmp_path, monkeypatch):
    root, data = make(tmp_path, rows=60, target=20_000)
    size = os.path.getsize(chunk_paths(root)[0])
    monkeypatch.setattr(reader_module, "MAX_MAPPED_BYTES", 3 * size)
    ds = sw.load(root)
    for i in range(len(ds.x)):
        np.testing.assert_array_equal(ds.x[i].numpy(), data[i])
        assert ds._reader._mapped_bytes <= 3 * size
    assert len(chunk_paths(root)) > 6 and len(ds._reader._maps) <= 3


def test_numpy_copy_false_is_a_read_only_view(tmp_path):
    root, data = make(tmp_path, rows=40, target=1_000_000)  # one chunk
    ds = sw.load(root)
    view = ds.x[5:25].numpy(copy=False)
    np.testing.assert_array_equal(view, data[5:25])
    assert not view.flags.writeable and not view.flags.owndata
    copied = ds.x[5:25].numpy()
    assert copied.flags.writeable
    copied[0] = 0
    np.testing.assert_array_equal(ds.x[5].numpy(), data[5])


def test_the_checksum_is_zlibs_crc32():
    data = np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    view = memoryview(data)
    assert crc32(view[1000:], crc32(view[:1000])) == zlib.crc32(data)
    assert crc32(b"") == 0
