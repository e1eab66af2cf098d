"""SyncQueue: new files made durable on helper threads while their writer goes on
(FORMAT.md 3.1), and `short_files`, the check a commit makes of files written that way.
Storage-independent: it calls `Storage.begin_put`, `put`, `sync_file` and `written_size`.

On object stores (`upload`) the helper threads do the whole PUT: the writer copies the
chunk's bytes into one buffer and goes on encoding the next chunk while the last one
uploads. At most UPLOADS_IN_FLIGHT uploads per process hold such a copy (as many as there
are upload threads: none waits for a thread); the writer waits for one to finish before
it hands over another, so a writer never holds more than that many chunk copies beside
the chunk it fills.
"""

from __future__ import annotations

import os
import sys
import threading

from slicewise.format.storage import Storage

# Helper threads for SyncQueue, one pool per thread count and process, started on first
# use and kept: starting a thread costs milliseconds on a loaded machine, and writers come
# and go once per batch. A forked child starts its own (the parent's threads are not in it).
_sync_pools: dict[int, tuple[int, object]] = {}
_sync_pools_lock = threading.Lock()

# Object-store uploads (SyncQueue.upload) in flight per process, and the threads doing
# them: a chunk uploads while the next is encoded, and a batch's last chunks of two
# tensors go up side by side.
UPLOAD_THREADS = 2
UPLOADS_IN_FLIGHT = UPLOAD_THREADS
_upload_slots: tuple[int, threading.BoundedSemaphore] | None = None


# While an upload runs on a helper thread, the thread encoding the next chunk holds the
# GIL most of the time, and the HTTP client needs it back between each small step of
# sending a body (s3fs's event loop, botocore alike). At the default switch interval
# (5 ms) that made a 16 MB PUT to the moto server take 600 ms instead of 70 ms beside a
# busy thread; at 0.5 ms, 116 ms (the busy thread lost about 10% of its loops). So while
# any upload of this process is in flight, threads switch every UPLOAD_SWITCH_INTERVAL
# seconds; the interval the process had is put back when the last one ends.
UPLOAD_SWITCH_INTERVAL = 0.0005
_switching: list = [0, None]  # [uploads in flight, the interval to put back]


def _quick_switching(start: bool) -> None:
    with _sync_pools_lock:
        if start:
            if _switching[0] == 0:
                saved = sys.getswitchinterval()
                if saved > UPLOAD_SWITCH_INTERVAL:
                    _switching[1] = saved
                    sys.setswitchinterval(UPLOAD_SWITCH_INTERVAL)
            _switching[0] += 1
            return
        _switching[0] -= 1
        if _switching[0] == 0 and _switching[1] is not None:
            sys.setswitchinterval(_switching[1])
            _switching[1] = None


def _after_fork_in_child() -> None:
    """A child forked while a helper thread held the lock, or while uploads ran: a fresh
    lock (the holder does not exist here), and the interval the process had."""
    global _sync_pools_lock
    _sync_pools_lock = threading.Lock()
    if _switching[1] is not None:
        sys.setswitchinterval(_switching[1])
    _switching[:] = [0, None]  # the child's own uploads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _upload_slot() -> threading.BoundedSemaphore:
    """The process's semaphore of uploads in flight (a forked child makes its own)."""
    global _upload_slots
    pid = os.getpid()
    with _sync_pools_lock:
        if _upload_slots is None or _upload_slots[0] != pid:
            _upload_slots = (pid, threading.BoundedSemaphore(UPLOADS_IN_FLIGHT))
        return _upload_slots[1]


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

    def upload(self, key: str, parts: list) -> None:
        """Object stores: PUT the new object `key` on a helper thread (module docstring).
        `parts` are copied into one buffer first, so they may be reused when this returns;
        when UPLOADS_IN_FLIGHT uploads are already running, this waits for one to finish.
        A failed upload (its error names the object, as `Storage.put`'s do) is re-raised
        by `wait()` and `hand_over()`, which wait for every upload: nothing that lists a
        key may be handed out before its upload completed."""
        data = b"".join(parts)
        slot = _upload_slot()
        slot.acquire()
        try:
            future = _sync_pool(self._threads).submit(self._upload, key, data, slot)
        except BaseException:
            slot.release()
            raise
        self._pending[key] = future

    def _upload(self, key: str, data: bytes, slot: threading.BoundedSemaphore) -> None:
        _quick_switching(True)
        try:
            self._storage.put(key, data)
        finally:
            _quick_switching(False)
            slot.release()

    @property
    def idle(self) -> bool:
        """True when no file was handed over since the last wait()."""
        return not self._pending and not self._unflushed

    def wait(self, keys: list[str] | None = None) -> None:
        """Make `keys` (default: every key handed over) durable: submit those not handed
        over yet, wait for them, and re-raise the first failure. Uploads (`upload`) are
        waited for; a finished upload needs no flush."""
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
        it flushes). Everything else is waited for here, uploads (`upload`) included: a
        flush of a file written through the page cache is quick, and this writer must see
        its failure (another process's later fdatasync may not be told of it); an object
        is listed only once its PUT completed. Failures seen so far are re-raised. The
        queue is empty afterwards."""
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
