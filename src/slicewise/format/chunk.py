"""Chunk files: encode (writer side) and parse/read (reader side). Layout in docs/FORMAT.md §1.

A parsed header (`ChunkHeader`) is small: the offsets array (8 bytes per sample), the
shapes (one shape, or 4*ndim bytes per sample for ragged chunks) and a few fields; the
reader caches headers so a warm random read is one ranged read (or an mmap slice).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from slicewise.format.codecs import (
    CHUNK_COMPRESSION_CODES,
    CHUNK_COMPRESSION_NAMES,
    SAMPLE_COMPRESSIONS,
    compress_bytes,
    decompress_bounded,
)
from slicewise.format.errors import CorruptionError, DatasetError

try:  # ISA-L's CRC-32 is zlib's checksum (same polynomial, same values), about 4x faster
    from isal.isal_zlib import crc32
except ImportError:  # optional: pip install isal
    crc32 = zlib.crc32

MAGIC = b"SWC1"
VERSION = 1
PREFIX = struct.Struct("<4sHBBIHHIQII")  # see FORMAT.md §1
PREFIX_SIZE = PREFIX.size  # 36
assert PREFIX_SIZE == 36
MAX_NDIM = 32
SMALL_SAMPLE_BYTES = 4096  # samples smaller than this on average are joined when written
# A chunk-compressed payload is decompressed whole: this caps what a header may ask for.
MAX_CHUNK_UNCOMPRESSED = 2**31


def is_stored_dtype(name: object) -> bool:
    """True for the dtype names chunk headers and manifests may carry: "str" (text, json)
    and plain numeric numpy names ("uint8", "float32", ...). Never an object dtype."""
    if name == "str":
        return True
    if not isinstance(name, str) or not name or len(name) > 16 or not name.isalnum():
        return False
    try:
        dtype = np.dtype(name)
    except TypeError:
        return False
    return dtype.kind in "biufc" and not dtype.hasobject and dtype.name == name


@dataclass
class ChunkHeader:
    n: int
    ndim: int
    offsets: np.ndarray  # uint64, n+1
    shapes: np.ndarray  # uint32, (ndim,) when uniform, else (n, ndim)
    uniform: bool
    dtype: str
    sample_compression: str | None
    chunk_compression: str | None
    payload_start: int
    payload_nbytes: int
    payload_crc: int

    def shape(self, i: int) -> tuple[int, ...]:
        if self.uniform:
            return tuple(int(x) for x in self.shapes)
        return tuple(int(x) for x in self.shapes[i])


def encode_chunk(
    samples: list[bytes | memoryview],
    shapes: list[tuple[int, ...]],
    dtype: str,
    sample_compression: str | None,
    chunk_compression: str | None,
) -> bytes:
    """One chunk file's bytes for `samples` (already encoded per sample)."""
    return b"".join(
        encode_chunk_parts(samples, shapes, dtype, sample_compression, chunk_compression)
    )


def encode_chunk_parts(
    samples: list[bytes | memoryview],
    shapes: list[tuple[int, ...]],
    dtype: str,
    sample_compression: str | None,
    chunk_compression: str | None,
) -> list[bytes | memoryview]:
    """A chunk file as a list of buffers (header, then the samples themselves when there is
    no chunk compression), so writers can writev() it without joining 8 MB first."""
    n = len(samples)
    if n == 0:
        raise DatasetError("a chunk needs at least one sample")
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes):
        raise DatasetError(
            f"samples of one tensor must have the same number of dimensions, got "
            f"{sorted({len(s) for s in shapes})}"
        )
    lengths = np.fromiter((len(s) for s in samples), dtype=np.uint64, count=n)
    offsets = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    first = shapes[0]
    uniform = all(s == first for s in shapes)
    if uniform:
        shape_arr = np.asarray(first, dtype=np.uint32).reshape(ndim)
    else:
        shape_arr = np.asarray(shapes, dtype=np.uint32).reshape(n, ndim)
    descriptor = f"{dtype}|{sample_compression or ''}".encode("ascii")
    body = offsets.tobytes() + shape_arr.tobytes() + descriptor
    if chunk_compression is not None:
        payload_parts = [compress_bytes(b"".join(samples), chunk_compression)]
    elif int(offsets[n]) < SMALL_SAMPLE_BYTES * n:
        # small samples (class labels, scalars): one buffer, not one write vector and one
        # checksum call per sample; the copy costs less than the per-sample work it saves
        payload_parts = [b"".join(samples)]
    else:
        payload_parts = list(samples)
    payload_crc = 0
    for part in payload_parts:
        payload_crc = crc32(part, payload_crc)
    payload_len = sum(len(part) for part in payload_parts)
    prefix = PREFIX.pack(
        MAGIC,
        VERSION,
        CHUNK_COMPRESSION_CODES[chunk_compression],
        0 if uniform else 1,
        n,
        ndim,
        len(descriptor),
        len(body),
        payload_len,
        payload_crc,
        0,
    )
    header_crc = crc32(body, crc32(prefix))
    prefix = prefix[:-4] + struct.pack("<I", header_crc)
    return [prefix, body, *payload_parts]


def parse_prefix(prefix: bytes, where: str) -> tuple:
    if len(prefix) < PREFIX_SIZE:
        raise CorruptionError(
            f"chunk file {where} is truncated: {len(prefix)} bytes, a header needs {PREFIX_SIZE}",
            where,
        )
    fields = PREFIX.unpack_from(prefix, 0)
    magic, version = fields[0], fields[1]
    if magic != MAGIC:
        raise CorruptionError(f"chunk file {where} is not a slicewise chunk (bad magic)", where)
    if version != VERSION:
        raise CorruptionError(
            f"chunk file {where} has format version {version}; this slicewise reads {VERSION}",
            where,
        )
    return fields


def check_header_fits(fields: tuple, file_size: int, where: str) -> int:
    """The header's byte count, refused before anything is read or allocated for it when
    the file cannot hold it (a hostile or damaged `h` must not size a read)."""
    end = PREFIX_SIZE + fields[7]
    if end > file_size:
        raise CorruptionError(
            f"chunk file {where} is truncated: {file_size} bytes, its header alone says {end}",
            where,
        )
    return end


def _corrupt(where: str, what: str) -> CorruptionError:
    return CorruptionError(f"chunk file {where}: {what}", where)


def parse_header(head: bytes, file_size: int, where: str) -> ChunkHeader:
    """Parse and check a chunk header. `head` holds at least PREFIX_SIZE + body bytes.

    Every field is checked against the file before it sizes anything: the body length
    against the file size, `n`/`ndim`/`m` against the body length, the offsets against the
    payload, raw sample sizes against their shapes. So a damaged or hostile chunk raises
    CorruptionError naming the file, never IndexError/ValueError/MemoryError later."""
    fields = parse_prefix(head, where)
    _, _, comp_code, shape_mode, n, ndim, desc_len, body_len, payload_len, payload_crc, hcrc = (
        fields
    )
    check_header_fits(fields, file_size, where)
    if len(head) < PREFIX_SIZE + body_len:
        raise CorruptionError(f"chunk file {where} is truncated inside its header", where)
    body = bytes(head[PREFIX_SIZE : PREFIX_SIZE + body_len])
    zeroed = bytes(head[: PREFIX_SIZE - 4]) + b"\0\0\0\0"
    if crc32(body, crc32(zeroed)) != hcrc:
        raise _corrupt(where, "header checksum mismatch")
    expected = PREFIX_SIZE + body_len + payload_len
    if file_size != expected:
        raise CorruptionError(
            f"chunk file {where} is {file_size} bytes, its header says {expected} "
            f"({'truncated' if file_size < expected else 'extra bytes'})",
            where,
        )
    if comp_code not in CHUNK_COMPRESSION_NAMES:
        raise _corrupt(where, f"unknown chunk compression {comp_code}")
    if shape_mode not in (0, 1):
        raise _corrupt(where, f"unknown shape mode {shape_mode}")
    if n == 0:
        raise _corrupt(where, "holds no samples")
    if ndim > MAX_NDIM:
        raise _corrupt(where, f"{ndim} dimensions (at most {MAX_NDIM})")
    count = ndim if shape_mode == 0 else n * ndim
    if 8 * (n + 1) + 4 * count + desc_len != body_len:
        raise _corrupt(where, f"header body is {body_len} bytes, its fields need another size")
    offsets = np.frombuffer(body, dtype=np.uint64, count=n + 1)
    pos = 8 * (n + 1)
    shapes = np.frombuffer(body, dtype=np.uint32, count=count, offset=pos)
    if shape_mode != 0:
        shapes = shapes.reshape(n, ndim)
    pos += 4 * count
    try:
        descriptor = body[pos : pos + desc_len].decode("ascii")
    except UnicodeDecodeError:
        raise _corrupt(where, "descriptor is not ASCII") from None
    dtype, _, sample_comp = descriptor.partition("|")
    if not is_stored_dtype(dtype):
        raise _corrupt(where, f"unsupported dtype {dtype[:40]!r}")
    if sample_comp and sample_comp not in SAMPLE_COMPRESSIONS:
        raise _corrupt(where, f"unknown sample compression {sample_comp[:40]!r}")
    if int(offsets[0]) != 0 or bool(np.any(offsets[1:] < offsets[:-1])):
        raise _corrupt(where, "sample offsets are not increasing from 0")
    chunk_compression = CHUNK_COMPRESSION_NAMES[comp_code]
    total = int(offsets[-1])
    if chunk_compression is None and total != payload_len:
        raise _corrupt(where, f"offsets cover {total} bytes, the payload is {payload_len}")
    if chunk_compression is not None and total > MAX_CHUNK_UNCOMPRESSED:
        raise _corrupt(where, f"uncompressed payload of {total} bytes is over the format's limit")
    if not sample_comp and dtype != "str":
        _check_raw_sizes(offsets, shapes, shape_mode == 0, np.dtype(dtype).itemsize, where)
    return ChunkHeader(
        n=n,
        ndim=ndim,
        offsets=offsets,
        shapes=shapes,
        uniform=shape_mode == 0,
        dtype=dtype,
        sample_compression=sample_comp or None,
        chunk_compression=chunk_compression,
        payload_start=PREFIX_SIZE + body_len,
        payload_nbytes=payload_len,
        payload_crc=payload_crc,
    )


def _check_raw_sizes(offsets, shapes, uniform: bool, itemsize: int, where: str) -> None:
    """Uncompressed samples: each one's byte length must be its shape's element count times
    the item size, so a reader's reshape can never fail or read past a sample."""
    lengths = np.diff(offsets)
    if uniform:
        need = itemsize
        for dim in shapes.tolist():
            need *= dim
        ok = bool(np.all(lengths == need)) if need < 2**63 else False
    else:
        # float first: a product over u32 dims overflows int64 silently, a float does not
        approx = np.prod(shapes.astype(np.float64), axis=1) * itemsize
        ok = bool(np.all(approx < 2**62))
        if ok:
            exact = np.prod(shapes.astype(np.int64), axis=1) * itemsize
            ok = bool(np.all(lengths.astype(np.int64) == exact))
    if not ok:
        raise _corrupt(where, "a sample's byte length disagrees with its shape and dtype")


def check_payload(header: ChunkHeader, payload: bytes | memoryview, where: str) -> bytes:
    """Verify the payload CRC and return the uncompressed payload."""
    if crc32(payload) != header.payload_crc:
        raise CorruptionError(f"chunk file {where}: payload checksum mismatch", where)
    expected = int(header.offsets[-1])
    if header.chunk_compression is not None:
        try:
            payload = decompress_bounded(payload, header.chunk_compression, expected)
        except DatasetError:
            raise
        except Exception as exc:
            raise CorruptionError(f"chunk file {where}: cannot decompress: {exc}", where) from exc
    if len(payload) != expected:
        raise CorruptionError(f"chunk file {where}: payload size disagrees with offsets", where)
    return payload
