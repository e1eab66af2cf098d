"""Fuzzing the two parsers a stranger's dataset reaches: chunk files (header, payload,
samples) and version manifests. Random bytes, mutated valid files, and mutated files
whose checksums a forger recomputed (so the checks past the CRCs are reached too). The
only error allowed is CorruptionError naming the file; never IndexError, struct.error,
ValueError, MemoryError or a hang. Example counts are small: the suite stays fast."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slicewise as sw
from slicewise.format.chunk import MAGIC, PREFIX, PREFIX_SIZE, encode_chunk
from slicewise.format.errors import CorruptionError
from slicewise.format.htypes import TensorMeta, decode_sample, with_location
from slicewise.format.manifest import chunk_key, decode_version
from slicewise.format.reader import ChunkReader
from slicewise.format.storage import FsspecStorage, LocalStorage

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---- chunk files ----------------------------------------------------------------------------


def resign(blob: bytes) -> bytes:
    """Recompute both CRCs, as a forger would; leaves blobs too short for a prefix alone."""
    if len(blob) < PREFIX_SIZE:
        return blob
    fields = list(PREFIX.unpack_from(blob, 0))
    body = blob[PREFIX_SIZE : PREFIX_SIZE + fields[7]]
    fields[9] = zlib.crc32(blob[PREFIX_SIZE + fields[7] :])
    fields[10] = 0
    fields[10] = zlib.crc32(body, zlib.crc32(PREFIX.pack(*fields)))
    return PREFIX.pack(*fields) + blob[PREFIX_SIZE:]


def _meta_for(dtype: str, sample_comp: str | None, chunk_comp: str | None) -> TensorMeta:
    if dtype == "str":
        htype = "text"
    elif sample_comp in ("jpeg", "png", "webp"):
        htype = "image"
    else:
        htype = "generic"
    return TensorMeta("t0", htype, dtype, sample_comp, chunk_comp)


def read_chunk(storage, key: str) -> None:
    """Everything a reader does with a chunk: header, whole payload, every sample's stored
    bytes and decoded value. Only CorruptionError naming the file may come out."""
    reader = ChunkReader(storage)
    where = storage.full_path(key)
    try:
        head = reader.header(key)
        reader.payload(key)
        meta = _meta_for(head.dtype, head.sample_compression, head.chunk_compression)
        for i in range(min(head.n, 32)):
            data = reader.sample_bytes(key, i)
            reader.span_bytes(key, i, i + 1)
            try:
                decode_sample(meta, data, head.shape(i), head.dtype)
            except CorruptionError as exc:
                raise with_location(exc, where, i) from None
    except CorruptionError as exc:
        assert exc.path == where and where in str(exc), str(exc)
    finally:
        reader.close()


@pytest.fixture
def stores(tmp_path):
    """The two read paths: a local file (mmap) and memory:// (ranged reads)."""
    url = f"memory://fuzz-{uuid.uuid4().hex}"
    local, memory = LocalStorage(str(tmp_path / "chunks")), FsspecStorage(url)
    yield local, memory
    memory.delete_all()


def store_and_read(stores, blob: bytes) -> None:
    for storage in stores:
        key = f"chunks/t0/{uuid.uuid4().hex}"
        storage.put(key, blob)
        read_chunk(storage, key)
        storage.delete(key)


DTYPES = ["uint8", "int16", "float32", "float64", "uint32", "bool"]


@st.composite
def valid_chunks(draw) -> bytes:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, 3))
    n = draw(st.integers(1, 6))
    ragged = draw(st.booleans())
    fixed = tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    samples, shapes = [], []
    for _ in range(n):
        shape = tuple(draw(st.integers(0, 4)) for _ in range(ndim)) if ragged else fixed
        samples.append(np.zeros(shape, dtype=dtype).tobytes())
        shapes.append(shape)
    sample_comp = draw(st.sampled_from([None, None, "lz4", "zstd", "png"]))
    if sample_comp == "png":
        from slicewise.format.codecs import encode_image

        image = np.full((3, 4, 3), draw(st.integers(0, 255)), np.uint8)
        samples, shapes, dtype = (
            [encode_image(image, "png")] * n,
            [(3, 4, 3)] * n,
            np.dtype(np.uint8),
        )
    elif sample_comp is not None:
        from slicewise.format.codecs import compress_bytes

        samples = [compress_bytes(s, sample_comp) for s in samples]
    chunk_comp = None if sample_comp else draw(st.sampled_from([None, "lz4", "zstd", "zlib"]))
    return encode_chunk(samples, shapes, dtype.name, sample_comp, chunk_comp)


@st.composite
def mutated(draw, blobs) -> bytes:
    blob = bytearray(draw(blobs))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "header-int"]))
        if not blob:
            break
        pos = draw(st.integers(0, len(blob) - 1))
        if kind == "flip":
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            blob[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del blob[pos:]
        elif kind == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif len(blob) >= PREFIX_SIZE:  # a header field set to an extreme value
            fields = list(PREFIX.unpack_from(bytes(blob), 0))
            index = draw(st.integers(2, 8))
            bits = {2: 8, 3: 8, 4: 32, 5: 16, 6: 16, 7: 32, 8: 64}[index]
            fields[index] = draw(
                st.sampled_from([0, 1, 2**bits - 1, 2 ** (bits - 1)]) | st.integers(0, 2**bits - 1)
            )
            blob[:PREFIX_SIZE] = PREFIX.pack(*fields)
    out = bytes(blob)
    return resign(out) if draw(st.booleans()) else out


@FUZZ
@given(blob=st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: MAGIC + b"\1\0" + b))
def test_fuzz_chunk_random_bytes(stores, blob):
    store_and_read(stores, blob)
    store_and_read(stores, resign(blob))


@FUZZ
@given(blob=mutated(valid_chunks()))
def test_fuzz_chunk_mutations(stores, blob):
    store_and_read(stores, blob)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=valid_chunks())
def test_valid_chunks_read_back(stores, blob):
    """The fuzzer's seeds are valid: every one reads without error."""
    for storage in stores:
        key = f"chunks/t0/{uuid.uuid4().hex}"
        storage.put(key, blob)
        reader = ChunkReader(storage)
        head = reader.header(key)
        reader.payload(key)
        for i in range(head.n):
            reader.sample_bytes(key, i)


# ---- manifests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory):
    """A small real dataset with every kind of manifest entry (ragged, class labels with a
    label table, text), copied per example."""
    root = str(tmp_path_factory.mktemp("fuzz") / "ds")
    ds = sw.empty(root, chunk_target_bytes=200)
    with ds:
        ds.create_tensor("x", dtype="float32")
        ds.create_tensor("labels", htype="class_label", class_names=["a"])
        ds.create_tensor("text", htype="text")
        for i in range(9):
            ds.append(
                {
                    "x": np.full((i % 3 + 1, 2), i, np.float32),
                    "labels": ["a", "b", "c"][i % 3],
                    "text": f"row {i}",
                }
            )
    return root


def manifest_path(root: str) -> str:
    folder = os.path.join(root, "versions")
    return os.path.join(folder, sorted(n for n in os.listdir(folder) if n.endswith(".json"))[-1])


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.sampled_from(["..", "../../etc/passwd", "/", "t0", "0" * 32, "uint8", "object", "str"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _replace(doc, path, value, delete: bool):
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def open_and_read_all(root: str, where: str) -> None:
    """Open the dataset and read every tensor; only CorruptionError naming a file of the
    dataset may come out, and every chunk path it names stays inside the dataset."""
    try:
        ds = sw.load(root)
        for name, state in ds._base.tensors.items():
            for key in state.keys:
                full = ds.storage.full_path(chunk_key(state.meta.id, key))
                assert os.path.realpath(full).startswith(os.path.realpath(root) + os.sep)
            tensor = ds[name]
            tensor.numpy(aslist=True)
            tensor.shape  # noqa: B018 - reads shapes from the manifest
            for row in range(min(len(tensor), 3)):
                tensor[row].tobytes()
                tensor[row].data()
    except CorruptionError as exc:
        assert exc.path is not None and os.path.realpath(exc.path).startswith(
            os.path.realpath(root)
        ), str(exc)


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_values(sample_dataset, tmp_path, data):
    root = str(tmp_path / f"ds-{uuid.uuid4().hex[:8]}")
    shutil.copytree(sample_dataset, root)
    path = manifest_path(root)
    doc = json.load(open(path))
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(list(_paths(doc))))
        doc = _replace(doc, target, data.draw(json_values), data.draw(st.booleans()))
    with open(path, "w") as f:
        json.dump(doc, f)
    open_and_read_all(root, path)
    shutil.rmtree(root)


@FUZZ
@given(blob=st.binary(max_size=400), data=st.data())
def test_fuzz_manifest_bytes(sample_dataset, blob, data):
    valid = open(manifest_path(sample_dataset), "rb").read()
    candidates = [blob]
    if data.draw(st.booleans()):
        mutated_bytes = bytearray(valid)
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(mutated_bytes) - 1))
            mutated_bytes[pos] = data.draw(st.integers(0, 255))
        candidates.append(bytes(mutated_bytes))
    for candidate in candidates:
        try:
            decode_version(candidate, "fuzz-manifest")
        except CorruptionError as exc:
            assert exc.path == "fuzz-manifest"
