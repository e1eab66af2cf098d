"""Fuzzing the two parsers a stranger's dataset reaches: chunk files (header, payload,
samples) and version manifests. Random bytes, mutated valid files, and mutated files
whose checksums a forger recomputed (so the checks past the CRCs are reached too). The
only error allowed is CorruptionError naming the file; never IndexError, struct.error,
ValueError, MemoryError or a hang. Example counts are small: the suite stays fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import uuid
import zlib

import numpy as np
import pytest
from chunk_forge import resign  # recomputes every checksum, as a forger would
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slicewise as sw
from slicewise.format.chunk import MAGIC, PREFIX, PREFIX_SIZE, encode_chunk
from slicewise.format.errors import CorruptionError, SampleError
from slicewise.format.htypes import TensorMeta
from slicewise.format.manifest import chunk_key, decode_version
from slicewise.format.reader import ChunkReader
from slicewise.format.samples import decode_sample, with_location
from slicewise.format.storage import FsspecStorage, LocalStorage

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---- chunk files ----------------------------------------------------------------------------


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
            span = reader.span_bytes(key, i, i + 1)
            assert bytes(span) == bytes(data)
            out = bytearray(len(data))
            reader.read_into(key, i, i + 1, memoryview(out))
            assert bytes(out) == bytes(data)
            private = reader.private_span(key, 0, i + 1)
            if private is not None:
                assert bytes(private[len(private) - len(data) :]) == bytes(data)
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
            index = draw(st.integers(1, 8))
            bits = {1: 16, 2: 8, 3: 8, 4: 32, 5: 16, 6: 16, 7: 32, 8: 64}[index]
            fields[index] = draw(
                st.sampled_from([0, 1, 2**bits - 1, 2 ** (bits - 1)]) | st.integers(0, 2**bits - 1)
            )
            blob[:PREFIX_SIZE] = PREFIX.pack(*fields)
    out = bytes(blob)
    return resign(out) if draw(st.booleans()) else out


@FUZZ
@given(
    blob=st.binary(max_size=300)
    | st.binary(max_size=300).map(lambda b: MAGIC + b"\1\0" + b)
    | st.binary(max_size=300).map(lambda b: MAGIC + b"\2\0" + b)
)
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


# ---- hostile chunks: bounded work -----------------------------------------------------------


def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _zeros_zlib(nbytes: int) -> bytes:
    engine = zlib.compressobj(9)
    block = bytes(1 << 20)
    parts = [engine.compress(block) for _ in range(nbytes >> 20)]
    return b"".join([*parts, engine.flush()])


def _forged_zlib_chunk(claimed: int, frame: bytes) -> bytes:
    """A chunk-compressed (zlib) chunk of one uint8 sample of `claimed` bytes whose
    payload is `frame`, every checksum right."""
    blob = encode_chunk([bytes(8)], [(8,)], "uint8", None, "zlib")
    fields = list(PREFIX.unpack_from(blob, 0))
    body = bytearray(blob[PREFIX_SIZE : PREFIX_SIZE + fields[7]])
    body[8:16] = np.uint64(claimed).tobytes()  # offsets[1]
    body[16:20] = np.uint32(claimed).tobytes()  # the shape
    fields[8] = len(frame)
    return resign(PREFIX.pack(*fields) + bytes(body) + frame)


def test_zip_bomb_chunk_is_refused_before_decompressing(tmp_path):
    """A 128 MiB run of zeros in ~130 KB of zlib, whose header honestly claims 128 MiB: over
    the ratio bound (256:1 past 64 MiB), refused from the header alone."""
    storage = LocalStorage(str(tmp_path))
    frame = _zeros_zlib(128 << 20)
    storage.put("chunks/t0/" + "a" * 32, _forged_zlib_chunk(128 << 20, frame))
    reader = ChunkReader(storage)

    def read():
        with pytest.raises(CorruptionError, match="over the format's limits") as info:
            reader.sample_bytes("chunks/t0/" + "a" * 32, 0)
        assert info.value.path == storage.full_path("chunks/t0/" + "a" * 32)

    assert _peak_traced(read) < 4 << 20


def test_zip_bomb_claiming_little_stops_at_the_claim(tmp_path):
    """The same bomb claiming 1 KB: decompression stops one byte past the claim."""
    storage = LocalStorage(str(tmp_path))
    storage.put("chunks/t0/" + "b" * 32, _forged_zlib_chunk(1000, _zeros_zlib(128 << 20)))
    reader = ChunkReader(storage)

    def read():
        with pytest.raises(CorruptionError, match="cannot decompress"):
            reader.sample_bytes("chunks/t0/" + "b" * 32, 0)

    assert _peak_traced(read) < 4 << 20


def test_writers_never_store_a_chunk_past_the_ratio_bound(tmp_path):
    """A chunk that compresses better than the bound allows is stored uncompressed, so
    everything a writer stores can be read back."""
    ds = sw.empty(str(tmp_path / "ds"), chunk_target_bytes=200 << 20)
    with ds:
        ds.create_tensor("z", dtype="uint8", chunk_compression="zlib")
        ds.z.append(np.zeros(70 << 20, np.uint8))
    assert int(sw.load(ds.path).z[0].numpy().sum()) == 0
    assert sw.verify(ds.path).ok


def _read_state(ds):
    return ds._base.tensors["x"]


def _relist(state, keys, rows, nbytes, lo, hi):
    state.keys, state.rows, state.nbytes = list(keys), list(rows), list(nbytes)
    state.min_shape, state.max_shape = list(lo), list(hi)
    state.remap = [None] * len(keys)
    state._cum = state._full_keys = None


@pytest.fixture
def one_chunk(tmp_path):
    root = str(tmp_path / "ds")
    ds = sw.empty(root, chunk_target_bytes=2 << 20)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.x.extend(np.ones((4, 256 * 1024), np.uint8))  # one 1 MiB chunk
    ds = sw.load(root)
    assert len(_read_state(ds).keys) == 1
    return ds


def test_chunk_listed_many_times_is_refused_before_allocating(one_chunk):
    """A manifest naming one 1 MiB chunk 100,000 times shows a 97.7 GiB tensor; reading it
    raises CorruptionError naming the chunk before anything near that is allocated."""
    ds = one_chunk
    s = _read_state(ds)
    k = 100_000
    _relist(s, s.keys * k, s.rows * k, s.nbytes * k, s.min_shape * k, s.max_shape * k)
    assert ds.x.shape[0] == 400_000
    where = ds.storage.full_path(s.full_key(0))

    def read():
        for read in (lambda: ds.x.numpy(), lambda: ds.x[5].numpy(), lambda: ds.x[0].tobytes()):
            with pytest.raises(CorruptionError, match="listed more than once") as info:
                read()
            assert info.value.path == where

    assert _peak_traced(read) < 64 << 20


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rows", 10**9, "holds 4 samples, the manifest says"),
        ("nbytes", 1 << 40, "bytes, the manifest says"),
        ("max_shape", [2**31], "shapes"),
    ],
)
def test_manifest_claims_are_checked_against_the_chunk_header(one_chunk, field, value, message):
    ds = one_chunk
    s = _read_state(ds)
    claims = {"rows": s.rows, "nbytes": s.nbytes, "max_shape": s.max_shape}
    claims[field] = [value]
    _relist(s, s.keys, claims["rows"], claims["nbytes"], s.min_shape, claims["max_shape"])
    where = ds.storage.full_path(s.full_key(0))

    def read():
        for read in (lambda: ds.x[0].numpy(), lambda: ds.x[:2].numpy(),
                     lambda: ds.x[1].tobytes()):
            with pytest.raises(CorruptionError, match=message) as info:
                read()
            assert info.value.path == where

    assert _peak_traced(read) < 64 << 20


def test_memory_error_is_reported_as_itself(tmp_path):
    """Out of memory while decompressing a (valid) chunk is a MemoryError, not corruption."""
    root = str(tmp_path / "ds")
    ds = sw.empty(root, chunk_target_bytes=64 << 20)
    with ds:
        ds.create_tensor("z", dtype="uint8", chunk_compression="zlib")
        ds.z.append(np.zeros(48 << 20, np.uint8))
    script = f"""
import resource, sys
import slicewise as sw
ds = sw.load({root!r})
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (24 << 20), resource.RLIM_INFINITY))
try:
    ds.z[0].numpy()
except MemoryError:
    sys.exit(0)
except BaseException as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
sys.exit(4)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])


def test_a_sample_past_the_ratio_bound_is_refused_at_its_append(tmp_path):
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("z", dtype="uint8", sample_compression="zstd")
        with pytest.raises(SampleError, match="decompression bomb"):
            ds.z.append(np.zeros(70 << 20, np.uint8))
        ds.z.append(np.zeros(1 << 20, np.uint8))  # under the 64 MiB floor: any ratio
    assert int(sw.load(ds.path).z[0].numpy().size) == 1 << 20
