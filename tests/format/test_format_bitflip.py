"""A bit-flip campaign over chunk files (FORMAT.md §1, §4): one dataset with every kind of
tensor, then hundreds of random single-byte flips, each followed by reads through every
path (row, slice, tobytes, numpy(), data(), a dask sub-slice, a full scan), by a warm
handle and by a fresh one, and then the byte restored. Every read returns exactly the
original or raises CorruptionError naming the flipped file; `verify` finds every flip.

Seeded, so a failure reproduces; FLIPS and the dataset are sized so the campaign stays
a few seconds to tens of seconds on a slow 2-core machine."""

from __future__ import annotations

import io
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

import slicewise as sw
from slicewise.format.codecs import CHUNK_COMPRESSIONS
from slicewise.format.errors import CorruptionError

FLIPS = 520
SEED = 9
ROWS = 12


def _image_file(tmp, name: str, fmt: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (6 + seed % 3, 5, 3), dtype=np.uint8)
    path = os.path.join(tmp, f"{name}.{fmt}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG" if fmt == "jpg" else "PNG")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def build(root: str, tmp: str) -> sw.Dataset:
    rng = np.random.default_rng(0)
    ds = sw.empty(root, chunk_target_bytes=1500)
    with ds:
        ds.create_tensor("fixed", dtype="float32")
        ds.create_tensor("ragged", dtype="uint16")
        ds.create_tensor("jpeg", htype="image", sample_compression="jpeg")
        ds.create_tensor("png", htype="image", sample_compression="png")
        ds.create_tensor("lz4s", dtype="int32", sample_compression="lz4")
        ds.create_tensor("zstds", dtype="int32", sample_compression="zstd")
        for comp in CHUNK_COMPRESSIONS:  # lz4, zstd, zlib
            ds.create_tensor(f"c_{comp}", dtype="int16", chunk_compression=comp)
        ds.create_tensor("text", htype="text")
        ds.create_tensor("js", htype="json")
        ds.create_tensor("labels", htype="class_label", class_names=["cat", "dog", "bird"])
        ds.create_tensor("big", dtype="uint8")  # samples large enough for blocks of their own
        for i in range(ROWS):
            ds.fixed.append(rng.random((4, 5), dtype=np.float32))
            ds.ragged.append(rng.integers(0, 60000, (1 + i % 4, 3), dtype=np.uint16))
            ds.jpeg.append(sw.read(_image_file(tmp, f"j{i}", "jpg", i)))
            ds.png.append(sw.read(_image_file(tmp, f"p{i}", "png", i)))
            ds.lz4s.append(np.arange(30, dtype=np.int32) * i)
            ds.zstds.append(np.full(40, i, dtype=np.int32))
            for comp in CHUNK_COMPRESSIONS:
                ds[f"c_{comp}"].append(np.full((3, 7), i - 5, dtype=np.int16))
            ds.text.append(f"row {i} " + "é" * (i % 5))
            ds.js.append({"i": i, "tags": ["a"] * (i % 3)})
            ds.labels.append(["cat", "dog", "bird"][i % 3])
            ds.big.append(rng.integers(0, 255, 20_000 + 7 * i, dtype=np.uint8))
    return ds


FIXED_SHAPE = ("fixed", "lz4s", "zstds", "c_lz4", "c_zstd", "c_zlib")
DASK = ("fixed", "c_zlib", "lz4s")


def snapshot(ds: sw.Dataset) -> dict:
    """Every value, by every path, as plain Python/numpy for comparison."""
    out = {}
    for name in ds.tensors:
        t = ds[name]
        out[name] = {
            "rows": [t[i].numpy() for i in range(len(t))],
            "bytes": [t[i].tobytes() for i in range(len(t))],
            "data": t.data(aslist=True)["value"] if name in ("text", "js", "labels") else None,
        }
    return out


def same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


class Campaign:
    def __init__(self, ds: sw.Dataset, truth: dict):
        self.ds = ds
        self.truth = truth
        self.reads = self.refused = 0

    def check(self, what: str, read, expected, victim: str) -> None:
        self.reads += 1
        try:
            got = read()
        except CorruptionError as exc:
            assert victim in str(exc) or exc.path == victim, f"{what}: {exc} (flipped {victim})"
            self.refused += 1
            return
        assert same(got, expected), f"{what} returned wrong data after a flip in {victim}"

    def read_everything(self, handle: sw.Dataset, name: str, rows: range, victim: str,
                        full: bool) -> None:
        t, truth = handle[name], self.truth[name]
        for i in rows:
            self.check(f"{name}[{i}]", lambda i=i: t[i].numpy(), truth["rows"][i], victim)
            self.check(f"{name}[{i}].tobytes()", lambda i=i: t[i].tobytes(),
                       truth["bytes"][i], victim)
        a, b = max(rows.start - 1, 0), min(rows.stop + 1, len(t))
        self.check(f"{name}[{a}:{b}]", lambda: t[a:b].numpy(aslist=True),
                   truth["rows"][a:b], victim)
        if rows.stop - rows.start > 1:  # a slice strictly inside the chunk
            c, d = rows.start + 1, rows.stop
            self.check(f"{name}[{c}:{d}]", lambda: t[c:d].numpy(aslist=True),
                       truth["rows"][c:d], victim)
        if truth["data"] is not None:
            self.check(f"{name}.data()", lambda: t[a:b].data(aslist=True)["value"],
                       truth["data"][a:b], victim)
        if name in DASK:
            self.check(f"{name}.dask()[{a}:{b}]",
                       lambda: t.dask(block_bytes=0)[a:b].compute(scheduler="sync"),
                       np.stack(truth["rows"][a:b]), victim)
        if full:  # numpy() of the whole tensor and a scan of every row
            if name in FIXED_SHAPE:
                self.check(f"{name}.numpy()", lambda: t.numpy(), np.stack(truth["rows"]), victim)
            self.check(f"{name} scan", lambda: [row.numpy() for row in t], truth["rows"], victim)


def chunk_index(ds: sw.Dataset) -> dict[str, tuple[str, range]]:
    """chunk file path -> (tensor name, its rows)."""
    out = {}
    for name in ds.tensors:
        tid = ds[name].meta.id
        starts = ds[name].chunk_row_ranges()
        keys = ds._view().tensors[name].keys
        for key, (a, b) in zip(keys, starts, strict=True):
            out[os.path.join(ds.path, "chunks", tid, key)] = (name, range(a, b))
    return out


@pytest.mark.timeout(600)
def test_no_flipped_byte_is_ever_returned(tmp_path):
    root = str(tmp_path / "ds")
    ds = build(root, str(tmp_path))
    truth = snapshot(sw.load(root))
    assert sw.verify(root).ok
    chunks = chunk_index(ds)
    assert {name for name, _ in chunks.values()} == set(ds.tensors)
    sizes = {path: os.path.getsize(path) for path in chunks}
    paths = sorted(sizes)
    weights = [sizes[p] for p in paths]
    rng = random.Random(SEED)
    warm = sw.load(root)
    campaign = Campaign(warm, truth)
    for flip in range(FLIPS):
        victim = rng.choices(paths, weights)[0]
        pos = rng.randrange(sizes[victim])
        mask = rng.randrange(1, 256)
        with open(victim, "r+b") as f:
            f.seek(pos)
            original = f.read(1)
            f.seek(pos)
            f.write(bytes([original[0] ^ mask]))
        try:
            name, rows = chunks[victim]
            full = flip % 8 == 0
            campaign.read_everything(warm, name, rows, victim, full)
            campaign.read_everything(sw.load(root), name, rows, victim, full)
            report = sw.verify(root, decode=False)
            assert [p["file"] for p in report.problems] == [victim], (
                f"verify missed a flip at byte {pos} of {victim}: {report.problems}"
            )
        finally:
            with open(victim, "r+b") as f:
                f.seek(pos)
                f.write(original)
    assert campaign.refused > FLIPS  # nearly every flip is seen by some read
    # restored: everything reads back, warm and fresh
    for handle in (warm, sw.load(root)):
        for name in ds.tensors:
            assert same([r.numpy() for r in handle[name]], truth[name]["rows"])
    assert sw.verify(root).ok
