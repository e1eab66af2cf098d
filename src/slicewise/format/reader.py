"""ChunkReader: stored sample bytes out of chunk files, with caches.

Shared state (one per open dataset, not shared between processes):
- `_headers`: chunk key -> parsed ChunkHeader. Headers are small (8 bytes per sample plus
  shapes of ragged chunks) and immutable, so they are kept for the reader's life: this is
  the per-sample index memory.
- `_maps`: local files only, chunk key -> mmap of the whole file, LRU-bounded by count.
  A warm random read is then a slice of an mmap: no system call.
- `_payloads`: chunk-compressed chunks, key -> decompressed payload, LRU-bounded by bytes.

A missing chunk file referenced by a manifest raises CorruptionError naming the file.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import OrderedDict

from slicewise.format.chunk import PREFIX_SIZE as _PREFIX
from slicewise.format.chunk import (
    ChunkHeader,
    check_header_fits,
    check_payload,
    parse_header,
    parse_prefix,
)
from slicewise.format.errors import CorruptionError
from slicewise.format.storage import Storage

_FIRST_READ = 64 * 1024
MAX_MAPS = 256
MAX_PAYLOAD_CACHE_BYTES = 256 * 1024 * 1024


class ChunkReader:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._headers: dict[str, ChunkHeader] = {}
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._payloads: OrderedDict[str, bytes] = OrderedDict()
        self._payload_bytes = 0
        self._lock = threading.Lock()

    def _missing(self, key: str) -> CorruptionError:
        where = self.storage.full_path(key)
        return CorruptionError(f"chunk file {where} is missing (referenced by the manifest)", where)

    def _short(self, key: str, head: ChunkHeader, rows: int) -> CorruptionError:
        where = self.storage.full_path(key)
        return CorruptionError(
            f"chunk file {where} holds {head.n} samples, the manifest needs at least {rows}",
            where,
        )

    # -- headers

    def header(self, key: str) -> ChunkHeader:
        head = self._headers.get(key)
        if head is not None:
            return head
        local = self.storage.local_path(key)
        if local is not None:
            head = self._local_header(key, local)
        else:
            head = self._remote_header(key)
        self._headers[key] = head
        return head

    def _local_header(self, key: str, path: str) -> ChunkHeader:
        mm = self._map(key, path)
        where = self.storage.full_path(key)
        fields = parse_prefix(mm[:_PREFIX], where)
        end = check_header_fits(fields, len(mm), where)
        return parse_header(mm[:end], len(mm), where)

    def _remote_header(self, key: str) -> ChunkHeader:
        where = self.storage.full_path(key)
        try:
            size = self.storage.size(key)
            head = self.storage.get_range(key, 0, min(size, _FIRST_READ))
        except FileNotFoundError:
            raise self._missing(key) from None
        fields = parse_prefix(head, where)
        end = check_header_fits(fields, size, where)
        if len(head) < end:
            head = self.storage.get_range(key, 0, end)
        return parse_header(head, size, where)

    def _map(self, key: str, path: str) -> mmap.mmap:
        mm = self._maps.get(key)
        if mm is not None:
            self._maps.move_to_end(key)
            return mm
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise self._missing(key) from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                where = self.storage.full_path(key)
                raise CorruptionError(f"chunk file {where} is empty (truncated)", where)
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        with self._lock:
            self._maps[key] = mm
            while len(self._maps) > MAX_MAPS:
                # no close(): another thread may be slicing it; the last reference closes it
                self._maps.popitem(last=False)
        return mm

    # -- payloads

    def _raw_payload(self, key: str, head: ChunkHeader) -> bytes | memoryview:
        local = self.storage.local_path(key)
        if local is not None:
            mm = self._map(key, local)
            return memoryview(mm)[head.payload_start : head.payload_start + head.payload_nbytes]
        try:
            return self.storage.get_range(key, head.payload_start, head.payload_nbytes)
        except FileNotFoundError:
            raise self._missing(key) from None

    def payload(self, key: str) -> bytes | memoryview:
        """The whole uncompressed payload, its checksum verified."""
        cached = self._payloads.get(key)
        if cached is not None:
            self._payloads.move_to_end(key)
            return cached
        head = self.header(key)
        data = check_payload(head, self._raw_payload(key, head), self.storage.full_path(key))
        if head.chunk_compression is not None:
            with self._lock:
                self._payloads[key] = data
                self._payload_bytes += len(data)
                while self._payload_bytes > MAX_PAYLOAD_CACHE_BYTES and len(self._payloads) > 1:
                    _, old = self._payloads.popitem(last=False)
                    self._payload_bytes -= len(old)
        return data

    def sample_bytes(self, key: str, i: int) -> bytes:
        """Stored bytes of sample i of chunk `key` (one ranged read, or an mmap slice)."""
        head = self._headers.get(key)
        mm = self._maps.get(key)
        if head is not None and mm is not None and head.chunk_compression is None and i < head.n:
            base = head.payload_start  # warm local path: two dict hits and a slice
            return mm[base + int(head.offsets[i]) : base + int(head.offsets[i + 1])]
        head = self.header(key)
        if not 0 <= i < head.n:
            raise self._short(key, head, i + 1)
        start, stop = int(head.offsets[i]), int(head.offsets[i + 1])
        if head.chunk_compression is not None:
            return bytes(self.payload(key)[start:stop])
        local = self.storage.local_path(key)
        if local is not None:
            mm = self._maps.get(key)
            if mm is None:
                mm = self._map(key, local)
            base = head.payload_start
            return mm[base + start : base + stop]
        try:
            return self.storage.get_range(key, head.payload_start + start, stop - start)
        except FileNotFoundError:
            raise self._missing(key) from None

    def span_bytes(
        self, key: str, start: int, stop: int, verify: bool = False
    ) -> bytes | memoryview:
        """Stored bytes of samples start..stop of a chunk, contiguous (payload order).
        A read of the whole chunk checks its payload checksum when verify=True."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        if head.chunk_compression is not None or (verify and start == 0 and stop == head.n):
            payload = self.payload(key)
            return memoryview(payload)[int(head.offsets[start]) : int(head.offsets[stop])]
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        local = self.storage.local_path(key)
        if local is not None:
            mm = self._map(key, local)
            return memoryview(mm)[head.payload_start + a : head.payload_start + b]
        try:
            return self.storage.get_range(key, head.payload_start + a, b - a)
        except FileNotFoundError:
            raise self._missing(key) from None

    def close(self) -> None:
        with self._lock:
            for mm in self._maps.values():
                try:
                    mm.close()
                except BufferError:
                    pass
            self._maps.clear()
            self._payloads.clear()
            self._payload_bytes = 0
