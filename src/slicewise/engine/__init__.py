"""engine: run a function over many items on every core, and survive whatever the items do.

    import slicewise as sw
    with sw.Pool() as pool:           # processes; backend="threads" | "serial" | "dask" | "ray"
        sizes = pool.map(load_and_resize, files, progress=True, on_error="collect",
                         report="run.html")          # report=: the run's timeline
    squares = sw.map(lambda x: x * x, range(10))  # a warm shared pool

Data flow (one `map` call):

    caller thread                scheduler thread (one per pool)         worker (process)
    ─────────────                ───────────────────────────────         ────────────────
    Pool.map(fn, items) ─► Job ─► take a batch of consecutive
      (fn cloudpickled once)      positions, sized by time ──────────► run fn per item,
                                  (batching.py)               pipe    writing its position
                                                                       to a progress slot
                                  settle: values, or Failure  ◄────── results (big buffers
                                  per failed position                  in shared memory,
    result_list(),            ◄── segments in input order               shm.py)
    next_segment()
                                  worker gone? (sentinel) the slot
                                  names the item; requeue the rest;
                                  start a replacement
                                  report=: Job.recorder notes each
                                  batch's slot and times ─► Timeline
                                  (timeline.py: HTML or PNG)

On "dask" and "ray" the worker column is a slot of the cluster (backends/cluster.py): a
batch is one remote task running the same batch loop (worker.run_remote_batch), its
result a "done" event, a dead remote worker a "lost" one.

Modules:
    pool.py          Pool (multiprocessing.Pool + concurrent.futures.Executor), AsyncResult,
                     ResultIterator; report= gives the call's Timeline
    default_pool.py  sw.map and get_default_pool: a warm shared pool (eval and the joblib
                     backend use it too)
    jobs.py          Job: one call's input, batches, settled results, errors, Future
    scheduler.py     the loop: dispatch, events, timeouts, death forensics, shutdown
    backends/        base.py (the Backend/Worker interface), processes.py, threads.py,
                     serial.py; cluster.py (a slot that runs batches as remote tasks)
                     under dask.py and ray.py
    worker.py        the batch loop, the process worker's main loop and protocol, and a
                     batch as a cluster task (run_remote_batch)
    batching.py      batch sizes aimed at ~25 ms of work (on a cluster, at least 4x the
                     measured task round trip)
    shm.py           pickle-5 out-of-band buffers in POSIX shared memory
    sharedarray.py   shared_array / SharedArray: one numpy array workers write in place
    errors.py        Failure, TaskError, WorkerLostError, TaskTimeoutError,
                     InitializerError, PoolClosedError
    cpu.py           cpu_count (affinity + cgroup quota)
    progress.py      the tqdm bar (a fixed-width text bar in notebooks without ipywidgets)
    timeline.py      Recorder (filled by the scheduler) and Timeline: batches per worker,
                     throughput, idle gaps, failures, as HTML (inline SVG) or PNG

Backends. A backend only starts workers and moves batches (backends/base.py: `Worker.send`,
`receive` events, `progress`, `has_exited`, `kill`, `stop`); batching, ordering, retries,
timeouts and failure forensics live in the scheduler and the job, so every backend has the
same semantics. "dask" and "ray" are one module each over backends/cluster.py: a Worker
per slot of the cluster submits a batch as one remote task and reports its completion (or
a remote worker that died running it) as an event; callers write `sw.Pool(backend="dask")`.

The default start method is forkserver on Linux (spawn elsewhere): a worker is forked from
a small single-threaded server that has already imported this package's worker module
and cloudpickle. It costs one server start per parent process (tens of ms) and then a few
ms per worker, and it never forks the caller, which may run threads (our scheduler thread
among them) -- forking those can deadlock. Workers never import the user's `__main__`:
functions and classes from it travel by value (cloudpickle).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module. Imported on first use: a worker process imports only
# slicewise.engine.worker, and must not pay for the pool, the scheduler or numpy.
_EXPORTS = {
    "AsyncResult": "slicewise.engine.pool",
    "Pool": "slicewise.engine.pool",
    "ResultIterator": "slicewise.engine.pool",
    "ResultList": "slicewise.engine.jobs",
    "Failure": "slicewise.engine.errors",
    "InitializerError": "slicewise.engine.errors",
    "PoolClosedError": "slicewise.engine.errors",
    "TaskError": "slicewise.engine.errors",
    "TaskTimeoutError": "slicewise.engine.errors",
    "WorkerLostError": "slicewise.engine.errors",
    "cpu_count": "slicewise.engine.cpu",
    "get_default_pool": "slicewise.engine.default_pool",
    "map": "slicewise.engine.default_pool",
    "shutdown_default_pool": "slicewise.engine.default_pool",
    "SharedArray": "slicewise.engine.sharedarray",
    "shared_array": "slicewise.engine.sharedarray",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'slicewise.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from slicewise.engine.cpu import cpu_count  # noqa: F401
    from slicewise.engine.default_pool import (  # noqa: F401
        get_default_pool,
        map,
        shutdown_default_pool,
    )
    from slicewise.engine.errors import (  # noqa: F401
        Failure,
        InitializerError,
        PoolClosedError,
        TaskError,
        TaskTimeoutError,
        WorkerLostError,
    )
    from slicewise.engine.jobs import ResultList  # noqa: F401
    from slicewise.engine.pool import AsyncResult, Pool, ResultIterator  # noqa: F401
    from slicewise.engine.sharedarray import SharedArray, shared_array  # noqa: F401
