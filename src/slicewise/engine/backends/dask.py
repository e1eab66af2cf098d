"""The "dask" backend: batches run as tasks on a Dask distributed cluster.

    sw.Pool(backend="dask")                   # the current distributed Client
    sw.Pool(backend="dask", client=client)    # a given Client
    sw.Pool(backend="dask", client="tcp://scheduler:8786")   # connect to a scheduler

With no Client around, `sw.Pool(backend="dask")` starts a LocalCluster (processes, one
thread each, as many as usable CPUs), as `distributed.Client()` does, and closes it with
the pool. The pool has one slot per cluster thread unless `workers=` says otherwise.

Dask re-runs a task whose worker died (up to `distributed.scheduler.allowed-failures`
times) and then raises `KilledWorker`: slicewise runs that batch's items one by one, and
the item that keeps killing workers fails with `sw.WorkerLostError` naming it. Futures
are released as their results arrive (nothing holds a finished future, so a later worker
death never re-runs finished work). A batch's items travel in an `_Items` box: Dask walks
a task's list arguments (for futures and nested tasks), which cost ~1 ms per 1,000 items
on the client, and the function gets each item as it was given, as on every backend (a
Dask future among the items is not replaced by its value).

A cluster left with no worker fails the call instead of hanging it (Dask itself keeps
the tasks queued until a worker comes, by default forever). While the pool has tasks out,
a watchdog thread (backends/cluster.py) asks the scheduler for its running workers'
threads (`ncores_running`: workers whose status is "running"; paused, closing or retiring
ones cannot take a task) once a second, when no task came back in that second:

    workers were seen in this busy spell, then none    fails after `no-workers-timeout`
      for NO_WORKERS_SECONDS (30 s)                      (a nanny restarts a killed worker
                                                         in a few seconds: not a failure)
    the spell began with none (a cluster starting,     fails after `first-workers-timeout`
      an adaptive one scaling up from zero)              FIRST_WORKERS_SECONDS (300 s)
    the scheduler does not answer                      counted as no worker

The call then fails with "the Dask cluster can no longer run tasks: its scheduler at
tcp://... has had no worker able to run a task for 30 s ...", naming no input; an eval
commits nothing. Both times are read from Dask's config when the pool starts, in seconds or as
Dask durations: `dask.config.set({"slicewise.no-workers-timeout": "2 minutes",
"slicewise.first-workers-timeout": "15 minutes"})`. A scheduler configured with Dask's
own `distributed.scheduler.no-workers-timeout` fails the queued tasks with
`NoWorkerError`: that too fails the call as a cluster that cannot run tasks.

See backends/cluster.py for the rest.
"""

from __future__ import annotations

from typing import Any

from slicewise.engine.backends.cluster import ClusterBackend, no_workers_text
from slicewise.engine.worker import run_remote_batch

NO_WORKERS_SECONDS = 30.0  # a busy pool's cluster with no worker this long: the call fails
FIRST_WORKERS_SECONDS = 300.0  # the same when no worker was seen since the work was sent
QUERY_SECONDS = 10.0  # the watchdog's question to the scheduler: no answer by then is none


class _Items:
    """A batch's items, opaque to Dask's argument walk (module docstring)."""

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items

    def __reduce__(self):
        return (_Items, (self.items,))


def run_boxed_batch(pool_token: str, init_bytes: bytes | None, token: bytes, fn_bytes: bytes,
                    mode: int, items: _Items, stride: int, timeout: float | None = None,
                    budget: float | None = None) -> tuple:
    """The remote task: `worker.run_remote_batch` on the boxed items."""
    return run_remote_batch(
        pool_token, init_bytes, token, fn_bytes, mode, items.items, stride, timeout, budget
    )


def _distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='dask' needs dask's distributed scheduler: pip install 'slicewise[dask]'"
        ) from exc
    return distributed


def connect(client: Any = None) -> tuple[Any, bool]:
    """(a distributed Client, whether this call made it and must close it)."""
    distributed = _distributed()
    if isinstance(client, distributed.Client):
        return client, False
    if client is not None:
        return distributed.Client(client), True  # a scheduler address
    try:
        return distributed.get_client(), False
    except ValueError:  # no client: start a local cluster, as Client() does
        from slicewise.engine.cpu import cpu_count

        cluster = distributed.LocalCluster(
            n_workers=cpu_count(), threads_per_worker=1, processes=True,
            dashboard_address=None,
        )
        return distributed.Client(cluster), True


def cluster_threads(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


class DaskBackend(ClusterBackend):
    name = "dask"
    engine = "Dask"
    watches_workers = True

    def __init__(self, workers: int, **options: Any) -> None:
        super().__init__(workers, **options)
        self.no_workers_timeout = _config_seconds(
            "slicewise.no-workers-timeout", NO_WORKERS_SECONDS
        )
        self.first_workers_timeout = _config_seconds(
            "slicewise.first-workers-timeout", FIRST_WORKERS_SECONDS
        )
        self.client, self._owned = connect(self.client_option)
        self.address = getattr(self.client.scheduler, "address", None) or "?"
        if self.workers is None:
            self.workers = cluster_threads(self.client)

    def usable_threads(self) -> int:
        client = self.client
        running = client.sync(client.scheduler.ncores_running, callback_timeout=QUERY_SECONDS)
        return sum(running.values())

    def describe_no_workers(self, seconds: float, seen: bool, problem: str | None) -> str:
        if seen:
            hint = (
                " (its workers died or were retired and none came back; the wait is "
                "dask.config 'slicewise.no-workers-timeout')"
            )
        else:
            hint = " (the wait is dask.config 'slicewise.first-workers-timeout')"
        described = no_workers_text(seconds, seen, problem)
        return f"its scheduler at {self.address} {described}{hint}"

    def submit(
        self, token: bytes, fn_bytes: bytes, mode: int, items: list, stride: int,
        timeout: float | None = None, budget: float | None = None,
    ) -> Any:
        return self.client.submit(
            run_boxed_batch, self.pool_token, self.init_bytes, token, fn_bytes, mode,
            _Items(items), stride, timeout, budget, pure=False,
        )

    def when_done(self, task: Any, callback) -> None:
        def done(future: Any) -> None:
            try:
                outcome = (True, future.result())
            except BaseException as exc:  # the task failed (the user's errors come packed)
                outcome = (False, exc)
            future.release()  # nothing holds a finished task: a later death never re-runs it
            callback(outcome)

        task.add_done_callback(done)

    def cancel(self, task: Any) -> None:
        try:
            task.cancel()
        except Exception:
            pass

    def worker_loss(self, error: BaseException) -> str | None:
        killed = getattr(_distributed(), "KilledWorker", None)
        if killed is not None and isinstance(error, killed):
            return f"Dask worker(s) died running it: {error}"
        if isinstance(error, _no_worker_errors()):
            return f"Dask failed it for want of workers: {error}"
        return None

    def cluster_gone(self, error: BaseException) -> str | None:
        if isinstance(error, _no_worker_errors()):
            return (
                f"its scheduler at {self.address} has no worker to run tasks "
                "(distributed.scheduler.no-workers-timeout passed)"
            )
        return None

    def close(self) -> None:
        super().close()
        if self._owned:
            _close(self.client)


def _no_worker_errors() -> tuple[type, ...]:
    """The error Dask's own `no-workers-timeout` fails queued tasks with."""
    scheduler = __import__("distributed.scheduler").scheduler
    error = getattr(scheduler, "NoWorkerError", None)
    return (error,) if error is not None else ()


def _config_seconds(key: str, default: float) -> float:
    """A time from Dask's config (seconds, or a duration such as "2 minutes")."""
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get(key, default)
    seconds = parse_timedelta(value, default="seconds")
    if seconds is None or seconds <= 0:
        raise ValueError(f"dask config {key!r} must be a positive time, got {value!r}")
    return float(seconds)


def _close(client: Any) -> None:
    cluster = getattr(client, "cluster", None)
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()
