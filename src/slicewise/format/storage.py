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
    (local disks, `deferred_sync`) the caller flushes later with `sync_file(key)`: writers
    do that on a helper thread and wait for it before they hand out a receipt. A crash
    during `put` may leave a partial file under `key` on local disks: callers only `put`
    keys nobody references yet (fresh uuids), so a partial file is an unreferenced leftover.
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

import errno
import os
import threading
import uuid
from abc import ABC, abstractmethod


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

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root
        self._made_dirs: set[str] = set()

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

    def put(self, key: str, data: bytes | memoryview | list, sync: bool = True) -> None:
        path = self._path(key)
        self._ensure_parent(path)
        parts = data if isinstance(data, list) else [data]
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
            _datasync(fd)
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


class SyncQueue:
    """Makes files written with `put(sync=False)` durable on helper threads, so the disk
    flushes them while the caller goes on (fdatasync releases the GIL). Each key is synced
    once, however often it is submitted. `wait()` returns when every file handed over is
    durable and re-raises the first failure: nothing that waits on it may publish a file
    whose flush failed.

    Writers use one thread (chunk k flushes while chunk k+1 is encoded); a committer uses
    a few (concurrent flushes of different files share the file system's journal commits).
    The threads belong to the process (`_sync_pool`), not to the queue.
    """

    def __init__(self, storage: Storage, threads: int = 1):
        self._storage = storage
        self._threads = threads
        self._pending: dict[str, object] = {}  # key -> Future of its sync_file

    def submit(self, key: str) -> None:
        if key not in self._pending:
            pool = _sync_pool(self._threads)
            self._pending[key] = pool.submit(self._storage.sync_file, key)

    @property
    def idle(self) -> bool:
        """True when no flush was handed over since the last wait()."""
        return not self._pending

    def wait(self, keys: list[str] | None = None) -> None:
        """Make `keys` (default: every key submitted) durable: submit those not handed
        over yet, wait for them, and re-raise the first failure."""
        if keys is not None:
            for key in keys:
                self.submit(key)
            futures = [self._pending.pop(key) for key in keys if key in self._pending]
        else:
            futures, self._pending = list(self._pending.values()), {}
        errors = []
        for future in futures:
            try:
                future.result()
            except BaseException as exc:  # wait for every flush, then report the first
                errors.append(exc)
        if errors:
            raise errors[0]

    def abandon(self) -> None:
        """Forget every pending flush (the files will never be published); the helper
        threads finish what they started."""
        self._pending = {}


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
