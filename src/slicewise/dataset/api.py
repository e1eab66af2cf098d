"""DatasetAPI: the methods of Dataset that live outside dataset.py (a base class of
Dataset): version control (versioning.py, merging.py), filter and query (filtering.py,
views.py), and delete_tensor, pop, info, rechunk, copy (editing.py). Deep Lake 3's names
and parameters."""

from __future__ import annotations

from slicewise.dataset import editing, filtering, merging, versioning, views


class DatasetAPI:
    # ---- version control

    def checkout(self, address=None, create: bool = False, reset: bool = False) -> str:
        """Deep Lake 3's checkout. `ds.checkout("alt", create=True)` makes branch "alt" at
        the current version and moves to it (uncommitted changes are committed first, on
        the branch they were made on); its commits leave the other branches alone.
        `ds.checkout("main")` moves to the head of a branch; `ds.checkout(version_id)` (or
        a seq) to a version, read-only unless it is a branch head; `ds.checkout()` to the
        head of the current branch. reset=True drops uncommitted changes first. Returns
        the version id.

        >>> ds.checkout("alt", create=True); ds.labels.append(1); ds.checkout("main")
        """
        return versioning.checkout(self, address, create, reset)

    def log(self) -> list[dict]:
        """Every version of the current branch still stored, newest first: id, seq,
        parent, time, message, meta, changes (Deep Lake 3 prints this; slicewise returns
        it)."""
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
        Its versions go; chunk files only it referenced are left for `sw.gc`."""
        versioning.delete_branch(self, name)

    def diff(self, id_1=None, id_2=None, as_dict: bool = False):
        """Deep Lake 3's diff: what changed, commit by commit. No ids: the current state
        against the previous commit (uncommitted changes, if any, as "HEAD"); one id: the
        current state and that branch/version, each back to their most recent common
        ancestor; two ids: those two. With as_dict=True returns {"dataset": ...,
        "tensor": ...}: a list of per-commit dicts (no ids) or a tuple of two lists. A
        tensor entry: created, cleared, info_updated, data_added [start, stop),
        data_updated (set of rows), data_deleted (set), data_transformed_in_place; a
        dataset entry: commit_id, author, message, date, info_updated, renamed, deleted
        (tensor names). Otherwise prints the diff and returns None."""
        return versioning.diff(self, id_1, id_2, as_dict)

    def merge(self, target_id, conflict_resolution=None, delete_removed_tensors: bool = False,
              force: bool = False) -> str:
        """Deep Lake 3's merge: bring a branch's (or version's) changes since the common
        ancestor into the current branch, as one new version. conflict_resolution: None
        (raise MergeConflictError when both sides changed the same rows), "ours" or
        "theirs". Returns the new version's id. See slicewise/dataset/merging.py."""
        return merging.merge(self, target_id, conflict_resolution, delete_removed_tensors,
                             force)

    def reset(self, force: bool = False) -> str:
        """Deep Lake 3's reset: drop uncommitted changes."""
        return versioning.reset(self)

    # ---- filter, query, views

    def filter(self, function, num_workers: int = 0, scheduler: str = "threaded",
               progressbar: bool = True, save_result: bool = False, result_path=None,
               result_ds_args: dict | None = None):
        """Deep Lake 3's filter: the rows for which `function(ds[i])` is true, as a
        DatasetView, evaluated in parallel on the engine (num_workers workers of
        `scheduler`: "threaded", "processed", "serial", "dask", "ray"). `function` may be an
        `@sw.compute` function with bound arguments, or a query string (see `query`).
        save_result=True saves the view (in the dataset, or as a dataset of its own at
        result_path).

        >>> cats = ds.filter(lambda s: s.labels.text()[0] == "cat", num_workers=2)
        """
        return filtering.filter_rows(self, function, num_workers, scheduler, progressbar,
                                     save_result, result_path, result_ds_args)

    def query(self, query_string: str):
        """Rows matching a simple condition over scalar tensors, as a DatasetView: a subset
        of Deep Lake 3's TQL (`"labels == 'cat'"`, `"size > 3 and labels != 'dog'"`,
        `"labels in ['cat', 'dog']"`, optionally after `select * where`). Anything else is
        a QueryError that says what is supported."""
        return filtering.query_rows(self, query_string)

    def load_view(self, id: str, optimize: bool = False, **kwargs):
        """A view saved with `view.save_view()` / `filter(save_result=True)`."""
        return views.load_view(self, id)

    def get_views(self) -> list[dict]:
        """The views saved in this dataset."""
        return views.list_views(self)

    # ---- editing

    def delete_tensor(self, name: str, large_ok: bool = False) -> None:
        """Remove a tensor in a new version (older versions keep it)."""
        editing.delete_tensor(self, name, large_ok)

    def pop(self, index: int | None = None) -> None:
        """Remove row `index` (default: the last) from every tensor, as a new version; the
        old rows stay readable through the log."""
        editing.pop(self, index)

    @property
    def info(self) -> editing.DatasetInfo:
        """The dataset's info: a dict; `ds.info.update(key=value)` writes a new version."""
        return editing.get_info(self)

    @info.setter
    def info(self, value: dict) -> None:
        editing.set_info(self, dict(value), replace=True)

    def rechunk(self, tensors=None, num_workers: int = 0, scheduler: str = "threaded",
                progressbar: bool = True, target_bytes: int | None = None) -> None:
        """Rewrite tensors' chunks to about `target_bytes` each (the dataset's chunk
        target by default), atomically: one new version."""
        editing.rechunk(self, tensors, num_workers, scheduler, progressbar, target_bytes)

    def copy(self, dest, tensors=None, overwrite: bool = False, creds=None, token=None,
             num_workers: int = 0, scheduler: str = "threaded", progressbar: bool = True,
             public: bool = False, storage_options=None, **kwargs):
        """Deep Lake 3's ds.copy: this version's rows into a new dataset at `dest` (no
        history); returns it."""
        return editing.deepcopy(self, dest, tensors=tensors, overwrite=overwrite,
                                storage_options=storage_options, keep_history=False)
