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
Dask future among the items is not replaced by its value). See backends/cluster.py for
the rest.
"""

from __future__ import annotations

from typing import Any

from slicewise.engine.backends.cluster import ClusterBackend
from slicewise.engine.worker import run_remote_batch


class _Items:
    """A batch's items, opaque to Dask's argument walk (module docstring)."""

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items

    def __reduce__(self):
        return (_Items, (self.items,))


def run_boxed_batch(pool_token: str, init_bytes: bytes | None, token: bytes, fn_bytes: bytes,
                    mode: int, items: _Items, stride: int) -> tuple:
    """The remote task: `worker.run_remote_batch` on the boxed items."""
    return run_remote_batch(pool_token, init_bytes, token, fn_bytes, mode, items.items, stride)


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

    def __init__(self, workers: int, **options: Any) -> None:
        super().__init__(workers, **options)
        self.client, self._owned = connect(self.client_option)
        if self.workers is None:
            self.workers = cluster_threads(self.client)

    def submit(self, token: bytes, fn_bytes: bytes, mode: int, items: list, stride: int) -> Any:
        return self.client.submit(
            run_boxed_batch, self.pool_token, self.init_bytes, token, fn_bytes, mode,
            _Items(items), stride, pure=False,
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
        return None

    def close(self) -> None:
        if self._owned:
            _close(self.client)


def _close(client: Any) -> None:
    cluster = getattr(client, "cluster", None)
    try:
        client.close()
    finally:
        if cluster is not None:
            cluster.close()
