"""`Pool`: a drop-in for `multiprocessing.Pool` that is also a real
`concurrent.futures.Executor`, over any backend."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

from slicewise.engine.backends.base import CLUSTER_BACKENDS
from slicewise.engine.cpu import cpu_count
from slicewise.engine.errors import Failure, PoolClosedError
from slicewise.engine.jobs import Job, ResultList
from slicewise.engine.scheduler import Scheduler
from slicewise.engine.timeline import Timeline
from slicewise.engine.worker import MODE_CALL, MODE_ONE, MODE_STAR

MapOptions = dict[str, Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ResultIterator(Iterator):
    """What `imap` and `imap_unordered` return. `.errors` lists the failed items seen so
    far (on_error="skip"/"collect"); `close()` (or dropping it) cancels the rest;
    `next(timeout)` is multiprocessing's IMapIterator.next."""

    def __init__(self, pool: Pool, job: Job) -> None:
        self._pool = pool
        self._job = job
        self._taken = 0  # results handed over by the job so far (skipped ones included)
        self._values: Iterator = iter(())  # the rest of the segment being handed out

    @property
    def errors(self) -> list[Failure]:
        with self._job.lock:
            return list(self._job.errors)

    @property
    def report(self) -> Timeline | None:
        """With report=True: the timeline of the batches settled so far (all of them once
        the iterator is exhausted); None otherwise."""
        if self._job.recorder is None:
            return None
        return self._pool._timeline(self._job)

    def __iter__(self) -> ResultIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; multiprocessing.TimeoutError if none is ready within `timeout`
        seconds (the iterator stays usable: call again to keep waiting)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for value in self._values:
                return value
            while True:
                segment = self._job.next_segment(self._taken, deadline)
                if segment is None:
                    raise StopIteration
                self._taken += len(segment.values)
                self._values = iter(self._job.segment_values(segment))
                for value in self._values:
                    return value
        except KeyboardInterrupt:
            self._pool.terminate()
            raise

    __next__ = next

    def close(self) -> None:
        self._job.cancel()
        self._pool._scheduler.wake()

    def wait_idle(self, timeout: float) -> bool:
        """After close(): wait until no batch of this call is still running in a worker
        (its result is dropped), so nothing the call's function does happens after this
        returns; False if `timeout` seconds passed first."""
        return self._job.wait_idle(timeout)

    def __del__(self) -> None:
        try:
            if not self._job.done:
                self.close()
        except Exception:
            pass


class _PoolFuture(Future):
    """A Future that refuses to wait inside its own pool's scheduler thread (a callback
    that waits there would wait forever: that thread is the one that would settle it)."""

    def __init__(self, settling_thread: threading.Thread | None) -> None:
        super().__init__()
        self._settling_thread = settling_thread

    def _refuse_self_wait(self) -> None:
        if (
            self._settling_thread is not None
            and threading.current_thread() is self._settling_thread
            and not self.done()
        ):
            raise RuntimeError(
                "a callback waited for a future of its own pool, which would deadlock: "
                "submit the work from the callback and collect it elsewhere"
            )

    def result(self, timeout: float | None = None) -> Any:
        self._refuse_self_wait()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._refuse_self_wait()
        return super().exception(timeout)


class AsyncResult:
    """multiprocessing's AsyncResult: `get(timeout)`, `wait`, `ready`, `successful`."""

    def __init__(self, job: Job, single: bool, callback=None, error_callback=None) -> None:
        self._job = job
        self._single = single
        self._outcome: tuple[bool, Any] | None = None
        self._outcome_lock = threading.Lock()
        if callback is not None or error_callback is not None:
            def notify(_job: Job) -> None:
                ok, value = self._resolve()
                if ok and callback is not None:
                    callback(value)
                elif not ok and error_callback is not None:
                    error_callback(value)

            job.add_done_callback(notify)

    def _resolve(self) -> tuple[bool, Any]:
        with self._outcome_lock:
            if self._outcome is None:
                job = self._job
                if self._single:
                    future = job.future
                    exc = future.exception() if not future.cancelled() else PoolClosedError(
                        "cancelled"
                    )
                    self._outcome = (False, exc) if exc is not None else (True, future.result())
                else:
                    try:
                        self._outcome = (True, job.result_list())
                    except BaseException as exc:
                        self._outcome = (False, exc)
            return self._outcome

    def ready(self) -> bool:
        return self._job.done

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._resolve()[0]

    def wait(self, timeout: float | None = None) -> None:
        self._job.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        if not self._job.wait(timeout):
            raise multiprocessing.TimeoutError(f"no result within {timeout} s")
        ok, value = self._resolve()
        if ok:
            return value
        raise value


class Pool(Executor):
    """A pool of workers. `sw.Pool()` uses every usable CPU with worker processes.

    Also accepts the stdlib constructors' arguments, so existing code changes one name:
    `multiprocessing.Pool(processes, initializer, initargs, maxtasksperchild, context)`
    and `ProcessPoolExecutor(max_workers, mp_context, initializer, initargs,
    max_tasks_per_child=...)`.

    Args:
        workers: how many workers (default: `cpu_count()`; a cluster backend counts its
            cluster's CPUs; always 1 for "serial").
        backend: "processes", "threads", "serial", "dask" or "ray". Anything else in
            this position is read as multiprocessing.Pool's positional `initializer`
            (or a multiprocessing context).
        *stdlib_args: the rest of multiprocessing.Pool's positional arguments
            (initargs, maxtasksperchild, context); only after a non-string `backend`.
        initializer: called in each worker as it starts (`initializer(*initargs)`).
        initargs: the initializer's arguments.
        max_tasks_per_worker: replace a worker after this many batches.
        start_method: "forkserver" (the default on Linux), "spawn" or "fork".
        processes: multiprocessing.Pool's name for `workers`.
        maxtasksperchild: multiprocessing.Pool's name for `max_tasks_per_worker`.
        context: a multiprocessing context (its start method is used).
        max_workers: ProcessPoolExecutor's name for `workers`.
        mp_context: ProcessPoolExecutor's name for `context`.
        max_tasks_per_child: ProcessPoolExecutor's name for `max_tasks_per_worker`.
        client: backend="dask" only: a distributed Client or a scheduler address.

    Raises:
        ValueError: `workers` is not an int >= 1, an unknown backend, `client` without
            backend="dask", or `max_tasks_per_worker` < 1.
        TypeError: too many positional arguments, or options given positionally after
            a backend name.

    Example:
        >>> with sw.Pool(2, backend="threads") as pool:
        ...     pool.map(abs, [-1, -2])
        [1, 2]
    """

    def __init__(
        self,
        workers: int | None = None,
        backend: Any = "processes",
        *stdlib_args: Any,
        initializer: Callable | None = None,
        initargs: Iterable = (),
        max_tasks_per_worker: int | None = None,
        start_method: str | None = None,
        processes: int | None = None,
        maxtasksperchild: int | None = None,
        context: Any = None,
        max_workers: int | None = None,
        mp_context: Any = None,
        max_tasks_per_child: int | None = None,
        client: Any = None,
    ) -> None:
        # stdlib positional forms: Pool(4, init, args, maxtasks, ctx) and
        # ProcessPoolExecutor(4, ctx, init, args)
        if not isinstance(backend, str):
            positional = [backend, *stdlib_args]
            backend = "processes"
            if positional and isinstance(positional[0], multiprocessing.context.BaseContext):
                context = positional.pop(0)
            names = ["initializer", "initargs", "maxtasksperchild", "context"]
            given = dict(zip(names, positional, strict=False))
            if len(positional) > len(names):
                raise TypeError(f"too many positional arguments: {positional!r}")
            initializer = given.get("initializer", initializer)
            initargs = given.get("initargs", initargs)
            maxtasksperchild = given.get("maxtasksperchild", maxtasksperchild)
            context = given.get("context", context)
        elif stdlib_args:
            raise TypeError(
                "Pool(workers, backend, ...) takes its other options by keyword: "
                "initializer=, initargs=, max_tasks_per_worker=, start_method="
            )
        workers = next((w for w in (workers, processes, max_workers) if w is not None), None)
        max_tasks = next(
            (m for m in (max_tasks_per_worker, maxtasksperchild, max_tasks_per_child) if m),
            None,
        )
        context = context or mp_context
        if context is not None and start_method is None:
            start_method = context.get_start_method()
        if backend == "serial":
            workers = 1
        elif workers is None and backend not in CLUSTER_BACKENDS:
            workers = cpu_count()  # a cluster backend counts its cluster's CPUs
        if workers is not None and (not _is_int(workers) or workers < 1):
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        backend_options = {}
        if client is not None:
            if backend != "dask":
                raise ValueError("client= (a distributed Client or scheduler address) is "
                                 "for backend='dask'")
            backend_options["client"] = client
        self._scheduler = Scheduler(
            backend,
            workers,
            initializer=initializer,
            initargs=tuple(initargs or ()),
            max_tasks_per_worker=max_tasks,
            start_method=start_method,
            backend_options=backend_options,
        )
        self.workers = self._scheduler.workers
        self.backend = backend

    @property
    def start_method(self) -> str | None:
        """The start method of a process backend's workers ("forkserver", "spawn",
        "fork"); None for the other backends."""
        return getattr(self._scheduler.backend, "start_method", None)

    def __repr__(self) -> str:
        return f"<slicewise.Pool backend={self.backend!r} workers={self.workers} {self._scheduler.state}>"

    def __reduce__(self):
        raise TypeError("a Pool cannot be pickled or sent to a worker")

    # ------------------------------------------------------------ plumbing

    def _start(self, fn: Callable, iterable: Iterable, mode: int, options: MapOptions,
               stream: bool = False, future: Future | None = None) -> Job:
        if not callable(fn):
            raise TypeError(f"the function to map is not callable: {fn!r}")
        unknown = set(options) - {"chunksize", "ordered", "progress", "on_error", "retries",
                                  "timeout", "report"}
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; see help(slicewise.Pool.map)")
        job = Job(fn, iterable, mode, workers=self.workers, stream=stream, future=future,
                  **options)
        self._scheduler.submit(job)
        if job.pump is not None and not stream:
            job.wait()  # serial: futures and async results are finished when returned
        return job

    def _wait(self, job: Job) -> list:
        try:  # (job.result_list refuses a wait on this pool's own scheduler thread)
            values = job.result_list()
        except KeyboardInterrupt:
            self.terminate()
            raise
        finally:
            if job.recorder is not None:  # report=: the timeline, failed calls included
                timeline = self._timeline(job)
        if job.recorder is None:
            return values
        if not isinstance(values, ResultList):
            values = ResultList(values)
        values.report = timeline
        return values

    def _timeline(self, job: Job) -> Timeline:
        """report=True or a path: the call's Timeline (written to the path, if given)."""
        name = getattr(job.fn, "__qualname__", None) or type(job.fn).__name__
        timeline = job.recorder.timeline(title=f"map {name}", backend=str(self.backend),
                                         workers=self.workers)
        if isinstance(job.report, (str, os.PathLike)):
            timeline.save(job.report)
        return timeline

    @staticmethod
    def _map_arguments(iterables: tuple, chunksize: Any) -> tuple[Iterable, int, Any]:
        if not iterables:
            raise TypeError("map() needs an iterable of items")
        if len(iterables) == 2 and _is_int(iterables[1]):
            # multiprocessing.Pool.map(func, iterable, chunksize)
            return iterables[0], MODE_ONE, iterables[1]
        if len(iterables) == 1:
            return iterables[0], MODE_ONE, chunksize
        return zip(*iterables, strict=False), MODE_STAR, chunksize  # Executor.map(fn, *iterables)

    # ------------------------------------------------------------ map family

    def map(self, fn: Callable, *iterables: Iterable, chunksize: int | str = "auto",
            ordered: bool = True, progress: bool | str = False, on_error: str = "raise",
            retries: int = 0, timeout: float | None = None,
            report: bool | str | os.PathLike | None = None) -> Any:
        """`fn` on every item; a list of results in input order.

        `pool.map(fn, items, 8)` is multiprocessing's chunksize; `pool.map(fn, xs, ys)`
        zips like `Executor.map`.

        Args:
            fn: the function, called as `fn(item)` (`fn(x, y)` with several iterables).
            *iterables: the items; several are zipped (shortest wins).
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            ordered: False lets results settle in any order internally (the list is
                still in input order).
            progress: show a progress bar (True or a description).
            on_error: "raise", "skip" (failed items left out) or "collect" (a `Failure`
                in their place); both give the list an `.errors`.
            retries: re-runs of a failed item before it counts as failed.
            timeout: seconds per item (TaskTimeoutError past it; the worker is replaced).
            report: True: the list gets a `.report`, a `Timeline` of what each worker
                did; a path ending in .html or .png: also written there.

        Returns:
            The results in input order (a `ResultList` with `.errors` / `.report` under
            on_error="skip"/"collect" or `report`).

        Raises:
            Exception: the function's own exception (with the item's index and the
                worker's traceback) under on_error="raise".
            WorkerLostError: an item killed its worker.
            TaskTimeoutError: an item ran past `timeout`.
            PoolClosedError: the pool is closed.
            ValueError: a bad `on_error`, `retries` or `timeout`.

        Example:
            >>> with sw.Pool(2) as pool:
            ...     pool.map(abs, [-1, -2, 3])
            [1, 2, 3]
        """
        iterable, mode, chunksize = self._map_arguments(iterables, chunksize)
        options = dict(chunksize=chunksize, ordered=ordered, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        return self._wait(self._start(fn, iterable, mode, options))

    def starmap(self, fn: Callable, iterable: Iterable, chunksize: int | str = "auto", *,
                ordered: bool = True, progress: bool | str = False, on_error: str = "raise",
                retries: int = 0, timeout: float | None = None,
                report: bool | str | os.PathLike | None = None) -> list:
        """`fn(*args)` for every tuple `args`; a list, as `map`.

        Args:
            fn: the function, called as `fn(*args)`.
            iterable: tuples of arguments.
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            ordered: as `map`.
            progress: as `map`.
            on_error: as `map`.
            retries: as `map`.
            timeout: as `map`.
            report: as `map`.

        Returns:
            The results in input order, as `map`.

        Raises:
            Exception: what `map` raises.

        Example:
            >>> with sw.Pool(2, backend="threads") as pool:
            ...     pool.starmap(pow, [(2, 3), (3, 2)])
            [8, 9]
        """
        options = dict(chunksize=chunksize, ordered=ordered, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        return self._wait(self._start(fn, iterable, MODE_STAR, options))

    def imap(self, fn: Callable, iterable: Iterable, chunksize: int | str = "auto", *,
             ordered: bool = True, progress: bool | str = False, on_error: str = "raise",
             retries: int = 0, timeout: float | None = None,
             report: bool | str | os.PathLike | None = None) -> ResultIterator:
        """Results one by one, in input order, as they come; the input is read lazily.

        Args:
            fn: the function, called as `fn(item)`.
            iterable: the items (read lazily).
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            ordered: as `map`.
            progress: as `map`.
            on_error: as `map`.
            retries: as `map`.
            timeout: as `map`.
            report: as `map`; the iterator's `.report` is the timeline.

        Returns:
            A `ResultIterator` (`.errors`, `.report`, `close()`, `next(timeout)`).

        Raises:
            Exception: what `map` raises, from the iterator when it reaches the item.

        Example:
            >>> for square in pool.imap(lambda x: x * x, range(3)): print(square)  # doctest: +SKIP
        """
        options = dict(chunksize=chunksize, ordered=ordered, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        return ResultIterator(self, self._start(fn, iterable, MODE_ONE, options, stream=True))

    def imap_unordered(self, fn: Callable, iterable: Iterable, chunksize: int | str = "auto",
                       *, progress: bool | str = False, on_error: str = "raise",
                       retries: int = 0, timeout: float | None = None,
                       report: bool | str | os.PathLike | None = None) -> ResultIterator:
        """Results one by one, in the order they finish.

        Args:
            fn: the function, called as `fn(item)`.
            iterable: the items (read lazily).
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            progress: as `map`.
            on_error: as `map`.
            retries: as `map`.
            timeout: as `map`.
            report: as `map`; the iterator's `.report` is the timeline.

        Returns:
            A `ResultIterator` (`.errors`, `.report`, `close()`, `next(timeout)`).

        Raises:
            Exception: what `map` raises, from the iterator when it reaches the item.

        Example:
            >>> sorted(pool.imap_unordered(abs, [-1, -2]))  # doctest: +SKIP
            [1, 2]
        """
        options = dict(chunksize=chunksize, ordered=False, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        return ResultIterator(self, self._start(fn, iterable, MODE_ONE, options, stream=True))

    def map_async(self, fn: Callable, iterable: Iterable, chunksize: int | str = "auto",
                  callback: Callable | None = None, error_callback: Callable | None = None,
                  *, ordered: bool = True, progress: bool | str = False,
                  on_error: str = "raise", retries: int = 0, timeout: float | None = None,
                  report: bool | str | os.PathLike | None = None) -> AsyncResult:
        """multiprocessing's map_async: `map` without waiting.

        Args:
            fn: the function, called as `fn(item)`.
            iterable: the items.
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            callback: called with the list of results when all succeeded.
            error_callback: called with the exception when the call failed.
            ordered: as `map`.
            progress: as `map`.
            on_error: as `map`.
            retries: as `map`.
            timeout: as `map`.
            report: as `map`.

        Returns:
            An `AsyncResult`; `get(timeout)` returns the list or raises what `map` raises.

        Raises:
            PoolClosedError: the pool is closed.
            ValueError: a bad `on_error`, `retries` or `timeout`.

        Example:
            >>> with sw.Pool(2, backend="threads") as pool:
            ...     pool.map_async(abs, [-1, -2]).get()
            [1, 2]
        """
        options = dict(chunksize=chunksize, ordered=ordered, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        job = self._start(fn, iterable, MODE_ONE, options)
        return AsyncResult(job, False, callback, error_callback)

    def starmap_async(self, fn: Callable, iterable: Iterable, chunksize: int | str = "auto",
                      callback: Callable | None = None, error_callback: Callable | None = None,
                      *, ordered: bool = True, progress: bool | str = False,
                      on_error: str = "raise", retries: int = 0,
                      timeout: float | None = None,
                      report: bool | str | os.PathLike | None = None) -> AsyncResult:
        """multiprocessing's starmap_async: `starmap` without waiting.

        Args:
            fn: the function, called as `fn(*args)`.
            iterable: tuples of arguments.
            chunksize: items per batch ("auto": batches of ~25 ms of work).
            callback: called with the list of results when all succeeded.
            error_callback: called with the exception when the call failed.
            ordered: as `map`.
            progress: as `map`.
            on_error: as `map`.
            retries: as `map`.
            timeout: as `map`.
            report: as `map`.

        Returns:
            An `AsyncResult`; `get(timeout)` returns the list or raises what `map` raises.

        Raises:
            PoolClosedError: the pool is closed.
            ValueError: a bad `on_error`, `retries` or `timeout`.

        Example:
            >>> with sw.Pool(2, backend="threads") as pool:
            ...     pool.starmap_async(pow, [(2, 3)]).get()
            [8]
        """
        options = dict(chunksize=chunksize, ordered=ordered, progress=progress,
                       on_error=on_error, retries=retries, timeout=timeout, report=report)
        job = self._start(fn, iterable, MODE_STAR, options)
        return AsyncResult(job, False, callback, error_callback)

    # ------------------------------------------------------------ single calls

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Executor.submit: a Future of `fn(*args, **kwargs)`.

        Args:
            fn: the function.
            *args: its positional arguments.
            **kwargs: its keyword arguments.

        Returns:
            A `concurrent.futures.Future`; `result()` raises the function's own exception
            (WorkerLostError if the worker died).

        Raises:
            PoolClosedError: the pool is closed.
            TypeError: `fn` is not callable.

        Example:
            >>> with sw.Pool(1, backend="threads") as pool:
            ...     pool.submit(pow, 2, 5).result()
            32
        """
        future: Future = _PoolFuture(self._scheduler.thread)
        job = self._start(fn, [(args, kwargs)], MODE_CALL, {"chunksize": 1}, future=future)
        future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        return future

    def apply_async(self, fn: Callable, args: tuple = (), kwds: dict | None = None,
                    callback: Callable | None = None,
                    error_callback: Callable | None = None) -> AsyncResult:
        """multiprocessing's apply_async: `fn(*args, **kwds)` in a worker, without waiting.

        Args:
            fn: the function.
            args: its positional arguments.
            kwds: its keyword arguments.
            callback: called with the result on success.
            error_callback: called with the exception on failure.

        Returns:
            An `AsyncResult`; `get(timeout)` returns the value or raises the exception.

        Raises:
            PoolClosedError: the pool is closed.
            TypeError: `fn` is not callable.

        Example:
            >>> with sw.Pool(1, backend="threads") as pool:
            ...     pool.apply_async(pow, (2, 5)).get()
            32
        """
        future: Future = _PoolFuture(self._scheduler.thread)
        job = self._start(fn, [(tuple(args), dict(kwds or {}))], MODE_CALL, {"chunksize": 1},
                          future=future)
        return AsyncResult(job, True, callback, error_callback)

    def apply(self, fn: Callable, args: tuple = (), kwds: dict | None = None) -> Any:
        """multiprocessing's apply: `fn(*args, **kwds)` in a worker; waits for the value.

        Args:
            fn: the function.
            args: its positional arguments.
            kwds: its keyword arguments.

        Returns:
            What `fn` returned.

        Raises:
            Exception: the function's own exception (WorkerLostError if the worker died).
            PoolClosedError: the pool is closed.

        Example:
            >>> with sw.Pool(1, backend="threads") as pool:
            ...     pool.apply(pow, (2, 5))
            32
        """
        result = self.apply_async(fn, args, kwds)
        try:
            return result.get()
        except KeyboardInterrupt:
            self.terminate()
            raise

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """No more work; the workers exit once the work already given is done.

        Example:
            >>> pool = sw.Pool(1, backend="threads"); pool.close(); pool.join()
        """
        self._scheduler.close()

    def join(self) -> None:
        """Wait for the workers to exit (after close() or terminate()).

        Raises:
            ValueError: the pool is still running (call close() or terminate() first).

        Example:
            >>> pool = sw.Pool(1, backend="threads"); pool.close(); pool.join()
        """
        self._scheduler.join()

    def terminate(self) -> None:
        """Stop now: kill the workers; unfinished calls raise PoolClosedError.

        Example:
            >>> pool = sw.Pool(1, backend="threads"); pool.terminate(); pool.join()
        """
        self._scheduler.terminate()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown: close, and optionally wait and cancel.

        Args:
            wait: block until the workers are gone.
            cancel_futures: cancel submitted calls that have not started.

        Example:
            >>> pool = sw.Pool(1, backend="threads"); pool.shutdown(cancel_futures=True)
        """
        if cancel_futures:
            for future in self._scheduler.pending_futures():
                future.cancel()  # only those not running yet can be cancelled
        self.close()
        if wait:
            self._scheduler.join()

    def __enter__(self) -> Pool:
        if self._scheduler.state != "running":  # multiprocessing.Pool's contract
            raise PoolClosedError(f"the pool is not running ({self._scheduler.state})")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Executor semantics (multiprocessing.Pool would terminate): finish the work
        # already submitted, then stop. When the block raised (Ctrl-C included), nobody
        # will read the results: stop at once.
        if exc_type is not None:
            self.terminate()
        else:
            self.shutdown(wait=True)

    def __del__(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None and scheduler.state == "running":
            # as multiprocessing.Pool: a pool dropped while running is a leak in the caller
            warnings.warn(f"unclosed running pool {self!r}", ResourceWarning, stacklevel=2,
                          source=self)
            try:
                scheduler.close()
            except Exception:
                pass

