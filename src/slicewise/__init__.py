"""slicewise: run a function over many items on every core, and store the results in a
chunked, compressed, versioned dataset of tensors.

    import slicewise as sw

    with sw.Pool() as pool:                              # engine/
        sizes = pool.map(load_and_resize, files, progress=True)

    ds = sw.empty("./animals_ds")                        # dataset/ over format/
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        file_to_ds(class_names=names).eval(files, ds, num_workers=2)   # transform/

    ds.images.dask().mean().compute()                    # integrations/

The public names below are imported lazily, so `import slicewise` stays cheap: worker
processes import it at start-up, and each millisecond there is paid per worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # engine: the parallel pool
    "Pool": "slicewise.engine",
    "map": "slicewise.engine",
    "cpu_count": "slicewise.engine",
    "TaskError": "slicewise.engine",
    "WorkerLostError": "slicewise.engine",
    "TaskTimeoutError": "slicewise.engine",
    "SharedArray": "slicewise.engine",
    "shared_array": "slicewise.engine",
    "Failure": "slicewise.engine",
    "InitializerError": "slicewise.engine",
    "PoolClosedError": "slicewise.engine",
    "shutdown_default_pool": "slicewise.engine",
    # dataset: Deep Lake 3 names
    "Dataset": "slicewise.dataset",
    "Tensor": "slicewise.dataset",
    "Group": "slicewise.dataset",
    "empty": "slicewise.dataset",
    "load": "slicewise.dataset",
    "dataset": "slicewise.dataset",
    "exists": "slicewise.dataset",
    "delete": "slicewise.dataset",
    "read": "slicewise.dataset",
    "link": "slicewise.dataset.opening",
    "verify": "slicewise.dataset",
    "gc": "slicewise.dataset",
    "deepcopy": "slicewise.dataset",
    "copy": "slicewise.dataset",
    "DatasetView": "slicewise.dataset",
    "MergeConflictError": "slicewise.dataset",
    "DatasetError": "slicewise.format.errors",
    "CorruptionError": "slicewise.format.errors",
    "CommitConflictError": "slicewise.format.errors",
    # transform: compute / compose / eval
    "compute": "slicewise.transform",
    "compose": "slicewise.transform",
    "TransformError": "slicewise.transform",
    "InvalidInputDataError": "slicewise.transform",
    "InvalidOutputDatasetError": "slicewise.transform",
    "TensorMismatchError": "slicewise.transform",
    "UnsupportedSchedulerError": "slicewise.transform",
    "AllSamplesSkippedError": "slicewise.transform",
    "ResumeError": "slicewise.transform",
    "EvalStorageError": "slicewise.transform",
    "EvalReport": "slicewise.transform",
    "ingest_folder": "slicewise.transform.ingest",
    # integrations: dask, HDF5, Zarr, image stacks
    "from_dask": "slicewise.integrations.dask",
    "from_hdf5": "slicewise.integrations.hdf5",
    "from_zarr": "slicewise.integrations.zarr",
    "from_images": "slicewise.integrations.images",
    # training input and interchange: torch, Arrow/Parquet, Hugging Face
    "TorchDataset": "slicewise.integrations.torch",
    "TorchIterableDataset": "slicewise.integrations.torch",
    "TorchLoader": "slicewise.integrations.torch",
    "from_arrow": "slicewise.integrations.arrow",
    "from_parquet": "slicewise.integrations.arrow",
    "from_hf": "slicewise.integrations.hf",
}

__all__ = sorted(_EXPORTS)

# `joblib.parallel_backend("slicewise")`: announced to joblib when joblib is imported
from slicewise.integrations import _joblib_hook  # noqa: E402

_joblib_hook.install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'slicewise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from slicewise.engine import (  # noqa: F401
        Pool,
        SharedArray,
        TaskError,
        TaskTimeoutError,
        WorkerLostError,
        cpu_count,
        map,
        shared_array,
    )

if TYPE_CHECKING:  # pragma: no cover - the rest of the public names, for type checkers
    from slicewise.dataset import (  # noqa: F401
        Dataset,
        Group,
        Tensor,
        dataset,
        delete,
        empty,
        exists,
        gc,
        load,
        read,
        verify,
    )
    from slicewise.engine import (  # noqa: F401
        Failure,
        InitializerError,
        PoolClosedError,
        shutdown_default_pool,
    )
    from slicewise.format.errors import (  # noqa: F401
        CommitConflictError,
        CorruptionError,
        DatasetError,
    )
    from slicewise.integrations.dask import from_dask  # noqa: F401
    from slicewise.integrations.hdf5 import from_hdf5  # noqa: F401
    from slicewise.integrations.images import from_images  # noqa: F401
    from slicewise.integrations.zarr import from_zarr  # noqa: F401
    from slicewise.transform import (  # noqa: F401
        AllSamplesSkippedError,
        EvalReport,
        EvalStorageError,
        InvalidInputDataError,
        InvalidOutputDatasetError,
        ResumeError,
        TensorMismatchError,
        TransformError,
        UnsupportedSchedulerError,
        compose,
        compute,
    )
    from slicewise.transform.ingest import ingest_folder  # noqa: F401
