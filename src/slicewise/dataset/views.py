"""DatasetView: rows of one version of a dataset, chosen by index (what `ds.filter`,
`ds.query` and `ds.load_view` return; Deep Lake 3's filtered dataset view).

A view holds the dataset (a read-only handle of one version) and the row numbers, in
order. It reads like a dataset (`len(view)`, `view.images[0].numpy()`,
`view.labels.numpy()`, `view[3]`, iteration, `view.numpy()`), is a valid `data_in` for
`eval` (workers get `view[i]`, one row of the stored dataset), pickles as (dataset
handle, rows), and can be saved in the dataset (`save_view`, read back with
`ds.load_view(id)`) or written out as a dataset of its own (`view.copy(dest)`).

Saved views are `views/<id>.json` (FORMAT.md 8.4): {"format": "slicewise-view", ...,
"version": <id>, "branch": <name>, "rows": [...], "query": <text or null>}, written with
put-if-absent. They name a version: `sw.gc(keep_last=...)` may retire it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from slicewise.dataset.group import RowView
from slicewise.dataset.tensor import Tensor
from slicewise.dataset.tensor_view import TensorView, normalize_index
from slicewise.format.errors import CorruptionError, DatasetError

VIEWS_PREFIX = "views/"
_VIEW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class DatasetView:
    """Rows `rows` (int64, in order) of the read-only dataset handle `dataset`.

    What `ds.filter`, `ds.query` and `ds.load_view` return; reads like a dataset
    (`view.labels.numpy()`, `view[0]`, `len(view)`), never writes.

    Args:
        dataset: the read-only Dataset handle.
        rows: the dataset's row numbers, in order.
        query: the query that made it (the message of a copy).

    Example:
        >>> cats = ds.query("labels == 'cat'")                   # doctest: +SKIP
        >>> len(cats), cats.index[:3]                            # doctest: +SKIP
        (300, [0, 2, 5])
    """

    def __init__(self, dataset: Any, rows: Any, query: str | None = None):
        self._dataset = dataset
        self._rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self._query = query

    # identity
    @property
    def path(self) -> str:
        """The dataset's path or URL."""
        return self._dataset.path

    @property
    def version(self) -> str:
        """The id of the version the view reads."""
        return self._dataset.version

    @property
    def dataset(self) -> Any:
        """The (read-only) Dataset the rows come from."""
        return self._dataset

    @property
    def read_only(self) -> bool:
        """Always True: a view does not write."""
        return True

    @property
    def index(self) -> list[int]:
        """The rows of the dataset this view holds (Deep Lake 3: `view.index`)."""
        return self._rows.tolist()

    indices = index

    def __reduce__(self):
        return (DatasetView, (self._dataset, self._rows, self._query))

    def __repr__(self) -> str:
        shown = self._rows[:8].tolist()
        more = ", ..." if len(self._rows) > 8 else ""
        return f"DatasetView({self.path!r}, version={self.version!r}, rows={shown}{more})"

    # reading
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def tensors(self) -> dict[str, TensorView]:
        """Every tensor, restricted to the view's rows, by full name."""
        return {name: TensorView(Tensor(self._dataset, name), None, self._rows)
                for name in self._dataset._view().tensors}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return RowView(self._dataset, None, self._rows).__getattr__(name)

    def __getitem__(self, index):
        if isinstance(index, str):
            return RowView(self._dataset, None, self._rows)[index]
        single, rows = normalize_index(index, len(self._rows))
        if single is not None:
            return RowView(self._dataset, int(self._rows[single]), None)
        return DatasetView(self._dataset, self._rows[np.asarray(rows, dtype=np.int64)])

    def __iter__(self):
        for row in self._rows:
            yield RowView(self._dataset, int(row), None)

    def __contains__(self, name) -> bool:
        return name in self._dataset

    def numpy(self, aslist: bool = False) -> dict:
        """Every tensor's rows in the view: {tensor name: array or list of arrays}.

        Args:
            aslist: lists of per-row arrays instead of stacked arrays.

        Returns:
            {tensor name: array or list}.

        Example:
            >>> cats.numpy()["labels"].shape                     # doctest: +SKIP
        """
        return {name: view.numpy(aslist=aslist) for name, view in self.tensors.items()}

    def filter(self, function: Callable[..., Any] | str, num_workers: int = 0,
               scheduler: str = "threaded", progressbar: bool = True,
               save_result: bool = False, result_path: Any = None,
               result_ds_args: dict | None = None) -> DatasetView:
        """Filter this view further (the rows keep their numbers in the dataset).

        Args:
            function: as `Dataset.filter`: `function(row)` true keeps it; or a query.
            num_workers: workers.
            scheduler: "threaded", "processed", "serial", "dask" or "ray".
            progressbar: show a progress bar.
            save_result: save the result (`save_view`).
            result_path: save it as a dataset of its own there.
            result_ds_args: more `save_view` arguments.

        Returns:
            A DatasetView of the rows kept.

        Raises:
            TypeError: `function` is neither callable nor a string.
            QueryError: a query outside the supported subset (a ValueError).

        Example:
            >>> big_cats = cats.filter(lambda row: row.size.numpy()[0] > 3)  # doctest: +SKIP
        """
        from slicewise.dataset.filtering import filter_rows

        return filter_rows(self._dataset, function, num_workers, scheduler, progressbar,
                           save_result, result_path, result_ds_args, rows=self._rows)

    def query(self, text: str) -> DatasetView:
        """The rows of this view that match a query (as `Dataset.query`).

        Args:
            text: the condition, e.g. "labels == 'cat'".

        Returns:
            A DatasetView.

        Raises:
            QueryError: a query outside the supported subset (a ValueError).

        Example:
            >>> cats.query("size > 3")                           # doctest: +SKIP
        """
        from slicewise.dataset.filtering import query_rows

        return query_rows(self._dataset, text, rows=self._rows)

    # saving and exporting
    def save_view(self, message: str | None = None, path: Any = None, id: str | None = None,
                  optimize: bool = False, **kwargs: Any) -> str:
        """Deep Lake 3's save_view. Without `path`: stored in the dataset as
        views/<id>.json (rows and version; returns the id, read back with
        `ds.load_view(id)`). With `path`: the rows are copied into a new dataset there
        (`copy`), and the id is that dataset's path. `optimize` is accepted: a copy is what
        Deep Lake 3's optimize made.

        Args:
            message: stored with the view.
            path: copy the rows into a new dataset there instead.
            id: the view's id (letters, digits, "_", ".", "-"; default: generated).
            optimize: accepted; ignored.
            **kwargs: `overwrite` and `storage_options` for a copy to `path`; others
                are ignored.

        Returns:
            The view's id, or `path`.

        Raises:
            DatasetError: a bad id, or a view with that id already saved.

        Example:
            >>> view_id = cats.save_view(message="cats")          # doctest: +SKIP
            >>> ds.load_view(view_id)                            # doctest: +SKIP
        """
        if path is not None:
            self.copy(path, overwrite=kwargs.get("overwrite", False),
                      storage_options=kwargs.get("storage_options"))
            return str(path)
        return save_view_file(self, message, id)

    def copy(self, dest: Any, overwrite: bool = False, storage_options: dict | None = None,
             **kwargs: Any) -> Any:
        """Write this view's rows into a new dataset at `dest` (one commit).

        Args:
            dest: a path or URL.
            overwrite: replace a dataset there.
            storage_options: fsspec options for `dest`.
            **kwargs: Deep Lake 3's other arguments; ignored.

        Returns:
            The new Dataset.

        Raises:
            DatasetError: a dataset already at `dest` (without overwrite).

        Example:
            >>> cats.copy("./cats_ds")                           # doctest: +SKIP
        """
        from slicewise.dataset.editing import copy_rows

        return copy_rows(self._dataset, self._rows, dest, overwrite=overwrite,
                         storage_options=storage_options, message=self._query)

    def to_hdf5(self, file: Any, tensors: Any = None, *, mode: str = "w",
                compression: str | None = None) -> str:
        """Export the view's rows to HDF5 (through a copy in memory).

        Args:
            file: the HDF5 file's path.
            tensors: tensor names (default: all).
            mode: h5py's file mode.
            compression: an HDF5 filter for numeric datasets, e.g. "gzip".

        Returns:
            The file's path.

        Raises:
            TypeError: as `Dataset.to_hdf5`.
            ValueError: as `Dataset.to_hdf5`.

        Example:
            >>> cats.to_hdf5("cats.h5")                          # doctest: +SKIP
        """
        import uuid

        copy = self.copy(f"memory://sw-view-{uuid.uuid4().hex}")
        try:
            return copy.to_hdf5(file, tensors, mode=mode, compression=compression)
        finally:
            copy.storage.delete_all()


def save_view_file(view: DatasetView, message: str | None, view_id: str | None) -> str:
    from slicewise.dataset.versioning import current_branch, raw_storage

    ds = view._dataset
    view_id = view_id or secrets.token_hex(8)
    if not isinstance(view_id, str) or not _VIEW_ID.match(view_id):
        raise DatasetError(f"view id {view_id!r}: letters, digits, '_', '.', '-' only")
    doc = {
        "format": "slicewise-view",
        "format_version": 1,
        "id": view_id,
        "version": ds.version,
        "branch": current_branch(ds).name,
        "time": time.time(),
        "message": message or "",
        "query": view._query,
        "rows": view._rows.tolist(),
    }
    storage = raw_storage(ds)
    if not storage.set_if_not_exists(f"{VIEWS_PREFIX}{view_id}.json",
                                     json.dumps(doc, separators=(",", ":")).encode()):
        raise DatasetError(f"a view {view_id!r} is already saved in {ds.path}")
    return view_id


def load_view(ds, view_id: str) -> DatasetView:
    """A view saved with `save_view` (Deep Lake 3's ds.load_view)."""
    from slicewise.dataset.dataset import Dataset
    from slicewise.dataset.versioning import raw_storage
    from slicewise.format.manifest import find_version

    if not isinstance(view_id, str) or not _VIEW_ID.match(view_id):
        raise DatasetError(f"no view {view_id!r}")
    storage = raw_storage(ds)
    key = f"{VIEWS_PREFIX}{view_id}.json"
    try:
        doc = json.loads(storage.get(key))
    except FileNotFoundError:
        raise DatasetError(f"no view {view_id!r} is saved in {ds.path}") from None
    except ValueError as exc:
        raise CorruptionError(f"view {storage.full_path(key)}: {exc}",
                              storage.full_path(key)) from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(type(r) is int and r >= 0 for r in rows):
        raise CorruptionError(f"view {storage.full_path(key)} has no valid rows",
                              storage.full_path(key))
    version = find_version(storage, doc.get("version"))
    handle = Dataset(storage, version, read_only=True, url=ds.path,
                     storage_options=ds._storage_options)
    if rows and max(rows) >= handle.max_len:
        raise CorruptionError(f"view {storage.full_path(key)} names rows past the dataset",
                              storage.full_path(key))
    return DatasetView(handle, rows, doc.get("query"))


def list_views(ds) -> list[dict]:
    from slicewise.dataset.versioning import raw_storage

    out = []
    storage = raw_storage(ds)
    for key in storage.list(VIEWS_PREFIX, refresh=True):
        if key.endswith(".json") and "/.tmp-" not in key:
            try:
                doc = json.loads(storage.get(key))
                out.append({k: doc.get(k) for k in ("id", "version", "branch", "message",
                                                     "query", "time")})
            except (ValueError, FileNotFoundError):
                continue
    return out
