"""ChunkReader: stored sample bytes out of chunk files, with caches, every byte checked.

What a read checks (FORMAT.md §4), before it hands out a byte:
- the chunk's header, once (everything in FORMAT.md §1), and the manifest's claims about
  the chunk against it (`bind`: rows, file size, min/max shapes, compressions; a chunk
  listed twice in one tensor is corrupt), once per version of the bound dataset;
- version-2 chunks: the CRC-32 of every checksum block holding a returned sample, on every
  read (a single row checks one block: the sample itself, or at most 32 KiB of small
  samples around it). Nothing is remembered as verified: a byte that changed on disk
  since the last read is caught by the next one;
- chunk-compressed chunks: the CRC of the compressed payload before decompressing it
  (within the ratio bound, codecs.ratio_bound); the result is cached;
- version-1 uncompressed chunks (one CRC for the whole payload): the whole payload, the
  first time this process reads any of it (`_VERIFIED`, by file identity).

Shared state, one per open dataset (not shared between processes):
- `_headers`: chunk key -> parsed ChunkHeader. Headers are small (8 bytes per sample, plus
  shapes of ragged chunks, plus 8 bytes per checksum block) and immutable, so they are kept
  for the reader's life: this is the per-sample index memory.
- `_maps`: local files only, chunk key -> mmap of the whole file, LRU-bounded by the bytes
  mapped (MAX_MAPPED_BYTES), so a scan of a large tensor keeps only its most recent chunks
  mapped. A warm random read is a slice of an mmap and one checksum: no system call.
- `_identities`: chunk key -> (path, size, mtime, inode, device) of the file when mapped.
- `_payloads`: chunk-compressed chunks, key -> decompressed payload, LRU-bounded by bytes.
- `_checked`: chunk key -> the version token its header was last checked against.

And one per process, shared by every reader:
- `_VERIFIED`: identities of local version-1 chunk files whose payload checksum matched.

Bulk reads, what `Tensor.dask()` blocks use, cache nothing but headers:
- `read_into` copies a chunk's samples from a local file straight into the caller's buffer
  with one read() (the GIL is released while the kernel copies), then checks them there;
  a checksum block only partly inside the range is read and checked on its own;
- `private_span` hands out a writable view of a private, copy-on-write map of the file,
  checked: no copy at all, and a write to the view stays in this process.

A missing chunk file referenced by a manifest raises CorruptionError naming the file.
"""

from __future__ import annotations

import io
import mmap
import os
import threading
import weakref
from collections import OrderedDict
from contextlib import suppress

from slicewise.format.chunk import (
    ChunkHeader,
    check_header_fits,
    check_payload,
    claim_problem,
    crc32,
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
_LISTED_TWICE = object()  # a claim: the key is listed more than once in its tensor


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
        self._v1_checked: set[str] = set()  # remote version-1 chunks whose payload matched
        self._lock = threading.Lock()
        # manifest claims (see `bind`)
        self._view_ref = None
        self._version = None
        self._token = 0
        self._tensor_states: dict[str, object] = {}
        self._indexes: dict[int, tuple] = {}
        self._checked: dict[str, int] = {}

    def _missing(self, key: str) -> CorruptionError:
        where = self.storage.full_path(key)
        return CorruptionError(f"chunk file {where} is missing (referenced by the manifest)", where)

    def _short(self, key: str, head: ChunkHeader, rows: int) -> CorruptionError:
        where = self.storage.full_path(key)
        return CorruptionError(
            f"chunk file {where} holds {head.n} samples, the manifest needs at least {rows}",
            where,
        )

    # -- manifest claims

    def bind(self, view_of) -> None:
        """Cross-check chunk headers against the manifest: `view_of()` returns the version
        (manifest.Version) whose chunks this reader is asked for, e.g. `Dataset._view`
        (held weakly when it is a bound method). Each chunk's entry there (rows, nbytes,
        min/max shape, compressions) must agree with its header before any of its data is
        served, and a chunk key listed twice in one tensor is a CorruptionError: so no
        allocation is ever sized by a claim the chunk files do not back."""
        try:
            self._view_ref = weakref.WeakMethod(view_of)
        except TypeError:
            self._view_ref = lambda: view_of

    def _current_token(self) -> int | None:
        method = self._view_ref()
        version = method() if method is not None else None
        if version is None:
            return None
        if version is not self._version:
            self._version = version
            self._token += 1
            self._tensor_states = {s.meta.id: s for s in version.tensors.values()}
        return self._token

    def _claim(self, key: str):
        """The current version's entry for chunk `key`: a tuple for `claim_problem`,
        _LISTED_TWICE, or None when the version does not list it."""
        parts = key.split("/")
        state = self._tensor_states.get(parts[1]) if len(parts) == 3 else None
        if state is None:
            return None
        entry = self._indexes.get(id(state))
        if entry is None or entry[0] is not state or entry[1] != len(state.keys):
            index: dict[str, int] = {}
            twice: set[str] = set()
            prefix = f"chunks/{parts[1]}/"
            for k, name in enumerate(state.keys):
                full = prefix + name
                if full in index:
                    twice.add(full)
                index[full] = k
            if len(self._indexes) >= 256:
                self._indexes.clear()
            entry = self._indexes[id(state)] = (state, len(state.keys), index, twice)
        _, _, index, twice = entry
        if key in twice:
            return _LISTED_TWICE
        k = index.get(key)
        if k is None or k >= len(state.rows):
            return None
        try:
            return (
                state.rows[k], state.nbytes[k], state.min_shape[k], state.max_shape[k],
                state.meta.sample_compression, state.meta.chunk_compression,
            )
        except IndexError:  # a manifest whose columns disagree: its reader refuses it
            return None

    def _check_claim(self, key: str, head: ChunkHeader, token: int) -> None:
        claim = self._claim(key)
        if claim is not None:
            where = self.storage.full_path(key)
            if claim is _LISTED_TWICE:
                raise CorruptionError(
                    f"chunk file {where} is listed more than once in its tensor's chunk list "
                    "(the manifest is corrupt)", where,
                )
            problem = claim_problem(head, *claim)
            if problem is not None:
                raise CorruptionError(f"chunk file {where} {problem}", where)
        self._checked[key] = token

    # -- headers

    def header(self, key: str) -> ChunkHeader:
        head = self._headers.get(key)
        if head is not None:
            if self._view_ref is None:
                return head
            token = self._current_token()
            if token is None or self._checked.get(key) == token:
                return head
            self._check_claim(key, head, token)
            return head
        local = self.storage.local_path(key)
        if local is not None:
            head = self._local_header(key, local)
        else:
            head = self._remote_header(key)
        if self._view_ref is not None:
            token = self._current_token()
            if token is not None:
                self._check_claim(key, head, token)
        self._headers[key] = head
        return head

    def _local_header(self, key: str, path: str) -> ChunkHeader:
        mm = self._map(key, path)
        return parse_header(mm, len(mm), self.storage.full_path(key))

    def _remote_header(self, key: str) -> ChunkHeader:
        where = self.storage.full_path(key)
        try:
            head, size = self.storage.get_head(key, _FIRST_READ)
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

    def _mapped(self, key: str, local: str, head: ChunkHeader) -> mmap.mmap:
        """The map of a chunk file whose header is `head`; a file that changed size since
        (it is not the file the header came from) is a CorruptionError."""
        mm = self._map(key, local)
        if len(mm) != head.file_size:
            where = self.storage.full_path(key)
            raise CorruptionError(
                f"chunk file {where} is {len(mm)} bytes, its header said {head.file_size}", where
            )
        return mm

    # -- version-1 chunks: the whole payload, once

    def _check_v1(self, key: str, head: ChunkHeader) -> None:
        """An uncompressed version-1 chunk has one checksum for its whole payload: check it
        before any of its bytes are handed out (local files: once per process and file
        identity; elsewhere once per reader)."""
        where = self.storage.full_path(key)
        local = self.storage.local_path(key)
        if local is not None:
            mm = self._mapped(key, local, head)
            identity = self._identities.get(key)
            if identity in _VERIFIED:
                return
            with memoryview(mm) as view:
                check_payload(head, view[head.payload_start :], where)
            if identity is not None:
                _remember_verified(identity)
            return
        if key in self._v1_checked:
            return
        try:
            raw = self.storage.get_range(key, head.payload_start, head.payload_nbytes)
        except FileNotFoundError:
            raise self._missing(key) from None
        check_payload(head, raw, where)
        self._v1_checked.add(key)

    # -- payloads

    def payload(self, key: str) -> bytes | memoryview:
        """The whole uncompressed payload, every checksum checked (version-1 local files:
        once per process, see `_VERIFIED`). Uncompressed local chunks come back as a
        read-only view of the file's map: no copy."""
        cached = self._payloads.get(key)
        if cached is not None:
            with suppress(KeyError):  # another thread may have evicted it meanwhile
                self._payloads.move_to_end(key)
            return cached
        head = self.header(key)
        where = self.storage.full_path(key)
        local = self.storage.local_path(key)
        if head.whole_payload_only:
            self._check_v1(key, head)
            if local is not None:
                mm = self._mapped(key, local, head)
                return memoryview(mm)[head.payload_start :]
            return self.storage.get_range(key, head.payload_start, head.payload_nbytes)
        if local is not None:
            mm = self._mapped(key, local, head)
            raw = memoryview(mm)[head.payload_start :]
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
        """Stored bytes of sample i of chunk `key`, checked (one ranged read, or an mmap
        slice, and the checksum of its block)."""
        head = self._headers.get(key)
        mm = self._maps.get(key)
        if (head is not None and mm is not None and head.block_crc is not None and i < head.n
                and len(mm) == head.file_size):  # warm local path: a slice and a checksum
            if self._view_ref is not None:
                head = self.header(key)  # the manifest's claims, when its version changed
            return self._checked_sample(key, head, mm, i)
        head = self.header(key)
        if not 0 <= i < head.n:
            raise self._short(key, head, i + 1)
        start, stop = int(head.offsets[i]), int(head.offsets[i + 1])
        if head.chunk_compression is not None:
            return bytes(self.payload(key)[start:stop])
        local = self.storage.local_path(key)
        if head.whole_payload_only:
            self._check_v1(key, head)
            if local is not None:
                base = head.payload_start
                return self._mapped(key, local, head)[base + start : base + stop]
            return self._get_range(key, head.payload_start + start, stop - start)
        if local is not None:
            return self._checked_sample(key, head, self._mapped(key, local, head), i)
        lo, hi = head.covering(i, i + 1)
        data = self._get_range(key, head.payload_start + lo, hi - lo)
        head.check_blocks(data, lo, i, i + 1, self.storage.full_path(key))
        return data if (lo, hi) == (start, stop) else data[start - lo : stop - lo]

    def _checked_sample(self, key: str, head: ChunkHeader, mm, i: int) -> bytes:
        j = head.block(i)
        lo, hi = head.block_lo[j], head.block_hi[j]
        base = head.payload_start
        data = mm[base + lo : base + hi]  # a copy: what is checked is what is returned
        if crc32(data) != head.block_crc[j]:
            raise head.mismatch(self.storage.full_path(key), j)
        start = int(head.offsets[i])
        stop = int(head.offsets[i + 1])
        return data if (lo, hi) == (start, stop) else data[start - lo : stop - lo]

    def _get_range(self, key: str, start: int, nbytes: int) -> bytes:
        try:
            return self.storage.get_range(key, start, nbytes)
        except FileNotFoundError:
            raise self._missing(key) from None

    def span_bytes(
        self, key: str, start: int, stop: int, verify: bool = False
    ) -> bytes | memoryview:
        """Stored bytes of samples start..stop of a chunk, contiguous (payload order),
        checked (`verify` is kept for callers; every read is checked)."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        if start == stop:
            return memoryview(b"")
        if head.chunk_compression is not None:
            return memoryview(self.payload(key))[a:b]
        local = self.storage.local_path(key)
        if head.whole_payload_only:
            self._check_v1(key, head)
            if local is not None:
                mm = self._mapped(key, local, head)
                return memoryview(mm)[head.payload_start + a : head.payload_start + b]
            return self._get_range(key, head.payload_start + a, b - a)
        lo, hi = head.covering(start, stop)
        if local is not None:
            mm = self._mapped(key, local, head)
            region = memoryview(mm)[head.payload_start + lo : head.payload_start + hi]
        else:
            region = memoryview(self._get_range(key, head.payload_start + lo, hi - lo))
        head.check_blocks(region, lo, start, stop, self.storage.full_path(key))
        return region[a - lo : b - lo]

    def read_into(
        self, key: str, start: int, stop: int, out: memoryview, verify: bool = False
    ) -> None:
        """Stored bytes of samples start..stop of a chunk into `out` (exactly that many bytes,
        a writable byte buffer), checked there (`verify` is kept for callers).

        Uncompressed local chunks: one read() from the file into `out`, then the checksum
        blocks are checked in `out`; a block only partly inside the range is read and
        checked on its own (at most 32 KiB on either side). Nothing is mapped or cached.
        Otherwise the bytes are copied from `span_bytes`."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        if len(out) != b - a:
            raise ValueError(f"read_into: {b - a} bytes to read, the buffer holds {len(out)}")
        if start == stop:
            return
        local = self.storage.local_path(key) if head.chunk_compression is None else None
        if local is None or head.whole_payload_only:
            out[:] = self.span_bytes(key, start, stop)
            return
        where = self.storage.full_path(key)
        file, _identity_now, changed = self._open_local(key, local)
        with file:
            if changed:  # read it the mapped way, whose map and header belong together
                out[:] = self.span_bytes(key, start, stop)
                return
            base = head.payload_start
            inner_a, inner_b = start, stop  # samples whose blocks lie wholly inside
            ja, jb = head.block(start), head.block(stop - 1)
            lo_a, hi_b = head.block_lo[ja], head.block_hi[jb]
            if lo_a < a or (ja == jb and hi_b > b):  # the first block sticks out
                edge = self._pread(file, base + lo_a, head.block_hi[ja] - lo_a, where)
                if crc32(edge) != head.block_crc[ja]:
                    raise head.mismatch(where, ja)
                take = min(head.block_hi[ja], b) - a
                out[:take] = memoryview(edge)[a - lo_a : a - lo_a + take]
                inner_a = head.block_first[ja + 1] if ja + 1 < len(head.block_first) else head.n
            if jb != ja and hi_b > b:  # the last block sticks out
                lo_b = head.block_lo[jb]
                edge = self._pread(file, base + lo_b, hi_b - lo_b, where)
                if crc32(edge) != head.block_crc[jb]:
                    raise head.mismatch(where, jb)
                out[lo_b - a :] = memoryview(edge)[: b - lo_b]
                inner_b = head.block_first[jb]
            if inner_a < inner_b:
                ia, ib = int(head.offsets[inner_a]), int(head.offsets[inner_b])
                middle = out[ia - a : ib - a]
                file.seek(base + ia)
                done = 0
                while done < len(middle):
                    got = file.readinto(middle[done:])
                    if not got:
                        raise CorruptionError(f"chunk file {where} is truncated", where)
                    done += got
                head.check_blocks(middle, ia, inner_a, inner_b, where)

    @staticmethod
    def _pread(file: io.FileIO, offset: int, nbytes: int, where: str) -> bytes:
        data = os.pread(file.fileno(), nbytes, offset)
        if len(data) != nbytes:
            raise CorruptionError(f"chunk file {where} is truncated", where)
        return data

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
        view of a private (copy-on-write) map of its file, checked in that map; None for
        other chunks (then use `read_into`). `verify` is kept for callers."""
        head = self.header(key)
        if not 0 <= start <= stop <= head.n:
            raise self._short(key, head, stop)
        local = self.storage.local_path(key) if head.chunk_compression is None else None
        if local is None:
            return None
        if head.whole_payload_only:
            self._check_v1(key, head)
        file, _identity_now, changed = self._open_local(key, local)
        with file:
            if changed or os.fstat(file.fileno()).st_size != head.file_size:
                return None
            mm = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        base = head.payload_start
        a, b = int(head.offsets[start]), int(head.offsets[stop])
        if start < stop and not head.whole_payload_only:
            lo, hi = head.covering(start, stop)
            with memoryview(mm) as view:
                head.check_blocks(view[base + lo : base + hi], lo, start, stop,
                                  self.storage.full_path(key))
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
