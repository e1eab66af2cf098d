"""HDF5 in and out: `sw.from_hdf5(file, path)` and `ds.to_hdf5(file)`.

Import (lazy and parallel: the parent reads only the file's structure):

    experiments.h5                         parent
    ├─ /Control/Experiment 1   ──walk──►   one tensor per HDF5 dataset ("Control.Experiment 1"),
    ├─ /Control/Experiment 2               its attributes in the tensor's info; rows split into
    └─ /Treatment/...                      blocks of ~32 MiB aligned with the HDF5 chunks
                                              │ jobs (file path, dataset name, start, stop)
                                              ▼
                                           workers: each opens the file itself (h5py handles
                                           do not cross processes), reads its rows, writes them
                                           with its own DatasetWriter ─► receipt
                                              ▼
                                           parent: receipts in order ─► one commit

Export streams one stored chunk at a time (the next one is read while the current one is
written), so memory stays near two chunks whatever the dataset's size. HDF5 has one writer
per file, so export writes from one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    chosen_sources,
    commit_receipts,
    exportable_tensors,
    fspath,
    import_blocks,
    info_to_attributes,
    info_value,
    is_text,
    new_dataset,
    require,
    row_blocks,
    row_nbytes,
    set_tensor_info,
    tensor_from_attributes,
)

__all__ = ["HDF5Rows", "dataset_to_hdf5", "from_hdf5"]

# The tensor info key that remembers where an imported tensor came from, so that
# ds.to_hdf5() puts it back at the same HDF5 path ("Control.Experiment 1" -> /Control/...).
HDF5_PATH_INFO = "hdf5_path"

# HDF5 reads a chunk whole; ~1 MiB chunks keep one-sample reads of the exported file cheap.
EXPORT_CHUNK_BYTES = 2**20


class HDF5Rows:
    """Rows of one HDF5 dataset, opened afresh in whichever process reads them."""

    def __init__(self, file: str, name: str) -> None:
        self.file = file
        self.name = name

    def read(self, start: int, stop: int) -> np.ndarray:
        h5py = require("h5py", "reading HDF5")
        with h5py.File(self.file, "r") as handle:
            return handle[self.name][start:stop]

    def __repr__(self) -> str:
        return f"HDF5 {self.name!r} in {os.path.basename(self.file)}"


def from_hdf5(
    file: str | os.PathLike,
    path: Any,
    datasets: str | Iterable[str] | dict[str, str] | None = None,
    *,
    overwrite: bool = False,
    chunk_target_bytes: int | None = None,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    **tensor_options: Any,
) -> Any:
    """Import HDF5 datasets into a new slicewise dataset at `path`, in parallel.

    `datasets` picks what to import: None for every dataset in the file; names of datasets
    or groups (a group imports everything under it), e.g. ["Control", "Treatment/Experiment
    1"]; or a dict {HDF5 name: tensor name}. Each HDF5 dataset becomes a tensor named by its
    HDF5 path with groups as dots ("/Control/Experiment 1" -> "Control.Experiment 1"), its
    first axis the rows. Attributes go to the tensor's info, with the HDF5 path under
    "hdf5_path" (ds.to_hdf5 puts the tensor back there). `tensor_options` (e.g.
    chunk_compression="lz4") go to create_tensor. Tensors and data appear in one commit.

    >>> ds = sw.from_hdf5("experiments.h5", "./exp_ds", datasets=["Control", "Treatment"])
    >>> ds["Control.Experiment 1"].dask().mean().compute()
    """
    h5py = require("h5py", "sw.from_hdf5")
    file_path = fspath(file)
    if file_path is None:
        raise TypeError(f"from_hdf5 needs a file path (workers open it), got {type(file)!r}")
    if not os.path.exists(file_path):
        raise FileNotFoundError(f"from_hdf5: no such HDF5 file: {file_path}")
    with h5py.File(file_path, "r") as handle:  # structure and attributes only
        plan = _plan_import(h5py, handle, file_path, datasets)

    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        blocks = []
        for item in plan:
            ds.create_tensor(item["tensor"], dtype=item["dtype"],
                             **{**item["create"], **tensor_options})
            set_tensor_info(ds[item["tensor"]], item["attrs"])
            source = HDF5Rows(file_path, item["name"])
            for start, stop in row_blocks(item["shape"][0], item["row_nbytes"],
                                          block_bytes=block_bytes, align=item["align"]):
                blocks.append((item["tensor"], source, start, stop))
        receipts = import_blocks(ds, blocks, pool=pool, num_workers=num_workers,
                                 progress=progress)
        meta = {
            "integration": "hdf5",
            "source": os.path.abspath(file_path),
            "tensors": {item["tensor"]: item["name"] for item in plan},
        }
        commit_receipts(ds, receipts, f"from_hdf5 {os.path.basename(file_path)}", meta)
    return ds


def _plan_import(h5py: Any, handle: Any, file_path: str, datasets: Any) -> list[dict]:
    members = [name.lstrip("/") for name in _datasets_under(h5py, handle)]
    chosen = chosen_sources(datasets, members, where=f"from_hdf5 {file_path}",
                            kind="HDF5 dataset")
    found = {f"/{key}": tensor_name for key, tensor_name in chosen.items()}  # HDF5 names

    plan = []
    unsupported = []
    for name, tensor_name in found.items():
        dset = handle[name]
        if dset.ndim == 0 or dset.dtype.kind not in "biuf" or dset.dtype.names:
            unsupported.append(f"{name} (shape {dset.shape}, dtype {dset.dtype})")
            continue
        create, info = tensor_from_attributes(dset.attrs)
        plan.append({
            "name": name,
            "tensor": tensor_name,
            "dtype": dset.dtype,
            "shape": dset.shape,
            "row_nbytes": row_nbytes(dset.shape[1:], dset.dtype),
            "align": dset.chunks[0] if dset.chunks else 1,
            "create": create,
            "attrs": {**info, HDF5_PATH_INFO: name},
        })
    if unsupported:
        raise ValueError(
            f"from_hdf5: {file_path} holds datasets slicewise cannot import as numeric "
            f"tensors: {', '.join(unsupported)}; choose the others with datasets=[...]"
        )
    return plan


def _datasets_under(h5py: Any, group: Any) -> list[str]:
    members: list[str] = []

    def visit(_: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            members.append(obj.name)

    group.visititems(visit)
    return members


def dataset_to_hdf5(
    ds: Any,
    file: str | os.PathLike,
    tensors: Iterable[str] | None = None,
    *,
    mode: str = "w",
    compression: str | None = None,
) -> str:
    """Write tensors (default: all) into an HDF5 file, one HDF5 dataset per tensor, at the
    HDF5 path it was imported from (info["hdf5_path"]) or else at its name. Fixed-shape numeric
    tensors become N-D datasets, text tensors variable-length strings. Returns the file path.

    >>> ds.to_hdf5("experiments_copy.h5", compression="gzip")
    """
    h5py = require("h5py", "Dataset.to_hdf5")
    file_path = fspath(file)
    if file_path is None:
        raise TypeError(f"to_hdf5 needs a file path, got {type(file)!r}")
    names = exportable_tensors(ds, tensors, where="to_hdf5", target="an HDF5 dataset",
                               text_allowed=True)
    with h5py.File(file_path, mode) as handle, ThreadPoolExecutor(1) as reader:
        for name in names:
            tensor = ds[name]
            target = _hdf5_path(tensor, name)
            if is_text(tensor):
                _write_text(h5py, handle, target, tensor)
            else:
                _write_array(handle, target, tensor, reader, compression)
            _write_attrs(handle[target], tensor)
    return file_path


def _hdf5_path(tensor: Any, name: str) -> str:
    remembered = info_value(tensor, HDF5_PATH_INFO)
    return remembered if isinstance(remembered, str) and remembered else name


def _write_array(handle: Any, name: str, tensor: Any, reader: ThreadPoolExecutor,
                 compression: str | None) -> None:
    shape = tuple(int(d) for d in tensor.shape)
    dtype = np.dtype(tensor.dtype)
    bytes_per_row = row_nbytes(shape[1:], dtype)
    chunk_rows = max(1, min(shape[0], EXPORT_CHUNK_BYTES // bytes_per_row)) if shape[0] else 1
    dset = handle.create_dataset(
        name, shape=shape, dtype=dtype, compression=compression,
        chunks=(chunk_rows, *shape[1:]) if shape[0] and all(shape) else None,
    )
    ranges = [(int(a), int(b)) for a, b in tensor.chunk_row_ranges() if b > a]
    if not ranges:
        return
    pending = reader.submit(_read_rows, tensor, *ranges[0])
    for index, (start, stop) in enumerate(ranges):
        rows = pending.result()
        if index + 1 < len(ranges):
            pending = reader.submit(_read_rows, tensor, *ranges[index + 1])
        dset[start:stop] = rows


def _read_rows(tensor: Any, start: int, stop: int) -> np.ndarray:
    return np.asarray(tensor[start:stop].numpy())


def _write_text(h5py: Any, handle: Any, name: str, tensor: Any) -> None:
    values = [str(_scalar(tensor[i].numpy())) for i in range(len(tensor))]
    handle.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.reshape(()).item()
    return value


def _write_attrs(dset: Any, tensor: Any) -> None:
    attributes = info_to_attributes(
        tensor, where="to_hdf5", skip=(HDF5_PATH_INFO,), fits=_fits_hdf5_attribute,
        fits_what="HDF5 attributes hold numbers, strings and flat lists of either")
    for key, value in attributes.items():
        numbers = isinstance(value, list) and not isinstance(value[0], str)
        dset.attrs[key] = np.asarray(value) if numbers else value


def _fits_hdf5_attribute(value: Any) -> bool:
    """HDF5 attributes hold scalars and flat arrays of one type (no null, no nesting)."""
    if isinstance(value, (str, int, float, bool)):
        return True
    if not isinstance(value, list) or not value:
        return False
    return (all(isinstance(v, (int, float)) for v in value)
            or all(isinstance(v, str) for v in value))
