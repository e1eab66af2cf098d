"""Forging chunk files the way an attacker (or a careless tool) would: recompute every
checksum a chunk file carries after changing its bytes, so tests reach the checks that lie
past the CRCs (FORMAT.md §1)."""

from __future__ import annotations

import zlib

import numpy as np

from slicewise.format.chunk import PREFIX, PREFIX_SIZE


def resign(blob: bytes) -> bytes:
    """`blob` with its checksums recomputed: version 2 uncompressed chunks get their block
    CRCs (where the body still says where blocks are), others the payload CRC, and every
    file the header CRC. Blobs too short for a prefix are left as they are."""
    if len(blob) < PREFIX_SIZE:
        return blob
    fields = list(PREFIX.unpack_from(blob, 0))
    _, version, comp, shape_mode, n, ndim, desc_len, body_len = fields[:8]
    body = bytearray(blob[PREFIX_SIZE : PREFIX_SIZE + body_len])
    payload = blob[PREFIX_SIZE + body_len :]
    count = ndim if shape_mode == 0 else n * ndim
    fixed = 8 * (n + 1) + 4 * count + desc_len
    n_blocks, rest = divmod(len(body) - fixed, 8) if len(body) >= fixed else (0, 1)
    if version >= 2 and comp == 0 and not rest and 1 <= n_blocks <= n:
        offsets = np.frombuffer(bytes(body), np.uint64, n + 1)
        at = 8 * (n + 1) + 4 * count
        starts = np.frombuffer(bytes(body), np.uint32, n_blocks, at).astype(np.int64)
        ends = np.append(starts[1:], n)
        crcs = np.zeros(n_blocks, np.uint32)
        for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
            if 0 <= a < b <= n:
                lo, hi = int(offsets[a]), int(offsets[b])
                crcs[j] = zlib.crc32(payload[lo:hi])
        body[at + 4 * n_blocks : at + 8 * n_blocks] = crcs.tobytes()
        fields[9] = 0
    else:
        fields[9] = zlib.crc32(payload)
    fields[10] = 0
    fields[10] = zlib.crc32(bytes(body), zlib.crc32(PREFIX.pack(*fields)))
    return PREFIX.pack(*fields) + bytes(body) + blob[PREFIX_SIZE + body_len :]
