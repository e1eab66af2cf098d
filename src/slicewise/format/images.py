"""Image files and pixels into image tensors: what each htype stores, cheap structural
checks of a file, and the conversions (Pillow's), in one place.

    htype        read back as                       a file (sw.read) becomes
    image.rgb    (H, W, 3) uint8                    Pillow's convert("RGB") of it
    image.gray   (H, W, 1) uint8                    Pillow's convert("L") of it
    image        (H, W, C) uint8, C = 1, 2, 3, 4    L (gray, 1-bit, 16-bit), LA, RGB (RGB,
                                                    CMYK, YCbCr, palette), RGBA (RGBA,
                                                    palette with transparency)

    FileSample bytes ──sniff──► jpeg / png / webp / bmp / gif / tiff, or refused
        format == the tensor's sample compression (jpeg, png, webp):
            structural check (JPEG markers up to the scan and its EOI; PNG chunk CRCs
            and IEND; WebP's RIFF size), shape from the header ──► stored byte for byte,
            converted to the htype's mode when read (decode_pixels)
        anything else: decoded once (Pillow, first frame), converted to the htype's mode
            ──► encoded with the tensor's compression (or stored raw)

A full decode at append time happens only when asked (`sw.read(path, verify=True)`).
Every problem is an `ImageFileError` (a ValueError) saying what is wrong with the file;
the encoder adds the tensor's name and the file's path.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np

__all__ = [
    "FILE_FORMATS",
    "ImageFileError",
    "canonical_mode",
    "check_file",
    "decode_pixels",
    "file_pixels",
    "htype_pixels",
    "sniff_file_format",
]

FILE_FORMATS = ("jpeg", "png", "webp", "bmp", "gif", "tiff")


class ImageFileError(ValueError):
    """A file that cannot become an image sample: the message says why."""


def sniff_file_format(head: bytes | memoryview) -> str | None:
    """The image format from a file's first 12 bytes, or None."""
    head = bytes(head[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 12:
        return "bmp"
    return None


# ---- structural checks (no decode) ------------------------------------------------------

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                  0xCF})
_NO_LENGTH = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})  # markers without a segment
_EOI = b"\xff\xd9"


def jpeg_info(data: bytes | memoryview) -> tuple[int, int, int]:
    """(height, width, components) of a JPEG whose structure is whole: the segments up
    to the first scan (SOS) are walked by their lengths, a frame header (SOF) comes first,
    and an end-of-image marker follows the scan (entropy-coded data never holds FF D9, so
    a truncated file has none). A few microseconds; the pixels are not decoded."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise ImageFileError("is not a JPEG (no SOI marker)")
    pos, frame = 2, None
    while True:
        if pos + 4 > n:
            raise ImageFileError(f"is truncated: it ends at byte {n}, before its image data")
        if data[pos] != 0xFF:
            raise ImageFileError(f"is corrupt: no JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker == 0xD9:
            raise ImageFileError("is corrupt: it ends (EOI) before any image data")
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise ImageFileError(f"is corrupt: a JPEG segment of length {length} at byte {pos}")
        if marker in _SOF and frame is None:
            if length < 8 or pos + 10 > n:
                raise ImageFileError("is truncated inside its frame header (SOF)")
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            components = data[pos + 9]
            if height == 0 or width == 0:
                raise ImageFileError(f"has an empty or unsupported frame size {width}x{height}")
            if components not in (1, 3, 4):
                raise ImageFileError(f"has {components} color components (1, 3 or 4 expected)")
            frame = (height, width, components)
        elif marker == 0xDA:  # the first scan
            if frame is None:
                raise ImageFileError("is corrupt: image data (SOS) before a frame header (SOF)")
            scan = pos + 2 + length
            if scan >= n:
                raise ImageFileError(f"is truncated: it ends at byte {n}, before its image data")
            if data[n - 2] == 0xFF and data[n - 1] == 0xD9:
                return frame
            if bytes(data[scan:]).rfind(_EOI) < 0:  # trailing bytes after EOI are common
                raise ImageFileError(
                    f"is truncated: no end-of-image marker (EOI) after its image data "
                    f"({n} bytes)")
            return frame
        pos += 2 + length


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")
_U32 = struct.Struct(">I")


def png_info(data: bytes | memoryview) -> tuple[int, int, int, int, bool]:
    """(height, width, bit depth, color type, has tRNS) of a PNG whose chunks are whole:
    every chunk's CRC matches, IHDR comes first, IDAT and IEND are there. zlib's CRC
    runs at several GB/s; the pixels are not decompressed."""
    n = len(data)
    if bytes(data[:8]) != _PNG_SIGNATURE:
        raise ImageFileError("is not a PNG (no signature)")
    pos, header, transparent, has_data = 8, None, False, False
    while True:
        if pos + 12 > n:
            raise ImageFileError(f"is truncated: it ends at byte {n} without an IEND chunk")
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise ImageFileError(
                f"is truncated: chunk {kind!r} at byte {pos} runs past its end ({n} bytes)")
        if zlib.crc32(data[pos + 4 : end - 4]) != _U32.unpack_from(data, end - 4)[0]:
            raise ImageFileError(f"is corrupt: chunk {kind!r} at byte {pos} fails its CRC")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise ImageFileError("is corrupt: its first chunk is not IHDR")
            width, height = struct.unpack_from(">II", data, pos + 8)
            bit_depth, color_type = data[pos + 16], data[pos + 17]
            if width == 0 or height == 0:
                raise ImageFileError(f"has an empty size {width}x{height}")
            if color_type not in (0, 2, 3, 4, 6):
                raise ImageFileError(f"has an unknown PNG color type {color_type}")
            header = (height, width, bit_depth, color_type)
        elif kind == b"tRNS":
            transparent = True
        elif kind == b"IDAT":
            has_data = True
        elif kind == b"IEND":
            if not has_data:
                raise ImageFileError("is corrupt: it has no image data (IDAT)")
            return (*header, transparent)
        pos = end


def webp_info(data: bytes | memoryview) -> None:
    """A WebP's RIFF container is whole: the file holds the size its header announces."""
    n = len(data)
    if n < 16 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WEBP":
        raise ImageFileError("is not a WebP (no RIFF/WEBP header)")
    size = struct.unpack_from("<I", data, 4)[0] + 8
    if n < size:
        raise ImageFileError(f"is truncated: {n} bytes, its header announces {size}")


# ---- modes and shapes per htype ---------------------------------------------------------

_GRAY_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def canonical_mode(htype: str, mode: str, transparent: bool = False) -> str:
    """The Pillow mode a decoded image of `mode` is converted to for `htype`."""
    if htype == "image.rgb":
        return "RGB"
    if htype == "image.gray":
        return "L"
    if mode in _GRAY_MODES:
        return "L"
    if mode in ("LA", "La"):
        return "LA"
    if mode in ("RGBA", "RGBa", "PA"):
        return "RGBA"
    if mode == "P":
        return "RGBA" if transparent else "RGB"
    return "RGB"  # RGB, CMYK (YCCK JPEGs open as CMYK), YCbCr, LAB, HSV, RGBX


def _stored_shape(htype: str, height: int, width: int, mode: str, transparent: bool):
    return (height, width, _CHANNELS[canonical_mode(htype, mode, transparent)])


_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def check_file(data: bytes | memoryview, fmt: str, htype: str) -> tuple[int, ...] | None:
    """Check an image file's structure without decoding it; the shape its pixels have in
    a tensor of `htype` when the format can tell from its header (JPEG, PNG), else None
    (BMP, GIF, TIFF, WebP: Pillow's header reader tells)."""
    if fmt == "jpeg":
        height, width, components = jpeg_info(data)
        return _stored_shape(htype, height, width, _JPEG_MODES[components], False)
    if fmt == "png":
        height, width, _, color_type, transparent = png_info(data)
        return _stored_shape(htype, height, width, _PNG_MODES[color_type], transparent)
    if fmt == "webp":
        webp_info(data)
    return None


def header_shape(data: bytes | memoryview, htype: str) -> tuple[int, ...]:
    """The shape from Pillow's header reader (no pixels decoded)."""
    with _open(data) as image:
        return _stored_shape(htype, image.height, image.width, image.mode,
                             "transparency" in image.info)


# ---- pixels -----------------------------------------------------------------------------


def _open(data: bytes | memoryview):
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, DecompressionBomb...
        raise ImageFileError(f"cannot be opened as an image: {exc}") from exc


def _convert(image, mode: str):
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError:  # e.g. F -> RGB has no direct conversion: go through L, as L -> RGB
        return image.convert("L").convert(mode)


def htype_pixels(image, htype: str, mode: str | None = None) -> np.ndarray:
    """A Pillow image as the htype's (H, W, C) uint8 array (`mode` fixes the target)."""
    if mode is None:
        mode = canonical_mode(htype, image.mode, "transparency" in image.info)
    array = np.asarray(_convert(image, mode))
    return array[:, :, None] if array.ndim == 2 else array


def file_pixels(data: bytes | memoryview, htype: str) -> np.ndarray:
    """Decode a file's first frame fully (truncation and decoder errors surface here) and
    convert it for `htype`."""
    with _open(data) as image:
        try:
            image.load()
            return htype_pixels(image, htype)
        except ImageFileError:
            raise
        except Exception as exc:
            raise ImageFileError(f"does not decode: {exc}") from exc


def verify_decode(data: bytes | memoryview) -> None:
    """A full decode, pixels thrown away: `sw.read(path, verify=True)`."""
    with _open(data) as image:
        try:
            image.load()
        except Exception as exc:
            raise ImageFileError(f"does not decode: {exc}") from exc


def decode_pixels(data: bytes | memoryview, htype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A stored image sample of an image htype, as the htype gives it: (H, W, 3) for
    image.rgb, (H, W, 1) for image.gray, the stored channels for image (samples written
    before grayscale became (H, W, 1) keep their stored (H, W)). A JPEG goes through
    `jpeg_pixels` first (the same pixels, faster, where simplejpeg is installed)."""
    if bytes(data[:2]) == b"\xff\xd8":
        pixels = jpeg_pixels(data, htype, shape)
        if pixels is not None:
            return pixels
    return _pillow_pixels(data, htype, shape)


def _pillow_pixels(data: bytes | memoryview, htype: str, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if htype == "image.rgb":
        mode = "RGB"
    elif htype == "image.gray":
        mode = "L"
    else:
        mode = _MODE_OF_CHANNELS.get(shape[2] if len(shape) == 3 else 1)
        if mode is None:  # an image of other channels (uncommon): Pillow's own
            return np.asarray(image)
    array = np.asarray(_convert(image, mode))
    if array.ndim == 2 and (len(shape) == 3 or htype == "image.gray"):
        array = array[:, :, None]
    return array


def array_pixels(array: np.ndarray, htype: str) -> np.ndarray:
    """An array appended to an image tensor, in the htype's (H, W, C) form: image.rgb and
    image.gray convert uint8 gray, gray+alpha, RGB and RGBA pixels as Pillow does; image
    makes (H, W) into (H, W, 1). Raises ImageFileError for what cannot be held."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ImageFileError(f"takes (H, W) or (H, W, C) images, got shape {array.shape}")
    channels = array.shape[2]
    want = {"image.rgb": 3, "image.gray": 1}.get(htype)
    if want is None or channels == want:
        return array
    if array.dtype != np.uint8 or channels not in _MODE_OF_CHANNELS:
        raise ImageFileError(
            f"takes (H, W, {want}) images (or uint8 with 1 to 4 channels, converted), got "
            f"{array.dtype} of shape {array.shape}")
    from PIL import Image

    source = array[:, :, 0] if channels == 1 else array
    image = Image.fromarray(np.ascontiguousarray(source))  # L, LA, RGB or RGBA
    return htype_pixels(image, htype, "RGB" if want == 3 else "L")


# ---- JPEG: libjpeg-turbo straight into an array, Pillow's pixels

_SIMPLEJPEG: Any = None  # the module; False: not installed
_JPEG_KINDS: dict[tuple, bool] = {}  # (color space, subsampling) -> matched Pillow here


def _simplejpeg() -> Any:
    global _SIMPLEJPEG
    if _SIMPLEJPEG is None:
        try:
            import simplejpeg
        except ImportError:
            simplejpeg = False
        _SIMPLEJPEG = simplejpeg
    return _SIMPLEJPEG


def jpeg_pixels(data: bytes | memoryview, htype: str, shape: tuple) -> np.ndarray | None:
    """A stored JPEG sample of an image tensor decoded by libjpeg-turbo (through
    `simplejpeg`, in the `[fast]` and `[torch]` extras) straight into a new array it owns,
    or None where Pillow decodes it instead (`decode_pixels`).

    The same library Pillow decodes JPEG with, without Pillow's Python-level parsing and
    copies (a 400x400 JPEG: ~0.6 ms instead of ~0.7 ms, and the array is writable without
    a copy). Taken only where Pillow gives the same pixels: a YCbCr JPEG read as RGB (3
    channels), a grayscale one as L (1 channel), its size the stored shape's, under
    Pillow's MAX_IMAGE_PIXELS. The first JPEG of each kind (color space, chroma
    subsampling) a process decodes is decoded by Pillow too and compared: a difference
    (another libjpeg-turbo build) leaves that kind to Pillow in this process. Anything
    simplejpeg refuses (a truncated or corrupt file, a libjpeg warning) goes to Pillow,
    which decides as it always does."""
    simplejpeg = _simplejpeg()
    if not simplejpeg:
        return None
    dims = len(shape)
    if htype == "image.rgb" or (htype == "image" and dims == 3 and shape[2] == 3):
        mode = "RGB"
    elif htype == "image.gray" or (htype == "image" and (dims == 2 or shape[2] == 1)):
        mode = "GRAY"
    else:
        return None
    data = bytes(data) if not isinstance(data, bytes) else data
    try:
        height, width, space, subsampling = simplejpeg.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - not a JPEG simplejpeg reads: Pillow decides
        return None
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if ((space, mode) not in (("YCbCr", "RGB"), ("Gray", "GRAY"))
            or (height, width) != tuple(shape[:2]) or (limit and height * width > limit)):
        return None
    kind = (space, subsampling)
    if _JPEG_KINDS.get(kind) is False:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, mode, strict=True)
    except Exception:  # noqa: BLE001 - Pillow decodes it or raises its own error
        return None
    if dims == 2 and htype != "image.gray":  # stored (H, W): handed out so, as by Pillow
        pixels = pixels[:, :, 0]
    if pixels.shape != (tuple(shape) if dims == 3 or htype != "image.gray"
                        else (height, width, 1)):
        return None
    if kind not in _JPEG_KINDS:
        reference = _pillow_pixels(data, htype, shape)
        _JPEG_KINDS[kind] = bool(reference.shape == pixels.shape
                                 and np.array_equal(reference, pixels))
        if not _JPEG_KINDS[kind]:
            return None
    return pixels
