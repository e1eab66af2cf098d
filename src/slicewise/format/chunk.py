"""Chunk files: encode (writer side) and parse/check (reader side). Layout in docs/FORMAT.md §1.

A parsed header (`ChunkHeader`) is small: the offsets array (8 bytes per sample), the
shapes (one shape, or 4*ndim bytes per sample for ragged chunks), the checksum blocks
(version 2: 8 bytes per block) and a few fields; the reader caches headers so a warm
random read is one ranged read (or an mmap slice) plus the checksum of that sample's block.

Version 2 (what writers write) checks every stored byte a reader hands out: the samples of
an uncompressed chunk are covered by *checksum blocks* (one sample, or a run of small
samples together of at most 2 x BLOCK_BYTES), each with its CRC-32 in the header; a read
checks the blocks that hold what it returns. A chunk-compressed payload has one CRC over
its compressed bytes, checked before it is decompressed. Version 1 files (one CRC over the
whole payload) are still read: see `ChunkHeader.whole_payload_only`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from slicewise.format.codecs import (
    CHUNK_COMPRESSION_CODES,
    CHUNK_COMPRESSION_NAMES,
    MEDIA_COMPRESSIONS,
    SAMPLE_COMPRESSIONS,
    compress_bytes,
    decompress_bounded,
    ratio_bound,
)
from slicewise.format.errors import CorruptionError, DatasetError

try:  # ISA-L's CRC-32 is zlib's checksum (same polynomial, same values), 10-13x faster
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency where it has wheels
    crc32 = zlib.crc32

MAGIC = b"SWC1"
VERSION = 2  # the current chunk format
READ_VERSIONS = (1, 2)  # what readers read
# What writers write. Tests and benchmarks set it to 1 to make version-1 files (the
# compatibility path, and the cost of checking measured against it); nothing else should.
WRITE_VERSION = VERSION
PREFIX = struct.Struct("<4sHBBIHHIQII")  # see FORMAT.md §1
PREFIX_SIZE = PREFIX.size  # 36
assert PREFIX_SIZE == 36
MAX_NDIM = 32
SMALL_SAMPLE_BYTES = 4096  # samples smaller than this on average are joined when written
# A chunk-compressed payload is decompressed whole: this caps what a header may ask for
# (and codecs.ratio_bound caps it by the stored bytes).
MAX_CHUNK_UNCOMPRESSED = 2**31
# Checksum blocks (version 2): samples that start in the same BLOCK_BYTES window of the
# payload share a block, except that a sample of BLOCK_BYTES or more is a block alone. So a
# read of one sample checksums at most max(2 x BLOCK_BYTES, the sample) bytes.
BLOCK_BYTES = 16 * 1024
MAX_SHARED_BLOCK = 2 * BLOCK_BYTES


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
    file_size: int = 0
    version: int = VERSION
    # version 2, uncompressed payloads: block j covers samples block_first[j] up to
    # block_first[j + 1] (or n), payload bytes block_lo[j]..block_hi[j], its CRC-32 is
    # block_crc[j]; block_index[i] is sample i's block (None when every sample is a block
    # alone). All None otherwise. Lists: the read path indexes them one value at a time.
    block_first: list | None = None
    block_lo: list | None = None
    block_hi: list | None = None
    block_crc: list | None = None
    block_index: np.ndarray | None = None

    def shape(self, i: int) -> tuple[int, ...]:
        if self.uniform:
            return tuple(int(x) for x in self.shapes)
        return tuple(int(x) for x in self.shapes[i])

    @property
    def whole_payload_only(self) -> bool:
        """True for an uncompressed version-1 chunk: only its whole payload has a checksum,
        so a reader checks the whole payload before it hands out any sample of it."""
        return self.block_crc is None and self.chunk_compression is None

    def block(self, i: int) -> int:
        """The checksum block holding sample i."""
        index = self.block_index
        return i if index is None else int(index[i])

    def covering(self, a: int, b: int) -> tuple[int, int]:
        """Payload byte range [lo, hi) of the blocks holding samples a..b-1 (a < b)."""
        return self.block_lo[self.block(a)], self.block_hi[self.block(b - 1)]

    def check_blocks(self, buf, buf_lo: int, a: int, b: int, where: str) -> None:
        """Check the blocks holding samples a..b-1 (a < b); `buf` holds payload bytes from
        offset `buf_lo` on, at least up to the end of the last of those blocks."""
        mv = memoryview(buf)
        lo, hi, crcs = self.block_lo, self.block_hi, self.block_crc
        for j in range(self.block(a), self.block(b - 1) + 1):
            if crc32(mv[lo[j] - buf_lo : hi[j] - buf_lo]) != crcs[j]:
                raise self.mismatch(where, j)

    def check_all(self, payload, where: str) -> None:
        """Check every block of an uncompressed version-2 payload (the whole payload)."""
        if self.block_crc is not None:
            self.check_blocks(payload, 0, 0, self.n, where)

    def mismatch(self, where: str, j: int) -> CorruptionError:
        first = self.block_first[j]
        end = self.block_first[j + 1] if j + 1 < len(self.block_first) else self.n
        rows = f"sample {first}" if end == first + 1 else f"samples {first}..{end - 1}"
        return CorruptionError(f"chunk file {where}: checksum mismatch in {rows}", where)


def checksum_blocks(offsets: np.ndarray) -> np.ndarray:
    """First sample of each checksum block (FORMAT.md §1): a new block starts at every
    sample of BLOCK_BYTES or more, after one, and where a sample starts in a new
    BLOCK_BYTES window of the payload. Vectorised: no Python per sample."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    large = lengths >= BLOCK_BYTES
    window = offsets[:-1] // BLOCK_BYTES
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = large[1:] | large[:-1] | (window[1:] != window[:-1])
    return np.flatnonzero(new).astype(np.uint32)


def _block_crcs(parts: list, offsets: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """CRC-32 of every block, over the payload given as `parts` (one joined buffer, or one
    buffer per sample)."""
    n = len(offsets) - 1
    ends = np.append(starts[1:].astype(np.int64), n)
    out = np.empty(len(starts), dtype=np.uint32)
    if len(parts) == 1:
        mv = memoryview(parts[0])
        lo = offsets[starts.astype(np.int64)].tolist()
        hi = offsets[ends].tolist()
        for j, (a, b) in enumerate(zip(lo, hi, strict=True)):
            out[j] = crc32(mv[a:b])
        return out
    for j, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        crc = 0
        for i in range(a, b):
            crc = crc32(parts[i], crc)
        out[j] = crc
    return out


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
    """A chunk file (format version 2) as a list of buffers (header, then the samples
    themselves when there is no chunk compression), so writers can writev() it without
    joining 8 MB first.

    A chunk-compressed payload that compresses past codecs.ratio_bound (far more than
    256:1 and over 64 MiB) is stored uncompressed instead: readers refuse such a ratio."""
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
    total = int(offsets[n])
    if chunk_compression is not None:
        compressed = compress_bytes(b"".join(samples), chunk_compression, bounded=False)
        if total > ratio_bound(len(compressed)):
            chunk_compression = None  # see the docstring
    if chunk_compression is not None:
        payload_parts = [compressed]
        payload_crc = crc32(compressed)
        blocks = b""
    else:
        if total < SMALL_SAMPLE_BYTES * n:
            # small samples (class labels, scalars): one buffer, not one write vector and
            # one checksum call per sample; the copy costs less than the work it saves
            payload_parts = [b"".join(samples)]
        else:
            payload_parts = list(samples)
        if WRITE_VERSION == 1:
            blocks, payload_crc = b"", 0
            for part in payload_parts:
                payload_crc = crc32(part, payload_crc)
        else:
            starts = checksum_blocks(offsets)
            blocks = starts.tobytes() + _block_crcs(payload_parts, offsets, starts).tobytes()
            payload_crc = 0
    body = offsets.tobytes() + shape_arr.tobytes() + blocks + descriptor
    payload_len = sum(len(part) for part in payload_parts)
    prefix = PREFIX.pack(
        MAGIC,
        WRITE_VERSION,
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
    if version not in READ_VERSIONS:
        raise CorruptionError(
            f"chunk file {where} has format version {version}; this slicewise reads "
            f"{', '.join(map(str, READ_VERSIONS))}",
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
    against the file size, `n`/`ndim`/`m`/blocks against the body length, the offsets
    against the payload, raw sample sizes against their shapes, a compressed payload's
    size against the ratio bound. So a damaged or hostile chunk raises CorruptionError
    naming the file, never IndexError/ValueError/MemoryError later."""
    fields = parse_prefix(head, where)
    (_, version, comp_code, shape_mode, n, ndim, desc_len, body_len, payload_len, payload_crc,
     hcrc) = fields
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
    chunk_compression = CHUNK_COMPRESSION_NAMES[comp_code]
    if shape_mode not in (0, 1):
        raise _corrupt(where, f"unknown shape mode {shape_mode}")
    if n == 0:
        raise _corrupt(where, "holds no samples")
    if ndim > MAX_NDIM:
        raise _corrupt(where, f"{ndim} dimensions (at most {MAX_NDIM})")
    count = ndim if shape_mode == 0 else n * ndim
    fixed = 8 * (n + 1) + 4 * count + desc_len
    n_blocks = 0
    if version >= 2 and chunk_compression is None:
        n_blocks, rest = divmod(body_len - fixed, 8)
        if rest or not 1 <= n_blocks <= n:
            raise _corrupt(where, f"header body is {body_len} bytes, its fields need another size")
        if payload_crc != 0:
            raise _corrupt(where, "an uncompressed payload's checksum field must be 0")
    elif fixed != body_len:
        raise _corrupt(where, f"header body is {body_len} bytes, its fields need another size")
    offsets = np.frombuffer(body, dtype=np.uint64, count=n + 1)
    pos = 8 * (n + 1)
    shapes = np.frombuffer(body, dtype=np.uint32, count=count, offset=pos)
    if shape_mode != 0:
        shapes = shapes.reshape(n, ndim)
    pos += 4 * count
    block_starts = block_crcs = None
    if n_blocks:
        block_starts = np.frombuffer(body, dtype=np.uint32, count=n_blocks, offset=pos)
        block_crcs = np.frombuffer(body, dtype=np.uint32, count=n_blocks, offset=pos + 4 * n_blocks)
        pos += 8 * n_blocks
    try:
        descriptor = body[pos : pos + desc_len].decode("ascii")
    except UnicodeDecodeError:
        raise _corrupt(where, "descriptor is not ASCII") from None
    dtype, _, sample_comp = descriptor.partition("|")
    if not is_stored_dtype(dtype):
        raise _corrupt(where, f"unsupported dtype {dtype[:40]!r}")
    if sample_comp and sample_comp not in SAMPLE_COMPRESSIONS + MEDIA_COMPRESSIONS:
        raise _corrupt(where, f"unknown sample compression {sample_comp[:40]!r}")
    if int(offsets[0]) != 0 or bool(np.any(offsets[1:] < offsets[:-1])):
        raise _corrupt(where, "sample offsets are not increasing from 0")
    total = int(offsets[-1])
    if chunk_compression is None and total != payload_len:
        raise _corrupt(where, f"offsets cover {total} bytes, the payload is {payload_len}")
    if chunk_compression is not None and total > min(
        MAX_CHUNK_UNCOMPRESSED, ratio_bound(payload_len)
    ):
        raise _corrupt(
            where,
            f"{payload_len} compressed bytes claim {total} uncompressed: over the format's "
            "limits (at most 256:1 past 64 MiB, 2 GiB in all)",
        )
    if block_starts is not None:
        _check_blocks_table(block_starts, offsets, n, where)
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
        file_size=file_size,
        version=version,
        **_block_tables(block_starts, block_crcs, offsets, n),
    )


def _block_tables(starts, crcs, offsets, n: int) -> dict:
    if starts is None:
        return {}
    first = starts.astype(np.int64)
    ends = np.append(first[1:], n)
    return {
        "block_first": first.tolist(),
        "block_lo": offsets[first].astype(np.int64).tolist(),
        "block_hi": offsets[ends].astype(np.int64).tolist(),
        "block_crc": crcs.tolist(),
        "block_index": None if len(first) == n else np.repeat(
            np.arange(len(first), dtype=np.uint32), ends - first
        ),
    }


def _check_blocks_table(starts: np.ndarray, offsets: np.ndarray, n: int, where: str) -> None:
    """Blocks start at sample 0, increase, and a block of several samples holds at most
    MAX_SHARED_BLOCK bytes (so one read checks a bounded number of extra bytes)."""
    if int(starts[0]) != 0 or bool(np.any(starts[1:] <= starts[:-1])) or int(starts[-1]) >= n:
        raise _corrupt(where, "checksum blocks are not increasing from sample 0")
    first = starts.astype(np.int64)
    ends = np.append(first[1:], n)
    shared = (ends - first) > 1
    if bool(np.any(shared)):
        nbytes = offsets[ends[shared]] - offsets[first[shared]]
        if bool(np.any(nbytes > MAX_SHARED_BLOCK)):
            raise _corrupt(where, "a checksum block of several samples is too large")


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


def check_payload(
    header: ChunkHeader, payload: bytes | memoryview, where: str
) -> bytes | bytearray | memoryview:
    """Check the whole stored payload and return it uncompressed: every checksum block
    (version 2), or the payload CRC (version 1, and chunk-compressed payloads, whose CRC is
    checked before a byte is decompressed). A MemoryError is raised as itself."""
    if header.block_crc is not None:
        if len(payload) != header.payload_nbytes:
            raise CorruptionError(f"chunk file {where}: payload size disagrees with offsets",
                                  where)
        header.check_all(payload, where)
        return payload
    if crc32(payload) != header.payload_crc:
        raise CorruptionError(f"chunk file {where}: payload checksum mismatch", where)
    expected = int(header.offsets[-1])
    if header.chunk_compression is not None:
        try:
            payload = decompress_bounded(payload, header.chunk_compression, expected)
        except (DatasetError, MemoryError):
            raise
        except Exception as exc:
            raise CorruptionError(f"chunk file {where}: cannot decompress: {exc}", where) from exc
    if len(payload) != expected:
        raise CorruptionError(f"chunk file {where}: payload size disagrees with offsets", where)
    return payload


def check_chunk(data: bytes | memoryview, where: str) -> tuple[ChunkHeader, bytes | memoryview]:
    """Everything a chunk file's own bytes promise, checked: header, size, every checksum
    (every block of version 2, the payload CRC of version 1 and of compressed payloads),
    decompression within bounds. Returns the header and the uncompressed payload. What
    `verify` runs on every chunk file (then `check_claims` against each manifest entry)."""
    head = parse_header(data, len(data), where)
    payload = check_payload(head, memoryview(data)[head.payload_start :], where)
    return head, payload


def claim_problem(
    head: ChunkHeader,
    rows: int,
    nbytes: int,
    min_shape,
    max_shape,
    sample_compression: str | None = None,
    chunk_compression: str | None = None,
) -> str | None:
    """What a manifest's chunk entry claims that the chunk's header contradicts, or None:
    the row count, the file size (`nbytes`), the min/max sample shapes, the sample
    compression, and the chunk compression (a chunk stored uncompressed because it
    compressed too well, `encode_chunk_parts`, is allowed)."""
    if head.n != rows:
        return f"holds {head.n} samples, the manifest says {rows}"
    if head.file_size != nbytes:
        return f"is {head.file_size} bytes, the manifest says {nbytes}"
    if head.uniform or head.n == 0:
        lo = hi = [int(x) for x in head.shapes.reshape(-1)]
    else:
        lo = head.shapes.min(axis=0).tolist()
        hi = head.shapes.max(axis=0).tolist()
    if list(min_shape) != lo or list(max_shape) != hi:
        return (f"holds samples of shapes {tuple(lo)}..{tuple(hi)}, the manifest says "
                f"{tuple(min_shape)}..{tuple(max_shape)}")
    if head.sample_compression != sample_compression:
        return (f"stores samples compressed as {head.sample_compression}, the tensor's "
                f"sample compression is {sample_compression}")
    if head.chunk_compression not in (chunk_compression, None):
        return (f"is compressed with {head.chunk_compression}, the tensor's chunk "
                f"compression is {chunk_compression}")
    return None
