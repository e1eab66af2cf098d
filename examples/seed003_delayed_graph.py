"""Seed 003, "Task graphs": dask's delayed inc/add graph, run on a slicewise Pool.

    .venv/bin/python examples/seed003_delayed_graph.py

The seed builds `z = add(inc(1), inc(2))` with dask.delayed and calls `z.compute()`: two
seconds, because the two incs run at once. The same graph runs on a `sw.Pool` by naming the
pool as dask's scheduler; the tasks then run in worker processes with the engine's crash
handling (a worker that dies raises sw.WorkerLostError instead of hanging).
"""

from __future__ import annotations

import os
import time

import dask
from dask import delayed

import slicewise as sw


def inc(x):
    time.sleep(1)
    return x + 1


def add(x, y):
    time.sleep(1)
    return x + y


def crash(x):
    os._exit(9)  # a segfault, an OOM kill: the worker is gone


def main() -> None:
    x = delayed(inc)(1)
    y = delayed(inc)(2)
    z = delayed(add)(x, y)  # nothing has run yet: building the graph takes microseconds

    with sw.Pool(2) as pool:
        start = time.perf_counter()
        result = z.compute(scheduler=pool)  # or dask.compute(z, scheduler=pool)
        print(f"z = {result} in {time.perf_counter() - start:.2f} s (the seed: 2 s)")

        try:
            dask.compute(delayed(crash)(1), scheduler=pool)
        except sw.WorkerLostError as exc:
            print(f"a dying task is reported, not a hang: {type(exc).__name__}: {exc}")
        print("the pool still works:", delayed(inc)(41).compute(scheduler=pool))


if __name__ == "__main__":
    main()
