"""What `eval` settles before anything runs (run.py calls these): the engine backend for
Deep Lake 3's (scheduler, num_workers), the output dataset and its checks, the input (a
read-only handle of a Dataset input's committed version, padded when asked), and the
pool the batches run on.

    choose_backend(scheduler, num_workers) -> (backend, workers)
    resolve_target(data_in, ds_out)        -> the dataset written (ds_out, or data_in in
                                              place); refused: not a Dataset, read-only,
                                              a padded view
    open_input(data_in, backend, pad)      -> InputSource (inputs.py) pinned to now
    start_pool / open_pool(backend, n)     -> the warm shared process pool (its forkserver
                                              preloads EVAL_WORKER_MODULES), or a pool of
                                              the eval's own for threads and serial
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

from slicewise.transform.errors import (
    InvalidInputDataError,
    InvalidOutputDatasetError,
    UnsupportedSchedulerError,
)
from slicewise.transform.inputs import InputSource, open_source

SCHEDULERS = {"serial": "serial", "threaded": "threads", "processed": "processes",
              "dask": "dask", "ray": "ray"}
# backends whose workers are other processes (maybe other machines): they see storage only
OUT_OF_PROCESS = ("processes", "dask", "ray")


def choose_backend(scheduler: str, num_workers: int) -> tuple[str, int]:
    """Deep Lake 3's (scheduler, num_workers) -> the engine backend and its worker count."""
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if scheduler not in SCHEDULERS:
        raise UnsupportedSchedulerError(
            f"unknown scheduler {scheduler!r}; use 'serial', 'threaded', 'processed', "
            "'dask' or 'ray'"
        )
    if num_workers == 0 or scheduler == "serial":
        return "serial", 1
    return SCHEDULERS[scheduler], num_workers


def resolve_target(data_in: Any, ds_out: Any, read_only_ok: bool) -> Any:
    from slicewise.dataset import Dataset

    if ds_out is None:
        if not isinstance(data_in, Dataset):
            raise InvalidOutputDatasetError(
                "ds_out is None (in place) but data_in is not a slicewise Dataset; pass the "
                "output dataset as the second argument of eval"
            )
        target = data_in
    else:
        if not isinstance(ds_out, Dataset):
            raise InvalidOutputDatasetError(
                f"ds_out must be a slicewise Dataset (sw.empty / sw.load), got "
                f"{type(ds_out).__name__}"
            )
        target = ds_out
    if getattr(target, "pad_tensors", False):
        raise InvalidOutputDatasetError(
            f"the output dataset {getattr(target, 'path', '')!r} is a padded read view "
            "(padded() / pad_tensors=True), which cannot be written; pass the dataset "
            "itself (sw.load(path)) as ds_out, and pad_data_in=True to pad the input"
        )
    if getattr(target, "read_only", False) and not read_only_ok:
        raise InvalidOutputDatasetError(
            f"the output dataset {getattr(target, 'path', '')!r} is open read-only; load it "
            "with read_only=False"
        )
    return target


def tensor_names(ds: Any) -> list[str]:
    return list(ds.tensors)


def row_count(ds: Any) -> int:
    return max((len(ds[name]) for name in tensor_names(ds)), default=0)


def check_equal_lengths(ds: Any) -> None:
    lengths = {name: len(ds[name]) for name in tensor_names(ds)}
    if len(set(lengths.values())) > 1:
        raise InvalidOutputDatasetError(
            f"the output dataset's tensors have different lengths {lengths}; eval appends "
            "whole rows (pass check_lengths=False to allow it)"
        )


def version_of(ds: Any) -> Any:
    version = getattr(ds, "version", None)
    return getattr(version, "id", version)


def open_input(data_in: Any, backend: str, pad_data_in: bool) -> InputSource:
    if pad_data_in:
        data_in = padded_input(data_in, backend)
    source = open_source(data_in)
    if source.kind == "indexed":
        source.data = read_handle(data_in, backend)
    return source


def padded_input(data_in: Any, backend: str) -> Any:
    """Deep Lake 3's pad_data_in: a Dataset input is as long as its longest tensor, and a
    shorter tensor's rows past its end read as empty samples (Dataset.padded). Other
    inputs have no tensors to pad."""
    from slicewise.dataset import Dataset

    if isinstance(data_in, Dataset):
        check_readable(data_in, backend)
        return data_in if data_in.pad_tensors else data_in.padded()
    warnings.warn(
        f"pad_data_in=True has no effect: it pads the shorter tensors of a Dataset input, "
        f"and data_in is a {type(data_in).__name__}",
        stacklevel=5,
    )
    return data_in


def read_handle(data_in: Any, backend: str) -> Any:
    """A read-only handle on the committed version of a Dataset (or Tensor) input, which
    workers index: the eval's own commits (in place, checkpoints) do not move it, and it
    pickles as (url, version, padding) for process workers."""
    check_readable(getattr(data_in, "dataset", data_in), backend)
    return pickle.loads(pickle.dumps(data_in))


def check_readable(dataset: Any, backend: str) -> None:
    """Workers read a Dataset input's committed version, from its storage."""
    if getattr(dataset, "has_pending", False):
        raise InvalidInputDataError(
            f"data_in ({dataset.path!r}) has uncommitted changes, which workers cannot "
            "see; commit them first (ds.commit())"
        )
    if backend in OUT_OF_PROCESS and str(dataset.path).startswith("memory://"):
        raise InvalidInputDataError(
            f"data_in is the in-memory dataset {dataset.path!r}, which process workers "
            "cannot see; use scheduler='threaded', or store the dataset on disk"
        )


# what every eval worker imports (the batch runner, the dataset writer, and sw.read's
# module, which user functions call): preloaded by a forkserver the eval starts
EVAL_WORKER_MODULES = ("slicewise.transform.worker", "slicewise.format", "slicewise.dataset")


def start_pool(workers: int) -> None:
    """The shared process pool, started now (its workers come up in the background). A
    forkserver started by this call imports what eval workers need once, instead of each
    worker on its first batch. Best effort: open_pool raises what starting it raises."""
    from slicewise.engine import get_default_pool  # as open_pool
    from slicewise.engine.backends.processes import preload_in_forkserver

    try:
        preload_in_forkserver(EVAL_WORKER_MODULES)
        get_default_pool(workers, "processes")
    except Exception:  # noqa: BLE001 - reported by open_pool, inside the eval's handling
        pass


@contextlib.contextmanager
def open_pool(backend: str, workers: int) -> Iterator[Any]:
    """Processes: the engine's warm shared pool (an eval on a warm pool pays no worker
    start-up), left running afterwards. Threads and serial: a pool of this eval's own."""
    from slicewise.engine import Pool, get_default_pool

    if backend == "processes":
        yield get_default_pool(workers, "processes")
        return
    with Pool(workers, backend=backend) as pool:
        yield pool
