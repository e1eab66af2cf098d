"""The "ray" backend: batches run as Ray tasks.

    sw.Pool(backend="ray")      # Ray as initialised; ray.init() (local) when it is not

As Ray does for its own API, the pool initialises Ray on first use when nobody has
(`ray.init()`: a local Ray with every CPU); connect to a cluster first with
`ray.init(address=...)`. The pool has one slot per CPU Ray reports, unless `workers=`
says otherwise. Each batch is one task (`num_cpus=1`).

How a death is told apart from an item's fault (the scheduler's rules, scheduler.py):

    the task's worker process dies   Ray re-runs the task (`max_retries`, 1 here); a
      (WorkerCrashedError, OOM)        second death fails it with a worker-crash error:
                                       "lost" (scope "worker"): slicewise runs the batch's
                                       items one by one, gives a lone item that dies so
                                       again one more run, and only then fails it with
                                       `sw.WorkerLostError` naming it (it was running at
                                       4 worker deaths). One outside kill never gets that
                                       far: Ray's own retry absorbs it.
    the task's node dies             "lost" (scope "node"): the batch runs again, nobody
      (NodeDiedError)                  blamed (an outside event), unless that keeps
                                       happening to the same batch
    no node is alive, or this        "lost" (scope "cluster"): Ray cannot run anything for
      process's raylet died            this process any more; the job fails with that
      (LocalRayletDiedError)           reason, naming no input. A local Ray whose raylet
                                       was killed is gone for good: `ray.shutdown()` and
                                       `ray.init()` again.

A cluster with no CPU left to run a task fails the call instead of hanging it (Ray keeps
such tasks pending, by default forever: a head node started with `num_cpus=0` whose
worker nodes died, or that waits for nodes that never come). While the pool has tasks
out and none came back in the last second, the watchdog (backends/cluster.py) adds up the
CPUs of the nodes Ray reports alive (`ray.nodes()`), once a second:

    CPUs were seen in this busy spell, then none    fails after NO_CPU_SECONDS (300 s;
                                                    env SLICEWISE_RAY_NO_CPU_TIMEOUT)
    the spell began with none (nodes still to come) fails after FIRST_CPU_SECONDS (300 s;
                                                    env SLICEWISE_RAY_FIRST_CPU_TIMEOUT)
    Ray's control store does not answer             counted as no CPU

CPUs that exist but are all busy with other work are not "none": the call waits for them,
as Ray does. The call then fails with "the Ray cluster can no longer run tasks: it has had
no worker able to run a task for 300 s ... (no CPU on the N nodes alive)", naming no input;
an eval commits nothing.

See backends/cluster.py for the rest.
"""

from __future__ import annotations

import os
from typing import Any

from slicewise.engine.backends.cluster import ClusterBackend, no_workers_text
from slicewise.engine.worker import run_remote_batch

TASK_RETRIES = 1  # Ray re-runs a task whose worker died this many times before failing it
NO_CPU_SECONDS = 300.0  # a busy pool's cluster with no CPU this long: the call fails
# (not Dask's 30 s: a nanny restarts a worker in seconds, an autoscaler replaces a node
# in minutes)
FIRST_CPU_SECONDS = 300.0  # the same when no CPU was seen since the work was sent


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backend='ray' needs Ray: pip install 'slicewise[ray]'") from exc
    return ray


class RayBackend(ClusterBackend):
    name = "ray"
    engine = "Ray"
    watches_workers = True

    def __init__(self, workers: int, **options: Any) -> None:
        super().__init__(workers, **options)
        self.no_workers_timeout = _env_seconds("SLICEWISE_RAY_NO_CPU_TIMEOUT", NO_CPU_SECONDS)
        self.first_workers_timeout = _env_seconds(
            "SLICEWISE_RAY_FIRST_CPU_TIMEOUT", FIRST_CPU_SECONDS
        )
        self._alive_nodes = 0
        if self.client_option is not None:
            raise ValueError("client= is for backend='dask'; for Ray call ray.init(address=...)")
        ray = _ray()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(run_remote_batch)

    def usable_threads(self) -> int:
        """CPUs of the nodes alive (busy or not: a busy one frees up; none never does)."""
        alive = [node for node in _ray().nodes() if node.get("Alive")]
        self._alive_nodes = len(alive)
        return int(sum(float((node.get("Resources") or {}).get("CPU", 0)) for node in alive))

    def describe_no_workers(self, seconds: float, seen: bool, problem: str | None) -> str:
        where = problem or f"no CPU on the {self._alive_nodes} Ray node(s) alive"
        variable = "SLICEWISE_RAY_NO_CPU_TIMEOUT" if seen else "SLICEWISE_RAY_FIRST_CPU_TIMEOUT"
        return (f"it {no_workers_text(seconds, seen, None)} ({where}; the wait is the "
                f"environment variable {variable}, in seconds)")

    def submit(
        self, token: bytes, fn_bytes: bytes, mode: int, items: list, stride: int,
        timeout: float | None = None, budget: float | None = None,
    ) -> Any:
        return self._task.remote(
            self.pool_token, self.init_bytes, token, fn_bytes, mode, items, stride, timeout,
            budget,
        )

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
        if isinstance(error, _exception_types("WorkerCrashedError", "OutOfMemoryError")):
            return f"the Ray worker died running it: {type(error).__name__}: {error}"
        return None

    def node_loss(self, error: BaseException) -> str | None:
        if isinstance(error, _exception_types("NodeDiedError", "LocalRayletDiedError")):
            return f"the Ray node died under it: {type(error).__name__}: {error}"
        return None

    def cluster_gone(self, error: BaseException) -> str | None:
        if isinstance(error, _exception_types("LocalRayletDiedError")):
            return (
                "this process's Ray node (its raylet) is gone, so Ray cannot run tasks "
                "for it any more (ray.shutdown(), then ray.init() again)"
            )
        try:
            nodes = _ray().nodes()
        except Exception as exc:  # noqa: BLE001 - the control store itself is unreachable
            return f"Ray's control store (GCS) cannot be reached: {type(exc).__name__}: {exc}"
        if any(node.get("Alive") for node in nodes):
            return None
        reasons = sorted(
            {str(node.get("DeathReasonMessage") or "no reason given") for node in nodes}
        )
        return f"no Ray node is alive any more ({'; '.join(reasons) or 'no nodes'})"


def _exception_types(*names: str) -> tuple[type, ...]:
    """Ray's exception classes of these names (those this Ray version has)."""
    exceptions = _ray().exceptions
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


def _env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable `name`, else `default`."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"environment variable {name} must be a positive number of "
                         f"seconds, got {value!r}")
    return seconds
