"""slicewise.dataset: Dataset, Tensor, Group, `read`, views, versions (Deep Lake 3 names).

    sw.empty / sw.load / sw.dataset(path)              -> Dataset (a published Version + a
                                                          pending Transaction)
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    ds.append({"images": sw.read("a.jpg"), "labels": "cat"})
        └─ DatasetWriter (format/writer.py): encode → buffer → chunk files in storage
    with ds: ...                                        -> one commit on exit
    ds.commit(message, meta={...})                     -> versions/<seq>.json (put-if-absent)
    ds.images[3].numpy()                               -> manifest index → chunk header
                                                          (cached) → one ranged read → its
                                                          checksum block's CRC → decode
    ds.create_group("Control"); ds.create_tensor("Control/x")
    ds.Control.x, ds["Control/x"], ds.Control.tensors  -> Group (group.py): a "/" name prefix
    ds.checkout("alt", create=True); ds.merge("alt")   -> versioning.py, merging.py: branches
                                                          over format/branches.py
    ds.filter(fn, num_workers=4) / ds.query("...")     -> DatasetView (filtering.py on the
                                                          engine, views.py; save_view)
    ds.pop(i), ds.rechunk(), ds.info, sw.copy/deepcopy -> editing.py: each one commit

Modules:
    dataset.py    Dataset: state (see its docstring), views, writes, commits, pickling as a
                  read-only handle; thin methods that call integrations/ lazily (dask,
                  to_hdf5/to_zarr/to_arrow/to_parquet/to_pandas/to_hf, pytorch, show)
    api.py        DatasetAPI, Dataset's base class: Deep Lake 3's version control, filter
                  and query, delete_tensor/pop/info/rechunk/copy, delegating to the modules
                  below
    tensor.py     Tensor (a dataset and a name, valid across commits)
    tensor_view.py TensorView (rows of a tensor by index), normalize_index (the one row-
                  index rule)
    info.py       InfoDict (tensor.info, ds.info: changes become writes)
    group.py      Group (a dataset and a path), RowView (ds[i], group[i])
    opening.py    sw.empty, load, dataset, exists, delete; the marker; Deep Lake 3's extra
                  arguments and S3 creds
    versioning.py branches, checkout, log, diff, reset, delete_branch
    merging.py    merge: per-tensor rules and conflicts (MergeConflictError)
    filtering.py  filter (batches of rows on the engine) and query (a TQL subset)
    views.py      DatasetView; saved views (views/<id>.json)
    editing.py    delete_tensor, pop, info, rechunk, copy and deepcopy
    exports.py    what a Dataset hands to other tools: show, _repr_html_, pytorch,
                  to_arrow/parquet/pandas/hf, to_hdf5, to_zarr, summary
    __init__.py   sw.read, sw.verify and sw.gc (over format/maintenance.py), copy, deepcopy

Writes outside `with ds:` commit at once: one chunk file and one manifest per call (a few
hundred microseconds locally, a few round trips on S3). Batch them in `with ds:`.

The interface other packages build on:

1. Worker-side writing (transform/): `spec = ds.writer_spec()` (JSON-able);
   `w = slicewise.format.DatasetWriter.from_spec(spec, writer_id)` in any process;
   `w.append_row({...})` / `w.append(tensor, value)` / `w.extend(tensor, values)`;
   `receipt = w.finish()` (JSON-able, a few hundred bytes per chunk list).
2. Parent-side publication: `ds.add_receipts(receipts)` (queues, never commits),
   `ds.commit(message, meta={...})` (atomic, also inside `with ds:`, any number of times),
   `ds.version_info` / `ds.log()` entries carry `meta`.
3. dask (integrations/): `Tensor.chunk_row_ranges()`, `tensor[a:b].numpy()`, `.dtype`,
   `.shape` (None for ragged dims), `.is_ragged`; `Tensor.dask()`, `.dask_bag()`,
   `.to_zarr()`, `Dataset.to_hdf5()` delegate to slicewise.integrations; `Tensor.extend`
   hands dask arrays (anything with `__dask_graph__`) to
   `slicewise.integrations.dask.extend_from_dask(tensor, array)`. torch, arrow and hf
   read rows through `ds._reader` and `tensor._state` (integrations/torch.py read_rows).
4. Pickling a Dataset sends (url, version id, storage_options, chunk_target_bytes,
   padding): a read-only handle.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

from slicewise.dataset.dataset import Dataset
from slicewise.dataset.group import Group, RowView
from slicewise.dataset.opening import dataset, delete, empty, exists, load
from slicewise.dataset.tensor import Tensor
from slicewise.dataset.tensor_view import TensorView
from slicewise.dataset.versioning import MergeConflictError
from slicewise.dataset.views import DatasetView
from slicewise.format.errors import CommitConflictError, CorruptionError, DatasetError
from slicewise.format.htypes import HTYPES, FileSample
from slicewise.format.maintenance import GcReport, VerifyReport, gc_storage, verify_storage
from slicewise.format.storage import open_storage

__all__ = [
    "Dataset",
    "Group",
    "Tensor",
    "TensorView",
    "RowView",
    "FileSample",
    "HTYPES",
    "empty",
    "load",
    "dataset",
    "exists",
    "delete",
    "read",
    "deepcopy",
    "copy",
    "DatasetView",
    "MergeConflictError",
    "verify",
    "gc",
    "DatasetError",
    "CorruptionError",
    "CommitConflictError",
    "VerifyReport",
    "GcReport",
]


def deepcopy(src: str | os.PathLike | Dataset, dest: str | os.PathLike,
             tensors: list[str] | None = None, overwrite: bool = False,
             storage_options: dict | None = None, num_workers: int = 0,
             **deeplake_kwargs: Any) -> Dataset:
    """Deep Lake 3's deepcopy: the dataset at `src` (a path or Dataset) to `dest` (any
    path or URL, S3 included), with its whole history: every version, branch and saved
    view, file by file in parallel (files are immutable, so byte for byte). With `tensors`
    only those tensors of the current version are copied, as one version.

    Args:
        src: the dataset's path or URL, or a Dataset.
        dest: where the copy goes.
        tensors: copy only these tensors (current version only, history flattened).
        overwrite: replace what is at `dest`.
        storage_options: fsspec options for the storage.
        num_workers: parallel file copies.
        **deeplake_kwargs: Deep Lake 3's other arguments (creds, token, scheduler,
            progressbar, ...); ignored.

    Returns:
        The copy, opened.

    Raises:
        DatasetError: `dest` is not empty (without overwrite), or no dataset at `src`.

    Example:
        >>> backup = sw.deepcopy("./animals_ds", "s3://bucket/animals_ds")  # doctest: +SKIP
    """
    from slicewise.dataset.editing import deepcopy as _deepcopy

    return _deepcopy(src, dest, tensors=tensors, overwrite=overwrite,
                     storage_options=storage_options, num_workers=num_workers)


def copy(src: str | os.PathLike | Dataset | DatasetView, dest: str | os.PathLike,
         tensors: list[str] | None = None, overwrite: bool = False,
         storage_options: dict | None = None, **deeplake_kwargs: Any) -> Dataset:
    """Deep Lake 3's copy: the current version of `src` (a path, Dataset or view) into a
    new dataset at `dest`, as one version (history flattened).

    Args:
        src: the dataset's path or URL, a Dataset, or a DatasetView (its rows).
        dest: where the copy goes.
        tensors: copy only these tensors (not for a view).
        overwrite: replace what is at `dest`.
        storage_options: fsspec options for the storage.
        **deeplake_kwargs: Deep Lake 3's other arguments; ignored.

    Returns:
        The copy, opened.

    Raises:
        DatasetError: a dataset already at `dest` (without overwrite), or none at `src`.

    Example:
        >>> flat = sw.copy("./animals_ds", "./animals_flat")  # doctest: +SKIP
    """
    from slicewise.dataset.editing import deepcopy as _deepcopy
    from slicewise.dataset.views import DatasetView

    if isinstance(src, DatasetView):
        return src.copy(dest, overwrite=overwrite, storage_options=storage_options)
    return _deepcopy(src, dest, tensors=tensors, overwrite=overwrite,
                     storage_options=storage_options, keep_history=False)


def read(path: str | os.PathLike, verify: bool = False, compression: str | None = None,
         storage_options: dict | None = None) -> FileSample:
    """A lazy file sample: opened only when appended. A JPEG read into a jpeg tensor is
    stored byte for byte; other combinations are decoded and re-encoded.

    Args:
        path: a local path or an fsspec URL (s3://...).
        verify: decode the file at append time to catch corrupt images.
        compression: Deep Lake 3's argument; ignored (the file's format is detected).
        storage_options: fsspec options for a URL.

    Returns:
        A `FileSample` to append to a tensor. Nothing is read yet: a missing or
        unreadable file raises SampleError (a DatasetError) naming the path when it is
        appended.

    Example:
        >>> ds.images.append(sw.read("cat.jpg"))             # doctest: +SKIP
    """
    return FileSample(path, verify=verify, storage_options=storage_options)


def verify(path: str | os.PathLike | Dataset, storage_options: dict | None = None,
           decode: bool = True) -> VerifyReport:
    """Check a dataset's files: read every manifest and every chunk any of them
    references; check sizes, checksums, row counts and (decode=True) that every sample
    decodes.

    Args:
        path: the dataset's path or URL, or a Dataset.
        storage_options: fsspec options for the storage.
        decode: also decode every sample (slower).

    Returns:
        A VerifyReport: `problems` lists each mismatch with its file; `ok` is True when
        there are none.

    Example:
        >>> report = sw.verify("./animals_ds")                # doctest: +SKIP
        >>> report.ok                                         # doctest: +SKIP
        True
    """
    url = path.path if isinstance(path, Dataset) else path
    return verify_storage(open_storage(url, storage_options), decode=decode)


def gc(
    path: str | os.PathLike | Dataset,
    keep_last: int | None = None,
    grace_seconds: float = 600.0,
    storage_options: dict | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Remove versions older than the newest `keep_last` (None keeps every version), then
    chunk and temporary files no kept version references, if older than `grace_seconds`
    (so a writer still running keeps its files). Readers of removed versions fail. The
    newest checkpoint of an unfinished eval is kept, with every version after it: a re-run
    of that eval resumes from it instead of writing its rows again.

    Args:
        path: the dataset's path or URL, or a Dataset.
        keep_last: keep this many newest versions (None: every version).
        grace_seconds: leave unreferenced files younger than this.
        storage_options: fsspec options for the storage.
        dry_run: only report what would be removed.

    Returns:
        A GcReport: removed_versions, removed_files, kept_versions, aborted_uploads.

    Raises:
        DatasetError: no versions at `path`, or keep_last < 1.

    Example:
        >>> print(sw.gc("./animals_ds", keep_last=5, dry_run=True))  # doctest: +SKIP
    """
    from slicewise.transform.checkpoint import resumable_versions  # the layer above: lazily

    url = path.path if isinstance(path, Dataset) else path
    storage = open_storage(url, storage_options)
    protect = resumable_versions(storage) if keep_last is not None else frozenset()
    if keep_last is not None:  # a branch reads main's versions up to its fork (FORMAT.md 8)
        from slicewise.format.branches import fork_seqs

        protect = frozenset(protect) | fork_seqs(storage)
    return gc_storage(storage, keep_last, grace_seconds, dry_run, protect=protect)


class _CallableModule(types.ModuleType):
    """`sw.dataset(path)` must call the function `dataset`, but importing this subpackage
    makes the import system bind `slicewise.dataset` to the module itself. Calling the
    module therefore calls the function."""

    def __call__(self, *args, **kwargs):
        return dataset(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
