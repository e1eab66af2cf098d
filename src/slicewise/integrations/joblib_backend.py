"""A joblib backend on slicewise's engine: `with joblib.parallel_backend("slicewise"):`
runs `joblib.Parallel(n_jobs=...)` and scikit-learn's `n_jobs` on an engine Pool.

    joblib.Parallel ─► SlicewiseBackend.submit(batch of calls) ─► engine Pool.submit
        (cloudpickle, the warm shared pool of n_jobs process workers) ─► a Future
    the engine's semantics hold: a call that raises re-raises its own exception class in
    the caller; a worker that dies (segfault, os._exit, OOM kill) is replaced and its
    call fails with WorkerLostError instead of hanging.

Registration is lazy: importing slicewise installs `_joblib_hook`, which adds "slicewise"
to joblib's external backends when (and if) joblib is imported; joblib imports this
module the first time the backend is asked for. Importing slicewise never imports joblib.
"""

from __future__ import annotations

from typing import Any

from joblib.parallel import ParallelBackendBase, register_parallel_backend

try:  # joblib >= 1.3
    from joblib._parallel_backends import AutoBatchingMixin
except ImportError:  # pragma: no cover
    AutoBatchingMixin = object


class SlicewiseBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's calls as tasks of an engine Pool (`backend="processes"` by default; pass
    `backend="threads"` or a `pool=` of your own through `parallel_backend("slicewise",
    ...)`)."""

    supports_retrieve_callback = True
    supports_timeout = True
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = -1

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: Any = None,
                 pool: Any = None, backend: str = "processes", **kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._given_pool = pool
        self._engine_backend = backend
        self._pool: Any = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        from slicewise.engine import cpu_count

        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if self._given_pool is not None:
            return int(getattr(self._given_pool, "_processes", None) or cpu_count())
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(cpu_count() + 1 + n_jobs, 1)
        return int(n_jobs)

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **kwargs: Any) -> int:
        from joblib._parallel_backends import FallbackToBackend, SequentialBackend

        n_jobs = self.effective_n_jobs(n_jobs)
        self.parallel = parallel
        if n_jobs == 1 and self._given_pool is None:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        if require == "sharedmem" and self._engine_backend != "threads":
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        if self._given_pool is not None:
            self._pool = self._given_pool
        else:
            from slicewise.engine import get_default_pool

            self._pool = get_default_pool(n_jobs, self._engine_backend)
        return n_jobs

    def submit(self, func: Any, callback: Any = None) -> Any:
        future = self._pool.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def retrieve_result(self, future: Any, timeout: float | None = None) -> Any:
        return future.result(timeout=timeout)

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: the rest of this Parallel call is not wanted. The shared pool's
        other work is left alone; queued calls of ours are cancelled."""
        self._pool = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)

    def terminate(self) -> None:
        self._pool = None
        if hasattr(self, "reset_batch_stats"):
            self.reset_batch_stats()


def register() -> None:
    """Register the "slicewise" joblib backend (what the lazy hook calls)."""
    register_parallel_backend("slicewise", SlicewiseBackend)
