"""The torch loaders' JPEG decode and sample reads (real torch, CPU; real JPEG files):

- JPEGs decoded by libjpeg-turbo through simplejpeg give exactly Pillow's pixels, across
  chroma subsamplings, progressive files, odd sizes, grayscale and the image htypes; what
  that path does not take (CMYK, truncated files, another build's pixels) is decoded by
  Pillow as before;
- a stream reads large samples of local chunk files one by one when they are due
  (nothing held in its shuffle buffer): still every row exactly once per epoch with 0, 1
  and 2 loader workers and two ranks, and mid-epoch resume gives exactly the rest."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

import slicewise as sw  # noqa: E402
import slicewise.format.images as sw_images  # noqa: E402
import slicewise.integrations.torch as sw_torch  # noqa: E402
from slicewise.integrations.torch import TorchIterableDataset, TorchLoader  # noqa: E402

N = 60


def _picture(height: int, width: int, seed: int, gray: bool = False) -> np.ndarray:
    """Smooth gradients plus noise: colour edges that chroma upsampling has to handle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            x * 255 // max(1, width - 1),
            y * 255 // max(1, height - 1),
            (x + y) * 127 // max(1, height + width - 2),
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    return pixels[:, :, 0] if gray else pixels


def _encode(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _pillow(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode))


# every kind of YCbCr and grayscale JPEG the fast path takes
KINDS = [
    ("444", dict(subsampling=0, quality=90)),
    ("422", dict(subsampling=1, quality=75)),
    ("420", dict(subsampling=2, quality=95)),
    ("420 progressive optimized", dict(subsampling=2, quality=60, progressive=True, optimize=True)),
    ("444 q100", dict(subsampling=0, quality=100)),
]
SIZES = [(37, 53), (16, 16), (1, 1), (129, 255), (400, 400)]


@pytest.fixture
def fresh_kinds(monkeypatch):
    """Each test starts with no kind checked yet in this process."""
    monkeypatch.setattr(sw_images, "_JPEG_KINDS", {})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label,options", KINDS, ids=[k for k, _ in KINDS])
def test_libjpeg_turbo_gives_pillows_pixels(tmp_path, fresh_kinds, label, options):
    pytest.importorskip("simplejpeg")
    files = [_encode(_picture(h, w, seed), **options) for seed, (h, w) in enumerate(SIZES)]
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("rgb", htype="image.rgb", sample_compression="jpeg")
        for data in files:
            sample = sw.read("x.jpg")
            sample.keep(data)
            ds.append({"images": sample, "rgb": sample})
    ds = sw.load(str(tmp_path / "ds"))
    for i, data in enumerate(files):
        want = _pillow(data, "RGB")
        for name in ("images", "rgb"):
            meta = ds[name].meta
            fast = sw_images.jpeg_pixels(data, meta.htype, want.shape)
            assert fast is not None, f"{label}: the fast path declined {SIZES[i]}"
            assert fast.dtype == np.uint8 and fast.flags.writeable and fast.flags.owndata
            np.testing.assert_array_equal(fast, want)
            # every read takes the same path (format/images.py), not only the loaders
            np.testing.assert_array_equal(ds[name][i].numpy(), want)
    # and through the loaders, which hand out what jpeg_pixels gives
    for i, sample in enumerate(sw.TorchDataset(ds)):
        np.testing.assert_array_equal(sample["images"], _pillow(files[i], "RGB"))
        np.testing.assert_array_equal(sample["rgb"], _pillow(files[i], "RGB"))
    streamed = {s["index"]: s for s in TorchIterableDataset(ds, return_index=True)}
    assert all(
        np.array_equal(streamed[i]["images"], _pillow(files[i], "RGB")) for i in range(len(files))
    )


@pytest.mark.timeout(60)
def test_grayscale_jpegs_give_pillows_pixels(tmp_path, fresh_kinds):
    pytest.importorskip("simplejpeg")
    files = [
        _encode(_picture(h, w, seed, gray=True), quality=85) for seed, (h, w) in enumerate(SIZES)
    ]
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("gray", htype="image.gray", sample_compression="jpeg")
        ds.create_tensor("plain", htype="image", sample_compression="jpeg")
        for data in files:
            sample = sw.read("x.jpg")
            sample.keep(data)
            ds.append({"gray": sample, "plain": sample})
    ds = sw.load(str(tmp_path / "ds"))
    for i, data in enumerate(files):
        want = _pillow(data, "L")[:, :, None]
        for name in ("gray", "plain"):
            got = sw.TorchDataset(ds, tensors=[name])[i][name]
            assert got.shape == ds[name][i].numpy().shape == want.shape
            np.testing.assert_array_equal(got, want)
            assert sw_images.jpeg_pixels(data, ds[name].meta.htype, want.shape) is not None


@pytest.mark.timeout(60)
def test_what_the_fast_path_declines_is_pillows(tmp_path, fresh_kinds):
    pytest.importorskip("simplejpeg")
    color = _picture(24, 40, 1)
    cmyk = io.BytesIO()
    Image.fromarray(color).convert("CMYK").save(cmyk, "JPEG")
    cmyk = cmyk.getvalue()
    gray_file = _encode(_picture(24, 40, 2, gray=True))
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("rgb", htype="image.rgb", sample_compression="jpeg")
        for data in (cmyk, gray_file):  # converted to RGB by Pillow, not libjpeg
            sample = sw.read("x.jpg")
            sample.keep(data)
            ds.rgb.append(sample)
    ds = sw.load(str(tmp_path / "ds"))
    meta = ds.rgb.meta
    assert sw_images.jpeg_pixels(cmyk, meta.htype, (24, 40, 3)) is None
    assert sw_images.jpeg_pixels(gray_file, meta.htype, (24, 40, 3)) is None
    data = sw.TorchDataset(ds)
    np.testing.assert_array_equal(data[0]["rgb"], _pillow(cmyk, "RGB"))
    np.testing.assert_array_equal(data[1]["rgb"], _pillow(gray_file, "RGB"))
    # a truncated file, or a size other than the stored one: Pillow decides
    good = _encode(color)
    assert sw_images.jpeg_pixels(good[: len(good) // 2], meta.htype, (24, 40, 3)) is None
    assert sw_images.jpeg_pixels(good, meta.htype, (24, 41, 3)) is None
    assert sw_images.jpeg_pixels(b"not a jpeg", meta.htype, (24, 40, 3)) is None


@pytest.mark.timeout(60)
def test_another_builds_pixels_turn_the_fast_path_off(tmp_path, fresh_kinds, monkeypatch):
    # Injected: a simplejpeg whose libjpeg-turbo decodes differently from Pillow's (a
    # build that cannot be installed here). The first JPEG of a kind is checked against
    # Pillow; on a difference that kind is left to Pillow in this process.
    simplejpeg = pytest.importorskip("simplejpeg")

    class OtherBuild:
        decode_jpeg_header = staticmethod(simplejpeg.decode_jpeg_header)
        calls = 0

        @classmethod
        def decode_jpeg(cls, data, colorspace, **kwargs):
            cls.calls += 1
            pixels = simplejpeg.decode_jpeg(data, colorspace, **kwargs)
            pixels[0, 0, 0] ^= 1
            return pixels

    monkeypatch.setattr(sw_images, "_SIMPLEJPEG", OtherBuild)
    files = [_encode(_picture(20, 30, seed), subsampling=2) for seed in range(3)]
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        for data in files:
            sample = sw.read("x.jpg")
            sample.keep(data)
            ds.images.append(sample)
    ds = sw.load(str(tmp_path / "ds"))
    for i, sample in enumerate(sw.TorchDataset(ds)):
        np.testing.assert_array_equal(sample["images"], _pillow(files[i], "RGB"))
    assert OtherBuild.calls == 1  # checked once, then Pillow for that kind
    assert sw_images._JPEG_KINDS == {("YCbCr", "420"): False}


@pytest.mark.timeout(60)
def test_without_simplejpeg_pillow_decodes(tmp_path, fresh_kinds, monkeypatch):
    monkeypatch.setattr(sw_images, "_SIMPLEJPEG", False)  # as where it is not installed
    data = _encode(_picture(30, 20, 4))
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        sample = sw.read("x.jpg")
        sample.keep(data)
        ds.images.append(sample)
    ds = sw.load(str(tmp_path / "ds"))
    got = sw.TorchDataset(ds)[0]["images"]
    assert got.flags.writeable
    np.testing.assert_array_equal(got, _pillow(data, "RGB"))


# ---- streaming: large samples of local chunk files are read one by one when due


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Rows whose JPEGs are over DIRECT_MIN_BYTES (read one by one), with small labels and
    numbers (held in blocks), in many chunks."""
    path = tmp_path_factory.mktemp("torch_direct") / "ds"
    ds = sw.empty(str(path), chunk_target_bytes=60_000)
    files = [_encode(_picture(64, 96, i), quality=95, subsampling=0) for i in range(N)]
    assert min(len(f) for f in files) > sw_torch.DIRECT_MIN_BYTES
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=["a", "b", "c"])
        ds.create_tensor("x", dtype="int64")
        for i, data in enumerate(files):
            sample = sw.read(f"row{i}.jpg")
            sample.keep(data)
            ds.append({"images": sample, "labels": "abc"[i % 3], "x": np.int64(i)})
    ds = sw.load(str(path))
    assert len(ds.images.chunk_row_ranges()) > 5
    return ds, files


def _rows(batch: dict, files: list[bytes]) -> list[int]:
    index = batch["index"].tolist()
    assert batch["x"].reshape(-1).tolist() == index
    assert batch["labels"].tolist() == [i % 3 for i in index]
    for i, image in zip(index, batch["images"], strict=True):
        assert np.array_equal(image.numpy(), _pillow(files[i], "RGB"))
    return index


def test_large_local_samples_are_read_one_by_one(large):
    ds, _ = large
    rows = TorchIterableDataset(ds).rows
    assert rows.direct == ["images"]  # labels and numbers: small, read in blocks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_direct_reads_every_row_once_per_epoch(large, workers):
    ds, files = large
    loader = ds.pytorch(batch_size=7, num_workers=workers, shuffle=True, buffer_size=0.2)
    orders = []
    for _epoch in range(2):
        seen = [i for batch in loader for i in _rows(batch, files)]
        assert sorted(seen) == list(range(N))
        orders.append(seen)
    assert orders[0] != orders[1] and orders[0] != sorted(orders[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_direct_reads_two_ranks(large, workers):
    ds, files = large
    per_rank = []
    for rank in range(2):
        data = TorchIterableDataset(
            ds, shuffle=True, seed=2, rank=rank, world_size=2, return_index=True
        )
        loader = TorchLoader(data, batch_size=5, num_workers=workers)
        per_rank.append([i for batch in loader for i in _rows(batch, files)])
        assert len(per_rank[-1]) == len(data)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_direct_reads_resume_mid_epoch(large, workers):
    ds, files = large
    loader = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, seed=9, buffer_size=0.1)
    first = []
    for k, batch in enumerate(loader):
        first += batch["index"].tolist()
        if k == 3:
            state = json.loads(json.dumps(loader.state_dict()))
            break
    again = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, buffer_size=0.1)
    again.load_state_dict(state)
    rest = [i for batch in again for i in _rows(batch, files)]
    assert sorted(first + rest) == list(range(N))
    reference = ds.pytorch(batch_size=4, num_workers=workers, shuffle=True, seed=9, buffer_size=0.1)
    full = [i for batch in reference for i in batch["index"].tolist()]
    if workers == 0:
        assert first + rest == full


@pytest.mark.timeout(120)
def test_every_tensor_read_one_by_one(large, monkeypatch):
    # DIRECT_MIN_BYTES 0: the labels and numbers are read one by one too (no block cache)
    ds, files = large
    monkeypatch.setattr(sw_torch, "DIRECT_MIN_BYTES", 0)
    data = TorchIterableDataset(
        ds, shuffle=True, seed=4, return_index=True, decode_method={"images": "tobytes"}
    )
    assert data.rows.direct == ["images", "labels", "x"]
    for epoch in range(2):
        data.set_epoch(epoch)
        seen = {s["index"]: s for s in data}
        assert sorted(seen) == list(range(N))
        assert all(
            seen[i]["images"] == files[i]
            and seen[i]["labels"] == i % 3
            and seen[i]["x"].tolist() == [i]
            for i in range(N)
        )
    iterator = iter(data)
    first = [next(iterator)["index"] for _ in range(17)]
    state = data.state_dict()
    other = TorchIterableDataset(ds, return_index=True, decode_method={"images": "tobytes"})
    other.load_state_dict(state)
    rest = [s["index"] for s in other]
    assert sorted(first + rest) == list(range(N))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_headers_let_go_and_parsed_again(large, monkeypatch, workers):
    # KEEP_HEADERS 1: a stream keeps one chunk header parsed at a time; the headers it lets
    # go are parsed (and checked) again when a later row needs them
    ds, files = large
    monkeypatch.setattr(sw_torch, "KEEP_HEADERS", 1)
    loader = ds.pytorch(batch_size=6, num_workers=workers, shuffle=True, buffer_size=0.3)
    for _epoch in range(2):
        assert sorted(i for batch in loader for i in _rows(batch, files)) == list(range(N))
    if workers == 0:
        fresh = sw.load(ds.path)  # a reader that has parsed no header yet
        stream = TorchIterableDataset(fresh, shuffle=True, seed=1, tensors=["images"])
        held = [len(fresh._reader._headers) for _ in stream]
        assert len(held) == N and max(held) <= 1


@pytest.mark.timeout(60)
def test_padded_view_streams_rows_past_a_tensors_end(tmp_path):
    # images (read one by one) longer than labels (held): the labels' missing rows are
    # their empty samples, as ds.padded() reads them
    files = [_encode(_picture(64, 96, i), quality=95, subsampling=0) for i in range(6)]
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=["a", "b"])
        for i, data in enumerate(files):
            sample = sw.read("x.jpg")
            sample.keep(data)
            ds.images.append(sample)
            if i < 4:
                ds.labels.append("ab"[i % 2])
    ds = sw.load(str(tmp_path / "ds"))
    loader = ds.pytorch(pad_tensors=True, shuffle=True, num_workers=0, collate_fn=list)
    assert loader.dataset.rows.direct == ["images"]
    seen = {s["index"]: s for batch in loader for s in batch}
    assert sorted(seen) == list(range(6))
    for i in range(6):
        np.testing.assert_array_equal(seen[i]["images"], _pillow(files[i], "RGB"))
        if i < 4:
            assert seen[i]["labels"] == i % 2
        else:
            assert np.asarray(seen[i]["labels"]).size == 0
