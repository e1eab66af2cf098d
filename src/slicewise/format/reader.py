"""ChunkReader: stored sample bytes out of chunk files, with caches.

Shared state, one per open dataset (not shared between processes):
- `_headers`: chunk key -> parsed ChunkHeader. Headers are small (8 bytes per sample plus
  shapes of ragged chunks) and immutable, so they are kept for the reader's life: this is
  the per-sample index memory.
- `_maps`: local files only, chunk key -> mmap of the whole file, LRU-bounded by the bytes
  mapped (MAX_MAPPED_BYTES), so a scan of a large tensor keeps only its most recent chunks
  mapped. A warm random read is a slice of an mmap: no system call.
- `_identities`: chunk key -> (path, size, mtime, inode, device) of the file when mapped.
- `_payloads`: chunk-compressed chunks, key -> decompressed payload, LRU-bounded by bytes.

And one per process, shared by every reader (datasets are opened and dropped per task by
dask integrations, so a per-reader cache would forget too soon):
- `_VERIFIED`: identities of local chunk files whose payload checksum matched. A whole-chunk
  read checks a file's payload CRC the first time this process reads it, not on every
  read; chunk files are immutable, and a file rewritten in place gets a new identity (its
  mtime changes). `verify` always checks everything.

Bulk reads, what `Tensor.dask()` blocks use, cache nothing but headers:
- `read_into` copies a chunk's samples from a local file straight into the caller's buffer
  with one read() (the GIL is released while the kernel copies), not through the map or
  the payload cache;
- `private_span` hands out a writable view of a private, copy-on-write map of the file:
  no copy at all, and a write to the view stays in this process (the kernel copies the
  page written), never reaching the file. The map lives as long as views of it do.

A missing chunk file referenced by a manifest raises CorruptionError naming the file.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
from collections import OrderedDict
from contextlib import suppress

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
MAX_MAPPED_BYTES = 256 * 1024 * 1024
MAX_PAYLOAD_CACHE_BYTES = 256 * 1024 * 1024

MAX_VERIFIED = 1 << 16  # identities remembered (a few hundred bytes each)
_VERIFIED: set[tuple] = set()
_VERIFIED_LOCK = threading.Lock()


def _identity(path: str, stat: os.stat_result) -> tuple:
    """What tells a chunk file from one rewritten under the same name (see `_identities`)."""
    return (path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


def _remember_verified(identity: tuple) -> None:
    with _VERIFIED_LOCK:
        if len(_VERIFIED) >= MAX_VERIFIED:
            _VERIFIED.clear()  # rare; the cost is one more checksum per chunk read
        _VERIFIED.add(identity)


class ChunkReader:
    def __init__(self, storage: Storage):
        self.storage = storage
        self._headers: dict[str, ChunkHeader] = {}
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._mapped_bytes = 0
        self._identities: dict[str, tuple] = {}
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
        return parse_header(mm, len(mm), self.storage.full_path(key))

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
            with suppress(KeyError):  # another thread may have evicted it meanwhile
                self._maps.move_to_end(key)
            return mm
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise self._missing(key) from None
        try:
            stat = os.fstat(fd)
            if stat.st_size == 0:
                where = self.storage.full_path(key)
                raise CorruptionError(f"chunk file {where} is empty (truncated)", where)
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        with self._lock:
            self._identities[key] = _identity(path, stat)
            old = self._maps.get(key)
            if old is not None:  # another thread mapped it meanwhile
                self._mapped_bytes -= len(old)
            self._maps[key] = mm
            self._mapped_bytes += len(mm)
            while self._mapped_bytes > MAX_MAPPED_BYTES and len(self._maps) > 1:
                # no close(): another thread (or a view handed out) may use it; the last
                # reference unmaps it
                _, evicted = self._maps.popitem(last=False)
                self._mapped_bytes -= len(evicted)
        return mm

    # -- payloads

    def payload(self, key: str) -> bytes | memoryview:
        """The whole uncompressed payload, its checksum verified (local files: once per
        process, see `_VERIFIED`). Uncompressed local chunks come back as a read-only view
        of the file's map: no copy."""
        cached = self._payloads.get(key)
        if cached is not None:
            with suppress(KeyError):  # another thread may have evicted it meanwhile
                self._payloads.move_to_end(key)
            return cached
        head = self.header(key)
        where = self.storage.full_path(key)
        local = self.storage.local_path(key)
        if local is not None:
            mm = self._map(key, local)
            raw = memoryview(mm)[head.payload_start : head.payload_start + head.payload_nbytes]
            identity = self._identities.get(key)
            if head.chunk_compression is None and identity in _VERIFIED:
                return raw
            data = check_payload(head, raw, where)
            if head.chunk_compression is None and identity is not None:
                _remember_verified(identity)
                return data
        else:
            try:
                raw = self.storage.get_range(key, head.payload_start, head.payload_nbytes)
            except FileNotFoundError:
                raise self._missing(key) from None
            data = check_payload(head, raw, where)
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

    def read_into(
        self, key: str, start: int, stop: int, out: memoryview, verify: bool = False
    ) -> None:
        """Stored bytes of samples start..stop of a chunk into `out` (exactly that many bytes,
        a writable byte buffer). A read of the whole chunk checks its payload checksum when
        verify=True (local files: once per process, see `_VERIFIED`).

        Uncompressed local chunks: one read() from the file into `out`; nothing is mapped
        or cached. Otherwise the bytes are copied from `span_bytes`."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        if len(out) != b - a:
            raise ValueError(f"read_into: {b - a} bytes to read, the buffer holds {len(out)}")
        local = self.storage.local_path(key) if head.chunk_compression is None else None
        if local is None:
            out[:] = self.span_bytes(key, start, stop, verify=verify)
            return
        file, identity, changed = self._open_local(key, local)
        with file:
            if changed:  # read it the mapped way, whose map and header belong together
                out[:] = self.span_bytes(key, start, stop, verify=verify)
                return
            file.seek(head.payload_start + a)
            done = 0
            while done < len(out):
                got = file.readinto(out[done:])
                if not got:
                    where = self.storage.full_path(key)
                    raise CorruptionError(f"chunk file {where} is truncated", where)
                done += got
        if verify and start == 0 and stop == head.n and identity not in _VERIFIED:
            check_payload(head, out, self.storage.full_path(key))
            _remember_verified(identity)

    def _open_local(self, key: str, local: str) -> tuple[io.FileIO, tuple, bool]:
        """The chunk file at `local` opened unbuffered, its identity (`_identities`), and
        whether it changed since its header was read."""
        try:
            file = open(local, "rb", buffering=0)
        except FileNotFoundError:
            raise self._missing(key) from None
        identity = _identity(local, os.fstat(file.fileno()))
        return file, identity, self._identities.get(key) not in (None, identity)

    def private_span(
        self, key: str, start: int, stop: int, verify: bool = False
    ) -> memoryview | None:
        """Stored bytes of samples start..stop of an uncompressed local chunk as a writable
        view of a private (copy-on-write) map of its file; None for other chunks (then use
        `read_into`). A view of the whole chunk is checksummed when verify=True (once per
        process and file, see `_VERIFIED`)."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        local = self.storage.local_path(key) if head.chunk_compression is None else None
        if local is None:
            return None
        file, identity, changed = self._open_local(key, local)
        with file:
            if changed:
                return None
            mm = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        base = head.payload_start
        if verify and start == 0 and stop == head.n and identity not in _VERIFIED:
            with memoryview(mm) as payload:
                check_payload(head, payload[base : base + head.payload_nbytes],
                              self.storage.full_path(key))
            _remember_verified(identity)
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        return memoryview(mm)[base + a : base + b]

    def close(self) -> None:
        with self._lock:
            for mm in self._maps.values():
                try:
                    mm.close()
                except BufferError:
                    pass
            self._maps.clear()
            self._mapped_bytes = 0
            self._payloads.clear()
            self._payload_bytes = 0
