"""Image files of every common kind, made with Pillow, for the image tests (issue 10).

`make_kinds(folder)` writes one file per kind and returns {name: Kind}; `make_bad(folder)`
writes the files an ingest must refuse. The expected pixels are what Pillow's
convert("RGB") gives for the file, the promise `image.rgb` keeps.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 48, 64


@dataclass
class Kind:
    path: Path
    lossless: bool  # decoding it gives exact pixels: PNG, BMP, GIF, TIFF, lossless WebP
    jpeg: bool  # a JPEG file: kept byte for byte in a jpeg tensor

    def rgb(self) -> np.ndarray:
        with Image.open(self.path) as image:
            return np.asarray(image.convert("RGB"))

    def gray(self) -> np.ndarray:
        with Image.open(self.path) as image:
            return np.asarray(image.convert("L"))[:, :, None]


def smooth_rgb(seed: int = 0) -> np.ndarray:
    """A photo-like image (gradients and a disc): JPEG's error on it stays small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    base = rng.uniform(40, 200, 3)
    pixels = np.stack([base[0] + 0.8 * x, base[1] + 0.9 * y, base[2] + 0.3 * (x + y)], -1)
    disc = (y - HEIGHT / 2) ** 2 + (x - WIDTH / 3) ** 2 < (HEIGHT / 4) ** 2
    pixels[disc] = 0.5 * pixels[disc] + 60
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _icc_profile() -> bytes:
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:  # Pillow without littlecms: any bytes make an ICC segment
        return b"\x00" * 128


def make_kinds(folder: Path, seed: int = 0) -> dict[str, Kind]:
    """One file per kind of image a camera or the web produces."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(smooth_rgb(seed))
    alpha = Image.fromarray(np.linspace(0, 255, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
                            .astype(np.uint8))
    kinds: dict[str, Kind] = {}

    def save(name: str, image: Image.Image, exact: bool, **options) -> None:
        path = folder / name
        image.save(path, **options)
        kinds[name] = Kind(path, exact, jpeg=name.lower().endswith((".jpg", ".jpeg")))

    save("baseline.jpg", rgb, False, quality=90)
    save("progressive.JPG", rgb, False, quality=90, progressive=True)
    save("gray.jpeg", rgb.convert("L"), False, quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), False, quality=90)
    save("icc.jpg", rgb, False, quality=90, icc_profile=_icc_profile())
    save("rgb.png", rgb, True)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    save("rgba.png", rgba, True)
    la = rgb.convert("L")
    la.putalpha(alpha)
    save("la.png", la, True)
    save("palette.png", rgb.quantize(64), True)
    palette_t = rgb.quantize(64)
    palette_t.info["transparency"] = 0
    save("palette_transparent.png", palette_t, True, transparency=0)
    save("onebit.png", rgb.convert("1"), True)
    wide = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    wide[0, :8] = [0, 1, 100, 255, 256, 1000, 40000, 65535]
    save("sixteen.png", Image.fromarray(wide), True)
    save("lossy.webp", rgb, False, quality=90)
    save("lossless.webp", rgba, True, lossless=True)
    save("picture.bmp", rgb, True)
    first = rgb.quantize(64)
    second = Image.fromarray(255 - smooth_rgb(seed)).quantize(64)
    save("animated.gif", first, True, save_all=True, append_images=[second])
    save("photo.tif", rgb, True)
    save("UPPER.TIFF", rgb.convert("L"), True)
    return kinds


def make_bad(folder: Path) -> dict[str, Path]:
    """Files an ingest must refuse (each named with its reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(smooth_rgb(9))
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG")
    png = buffer.getvalue()
    bad = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "crc.png": flip_idat_byte(png),
        "empty.jpg": b"",
        "text.jpg": b"this is not an image, only some words\n" * 4,
    }
    paths = {}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    return paths


def flip_idat_byte(png: bytes) -> bytes:
    position = png.index(b"IDAT") + 20
    data = bytearray(png)
    data[position] ^= 0x55
    return bytes(data)


def garbage_idat_png() -> bytes:
    """A PNG whose chunks are whole (CRCs right) but whose pixel data does not inflate:
    only a full decode finds it."""
    buffer = io.BytesIO()
    Image.fromarray(smooth_rgb(3)).save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    start = png.index(b"IDAT")
    length = int.from_bytes(png[start - 4 : start], "big")
    body = bytes((7 * i + 3) % 251 for i in range(length))
    png[start + 4 : start + 4 + length] = body
    png[start + 4 + length : start + 8 + length] = zlib.crc32(b"IDAT" + body).to_bytes(4, "big")
    return bytes(png)
