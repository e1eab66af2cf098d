"""Sample grids (ds.show) and notebook views (_repr_html_), drawn from real datasets and
checked for what they contain: sizes, thumbnails, labels, overlays, captions."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pictures_helpers import (
    BOX,
    FILL,
    MASK,
    Parsed,
    data_uri_image,
    make_everything,
    not_blank,
)
from PIL import Image

import slicewise as sw
from slicewise.integrations.pictures import PAD, _cell_size


@pytest.fixture
def everything(tmp_path):
    return make_everything(tmp_path / "ds")


def test_grid_html_has_a_cell_per_row_with_thumbnails_and_captions(everything, tmp_path):
    out = tmp_path / "grid.html"
    grid = everything.show(rows="2:8", out=out)
    assert grid.rows == [2, 3, 4, 5, 6, 7]
    page = Parsed(out.read_text())
    cells = page.find("figure")
    assert [int(c["data-row"]) for c in cells] == grid.rows
    # one thumbnail per row for each picturable tensor: images, heat (2-D), curve (1-D)
    for tensor in ("images", "heat", "curve"):
        thumbs = page.find("img", **{"data-tensor": tensor})
        assert len(thumbs) == 6, tensor
        for thumb in thumbs:
            assert not_blank(data_uri_image(thumb["src"]))
    # boxes and masks are drawn on the image, not as pictures of their own
    assert not page.find("img", **{"data-tensor": "boxes"})
    assert not page.find("img", **{"data-tensor": "masks"})
    texts = " ".join(page.texts)
    for row in grid.rows:
        assert f"#{row}" in texts
        assert ["cat", "dog", "owl"][row % 3] in texts
        assert f"photo number {row}" in texts
        assert f'"index": {row}' in texts


def test_overlays_are_drawn_on_the_image(everything):
    cell = everything.show(rows=[0]).cells[0]
    image = next(p.image for p in cell.panels if p.tensor == "images")
    assert image.size == (96, 64)  # smaller than a thumbnail: kept at its size
    pixels = np.asarray(image).astype(int)
    fill = np.array(FILL[0])
    left, top, width, height = BOX
    # the box's edge is not the fill colour, its inside (away from the mask) is
    assert np.abs(pixels[top, left + width // 2] - fill).sum() > 60
    assert np.abs(pixels[top + height // 2, left + width // 2] - fill).sum() < 30
    # the mask tints its region, the rest keeps the fill
    inside = pixels[(MASK[0].start + MASK[0].stop) // 2, (MASK[1].start + MASK[1].stop) // 2]
    assert np.abs(inside - fill).sum() > 40
    assert np.abs(pixels[60, 90] - fill).sum() < 30


def test_grid_png_has_the_layout_size_and_no_blank_thumbnail(everything, tmp_path):
    out = tmp_path / "grid.png"
    grid = everything.show(rows=6, out=out, cols=3)
    with Image.open(out) as saved:
        saved.load()
        image = saved.convert("RGB")
    cell_w, cell_h = _cell_size(grid)
    title_h = 22
    assert image.size == (3 * cell_w + PAD, 2 * cell_h + PAD + title_h)
    for k in range(6):
        x0 = PAD + (k % 3) * cell_w + PAD // 2
        y0 = title_h + PAD + (k // 3) * cell_h + PAD // 2
        # the first panel of each cell is the image thumbnail
        region = image.crop((x0, y0, x0 + grid.thumb, y0 + grid.thumb))
        assert not_blank(region), k
    # the caption lines are drawn: dark text pixels below the thumbnails
    caption = np.asarray(image.crop((PAD, title_h + PAD + grid.thumb + PAD,
                                     PAD + cell_w - PAD, title_h + cell_h)))
    assert (caption.sum(axis=2) < 300).sum() > 50


def test_random_rows_are_reproducible_and_tensors_can_be_chosen(everything):
    a = everything.show(random=5, seed=3, tensors=["images", "labels"])
    b = everything.show(random=5, seed=3, tensors=["images", "labels"])
    assert a.rows == b.rows and len(a.rows) == 5 and a.rows == sorted(set(a.rows))
    cell = a.cells[0]
    assert [p.tensor for p in cell.panels] == ["images"]
    assert [name for name, _ in cell.captions] == ["labels"]
    with pytest.raises(KeyError, match="nope"):
        everything.show(tensors=["nope"])
    with pytest.raises(ValueError, match=".png or .html"):
        everything.show(out="grid.jpg")


def test_a_float_array_dataset_without_images(tmp_path):
    ds = sw.empty(str(tmp_path / "arrays"))
    with ds:
        ds.create_tensor("frames", dtype="float64")
        ds.create_tensor("value", dtype="float32")
        for i in range(4):
            ds.append({"frames": np.outer(np.arange(20), np.arange(30)) * (i + 1.5),
                       "value": np.float32(i / 3)})
    grid = ds.show()
    assert grid.rows == [0, 1, 2, 3]
    for cell in grid.cells:
        assert [p.tensor for p in cell.panels] == ["frames"]
        assert not_blank(cell.panels[0].image)
        assert cell.panels[0].image.size[0] >= 60  # small arrays are scaled up
    assert grid.cells[1].captions == [("value", "0.3333")]


def test_show_reads_only_the_rows_it_shows(tmp_path):
    ds = make_everything(tmp_path / "ds", rows=10, chunk_target_bytes=1)
    state = ds.images._state
    assert len(state.keys) == 10  # a chunk per row
    for k in range(4, 10):  # the chunks of rows 4.. are gone: reading them would fail
        for tensor in ds.tensors.values():
            os.remove(ds.storage.full_path(tensor._state.full_key(k)))
    reopened = sw.load(str(tmp_path / "ds"), read_only=True)
    grid = reopened.show(rows="0:4")
    assert grid.rows == [0, 1, 2, 3]
    with pytest.raises(Exception):  # noqa: B017 - any read error: the file is gone
        reopened.show(rows=[5])


def test_repr_html_of_dataset_tensor_rows_group_and_short_repr(everything):
    with everything:
        everything.create_group("extra")
        everything.create_tensor("extra/thumbs", htype="image", sample_compression="jpeg")
        everything.extra.thumbs.extend([np.full((20, 20, 3), 90, np.uint8)] * 12)
    page = Parsed(everything._repr_html_())
    table_text = " ".join(page.texts)
    for expected in ("images", "class_label", "png", "float32", "bbox", "extra/thumbs",
                     everything.version, "(12, 64, 96, 3)"):
        assert expected in table_text, expected
    strips = page.find("img", **{"class": "sw-strip"})
    assert len(strips) == 8 + 8  # the first 8 rows of each image tensor
    assert all(not_blank(data_uri_image(s["src"]), 2) for s in strips[:8])
    assert page.with_class("sw-log-table")
    assert len(repr(everything)) < 300 and "\n" not in repr(everything)

    tensor_page = Parsed(everything.images._repr_html_())
    assert len(tensor_page.find("img", **{"class": "sw-strip"})) == 8
    assert "cat, dog, owl" in " ".join(Parsed(everything.labels._repr_html_()).texts)

    row_page = Parsed(everything[4]._repr_html_())
    assert [c["data-row"] for c in row_page.find("figure")] == ["4"]
    assert "dog" in " ".join(row_page.texts)
    rows_page = Parsed(everything[0:20:2]._repr_html_())
    assert len(rows_page.find("figure")) == 6

    group_page = Parsed(everything.extra._repr_html_())
    assert "thumbs" in " ".join(group_page.texts)
    assert len(group_page.find("img", **{"class": "sw-strip"})) == 8


@pytest.mark.timeout(90)
def test_show_on_s3(tmp_path, s3_options, s3_url):
    url = s3_url
    make_everything(url, rows=5, storage_options=s3_options)
    ds = sw.load(url, storage_options=s3_options, read_only=True)
    grid = ds.show(out=tmp_path / "s3.html")
    page = Parsed((tmp_path / "s3.html").read_text())
    assert len(page.find("img", **{"data-tensor": "images"})) == 5
    assert grid.rows == [0, 1, 2, 3, 4]
