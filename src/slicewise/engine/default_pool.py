"""`sw.map`: one call on a pool that stays warm between calls (like loky's reusable
executor). The pool is created on first use, kept while calls ask for the same workers
and backend, replaced when they ask for others or when it broke or was terminated (a
Ctrl-C terminates it), and terminated at interpreter exit."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from slicewise.engine.backends.base import CLUSTER_BACKENDS
from slicewise.engine.cpu import cpu_count
from slicewise.engine.pool import Pool

_lock = threading.Lock()
_pool: Pool | None = None
_pool_key: tuple | None = None


def get_default_pool(workers: int | None = None, backend: str = "processes",
                     start_method: str | None = None) -> Pool:
    """The shared warm pool for these settings (created or replaced as needed)."""
    global _pool, _pool_key
    if workers is None and backend in CLUSTER_BACKENDS:
        size = None  # the cluster's CPUs, counted by the pool
    else:
        size = workers or (1 if backend == "serial" else cpu_count())
    key = (size, backend, start_method)
    with _lock:
        pool = _pool
        if pool is not None and (_pool_key != key or not pool._scheduler.alive):
            pool.terminate()
            pool = None
        if pool is None:
            pool = Pool(key[0], backend, start_method=start_method)
            _pool, _pool_key = pool, key
        return pool


def shutdown_default_pool() -> None:
    """Terminate the shared pool now (the next `sw.map` starts a new one).

    Does nothing when no shared pool is running.

    Example:
        >>> sw.shutdown_default_pool()
    """
    global _pool, _pool_key
    with _lock:
        if _pool is not None:
            _pool.terminate()
        _pool, _pool_key = None, None


def map(fn: Callable, iterable: Iterable, *, workers: int | None = None,
        backend: str = "processes", start_method: str | None = None,
        chunksize: int | str = "auto", ordered: bool = True, progress: bool | str = False,
        on_error: str = "raise", retries: int = 0, timeout: float | None = None,
        report: bool | str | os.PathLike | None = None) -> Any:
    """`fn` on every item of `iterable`, in parallel on the shared warm pool.

    `workers`, `backend`, `start_method` choose the pool (kept warm while calls ask for
    the same); the other options are `Pool.map`'s.

    Args:
        fn: the function, called as `fn(item)`.
        iterable: the items.
        workers: the pool's workers (default: `cpu_count()`).
        backend: "processes", "threads", "serial", "dask" or "ray".
        start_method: the process backend's start method (default: forkserver on Linux).
        chunksize: items per batch ("auto": batches of ~25 ms of work).
        ordered: as `Pool.map`.
        progress: show a progress bar (True or a description).
        on_error: "raise", "skip" or "collect", as `Pool.map`.
        retries: re-runs of a failed item.
        timeout: seconds per item.
        report: True or a .html/.png path: the list gets a `.report` timeline.

    Returns:
        The results in input order, as `Pool.map`.

    Raises:
        Exception: what `Pool.map` raises: the function's own exception
            (on_error="raise"), WorkerLostError, TaskTimeoutError.

    Example:
        >>> sw.map(lambda x: x * x, range(4))
        [0, 1, 4, 9]
    """
    pool = get_default_pool(workers, backend, start_method)
    return pool.map(fn, iterable, chunksize=chunksize, ordered=ordered, progress=progress,
                    on_error=on_error, retries=retries, timeout=timeout, report=report)
