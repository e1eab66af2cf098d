"""The backend interface: how the scheduler talks to workers of any kind.

The scheduler (engine/scheduler.py) owns the jobs, the batching and every failure rule;
a backend only starts workers and moves batches. A `Worker` is one slot that runs one
batch at a time (it may hold a second one queued):

    send(batch)        hand over a batch (the scheduler appended it to `inflight`)
    flush()            send what `send` had to hold back (a pipe must not block)
    waitables()        objects `multiprocessing.connection.wait` can watch for news
    receive()          drain news as events:
                         ("ready",)                               started, initializer ran
                         ("init_failed", packed_failure)          the initializer raised
                         ("done", seq, seconds, values, packed_failures)
                         ("bad", seq, stage, packed_failure)      batch could not be unpickled
                         ("undecodable", seq, exception)          results could not be unpickled
                         ("lost", seq, description, scope)        a remote worker died running
                                                                  the batch (cluster backends;
                                                                  scope: cluster.py)
    progress()         (seq, phase, position, started_ns) of what it is running now
    has_exited()       True once the worker is gone; `exitcode` then says how
    kill() / stop()    end it now / after its current batch
    reap(timeout)      wait for it to be gone; release its resources
    release_idle()     the pool is idle: drop memory kept only for speed

A backend (`Backend`) makes workers and may prepare a job once per call (the process
backend cloudpickles the function there). `inline = True` marks a backend whose workers
run in the caller's thread (serial): the scheduler is then pumped by the waiting caller
instead of running in its own thread.

"dask" and "ray" (dask.py, ray.py) share cluster.py: a Worker (a slot of the cluster)
submits each batch as a remote task (`send`), turns its completion into a "done" event
(`receive`), and reports a remote worker that died as a "lost" event. A backend may be
given `workers=None` and set `self.workers` itself (a cluster's size).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slicewise.engine.jobs import Batch, Job

# backend name -> "module:Class", imported only when used
BACKENDS: dict[str, str] = {
    "processes": "slicewise.engine.backends.processes:ProcessBackend",
    "threads": "slicewise.engine.backends.threads:ThreadBackend",
    "serial": "slicewise.engine.backends.serial:SerialBackend",
    "dask": "slicewise.engine.backends.dask:DaskBackend",
    "ray": "slicewise.engine.backends.ray:RayBackend",
}
# backends whose workers are a cluster's: their size comes from the cluster
CLUSTER_BACKENDS = ("dask", "ray")


class ArgumentsNotPicklable(Exception):
    """`Worker.send` could not pickle a batch's items (the scheduler finds which)."""


class Worker(ABC):
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.inflight: deque[Batch] = deque()
        self.items_assigned = 0
        self.timed_out: tuple[int, int] | None = None  # (batch seq, offset) killed for it
        self.exitcode: int | None = None
        self.pid: int | None = None
        self.ready = False  # set by the scheduler on the worker's "ready" event

    @abstractmethod
    def send(self, batch: Batch) -> None: ...

    def flush(self) -> None:
        return None

    def waitables(self) -> list:
        return []

    @abstractmethod
    def receive(self) -> list[tuple]: ...

    @abstractmethod
    def progress(self) -> tuple[int, int, int, int]: ...

    @abstractmethod
    def has_exited(self) -> bool: ...

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def reap(self, timeout: float) -> None:
        return None

    def release_idle(self) -> None:
        """The pool has nothing to do: let go of memory kept for speed."""
        return None


class Backend(ABC):
    name: str = ""
    inline: bool = False

    def __init__(
        self,
        workers: int,
        *,
        initializer: Callable | None,
        initargs: tuple,
        start_method: str | None,
        wake: Callable[[], None],
    ) -> None:
        self.workers = workers
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.start_method = start_method
        self.wake = wake

    def prepare(self, job: Job) -> None:
        """Called once per job in the caller's thread, before it is scheduled."""
        return None

    @abstractmethod
    def start_worker(self, slot: int) -> Worker: ...

    def worker_lost(self, worker: Worker) -> None:
        """Clean up after a worker that died (its shared-memory leftovers)."""
        return None

    def close(self) -> None:
        return None


def backend_class(name: str) -> type[Backend]:
    target = BACKENDS.get(name) if isinstance(name, str) else None
    if target is None:
        choices = ", ".join(repr(n) for n in BACKENDS)
        raise ValueError(f"unknown backend {name!r}; choose one of {choices}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
