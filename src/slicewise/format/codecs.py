"""Codecs: byte compressors (lz4, zstd, zlib) and image codecs (jpeg, png, webp via Pillow),
plus sniffing an encoded image's format and shape from its first bytes without decoding.

lz4 and zstandard are optional imports; asking for them without the package installed
raises a DatasetError that says which `pip install` fixes it.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from slicewise.format.errors import DatasetError, SampleError
from slicewise.format.images import sniff_file_format

IMAGE_COMPRESSIONS = ("jpeg", "png", "webp")
BYTE_COMPRESSIONS = ("lz4", "zstd")
SAMPLE_COMPRESSIONS = (*IMAGE_COMPRESSIONS, *BYTE_COMPRESSIONS)
# encoded files stored as they are by the audio and video htypes (format/htypes_media.py)
AUDIO_COMPRESSIONS = ("mp3", "flac", "wav")
VIDEO_COMPRESSIONS = ("mp4", "mkv", "avi")
MEDIA_COMPRESSIONS = (*AUDIO_COMPRESSIONS, *VIDEO_COMPRESSIONS)
CHUNK_COMPRESSIONS = ("lz4", "zstd", "zlib")
CHUNK_COMPRESSION_CODES = {None: 0, "lz4": 1, "zstd": 2, "zlib": 3}
CHUNK_COMPRESSION_NAMES = {v: k for k, v in CHUNK_COMPRESSION_CODES.items()}

_ALIASES = {"jpg": "jpeg", "zstandard": "zstd", "none": None, "": None}


def normalize_compression(name: str | None, allowed: tuple[str, ...], what: str) -> str | None:
    if name is None:
        return None
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key is None:
        return None
    if key not in allowed:
        raise DatasetError(f"unknown {what} {name!r}; choose one of {', '.join(allowed)} or None")
    return key


def _lz4():
    try:
        import lz4.frame
    except ImportError:
        raise DatasetError(
            "lz4 compression needs the 'lz4' package: pip install 'slicewise[compression]'"
        ) from None
    return lz4.frame


def _zstd():
    try:
        import zstandard
    except ImportError:
        raise DatasetError(
            "zstd compression needs the 'zstandard' package: pip install 'slicewise[compression]'"
        ) from None
    return zstandard


def compress_bytes(data: bytes | memoryview, method: str, bounded: bool = True) -> bytes:
    """`data` compressed as one frame. bounded=True (a sample): a frame that readers would
    refuse, decompressing past `ratio_bound`, is a SampleError instead of a stored sample
    nobody can read. Chunk writers pass False and store such a chunk uncompressed."""
    if method == "lz4":
        out = _lz4().compress(data)
    elif method == "zstd":
        out = _zstd().ZstdCompressor(level=3).compress(data)
    elif method == "zlib":
        out = zlib.compress(data, 6)
    else:
        raise DatasetError(f"unknown byte compression {method!r}")
    if bounded and len(data) > ratio_bound(len(out)):
        raise SampleError(
            f"a sample of {len(data)} bytes compresses to {len(out)} with {method}: more "
            f"than {MAX_RATIO}:1 past {RATIO_FLOOR >> 20} MiB, which readers refuse as a "
            "decompression bomb (FORMAT.md §1); use chunk_compression or no compression"
        )
    return out


_DECOMPRESS_STEP = 16 * 1024 * 1024

# Bounded work (FORMAT.md §1, §7): decompressing stored bytes may produce at most
# max(RATIO_FLOOR, MAX_RATIO x the stored bytes). lz4 cannot exceed about 255:1 anyway;
# zlib reaches about 1032:1 and zstd far more on runs of zeros, which is what a
# decompression bomb is. Writers never store a chunk-compressed payload past the bound
# (they store that chunk uncompressed, chunk.py), so the bound only ever refuses files
# no slicewise wrote.
MAX_RATIO = 256
RATIO_FLOOR = 64 * 1024 * 1024


def ratio_bound(stored_nbytes: int) -> int:
    """The most bytes that `stored_nbytes` of compressed data may decompress to."""
    return max(RATIO_FLOOR, MAX_RATIO * int(stored_nbytes))


def decompress_bounded(data: bytes | memoryview, method: str, limit: int) -> bytes | bytearray:
    """Decompress one frame into at most `limit` bytes, or raise ValueError.

    For stored data (which may come from a stranger): memory grows with the output the
    frame really produces, in steps of at most 16 MiB, and stops one byte past `limit`,
    which is itself capped by `ratio_bound(len(data))`. Sizes written inside the frame
    (lz4 and zstd record a content size) are never trusted to size an allocation. The
    output is returned as it was grown (no second copy of it). A MemoryError is raised
    as itself."""
    limit = min(int(limit), ratio_bound(len(data)))
    step = max(1, min(_DECOMPRESS_STEP, limit + 1))
    out = bytearray()
    if method == "zlib":
        engine = zlib.decompressobj()
        pending = data
        while True:
            out += engine.decompress(pending, step)
            pending = engine.unconsumed_tail
            if len(out) > limit:
                raise ValueError(f"decompresses to more than the {limit} bytes expected")
            if engine.eof or not pending:
                break
        if not engine.eof:
            raise ValueError("truncated zlib stream")
    elif method == "zstd":
        reader = _zstd().ZstdDecompressor().stream_reader(data, read_across_frames=False)
        with reader:
            while True:
                piece = reader.read(step)
                if not piece:
                    break
                out += piece
                if len(out) > limit:
                    raise ValueError(f"decompresses to more than the {limit} bytes expected")
    elif method == "lz4":
        engine = _lz4().LZ4FrameDecompressor()
        pending = data
        while True:
            out += engine.decompress(pending, max_length=step)
            pending = b""
            if len(out) > limit:
                raise ValueError(f"decompresses to more than the {limit} bytes expected")
            if engine.eof or engine.needs_input:
                break
        if not engine.eof:
            raise ValueError("truncated lz4 frame")
    else:
        raise DatasetError(f"unknown byte compression {method!r}")
    return out


# ---- image sniffing -------------------------------------------------------------------------


def sniff_image_format(data: bytes | memoryview) -> str | None:
    """"jpeg", "png" or "webp" (the formats a tensor stores as they are), else None."""
    fmt = sniff_file_format(data)
    return fmt if fmt in ("jpeg", "png", "webp") else None


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF})
_JPEG_NO_LENGTH = frozenset({0xD8, 0x01, *range(0xD0, 0xD8)})  # markers without a segment


def jpeg_shape(data: bytes | memoryview) -> tuple[int, ...] | None:
    """(H, W[, C]) from the SOF marker, walking segment lengths: about 2 microseconds (it
    runs once per stored JPEG, so no struct calls and no copies)."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            if pos + 10 > n:
                return None
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            comps = data[pos + 9]
            if height == 0 or width == 0:
                return None
            return (height, width) if comps == 1 else (height, width, comps)
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


# palette PNGs (type 3) decode to RGB or RGBA depending on tRNS: Pillow decides those
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_shape(data: bytes | memoryview) -> tuple[int, ...] | None:
    if len(data) < 26 or bytes(data[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    bit_depth, color_type = data[24], data[25]
    if bit_depth != 8 or color_type not in _PNG_CHANNELS:
        return None  # 16-bit and odd PNGs: let Pillow tell the decoded shape
    channels = _PNG_CHANNELS[color_type]
    return (height, width) if channels == 1 else (height, width, channels)


def encoded_image_shape(data: bytes | memoryview, fmt: str) -> tuple[int, ...]:
    """Shape of the array `decode_image` returns, read from the header where possible."""
    shape = None
    if fmt == "jpeg":
        shape = jpeg_shape(data)
    elif fmt == "png":
        shape = _png_shape(data)
    if shape is not None:
        return shape
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as img:
        img_mode, (width, height) = img.mode, img.size
        bands = len(img.getbands())
        has_transparency = "transparency" in img.info
    if img_mode == "P":
        bands = 4 if has_transparency else 3
    elif img_mode == "1":
        bands = 1
    return (height, width) if bands == 1 else (height, width, bands)


def decode_image(data: bytes | memoryview) -> np.ndarray:
    """Decoded HWC (or HW for one band) uint8 array, exactly what Pillow gives."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode not in ("L", "RGB", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"):
        img = img.convert("RGB")
    if img.mode == "1":
        img = img.convert("L")
    return np.asarray(img)


def encode_image(array: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    from PIL import Image

    if array.dtype != np.uint8:
        raise DatasetError(f"{fmt} images must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise DatasetError(f"cannot encode an array of shape {array.shape} as {fmt}")
    img = Image.fromarray(np.ascontiguousarray(array))
    buf = io.BytesIO()
    if fmt == "jpeg":
        if img.mode in ("RGBA", "LA"):
            raise DatasetError(f"jpeg cannot store an alpha channel (shape {array.shape})")
        img.save(buf, format="JPEG", quality=quality or 90)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif fmt == "webp":
        img.save(buf, format="WEBP", quality=quality or 90)
    else:
        raise DatasetError(f"unknown image format {fmt!r}")
    return buf.getvalue()
