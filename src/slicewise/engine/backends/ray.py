"""The "ray" backend: batches run as Ray tasks.

    sw.Pool(backend="ray")      # Ray as initialised; ray.init() (local) when it is not

As Ray does for its own API, the pool initialises Ray on first use when nobody has
(`ray.init()`: a local Ray with every CPU); connect to a cluster first with
`ray.init(address=...)`. The pool has one slot per CPU Ray reports, unless `workers=`
says otherwise. Each batch is one task (`num_cpus=1`). A task whose worker process dies
is retried by Ray (`max_retries`, 1 here) and then fails with a worker-crash error:
slicewise runs that batch's items one by one, and the item that keeps killing workers
fails with `sw.WorkerLostError` naming it. See backends/cluster.py for the rest.
"""

from __future__ import annotations

from typing import Any

from slicewise.engine.backends.cluster import ClusterBackend
from slicewise.engine.worker import run_remote_batch

TASK_RETRIES = 1  # Ray re-runs a task whose worker died this many times before failing it


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backend='ray' needs Ray: pip install 'slicewise[ray]'") from exc
    return ray


class RayBackend(ClusterBackend):
    name = "ray"
    engine = "Ray"

    def __init__(self, workers: int, **options: Any) -> None:
        super().__init__(workers, **options)
        if self.client_option is not None:
            raise ValueError("client= is for backend='dask'; for Ray call ray.init(address=...)")
        ray = _ray()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(run_remote_batch)

    def submit(self, token: bytes, fn_bytes: bytes, mode: int, items: list, stride: int) -> Any:
        return self._task.remote(self.pool_token, self.init_bytes, token, fn_bytes, mode,
                                 items, stride)

    def when_done(self, task: Any, callback) -> None:
        ray = _ray()

        def done(future: Any) -> None:
            try:
                outcome = (True, future.result())
            except BaseException as exc:
                cause = exc
                if isinstance(exc, ray.exceptions.RayTaskError):
                    cause = exc.as_instanceof_cause()  # the task's own error
                outcome = (False, cause)
            callback(outcome)

        task.future().add_done_callback(done)

    def cancel(self, task: Any) -> None:
        try:
            _ray().cancel(task, force=True)
        except Exception:
            pass

    def worker_loss(self, error: BaseException) -> str | None:
        exceptions = _ray().exceptions
        lost = tuple(
            getattr(exceptions, name)
            for name in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                         "OutOfMemoryError")
            if hasattr(exceptions, name)
        )
        if isinstance(error, lost):
            return f"the Ray worker died running it: {type(error).__name__}: {error}"
        return None
