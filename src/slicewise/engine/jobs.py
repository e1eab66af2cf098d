"""A job: one map/imap/starmap/submit call as the scheduler and the caller see it.

The scheduler thread (the *producer* side) takes batches of consecutive input positions
from the job, and settles them: each position ends up with a value or a `Failure`. The
caller's thread (the *consumer* side) waits for settled results: all at once (`map`),
as a stream in input order or in completion order (`imap`, `imap_unordered`), or as a
`Future` (`submit`).

Shared state, guarded by `Job.lock` (producer and consumer meet only here):

    segments   {first position: Segment}: settled runs of consecutive positions. A batch
               settles as one segment; a batch that had to be split (a dead worker, an
               item to retry) settles as several.
    errors     every final Failure, kept sorted by input position.
    error      the exception that ends the job early (on_error="raise", a failing input
               iterable, a terminated pool); the consumer raises it.
    pending    (position, exception): an error that belongs at an input position (the
               lowest failed item under on_error="raise" in an ordered call, or the input
               iterable raising). It becomes `error` only once every position before it
               has settled (`frontier`), so `map` raises the failure at the lowest index
               and `imap` yields every result before it first, as the stdlib pools do.
    open_items positions handed out and not yet settled (in a worker or waiting for a
               retry). The job is done when the input is exhausted and this is zero.

Everything else (the input iterator, the retry queue, `pending`, `frontier`) is touched by
the producer only.
"""

from __future__ import annotations

import bisect
import itertools
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from slicewise.engine.batching import BatchSizer
from slicewise.engine.errors import Failure, PoolClosedError, short_repr
from slicewise.engine.progress import Progress
from slicewise.engine.timeline import Recorder

ON_ERROR = ("raise", "skip", "collect")
STREAM_BATCHES_PER_WORKER = 4  # how far an imap may run ahead of its consumer
_job_ids = itertools.count(1)


class Batch:
    """Consecutive input positions `start .. start+len(items)-1` handed to one worker."""

    __slots__ = ("job", "start", "items", "isolated", "unexplained_deaths", "seq", "stride")

    def __init__(self, job: Job, start: int, items: list, isolated: bool = False) -> None:
        self.job = job
        self.start = start
        self.items = items
        self.isolated = isolated  # split out to pin a failure on one item
        self.unexplained_deaths = 0
        self.seq = 0
        # progress is reported every `stride` items (1: every item; see worker.run_batch)
        self.stride = 1 if isolated else job.sizer.progress_stride()

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Batch(job={self.job.id}, start={self.start}, n={len(self.items)})"


class Segment:
    __slots__ = ("values", "failed")

    def __init__(self, values: list, failed: list[int] | None) -> None:
        self.values = values
        self.failed = failed  # offsets holding a Failure, or None


class ResultList(list):
    """The list `map` returns under on_error="skip"/"collect"; `.errors` lists every
    failed item (a `Failure`), sorted by input position. With report=True, `.report` is
    the call's `Timeline`."""

    errors: list[Failure]
    report: Any = None

    def __init__(self, values: Iterable = (), errors: list[Failure] | None = None) -> None:
        super().__init__(values)
        self.errors = errors or []


class Job:
    def __init__(
        self,
        fn: Callable,
        iterable: Iterable,
        mode: int,
        *,
        workers: int,
        chunksize: int | str = "auto",
        ordered: bool = True,
        progress: bool | str = False,
        on_error: str = "raise",
        retries: int = 0,
        timeout: float | None = None,
        stream: bool = False,
        future: Future | None = None,
        report: Any = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be None or seconds > 0, got {timeout!r}")
        self.id = next(_job_ids)
        self.fn = fn
        self.mode = mode
        self.on_error = on_error
        self.retries = retries
        self.timeout = timeout
        self.ordered = ordered
        self.stream = stream
        self.future = future
        self.sizer = BatchSizer(workers, chunksize)
        try:
            self.total: int | None = len(iterable)  # type: ignore[arg-type]
        except Exception:
            self.total = None
        self._source: Iterator = iter(iterable)
        self._next_position = 0
        self._exhausted = False
        self._retry: deque[Batch] = deque()
        self._attempts: dict[int, int] = {}
        self._inflight_batches = 0
        self.stream_limit = max(8, STREAM_BATCHES_PER_WORKER * workers)
        self.progress = Progress(progress, self.total)
        # producer-side extras the backends attach (pickled function, its token)
        self.payload: Any = None
        # report=True or a path: the scheduler notes each batch's worker and times
        self.report = report
        self.recorder: Recorder | None = Recorder() if report else None

        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.segments: dict[int, Segment] = {}
        self.errors: list[Failure] = []
        self.error: BaseException | None = None
        self.first_failure: Failure | None = None
        self.pending: tuple[int, BaseException] | None = None
        self.frontier = 0  # every position below it has settled
        self._settled_ahead: dict[int, int] = {}  # settled runs past the frontier: start -> end
        self.open_items = 0
        self.done = False
        self.cancelled = False
        self.pump: Callable[[], None] | None = None  # set by inline (serial) schedulers
        # the thread that settles this job; waiting in it for the job would never end
        self.settling_thread: threading.Thread | None = None
        self.on_done: list[Callable[[Job], None]] = []
        # engine-internal, run before a Future is resolved (so a caller woken by it sees
        # their effect); set before the job is scheduled
        self.before_resolve: list[Callable[[Job], None]] = []
        self._result: list | None = None

    # ------------------------------------------------------------ producer side

    def wants_work(self, closing: bool = False) -> bool:
        """Whether the scheduler should give this job a worker now. A stream (imap) runs
        at most `stream_limit` batches ahead of its consumer, with two exceptions that
        would otherwise hang it: items waiting for a retry always run (the consumer may
        be waiting for exactly them, behind a run of settled segments that fill the
        limit), and a closing pool finishes every stream (close() means "finish the work
        given", and nobody may ever read a half-read imap again)."""
        if self.done or self.error is not None or self.cancelled:
            return False
        if self.pending is not None:  # only positions before the error still matter
            return any(batch.start < self.pending[0] for batch in self._retry)
        if self._retry:
            return True
        if self._exhausted:
            return False
        if (
            self.stream
            and not closing
            and self._inflight_batches + len(self.segments) >= self.stream_limit
        ):
            return False
        return True

    def remaining(self) -> int | None:
        if self.total is None:
            return None
        return max(0, self.total - self._next_position)

    def take(self, limit: int | None = None) -> Batch | None:
        """The next batch: a waiting retry first, else fresh items from the input."""
        if self.pending is not None:
            self._drop_retries_from(self.pending[0])
            if not self._retry:
                return None
        if self._retry:
            batch = self._retry.popleft()
            if limit is not None and len(batch) > limit:
                rest = Batch(self, batch.start + limit, batch.items[limit:], batch.isolated)
                self._retry.appendleft(rest)
                batch = Batch(self, batch.start, batch.items[:limit], batch.isolated)
            self._inflight_batches += 1
            return batch
        if self._exhausted:
            return None
        if (
            self.future is not None
            and self._next_position == 0
            and not self.future.set_running_or_notify_cancel()
        ):
            self._exhausted = True  # cancelled before it started
            self.cancel()
            return None
        size = self.sizer.next_size(self.remaining())
        if limit is not None:
            size = min(size, limit)
        start = self._next_position
        items: list = []
        try:
            items.extend(itertools.islice(self._source, size))  # keeps what came before a raise
        except BaseException as exc:  # the caller's iterable failed: the input ends there
            self._exhausted = True
            position = start + len(items)
            note = getattr(exc, "add_note", None)  # PEP 678, Python >= 3.11
            if note is not None:
                note(f"slicewise: raised by the input iterable at position {position}")
            self._set_pending(position, exc)
        if len(items) < size or (
            self.total is not None and self._next_position + len(items) >= self.total
        ):
            self._exhausted = True
        if not items:
            self._check_pending()
            self.check_done()
            return None
        self._next_position += len(items)
        with self.lock:
            self.open_items += len(items)
        self._inflight_batches += 1
        return Batch(self, start, items)

    def requeue(self, batch: Batch, start_offset: int = 0, stop_offset: int | None = None,
                isolated: bool | None = None, count_batch: bool = True) -> None:
        """Put (part of) a batch back to run again; `isolated` splits it into single items."""
        items = batch.items[start_offset:stop_offset]
        if count_batch:
            self._inflight_batches -= 1
        if not items or self.done:
            return
        first = batch.start + start_offset
        isolate = batch.isolated if isolated is None else isolated
        if isolate and len(items) > 1:
            for offset, item in enumerate(items):
                self._retry.append(Batch(self, first + offset, [item], True))
        else:
            part = Batch(self, first, items, isolate)
            part.unexplained_deaths = batch.unexplained_deaths
            self._retry.append(part)

    def release(self, batch: Batch) -> None:
        """A batch whose parts were all requeued or settled separately is finished."""
        self._inflight_batches -= 1

    def settle(self, batch: Batch, values: list, failures: dict[int, Failure] | None,
               count_batch: bool = True) -> None:
        """Record a batch's outcome. `failures` maps an offset in the batch to its Failure;
        those positions are retried while attempts remain, else they are final."""
        if count_batch:
            self._inflight_batches -= 1
        if self.done:
            with self.lock:  # a batch of a finished job came back: wake wait_idle()
                self.changed.notify_all()
            return
        if not failures:
            self._store(batch.start, values, None)
            return
        stop = len(values)  # positions from `stop` on are not stored (an ordered raise)
        retry_offsets = []
        final: list[int] = []
        for offset, failure in failures.items():
            index = batch.start + offset
            attempts = self._attempts.get(index, 0) + 1
            failure.attempts = attempts
            retryable = failure.kind in ("exception", "worker_lost", "timeout")
            if retryable and attempts <= self.retries:
                self._attempts[index] = attempts
                retry_offsets.append(offset)
            else:
                self._attempts.pop(index, None)
                values[offset] = failure
                final.append(offset)
        if final:
            final.sort()
            self._record_failures([values[o] for o in final])
            if self.error is not None:
                return
            if self.on_error == "raise":  # ordered: the error waits for the positions before it
                stop = final[0]
                self._set_pending(batch.start + stop, values[stop].to_error())
                retry_offsets = [o for o in retry_offsets if o < stop]
                final = []
        for offset in retry_offsets:
            self._retry.append(Batch(self, batch.start + offset, [batch.items[offset]], True))
        # store the settled runs between the positions that go back for a retry
        edges = sorted(retry_offsets)
        run_start = 0
        for cut in [*edges, stop]:
            if cut > run_start:
                run_final = [o - run_start for o in final if run_start <= o < cut]
                self._store(batch.start + run_start, values[run_start:cut], run_final or None)
            run_start = cut + 1
        self._check_pending()

    def fail_items(self, batch: Batch, failures: dict[int, Failure]) -> None:
        """Settle the listed offsets of `batch` (only those) as failures."""
        for offset, failure in sorted(failures.items()):
            single = Batch(self, batch.start + offset, [batch.items[offset]], True)
            self.settle(single, [None], {0: failure}, count_batch=False)

    def _record_failures(self, failures: list[Failure]) -> None:
        with self.lock:
            for failure in failures:
                bisect.insort(self.errors, failure, key=lambda f: f.index)
            if self.first_failure is None:
                self.first_failure = failures[0]
        if self.on_error == "raise" and not self.ordered:
            self.fail(failures[0].to_error())  # completion order: the first to fail

    def _set_pending(self, position: int, error: BaseException) -> None:
        """`error` belongs at input `position`: raise it once every position before it has
        settled, unless a failure at a lower position comes first."""
        if self.pending is None or position < self.pending[0]:
            self.pending = (position, error)
            self._drop_retries_from(position)
        self._check_pending()

    def _check_pending(self) -> None:
        if self.pending is not None and self.frontier >= self.pending[0]:
            self.fail(self.pending[1])

    def _drop_retries_from(self, position: int) -> None:
        """Positions at or past an error will never be read: do not run them again."""
        kept: deque[Batch] = deque()
        for batch in self._retry:
            if batch.start + len(batch) <= position:
                kept.append(batch)
            elif batch.start < position:
                kept.append(Batch(self, batch.start, batch.items[: position - batch.start],
                                  batch.isolated))
        self._retry = kept

    def _store(self, start: int, values: list, failed: list[int] | None) -> None:
        with self.lock:
            if self.pending is None or start < self.pending[0]:
                self.segments[start] = Segment(values, failed)
            self.open_items -= len(values)
            self.changed.notify_all()
        # the frontier: every position below it has settled
        self._settled_ahead[start] = start + len(values)
        while self.frontier in self._settled_ahead:
            self.frontier = self._settled_ahead.pop(self.frontier)
        self.progress.advance(len(values))
        self._check_pending()
        self.check_done()

    def make_failure(self, batch: Batch, offset: int, kind: str, **fields: Any) -> Failure:
        return Failure(
            index=batch.start + offset,
            item_repr=short_repr(batch.items[offset]),
            kind=kind,
            **fields,
        )

    def check_done(self) -> None:
        with self.lock:
            if self.done:
                return
            finished = self._exhausted and not self._retry and self.open_items == 0
            if not (finished or self.error is not None or self.cancelled):
                return
            if self.error is None and self.pending is not None:
                self.error = self.pending[1]
            self.done = True
            self.changed.notify_all()
            callbacks = list(self.on_done)
        self.progress.close()
        for hook in self.before_resolve:
            hook(self)
        if self.future is not None:
            self._resolve_future()
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # a user's callback must not take the scheduler down
                import traceback

                traceback.print_exc()

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        """Call `callback(job)` when the job is done (now, if it already is)."""
        with self.lock:
            if not self.done:
                self.on_done.append(callback)
                return
        callback(self)

    def fail(self, error: BaseException) -> None:
        """End the job early with `error` (raised to the consumer)."""
        with self.lock:
            if self.error is None and not self.done:
                self.error = error
        self.check_done()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
        self.check_done()

    def _resolve_future(self) -> None:
        future = self.future
        if future.done():
            return
        if self.error is not None:
            future.set_exception(self.error)
        elif self.cancelled:
            future.cancel()
        else:
            future.set_result(self.segments[0].values[0])

    # ------------------------------------------------------------ consumer side

    def _refuse_self_wait(self) -> None:
        if self.settling_thread is not None and threading.current_thread() is self.settling_thread:
            raise RuntimeError(
                "a callback waited for the results of its own pool, which would deadlock: "
                "submit the work from the callback and collect it elsewhere"
            )

    def _wait(self) -> None:
        """Wait (lock held) until something changes; inline schedulers are pumped."""
        self._refuse_self_wait()
        if self.pump is not None:
            self.lock.release()
            try:
                self.pump()
            finally:
                self.lock.acquire()
        else:
            # a timeout keeps Ctrl-C responsive on platforms where waits are not interruptible
            self.changed.wait(0.5)

    def _wait_until(self, deadline: float | None) -> bool:
        """Wait (lock held) until something changes; False once `deadline` (a monotonic
        time, or None for never) has passed."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pump is None:
                self._refuse_self_wait()
                self.changed.wait(min(left, 0.5))
                return True
        self._wait()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until none of this job's batches is in a worker any more (they come back
        even after the job ended, and are dropped); False once `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self._inflight_batches > 0:  # the scheduler's count; an int read is atomic
                if not self._wait_until(deadline):
                    return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job is done; False if `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while not self.done:
                if not self._wait_until(deadline):
                    return False
        return True

    def result_list(self) -> list:
        """Wait for the whole job; the results in input (or completion) order."""
        if self._result is not None:
            return self._result
        with self.lock:
            while not self.done:
                self._wait()
            if self.error is not None:
                raise self.error
            if self.cancelled:
                raise PoolClosedError("the call was cancelled: the pool was terminated")
            starts = sorted(self.segments) if self.ordered else list(self.segments)
            segments = [self.segments[s] for s in starts]
            self.segments = {}
        if len(segments) == 1 and segments[0].failed is None and self.on_error == "raise":
            self._result = segments[0].values
            return self._result
        values: list = []
        for segment in segments:
            values.extend(self.segment_values(segment))
        if self.on_error == "raise":
            self._result = values
        else:
            self._result = ResultList(values, list(self.errors))
        return self._result

    def segment_values(self, segment: Segment) -> list:
        if segment.failed is None or self.on_error != "skip":
            return segment.values
        drop = set(segment.failed)
        return [v for offset, v in enumerate(segment.values) if offset not in drop]

    def next_segment(self, position: int, deadline: float | None = None) -> Segment | None:
        """The next settled segment for a consumer that has taken `position` results so far
        (the one starting there when `ordered`); None when the job has no more. Raises
        multiprocessing.TimeoutError once `deadline` (monotonic) passes with none ready."""
        with self.lock:
            while True:
                if self.ordered:
                    segment = self.segments.pop(position, None)
                elif self.segments:
                    segment = self.segments.pop(next(iter(self.segments)))
                else:
                    segment = None
                if segment is not None:
                    break
                if self.error is not None:
                    raise self.error
                if self.done:
                    if self.cancelled:
                        raise PoolClosedError("the call was cancelled: the pool was terminated")
                    return None
                if not self._wait_until(deadline):
                    raise multiprocessing.TimeoutError("no result within the timeout")
        self.on_consumed()
        return segment

    def on_consumed(self) -> None:
        """Hook: the scheduler wakes up when a stream frees room (set by the scheduler)."""
