"""A dataset from a stranger is safe to open: manifests and chunk files that lie (with
correct checksums) give a CorruptionError naming the file, never a path outside the
dataset, an IndexError/ValueError, or an allocation sized by a header field."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

import slicewise as sw
from slicewise.format import DatasetWriter
from slicewise.format.chunk import PREFIX, PREFIX_SIZE, encode_chunk, parse_header
from slicewise.format.manifest import encode_manifest


def make(url: str) -> sw.Dataset:
    ds = sw.empty(url, chunk_target_bytes=4000)
    with ds:
        ds.create_tensor("x", dtype="float32")
        ds.create_tensor("labels", htype="class_label", class_names=["a"])
        for i in range(12):
            ds.append({"x": np.full((10, 10), i, np.float32), "labels": "a" if i % 2 else "b"})
    return ds


def newest_manifest(url: str) -> tuple[str, dict]:
    names = sorted(os.listdir(os.path.join(url, "versions")))
    path = os.path.join(url, "versions", [n for n in names if n.endswith(".json")][-1])
    with open(path) as f:
        return path, json.load(f)


def rewrite(path: str, doc: dict) -> None:
    """Write `doc` as a manifest with a valid checksum: the lie must be found by the field
    checks behind the checksum, not by the checksum."""
    with open(path, "wb") as f:
        f.write(encode_manifest(doc))


@pytest.mark.parametrize(
    "field, value",
    [
        ("key", "../../../../../../etc/passwd"),
        ("key", "/etc/passwd"),
        ("key", "0" * 31 + "/"),
        ("id", ".."),
        ("id", "t1/../../.."),
    ],
)
def test_manifest_paths_cannot_leave_the_dataset(tmp_path, field, value):
    url = str(tmp_path / "ds")
    make(url)
    path, doc = newest_manifest(url)
    if field == "key":
        doc["tensors"]["x"]["chunks"]["keys"][0] = value
    else:
        doc["tensors"]["x"]["id"] = value
    rewrite(path, doc)
    with pytest.raises(sw.CorruptionError) as info:
        sw.load(url)
    assert info.value.path == path
    assert path in [p["file"] for p in sw.verify(url).problems]


@pytest.mark.parametrize(
    "name", ["../evil", "a//b", "/etc/passwd", "a/../../b", "a/", "a\\b", "_private", ".hidden",
             "", "x\x00"]
)
def test_manifest_tensor_names_are_validated(tmp_path, name):
    url = str(tmp_path / "ds")
    make(url)
    path, doc = newest_manifest(url)
    doc["tensors"][name] = doc["tensors"].pop("x")
    rewrite(path, doc)
    with pytest.raises(sw.CorruptionError, match="tensor name") as info:
        sw.load(url)
    assert info.value.path == path


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["tensors"]["x"].update(dtype="object"),
        lambda d: d["tensors"]["x"].update(htype="pickle"),
        lambda d: d["tensors"]["x"]["chunks"]["rows"].__setitem__(0, -3),
        lambda d: d["tensors"]["x"]["chunks"]["rows"].__setitem__(0, "7"),
        lambda d: d["tensors"]["x"]["chunks"]["min_shape"].__setitem__(0, [1e9]),
        lambda d: d["tensors"]["labels"].update(label_remaps=[{"base": 0, "ids": [5]}]),
        lambda d: d["tensors"]["labels"]["chunks"]["remap"].__setitem__(0, 9),
        lambda d: d.update(time="yesterday"),
        lambda d: d.update(format_version=3),
        lambda d: d.update(format_version=1),  # version 1 has no checksum member
    ],
)
def test_manifest_field_checks(tmp_path, mutate):
    url = str(tmp_path / "ds")
    make(url)
    path, doc = newest_manifest(url)
    mutate(doc)
    rewrite(path, doc)
    with pytest.raises(sw.CorruptionError) as info:
        sw.load(url)
    assert info.value.path == path


def test_manifest_rows_disagreeing_with_the_chunk(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    path, doc = newest_manifest(url)
    doc["tensors"]["x"]["chunks"]["rows"][0] += 5  # more rows than the chunk holds
    rewrite(path, doc)
    ds = sw.load(url)
    with pytest.raises(sw.CorruptionError, match="holds") as info:
        ds.x.numpy(aslist=True)
    chunk = os.path.join(url, "chunks", doc["tensors"]["x"]["id"])
    assert info.value.path.startswith(chunk)
    claimed = doc["tensors"]["x"]["chunks"]["rows"][0]
    for read in (lambda t: t.numpy(), lambda t: t.tobytes(), lambda t: t.shape):
        with pytest.raises(sw.CorruptionError, match="holds"):
            read(ds.x[claimed - 1])  # a row chunk 0 is said to have, but has not


def test_hostile_marker(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    marker = os.path.join(url, "slicewise.json")
    doc = json.load(open(marker))
    for bad in (0, -1, 2**62, "8"):
        doc["chunk_target_bytes"] = bad
        with open(marker, "w") as f:
            json.dump(doc, f)
        with pytest.raises(sw.CorruptionError, match="chunk_target_bytes") as info:
            sw.load(url)
        assert info.value.path == marker


def resign(blob: bytes) -> bytes:
    """Recompute both checksums of a (tampered) chunk, as a forger would."""
    fields = list(PREFIX.unpack_from(blob, 0))
    body_len = fields[7]
    payload = blob[PREFIX_SIZE + body_len :]
    fields[9] = zlib.crc32(payload)
    fields[10] = 0
    prefix = PREFIX.pack(*fields)
    body = blob[PREFIX_SIZE : PREFIX_SIZE + body_len]
    fields[10] = zlib.crc32(body, zlib.crc32(prefix))
    return PREFIX.pack(*fields) + blob[PREFIX_SIZE:]


def good_chunk(comp=None) -> bytes:
    samples = [np.arange(6, dtype=np.uint16).tobytes(), np.arange(2, dtype=np.uint16).tobytes()]
    return encode_chunk(samples, [(2, 3), (2, 1)], "uint16", None, comp)


def with_field(blob: bytes, index: int, value: int) -> bytes:
    fields = list(PREFIX.unpack_from(blob, 0))
    fields[index] = value
    return resign(PREFIX.pack(*fields) + blob[PREFIX_SIZE:])


@pytest.mark.parametrize(
    "forge",
    [
        lambda b: with_field(b, 4, 2**32 - 1),  # n: 4 billion samples
        lambda b: with_field(b, 5, 60000),  # ndim
        lambda b: with_field(b, 6, 60000),  # descriptor length
        lambda b: with_field(b, 3, 7),  # shape mode
        # offsets decreasing: sample 1 would read backwards
        lambda b: resign(b[: PREFIX_SIZE + 8] + struct.pack("<Q", 10) + b[PREFIX_SIZE + 16 :]),
        # a shape that does not fit the sample's bytes: reshape would fail on read
        lambda b: resign(b[: PREFIX_SIZE + 24] + struct.pack("<I", 9) + b[PREFIX_SIZE + 28 :]),
        # an object dtype in the descriptor
        lambda b: resign(b.replace(b"uint16|", b"object|")),
    ],
)
def test_forged_chunk_headers(forge):
    blob = forge(good_chunk())
    with pytest.raises(sw.CorruptionError) as info:
        parse_header(blob, len(blob), "forged-chunk")
    assert info.value.path == "forged-chunk"


def test_header_length_is_checked_before_it_sizes_a_read(tmp_path):
    url = str(tmp_path / "ds")
    make(url)
    _, doc = newest_manifest(url)
    chunk = os.path.join(
        url, "chunks", doc["tensors"]["x"]["id"], doc["tensors"]["x"]["chunks"]["keys"][0]
    )
    blob = open(chunk, "rb").read()
    open(chunk, "wb").write(with_field(blob, 7, 2**32 - 1))  # h: a 4 GB header
    with pytest.raises(sw.CorruptionError, match="truncated") as info:
        sw.load(url).x[0].numpy()
    assert info.value.path == chunk


def test_decompression_bomb_is_bounded():
    """A chunk-compressed payload that inflates far past what its offsets claim stops at
    the claim: memory stays bounded, the error names the file."""
    bomb = zlib.compress(b"\0" * (256 * 1024 * 1024), 9)  # ~250 KB inflating to 256 MB
    blob = good_chunk("zlib")
    fields = list(PREFIX.unpack_from(blob, 0))
    head = blob[: PREFIX_SIZE + fields[7]]
    fields[8] = len(bomb)
    blob = resign(PREFIX.pack(*fields) + head[PREFIX_SIZE:] + bomb)
    header = parse_header(blob, len(blob), "bomb")
    from slicewise.format.chunk import check_payload

    tracemalloc.start()
    try:
        with pytest.raises(sw.CorruptionError, match="bomb"):
            check_payload(header, blob[header.payload_start :], "bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, peak


def test_label_ids_past_the_chunk_table(tmp_path):
    url = str(tmp_path / "ds")
    ds = make(url)
    assert ds.labels.numpy().ravel().tolist() == [1, 0] * 6  # "b" is new: 1
    path, doc = newest_manifest(url)
    doc["tensors"]["labels"]["label_remaps"][0]["ids"] = []  # the table lost its entry
    rewrite(path, doc)
    with pytest.raises(sw.CorruptionError, match="label table") as info:
        sw.load(url).labels.numpy()
    assert "chunks" in info.value.path


@pytest.mark.parametrize(
    "field, value", [("key", "../../escape"), ("rows", 0), ("min_shape", ["1"]), ("nbytes", -1)]
)
def test_bad_receipts_are_refused_before_publishing(tmp_path, field, value):
    """A receipt's entries become manifest content: a bad one is refused naming the writer,
    never published as a version nobody can open."""
    url = str(tmp_path / "ds")
    ds = make(url)
    writer = DatasetWriter.from_spec(ds.writer_spec(), "forger")
    writer.append("x", np.zeros((10, 10), np.float32))
    receipt = writer.finish()
    receipt["tensors"]["x"]["chunks"][0][field] = value
    with pytest.raises(sw.DatasetError, match="forger"):
        ds.add_receipts([receipt])
    ds.discard()
    assert sw.load(url).version == ds.version


def test_commit_message_and_meta_are_checked(tmp_path):
    ds = make(str(tmp_path / "ds"))
    with pytest.raises(sw.DatasetError, match="dict"):
        ds.commit("m", meta=[1, 2])
    ds.commit(None)
    assert sw.load(ds.path).version_info["message"] == ""
