"""Zarr in and out: `sw.from_zarr(store, path)` and `ds.<tensor>.to_zarr(store)`.

Import (the parent reads only metadata; workers read the chunks):

    zarr group / array ──walk──► one tensor per Zarr array ("Control/Experiment 1" ->
                                 "Control.Experiment 1"); dimension names and attributes go
                                 to the tensor's info; rows split into ~32 MiB blocks aligned
                                 with the Zarr chunks
        │ jobs (store URL, array path, start, stop)
        ▼
    workers: open the store themselves, read their rows, write them with their own
    DatasetWriter ─► receipts ─► parent: one commit

Export (parallel; every worker writes whole Zarr chunks, so no two touch the same object):

    tensor ──► zarr array in group `store` at `name`, chunks of whole rows (~16 MiB),
               dimension_names (Zarr 3) / _ARRAY_DIMENSIONS (Zarr 2) so that
               xarray.open_zarr(store) sees named dimensions; metadata consolidated
        │ jobs: row ranges that are whole multiples of the Zarr chunk height
        ▼
    workers: read rows [start, stop) of the tensor, write them into the Zarr array

Stores given as a path or URL are opened again in each worker; store objects (e.g. an
in-memory store) cannot cross processes, so they are read or written in this process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    HTYPE_ATTRIBUTE,
    TensorRows,
    commit_receipts,
    fspath,
    htype_from_attrs,
    import_blocks,
    info_value,
    json_safe,
    name_of,
    new_dataset,
    require,
    require_one_shape,
    row_blocks,
    row_nbytes,
    run_jobs,
    selected_sources,
    set_tensor_info,
    tensor_name_for,
)

__all__ = ["ZarrRows", "from_zarr", "tensor_to_zarr"]

# Zarr chunks of whole rows near this size: big enough for fast scans, small enough that
# xarray/dask users reading a few rows do not pull much more than they asked for.
EXPORT_CHUNK_BYTES = 16 * 2**20

# Tensor info keys written by from_zarr.
DIMENSION_NAMES_INFO = "dimension_names"
ZARR_PATH_INFO = "zarr_path"


def _zarr() -> Any:
    return require("zarr", "Zarr import/export")


def _open_array(store: str, array_path: str, mode: str, storage_options: dict | None) -> Any:
    """One array of a store given by URL, opened afresh (in whichever process reads it)."""
    kwargs = {"storage_options": storage_options} if storage_options else {}
    return _zarr().open_array(store, path=array_path, mode=mode, **kwargs)


def _zarr_major(zarr: Any) -> int:
    return int(str(zarr.__version__).split(".")[0])


class ZarrRows:
    """Rows of one Zarr array: reopened from its store URL in each process, or carried as
    the array object itself when the store has no URL."""

    def __init__(self, store: str | None, array_path: str, array: Any = None,
                 storage_options: dict | None = None) -> None:
        self.store = store
        self.array_path = array_path
        self.array = array if store is None else None
        self.storage_options = storage_options

    def open(self) -> Any:
        if self.array is not None:
            return self.array
        return _open_array(self.store, self.array_path, "r", self.storage_options)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.open()[start:stop])

    def __repr__(self) -> str:
        where = os.path.basename(self.store.rstrip("/")) if self.store else "a store object"
        return f"Zarr {self.array_path or '/'!r} in {where}"


def from_zarr(
    store: Any,
    path: Any,
    arrays: str | Iterable[str] | dict[str, str] | None = None,
    *,
    overwrite: bool = False,
    chunk_target_bytes: int | None = None,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    storage_options: dict | None = None,
    **tensor_options: Any,
) -> Any:
    """Import Zarr arrays into a new slicewise dataset at `path`, in parallel.

    `store` is a path or URL of a Zarr group or array (or a zarr Group/Array object).
    `arrays` picks what to import: None for every array; names of arrays or groups; or a
    dict {Zarr path: tensor name}. Each array becomes a tensor, its first axis the rows;
    its dimension names and attributes go to the tensor's info.

    >>> ds = sw.from_zarr("video.zarr", "./video_ds")
    >>> ds.frames.dask().mean().compute()
    """
    zarr = _zarr()
    url = fspath(store)
    where = f"from_zarr {url or type(store).__name__}"
    if url is not None:
        kwargs = {"storage_options": storage_options} if storage_options else {}
        try:
            node = zarr.open(url, mode="r", **kwargs)
        except (FileNotFoundError, KeyError) as exc:
            raise FileNotFoundError(f"{where}: no Zarr group or array there ({exc})") from exc
    else:
        node = store
    plan = _plan_import(zarr, node, arrays, where, url)

    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        blocks = []
        for item in plan:
            array = item["array"]
            ds.create_tensor(item["tensor"], htype=item["htype"], dtype=array.dtype,
                             **tensor_options)
            set_tensor_info(ds[item["tensor"]], item["info"])
            if url is not None:
                source = ZarrRows(url, item["path"], storage_options=storage_options)
            else:
                source = ZarrRows(None, item["path"], array=array)
            bytes_per_row = row_nbytes(array.shape[1:], array.dtype)
            for start, stop in row_blocks(array.shape[0], bytes_per_row, block_bytes=block_bytes,
                                          align=array.chunks[0]):
                blocks.append((item["tensor"], source, start, stop))

        # a store object (no URL) lives in this process: read it with threads
        receipts = import_blocks(ds, blocks, pool=pool if url is not None else None,
                                 num_workers=num_workers, progress=progress,
                                 backend="processes" if url is not None else "threads")
        meta = {"integration": "zarr", "source": url or repr(store),
                "tensors": {item["tensor"]: item["path"] for item in plan}}
        commit_receipts(ds, receipts, "from_zarr", meta)
    return ds


def _plan_import(zarr: Any, node: Any, arrays: Any, where: str, url: str | None) -> list[dict]:
    if _is_array(zarr, node):
        # a single array: its path relative to the URL we were given is ""; its name is the
        # array's own, or the URL's last part when the URL points at the array itself
        url_name = url.rstrip("/").rsplit("/", 1)[-1] if url else ""
        name = ((arrays if isinstance(arrays, str) else None) or _basename(node) or url_name
                or "data")
        if isinstance(arrays, dict) and len(arrays) == 1:
            name = next(iter(arrays.values()))
        return [_plan_item(node, "", tensor_name_for(name, where), where)]

    members = dict(_walk_arrays(zarr, node))
    wanted = selected_sources(arrays, everything=members)

    chosen: dict[str, str] = {}
    for name, tensor_name in wanted.items():
        key = name.strip("/")
        if key in members:
            chosen[key] = tensor_name or tensor_name_for(key, where)
            continue
        under = [member for member in members if member.startswith(key + "/")]
        if not under:
            raise KeyError(f"{where}: no Zarr array or group {name!r}")
        if tensor_name is not None:
            raise ValueError(f"{where}: {name!r} is a group; only an array can be renamed")
        for member in under:
            chosen.setdefault(member, tensor_name_for(member, where))
    if not chosen:
        raise ValueError(f"{where}: nothing to import (the group holds no arrays)")
    return [_plan_item(members[key], key, tensor, where) for key, tensor in chosen.items()]


def _plan_item(array: Any, key: str, tensor: str, where: str) -> dict:
    dtype = np.dtype(array.dtype)
    if len(array.shape) == 0 or dtype.kind not in "biuf" or dtype.names:
        raise ValueError(
            f"{where}: array {key or '<root>'!r} (shape {array.shape}, dtype {dtype}) is not a "
            "numeric array with rows; choose the others with arrays=[...]"
        )
    attrs = dict(array.attrs) if hasattr(array, "attrs") else {}
    dims = _dimension_names(array)
    info = {k: json_safe(v) for k, v in attrs.items()
            if k not in ("_ARRAY_DIMENSIONS", HTYPE_ATTRIBUTE)}
    if dims:
        info[DIMENSION_NAMES_INFO] = list(dims)
    info[ZARR_PATH_INFO] = key
    return {"array": array, "path": key, "tensor": tensor, "info": info,
            "htype": htype_from_attrs(attrs)}


def _walk_arrays(zarr: Any, group: Any) -> list[tuple[str, Any]]:
    if hasattr(group, "members"):  # Zarr 3
        return [(name, obj) for name, obj in group.members(max_depth=None)
                if _is_array(zarr, obj)]
    found: list[tuple[str, Any]] = []  # Zarr 2
    group.visititems(lambda name, obj: found.append((name, obj)) if _is_array(zarr, obj)
                     else None)
    return found


def _is_array(zarr: Any, obj: Any) -> bool:
    return isinstance(obj, zarr.Array)


def _basename(array: Any) -> str:
    name = getattr(array, "basename", None) or getattr(array, "name", None) or ""
    return str(name).strip("/").rsplit("/", 1)[-1]


def _dimension_names(array: Any) -> tuple | None:
    metadata = getattr(array, "metadata", None)
    names = getattr(metadata, "dimension_names", None)
    if names and any(n is not None for n in names):
        return tuple(names)
    attrs = getattr(array, "attrs", {})
    names = attrs.get("_ARRAY_DIMENSIONS") if hasattr(attrs, "get") else None
    return tuple(names) if names else None


# ---------------------------------------------------------------------------------------------
# Export


class _ZarrTarget:
    """Where workers write: a store URL and array path, reopened in each worker."""

    def __init__(self, store: str, array_path: str, storage_options: dict | None) -> None:
        self.store = store
        self.array_path = array_path
        self.storage_options = storage_options

    def open(self) -> Any:
        return _open_array(self.store, self.array_path, "r+", self.storage_options)


def _export_block(job: tuple) -> int:
    target, source, start, stop = job
    array = target.open() if isinstance(target, _ZarrTarget) else target
    array[start:stop] = source.read(start, stop)
    return stop - start


def tensor_to_zarr(
    tensor: Any,
    store: Any,
    *,
    name: str | None = None,
    dimension_names: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    zarr_format: int | None = None,
    overwrite: bool = False,
    pool: Any = None,
    num_workers: int | None = None,
    progress: bool = False,
    consolidate: bool = True,
    storage_options: dict | None = None,
    **array_options: Any,
) -> Any:
    """Write a tensor into a Zarr array `name` (default: the tensor's name) in the group at
    `store`, in parallel, with dimension names so that `xarray.open_zarr(store)` labels its
    axes. Returns the zarr Array.

    Dimension names default to those the tensor was imported with (info
    "dimension_names"), else ("sample", "dim_1", ...); images get ("sample", "height",
    "width", "channel"). `array_options` (e.g. compressors=...) go to zarr's create_array.

    >>> ds.frames.to_zarr("frames.zarr", dimension_names=("time", "y", "x"))
    >>> xarray.open_zarr("frames.zarr").frames.mean("time")
    """
    zarr = _zarr()
    require_one_shape(tensor)
    source = TensorRows(tensor)
    array_name = name or name_of(tensor)
    shape = source.shape
    dims = tuple(dimension_names) if dimension_names is not None else _default_dims(tensor, shape)
    if len(dims) != len(shape):
        raise ValueError(
            f"to_zarr: tensor {array_name!r} has {len(shape)} dimensions {shape}, "
            f"dimension_names has {len(dims)}: {dims}"
        )
    bytes_per_row = row_nbytes(shape[1:], source.dtype)
    rows = int(chunk_rows) if chunk_rows else max(1, EXPORT_CHUNK_BYTES // bytes_per_row)
    rows = max(1, min(rows, shape[0])) if shape[0] else 1
    chunks = (rows, *(max(1, d) for d in shape[1:]))

    url = fspath(store)
    kwargs = {"storage_options": storage_options} if storage_options and url else {}
    attributes = _export_attributes(tensor)
    v2_api = _zarr_major(zarr) < 3
    fmt = zarr_format or (2 if v2_api else 3)
    if fmt == 2:
        attributes["_ARRAY_DIMENSIONS"] = list(dims)
    if v2_api:
        root = zarr.open_group(url if url is not None else store, mode="a", **kwargs)
        array = root.create_dataset(array_name, shape=shape, chunks=chunks, dtype=source.dtype,
                                    overwrite=overwrite, **array_options)
        array.attrs.update(attributes)
    else:
        root = zarr.open_group(url if url is not None else store, mode="a", zarr_format=fmt,
                               **kwargs)
        dim_kwargs = {"dimension_names": dims} if fmt == 3 else {}
        array = root.create_array(array_name, shape=shape, chunks=chunks, dtype=source.dtype,
                                  attributes=attributes, overwrite=overwrite, **dim_kwargs,
                                  **array_options)

    # Blocks are whole multiples of the Zarr chunk height: each Zarr chunk has one writer.
    blocks = row_blocks(shape[0], bytes_per_row,
                        block_bytes=max(DEFAULT_BLOCK_BYTES, rows * bytes_per_row), align=rows)
    if url is not None:
        target: Any = _ZarrTarget(url, array.path, storage_options)
        jobs = [(target, source, start, stop) for start, stop in blocks]
        run_jobs(_export_block, jobs, pool=pool, num_workers=num_workers, progress=progress)
    else:
        jobs = [(array, source, start, stop) for start, stop in blocks]
        run_jobs(_export_block, jobs, num_workers=num_workers, backend="threads",
                 progress=progress)
    if consolidate:
        with warnings.catch_warnings():
            # Zarr 3 calls consolidated metadata an extension; xarray reads it, and without
            # it xarray warns on every open.
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(url if url is not None else store, **kwargs)
    return array


def _default_dims(tensor: Any, shape: tuple) -> tuple:
    remembered = info_value(tensor, DIMENSION_NAMES_INFO)
    if isinstance(remembered, list) and len(remembered) == len(shape):
        return tuple(str(name) for name in remembered)  # imported from Zarr: keep its names
    htype = str(getattr(tensor, "htype", "") or "")
    if htype.startswith("image") and len(shape) in (3, 4):
        return ("sample", "height", "width", "channel")[: len(shape)]
    return ("sample", *(f"dim_{axis}" for axis in range(1, len(shape))))


def _export_attributes(tensor: Any) -> dict:
    attributes: dict = {}
    htype = getattr(tensor, "htype", None)
    if htype:
        attributes[HTYPE_ATTRIBUTE] = str(htype)
    info = getattr(tensor, "info", None)
    if info is not None and hasattr(info, "items"):
        for key, value in info.items():
            if key in (DIMENSION_NAMES_INFO, ZARR_PATH_INFO, "_ARRAY_DIMENSIONS"):
                continue
            safe = json_safe(value)
            if safe is not None:
                attributes[str(key)] = safe
    return attributes
