"""Zarr in and out: `sw.from_zarr(store, path)`, `ds.<tensor>.to_zarr(store)` and
`ds.to_zarr(store)`.

Import (the parent reads only metadata; workers read the chunks):

    zarr group / array ──walk──► one tensor per Zarr array, named by its path (array
                                 "Control/Experiment 1" -> tensor "Control/Experiment 1" of
                                 group "Control"; empty groups come along); string arrays
                                 of 0 or 1 axes: text tensors; a 0-D array is one row;
                                 dimension names and attributes go to the tensor's info;
                                 rows split into ~32 MiB blocks aligned with the Zarr chunks
        │ jobs (store URL, array path, start, stop)
        ▼
    workers: open the store themselves, read their rows, write them with their own
    DatasetWriter ─► receipts ─► parent: one commit

Export (parallel; every worker writes whole Zarr chunks, so no two touch the same object):

    tensor(s) ──► parent: one _ArrayPlan per tensor (shape, chunks of whole rows ~16 MiB,
                  dimension names, attributes); ds.to_zarr settles the names so that each
                  has one size in the group; every array is created before any row moves
        │ jobs for all arrays together: row blocks, whole multiples of each array's chunk
        ▼
    workers: read rows of the tensor one piece (~16 MiB) at a time and write it into the
    Zarr array; the parent consolidates the metadata once, so xarray.open_zarr(store)
    opens the group as one Dataset with named dimensions (dimension_names in Zarr 3,
    _ARRAY_DIMENSIONS in Zarr 2)

An export puts each tensor at its path (groups and all) and recreates the dataset's groups,
and a tensor imported from a 1-D (or 0-D) array goes back 1-D (0-D): its rows were stored as
samples of shape (1,), and info "zarr_ndim" says to drop that axis again. So Zarr ->
slicewise -> Zarr gives back the same paths, shapes, dtypes and values.

Stores given as a path or URL are opened again in each worker; store objects (e.g. an
in-memory store) cannot cross processes, so they are read or written in this process, as
are a dataset's uncommitted rows (inside `with ds:`), which only this process holds.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    TensorRows,
    chosen_groups,
    chosen_sources,
    commit_receipts,
    dataset_of,
    export_groups,
    exportable_tensors,
    fspath,
    import_blocks,
    info_to_attributes,
    info_value,
    is_text,
    make_empty_groups,
    name_of,
    new_dataset,
    require,
    require_one_shape,
    row_blocks,
    row_nbytes,
    run_jobs,
    set_tensor_info,
    tensor_from_attributes,
    tensor_name_for,
)

__all__ = ["ZarrRows", "dataset_to_zarr", "from_zarr", "tensor_to_zarr"]

# Zarr chunks of whole rows near this size: big enough for fast scans, small enough that
# xarray/dask users reading a few rows do not pull much more than they asked for.
EXPORT_CHUNK_BYTES = 16 * 2**20

# A text tensor's rows are strings of unknown size; chunks and blocks assume this many bytes.
TEXT_ROW_BYTES = 256

# Tensor info keys written by from_zarr: dimension names, the array's path, and the number of
# axes of an array whose rows gained one (0 or 1: a 1-D array's rows are scalars, stored as
# samples of shape (1,); a 0-D array is one such row), so that export drops it again.
DIMENSION_NAMES_INFO = "dimension_names"
ZARR_PATH_INFO = "zarr_path"
ZARR_NDIM_INFO = "zarr_ndim"

# Where Zarr format 2 keeps dimension names (xarray's convention; format 3 has a field)
V2_DIMENSIONS_ATTRIBUTE = "_ARRAY_DIMENSIONS"


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
        array = self.open()
        if len(array.shape) == 0:  # a 0-D array is one row
            return np.reshape(np.asarray(array[()]), (1,))
        return np.asarray(array[start:stop])

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
    its dimension names and attributes go to the tensor's info. A tensor is named by the
    array's path, Zarr groups becoming slicewise groups (array "Control/Experiment 1" ->
    `ds["Control/Experiment 1"]`, `ds.Control["Experiment 1"]`); the chosen groups that
    hold no array come along as empty groups. A 1-D numeric array's rows are scalars
    (samples of shape (1,)); a 0-D array is one such row; ds.to_zarr gives both their
    shape back. Tensors and data appear in one commit.

    Args:
        store: a path or URL of a Zarr group or array, or a zarr Group/Array object
            (read with threads in this process).
        path: where the new dataset goes (a directory or URL).
        arrays: what to import (None: every array).
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        pool: an `sw.Pool` to run on (URL stores only; default: the shared warm pool).
        num_workers: its workers (0: import in this process).
        block_bytes: about how many bytes each task reads and writes.
        progress: show a progress bar.
        storage_options: fsspec options for a URL store.
        **tensor_options: more `create_tensor` arguments (e.g. chunk_compression="lz4").

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        FileNotFoundError: no Zarr group or array at `store`.
        KeyError: a name in `arrays` that the store does not hold.
        ValueError: an array that is neither numeric nor 0-D/1-D strings, nothing to
            import, or a tensor name given for a group.
        ImportError: zarr is not installed.

    Example:
        >>> ds = sw.from_zarr("video.zarr", "./video_ds")     # doctest: +SKIP
        >>> ds.frames.dask().mean().compute()                 # doctest: +SKIP
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
    plan, groups = _plan_import(zarr, node, arrays, where, url)

    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        blocks = []
        for item in plan:
            array = item["array"]
            ds.create_tensor(item["tensor"], dtype=item["dtype"],
                             **{**item["create"], **tensor_options})
            set_tensor_info(ds[item["tensor"]], item["info"])
            if url is not None:
                source = ZarrRows(url, item["path"], storage_options=storage_options)
            else:
                source = ZarrRows(None, item["path"], array=array)
            rows, align = (array.shape[0], array.chunks[0]) if array.shape else (1, 1)
            for start, stop in row_blocks(rows, item["row_bytes"], block_bytes=block_bytes,
                                          align=align):
                blocks.append((item["tensor"], source, start, stop))
        make_empty_groups(ds, groups, [item["tensor"] for item in plan], where=where)

        # a store object (no URL) lives in this process: read it with threads
        receipts = import_blocks(ds, blocks, pool=pool if url is not None else None,
                                 num_workers=num_workers, progress=progress,
                                 backend="processes" if url is not None else "threads")
        meta = {"integration": "zarr", "source": url or repr(store),
                "tensors": {item["tensor"]: item["path"] for item in plan}}
        commit_receipts(ds, receipts, "from_zarr", meta)
    return ds


def _plan_import(zarr: Any, node: Any, arrays: Any, where: str,
                 url: str | None) -> tuple[list[dict], list[str]]:
    """What to import: one item per array, and the Zarr groups chosen."""
    if _is_array(zarr, node):
        # a single array: its path relative to the URL we were given is ""; its name is the
        # array's own, or the URL's last part when the URL points at the array itself
        url_name = url.rstrip("/").rsplit("/", 1)[-1] if url else ""
        name = ((arrays if isinstance(arrays, str) else None) or _basename(node) or url_name
                or "data")
        if isinstance(arrays, dict) and len(arrays) == 1:
            name = next(iter(arrays.values()))
        return [_plan_item(node, "", tensor_name_for(name, where), where)], []

    members, groups = _walk(zarr, node)
    chosen = chosen_sources(arrays, list(members), where=where, kind="Zarr array")
    plan = [_plan_item(members[key], key, tensor, where) for key, tensor in chosen.items()]
    return plan, chosen_groups(arrays, groups)


def _plan_item(array: Any, key: str, tensor: str, where: str) -> dict:
    dtype = np.dtype(array.dtype)
    ndim = len(array.shape)
    text = ndim <= 1 and dtype.kind in "TU"  # strings: a text tensor
    if not text and (dtype.kind not in "biuf" or dtype.names):
        raise ValueError(
            f"{where}: array {key or '<root>'!r} (shape {array.shape}, dtype {dtype}) is "
            "neither a numeric array nor a 0-D or 1-D array of strings; choose the others "
            "with arrays=[...]"
        )
    attrs = dict(array.attrs) if hasattr(array, "attrs") else {}
    dims = _dimension_names(array)
    create, info = tensor_from_attributes(attrs, skip=(V2_DIMENSIONS_ATTRIBUTE,))
    if text:
        create = {"htype": "text"}
    if dims:
        info[DIMENSION_NAMES_INFO] = list(dims)
    info[ZARR_PATH_INFO] = key
    if ndim == 0 or (ndim == 1 and not text):  # its rows gained an axis
        info[ZARR_NDIM_INFO] = ndim
    return {"array": array, "path": key, "tensor": tensor, "info": info, "create": create,
            "dtype": None if text else dtype,
            "row_bytes": TEXT_ROW_BYTES if text else row_nbytes(array.shape[1:], dtype)}


def _walk(zarr: Any, group: Any) -> tuple[dict[str, Any], list[str]]:
    """Every array below `group` by path, and the path of every group below it."""
    if hasattr(group, "members"):  # Zarr 3
        found = list(group.members(max_depth=None))
    else:  # Zarr 2
        found = []
        group.visititems(lambda name, obj: found.append((name, obj)))
    arrays = {name: obj for name, obj in found if _is_array(zarr, obj)}
    groups = [name for name, obj in found if isinstance(obj, zarr.Group)]
    return arrays, groups


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
    names = attrs.get(V2_DIMENSIONS_ATTRIBUTE) if hasattr(attrs, "get") else None
    return tuple(names) if names else None


# ---------------------------------------------------------------------------------------------
# Export

# Zarr 3 checks each chunk it writes for being all fill value, to skip storing it; the check
# holds several copies of the chunk (measured: ~80 MiB extra per 16 MiB chunk, ~2 MiB
# without it). An export writes dense data, so its handles write every chunk as it is.
DENSE_WRITES = {"array.write_empty_chunks": True}


class _TextRows(TensorRows):
    """A text tensor's rows as a 1-D array of str (each is stored as a sample of shape (1,)),
    written as one Zarr string array."""

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(super().read(start, stop), dtype=object).reshape(stop - start)


class _FlatRows(TensorRows):
    """A tensor of samples of shape (1,) imported from a 1-D or 0-D array, read back as the
    1-D array it was (rows of shape () again)."""

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(super().read(start, stop)).reshape(stop - start)


class _ArrayPlan:
    """One tensor's way into one Zarr array: what to create, and where its rows come from.
    `dims_given`: the dimension names were asked for (or remembered from an import), so a
    whole-dataset export may not rename them to keep xarray's one size per name. A tensor
    imported from a 1-D or 0-D array (info "zarr_ndim") gets that shape back."""

    def __init__(self, tensor: Any, array_name: str, dims: Sequence[str] | None,
                 chunk_rows: int | None, where: str) -> None:
        self.tensor_name = name_of(tensor)
        self.array_name = _array_name(array_name, where)
        text = is_text(tensor)
        self.source = _TextRows(tensor) if text else TensorRows(tensor)
        self.shape = (self.source.shape[0],) if text else self.source.shape
        self.dtype: Any = str if text else self.source.dtype
        if text or self.shape[1:] == (1,):
            ndim = _source_ndim(tensor, self.shape[0])
            if ndim is not None and not text:
                self.source = _FlatRows(tensor)
            if ndim == 0:
                self.shape = ()  # one row, written as the 0-D array it came from
            elif ndim == 1:
                self.shape = self.shape[:1]
        remembered = _remembered_dims(tensor, len(self.shape))
        self.dims_given = dims is not None or remembered is not None
        self.dims = tuple(str(d) for d in (dims if dims is not None else
                                           remembered or _default_dims(tensor, self.shape)))
        if len(self.dims) != len(self.shape):
            raise ValueError(
                f"{where}: tensor {self.tensor_name!r} has {len(self.shape)} dimensions "
                f"{self.shape}, dimension_names has {len(self.dims)}: {self.dims}"
            )
        self.row_bytes = TEXT_ROW_BYTES if text else row_nbytes(self.shape[1:], self.dtype)
        rows = int(chunk_rows) if chunk_rows else max(1, EXPORT_CHUNK_BYTES // self.row_bytes)
        self.rows = self.shape[0] if self.shape else 1
        self.chunk_rows = max(1, min(rows, self.rows)) if self.rows else 1
        self.attributes = info_to_attributes(
            tensor, where=where,
            skip=(DIMENSION_NAMES_INFO, ZARR_PATH_INFO, ZARR_NDIM_INFO, V2_DIMENSIONS_ATTRIBUTE))

    def blocks(self) -> list[tuple[int, int]]:
        """Row blocks for workers, each a whole number of Zarr chunks: each Zarr chunk has
        one writer."""
        return row_blocks(self.rows, self.row_bytes, align=self.chunk_rows,
                          block_bytes=max(DEFAULT_BLOCK_BYTES, self.chunk_rows * self.row_bytes))

    def piece_rows(self) -> int:
        """Rows a worker reads and writes at once: whole Zarr chunks, about one export chunk
        of bytes (EXPORT_CHUNK_BYTES) or one Zarr chunk when those are bigger."""
        chunk_bytes = self.chunk_rows * self.row_bytes
        return self.chunk_rows * max(1, EXPORT_CHUNK_BYTES // chunk_bytes)


class _ZarrTarget:
    """Where workers write: a store URL and array path, reopened in each worker."""

    def __init__(self, store: str, array_path: str, storage_options: dict | None) -> None:
        self.store = store
        self.array_path = array_path
        self.storage_options = storage_options

    def open(self) -> Any:
        zarr = _zarr()
        config = getattr(zarr, "config", None)  # Zarr 3
        if config is None:
            return _open_array(self.store, self.array_path, "r+", self.storage_options)
        with config.set(DENSE_WRITES):  # a handle takes the config it is opened with
            return _open_array(self.store, self.array_path, "r+", self.storage_options)


class _ExportJob:
    """One worker task of an export: rows [start, stop) of a tensor into a Zarr array (a
    _ZarrTarget the worker opens, or the array object itself in this process). Its repr is
    what an error names."""

    def __init__(self, target: Any, source: TensorRows, start: int, stop: int,
                 piece_rows: int) -> None:
        self.target, self.source = target, source
        self.start, self.stop, self.piece_rows = start, stop, piece_rows

    def __repr__(self) -> str:
        array_path = getattr(self.target, "array_path", None) or getattr(self.target, "path", "")
        return (f"rows [{self.start}:{self.stop}] of tensor {self.source.tensor_name!r} -> "
                f"Zarr array {array_path!r}")


def _export_block(job: _ExportJob) -> int:
    """Worker side of an export: rows [start, stop) of a tensor into the Zarr array, read
    and written `piece_rows` (whole Zarr chunks) at a time, so a worker holds one piece."""
    target = job.target
    array = target.open() if isinstance(target, _ZarrTarget) else target
    if len(array.shape) == 0:  # a 0-D array: its one row
        array[...] = np.asarray(job.source.read(0, 1)).reshape(())
        return 1
    for piece in range(job.start, job.stop, job.piece_rows):
        end = min(piece + job.piece_rows, job.stop)
        array[piece:end] = job.source.read(piece, end)
    return job.stop - job.start


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
    "width", "channel"). A text tensor becomes a 1-D array of strings. `array_options`
    (e.g. compressors=...) go to zarr's create_array.

    >>> ds.frames.to_zarr("frames.zarr", dimension_names=("time", "y", "x"))
    >>> xarray.open_zarr("frames.zarr").frames.mean("time")
    """
    zarr = _zarr()
    require_one_shape(tensor, "a Zarr array", "", text_allowed=True)
    plan = _ArrayPlan(tensor, name or name_of(tensor), dimension_names, chunk_rows, "to_zarr")
    root = _write_arrays(zarr, dataset_of(tensor), store, [plan], zarr_format=zarr_format,
                         overwrite=overwrite, pool=pool, num_workers=num_workers,
                         progress=progress, consolidate=consolidate,
                         storage_options=storage_options, array_options=array_options)
    return root[plan.array_name]


def dataset_to_zarr(
    ds: Any,
    store: Any,
    tensors: Iterable[str] | dict[str, str] | None = None,
    *,
    dimension_names: Sequence[str] | dict[str, Sequence[str]] | None = None,
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
    """Write tensors (default: all) into one Zarr group at `store`, one array per tensor,
    in parallel, so that `xarray.open_zarr(store)` opens them as one xarray.Dataset. Returns
    the zarr Group. See Dataset.to_zarr."""
    zarr = _zarr()
    where = "ds.to_zarr"
    renames = dict(tensors) if isinstance(tensors, dict) else {}
    names = exportable_tensors(ds, list(renames) if renames else tensors, where=where,
                               target="a Zarr array", text_allowed=True)
    per_tensor = _dimension_names_per_tensor(dimension_names, names, where)
    plans = [_ArrayPlan(ds[name], renames.get(name, name), per_tensor.get(name), chunk_rows,
                        where) for name in names]
    array_names = [plan.array_name for plan in plans]
    if len(set(array_names)) != len(array_names):
        raise ValueError(f"{where}: two tensors would share one array name: {array_names}")
    by_group: dict[str, list[_ArrayPlan]] = {}  # xarray opens one group at a time
    for plan in plans:
        by_group.setdefault(plan.array_name.rpartition("/")[0], []).append(plan)
    for group_plans in by_group.values():
        _settle_dimension_names(group_plans, where)
    return _write_arrays(zarr, ds, store, plans, zarr_format=zarr_format, overwrite=overwrite,
                         pool=pool, num_workers=num_workers, progress=progress,
                         consolidate=consolidate, storage_options=storage_options,
                         array_options=array_options, groups=export_groups(ds, tensors))


def _dimension_names_per_tensor(given: Any, names: list[str], where: str) -> dict:
    """dimension_names= as {tensor: names}: a dict as it is (its tensors must be exported),
    one sequence for every tensor, None for none."""
    if given is None:
        return {}
    if isinstance(given, dict):
        unknown = [name for name in given if name not in names]
        if unknown:
            raise KeyError(f"{where}: dimension_names names tensors that are not exported: "
                           f"{unknown} (exported: {names})")
        return dict(given)
    if isinstance(given, str):
        raise TypeError(f"{where}: dimension_names must be a sequence of names or a dict "
                        f"{{tensor: names}}, not the string {given!r}")
    return {name: tuple(given) for name in names}


def _settle_dimension_names(plans: list[_ArrayPlan], where: str) -> None:
    """Give every dimension name one size across the group (the plans of one Zarr group), as
    xarray needs to open it as one Dataset. Names asked for (or remembered from an import)
    are kept, and a clash among them is an error; a default name ("sample", "dim_1", ...)
    that clashes takes the array's name as prefix ("labels_dim_1")."""
    sizes: dict[str, tuple[int, str]] = {}  # dimension name -> (size, first array with it)

    def bind(dim: str, size: int, plan: _ArrayPlan) -> None:
        bound_size, bound_array = sizes.setdefault(dim, (size, plan.array_name))
        if bound_size != size:
            raise ValueError(
                f"{where}: dimension {dim!r} has size {bound_size} in array {bound_array!r} "
                f"and {size} in array {plan.array_name!r}, and xarray needs one size per "
                f"dimension name; name them apart with dimension_names="
                f"{{{plan.tensor_name!r}: (...)}}"
            )

    for plan in plans:
        if plan.dims_given:
            for dim, size in zip(plan.dims, plan.shape, strict=True):
                bind(dim, size, plan)
    for plan in plans:
        if plan.dims_given:
            continue
        settled = []
        for dim, size in zip(plan.dims, plan.shape, strict=True):
            if dim in sizes and sizes[dim][0] != size:
                dim = f"{plan.array_name.rpartition('/')[2]}_{dim}"
            bind(dim, size, plan)
            settled.append(dim)
        plan.dims = tuple(settled)


def _write_arrays(zarr: Any, ds: Any, store: Any, plans: list[_ArrayPlan], *,
                  zarr_format: int | None, overwrite: bool, pool: Any, num_workers: int | None,
                  progress: bool, consolidate: bool, storage_options: dict | None,
                  array_options: dict, groups: Sequence[str] = ()) -> Any:
    """Create the planned arrays (at their paths: "Control/x" in group "Control") and the
    `groups` (empty ones too) in the group at `store`, write their rows in parallel blocks
    (one job list for all arrays, so small tensors share the workers), consolidate the
    group's metadata once. Returns the group."""
    url = fspath(store)
    kwargs = {"storage_options": storage_options} if storage_options and url else {}
    v2_api = _zarr_major(zarr) < 3
    fmt = zarr_format or (2 if v2_api else 3)
    if v2_api and any(plan.dtype is str for plan in plans):
        text = [plan.tensor_name for plan in plans if plan.dtype is str]
        raise TypeError(f"to_zarr: text tensors {text} need zarr >= 3 (installed: "
                        f"{zarr.__version__}); leave them out with tensors=[...]")
    if v2_api:
        root = zarr.open_group(url if url is not None else store, mode="a", **kwargs)
    else:
        root = zarr.open_group(url if url is not None else store, mode="a", zarr_format=fmt,
                               **kwargs)
    if not overwrite:  # checked for all before any is created: no half-made group
        taken = [plan.array_name for plan in plans if plan.array_name in root]
        if taken:
            raise FileExistsError(f"to_zarr: {url or 'the store'} already holds {taken}; "
                                  "pass overwrite=True to replace them")

    arrays = [_create_array(root, plan, fmt, v2_api, overwrite, array_options)
              for plan in plans]
    for group in groups:
        root.require_group(group)
    # Pending rows (inside `with ds:`) live only in this process's handle; store objects
    # without a URL cannot cross processes either.
    if getattr(ds, "has_pending", False):
        backend = "serial"
    else:
        backend = "processes" if url is not None else "threads"
    jobs = []
    for plan, array in zip(plans, arrays, strict=True):
        target = (_ZarrTarget(url, array.path, storage_options) if backend == "processes"
                  else array)
        jobs += [_ExportJob(target, plan.source, start, stop, plan.piece_rows())
                 for start, stop in plan.blocks()]
    run_jobs(_export_block, jobs, pool=pool if backend == "processes" else None,
             num_workers=num_workers, backend=backend, progress=progress)
    if consolidate:
        with warnings.catch_warnings():
            # Zarr 3 calls consolidated metadata an extension; xarray reads it, and without
            # it xarray warns on every open.
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(url if url is not None else store, **kwargs)
    return root


def _create_array(root: Any, plan: _ArrayPlan, fmt: int, v2_api: bool, overwrite: bool,
                  array_options: dict) -> Any:
    chunks = (plan.chunk_rows, *(max(1, d) for d in plan.shape[1:])) if plan.shape else ()
    attributes = dict(plan.attributes)
    if fmt == 2:
        attributes[V2_DIMENSIONS_ATTRIBUTE] = list(plan.dims)
    if v2_api:
        array = root.create_dataset(plan.array_name, shape=plan.shape, chunks=chunks,
                                    dtype=plan.dtype, overwrite=overwrite, **array_options)
        array.attrs.update(attributes)
        return array
    dim_kwargs = {"dimension_names": plan.dims} if fmt == 3 else {}
    options = {"config": {"write_empty_chunks": True}, **array_options}  # see DENSE_WRITES
    return root.create_array(plan.array_name, shape=plan.shape, chunks=chunks,
                             dtype=plan.dtype, attributes=attributes, overwrite=overwrite,
                             **dim_kwargs, **options)


def _remembered_dims(tensor: Any, ndim: int) -> tuple | None:
    """The dimension names a Zarr import kept in the tensor's info, if they still fit."""
    remembered = info_value(tensor, DIMENSION_NAMES_INFO)
    if isinstance(remembered, list) and len(remembered) == ndim:
        return tuple(str(name) for name in remembered)
    return None


def _source_ndim(tensor: Any, rows: int) -> int | None:
    """0 or 1 when the tensor came from a 0-D or 1-D array (info "zarr_ndim"), so export
    drops the axis the import added; a 0-D source that has since gained rows goes back
    1-D. None: write the tensor's own shape."""
    ndim = info_value(tensor, ZARR_NDIM_INFO)
    if isinstance(ndim, bool) or ndim not in (0, 1):
        return None
    return 0 if ndim == 0 and rows == 1 else 1


def _array_name(name: Any, where: str) -> str:
    """An array's path in the store: a valid tensor name (groups by "/", no empty, "." or
    ".." part), so an export never writes outside its group."""
    from slicewise.format.errors import DatasetError
    from slicewise.format.manifest import validate_name

    try:
        return validate_name(name, "array")
    except DatasetError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _default_dims(tensor: Any, shape: tuple) -> tuple:
    if not shape:
        return ()
    htype = str(getattr(tensor, "htype", "") or "")
    if htype.startswith("image") and len(shape) in (3, 4):
        return ("sample", "height", "width", "channel")[: len(shape)]
    return ("sample", *(f"dim_{axis}" for axis in range(1, len(shape))))
