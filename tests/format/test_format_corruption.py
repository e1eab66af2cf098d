"""Corruption: a truncated chunk, a flipped byte, a missing chunk, a garbage manifest each
give a clear error naming the file, and verify reports each one by file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from chunk_forge import resign

import slicewise as sw
from slicewise.format.manifest import version_key


def make(url: str) -> sw.Dataset:
    ds = sw.empty(url, chunk_target_bytes=4000)
    with ds:
        ds.create_tensor("x", dtype="float32")
        ds.x.extend([np.full((10, 10), i, np.float32) for i in range(30)])
    return ds


def chunk_files(root: str) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(os.path.join(root, "chunks")):
        out += [os.path.join(dirpath, n) for n in names]
    return sorted(out)


def read_all(url: str):
    return sw.load(url).x.numpy()


def test_truncated_chunk(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    victim = chunk_files(url)[0]
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) - 7)
    with pytest.raises(sw.CorruptionError, match="truncated") as info:
        read_all(url)
    assert victim in str(info.value) and info.value.path == victim
    report = sw.verify(url)
    assert [p["file"] for p in report.problems] == [victim]


@pytest.mark.parametrize("where", ["header", "payload"])
def test_flipped_byte(tmp_path, where):
    url = str(tmp_path / "ds")
    make(url)
    victim = chunk_files(url)[1]
    data = bytearray(open(victim, "rb").read())
    pos = 20 if where == "header" else len(data) - 5
    data[pos] ^= 0x40
    open(victim, "wb").write(bytes(data))
    with pytest.raises(sw.CorruptionError, match="checksum") as info:
        read_all(url)
    assert victim in str(info.value)
    report = sw.verify(url)
    assert [p["file"] for p in report.problems] == [victim]
    assert "checksum" in report.problems[0]["error"]


def test_missing_chunk(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    victims = chunk_files(url)[:2]
    for v in victims:
        os.unlink(v)
    with pytest.raises(sw.CorruptionError, match="missing") as info:
        read_all(url)
    assert any(v in str(info.value) for v in victims)
    report = sw.verify(url)
    assert sorted(p["file"] for p in report.problems) == sorted(victims)
    assert all("missing" in p["error"] for p in report.problems)


@pytest.mark.parametrize(
    "garbage", [b"", b"{not json", b"\x00\xff" * 10, b'{"format": "x"}', b"[]"]
)
def test_garbage_manifest(tmp_path, garbage):
    url = str(tmp_path / "ds")
    ds = make(url)
    seq = int(ds.version.split("-")[0][1:])
    manifest = os.path.join(url, *version_key(seq).split("/"))
    open(manifest, "wb").write(garbage)
    with pytest.raises(sw.CorruptionError) as info:
        sw.load(url)
    assert manifest in str(info.value)
    report = sw.verify(url)
    assert manifest in [p["file"] for p in report.problems]
    # older versions stay readable
    assert len(sw.load(url, version=seq - 1).tensors) == 0


def test_corrupt_jpeg_sample_found_by_verify(tmp_path, jpeg_files):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    ds.images.extend([sw.read(f) for f in jpeg_files])
    assert sw.verify(url).ok
    victim = chunk_files(url)[0]
    data = bytearray(open(victim, "rb").read())
    data[-100:] = b"\x00" * 100
    open(victim, "wb").write(bytes(data))
    report = sw.verify(url)
    assert not report.ok and report.problems[0]["file"] == victim
    assert victim in str(report)


def test_memory_storage_corruption(jpeg_files):
    import uuid

    import fsspec

    url = f"memory://corrupt-{uuid.uuid4().hex}"
    make(url)
    fs = fsspec.filesystem("memory")
    victim = sorted(fs.find(f"{url}/chunks"))[0]
    data = fs.cat_file(victim)
    fs.pipe_file(victim, data[:-3])
    with pytest.raises(sw.CorruptionError, match="truncated") as info:
        read_all(url)
    assert victim.split("/")[-1] in str(info.value)
    assert not sw.verify(url).ok
    fs.rm(url, recursive=True)


def test_text_that_is_not_utf8_names_the_chunk_and_sample(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("t", htype="text")
        ds.t.extend([f"sample {i:03d}" for i in range(50)])
    victim = chunk_files(url)[0]
    data = bytearray(open(victim, "rb").read())
    pos = data.rindex(b"sample 007")
    data[pos] = 0xFF  # an invalid UTF-8 start byte in sample 7
    open(victim, "wb").write(bytes(data))
    again = sw.load(url)
    # the checksum of the block holding sample 7 (small samples share a block) catches it
    with pytest.raises(sw.CorruptionError) as info:
        again.t[5:10].data()
    assert victim in str(info.value) and "checksum mismatch in samples 0..49" in str(info.value)
    assert [p["file"] for p in sw.verify(url).problems] == [victim]
    # with its checksums forged to match, decoding must catch it and name the sample
    open(victim, "wb").write(resign(bytes(data)))
    again = sw.load(url)
    with pytest.raises(sw.CorruptionError) as info:
        again.t[5:10].data()
    assert victim in str(info.value) and "sample 7" in str(info.value)
    assert again.t[8:10].data()["value"] == ["sample 008", "sample 009"]
    assert [p["file"] for p in sw.verify(url).problems] == [victim]
