"""Real datasets to draw, and readers of what the pictures contain (HTML, PNG)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

import slicewise as sw
from html_tags import Parsed  # noqa: F401  (the pictures tests import it from here)

FILL = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
BOX = (10, 8, 30, 20)  # LTWH pixels
MASK = (slice(40, 56), slice(40, 70))


def photo(i: int) -> np.ndarray:
    """A 64 x 96 image: a flat colour with a gradient stripe (not blank, not noise)."""
    image = np.zeros((64, 96, 3), np.uint8)
    image[:] = FILL[i % 3]
    image[:, :8] = np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None]
    return image


def make_everything(path, rows: int = 12, **open_options) -> sw.Dataset:
    """Images with labels, bounding boxes, masks, a float array, a 1-D curve, text, json."""
    ds = sw.empty(str(path), overwrite=True, **open_options)
    rng = np.random.default_rng(0)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="png")
        ds.create_tensor("labels", htype="class_label", class_names=["cat", "dog", "owl"])
        ds.create_tensor("boxes", htype="bbox")
        ds.create_tensor("masks", htype="generic", dtype="bool")
        ds.create_tensor("heat", htype="generic", dtype="float32")
        ds.create_tensor("curve", htype="generic", dtype="float64")
        ds.create_tensor("caption", htype="text")
        ds.create_tensor("meta", htype="json")
        for i in range(rows):
            mask = np.zeros((64, 96), bool)
            mask[MASK] = True
            ds.append({
                "images": photo(i),
                "labels": np.uint32(i % 3),
                "boxes": np.array([BOX], np.float32),
                "masks": mask,
                "heat": rng.random((12, 16)).astype(np.float32) * 5 - 1,
                "curve": np.sin(np.arange(40) / 4 + i),
                "caption": f"photo number {i}",
                "meta": {"index": i, "tag": "x" * (i % 2)},
            })
    return ds


def data_uri_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/"), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def not_blank(image: Image.Image, min_colors: int = 3) -> bool:
    """More than a flat fill: several colours and some contrast."""
    array = np.asarray(image.convert("RGB"))
    colors = len(np.unique(array.reshape(-1, 3), axis=0))
    return colors >= min_colors and float(array.std()) > 5.0
