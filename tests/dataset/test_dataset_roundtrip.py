"""Property tests: what goes in comes out, over dtypes, shapes, ragged samples,
sample and chunk compressions, chunk sizes, on a local directory and memory://."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import slicewise as sw
from slicewise.format.chunk import encode_chunk, parse_header

DTYPES = [
    "uint8",
    "int8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
    "complex64",
]
LOSSLESS = [None, "lz4", "zstd"]
CHUNK = [None, "lz4", "zstd", "zlib"]


@st.composite
def tensor_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    ragged = draw(st.booleans())
    base = draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim))
    n = draw(st.integers(0, 12))
    samples = []
    for _ in range(n):
        shape = tuple(draw(st.integers(0, 5)) for _ in range(ndim)) if ragged else tuple(base)
        samples.append(draw(hnp.arrays(np.dtype(dtype), shape)))
    compression = draw(st.sampled_from(["sample", "chunk", "none"]))
    sample_c = draw(st.sampled_from(LOSSLESS)) if compression == "sample" else None
    chunk_c = draw(st.sampled_from(CHUNK)) if compression == "chunk" else None
    target = draw(st.sampled_from([1, 64, 4096, 8 << 20]))
    return dtype, samples, sample_c, chunk_c, target


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("where", ["local", "memory"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=tensor_cases())
def test_generic_round_trip(where, tmp_path, case):
    dtype, samples, sample_c, chunk_c, target = case
    url = (
        str(tmp_path / uuid.uuid4().hex) if where == "local" else f"memory://rt-{uuid.uuid4().hex}"
    )
    ds = sw.empty(url, chunk_target_bytes=target)
    with ds:
        ds.create_tensor("x", dtype=dtype, sample_compression=sample_c, chunk_compression=chunk_c)
        ds.x.extend(samples)
    for reopened in (ds, sw.load(url)):
        x = reopened.x
        assert len(x) == len(samples)
        stored = [x[i].numpy() for i in range(len(samples))]
        expected = [s.reshape(1) if s.ndim == 0 else s for s in samples]
        assert all(_same(a, b) for a, b in zip(stored, expected, strict=True))
        listed = x.numpy(aslist=True)
        assert all(_same(a, b) for a, b in zip(listed, expected, strict=True))
        whole = x.numpy()
        if expected and all(e.shape == expected[0].shape for e in expected):
            assert _same(whole, np.stack(expected))
        mid = len(samples) // 2
        part = x[mid:].numpy(aslist=True)
        assert all(_same(a, b) for a, b in zip(part, expected[mid:], strict=True))
    assert sw.verify(url).ok


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.binary(max_size=50), min_size=1, max_size=20),
    ndim=st.integers(1, 3),
    comp=st.sampled_from(CHUNK),
)
def test_chunk_codec_round_trip(samples, ndim, comp):
    # raw uint8 samples: a shape must hold exactly the sample's bytes (the parser checks)
    shapes = [(len(s),) + (1,) * (ndim - 1) for s in samples]
    blob = encode_chunk(samples, shapes, "uint8", None, comp)
    head = parse_header(blob, len(blob), "mem")
    from slicewise.format.chunk import check_payload

    payload = check_payload(head, blob[head.payload_start :], "mem")
    assert head.n == len(samples)
    for i, s in enumerate(samples):
        assert bytes(payload[int(head.offsets[i]) : int(head.offsets[i + 1])]) == s
        assert head.shape(i) == shapes[i]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    images=st.lists(st.tuples(st.integers(1, 24), st.integers(1, 24)), min_size=1, max_size=5),
    channels=st.sampled_from([1, 3, 4]),
    comp=st.sampled_from(["png", "webp", "jpeg", None, "lz4"]),
    seed=st.integers(0, 1000),
)
def test_image_round_trip(tmp_path, images, channels, comp, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    c = 3 if comp == "jpeg" and channels == 4 else channels
    for h, w in images:
        shape = (h, w) if c == 1 else (h, w, c)
        arrays.append(rng.integers(0, 255, shape, dtype=np.uint8))
    url = str(tmp_path / uuid.uuid4().hex)
    ds = sw.empty(url)
    ds.create_tensor("im", htype="image", sample_compression=comp)
    ds.im.extend(arrays)
    for i, a in enumerate(arrays):
        got = ds.im[i].numpy()
        a = a if a.ndim == 3 else a[:, :, None]  # an image tensor stores gray as (H, W, 1)
        assert got.shape == a.shape and ds.im[i].shape == a.shape
        if comp in ("png", None, "lz4"):
            assert np.array_equal(got, a)
        if comp == "webp" and a.ndim == 3 and a.shape[2] == 4:
            pass  # lossy webp with alpha: shape checked above
    assert sw.verify(url).ok


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(st.text(max_size=20), max_size=10),
    objs=st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
            max_leaves=6,
        ),
        max_size=10,
    ),
    comp=st.sampled_from([None, "lz4", "zstd"]),
)
def test_text_json_round_trip(tmp_path, texts, objs, comp):
    url = f"memory://tj-{uuid.uuid4().hex}"
    ds = sw.empty(url)
    ds.create_tensor("t", htype="text", sample_compression=comp)
    ds.create_tensor("j", htype="json", chunk_compression="zlib" if comp is None else None)
    ds.t.extend(texts)
    ds.j.extend(objs)
    again = sw.load(url)
    assert again.t.data()["value"] == texts
    assert again.j.data()["value"] == objs
