"""Storage: the one small interface between the format and where bytes live.

Keys are '/'-separated relative paths under the dataset's root ("versions/000000000001.json",
"chunks/t1a2b3c4d/<uuid>"). Two implementations:

- `LocalStorage`: a directory on a local file system, through plain `os` calls (the fast
  path: pread/mmap for reads, fsync for durability, link() for put-if-absent).
- `FsspecStorage`: any fsspec file system (memory://, s3://, gcs://, ...).

What the commit protocol relies on, and what each implementation guarantees:

`put(key, data, sync=True)`
    Writes the whole value. Durable when it returns (local: file fdatasynced; the directory
    entry is made durable by `sync(prefix)`, called once before a commit). With sync=False
    (local disks, `deferred_sync`) the caller flushes later with `sync_file(key)`, which
    may run in another process. A crash during `put` may leave a partial file under `key`
    on local disks: callers only `put` keys nobody references yet (fresh uuids), so a
    partial file is an unreferenced leftover.
`begin_put(key, parts) -> PendingPut | None`
    Local disks, large files: copies the bytes, creates the file and takes an exclusive
    `flock` on it; `PendingPut.complete()` writes them with O_DIRECT from any thread and
    drops the lock. Writers do this on a helper thread (SyncQueue) and may hand out a
    receipt before it is done: `sync_file` and `written_size` wait for the lock, and a
    writer that dies mid-write leaves a short file, which a commit refuses (FORMAT.md 3.1).
`touch_all(keys) -> missing`
    Before a commit names chunk files: which are gone (gc took them, or the storage lost
    them), and, on local disks, a fresh mtime for the others so gc's grace period counts
    from the commit.
`set_if_not_exists(key, data) -> bool`
    Put-if-absent: creates `key` with `data` and returns True, or returns False and changes
    nothing when `key` exists. A reader never sees a partly written value under `key`.
    - local: write a temporary file, fsync, os.link() to `key` (atomic, fails if present),
      fsync the directory.  Atomic across processes and NFSv3+ clients.
    - memory://: a process-wide lock around exists+write (memory:// is per process anyway).
    - s3://: PUT with `If-None-Match: *` (s3fs `pipe_file(mode="create")`); atomic on AWS
      S3, MinIO and moto. S3-compatible stores that ignore the header would silently
      overwrite: `atomic_create` cannot detect that, so use a store that implements it.
    - other fsspec file systems: exists-check then write. NOT atomic between machines;
      `atomic_create` is False and the docs say so.
`list(prefix, refresh=True)`
    Keys under `prefix`. With refresh=True any listing cache is invalidated first: s3fs
    caches directory listings, and a commit protocol that trusts a stale listing would
    overwrite or miss the newest version.
`get(key)`, `get_range(key, start, length)`, `size(key)`, `delete(key)`, `mtime(key)`
    Missing keys raise FileNotFoundError (callers turn that into CorruptionError naming the
    file when a manifest references it).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
import uuid
from abc import ABC, abstractmethod

try:
    import fcntl
except ImportError:  # Windows: no O_DIRECT either, so never needed
    fcntl = None


class Storage(ABC):
    """Bytes under string keys, with put-if-absent. See the module docstring for races."""

    url: str
    supports_listing: bool = True
    atomic_create: bool = True
    deferred_sync: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview | list, sync: bool = True) -> None:
        """Write `data` (bytes, or a list of buffers written in order) under `key`.
        sync=False: the caller makes the data durable later with `sync_file(key)`."""

    def sync_file(self, key: str) -> None:
        """Make the data of `key`, written with put(sync=False), durable (local: fdatasync).
        Object stores need nothing: a finished PUT is durable."""
        return None

    def written_size(self, key: str) -> int:
        """The size of `key` once no writer is writing it any more (local disks: after
        its writer's PendingPut lock is released; elsewhere a finished put is whole)."""
        return self.size(key)

    def begin_put(self, key: str, parts: list, size_hint: int = 0) -> PendingPut | None:
        """Start writing the new file `key`: its bytes are copied and its name exists when
        this returns, and the PendingPut's complete() writes them (from any thread). None
        where the storage gains nothing from it (then `put`). `size_hint`: the largest
        file the caller will write this way (a writer's chunk capacity), so the memory
        the copies take is sized once."""
        return None

    @abstractmethod
    def set_if_not_exists(self, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "", refresh: bool = True) -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def mtime(self, key: str) -> float | None:
        """Last modification time in seconds since the epoch, None when unknown."""
        return None

    def touch_all(self, keys: list[str]) -> list[str]:
        """The keys that do not exist; the others get their modification time set to now
        where the storage allows (a commit does this to the chunks it is about to publish,
        so `gc`'s grace period counts from the commit, not from the write). The default
        lists each folder once (a HEAD per key costs a round trip each on object stores)
        and refreshes nothing."""
        by_folder: dict[str, list[str]] = {}
        for key in keys:
            by_folder.setdefault(key.rsplit("/", 1)[0] if "/" in key else "", []).append(key)
        missing = []
        for folder, wanted in by_folder.items():
            present = set(self.list(folder, refresh=True))
            missing += [key for key in wanted if key not in present]
        return missing

    def sync(self, prefix: str) -> None:
        """Make the directory entries of keys written under `prefix` durable (local fsync).
        Object stores need nothing: a finished PUT is durable."""
        return None

    def local_path(self, key: str) -> str | None:
        """The local file path of `key` when the storage is a local directory (fast path)."""
        return None

    def full_path(self, key: str) -> str:
        """A human-readable location for messages: the URL of `key`."""
        return f"{self.url.rstrip('/')}/{key}"

    def delete_all(self) -> None:
        """Delete every key (the whole dataset)."""
        for key in self.list(""):
            self.delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; nothing more to do
        pass
    finally:
        os.close(fd)


# fdatasync flushes a file's data and the metadata needed to read it back (its size and
# blocks), skipping only timestamps: enough for a new file. Where it is missing, fsync.
_datasync = getattr(os, "fdatasync", os.fsync)

_IOV_MAX = 512

# Direct I/O for large new files on local disks (see PendingPut). The unit covers the
# 512- and 4096-byte sectors of real disks: file offset, length and memory address of a
# direct write are multiples of it (mmap memory is page-aligned).
_O_DIRECT = getattr(os, "O_DIRECT", 0)
DIRECT_ALIGN = 4096
# Smaller files go through the page cache: a few pages cost less than a direct write's
# round trip to the device, and class-label or small-sample chunks are that small.
DIRECT_MIN_BYTES = 256 * 1024
# At most this many staged copies per process wait for the disk (each about a chunk,
# chunk_target_bytes): a writer faster than its disk waits in begin_put, memory bounded.
MAX_PENDING_PUTS = 2
# Staging memory is kept per process for the next direct write (a transform makes a writer
# per batch, and fresh pages cost a fault each where reused ones are already mapped): as
# many buffers as can be in use at once (MAX_PENDING_PUTS), each sized once to the
# writer's chunk capacity and mapped whole, so a worker's memory stays flat however many
# chunks, of whatever size, it writes. A buffer for a single larger sample is let go.
MAX_KEPT_STAGING_BYTES = 16 * 1024 * 1024  # per buffer (the default chunk capacity is 12)
_spare_staging: list[mmap.mmap] = []
_staging_lock = threading.Lock()
_put_slots: tuple[int, threading.BoundedSemaphore] | None = None  # (pid, semaphore)


def _direct_io_default() -> bool:
    return bool(_O_DIRECT) and os.environ.get("SLICEWISE_DIRECT_IO", "1") != "0"


def _slots() -> threading.BoundedSemaphore:
    global _put_slots
    pid = os.getpid()
    with _staging_lock:
        if _put_slots is None or _put_slots[0] != pid:  # a forked child starts with its own
            _put_slots = (pid, threading.BoundedSemaphore(MAX_PENDING_PUTS))
        return _put_slots[1]


def _take_staging(nbytes: int, size_hint: int = 0) -> mmap.mmap:
    """Page-aligned memory for at least `nbytes`: the smallest spare that is big enough,
    else a new buffer of max(nbytes, size_hint) (the spares too small for it go)."""
    with _staging_lock:
        fitting = [buffer for buffer in _spare_staging if len(buffer) >= nbytes]
        if fitting:
            buffer = min(fitting, key=len)
            _spare_staging.remove(buffer)
            return buffer
        small, _spare_staging[:] = list(_spare_staging), []
    for buffer in small:
        _close_staging(buffer)
    size = -(-max(nbytes, size_hint) // (1 << 20)) << 20  # whole MiB
    return mmap.mmap(-1, size, flags=_MAP_FLAGS)


# Mapped whole at once (MAP_POPULATE: one call, not a fault per page as it fills).
_MAP_FLAGS = (
    getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    | getattr(mmap, "MAP_POPULATE", 0)
)


def _give_staging(buffer: mmap.mmap) -> None:
    """Keep the largest MAX_PENDING_PUTS buffers (any later chunk fits them), except one
    sized for a single sample past the cap (rare: let go at once)."""
    with _staging_lock:
        _spare_staging.append(buffer)
        _spare_staging.sort(key=len, reverse=True)
        extra = [b for b in _spare_staging if len(b) > MAX_KEPT_STAGING_BYTES]
        kept = [b for b in _spare_staging if len(b) <= MAX_KEPT_STAGING_BYTES]
        extra += kept[MAX_PENDING_PUTS:]
        _spare_staging[:] = kept[:MAX_PENDING_PUTS]
    for spare in extra:
        _close_staging(spare)


def _close_staging(buffer: mmap.mmap) -> None:
    try:
        buffer.close()
    except BufferError:  # a view of it is still alive (an exception's frame): gc frees it
        pass


class PendingPut:
    """A new local file whose bytes are copied and whose name exists, but whose data is
    still to be written: `LocalStorage.begin_put` makes it in the caller's thread, and
    `complete()` writes it from any thread (a writer's helper thread, while the writer
    encodes its next chunk, or its next batch). Exactly one of complete() or abandon().

    Why a copy, and O_DIRECT: a buffered write of a new file copies every byte into
    freshly allocated page-cache pages, and on a virtual machine touching fresh memory
    costs host page faults (measured here: 1-4 s of system time per GB written buffered,
    about 0.3 s direct, and the flush then has nothing left to write back). The device
    reads a direct write straight from the staging memory. The copy is the price: the
    format puts the header, whose size depends on every sample, before the payload, so
    samples cannot be read in place at a block-aligned file offset.

    The lock: from its creation until complete() has written the last byte, the file is
    held under an exclusive `flock`. Whoever syncs it (`LocalStorage.sync_file`, in any
    process) takes a shared lock first, so it never flushes a half-written file and may
    be handed the file's name before the write is done (FORMAT.md 3.1). A writer that
    dies mid-write releases its lock with its last bytes missing; the file is then short,
    which a commit checks (the last block is always written last, through the page cache,
    so the size reaches its full value only once everything before it is written).
    `locked` is False where the file system has no flock: the writer must then wait for
    complete() itself before anyone else may sync the file.
    """

    __slots__ = ("path", "nbytes", "locked", "_storage", "_fd", "_buffer", "_direct", "_slot")

    def __init__(
        self, storage: LocalStorage, path: str, parts: list, nbytes: int, size_hint: int = 0
    ):
        self.path, self.nbytes, self._storage = path, nbytes, storage
        self._slot = _slots()
        self._slot.acquire()  # waits while MAX_PENDING_PUTS copies wait for the disk
        self._fd = -1
        self._buffer = None
        try:
            self._buffer = _take_staging(nbytes, size_hint)
            with memoryview(self._buffer) as view:
                position = 0
                for part in parts:
                    with memoryview(part) as source:
                        size = source.nbytes
                        view[position : position + size] = source.cast("B")
                    position += size
            self._open()
        except BaseException:
            self._release()
            raise

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._direct = self._storage.direct_io
        try:
            self._fd = os.open(self.path, flags | (_O_DIRECT if self._direct else 0), 0o644)
        except OSError as exc:
            if not self._direct or exc.errno != errno.EINVAL:
                raise
            self._storage.direct_io = self._direct = False  # no O_DIRECT here (tmpfs, FUSE)
            self._fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never contended
            self.locked = True
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
            self.locked = False

    def complete(self, sync: bool = True) -> None:
        """Write the bytes, fdatasync them when `sync`, close (which drops the lock)."""
        try:
            with memoryview(self._buffer) as view:
                nbytes = self.nbytes
                written = 0
                if self._direct:
                    # every block but the last, whole or not (see the class docstring)
                    aligned = (nbytes - 1) // DIRECT_ALIGN * DIRECT_ALIGN
                    try:
                        written = os.pwrite(self._fd, view[:aligned], 0)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        self._storage.direct_io = False  # another alignment needed: stop
                    flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
                while written < nbytes:
                    written += os.pwrite(self._fd, view[written:nbytes], written)
            if sync:
                _datasync(self._fd)
        except BaseException:
            # Nobody may take this file for whole: a process that syncs it later might not
            # be told of this failure (the kernel reports a writeback error once), but it
            # sees the size (FORMAT.md 3.1).
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            raise
        finally:
            self._release()

    def abandon(self) -> None:
        """Drop it unwritten (its short file is an unreferenced leftover for gc)."""
        self._release()

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        buffer, self._buffer = self._buffer, None
        slot, self._slot = self._slot, None
        try:
            if fd >= 0:
                os.close(fd)
        finally:
            if buffer is not None:
                _give_staging(buffer)
            if slot is not None:
                slot.release()


# flock is refused by some network and FUSE file systems
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EBADF}


def _wait_for_writer(fd: int) -> None:
    """Return once no PendingPut holds the file open for writing (its exclusive lock)."""
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise


def _write_all(fd: int, parts: list) -> None:
    """writev() the buffers in order, resuming after short writes."""
    pending = [memoryview(p).cast("B") for p in parts if len(p)]
    while pending:
        batch = pending[:_IOV_MAX]
        written = os.writev(fd, batch)
        while written:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.pop(0)
            else:
                pending[0] = head[written:]
                written = 0


class LocalStorage(Storage):
    """A local directory through direct os calls."""

    deferred_sync = True  # put(sync=False) + sync_file() is cheaper than fsync in put

    def __init__(self, root: str, direct_io: bool | None = None):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root
        self._made_dirs: set[str] = set()
        # Large files are written with O_DIRECT where the file system takes it; None: on
        # where the platform has it, unless SLICEWISE_DIRECT_IO=0. Turned off for good
        # by the first file system refusal (tmpfs, some FUSE and network file systems).
        self.direct_io = _direct_io_default() if direct_io is None else bool(direct_io)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        # keys are made by this package, but a manifest from a stranger names chunk files:
        # refuse anything that could leave the dataset's directory
        if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts) and key:
            raise ValueError(f"invalid storage key {key[:80]!r}")
        return os.path.join(self.root, *parts)

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def full_path(self, key: str) -> str:
        return self._path(key)

    def _ensure_parent(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent in self._made_dirs:
            return
        missing = []
        probe = parent
        while not os.path.isdir(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        os.makedirs(parent, exist_ok=True)
        # a new directory's own entry must be durable too, or its files vanish on power loss
        for created in reversed(missing):
            _fsync_dir(os.path.dirname(created))
        self._made_dirs.add(parent)

    def get(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def size(self, key: str) -> int:
        return os.stat(self._path(key)).st_size

    def begin_put(self, key: str, parts: list, size_hint: int = 0) -> PendingPut | None:
        if not self.direct_io:
            return None
        nbytes = sum(memoryview(part).nbytes for part in parts)
        if nbytes < DIRECT_MIN_BYTES:
            return None
        path = self._path(key)
        self._ensure_parent(path)
        return PendingPut(self, path, parts, nbytes, size_hint)

    def put(self, key: str, data: bytes | memoryview | list, sync: bool = True) -> None:
        parts = data if isinstance(data, list) else [data]
        pending = self.begin_put(key, parts)
        if pending is not None:
            pending.complete(sync)
            return
        path = self._path(key)
        self._ensure_parent(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, parts)
            if sync:
                _datasync(fd)
        finally:
            os.close(fd)

    def sync_file(self, key: str) -> None:
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            _wait_for_writer(fd)
            _datasync(fd)
        finally:
            os.close(fd)

    def written_size(self, key: str) -> int:
        fd = os.open(self._path(key), os.O_RDONLY)
        try:
            _wait_for_writer(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def touch_all(self, keys: list[str]) -> list[str]:
        missing = []
        for key in keys:
            try:
                os.utime(self._path(key))
            except FileNotFoundError:
                missing.append(key)
        return missing

    def set_if_not_exists(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        self._ensure_parent(path)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}")
        self.put_tmp(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # file systems without hard links: O_EXCL + rename fallback
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return self._create_exclusive_fallback(path, data)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        _fsync_dir(os.path.dirname(path))
        return True

    def put_tmp(self, tmp: str, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, [data])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_exclusive_fallback(self, path: str, data: bytes) -> bool:
        # O_EXCL claims the name; a crash before the fsync leaves a short manifest that
        # readers report as CorruptionError (documented limitation of link-less file systems).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            _write_all(fd, [data])
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(path))
        return True

    def list(self, prefix: str = "", refresh: bool = True) -> list[str]:
        prefix = prefix.strip("/")
        base = self._path(prefix) if prefix else self.root
        out: list[str] = []
        if not os.path.isdir(base):
            return out
        root_len = len(self.root) + 1
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = dirpath[root_len:].replace(os.sep, "/")
            for name in filenames:
                out.append(f"{rel}/{name}" if rel else name)
        return out

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def mtime(self, key: str) -> float | None:
        try:
            return os.stat(self._path(key)).st_mtime
        except FileNotFoundError:
            return None

    def sync(self, prefix: str) -> None:
        _fsync_dir(self._path(prefix) if prefix else self.root)

    def delete_all(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


# Helper threads for SyncQueue, one pool per thread count and process, started on first
# use and kept: starting a thread costs milliseconds on a loaded machine, and writers come
# and go once per batch. A forked child starts its own (the parent's threads are not in it).
_sync_pools: dict[int, tuple[int, object]] = {}
_sync_pools_lock = threading.Lock()


def _sync_pool(threads: int):
    from concurrent.futures import ThreadPoolExecutor

    pid = os.getpid()
    with _sync_pools_lock:
        entry = _sync_pools.get(threads)
        if entry is None or entry[0] != pid:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="slicewise-sync")
            entry = _sync_pools[threads] = (pid, pool)
        return entry[1]


def short_files(storage: Storage, expected: list[tuple[str, int]]) -> list[str]:
    """Of (key, nbytes) pairs, the keys whose file does not hold exactly nbytes once no
    writer writes it any more (`written_size`; a missing file counts as short). A writer
    that died or failed while its PendingPut was writing leaves its file short
    (FORMAT.md 3.1): such a file must never be published."""
    short = []
    for key, nbytes in expected:
        try:
            size = storage.written_size(key)
        except FileNotFoundError:
            size = -1
        if size != nbytes:
            short.append(key)
    return short


class SyncQueue:
    """Makes new files durable on helper threads, so the disk works while the caller goes
    on (the writes and fdatasync release the GIL). `put(key, parts)` hands over a whole
    file (written there, or written here and flushed there); `submit(key)` a file written
    with `put(sync=False)`, to flush. Each key is synced once, however often it is
    submitted. `wait()` returns when every file handed over is durable and re-raises the
    first failure: nothing that waits on it may publish a file whose flush failed.
    `hand_over()` instead leaves the unfinished ones to whoever publishes them.

    Writers use one thread (chunk k is written and flushed while chunk k+1 is encoded); a
    committer uses a few (concurrent flushes of different files share the file system's
    journal commits). The threads belong to the process (`_sync_pool`), not to the queue.
    """

    def __init__(self, storage: Storage, threads: int = 1):
        self._storage = storage
        self._threads = threads
        self._pending: dict[str, object] = {}  # key -> Future of its sync_file or write
        self._locked: set[str] = set()  # keys written by a PendingPut under its lock
        self._unflushed: set[str] = set()  # keys written with flush=False

    def submit(self, key: str) -> None:
        if key not in self._pending:
            pool = _sync_pool(self._threads)
            self._pending[key] = pool.submit(self._storage.sync_file, key)

    def put(self, key: str, parts: list, flush: bool = True, size_hint: int = 0) -> None:
        """Write the new file `key` and make it durable without waiting for the disk.
        Where the storage takes a copy (`begin_put`: local direct I/O), the helper thread
        writes and flushes it; otherwise it is written here and flushed there. Either
        way `parts` may be reused when this returns. flush=False: written, never flushed
        here; `hand_over()` lists it for whoever publishes it (a writer's last chunks,
        whose flush would have nothing left to overlap with in the writer). `size_hint`:
        see `Storage.begin_put`."""
        pending = self._storage.begin_put(key, parts, size_hint)
        if pending is None:
            self._storage.put(key, parts, sync=False)
            if flush:
                self.submit(key)
            else:
                self._unflushed.add(key)
            return
        try:
            future = _sync_pool(self._threads).submit(pending.complete, flush)
        except BaseException:
            pending.abandon()
            raise
        self._pending[key] = future
        if pending.locked:
            self._locked.add(key)
        if not flush:
            self._unflushed.add(key)

    @property
    def idle(self) -> bool:
        """True when no file was handed over since the last wait()."""
        return not self._pending and not self._unflushed

    def wait(self, keys: list[str] | None = None) -> None:
        """Make `keys` (default: every key handed over) durable: submit those not handed
        over yet, wait for them, and re-raise the first failure."""
        if keys is None:
            keys = list(self._pending) + [k for k in self._unflushed if k not in self._pending]
        writes = [self._pending.pop(key) for key in keys if key in self._unflushed
                  and key in self._pending]
        _wait_all(writes)  # a file written with flush=False is flushed once it is written
        self._unflushed.difference_update(keys)
        self._locked.difference_update(keys)
        for key in keys:
            self.submit(key)
        _wait_all([self._pending.pop(key) for key in keys])

    def hand_over(self) -> set[str]:
        """The keys not durable yet, left to whoever publishes them (their receipt entries
        say `"synced": false`): files written with flush=False, and files still being
        written by a PendingPut under its lock (`sync_file` waits for that lock before
        it flushes). Everything else is waited for here: a flush of a file written
        through the page cache is quick, and this writer must see its failure (another
        process's later fdatasync may not be told of it). Failures seen so far are
        re-raised. The queue is empty afterwards."""
        pending, self._pending = self._pending, {}
        locked, self._locked = self._locked, set()
        unflushed, self._unflushed = self._unflushed, set()
        _wait_all([future for key, future in pending.items() if key not in locked])
        unfinished = {key for key in locked if not pending[key].done()}
        _wait_all([pending[key] for key in locked - unfinished])
        return unfinished | unflushed

    def abandon(self) -> None:
        """Forget every file handed over (none will be published); the helper threads
        finish what they started."""
        self._pending, self._locked, self._unflushed = {}, set(), set()


def _wait_all(futures: list) -> None:
    """Wait for every future, then re-raise the first failure."""
    errors = []
    for future in futures:
        try:
            future.result()
        except BaseException as exc:  # wait for every flush, then report the first
            errors.append(exc)
    if errors:
        raise errors[0]


_MEMORY_LOCK = threading.Lock()


class FsspecStorage(Storage):
    """Any fsspec file system; see the module docstring for what put-if-absent means here."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
        self.root = root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = protocol
        self.atomic_create = protocol in ("memory", "s3", "s3a")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.fs.cat_file(self._path(key), start=start, end=start + length)

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def put(self, key: str, data: bytes | memoryview | list, sync: bool = True) -> None:
        if isinstance(data, list):
            data = b"".join(data)
        self.fs.pipe_file(self._path(key), bytes(data))

    def set_if_not_exists(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if self.protocol == "memory":
            with _MEMORY_LOCK:
                if self.fs.exists(path):
                    return False
                self.fs.pipe_file(path, data)
                return True
        if self.protocol in ("s3", "s3a"):
            try:
                self.fs.pipe_file(path, data, mode="create")
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                # Some s3fs versions map 412 Precondition Failed to EINVAL; a retried
                # request that already landed also answers 412: the content decides.
                if exc.errno != errno.EINVAL and "recondition" not in str(exc):
                    raise
                self.fs.invalidate_cache(path)
                try:
                    return self.fs.cat_file(path) == data
                except FileNotFoundError:
                    raise exc from None
        # Generic fallback: check, then write. Not atomic against another machine.
        self.fs.invalidate_cache(path)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def list(self, prefix: str = "", refresh: bool = True) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if refresh:
            self.fs.invalidate_cache(base)
            self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        root_len = len(self.root) + 1
        out = []
        for path in found:
            path = path.rstrip("/")
            # some file systems return paths without the leading '/' of the root
            idx = path.find(self.root.lstrip("/"))
            rel = path[idx + len(self.root.lstrip("/")) + 1 :] if idx >= 0 else path[root_len:]
            if rel:
                out.append(rel)
        return out

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def mtime(self, key: str) -> float | None:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            return None
        for field in ("mtime", "LastModified", "created", "last_modified"):
            value = info.get(field)
            if value is None:
                continue
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
        return None

    def delete_all(self) -> None:
        try:
            self.fs.rm(self.root, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self.root)


def open_storage(url: str, storage_options: dict | None = None) -> Storage:
    """A Storage for a local path, file:// URL, or any fsspec URL."""
    if not isinstance(url, str):
        url = os.fspath(url)
    if url.startswith("file://"):
        return LocalStorage(url[len("file://") :])
    if "://" not in url:
        return LocalStorage(url)
    return FsspecStorage(url, storage_options)
