"""What runs inside a worker: the batch loop, and the process worker's main loop.

`run_batch` is shared by every backend: it calls the function on each item of a batch,
keeps going past a failing item (the exception and traceback are recorded for its
position), and writes the position of the item it is running into the worker's
*progress slot* before calling it. The slot is how the parent knows, without asking,
which item a worker is on: when a process worker dies, the item at the slot's position is
the one that killed it; when an item runs past its timeout, the slot says which and since
when.

The progress slot is four int64s, `[batch_seq, phase, position, started_ns]`. For a
process worker it lives in a shared array created by the parent (one slot per worker);
for a thread worker it is a plain list. `started_ns` is written only when the call has a
per-item timeout (CLOCK_MONOTONIC is the same clock in every process on the machine).

The process worker (`process_main`) speaks with the parent over its own duplex pipe:

    parent -> worker   header: pickle((seq, fn_token, fn_bytes | None, mode, timed, stride,
                                       segments, given_back))
                       body:   the batch's items, pickled by shm.dumps (big buffers in shm)
                       an empty header means: exit
    worker -> parent   ("ready", pid)                          once, after the initializer
                       ("init_failed", packed_failure)         the initializer raised; exit
                       ("done", seq, seconds, segments, failures)  + body: the results
                       ("bad", seq, stage, failure)            the batch could not be unpickled

Big results go into shared-memory segments the worker owns (shm.SegmentWriter); when the
parent's last view of one dies, its name comes back in a later header (`given_back`) and
the worker writes the next result into it. Functions arrive cloudpickled once per call:
the header carries the bytes only the first time a worker sees `fn_token`; the worker
keeps the unpickled function (the last FUNCTION_CACHE_SIZE of them). Once a
worker sends big results it keeps its segments mapped and its heap warm (`WarmHeap`) for
the next batch, and lets both go after IDLE_RELEASE_SECONDS without work.
The worker ignores SIGINT (the parent decides what Ctrl-C means and kills it) and exits by
itself when the parent process goes away.

This module is preloaded by the forkserver, so it imports little: no numpy.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

import cloudpickle  # noqa: F401  (preloaded: every function arrives cloudpickled)

from slicewise.engine import shm
from slicewise.engine.errors import RemoteError

# call modes: how one item becomes a call
MODE_ONE = 0  # fn(item)
MODE_STAR = 1  # fn(*item)
MODE_CALL = 2  # fn(*args, **kwargs) with item = (args, kwargs)

# progress slot fields and phases
SEQ, PHASE, POS, STARTED = 0, 1, 2, 3
SLOT_WIDTH = 4
IDLE, UNPICKLING, RUNNING, PICKLING = 0, 1, 2, 3

PARENT_POLL_SECONDS = 0.2
IDLE_RELEASE_SECONDS = 2.0
FUNCTION_CACHE_SIZE = 16


# ---------------------------------------------------------------- failures on the wire


def pack_failure(pos: int, stage: str, exc: BaseException) -> tuple:
    """A failure as plain data: the exception pickled if it can be, and its traceback."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data: bytes | None = pickle.dumps(exc, protocol=5)
    except Exception:
        try:
            data = cloudpickle.dumps(exc, protocol=5)
        except Exception:
            data = None
    try:
        message = str(exc)
    except Exception:
        message = "<str() of the exception failed>"
    return (pos, stage, data, text, type(exc).__qualname__, message)


def unpack_exception(data: bytes | None, type_name: str, message: str) -> BaseException:
    if data is not None:
        try:
            exc = pickle.loads(data)
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    return RemoteError(f"{type_name}: {message}")


class ByReference:
    """A function the parent could only pickle by reference (see processes.pickle_function):
    unpickling it imports what the reference names, the main script first when it lives
    in `__main__` (as multiprocessing's spawn imports it, under the name `__mp_main__`)."""

    def __init__(self, data: bytes, main_path: str | None) -> None:
        self.data = data
        self.main_path = main_path

    def __reduce__(self):
        return (load_by_reference, (self.data, self.main_path))


def load_by_reference(data: bytes, main_path: str | None) -> Any:
    if main_path is not None and getattr(sys.modules.get("__mp_main__"), "__file__", None) != main_path:
        import multiprocessing.spawn

        multiprocessing.spawn.import_main_path(main_path)
    return pickle.loads(data)


# ---------------------------------------------------------------- the batch loop


def _caller(fn: Any, mode: int) -> Any:
    if mode == MODE_ONE:
        return fn
    if mode == MODE_STAR:
        return lambda item: fn(*item)
    return lambda item: fn(*item[0], **item[1])


def read_progress(slot: Any) -> tuple[int, int, int, int]:
    """(seq, phase, pos, started_ns) as one consistent snapshot of a worker's slot, read
    from another process or thread while the worker writes it. SEQ is read before and after
    the rest: if the worker moved to another batch in between, the snapshot says IDLE."""
    seq = slot[SEQ]
    phase, pos, started = slot[PHASE], slot[POS], slot[STARTED]
    if slot[SEQ] != seq:
        return seq, IDLE, 0, 0
    return seq, phase, pos, started


def run_batch(
    fn: Any, mode: int, items: list, slot: Any, timed: bool, stride: int = 1
) -> tuple[list, list[tuple], float]:
    """Call `fn` on every item. Returns (values, failures, seconds spent calling).
    A failed position holds None in `values` and a packed failure in `failures`.

    The slot's POS is written before each item, or, with `stride` > 1 (the parent asks
    for it when items take microseconds, where the write itself would cost ~30%), before
    each window of `stride` items: a death is then pinned to a window, which the parent
    re-runs one item at a time. With a timeout (`timed`) every item is stamped with its
    start time, STARTED before POS so the parent never pairs a new POS with an old time.
    """
    call = _caller(fn, mode)
    values: list = []
    failures: list[tuple] = []
    append = values.append
    clock = time.monotonic_ns
    count = len(items)
    # POS and STARTED belong to this batch before PHASE says RUNNING: the parent pairs a
    # RUNNING phase with whatever POS/STARTED hold, and the previous batch's stamp (maybe
    # from long ago, if the worker sat idle) would read as an item past its timeout
    slot[STARTED] = clock()
    slot[POS] = 0
    slot[PHASE] = RUNNING
    started = time.perf_counter()
    pos = 0
    while pos < count:
        try:
            if timed:
                for item in items[pos:]:
                    slot[STARTED] = clock()
                    slot[POS] = pos
                    append(call(item))
                    pos += 1
            elif stride <= 1:
                for item in items[pos:]:
                    slot[POS] = pos
                    append(call(item))
                    pos += 1
            else:
                while pos < count:
                    slot[POS] = pos
                    for item in items[pos : pos + stride]:
                        append(call(item))
                    pos = len(values)
        except KeyboardInterrupt:
            raise  # Ctrl-C in an in-process (serial) call stops the call, not the item
        except BaseException as exc:  # SystemExit from user code is a failed item too
            pos = len(values)  # one value per finished position: this one failed
            append(None)
            failures.append(pack_failure(pos, "call", exc))
            pos += 1
    seconds = time.perf_counter() - started
    slot[PHASE] = PICKLING
    return values, failures, seconds


# ---------------------------------------------------------------- a cluster's task

# per remote worker process (Dask or Ray): functions unpickled so far, and the pools whose
# initializer has run here. A remote process serves many tasks, of many calls and pools.
_remote_functions: OrderedDict[bytes, Any] = OrderedDict()
_remote_initialized: set[str] = set()
_remote_lock = threading.Lock()


def run_remote_batch(pool_token: str, init_bytes: bytes | None, token: bytes,
                     fn_bytes: bytes, mode: int, items: list, stride: int,
                     timeout: float | None = None, budget: float | None = None) -> tuple:
    """One batch as a task on a cluster worker (backends/cluster.py): the same batch loop
    as a process worker's, so failures come back packed the same way. A function that
    will not unpickle here fails every item of the batch at stage unpickling_function.
    With a per-item `timeout`, the task times its items itself (`run_timed_remote`); with
    a `budget` it may stop early (`run_budgeted`)."""
    with _remote_lock:
        if init_bytes is not None and pool_token not in _remote_initialized:
            initializer, initargs = pickle.loads(init_bytes)
            initializer(*initargs)
            _remote_initialized.add(pool_token)
        fn = _remote_functions.get(token)
        if fn is None:
            try:
                fn = pickle.loads(fn_bytes)
            except BaseException as exc:
                failures = [pack_failure(i, "unpickling_function", exc) for i in range(len(items))]
                return [None] * len(items), failures, 0.0
            _remote_functions[token] = fn
            if len(_remote_functions) > FUNCTION_CACHE_SIZE:
                _remote_functions.popitem(last=False)
    if timeout is not None:
        return run_timed_remote(fn, mode, items, timeout)
    if budget is not None:
        return run_budgeted(fn, mode, items, budget)
    slot = [0, IDLE, 0, 0]
    return run_batch(fn, mode, items, slot, False, stride)


def run_budgeted(fn: Any, mode: int, items: list, budget: float) -> tuple:
    """A call's first task on a cluster, holding more items than it may need to run
    (engine/batching.py): run them in windows of 1, 2, 4, ... items and stop once
    `budget` seconds have passed. The values (and failures) returned are those of the
    items run, a prefix of `items` at least one long; the parent runs the rest in batches
    sized by what this prefix measured. Trivial items thus take one task round trip, and
    a slow function's first task still comes back after about one item."""
    values: list = []
    failures: list[tuple] = []
    spent = 0.0
    started = time.perf_counter()
    pos, window = 0, 1
    while pos < len(items):
        part = items[pos : pos + window]
        got, failed, seconds = run_batch(fn, mode, part, [0, IDLE, 0, 0], False, 1)
        values.extend(got)
        failures.extend((offset + pos, *rest) for offset, *rest in failed)
        spent += seconds
        pos += len(part)
        if time.perf_counter() - started >= budget:
            break
        window *= 2
    return values, failures, spent


class ItemTimedOut(BaseException):
    """Raised asynchronously inside an item's thread that passed its timeout on a cluster
    worker (`run_timed_remote`), asking it to stop. A BaseException, so a function's own
    `except Exception` does not swallow it."""


TIMED_POLL_SECONDS = 0.05  # how often a timed cluster task looks at its item's clock


class _TimedRun:
    """One helper thread of `run_timed_remote`, running items from `start` on."""

    def __init__(self, start: int) -> None:
        self.current = start  # the item it is running (or about to)
        self.started_ns = time.monotonic_ns()
        self.abandoned = False
        self.finished = False
        self.thread: threading.Thread | None = None


def run_timed_remote(fn: Any, mode: int, items: list, timeout: float) -> tuple:
    """A cluster task's batch with a per-item timeout, reported as the processes backend
    reports it: the item past its timeout fails with a "timeout" failure at its position
    (the parent makes it a TimeoutError with the item's index; on_error decides the rest)
    and the other items run as usual.

    A task cannot kill its own worker process without losing its answer (Dask keeps a
    task's result on the worker that ran it, and re-runs a task whose worker died), so
    items run in a helper thread that this task thread watches. An item past its timeout:
    its thread is abandoned (whatever it returns later is dropped) and asked to stop with
    an asynchronous `ItemTimedOut`, which Python code gets at once and a C call (a sleep,
    a C extension's loop) when it returns; the rest of the batch goes on in a new thread.
    A thread that never returns keeps running in the worker process, as with the threads
    backend: the cost of an item that ignores its timeout is a thread, never the job."""
    import ctypes

    call = _caller(fn, mode)
    count = len(items)
    values: list = [None] * count
    failures: list[tuple] = []
    lock = threading.Lock()
    limit_ns = timeout * 1e9
    spent = [0.0]

    def run(state: _TimedRun) -> None:
        try:
            run_items(state)
        except ItemTimedOut:
            return  # abandoned: the watcher has reported its item

    def run_items(state: _TimedRun) -> None:
        pos = state.current
        while pos < count:
            with lock:
                if state.abandoned:
                    return
                state.current = pos
                state.started_ns = time.monotonic_ns()
            began = time.perf_counter()
            failure = None
            try:
                value = call(items[pos])
            except ItemTimedOut:
                raise
            except BaseException as exc:  # SystemExit from user code is a failed item too
                value, failure = None, pack_failure(pos, "call", exc)
            with lock:
                if state.abandoned:
                    return
                values[pos] = value
                if failure is not None:
                    failures.append(failure)
                spent[0] += time.perf_counter() - began
            pos += 1
        with lock:
            state.finished = True

    start = 0
    while start < count:
        state = _TimedRun(start)
        state.thread = threading.Thread(target=run, args=(state,), daemon=True,
                                        name="slicewise-timed-items")
        state.thread.start()
        while True:
            state.thread.join(TIMED_POLL_SECONDS)
            with lock:
                if state.finished:
                    start = count
                    break
                if time.monotonic_ns() - state.started_ns <= limit_ns:
                    continue
                state.abandoned = True
                pos = state.current
                failures.append((pos, "timeout", None, "", "TimeoutError", ""))
                # under the lock: the thread cannot have seen `abandoned` and ended yet,
                # so its id is still its own
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(state.thread.ident), ctypes.py_object(ItemTimedOut)
                )
            start = pos + 1
            break
    failures.sort(key=lambda failure: failure[0])
    return values, failures, spent[0]


# ---------------------------------------------------------------- the process worker


def parent_is_gone(parent_pid: int, first_ppid: int) -> bool:
    """Whether the pool's parent process has died: this process was re-parented, the pid
    is gone, or it is a zombie nobody has reaped yet (a killed parent whose own parent,
    a test harness say, has not waited for it: `kill(pid, 0)` still succeeds then)."""
    if os.getppid() != first_ppid:
        return True
    if os.name != "posix":  # on Windows os.kill(pid, 0) would kill it
        return False
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{parent_pid}/stat", "rb") as stat:
            # "pid (comm) S ...": the state follows the last ')' (comm may hold one)
            return stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def clean_up_after_parent(parent_pid: int, pool_prefix: str) -> None:
    """The parent died (kill -9, a crash): nobody else will ever unlink the pool's shared
    memory, so every worker that notices unlinks all of it, whoever created or held it:
    result segments of every worker (the dead parent was holding some), the arguments the
    parent wrote, this worker's and the parent's shared arrays. Segment creation stops
    first, so a result being written meanwhile cannot slip past the sweep."""
    shm.stop_creating()
    shm.unlink_prefix(pool_prefix + "-")
    shm.unlink_prefix(shm.shared_array_prefix(os.getpid()))
    shm.unlink_prefix(shm.shared_array_prefix(parent_pid))


def _watch_parent(parent_pid: int, pool_prefix: str, first_ppid: int) -> None:
    """Exit when the parent is gone, so a killed parent never leaves workers behind, nor
    shared memory (`clean_up_after_parent`)."""
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if parent_is_gone(parent_pid, first_ppid):
            clean_up_after_parent(parent_pid, pool_prefix)
            os._exit(0)


def _parent_died(parent_pid: int, first_ppid: int, wait: float = 2.0) -> bool:
    """The pipe broke without a stop message: wait briefly for the parent to be seen gone
    (a killed process closes its pipes a moment before it turns into a zombie)."""
    deadline = time.monotonic() + wait
    while not parent_is_gone(parent_pid, first_ppid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _dump_results(
    values: list, failures: list, writer: shm.SegmentWriter
) -> tuple[bytes, shm.Segments]:
    """Pickle the results; if that fails, find the items whose result will not pickle."""
    try:
        return shm.dumps(values, None, writer)
    except BaseException:
        pass
    failed = {f[0] for f in failures}
    for pos, value in enumerate(values):
        if pos in failed:
            continue
        try:
            shm.dumps(value, None)
        except BaseException as exc:
            values[pos] = None
            failures.append(pack_failure(pos, "pickling_result", exc))
    try:
        return shm.dumps(values, None, writer)
    except BaseException as exc:  # results that pickle alone but not together
        failures[:] = [pack_failure(pos, "pickling_result", exc) for pos in range(len(values))]
        return shm.dumps([None] * len(values), None)


class WarmHeap:
    """Keeps the memory a worker's function allocates for big results warm between items.

    glibc hands allocations from 128 KiB up to fresh mmap()s, and gives freed heap back
    at once: every 4 MiB array a function makes costs 1,024 page faults and zeroing
    (~2 ms), four times the cost of filling it. Once a worker sends big results (which
    is when it matters), `engage()` raises both thresholds, so the next batch's arrays
    reuse the previous batch's pages; `release()` (the worker is idle) trims the heap,
    so an idle worker holds no more memory than before. Only glibc has these knobs;
    elsewhere both are no-ops."""

    MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.engaged = False
        self._trim: Any = None

    def engage(self) -> None:
        if self.engaged:
            return
        self.engaged = True
        if not sys.platform.startswith("linux") or self.keep_bytes <= 0:
            return
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            mallopt, trim = libc.mallopt, libc.malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, ...)
            return
        m_trim_threshold, m_mmap_threshold = -1, -3
        if mallopt(m_mmap_threshold, self.MMAP_THRESHOLD_MAX) and mallopt(
            m_trim_threshold, min(self.keep_bytes, 1 << 30)
        ):
            self._trim = trim

    def release(self) -> None:
        if self._trim is not None:
            self._trim(0)


# Native libraries' thread pools (OpenBLAS, MKL, OpenMP, BLIS, Accelerate, numexpr) size
# themselves to every core of the machine when first loaded: N workers doing so would
# oversubscribe the CPU N-fold (loky limits them the same way). A worker sets its share in
# these variables before the user's code can load them; a variable the user set wins.
NATIVE_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def limit_native_threads(threads: int | None, environ: Any = os.environ) -> None:
    """Give native thread pools `threads` threads in this process, unless the variable
    is set already (None: leave them alone)."""
    if threads:
        for name in NATIVE_THREAD_VARIABLES:
            environ.setdefault(name, str(threads))


def process_main(conn, progress_array, slot_index: int, config: dict) -> None:
    """Entry point of a process worker (see the module docstring for the protocol)."""
    limit_native_threads(config.get("native_threads"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = os.getpid()
    prefix = f"{config['prefix']}-{pid}"
    first_ppid = os.getppid()
    threading.Thread(
        target=_watch_parent, args=(config["parent_pid"], config["prefix"], first_ppid),
        daemon=True,
        name="slicewise-parent-watch",
    ).start()
    start = slot_index * SLOT_WIDTH
    slot = memoryview(progress_array).cast("B").cast("q")[start : start + SLOT_WIDTH]

    if config.get("initializer") is not None:
        try:
            initializer, initargs = pickle.loads(config["initializer"])
            initializer(*initargs)
        except BaseException as exc:
            failure = pack_failure(-1, "initializer", exc)
            try:
                conn.send_bytes(pickle.dumps(("init_failed", failure)))
            finally:
                os._exit(1)
    conn.send_bytes(pickle.dumps(("ready", pid)))

    functions: OrderedDict[bytes, Any] = OrderedDict()
    writer = shm.SegmentWriter(prefix, config["result_cache_bytes"])
    heap = WarmHeap(config["result_cache_bytes"])
    warm = False  # holding memory only for speed: segments, mappings, a big free heap
    stopped = False  # the parent said stop (else the pipe broke: it may have died)
    while True:
        try:
            if warm and not conn.poll(IDLE_RELEASE_SECONDS):
                writer.close()  # idle: what was kept for reuse goes back to the system
                heap.release()
                warm = False
            header = conn.recv_bytes()
            if not header:
                stopped = True
                break
            body = conn.recv_bytes()
        except (EOFError, OSError):
            break
        seq, token, fn_bytes, mode, timed, stride, segments, given_back = pickle.loads(header)
        writer.take_back(given_back)
        slot[SEQ] = seq
        slot[PHASE] = UNPICKLING
        try:
            fn = functions.get(token)
            if fn is None:
                stage = "unpickling_function"
                if fn_bytes is None:  # it failed to unpickle here before
                    raise RuntimeError("the function could not be unpickled in this worker")
                fn = pickle.loads(fn_bytes)
                functions[token] = fn
                if len(functions) > FUNCTION_CACHE_SIZE:
                    functions.popitem(last=False)
            stage = "unpickling_args"
            items = shm.loads(body, segments)
        except BaseException as exc:
            shm.discard(segments)
            slot[PHASE] = IDLE
            message = ("bad", seq, stage, pack_failure(-1, stage, exc))
            try:
                conn.send_bytes(pickle.dumps(message))
            except (OSError, pickle.PicklingError):
                break
            continue
        del body
        values, failures, seconds = run_batch(fn, mode, items, slot, timed, stride)
        del items
        payload, result_segments = _dump_results(values, failures, writer)
        del values
        if result_segments:
            heap.engage()
            warm = True
        try:
            conn.send_bytes(pickle.dumps(("done", seq, seconds, result_segments, failures)))
            conn.send_bytes(payload)
        except (OSError, pickle.PicklingError):
            break
        slot[PHASE] = IDLE
    if not stopped and _parent_died(config["parent_pid"], first_ppid):
        clean_up_after_parent(config["parent_pid"], config["prefix"])
        os._exit(0)
    # result segments waiting for reuse, and shared arrays this process created, die with
    # it (segments the parent still maps are unlinked by the parent when it drops them)
    writer.close()
    shm.unlink_prefix(shm.shared_array_prefix(pid))
    sys.stdout.flush()
    os._exit(0)
