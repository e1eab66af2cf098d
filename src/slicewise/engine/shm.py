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
   which writes its next result into the same pages (rewriting existing pages is several
   times faster than allocating fresh ones). Names start with the pool's prefix,
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
import weakref
from typing import Any

import cloudpickle

try:
    import _posixshmem
except ImportError:  # Windows: no POSIX shared memory; everything goes through the pipe
    _posixshmem = None

THRESHOLD = 1 << 20  # buffers from 1 MiB up travel through shared memory
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


def _write_segment(name: str, data: memoryview) -> None:
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        # write() into tmpfs allocates the pages as it copies: no page faults
        _write_all(fd, data.cast("B"))
    except BaseException:
        unlink(name)
        raise
    finally:
        os.close(fd)


def map_segment(name: str, size: int) -> mmap.mmap:
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


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
    """Worker side: writes result buffers into segments and reuses the segments the parent
    gives back once their last view died (writing into pages that already exist is several
    times faster than into fresh ones). At most `cache_bytes` of given-back segments wait
    for reuse; the rest are unlinked."""

    def __init__(self, prefix: str, cache_bytes: int = 256 << 20) -> None:
        self.prefix = prefix
        self.cache_bytes = cache_bytes
        self.capacity: dict[str, int] = {}  # every segment this worker made and still owns
        self.free: list[str] = []
        self.free_bytes = 0

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
                    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
                except OSError:  # unlinked behind our back: make a new one
                    del self.capacity[name]
                    break
                try:
                    _write_all(fd, view)
                finally:
                    os.close(fd)
                return name
        name = f"{self.prefix}-{next(_names)}"
        _write_segment(name, view)
        self.capacity[name] = size
        return name

    def close(self) -> None:
        for name in self.free:
            unlink(name)
        self.free.clear()


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
        if writer is not None:
            name = writer.write(raw)
        else:
            name = f"{prefix}-{next(_names)}"
            _write_segment(name, raw)
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
