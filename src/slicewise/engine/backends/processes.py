"""Process workers: one process and one duplex pipe per worker, watched by sentinel.

Per-worker pipes (not one shared queue) are what let the scheduler know which worker holds
which batch, so a death is noticed at once (the process sentinel becomes ready) and the
items it held are known. The progress array is one `RawArray` for the pool; each worker
writes its own four-int64 slot (see worker.py), which survives the worker's death.

Start method: forkserver on Linux, spawn elsewhere (see `default_start_method`). The
forkserver is told to preload slicewise's worker module (and cloudpickle), so each worker
is a fork of a warm, single-threaded server: a few ms, and no fork of a parent that runs
threads (the scheduler thread, the user's own).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.spawn
import os
import pickle
import sys
import threading
from collections import deque
from typing import Any

import cloudpickle

from slicewise.engine import shm
from slicewise.engine.backends.base import ArgumentsNotPicklable, Backend, Worker
from slicewise.engine.cpu import cpu_count
from slicewise.engine.worker import (
    FUNCTION_CACHE_SIZE,
    SLOT_WIDTH,
    ByReference,
    process_main,
    read_progress,
)

PIPE_SAFE_BYTES = 32 * 1024  # a message this small never blocks on a full pipe
MAX_RESULT_CACHE_BYTES = 1 << 30  # given-back result segments kept for reuse, per worker
FORKSERVER_PRELOAD = ["slicewise.engine.worker"]


def default_start_method() -> str:
    """forkserver on Linux: as fast as fork once warm, and safe with threads. spawn elsewhere
    (macOS's fork is unsafe with system frameworks; Windows has only spawn)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "forkserver" in methods:
        return "forkserver"
    return "spawn"


_extra_preload: list[str] = []  # preload_in_forkserver's, for a server not started yet


def preload_in_forkserver(modules: Any) -> None:
    """Ask a forkserver that has not started yet to import `modules` too, so every worker
    forked from it has them. For callers that know what their workers will run (an eval,
    an ingest) and start the pool early: the server imports them once, in the background,
    instead of each worker on its first task. No effect once the server runs."""
    for name in modules:
        if name not in _extra_preload:
            _extra_preload.append(name)


def _configure_forkserver() -> None:
    """Preload our worker module in the forkserver, and not the user's `__main__`: a
    script without an `if __name__ == "__main__"` guard would otherwise run again inside
    the server. numpy is not preloaded by default: the server would import it (~0.1 s)
    before the first worker could start; workers that need it import it in parallel
    instead (preload_in_forkserver asks for more, where the caller knows it is needed)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is not None:
        return  # already running: its preload list no longer matters
    wanted = [m for m in getattr(server, "_preload_modules", []) if m != "__main__"]
    for name in [*FORKSERVER_PRELOAD, *_extra_preload]:
        if name not in wanted:
            wanted.append(name)
    multiprocessing.forkserver.set_forkserver_preload(wanted)


# Workers never import the user's __main__ module (functions and classes from it travel
# by value through cloudpickle). multiprocessing would re-run the main script in every
# spawned or forkserver child, which breaks scripts without a `__main__` guard (seed
# 003's code) and costs start-up time. The hook below drops the two "init main" entries
# from the preparation data, only for processes this module starts (a thread-local
# flag); every other use of multiprocessing is untouched. loky does the same with its
# own copy of multiprocessing's spawn module.
_starting = threading.local()


def _install_preparation_hook() -> None:
    current = multiprocessing.spawn.get_preparation_data
    if getattr(current, "_slicewise_hook", False):
        return

    def get_preparation_data(name, *args, **kwargs):
        data = current(name, *args, **kwargs)
        if getattr(_starting, "worker", False):
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
        return data

    get_preparation_data._slicewise_hook = True  # type: ignore[attr-defined]
    get_preparation_data.__wrapped__ = current  # type: ignore[attr-defined]
    multiprocessing.spawn.get_preparation_data = get_preparation_data


def pickle_function(fn: Any) -> bytes:
    """The function as the worker will load it: by value (cloudpickle: lambdas, closures,
    functions from `__main__` or a notebook), and when that fails, by reference as the
    stdlib pools send it (a module-level function whose globals hold a lock, a bound method
    of an object whose `__getstate__` drops one). A reference into `__main__` carries the
    main script's path: the worker imports it as `__mp_main__`, as multiprocessing's spawn
    does, the first time it needs it."""
    try:
        return cloudpickle.dumps(fn, protocol=5)
    except Exception as exc:
        by_value = exc
    try:
        data = pickle.dumps(fn, protocol=5)
    except Exception:
        raise pickle.PicklingError(
            f"cannot send the function {fn!r} to worker processes: {by_value}"
        ) from by_value
    main_path = None
    if b"__main__" in data:
        main_path = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_path is None:
            raise pickle.PicklingError(
                f"cannot send the function {fn!r} to worker processes: {by_value}; "
                "by reference it lives in an interactive __main__ that workers cannot import"
            ) from by_value
        main_path = os.path.abspath(main_path)
    return cloudpickle.dumps(ByReference(data, main_path), protocol=5)


def result_cache_bytes(workers: int) -> int:
    """How many bytes of given-back result segments each worker may keep for reuse: a
    quarter of /dev/shm shared by the workers, at most MAX_RESULT_CACHE_BYTES. Big enough
    that a call's results (200 x 4 MiB here) are all rewritten in place by the next call;
    small enough that a small /dev/shm (64 MB in a default container) is not filled by
    memory kept only for speed. Both sides let go of it when the pool is idle."""
    try:
        stats = os.statvfs(shm.SHM_DIR)
        shm_bytes = stats.f_blocks * stats.f_frsize
    except OSError:
        return 256 << 20
    return max(0, min(MAX_RESULT_CACHE_BYTES, shm_bytes // (4 * max(1, workers))))


class ReturnChannel:
    """Names of result segments whose last view died in the parent, on their way back to
    the worker that wrote them (in its next batch header). `give_back` runs from whatever
    thread drops the last array. At most `cache_bytes` wait; beyond that, once the worker
    is gone, or when the pool goes idle (`release`), names are unlinked instead, so an
    idle pool holds no result memory."""

    def __init__(self, cache_bytes: int) -> None:
        self._names: deque[tuple[str, int]] = deque()
        self._bytes = 0
        self._cache_bytes = cache_bytes
        self._closed = False

    def give_back(self, name: str, size: int) -> None:
        if self._closed or self._bytes + size > self._cache_bytes:
            shm.unlink(name)
        else:
            self._names.append((name, size))
            self._bytes += size

    def drain(self) -> list[str]:
        names = []
        while self._names:
            name, size = self._names.popleft()
            self._bytes -= size
            names.append(name)
        return names

    def release(self) -> None:
        for name in self.drain():
            shm.unlink(name)

    def close(self) -> None:
        self._closed = True
        self.release()


class ProcessWorker(Worker):
    def __init__(self, slot: int, process, conn, progress_view, prefix: str,
                 cache_bytes: int) -> None:
        super().__init__(slot)
        self.process = process
        self.conn = conn
        self.pid = process.pid
        self.sentinel = process.sentinel
        self._progress = progress_view
        self._segment_prefix = prefix
        self._known_functions: dict[bytes, None] = {}
        self._unsent: deque[tuple[bytes, bytes]] = deque()
        self._sent_unfinished = 0
        self._channel_closed = False
        # big arguments in shared memory, by batch seq: the worker unlinks them when it
        # maps them; these are unlinked here if it never got that far
        self._input_segments: dict[int, shm.Segments] = {}
        self._returns = ReturnChannel(cache_bytes)

    def send(self, batch) -> None:
        job = batch.job
        token, fn_bytes = job.payload
        try:
            payload, segments = shm.dumps(batch.items, self._segment_prefix)
        except Exception as exc:
            raise ArgumentsNotPicklable(exc) from exc
        fn_part = None
        if token not in self._known_functions:
            fn_part = fn_bytes
            self._known_functions[token] = None
            if len(self._known_functions) > FUNCTION_CACHE_SIZE:
                del self._known_functions[next(iter(self._known_functions))]
        timed = job.timeout is not None
        given_back = self._returns.drain()
        header = pickle.dumps(
            (batch.seq, token, fn_part, job.mode, timed, batch.stride, segments, given_back),
            protocol=5,
        )
        if segments:
            self._input_segments[batch.seq] = segments
        self._unsent.append((header, payload))
        self.flush()

    def flush(self) -> None:
        while self._unsent:
            header, payload = self._unsent[0]
            # never block on a full pipe while the worker may be blocked sending results
            if self._sent_unfinished and len(header) + len(payload) > PIPE_SAFE_BYTES:
                return
            self._unsent.popleft()
            try:
                self.conn.send_bytes(header)
                self.conn.send_bytes(payload)
            except OSError:
                self._channel_closed = True  # it died: the sentinel tells the scheduler
                return
            self._sent_unfinished += 1

    def waitables(self) -> list:
        return [self.conn, self.sentinel] if not self._channel_closed else [self.sentinel]

    def receive(self) -> list[tuple]:
        events: list[tuple] = []
        while not self._channel_closed:
            try:
                if not self.conn.poll():
                    break
                message = pickle.loads(self.conn.recv_bytes())
                if message[0] == "done":
                    body = self.conn.recv_bytes()
            except (EOFError, OSError):
                self._channel_closed = True
                break
            if message[0] == "done":
                _, seq, seconds, segments, failures = message
                self._sent_unfinished -= 1
                self._input_segments.pop(seq, None)
                try:
                    values = shm.loads(body, segments, self._returns.give_back)
                except Exception as exc:
                    events.append(("undecodable", seq, exc))
                else:
                    events.append(("done", seq, seconds, values, failures))
                del body
            else:
                if message[0] == "bad":
                    self._sent_unfinished -= 1
                    shm.discard(self._input_segments.pop(message[1], []))
                    if message[2] == "unpickling_function":
                        self._known_functions.clear()  # send it again next time
                events.append(message)
        return events

    def release_idle(self) -> None:
        self._returns.release()

    def progress(self) -> tuple[int, int, int, int]:
        return read_progress(self._progress)

    def has_exited(self) -> bool:
        if self.exitcode is not None:
            return True
        code = self.process.exitcode
        if code is None and self._channel_closed:
            self.process.join(1.0)  # the pipe closed: it is exiting now
            code = self.process.exitcode
        if code is not None:
            self.exitcode = code
            return True
        return False

    def kill(self) -> None:
        try:
            self.process.kill()  # SIGKILL (TerminateProcess on Windows)
        except (ProcessLookupError, PermissionError, ValueError, AttributeError):
            pass

    def stop(self) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass

    def reap(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join(2.0)
        self.exitcode = self.process.exitcode
        for segments in self._input_segments.values():
            shm.discard(segments)
        self._input_segments.clear()
        self._returns.close()
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            self.process.close()
        except ValueError:
            pass


class ProcessBackend(Backend):
    name = "processes"

    def __init__(self, workers: int, **options) -> None:
        super().__init__(workers, **options)
        method = self.start_method or default_start_method()
        if method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"unknown start_method {method!r}; this platform offers "
                f"{multiprocessing.get_all_start_methods()}"
            )
        self.start_method = method
        if method == "forkserver":
            _configure_forkserver()
        _install_preparation_hook()
        self.context = multiprocessing.get_context(method)
        self.prefix = shm.new_prefix()
        shm.raise_open_file_limit()
        self._progress_array = self.context.RawArray("q", SLOT_WIDTH * max(1, workers))
        self._progress_view = memoryview(self._progress_array).cast("B").cast("q")
        initializer = None
        if self.initializer is not None:
            initializer = cloudpickle.dumps((self.initializer, self.initargs), protocol=5)
        # id(fn) -> [fn, payload, unfinished submits, shared BatchSizer]: see prepare()
        self._bursts: dict[int, list] = {}
        self._burst_lock = threading.Lock()
        self._config = {
            "parent_pid": os.getpid(),
            "prefix": self.prefix,
            "initializer": initializer,
            "result_cache_bytes": result_cache_bytes(workers),
            # each worker's share of the cores for native thread pools (worker.py)
            "native_threads": max(1, cpu_count() // max(1, workers)),
        }

    def prepare(self, job) -> None:
        """Cloudpickle the function once per call. A burst of `submit`s of one function
        shares one pickle while any of them is unfinished; a later call pickles again, so
        it sees the function's globals as they are then (a notebook user who changed one)."""
        fn = job.fn
        if job.future is not None:
            with self._burst_lock:
                entry = self._bursts.get(id(fn))
                if entry is not None and entry[0] is fn:
                    entry[2] += 1
                    job.payload = entry[1]
                    job.sizer = entry[3]  # what earlier calls measured: enables prefetch
                    job.before_resolve.append(self._burst_call_done)
                    return
        fn_bytes = pickle_function(fn)
        job.payload = (hashlib.blake2b(fn_bytes, digest_size=16).digest(), fn_bytes)
        if job.future is not None:
            with self._burst_lock:
                self._bursts[id(fn)] = [fn, job.payload, 1, job.sizer]
            job.before_resolve.append(self._burst_call_done)

    def _burst_call_done(self, job) -> None:
        with self._burst_lock:
            entry = self._bursts.get(id(job.fn))
            if entry is not None and entry[0] is job.fn:
                entry[2] -= 1
                if entry[2] <= 0:
                    del self._bursts[id(job.fn)]

    def start_worker(self, slot: int) -> ProcessWorker:
        parent_end, child_end = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=process_main,
            args=(child_end, self._progress_array, slot, self._config),
            name=f"slicewise-worker-{slot}",
            # not daemonic, so a worker may start a pool of its own (multiprocessing
            # forbids children of daemons); no orphans anyway: the atexit hook
            # terminates every pool and workers exit when their parent is gone
            daemon=False,
        )
        start = slot * SLOT_WIDTH
        view = self._progress_view[start : start + SLOT_WIDTH]
        view[0] = view[1] = view[2] = view[3] = 0
        _starting.worker = True
        try:
            process.start()
        finally:
            _starting.worker = False
        child_end.close()
        return ProcessWorker(slot, process, parent_end, view, f"{self.prefix}-in",
                             self._config["result_cache_bytes"])

    def worker_lost(self, worker: Worker) -> None:
        shm.unlink_prefix(f"{self.prefix}-{worker.pid}-")  # results it wrote but never sent
        shm.unlink_prefix(shm.shared_array_prefix(worker.pid))

    def close(self) -> None:
        shm.unlink_prefix(self.prefix + "-")
