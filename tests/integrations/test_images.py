"""Image stacks into a tensor: seed 003's TIFF movie, decoded once and in parallel."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import slicewise as sw
from slicewise.integrations.images import from_images

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def movie(tmp_path):
    """The seed's images/image0000.tif ... as 8-bit grayscale frames (scaled down)."""
    folder = tmp_path / "images"
    folder.mkdir()
    frames = np.random.default_rng(1500).integers(0, 255, size=(30, 64, 48), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"image{i:04d}.tif")
    return folder, frames


def test_seed_tiff_movie_loads_in_parallel_and_computes_with_dask(movie, tmp_path, pool):
    folder, frames = movie
    ds = from_images(str(folder / "image*.tif"), str(tmp_path / "movie"), pool=pool,
                     block_bytes=4 * 64 * 48)
    assert ds.images.shape == (30, 64, 48) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images.numpy(), frames)

    stack = ds.images.dask().rechunk((10, 32, 32))  # the seed's rechunk, on stored data
    assert float(stack.mean().compute()) == pytest.approx(float(frames.mean()))
    np.testing.assert_allclose(stack[:, :10].mean(axis=(1, 2)).compute(),
                               frames[:, :10].mean(axis=(1, 2)))
    [entry] = [e for e in ds.log() if e["meta"].get("integration") == "images"]
    assert entry["meta"]["files"] == 30


def test_natural_order_and_explicit_lists(tmp_path):
    folder = tmp_path / "unpadded"
    folder.mkdir()
    for i in (1, 2, 10, 11):
        Image.fromarray(np.full((4, 5), i, np.uint8)).save(folder / f"image{i}.tif")
    ds = from_images(str(folder / "image*.tif"), str(tmp_path / "a"), num_workers=0)
    assert ds.images.numpy()[:, 0, 0].tolist() == [1, 2, 10, 11]  # not 1, 10, 11, 2

    order = [folder / "image11.tif", folder / "image1.tif"]
    ds = from_images(order, str(tmp_path / "b"), "frames", num_workers=0)
    assert ds.frames.numpy()[:, 0, 0].tolist() == [11, 1]

    ds = from_images(str(folder), str(tmp_path / "c"), num_workers=0)  # a directory
    assert len(ds.images) == 4


def test_sixteen_bit_rgb_and_multipage(tmp_path):
    deep = np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1000
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    ds = from_images([tmp_path / "deep.tif"], str(tmp_path / "d16"), num_workers=0)
    assert ds.images.dtype == np.uint16 and ds.images.htype == "generic"
    np.testing.assert_array_equal(ds.images[0].numpy(), deep)

    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "color.png")
    ds = from_images([tmp_path / "color.png"], str(tmp_path / "rgb"), num_workers=0)
    np.testing.assert_array_equal(ds.images[0].numpy(), rgb)

    pages = [Image.fromarray(np.full((5, 5), v, np.uint8)) for v in (7, 8, 9)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    ds = from_images([tmp_path / "stack.tif"], str(tmp_path / "pages"), num_workers=0)
    assert ds.images.numpy()[:, 0, 0].tolist() == [7, 8, 9]


def test_custom_reader_like_the_seed(movie, tmp_path):
    from skimage.io import imread

    folder, frames = movie
    ds = from_images(str(folder / "image*.tif"), str(tmp_path / "sk"), reader=imread,
                     num_workers=2)
    np.testing.assert_array_equal(ds.images.numpy(), frames)


def test_a_frame_of_another_shape_is_named(movie, tmp_path, pool):
    folder, _ = movie
    odd = folder / "image0017.tif"
    Image.fromarray(np.zeros((64, 47), np.uint8)).save(odd)
    with pytest.raises(Exception) as info:
        from_images(str(folder / "image*.tif"), str(tmp_path / "bad"), pool=pool)
    text = _chain_text(info.value)
    assert "image 17" in text and str(odd) in text and "(64, 47)" in text
    assert not sw.exists(str(tmp_path / "bad"))  # nothing left behind: run it again as is

    ds = from_images(str(folder / "image*.tif"), str(tmp_path / "ragged"), allow_ragged=True,
                     num_workers=0)
    assert ds.images.is_ragged


def test_unreadable_file_and_empty_glob(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(OSError, match="broken.tif"):
        from_images([tmp_path / "broken.tif"], str(tmp_path / "x"), num_workers=0)
    with pytest.raises(FileNotFoundError, match="nothing"):
        from_images(str(tmp_path / "nothing*.tif"), str(tmp_path / "y"), num_workers=0)


def _chain_text(error: BaseException) -> str:
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(parts) + os.linesep
