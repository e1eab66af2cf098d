"""The scheduler: one loop per pool that feeds workers, collects results, and handles
every failure. It runs in its own daemon thread (or, for the serial backend, in the
caller's thread whenever the caller waits).

One turn of the loop:

    admit new jobs  ->  start missing workers  ->  give each idle worker a batch
        -> wait (pipes, process sentinels, the wake pipe, the next timeout deadline)
        -> drain every worker's events: results settle batches in their job
        -> kill workers whose item passed its timeout
        -> handle workers that are gone: find the item that killed it, requeue the rest,
           start a replacement

Death forensics. A worker writes the position of the item it is about to run into its
progress slot (worker.py). When it dies, the slot says where:

    RUNNING at offset k    item k killed it: it fails (or retries); items before k
                           (finished, but their results died with the worker) and after k
                           (never run) go back to the queue. For items of microseconds the
                           slot is written once per window of items (batch.stride): the
                           window is re-run one item at a time, the rest goes back whole.
    UNPICKLING / PICKLING  one of the items' arguments or results killed it, which one is
                           unknown: the batch goes back split into single items.
    not started            the batch goes back whole; after a second unexplained death it
                           is split too, so a poisoned batch can never loop forever.

Shared state: `jobs` and the workers belong to the loop alone. Other threads only append
to `_incoming`, change `state`, and write a byte into the wake pipe.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import wait as wait_for

from slicewise.engine import shm
from slicewise.engine.backends.base import ArgumentsNotPicklable, Worker, backend_class
from slicewise.engine.errors import Failure, InitializerError, PoolClosedError, signal_name
from slicewise.engine.jobs import Batch, Job
from slicewise.engine.worker import PICKLING, RUNNING, UNPICKLING, unpack_exception

RUNNING_STATE, CLOSING, TERMINATED = "running", "closing", "terminated"
PREFETCH_BELOW_SECONDS = 0.005  # queue a second batch when batches are this short
IDLE_WAIT_SECONDS = 1.0
MAX_FAILED_STARTS = 3
NODE_LOSSES_BEFORE_BLAME = 3  # a batch whose node died this often is treated as a killer

_live: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _terminate_all() -> None:
    """At interpreter exit, no pool may leave a worker behind."""
    for scheduler in list(_live):
        scheduler.terminate()


def _failure_from_packed(job: Job, batch: Batch, packed: tuple) -> Failure:
    offset, stage, data, text, type_name, message = packed
    if stage == "timeout":
        return job.make_failure(batch, offset, "timeout", timeout=job.timeout, stage="call")
    return job.make_failure(
        batch,
        offset,
        "exception" if stage == "call" else "pickling",
        exception=unpack_exception(data, type_name, message),
        traceback=text,
        stage=stage,
    )


def _record_event(job: Job, batch: Batch, event: tuple) -> None:
    """report=True: how a batch ended, for its timeline."""
    kind = event[0]
    if kind == "done":
        failed = len(event[4]) if event[4] else 0
        job.recorder.settled(batch.seq, "failed" if failed else "ok", event[2], failed)
    elif kind == "lost":
        job.recorder.settled(batch.seq, "lost")
    else:  # "bad", "undecodable": the batch's items go back one by one, or fail
        job.recorder.settled(batch.seq, "failed" if len(batch) == 1 else "requeued", None,
                             len(batch) if len(batch) == 1 else 0)


class Scheduler:
    def __init__(
        self,
        backend: str,
        workers: int,
        *,
        initializer=None,
        initargs=(),
        max_tasks_per_worker: int | None = None,
        start_method: str | None = None,
        backend_options: dict | None = None,
    ) -> None:
        cls = backend_class(backend)
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError(f"max_tasks_per_worker must be >= 1, got {max_tasks_per_worker}")
        self._wake_r, self._wake_w = os.pipe()
        self._wake_pending = False
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.backend = cls(
            workers,
            initializer=initializer,
            initargs=initargs,
            start_method=start_method,
            wake=self.wake,
            **(backend_options or {}),
        )
        workers = self.backend.workers  # a cluster backend sizes itself when given None
        self.workers = workers
        self.max_tasks = max_tasks_per_worker
        self.state = RUNNING_STATE
        self.broken: BaseException | None = None
        self.jobs: deque[Job] = deque()
        self._full_prune_at = 64
        self._incoming: deque[Job] = deque()
        self._slots: list[Worker | None] = [None] * workers
        self._retiring: list[Worker] = []
        self._seq = itertools.count(1)
        self._step_lock = threading.RLock()
        self._torn_down = False
        self._failed_starts = 0  # workers in a row that died before saying "ready"
        self._node_losses: dict[tuple, int] = {}  # (job id, start, size) -> node deaths seen
        self.thread: threading.Thread | None = None
        _live.add(self)
        if not self.backend.inline:
            self.thread = threading.Thread(target=self._run, name="slicewise-scheduler", daemon=True)
            self.thread.start()

    # ------------------------------------------------------------ called by other threads

    def wake(self) -> None:
        if self._wake_pending:
            return  # the loop has a wake-up coming already: save the system call
        self._wake_pending = True
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def submit(self, job: Job) -> Job:
        if self.broken is not None:
            raise self.broken
        if self.state != RUNNING_STATE:
            raise PoolClosedError("the pool is closed: no new work can be submitted")
        self.backend.prepare(job)
        job.on_consumed = self.wake  # type: ignore[method-assign]
        job.settling_thread = self.thread
        if self.backend.inline:
            job.pump = self.pump
        self._incoming.append(job)
        if self._torn_down:
            # the loop ended between the state check above and the append (a close() or
            # terminate() from another thread): nobody will ever take this job
            job.fail(self.broken or PoolClosedError("the pool was closed while submitting"))
        self.wake()
        return job

    def pending_futures(self) -> list:
        """Futures of submitted calls (snapshot; safe from any thread)."""
        jobs = list(self._incoming) + list(self.jobs)
        return [job.future for job in jobs if job.future is not None]

    def pump(self) -> None:
        """Inline backends: run one turn of the loop in the calling thread."""
        with self._step_lock:
            if not self._torn_down and not self._step(block=False):
                self._teardown()

    def close(self) -> None:
        if self.state == RUNNING_STATE:
            self.state = CLOSING
        self.wake()
        if self.backend.inline:
            self.pump()

    def terminate(self) -> None:
        self.state = TERMINATED
        self.wake()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(3.0)
            if thread.is_alive():  # the loop is stuck (in a slow input iterable): kill anyway
                for worker in self._all_workers():
                    worker.kill()
        elif thread is None:
            with self._step_lock:
                self._teardown()

    def join(self, timeout: float | None = None) -> None:
        if self.state == RUNNING_STATE:
            raise ValueError("join() needs close() or terminate() first")
        if self.thread is not None:
            if self.thread is not threading.current_thread():
                self.thread.join(timeout)
        else:
            self.close()

    @property
    def alive(self) -> bool:
        return self.state == RUNNING_STATE and self.broken is None and not self._torn_down

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while self._step(block=True):
                pass
        except BaseException as exc:  # a bug here must fail the jobs, never hang them
            self.broken = RuntimeError(f"slicewise scheduler failed: {exc!r}")
            self.broken.__cause__ = exc
        finally:
            self._teardown()

    def _step(self, block: bool) -> bool:
        if self.state == TERMINATED or self.broken is not None:
            return False
        while self._incoming:
            self.jobs.append(self._incoming.popleft())
        self._prune_jobs()
        if self.state == CLOSING and not self.jobs and not self._incoming:
            return False
        self._fill_slots()
        self._dispatch()
        timeout = self._wait_timeout() if block else 0
        watched = [self._wake_r]
        for worker in self._all_workers():
            watched.extend(worker.waitables())
        ready = wait_for(watched, timeout)
        if not ready and not self.jobs:
            for worker in self._active_workers():
                worker.release_idle()
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            # after draining, never before: a wake() skipped while the flag was still set
            # made its change before calling us, and everything below sees that change
            # (events are received next, new jobs are taken at the next turn)
            self._wake_pending = False
        for worker in self._active_workers():
            for event in worker.receive():
                self._on_event(worker, event)
                if self.broken is not None:
                    return False
            worker.flush()
        self._check_timeouts()
        for worker in self._active_workers():
            if worker.has_exited():
                self._on_worker_gone(worker)
        self._reap_retired()
        return True

    def _all_workers(self) -> list[Worker]:
        return [w for w in self._slots if w is not None] + self._retiring

    def _active_workers(self) -> list[Worker]:
        return [w for w in self._slots if w is not None]

    def _fill_slots(self) -> None:
        if self.state == TERMINATED:
            return
        for slot, worker in enumerate(self._slots):
            if worker is None:
                self._slots[slot] = self.backend.start_worker(slot)

    def _prune_jobs(self) -> None:
        """Drop finished jobs: from the front at every turn (cheap), everywhere when the
        queue has doubled since the last full sweep (thousands of submits stay cheap)."""
        jobs = self.jobs
        while jobs and jobs[0].done:
            jobs.popleft()
        if len(jobs) > self._full_prune_at:
            self.jobs = deque(job for job in jobs if not job.done)
            self._full_prune_at = max(64, 2 * len(self.jobs))

    def _next_job(self) -> Job | None:
        closing = self.state == CLOSING
        for job in self.jobs:
            if job.wants_work(closing):
                return job
        return None

    def _dispatch(self) -> None:
        """Give every idle worker a batch; then, where batches are short, a second one
        queued behind the first, so a worker never waits for the scheduler between two."""
        workers = self._active_workers()
        for depth in (1, 2):
            for worker in workers:
                if len(worker.inflight) >= depth:
                    continue
                if depth == 2 and not (worker.inflight and self._may_prefetch(worker)):
                    continue
                limit = None
                if self.max_tasks is not None:
                    limit = self.max_tasks - worker.items_assigned
                    if limit <= 0:
                        continue
                while True:
                    job = self._next_job()
                    if job is None:
                        return
                    batch = job.take(limit)
                    if batch is not None:
                        self._send(worker, batch)
                        break

    def _may_prefetch(self, worker: Worker) -> bool:
        """Queue a second batch behind the running one when batches are so short that
        the round trip through this loop would idle the worker noticeably, or when so
        much work is left that the queued batch cannot end up waiting while another
        worker has nothing to do (near the end of the input, never)."""
        last = worker.inflight[-1]
        job = last.job
        remaining = job.remaining()
        plenty = remaining is not None and remaining >= 2 * len(self._slots) * len(last)
        expected = job.sizer.expected_seconds(len(last))
        if expected is None:  # nothing measured yet
            return remaining is None or plenty
        return expected < PREFETCH_BELOW_SECONDS or plenty

    def _send(self, worker: Worker, batch: Batch) -> None:
        batch.seq = next(self._seq)
        try:
            worker.send(batch)
        except ArgumentsNotPicklable as exc:
            self._arguments_not_picklable(batch, exc.__cause__ or exc)
            return
        worker.inflight.append(batch)
        worker.items_assigned += len(batch)
        if batch.job.recorder is not None:  # report=True: note who runs what, and when
            batch.job.recorder.sent(batch.seq, worker.slot, batch.start, len(batch),
                                    batch.isolated)

    def _arguments_not_picklable(self, batch: Batch, error: BaseException) -> None:
        """Find the items that will not pickle; they fail, the others go back."""
        job = batch.job
        bad: dict[int, Failure] = {}
        if len(batch) == 1:
            bad[0] = job.make_failure(batch, 0, "pickling", exception=error, stage="pickling_args")
        else:
            for offset, item in enumerate(batch.items):
                try:
                    shm.dumps(item, None)
                except Exception as exc:
                    bad[offset] = job.make_failure(
                        batch, offset, "pickling", exception=exc, stage="pickling_args"
                    )
            if not bad:  # fine alone, not together: find out one by one
                job.requeue(batch, isolated=True)
                return
        begin = 0
        for offset in sorted(bad):
            job.requeue(batch, begin, offset, isolated=False, count_batch=False)
            begin = offset + 1
        job.requeue(batch, begin, None, isolated=False, count_batch=False)
        job.fail_items(batch, bad)
        job.release(batch)

    def _wait_timeout(self) -> float:
        timeout = IDLE_WAIT_SECONDS
        if self._retiring:
            timeout = 0.05
        now = time.monotonic_ns()
        for worker in self._active_workers():
            timed = self._timed_item(worker)
            if timed is None:
                continue
            head, _offset, started = timed
            if started:
                left = (started + head.job.timeout * 1e9 - now) / 1e9
                timeout = min(timeout, max(0.001, left + 0.001))
            else:
                timeout = min(timeout, 0.05)  # not started yet: look again soon
        return timeout

    @staticmethod
    def _timed_item(worker: Worker) -> tuple[Batch, int, int] | None:
        """(head batch, offset, started_ns) when the worker's head batch has a per-item
        timeout; started_ns is 0 until the worker is running that batch."""
        if not worker.inflight or worker.inflight[0].job.timeout is None:
            return None
        if getattr(worker, "times_items", False):
            return None  # a cluster task enforces the timeout itself (worker.run_timed_remote)
        head = worker.inflight[0]
        seq, phase, offset, started = worker.progress()
        if seq == head.seq and phase == RUNNING:
            return head, offset, started
        return head, 0, 0

    # ------------------------------------------------------------ events and failures

    def _on_event(self, worker: Worker, event: tuple) -> None:
        kind = event[0]
        if kind == "ready":
            worker.ready = True
            self._failed_starts = 0
            return
        if kind == "init_failed":
            packed = event[1]
            error = InitializerError(
                f"the pool's initializer raised in a worker: {packed[4]}: {packed[5]}\n\n"
                f"Worker traceback:\n{packed[3]}"
            )
            error.__cause__ = unpack_exception(packed[2], packed[4], packed[5])
            self.broken = error
            return
        batch = worker.inflight.popleft()
        job = batch.job
        if batch.seq != event[1]:  # protocol invariant: one pipe, FIFO
            raise RuntimeError(f"worker {worker.pid} answered batch {event[1]}, not {batch.seq}")
        if job.recorder is not None:
            _record_event(job, batch, event)
        if kind == "done":
            _, _seq, seconds, values, packed_failures = event
            job.sizer.observe(len(values), seconds)
            if len(values) < len(batch):  # a budgeted first task ran a prefix (cluster)
                batch = self._split_after_prefix(job, batch, len(values))
            failures = None
            if packed_failures:
                failures = {p[0]: _failure_from_packed(job, batch, p) for p in packed_failures}
            job.settle(batch, values, failures)
        elif kind == "bad":
            _, _seq, stage, packed = event
            if stage == "unpickling_function" or len(batch) == 1:
                failures = {
                    offset: _failure_from_packed(job, batch, (offset, *packed[1:]))
                    for offset in range(len(batch))
                }
                job.settle(batch, [None] * len(batch), failures)
            else:
                job.requeue(batch, isolated=True)
        elif kind == "lost":  # a cluster's worker died with it (the engine retried it first)
            self._on_lost(job, batch, event)
        elif kind == "undecodable":
            if len(batch) == 1:
                failure = job.make_failure(
                    batch, 0, "pickling", exception=event[2], stage="unpickling_result"
                )
                job.settle(batch, [None], {0: failure})
            else:
                job.requeue(batch, isolated=True)
        if self.max_tasks is not None and worker.items_assigned >= self.max_tasks:
            if not worker.inflight:
                self._retire(worker)

    @staticmethod
    def _split_after_prefix(job: Job, batch: Batch, ran: int) -> Batch:
        """A budgeted task (batching.py) ran only `ran` items of `batch`: the rest goes
        back to run, in batches the sizer sizes once it has seen the prefix (requeued
        before the prefix settles, so the job never looks finished in between). Returns
        the prefix, as the batch to settle."""
        prefix = Batch(job, batch.start, batch.items[:ran], batch.isolated)
        prefix.seq = batch.seq
        rest = len(batch) - ran
        size = job.sizer.next_size(rest + (job.remaining() or 0))
        for offset in range(ran, len(batch), size):
            job.requeue(batch, offset, min(offset + size, len(batch)), count_batch=False)
        return prefix

    def _on_lost(self, job: Job, batch: Batch, event: tuple) -> None:
        """A cluster lost `batch` after its engine's own retries (backends/cluster.py).
        event[3], the scope, says whose fault it may be:

            "cluster"  the engine cannot run anything any more: the pool is broken with
                       that reason, and every call fails with it, naming no input
            "node"     a whole node died under it: run it again, blaming nobody (after
                       NODE_LOSSES_BEFORE_BLAME such losses of the same batch, as "worker")
            "worker"   its worker died at each of the engine's tries. The engine counts
                       every task that was on a dying worker, even ones queued behind the
                       killer (Dask's KilledWorker), so a batch of several items is split
                       and re-run one item per batch, and a lone item gets a second run:
                       only a lone item lost twice is failed as the killer. One outside
                       kill never gets there: the engine's own retry absorbs it.
        """
        scope = event[3] if len(event) > 3 else "worker"
        if scope == "cluster":
            # no batch can come back now: none is counted as running (a caller waiting
            # for its running batches, as a failed eval does, need not wait for them)
            job.release(batch)
            for other in self._all_workers():
                while other.inflight:
                    lost = other.inflight.popleft()
                    lost.job.release(lost)
            self.broken = RuntimeError(
                f"the {getattr(self.backend, 'engine', self.backend.name)} cluster can no "
                f"longer run tasks: {event[2]}"
            )
            return
        if scope == "node":
            key = (job.id, batch.start, len(batch))
            self._node_losses[key] = self._node_losses.get(key, 0) + 1
            if self._node_losses[key] < NODE_LOSSES_BEFORE_BLAME:
                job.requeue(batch)
                return
        if len(batch) > 1:
            job.requeue(batch, isolated=True)
        elif batch.unexplained_deaths < 1:
            batch.unexplained_deaths += 1
            job.requeue(batch)
        else:
            failure = job.make_failure(batch, 0, "worker_lost", stage="call")
            failure.exception = RuntimeError(event[2])
            job.settle(batch, [None], {0: failure})

    def _retire(self, worker: Worker) -> None:
        worker.stop()
        self._slots[worker.slot] = None
        self._retiring.append(worker)

    def _reap_retired(self) -> None:
        for worker in list(self._retiring):
            if worker.has_exited():
                worker.reap(0.1)
                self._retiring.remove(worker)

    def _check_timeouts(self) -> None:
        now = time.monotonic_ns()
        for worker in self._active_workers():
            timed = None if worker.timed_out is not None else self._timed_item(worker)
            if timed is None:
                continue
            head, offset, started = timed
            if started and now - started > head.job.timeout * 1e9:
                worker.timed_out = (head.seq, offset)
                worker.kill()

    def _on_worker_gone(self, worker: Worker) -> None:
        for event in worker.receive():  # whatever it wrote before it died ("ready", results)
            self._on_event(worker, event)
        self._slots[worker.slot] = None
        seq, phase, offset, _started = worker.progress()
        batches = list(worker.inflight)
        worker.inflight.clear()
        worker.reap(0.5)
        self.backend.worker_lost(worker)
        if not worker.ready:
            # it died before it could read any work: the environment, not an item
            for batch in batches:
                batch.job.requeue(batch)
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                self.broken = RuntimeError(
                    f"{self._failed_starts} worker processes in a row exited while starting "
                    f"(last exit code {worker.exitcode}); see their output on stderr"
                )
            return
        for batch in batches[1:]:  # queued behind the head: never started
            if batch.job.recorder is not None:
                batch.job.recorder.settled(batch.seq, "requeued", 0.0)
            batch.job.requeue(batch)
        if batches and batches[0].job.recorder is not None:
            timed_out = worker.timed_out is not None and worker.timed_out[0] == batches[0].seq
            batches[0].job.recorder.settled(batches[0].seq, "timeout" if timed_out else "lost")
        if batches:
            self._explain_death(worker, batches[0], seq, phase, offset)

    def _explain_death(self, worker: Worker, head: Batch, seq: int, phase: int, offset: int):
        job = head.job
        started = seq == head.seq
        lost = {"exitcode": worker.exitcode}
        if worker.exitcode is not None and worker.exitcode < 0:
            lost["signal"] = signal_name(worker.exitcode)
        if worker.timed_out is not None and worker.timed_out[0] == head.seq:
            offset = worker.timed_out[1]
            failure = job.make_failure(head, offset, "timeout", timeout=job.timeout)
            self._fail_one_requeue_rest(head, offset, failure)
        elif worker.timed_out is not None:  # killed for an item that finished just in time
            job.requeue(head)
        elif started and phase == RUNNING and 0 <= offset < len(head) and head.stride > 1:
            # pinned to a window of `stride` items: re-run the window one item at a time
            window_end = min(offset + head.stride, len(head))
            job.requeue(head, 0, offset, isolated=False, count_batch=False)
            job.requeue(head, offset, window_end, isolated=True, count_batch=False)
            job.requeue(head, window_end, None, isolated=False, count_batch=False)
            job.release(head)
        elif started and phase == RUNNING and 0 <= offset < len(head):
            failure = job.make_failure(head, offset, "worker_lost", stage="call", **lost)
            self._fail_one_requeue_rest(head, offset, failure)
        elif started and phase in (UNPICKLING, PICKLING):
            stage = "unpickling_args" if phase == UNPICKLING else "pickling_result"
            if len(head) == 1:
                failure = job.make_failure(head, 0, "worker_lost", stage=stage, **lost)
                job.settle(head, [None], {0: failure})
            else:
                job.requeue(head, isolated=True)
        else:
            head.unexplained_deaths += 1
            if head.unexplained_deaths < 2:
                job.requeue(head)
            elif len(head) > 1:
                job.requeue(head, isolated=True)
            else:
                failure = job.make_failure(head, 0, "worker_lost", stage="call", **lost)
                job.settle(head, [None], {0: failure})

    def _fail_one_requeue_rest(self, batch: Batch, offset: int, failure: Failure) -> None:
        job = batch.job
        job.requeue(batch, 0, offset, isolated=False, count_batch=False)
        job.requeue(batch, offset + 1, None, isolated=False, count_batch=False)
        job.fail_items(batch, {offset: failure})
        job.release(batch)

    # ------------------------------------------------------------ the end

    def _teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        graceful = self.state == CLOSING and self.broken is None
        workers = self._all_workers()
        try:
            for worker in workers:
                if graceful:
                    worker.stop()
                else:
                    worker.kill()
            for worker in workers:
                try:
                    worker.reap(5.0 if graceful else 2.0)
                finally:
                    self.backend.worker_lost(worker)
        finally:
            # whatever went wrong above, no caller may be left waiting on a job
            self._slots = [None] * len(self._slots)
            self._retiring = []
            error = self.broken or PoolClosedError("the pool was terminated")
            for job in [*self.jobs, *self._incoming]:
                if not job.done:
                    job.fail(error)
            self.jobs = deque()
            self._incoming.clear()
        self.backend.close()
        if self.state == RUNNING_STATE:
            self.state = TERMINATED
        fds = (self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1  # wake() now fails quietly instead of hitting a reused fd
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        _live.discard(self)
