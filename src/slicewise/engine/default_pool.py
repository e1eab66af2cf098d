"""`sw.map`: one call on a pool that stays warm between calls (like loky's reusable
executor). The pool is created on first use, kept while calls ask for the same workers
and backend, replaced when they ask for others or when it broke or was terminated (a
Ctrl-C terminates it), and terminated at interpreter exit."""

from __future__ import annotations

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
    """Terminate the shared pool now (the next `sw.map` starts a new one)."""
    global _pool, _pool_key
    with _lock:
        if _pool is not None:
            _pool.terminate()
        _pool, _pool_key = None, None


def map(fn: Callable, iterable: Iterable, *, workers: int | None = None,
        backend: str = "processes", start_method: str | None = None, **options: Any) -> list:
    """`fn` on every item of `iterable`, in parallel on the shared warm pool; a list of
    results in input order. Takes the options of `Pool.map` (chunksize, ordered,
    progress, on_error, retries, timeout)."""
    pool = get_default_pool(workers, backend, start_method)
    return pool.map(fn, iterable, **options)
