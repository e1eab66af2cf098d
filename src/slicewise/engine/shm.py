"""Shared memory: big buffers cross between processes without pipe copies.

Two users:

1. Results and arguments (`dumps` / `loads`). Pickle protocol 5 hands every large
   contiguous buffer (a numpy array's data, a bytearray) to a callback instead of copying
   it into the pickle stream. Buffers of `THRESHOLD` bytes or more are written into a
   fresh POSIX shared-memory segment, and only the segment's name travels through the
   pipe. The receiver maps the segment, unlinks its name at once, and unpickles with the
   mapping as the buffer: the numpy array it gets is a view of the shared pages. The
   kernel frees the pages when the last view (the last mmap reference) dies; nothing
   has to be remembered. Results go one step further (`SegmentWriter`): the parent keeps
   the name, and when the last view dies the name goes back to the worker that wrote it,
   which keeps the segment mapped and writes its next result into the same pages with
   one memcpy (several times faster than allocating fresh ones). A buffer that shared
   memory refuses (a full /dev/shm) travels in the pickle instead. Names start with the pool's prefix,
   `sw<token>-<pid>-`, so whatever a dead worker or a closed pool leaves is found and
   unlinked by that prefix (`unlink_prefix`).

2. `shared_array(shape, dtype)` (in sharedarray.py) maps named segments with
   `map_segment` and `unlink`.

This module does not import numpy: workers import it at start-up.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import sys
import weakref
from collections import OrderedDict
from typing import Any

import cloudpickle

try:
    import _posixshmem
except ImportError:  # Windows: no POSIX shared memory; everything goes through the pipe
    _posixshmem = None

THRESHOLD = 1 << 20  # buffers from 1 MiB up travel through shared memory
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux; elsewhere pages fault in lazily
SHM_DIR = "/dev/shm"
_names = itertools.count()

Segments = list[tuple[str, int]]


def available() -> bool:
    return _posixshmem is not None


def new_prefix() -> str:
    """A name prefix owned by one pool: `sw` + 8 random hex digits."""
    return "sw" + os.urandom(4).hex()


def shared_array_prefix(pid: int) -> str:
    """Names of the shared arrays a process creates: unlinked when that process is gone."""
    return f"swarr{pid}-"


_stopped = False  # set when the parent died: a segment made now would never be freed


def stop_creating() -> None:
    """Refuse new segments from now on (see worker.clean_up_after_parent)."""
    global _stopped
    _stopped = True


def _write_segment(name: str, data: memoryview) -> None:
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    if _stopped:  # created after the sweep began, so the sweep may miss it: undo
        os.close(fd)
        unlink(name)
        raise OSError("shared memory is being released: the parent process is gone")
    try:
        # write() into tmpfs allocates the pages as it copies: no page faults
        _write_all(fd, data.cast("B"))
    except BaseException:
        unlink(name)
        raise
    finally:
        os.close(fd)


# Python < 3.13 keeps a duplicate of the file descriptor open for every mmap: each big
# result the caller holds costs one descriptor (see raise_open_file_limit)
_MMAP_OPTIONS = {"trackfd": False} if sys.version_info >= (3, 13) else {}


def map_segment(name: str, size: int) -> mmap.mmap:
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        return mmap.mmap(fd, size, **_MMAP_OPTIONS)
    finally:
        os.close(fd)


def raise_open_file_limit() -> None:
    """Lift this process's soft limit on open files to its hard limit. Before Python 3.13
    every mapped result holds a file descriptor, and a call whose results hold 1,000 big
    arrays would otherwise fail at the common soft limit of 1,024 (dask's distributed
    and ray raise it too)."""
    try:
        import resource
    except ImportError:  # Windows
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        pass


def unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except (FileNotFoundError, OSError):
        pass


def discard(segments: Segments) -> None:
    """Free segments whose pickle will never be loaded (a cancelled or failed batch)."""
    for name, _size in segments:
        unlink(name)


def unlink_prefix(prefix: str) -> int:
    """Unlink every segment whose name starts with `prefix` (a dead worker's leftovers)."""
    if _posixshmem is None or not os.path.isdir(SHM_DIR):
        return 0
    count = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            unlink(name)
            count += 1
    return count


class SegmentWriter:
    """Worker side: writes result buffers into segments, and reuses the segments the
    parent gives back once their last view died.

    A fresh segment is filled with pwrite() (tmpfs allocates the pages as it copies). A
    segment that comes back is kept *mapped* here, populated (MAP_POPULATE: one call
    instead of a page fault per 4 KiB), so its next result is one memcpy into pages that
    exist and are mapped: about 2.5x faster than pwrite(), 5x faster than fresh pages.
    Bounds: at most `cache_bytes` of given-back segments wait for reuse (the rest are
    unlinked), and at most `cache_bytes` stay mapped (least recently used unmapped
    first), so a segment the parent unlinked on its side cannot be kept alive by a
    mapping here for longer than a few reuse cycles; `close()` (the worker is idle or
    leaving) unmaps everything."""

    def __init__(self, prefix: str, cache_bytes: int = 256 << 20) -> None:
        self.prefix = prefix
        self.cache_bytes = cache_bytes
        self.capacity: dict[str, int] = {}  # every segment this worker made and still owns
        self.free: list[str] = []
        self.free_bytes = 0
        self.mappings: OrderedDict[str, mmap.mmap] = OrderedDict()  # least recent first
        self.mapped_bytes = 0

    def take_back(self, names: list[str]) -> None:
        for name in names:
            size = self.capacity.get(name)
            if size is None:
                continue
            if self.free_bytes + size <= self.cache_bytes:
                self.free.append(name)
                self.free_bytes += size
            else:
                del self.capacity[name]
                self._unmap(name)
                unlink(name)

    def write(self, data: memoryview) -> str:
        view = data.cast("B")
        size = view.nbytes
        for i, name in enumerate(self.free):
            capacity = self.capacity[name]
            if size <= capacity <= size + (size >> 2):
                del self.free[i]
                self.free_bytes -= capacity
                try:
                    mapping = self._mapping(name, capacity)
                except OSError:  # unlinked behind our back: make a new one
                    del self.capacity[name]
                    break
                mapping[:size] = view
                return name
        name = f"{self.prefix}-{next(_names)}"
        _write_segment(name, view)
        self.capacity[name] = size
        return name

    def _mapping(self, name: str, capacity: int) -> mmap.mmap:
        mapping = self.mappings.get(name)
        if mapping is not None:
            self.mappings.move_to_end(name)
            return mapping
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
        try:
            mapping = mmap.mmap(fd, capacity, flags=mmap.MAP_SHARED | _MAP_POPULATE)
        finally:
            os.close(fd)
        self.mappings[name] = mapping
        self.mapped_bytes += capacity
        while self.mapped_bytes > self.cache_bytes and len(self.mappings) > 1:
            self._unmap(next(iter(self.mappings)))
        return mapping

    def _unmap(self, name: str) -> None:
        mapping = self.mappings.pop(name, None)
        if mapping is not None:
            self.mapped_bytes -= len(mapping)
            mapping.close()

    def close(self) -> None:
        for name in self.free:
            unlink(name)
            del self.capacity[name]
        self.free.clear()
        self.free_bytes = 0
        for name in list(self.mappings):
            self._unmap(name)


def _write_all(fd: int, view: memoryview) -> None:
    written = 0
    total = view.nbytes
    while written < total:
        written += os.pwrite(fd, view[written:], written)


def dumps(
    obj: Any, prefix: str | None, writer: SegmentWriter | None = None
) -> tuple[bytes, Segments]:
    """Pickle `obj` (protocol 5); buffers >= THRESHOLD go to shared-memory segments:
    fresh ones named `prefix-N`, or through `writer`, which reuses given-back ones."""
    segments: Segments = []

    def place(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if (prefix is None and writer is None) or _posixshmem is None or raw.nbytes < THRESHOLD:
            return True  # in-band
        try:
            if writer is not None:
                name = writer.write(raw)
            else:
                name = f"{prefix}-{next(_names)}"
                _write_segment(name, raw)
        except OSError:
            # /dev/shm is full (a container's default is 64 MB) or refuses: the buffer
            # goes through the pipe instead, slower but never a failed item
            return True
        segments.append((name, raw.nbytes))
        return False

    try:
        # cloudpickle: as fast as pickle for data, and it sends functions and classes
        # from __main__ by value (workers never import the user's main module)
        return cloudpickle.dumps(obj, protocol=5, buffer_callback=place), segments
    except BaseException:
        if writer is None:
            discard(segments)
        else:
            writer.take_back([name for name, _ in segments])
        raise


def loads(payload: bytes, segments: Segments, give_back: Any = None) -> Any:
    """Unpickle what `dumps` made; buffers become zero-copy views of the segments.
    Without `give_back` each name is unlinked at once (the pages live until the last view
    dies). With it, names stay and `give_back(name)` runs when the last view dies, so the
    worker can reuse the segment."""
    buffers = []
    try:
        for name, size in segments:
            mapping = map_segment(name, size)
            if give_back is not None:
                weakref.finalize(mapping, give_back, name, size)
            buffers.append(memoryview(mapping))
    finally:
        if give_back is None:
            discard(segments)  # mapped pages live on until the last view dies
    return pickle.loads(payload, buffers=buffers)
