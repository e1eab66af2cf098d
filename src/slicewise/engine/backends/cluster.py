"""What the cluster backends ("dask", "ray") share: a slot that runs batches as remote tasks.

    scheduler thread                 cluster (Dask distributed / Ray)         remote worker
    ────────────────                 ────────────────────────────────         ─────────────
    RemoteSlot.send(batch) ─► submit(run_remote_batch, fn token+bytes, ──►  unpickle fn once
                                     mode, items, stride)                     per process,
                                                                             run_batch: values
    receive(): "done" events  ◄── future done callback (cluster's thread) ◄── + packed failures
      in send order               posts the outcome, wakes the scheduler
    a lost remote worker      ◄── KilledWorker / WorkerCrashedError     (the engine re-ran the
      -> ("lost", seq, why, scope)    / NodeDiedError ...                  task first)

A "lost" event's scope says whose fault it may be (the scheduler's rules, scheduler.py):
"worker" (the task was running at every one of the engine's tries that killed a worker: the
task may be the killer), "node" (a whole node died under it: an outside event, retried
without blame), "cluster" (the engine cannot run anything any more, e.g. a local Ray whose
raylet died: the job fails with that, naming no input).

Each slot is one unit of the cluster's parallelism (a Dask worker thread, a Ray CPU); the
pool has as many slots as the cluster has, unless told otherwise. A slot holds at most
two batches (the scheduler's prefetch), and answers in the order they were sent (the
scheduler's FIFO invariant), whatever order the cluster finishes them in.

Everything above the slot is the shared scheduler: batching by time, input order,
on_error, the function's own exception, retries, progress. A per-item `timeout` travels
with the batch and the task enforces it (worker.run_timed_remote: the item past it fails
with a "timeout" failure at its position, as on the processes backend; its thread is
abandoned and asked to stop). `max_tasks_per_worker` retires a slot, not a cluster
worker process: the processes' lifecycle is the cluster's.

A cluster with no workers never hangs a call. An engine waits for workers forever: a Dask
cluster whose workers all died or were retired (and none came back) just keeps the tasks
queued. A backend that can count its cluster's usable threads (`watches_workers`: Dask's
running workers' threads; Ray's CPUs on live nodes) gets a watchdog thread, which runs
only while the pool has tasks out and asks the cluster once per WATCH_INTERVAL (not at
all while tasks keep coming back):

    a busy spell of the pool, workers seen in it    no usable thread for `no_workers_timeout`
                                                      (a few seconds of a nanny's restart
                                                      pass unnoticed) -> "cluster gone"
    a busy spell that began with no usable worker   the grace is `first_workers_timeout`
      (a cluster starting, an adaptive one scaling    (longer: new machines take minutes)
      up from zero)

"Cluster gone" (`down`): a slot's oldest unanswered batch comes back as a "lost" event of
scope "cluster" (`receive`), so the scheduler breaks the pool with the reason (naming the
cluster, no input) and every call fails; an eval commits nothing. The counts come from the backend
(dask.py: its config keys and defaults).

Everything a remote task gets travels by value: the function cloudpickled once per call
(`job.payload`), the items, the initializer. Results come back through the cluster's own
serialization.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from abc import abstractmethod
from collections import deque
from typing import Any

import cloudpickle

from slicewise.engine.backends.base import Backend, Worker
from slicewise.engine.backends.processes import pickle_function
from slicewise.engine.batching import SizerMemory
from slicewise.engine.worker import IDLE, RUNNING, pack_failure

_pool_tokens = itertools.count(1)
WATCH_INTERVAL = 1.0  # seconds between two looks at a busy cluster's workers (watchdog)


def no_workers_text(seconds: float, seen: bool, problem: str | None) -> str:
    """What the watchdog found, for the error (after "it" or the cluster's name)."""
    why = f" ({problem})" if problem else ""
    if seen:
        return (
            f"has had no worker able to run a task for {seconds:g} s{why} while this "
            "pool had work queued"
        )
    return (
        f"has had no worker able to run a task in the {seconds:g} s since this pool's "
        f"work was queued{why}"
    )


class RemoteSlot(Worker):
    """One slot of a cluster pool: batches go out as remote tasks (see the module doc)."""

    times_items = True  # a per-item timeout is enforced in the task (the scheduler skips it)

    def __init__(self, slot: int, backend: ClusterBackend) -> None:
        super().__init__(slot)
        self.backend = backend
        self._lock = threading.Lock()
        self._outcomes: dict[int, tuple] = {}  # seq -> event, waiting for its turn
        self._order: deque[int] = deque()  # seqs sent, oldest first
        self._tasks: dict[int, Any] = {}  # seq -> the cluster's future
        self._started: dict[int, int] = {}  # seq -> monotonic ns when sent
        self._sizers: dict[int, Any] = {}  # seq -> its job's BatchSizer
        self._answered: dict[int, int] = {}  # seq -> monotonic ns when its outcome came
        self._stopped = False
        self._announced = False

    def send(self, batch) -> None:
        job = batch.job
        token, fn_bytes = job.payload
        # a call's first batches, sized before anything was measured, may stop early
        budget = job.sizer.first_budget(len(batch)) if job.timeout is None else None
        task = self.backend.submit(
            token, fn_bytes, job.mode, batch.items, batch.stride, job.timeout, budget
        )
        seq = batch.seq
        with self._lock:
            self._order.append(seq)
            self._tasks[seq] = task
            self._started[seq] = time.monotonic_ns()
            self._sizers[seq] = job.sizer
        self.backend.task_sent()
        self.backend.when_done(task, lambda outcome, seq=seq: self._finished(seq, outcome))

    def _finished(self, seq: int, outcome: tuple) -> None:
        """Runs on the cluster client's thread: record the outcome, wake the scheduler."""
        with self._lock:
            if seq not in self._tasks:
                return  # killed meanwhile
            self._outcomes[seq] = outcome
            self._answered[seq] = time.monotonic_ns()
        self.backend.task_answered()
        self.backend.wake()

    def receive(self) -> list[tuple]:
        events: list[tuple] = []
        if not self._announced:
            self._announced = True
            events.append(("ready",))
        with self._lock:
            while self._order and self._order[0] in self._outcomes:
                seq = self._order.popleft()
                self._tasks.pop(seq, None)
                started = self._started.pop(seq, None)
                answered = self._answered.pop(seq, None)
                sizer = self._sizers.pop(seq, None)
                outcome = self._outcomes.pop(seq)
                if outcome[0] and sizer is not None and started and answered:
                    # what the task cost beyond its work: the batch sizer amortizes it
                    sizer.observe_overhead((answered - started) / 1e9 - outcome[1][2])
                events.append(self._event(seq, outcome))
            down = self.backend.down
            gone = None
            if down is not None and self._order:
                # the cluster cannot run it (the watchdog said so): its batch comes back
                # as lost, scope "cluster"; the scheduler then breaks the pool
                seq = self._order.popleft()
                gone = self._tasks.pop(seq, None)
                for table in (self._started, self._answered, self._sizers, self._outcomes):
                    table.pop(seq, None)
                events.append(("lost", seq, down, "cluster"))
        if gone is not None:
            self.backend.task_answered()
            self.backend.cancel(gone)
        return events

    def _event(self, seq: int, outcome: tuple) -> tuple:
        ok, value = outcome
        if ok:
            values, failures, seconds = value
            return ("done", seq, seconds, values, failures)
        node = self.backend.node_loss(value)
        lost = node if node is not None else self.backend.worker_loss(value)
        if lost is not None:
            gone = self.backend.cluster_gone(value)
            if gone is not None:  # nothing can run any more: no item is to blame
                return ("lost", seq, f"{lost}; {gone}", "cluster")
            return ("lost", seq, lost, "worker" if node is None else "node")
        stage = "pickling_result" if isinstance(value, (TypeError, AttributeError)) and (
            "pickl" in str(value).lower() or "serializ" in str(value).lower()
        ) else "call"
        return ("bad", seq, stage, pack_failure(0, stage, value))

    def progress(self) -> tuple[int, int, int, int]:
        with self._lock:
            if not self._order:
                return (0, IDLE, 0, 0)
            seq = self._order[0]
            return (seq, RUNNING, 0, self._started.get(seq, 0))

    def has_exited(self) -> bool:
        return self._stopped and not self._order

    def kill(self) -> None:
        with self._lock:
            tasks = list(self._tasks.values())
            unanswered = sum(1 for seq in self._tasks if seq not in self._outcomes)
            self._tasks.clear()
            self._sizers.clear()
            self._stopped = True
        self.backend.task_answered(unanswered)
        for task in tasks:
            self.backend.cancel(task)

    def stop(self) -> None:
        self._stopped = True


class ClusterBackend(Backend):
    """A Backend whose workers are slots of a cluster engine (Dask, Ray)."""

    engine = ""
    watches_workers = False  # usable_threads() answers: a watchdog guards busy spells
    no_workers_timeout = 30.0  # see the module doc; a backend sets its own
    first_workers_timeout = 300.0

    def __init__(self, workers: int, **options: Any) -> None:
        self.client_option = options.pop("client", None)
        super().__init__(workers, **options)
        self.down: str | None = None  # set once the cluster can run nothing (watchdog)
        self._busy_lock = threading.Lock()
        self._outstanding = 0  # tasks sent and not answered (nor dropped)
        self._last_answer = time.monotonic()
        self._seen = False  # a worker ran or was counted in this busy spell
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        if self.start_method is not None:
            raise ValueError(f"start_method does not apply to the {self.name!r} backend")
        self.pool_token = f"{time.time_ns()}-{next(_pool_tokens)}"
        self.sizers = SizerMemory()
        self.init_bytes = None
        if self.initializer is not None:
            self.init_bytes = cloudpickle.dumps((self.initializer, self.initargs), protocol=5)

    def prepare(self, job) -> None:
        fn_bytes = pickle_function(job.fn)
        job.payload = (hashlib.blake2b(fn_bytes, digest_size=16).digest(), fn_bytes)
        # a function this pool ran before starts from what it measured (batching.py);
        # one it has not starts with budgeted batches instead of single items
        self.sizers.seed(job.payload[0], job.sizer)
        job.sizer.budgeted = True

    def start_worker(self, slot: int) -> RemoteSlot:
        return RemoteSlot(slot, self)

    # ------------------------------------------------------------ the watchdog

    def task_sent(self) -> None:
        with self._busy_lock:
            if self._outstanding == 0:  # a busy spell starts now
                self._last_answer = time.monotonic()
                self._seen = False
            self._outstanding += 1
            start = self.watches_workers and self._watchdog is None
            if start:
                self._watchdog = threading.Thread(
                    target=self._watch, name=f"slicewise-{self.name}-watchdog", daemon=True
                )
        if start:
            self._watchdog.start()

    def task_answered(self, count: int = 1) -> None:
        """`count` tasks came back (or were dropped): a worker of the cluster ran them."""
        if count <= 0:
            return
        with self._busy_lock:
            self._outstanding = max(0, self._outstanding - count)
            self._last_answer = time.monotonic()
            self._seen = True

    def usable_threads(self) -> int | None:
        """How many threads of the cluster can run a task now; raises when the cluster
        does not answer. None: this engine does not tell (the default; a backend that
        counts them sets `watches_workers` and answers, as Dask's does)."""
        return None

    def describe_no_workers(self, seconds: float, seen: bool, problem: str | None) -> str:
        """The reason the job fails with when the cluster had no usable worker."""
        return f"it {no_workers_text(seconds, seen, problem)}"

    def _watch(self) -> None:
        """The watchdog thread (module doc): sets `down` and wakes the scheduler when a
        busy pool's cluster has had no usable thread for too long."""
        none_since: float | None = None
        problem: str | None = None
        while not self._watch_stop.wait(WATCH_INTERVAL):
            with self._busy_lock:
                busy = self._outstanding > 0
                last_answer = self._last_answer
                seen = self._seen
            now = time.monotonic()
            if not busy:
                none_since = None
                continue
            if seen and now - last_answer < WATCH_INTERVAL:
                none_since = None  # tasks keep coming back: no need to ask
                continue
            try:
                threads = self.usable_threads()
                problem = None
            except Exception as exc:  # noqa: BLE001 - an unreachable cluster has no workers
                threads = 0
                problem = f"it did not answer: {type(exc).__name__}: {exc}"
            if threads is None:
                return  # the engine does not count its workers: nothing to watch
            if threads > 0:
                with self._busy_lock:
                    self._seen = True
                none_since = None
                continue
            if none_since is None:
                none_since = now
            limit = self.no_workers_timeout if seen else self.first_workers_timeout
            if now - none_since >= limit:
                self.down = self.describe_no_workers(limit, seen, problem)
                self.wake()
                return

    def close(self) -> None:
        self._watch_stop.set()

    # ------------------------------------------------------------ the engine

    @abstractmethod
    def submit(
        self, token: bytes, fn_bytes: bytes, mode: int, items: list, stride: int,
        timeout: float | None = None, budget: float | None = None,
    ) -> Any:
        """Start one batch as a remote task; return the engine's future for it. With a
        per-item `timeout` the task times its items itself (worker.run_timed_remote);
        with a `budget` it may run only a prefix of them (worker.run_budgeted)."""

    @abstractmethod
    def when_done(self, task: Any, callback) -> None:
        """Call `callback((True, result) | (False, exception))` once `task` has finished."""

    @abstractmethod
    def cancel(self, task: Any) -> None: ...

    @abstractmethod
    def worker_loss(self, error: BaseException) -> str | None:
        """A description if `error` says the remote worker died running the task (after
        the engine's own retries): the task may be what kills workers."""

    def node_loss(self, error: BaseException) -> str | None:
        """A description if `error` says the task's whole node (machine) died: not a
        task's doing by itself (the scheduler blames it only after repeated node deaths).
        None by default: the engine reports no such thing apart from worker deaths."""
        return None

    def cluster_gone(self, error: BaseException) -> str | None:
        """Asked after a loss: a description when the cluster can no longer run any task
        from this process (no live node, or this process's own node died). The job then
        fails with it, naming no input. None by default (the cluster heals itself)."""
        return None
