"""DatasetAPI: the methods of Dataset that live outside dataset.py (a base class of
Dataset): version control (versioning.py, merging.py), filter and query (filtering.py,
views.py), and delete_tensor, pop, info, rechunk, copy (editing.py). Deep Lake 3's names
and parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slicewise.dataset import editing, filtering, merging, versioning, views
from slicewise.dataset.info import InfoDict


class DatasetAPI:
    """Version control, filter and query, views and editing: the part of `Dataset`'s
    methods that lives outside dataset.py."""

    # ---- version control

    def checkout(self, address: str | int | None = None, create: bool = False,
                 reset: bool = False) -> str:
        """Deep Lake 3's checkout. `ds.checkout("alt", create=True)` makes branch "alt" at
        the current version and moves to it (uncommitted changes are committed first, on
        the branch they were made on); its commits leave the other branches alone.
        `ds.checkout("main")` moves to the head of a branch; `ds.checkout(version_id)` (or
        a seq) to a version, read-only unless it is a branch head; `ds.checkout()` to the
        head of the current branch. reset=True drops uncommitted changes first.

        Args:
            address: a branch name, version id or seq (None: the current branch's head).
            create: make a new branch named `address` at the current version.
            reset: drop uncommitted changes first.

        Returns:
            The id of the version now checked out.

        Raises:
            DatasetError: create=True without a name, an unknown address, or pending
                changes on a read-only dataset.
            ReadOnlyError: create=True on a read-only dataset (a DatasetError).

        Example:
            >>> ds.checkout("alt", create=True); ds.labels.append(1); ds.checkout("main")  # doctest: +SKIP
        """
        return versioning.checkout(self, address, create, reset)

    def log(self) -> list[dict]:
        """Every version of the current branch still stored, newest first: id, seq,
        parent, time, message, meta, changes (Deep Lake 3 prints this; slicewise returns
        it).

        Returns:
            A list of dicts, newest first.

        Example:
            >>> [entry["message"] for entry in ds.log()]         # doctest: +SKIP
            ['added cats', 'create dataset']
        """
        return versioning.log(self)

    @property
    def commits(self) -> list[dict]:
        """Deep Lake 3's ds.commits: the log of the current branch, newest first."""
        return versioning.log(self)

    @property
    def branches(self) -> list[str]:
        """Every branch's name, "main" first."""
        return versioning.branch_names(self)

    @property
    def branch(self) -> str:
        """The current branch's name."""
        return versioning.current_branch(self).name

    def delete_branch(self, name: str) -> None:
        """Delete a branch (not the current one, not "main", not one with sub-branches).
        Its versions go; chunk files only it referenced are left for `sw.gc`.

        Args:
            name: the branch's name.

        Raises:
            DatasetError: "main", the current branch, a branch with sub-branches, or an
                unknown one.
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> ds.delete_branch("alt")                          # doctest: +SKIP
        """
        versioning.delete_branch(self, name)

    def diff(self, id_1: str | int | None = None, id_2: str | int | None = None,
             as_dict: bool = False) -> dict | None:
        """Deep Lake 3's diff: what changed, commit by commit. No ids: the current state
        against the previous commit (uncommitted changes, if any, as "HEAD"); one id: the
        current state and that branch/version, each back to their most recent common
        ancestor; two ids: those two. With as_dict=True returns {"dataset": ...,
        "tensor": ...}: a list of per-commit dicts (no ids) or a tuple of two lists. A
        tensor entry: created, cleared, info_updated, data_added [start, stop),
        data_updated (set of rows), data_deleted (set), data_transformed_in_place; a
        dataset entry: commit_id, author, message, date, info_updated, renamed, deleted
        (tensor names). Otherwise prints the diff and returns None.

        Args:
            id_1: a branch or version (None: the previous commit).
            id_2: another one (needs id_1).
            as_dict: return the diff instead of printing it.

        Returns:
            {"dataset": ..., "tensor": ...} with as_dict=True, else None.

        Raises:
            ValueError: id_2 without id_1.
            DatasetError: an unknown id, or no common ancestor left.

        Example:
            >>> ds.diff("alt", as_dict=True)["tensor"]           # doctest: +SKIP
        """
        return versioning.diff(self, id_1, id_2, as_dict)

    def merge(self, target_id: str | int, conflict_resolution: str | None = None,
              delete_removed_tensors: bool = False, force: bool = False) -> str:
        """Deep Lake 3's merge: bring a branch's (or version's) changes since the common
        ancestor into the current branch, as one new version. conflict_resolution: None
        (raise MergeConflictError when both sides changed the same rows), "ours" or
        "theirs". See slicewise/dataset/merging.py.

        Args:
            target_id: the branch or version to merge in.
            conflict_resolution: None, "ours" or "theirs".
            delete_removed_tensors: delete tensors the other side deleted.
            force: Deep Lake 3's; ignored.

        Returns:
            The new version's id.

        Raises:
            MergeConflictError: both sides changed the same rows, with
                conflict_resolution=None (nothing is merged).
            DatasetError: no common ancestor left (gc?), or an unknown target.
            ValueError: a conflict_resolution other than None, "ours", "theirs".

        Example:
            >>> ds.checkout("main"); ds.merge("alt", conflict_resolution="theirs")  # doctest: +SKIP
        """
        return merging.merge(self, target_id, conflict_resolution, delete_removed_tensors,
                             force)

    def reset(self, force: bool = False) -> str:
        """Deep Lake 3's reset: drop uncommitted changes.

        Args:
            force: Deep Lake 3's; ignored.

        Returns:
            The id of the version the dataset reads.

        Example:
            >>> ds.reset()                                       # doctest: +SKIP
        """
        return versioning.reset(self)

    # ---- filter, query, views

    def filter(self, function: Callable[..., Any] | str, num_workers: int = 0,
               scheduler: str = "threaded", progressbar: bool = True,
               save_result: bool = False, result_path: Any = None,
               result_ds_args: dict | None = None) -> views.DatasetView:
        """Deep Lake 3's filter: the rows for which `function(ds[i])` is true, as a
        DatasetView, evaluated in parallel on the engine (num_workers workers of
        `scheduler`: "threaded", "processed", "serial", "dask", "ray"). `function` may be an
        `@sw.compute` function with bound arguments, or a query string (see `query`).
        save_result=True saves the view (in the dataset, or as a dataset of its own at
        result_path).

        Args:
            function: `function(row)` true keeps the row; a compute function; or a query
                string.
            num_workers: workers.
            scheduler: "threaded", "processed", "serial", "dask" or "ray".
            progressbar: show a progress bar.
            save_result: save the result (`DatasetView.save_view`).
            result_path: save it as a dataset of its own there.
            result_ds_args: more `save_view` arguments.

        Returns:
            A DatasetView of the rows kept.

        Raises:
            DatasetError: the dataset has uncommitted changes.
            TypeError: `function` is neither callable nor a string.
            ValueError: a pipeline of several functions, or a bad query (QueryError).

        Example:
            >>> cats = ds.filter(lambda s: s.labels.text()[0] == "cat", num_workers=2)  # doctest: +SKIP
        """
        return filtering.filter_rows(self, function, num_workers, scheduler, progressbar,
                                     save_result, result_path, result_ds_args)

    def query(self, query_string: str) -> views.DatasetView:
        """Rows matching a simple condition over scalar tensors, as a DatasetView: a subset
        of Deep Lake 3's TQL (`"labels == 'cat'"`, `"size > 3 and labels != 'dog'"`,
        `"labels in ['cat', 'dog']"`, optionally after `select * where`).

        Args:
            query_string: the condition.

        Returns:
            A DatasetView of the matching rows.

        Raises:
            QueryError: anything outside the subset (a ValueError saying what is
                supported), or an unknown tensor.

        Example:
            >>> cats = ds.query("labels == 'cat'")               # doctest: +SKIP
        """
        return filtering.query_rows(self, query_string)

    def load_view(self, id: str, optimize: bool = False, **kwargs: Any) -> views.DatasetView:
        """A view saved with `view.save_view()` / `filter(save_result=True)`.

        Args:
            id: the view's id.
            optimize: Deep Lake 3's; ignored.
            **kwargs: Deep Lake 3's other arguments; ignored.

        Returns:
            The DatasetView, at the version it was saved from.

        Raises:
            DatasetError: no view with that id.
            CorruptionError: the saved view's file is damaged.

        Example:
            >>> cats = ds.load_view("cats")                      # doctest: +SKIP
        """
        return views.load_view(self, id)

    def get_views(self) -> list[dict]:
        """The views saved in this dataset.

        Returns:
            A list of dicts: id, version, branch, message, query, time.

        Example:
            >>> [view["id"] for view in ds.get_views()]          # doctest: +SKIP
        """
        return views.list_views(self)

    # ---- editing

    def delete_tensor(self, name: str, large_ok: bool = False) -> None:
        """Remove a tensor in a new version (older versions keep it).

        Args:
            name: the tensor's name.
            large_ok: Deep Lake 3's; ignored.

        Raises:
            DatasetError: no such tensor, or a read-only dataset.

        Example:
            >>> ds.delete_tensor("old_labels")                   # doctest: +SKIP
        """
        editing.delete_tensor(self, name, large_ok)

    def pop(self, index: int | None = None) -> None:
        """Remove row `index` (default: the last) from every tensor, as a new version; the
        old rows stay readable through the log.

        Args:
            index: the row (default: the last).

        Raises:
            IndexError: an empty dataset, or `index` out of range.
            DatasetError: a read-only dataset.

        Example:
            >>> ds.pop(0)                                        # doctest: +SKIP
        """
        editing.pop(self, index)

    @property
    def info(self) -> InfoDict:
        """The dataset's info: a dict; `ds.info.update(key=value)` writes a new version."""
        return editing.get_info(self)

    @info.setter
    def info(self, value: dict) -> None:
        editing.set_info(self, dict(value), replace=True)

    def rechunk(self, tensors: str | list[str] | None = None, num_workers: int = 0,
                scheduler: str = "threaded", progressbar: bool = True,
                target_bytes: int | None = None) -> None:
        """Rewrite tensors' chunks to about `target_bytes` each (the dataset's chunk
        target by default), atomically: one new version.

        Args:
            tensors: the tensors (default: all).
            num_workers: workers.
            scheduler: "threaded", "processed", "serial", ...
            progressbar: show a progress bar.
            target_bytes: the chunks' target size.

        Raises:
            DatasetError: target_bytes < 1, an unknown tensor, or a read-only dataset.

        Example:
            >>> ds.rechunk(["images"], target_bytes=16 * 2**20)  # doctest: +SKIP
        """
        editing.rechunk(self, tensors, num_workers, scheduler, progressbar, target_bytes)

    def copy(self, dest: Any, tensors: list[str] | None = None, overwrite: bool = False,
             creds: Any = None, token: Any = None, num_workers: int = 0,
             scheduler: str = "threaded", progressbar: bool = True, public: bool = False,
             storage_options: dict | None = None, **kwargs: Any) -> Any:
        """Deep Lake 3's ds.copy: this version's rows into a new dataset at `dest` (no
        history).

        Args:
            dest: a path or URL.
            tensors: copy only these tensors.
            overwrite: replace what is at `dest`.
            creds: Deep Lake 3's; ignored (use storage_options).
            token: Deep Lake 3's; ignored.
            num_workers: Deep Lake 3's; ignored.
            scheduler: Deep Lake 3's; ignored.
            progressbar: Deep Lake 3's; ignored.
            public: Deep Lake 3's; ignored.
            storage_options: fsspec options for `dest`.
            **kwargs: Deep Lake 3's other arguments; ignored.

        Returns:
            The new Dataset.

        Raises:
            DatasetError: `dest` is not empty (without overwrite).

        Example:
            >>> flat = ds.copy("./animals_flat")                 # doctest: +SKIP
        """
        return editing.deepcopy(self, dest, tensors=tensors, overwrite=overwrite,
                                storage_options=storage_options, keep_history=False)
