"""Storage: the one small interface between the format and where bytes live.

Keys are '/'-separated relative paths under the dataset's root ("versions/000000000001.json",
"chunks/t1a2b3c4d/<uuid>"). Two implementations:

- `LocalStorage` (here): a directory on a local file system, through plain `os` calls (the
  fast path: pread/mmap for reads, fsync for durability, link() for put-if-absent). It
  refuses symbolic links inside the dataset (FORMAT.md §7).
- `FsspecStorage` (storage_fsspec.py): any fsspec file system (memory://, s3://, gcs://).

`SyncQueue` and `short_files` (syncqueue.py) make written files durable on helper threads.

Errors of writes (a full disk: ENOSPC, EFBIG, EIO, EDQUOT...) come out as themselves, the
same OSError class and errno, with a message naming the file and the dataset
(`storage_error`); a failed write leaves no partial file behind where it can remove it.

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
    them), and, on local disks (`touch_refreshes`), a fresh mtime for the others so gc's
    grace period counts from the commit. Object stores skip it when no gc ran since the
    chunks were written (commit.py, the gc record).
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
    - S3 answers of "try again" (409 ConditionalRequestConflict, 503 SlowDown, dropped
      connections) are retried with jittered exponential backoff (storage_fsspec.py).
`list(prefix, refresh=True)`
    Keys under `prefix`. With refresh=True any listing cache is invalidated first: s3fs
    caches directory listings. The commit and read paths never trust a listing for the
    newest version: it is a hint, and HEAD/GET probes of the next keys decide
    (manifest.list_version_seqs, FORMAT.md §3). Only gc, verify and recovery list.
`abort_incomplete_uploads(older_than, dry_run)`
    Object stores: abort multipart uploads under the dataset started more than
    `older_than` seconds ago (gc). Nothing elsewhere.
`get(key)`, `get_range(key, start, length)`, `get_head(key, length)` (the first bytes
and the whole size: one GET on S3), `size(key)`, `delete(key)`, `mtime(key)`
    Missing keys raise FileNotFoundError (callers turn that into CorruptionError naming the
    file when a manifest references it).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import threading
import uuid
from abc import ABC, abstractmethod

from slicewise.format.errors import CorruptionError

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
    # touch_all refreshes modification times (local disks): a commit then always touches
    # its chunks. Where it cannot (object stores), the commit skips its per-object
    # existence checks when no gc ran since the chunks were written (commit.py)
    touch_refreshes: bool = False

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

    def get_head(self, key: str, length: int) -> tuple[bytes, int]:
        """(the first `length` bytes of `key`, or all of it when shorter; its whole size).
        Object stores answer both with one ranged GET (its Content-Range); here a size
        lookup and a read."""
        size = self.size(key)
        return self.get_range(key, 0, min(size, length)), size

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

    def abort_incomplete_uploads(self, older_than: float, dry_run: bool = False) -> list[str]:
        """Abort multipart uploads under the dataset started more than `older_than`
        seconds ago (object stores; see FsspecStorage). '<key> <upload id>' for each."""
        return []

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
        except BaseException as exc:
            self._release()
            if isinstance(exc, OSError):
                raise storage_error(exc, path, storage.root) from exc
            raise

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW  # folders: _ensure_parent
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
        except BaseException as exc:
            # Nobody may take this file for whole: a process that syncs it later might not
            # be told of this failure (the kernel reports a writeback error once), but it
            # sees the size (FORMAT.md 3.1).
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            if isinstance(exc, OSError):  # ENOSPC as itself, naming the file
                raise storage_error(exc, self.path, self._storage.root) from exc
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


def storage_error(exc: OSError, path: str, dataset: str, doing: str = "writing") -> OSError:
    """`exc` as itself (same errno, same class: ENOSPC stays ENOSPC, ENOENT stays
    FileNotFoundError) with a message naming the file and the dataset, so a full disk
    reads "[Errno 28] No space left on device (writing into dataset /data/ds):
    '/data/ds/chunks/t1/9c0e...'" and not a bare "OSError 28". Raise it `from exc`."""
    if getattr(exc, "slicewise_file", None) is not None:
        return exc  # already says where
    reason = exc.strerror or str(exc) or type(exc).__name__
    try:
        if exc.errno is None:
            new = type(exc)(f"{reason} ({doing} {path}, in dataset {dataset})")
        else:
            new = OSError(exc.errno, f"{reason} ({doing} into dataset {dataset})", path)
        new.slicewise_file = path
    except Exception:  # an OSError subclass with its own constructor: keep it as it is
        return exc
    return new


def symlink_error(path: str, root: str) -> CorruptionError:
    return CorruptionError(
        f"{path} is a symbolic link inside the dataset {root}: slicewise refuses links in a "
        "dataset (one could make it read another dataset's files, or write outside this "
        "one; FORMAT.md §7). Replace the link by the file or folder it points to.",
        path,
    )


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Keys whose every component was seen to be no link, per storage (reads ask per row)
MAX_CHECKED_KEYS = 65536


class LocalStorage(Storage):
    """A local directory through direct os calls.

    No symbolic links inside the dataset (FORMAT.md §7): every component of a key's path
    below the root is checked with `lstat` before the key is read or written (folders and
    keys once per storage object: dataset files are immutable), the storage's own opens
    add O_NOFOLLOW, and new folders are made one component at a time, never through a
    link. The root itself (and the path above it) may be a link."""

    deferred_sync = True  # put(sync=False) + sync_file() is cheaper than fsync in put
    touch_refreshes = True  # touch_all sets mtimes (utime)

    def __init__(self, root: str, direct_io: bool | None = None):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root
        self._made_dirs: set[str] = set()
        self._real_dirs: set[str] = set()  # folders below the root seen to be no link
        self._checked: set[str] = set()  # keys seen to be no link, nor under one
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

    def _checked_path(self, key: str, final: bool = True) -> str:
        """The path of `key`, after checking that no folder on the way below the root (and,
        with `final`, not the file itself) is a symbolic link; CorruptionError naming it
        otherwise. A component that does not exist ends the check (the caller's open then
        fails as it should). Checked folders and keys are remembered."""
        path = self._path(key)
        if not key or key in self._checked:
            return path
        parts = key.split("/")
        probe = self.root
        for depth, part in enumerate(parts):
            probe = os.path.join(probe, part)
            is_last = depth == len(parts) - 1
            if is_last and not final:
                return path
            rel = "/".join(parts[: depth + 1])
            if not is_last and rel in self._real_dirs:
                continue
            try:
                mode = os.lstat(probe).st_mode
            except FileNotFoundError:
                return path
            except NotADirectoryError:
                return path
            if stat.S_ISLNK(mode):
                raise symlink_error(probe, self.root)
            if not is_last and stat.S_ISDIR(mode):
                self._real_dirs.add(rel)
        if len(self._checked) >= MAX_CHECKED_KEYS:
            self._checked.clear()
        self._checked.add(key)
        return path

    def _open(self, key: str, flags: int, mode: int = 0o644, final: bool = True) -> int:
        """os.open of `key` with O_NOFOLLOW, its folders checked (`_checked_path`)."""
        path = self._checked_path(key, final=final)
        try:
            return os.open(path, flags | _NOFOLLOW, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP and _NOFOLLOW:
                raise symlink_error(path, self.root) from None
            raise

    def local_path(self, key: str) -> str | None:
        return self._checked_path(key)

    def full_path(self, key: str) -> str:
        return self._path(key)

    def _ensure_parent(self, path: str) -> None:
        """Make the folders of `path` below the root one at a time, never through a link
        (a linked `chunks/` would send new files out of the dataset), and make each new
        folder's own entry durable (or its files vanish with it on power loss)."""
        parent = os.path.dirname(path)
        if parent in self._made_dirs:
            return
        if not os.path.isdir(self.root):
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as exc:
                raise storage_error(exc, self.root, self.root, "creating") from exc
        rel = os.path.relpath(parent, self.root)
        probe = self.root
        for part in [] if rel == "." else rel.split(os.sep):
            probe = os.path.join(probe, part)
            try:
                mode = os.lstat(probe).st_mode
            except FileNotFoundError:
                try:
                    os.mkdir(probe)
                except FileExistsError:
                    mode = os.lstat(probe).st_mode  # another writer made it meanwhile
                except OSError as exc:
                    raise storage_error(exc, probe, self.root, "creating") from exc
                else:
                    _fsync_dir(os.path.dirname(probe))
                    continue
            if stat.S_ISLNK(mode):
                raise symlink_error(probe, self.root)
            if not stat.S_ISDIR(mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", probe)
        self._made_dirs.add(parent)

    def get(self, key: str) -> bytes:
        fd = self._open(key, os.O_RDONLY)
        with open(fd, "rb", closefd=True) as f:
            return f.read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        fd = self._open(key, os.O_RDONLY)
        try:
            return os.pread(fd, length, start)
        finally:
            os.close(fd)

    def size(self, key: str) -> int:
        return self._lstat(key).st_size

    def _lstat(self, key: str) -> os.stat_result:
        path = self._checked_path(key, final=False)
        result = os.lstat(path)
        if stat.S_ISLNK(result.st_mode):
            raise symlink_error(path, self.root)
        return result

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
            pending.complete(sync)  # its errors name the file (storage_error)
            return
        path = self._path(key)
        self._ensure_parent(path)
        try:
            fd = self._open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, final=False)
        except OSError as exc:
            raise storage_error(exc, path, self.root) from exc
        try:
            _write_all(fd, parts)
            if sync:
                _datasync(fd)
        except OSError as exc:
            # a fresh key nobody references yet (module docstring): give the space back
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise storage_error(exc, path, self.root) from exc
        finally:
            os.close(fd)

    def sync_file(self, key: str) -> None:
        fd = self._open(key, os.O_RDONLY)
        try:
            _wait_for_writer(fd)
            _datasync(fd)
        except OSError as exc:
            raise storage_error(exc, self._path(key), self.root, "flushing") from exc
        finally:
            os.close(fd)

    def written_size(self, key: str) -> int:
        fd = self._open(key, os.O_RDONLY)
        try:
            _wait_for_writer(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def touch_all(self, keys: list[str]) -> list[str]:
        missing = []
        for key in keys:
            path = self._checked_path(key, final=False)
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    raise symlink_error(path, self.root)
                os.utime(path)
            except FileNotFoundError:
                missing.append(key)
            except OSError as exc:
                raise storage_error(exc, path, self.root, "refreshing the mtime of") from exc
        return missing

    def set_if_not_exists(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        self._ensure_parent(path)
        tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}")
        try:
            self.put_tmp(tmp, data)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a full disk: leave no partial temporary
                os.unlink(tmp)
            raise storage_error(exc, path, self.root) from exc
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:  # file systems without hard links: O_EXCL + rename fallback
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise storage_error(exc, path, self.root) from exc
            try:
                return self._create_exclusive_fallback(path, data)
            except OSError as exc2:
                raise storage_error(exc2, path, self.root) from exc2
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        _fsync_dir(os.path.dirname(path))
        return True

    def put_tmp(self, tmp: str, data: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        try:
            _write_all(fd, [data])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_exclusive_fallback(self, path: str, data: bytes) -> bool:
        # O_EXCL claims the name; a crash before the fsync leaves a short manifest that
        # readers report as CorruptionError (documented limitation of link-less file systems).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
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
        """Files under `prefix`. A linked folder below the prefix is not entered (os.walk
        does not follow links); a linked `prefix` itself, or a folder on the way to it, is
        refused. Linked files are listed (reading them is refused)."""
        prefix = prefix.strip("/")
        base = self._checked_path(prefix) if prefix else self.root
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
        # unlink never follows a link at the end; the folders on the way must be ours
        path = self._checked_path(key, final=False)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return os.path.lexists(self._checked_path(key, final=False))

    def mtime(self, key: str) -> float | None:
        # a link's own mtime (gc may remove a stray link; its target is never touched)
        try:
            return os.lstat(self._checked_path(key, final=False)).st_mtime
        except FileNotFoundError:
            return None

    def sync(self, prefix: str) -> None:
        _fsync_dir(self._checked_path(prefix) if prefix else self.root)

    def delete_all(self) -> None:
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


def open_storage(url: str, storage_options: dict | None = None) -> Storage:
    """A Storage for a local path, file:// URL, or any fsspec URL."""
    if not isinstance(url, str):
        url = os.fspath(url)
    if url.startswith("file://"):
        return LocalStorage(url[len("file://") :])
    if "://" not in url:
        return LocalStorage(url)
    return FsspecStorage(url, storage_options)


# the fsspec backend lives in its own module; imported here, after Storage, for the names
# callers know (slicewise.format.storage.FsspecStorage)
from slicewise.format.storage_fsspec import FsspecStorage  # noqa: E402
from slicewise.format.syncqueue import SyncQueue, _sync_pool, short_files  # noqa: E402, F401
