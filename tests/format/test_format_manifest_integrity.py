"""Manifests are checked whole (FORMAT.md 2.4): a version-2 manifest carries the CRC-32 of
its own bytes, every member is required (optional ones are absent exactly when empty),
unknown members and a chunk listed twice are refused, and version-1 manifests (no
checksum) are still read. Issue 9, case 2: a flipped bit renamed "chunks" (the tensor
silently had 0 rows), a class name (bird -> cird) or a tensor, and verify said OK."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

import slicewise as sw
from slicewise.format.manifest import MANIFEST_VERSION, decode_version, encode_manifest


def make(url: str) -> sw.Dataset:
    """Every kind of tensor whose manifest entry differs: raw fixed and ragged, chunk
    compression, class labels with a writer-local remap, text, json, groups."""
    ds = sw.empty(url, chunk_target_bytes=3000)
    with ds:
        ds.create_tensor("x", dtype="float32")
        ds.create_tensor("ragged", dtype="uint8", chunk_compression="lz4")
        ds.create_tensor("labels", htype="class_label", class_names=["cat", "bird"])
        ds.create_tensor("text", htype="text")
        ds.create_tensor("meta", htype="json")
        ds.create_tensor("Control/y", dtype="int16")
        for i in range(10):
            ds.append({
                "x": np.full((6, 6), i, np.float32),
                "ragged": np.arange(i + 1, dtype=np.uint8),
                "labels": ["cat", "bird", "dog"][i % 3],
                "text": f"row {i}",
                "meta": {"i": i},
                "Control/y": np.int16(i),
            })
    with ds:
        ds.x.append(np.zeros((6, 6), np.float32))
        ds.ragged.append(np.zeros(2, np.uint8))
        ds.labels.append("bird")
        ds.text.append("last")
        ds.meta.append({})
        ds["Control/y"].append(np.int16(-1))
    return ds


def manifests(url: str) -> list[str]:
    folder = os.path.join(url, "versions")
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".json")]


def contents(url: str) -> dict:
    ds = sw.load(url, read_only=True)
    return {name: [ds[name][i].tobytes() for i in range(len(ds[name]))] for name in ds.tensors}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("integrity") / "ds")
    make(url)
    return url


def test_new_manifests_carry_their_checksum(dataset):
    for path in manifests(dataset):
        data = open(path, "rb").read()
        assert json.loads(data)["format_version"] == MANIFEST_VERSION == 2
        assert data.endswith(b'"}') and b',"checksum":"crc32:' in data[-40:]
        assert encode_manifest(json.loads(data)) == data  # the writer's own encoding


@pytest.mark.parametrize(
    "old, new",
    [(b'"chunks":', b'"chunkr":'),   # the tensor silently had 0 rows
     (b'"bird"', b'"cird"'),         # a class name
     (b'"ragged":', b'"raggee":'),   # a tensor name
     (b'"rows":[', b'"rowr":[')],
)
def test_one_flipped_bit_is_refused_by_the_checksum(tmp_path, dataset, old, new):
    url = str(tmp_path / "ds")
    import shutil

    shutil.copytree(dataset, url)
    path = manifests(url)[-1]
    data = open(path, "rb").read()
    assert data.count(old) >= 1
    at = next(i for i in range(len(old)) if old[i] != new[i])  # one byte, one bit
    assert bin(old[at] ^ new[at]).count("1") == 1
    flipped = bytearray(data)
    flipped[data.index(old) + at] = new[at]
    assert sum(a != b for a, b in zip(flipped, data, strict=True)) == 1
    open(path, "wb").write(bytes(flipped))
    with pytest.raises(sw.CorruptionError, match="checksum mismatch") as info:
        sw.load(url)
    assert info.value.path == path
    report = sw.verify(url)
    assert not report.ok and path in [p["file"] for p in report.problems]


def test_a_missing_or_unknown_member_is_refused_behind_the_checksum(tmp_path, dataset):
    """Re-checksummed lies (a forger, or a bug in a writer): the field checks catch them."""
    import shutil

    cases = {
        "no chunks": lambda d: d["tensors"]["x"].pop("chunks"),
        "renamed chunks": lambda d: d["tensors"]["x"].__setitem__(
            "chunkr", d["tensors"]["x"].pop("chunks")),
        "no rows": lambda d: d["tensors"]["x"]["chunks"].pop("rows"),
        "no message": lambda d: d.pop("message"),
        "no meta": lambda d: d.pop("meta"),
        "no changes.created": lambda d: d["changes"].pop("created"),
        "unknown top member": lambda d: d.update(extra=1),
        "unknown tensor member": lambda d: d["tensors"]["x"].update(clas_names=[]),
        "empty optional": lambda d: d.update(groups=[]),
        "null info": lambda d: d["tensors"]["x"].update(info=None),
        "duplicate chunk": lambda d: [
            d["tensors"]["x"]["chunks"][k].append(d["tensors"]["x"]["chunks"][k][0])
            for k in d["tensors"]["x"]["chunks"]],
        "min above max": lambda d: d["tensors"]["ragged"]["chunks"]["min_shape"].__setitem__(
            0, [10**6]),
        "rows past u32": lambda d: d["tensors"]["x"]["chunks"]["rows"].__setitem__(0, 2**32),
        "nbytes below a header": lambda d: d["tensors"]["x"]["chunks"]["nbytes"].__setitem__(
            0, 35),
        "parent of another seq": lambda d: d.update(parent="v9-" + "0" * 16),
        "changes names no tensor": lambda d: d["changes"].update(appended=["nope"]),
        "seq 0": lambda d: d.update(seq=0, id="v0-" + "0" * 16),
    }
    url = str(tmp_path / "ds")
    shutil.copytree(dataset, url)
    path = manifests(url)[-1]
    original = open(path, "rb").read()
    for what, mutate in cases.items():
        doc = json.loads(original)
        mutate(doc)
        open(path, "wb").write(encode_manifest(doc))
        with pytest.raises(sw.CorruptionError) as info:
            sw.load(url)
        assert info.value.path == path, what
        assert "checksum" not in str(info.value), (what, str(info.value))
        assert path in [p["file"] for p in sw.verify(url, decode=False).problems], what
    open(path, "wb").write(original)
    assert sw.verify(url).ok


def test_a_chunk_listed_twice_is_corrupt(tmp_path, dataset):
    """Issue 9, case 7: a manifest listing one chunk 100,000 times showed a 97.7 GiB tensor
    that verify accepted."""
    import shutil

    url = str(tmp_path / "ds")
    shutil.copytree(dataset, url)
    path = manifests(url)[-1]
    doc = json.loads(open(path, "rb").read())
    chunks = doc["tensors"]["x"]["chunks"]
    for key in chunks:
        chunks[key] = [chunks[key][0]] * 100_000
    open(path, "wb").write(encode_manifest(doc))
    with pytest.raises(sw.CorruptionError, match="listed twice") as info:
        sw.load(url)
    assert info.value.path == path
    report = sw.verify(url)
    assert [p["file"] for p in report.problems] == [path]


def test_version_1_manifests_are_still_read(tmp_path, dataset):
    """A dataset written before manifest checksums: version-1 manifests, compact JSON
    without a checksum member, read as before (and their keys are checked all the same)."""
    import shutil

    url = str(tmp_path / "ds")
    shutil.copytree(dataset, url)
    expected = contents(dataset)
    for path in manifests(url):
        doc = json.loads(open(path, "rb").read())
        doc.pop("checksum")
        doc["format_version"] = 1
        open(path, "wb").write(json.dumps(doc, separators=(",", ":")).encode())
    assert contents(url) == expected
    assert sw.verify(url).ok
    # a commit on top writes version 2; the older manifests stay as they are
    ds = sw.load(url)
    with ds:
        ds.x.append(np.ones((6, 6), np.float32))
    newest = json.loads(open(manifests(url)[-1], "rb").read())
    assert newest["format_version"] == 2 and "checksum" in newest
    assert json.loads(open(manifests(url)[0], "rb").read())["format_version"] == 1
    assert sw.verify(url).ok
    # version 1 keeps every key check: the renamed "chunks" is refused, not read as empty
    path = manifests(url)[-2]
    doc = json.loads(open(path, "rb").read())
    doc["tensors"]["x"]["chunkr"] = doc["tensors"]["x"].pop("chunks")
    open(path, "wb").write(json.dumps(doc, separators=(",", ":")).encode())
    with pytest.raises(sw.CorruptionError, match="chunks") as info:
        sw.load(url, version=int(os.path.basename(path)[:12]))
    assert info.value.path == path
    # a version-1 manifest with a checksum member, or a version-2 one without: refused
    doc = json.loads(open(manifests(url)[-1], "rb").read())
    with pytest.raises(sw.CorruptionError, match="version-1 manifest has no checksum"):
        decode_version(encode_manifest({**doc, "format_version": 1}), "m")
    doc.pop("checksum")
    with pytest.raises(sw.CorruptionError, match="must end with its checksum"):
        decode_version(json.dumps(doc, separators=(",", ":")).encode(), "m")


@pytest.mark.timeout(300)
def test_bit_flip_campaign_over_manifests(tmp_path, dataset):
    """>= 200 random single-byte changes (seeded) anywhere in any manifest: each one is
    refused with a CorruptionError naming the manifest when that version is opened, and
    verify reports it: 0 silent changes."""
    import shutil

    url = str(tmp_path / "ds")
    shutil.copytree(dataset, url)
    paths = manifests(url)
    originals = {path: open(path, "rb").read() for path in paths}
    rng = random.Random(20250609)
    flips = silent = 0
    for _ in range(240):
        path = rng.choice(paths)
        data = bytearray(originals[path])
        position = rng.randrange(len(data))
        data[position] ^= rng.randrange(1, 256)
        open(path, "wb").write(bytes(data))
        seq = int(os.path.basename(path)[:12])
        flips += 1
        try:
            sw.load(url, version=seq, read_only=True)
        except sw.CorruptionError as exc:
            assert exc.path == path, str(exc)
        else:
            silent += 1
        report = sw.verify(url, decode=False)
        assert path in [p["file"] for p in report.problems], (position, report)
        open(path, "wb").write(originals[path])
    assert flips >= 200 and silent == 0
    assert sw.verify(url).ok
