"""Version control with Deep Lake 3's names: branches, checkout, log, diff, merge, reset.

A branch is a line of immutable versions (format/branches.py, FORMAT.md §8). An open
Dataset is on one branch: `ds._storage` is that branch's view of the storage (a
BranchStorage off main), so commit, refresh and eval work on it unchanged.

    ds.checkout("alt", create=True)   record branches/alt.json (put-if-absent), stay at
                                      this version; commits go to branches/<id>/versions/
    ds.checkout("main")               the head of main
    ds.checkout("v3-...")             that version (read-only unless it is a head)
    ds.diff("alt", "main", as_dict=True)
    ds.merge("alt", conflict_resolution="theirs")   one new version on the current branch
"""

from __future__ import annotations

import datetime
from typing import Any

from slicewise.format.branches import (
    MAIN,
    MAIN_BRANCH,
    Branch,
    BranchStorage,
    branch_storage,
    create_branch,
    delete_branch_files,
    find_in_branches,
    list_branches,
    read_branch,
)
from slicewise.format.errors import DatasetError, ReadOnlyError
from slicewise.format.manifest import (
    Version,
    find_version,
    list_version_seqs,
    read_latest,
    read_version,
)


class MergeConflictError(DatasetError):
    """Deep Lake 3's MergeConflictError: both sides changed the same rows (or tensors) since
    their common ancestor and no conflict_resolution was given. `conflicts` maps each
    tensor to the rows in conflict (None for the whole tensor). Raised by `ds.merge`;
    nothing is merged.

    Args:
        message: the error text.
        conflicts: {tensor name: rows in conflict, or None for the whole tensor}.

    Example:
        >>> try:
        ...     ds.merge("alt")                                  # doctest: +SKIP
        ... except sw.MergeConflictError as error:
        ...     ds.merge("alt", conflict_resolution="theirs")
    """

    def __init__(self, message: str, conflicts: dict | None = None):
        super().__init__(message)
        self.conflicts = conflicts or {}


def raw_storage(ds):
    storage = ds._storage
    return storage.base if isinstance(storage, BranchStorage) else storage


def current_branch(ds) -> Branch:
    return ds.__dict__.get("_branch") or MAIN_BRANCH


def branch_names(ds) -> list[str]:
    return [b.name for b in list_branches(raw_storage(ds))]


def _switch(ds, branch: Branch, base: Version, pinned: bool) -> None:
    ds._storage = branch_storage(raw_storage(ds), branch)
    ds.__dict__["_branch"] = branch
    ds._base = base
    ds._pinned = pinned
    ds._txn = None
    ds._writer = None
    ds._touch()


def _auto_commit(ds, what: str) -> None:
    """Deep Lake 3: checking out (or merging) with uncommitted changes commits them first."""
    if ds.has_pending:
        ds.commit(f"auto-commit before {what}")


def checkout(ds, address=None, create: bool = False, reset: bool = False) -> str:
    """See Dataset.checkout."""
    if reset:
        ds.discard()
    if create:
        if address is None:
            raise DatasetError("checkout(create=True) needs the new branch's name")
        if ds._read_only or ds._pad_tensors:
            raise ReadOnlyError(f"dataset {ds.path} is read-only: cannot create a branch")
        _auto_commit(ds, f"creating branch {address!r}")
        branch = create_branch(raw_storage(ds), address, current_branch(ds), ds._base.id)
        _switch(ds, branch, ds._base, pinned=False)
        return ds._base.id
    if ds.has_pending:
        if ds.read_only:
            raise DatasetError("discard pending changes before checkout()")
        _auto_commit(ds, "checkout")
    raw = raw_storage(ds)
    if address is None or address == "latest":
        branch = current_branch(ds)
    elif isinstance(address, str) and _is_branch(raw, address):
        branch = read_branch(raw, address)
    else:
        branch, version = locate(ds, address)
        head = read_latest(branch_storage(raw, branch))
        _switch(ds, branch, version, pinned=version.id != head.id)
        return version.id
    head = read_latest(branch_storage(raw, branch))
    _switch(ds, branch, head, pinned=False)
    return head.id


def _is_branch(raw, name: str) -> bool:
    if name == MAIN:
        return True
    if name.startswith("v") and name[1:2].isdigit():
        return False
    try:
        read_branch(raw, name)
    except DatasetError:
        return False
    return True


def locate(ds, address) -> tuple[Branch, Version]:
    """The branch and version `address` names: a branch (its head), or a version id or seq
    (the current branch's history first, then every branch's own versions)."""
    raw = raw_storage(ds)
    if isinstance(address, str) and _is_branch(raw, address):
        branch = read_branch(raw, address)
        return branch, read_latest(branch_storage(raw, branch))
    branch = current_branch(ds)
    try:
        version = find_version(ds._storage, address)
        if isinstance(address, str) and version.id != address:
            raise DatasetError(address)
        if _in_history(branch_storage(raw, branch), version):
            return branch, version
    except DatasetError:
        pass
    if isinstance(address, str):
        hit = find_in_branches(raw, address)
        if hit is not None:
            return hit
    version = find_version(raw, address)
    return MAIN_BRANCH, version


def _in_history(storage, version: Version) -> bool:
    try:
        return read_version(storage, version.seq).id == version.id
    except DatasetError:
        return False


def log(ds) -> list[dict]:
    """Every version of the current branch still stored, newest first."""
    storage = ds._storage
    return [read_version(storage, seq).info() for seq in reversed(list_version_seqs(storage))]


def delete_branch(ds, name: str) -> None:
    if ds._read_only or ds._pad_tensors:
        raise ReadOnlyError(f"dataset {ds.path} is read-only: cannot delete a branch")
    if name == MAIN:
        raise DatasetError("branch 'main' cannot be deleted")
    if name == current_branch(ds).name:
        raise DatasetError(
            f"branch {name!r} is checked out; checkout() another branch before deleting it"
        )
    raw = raw_storage(ds)
    branch = read_branch(raw, name)
    children = [b.name for b in list_branches(raw)[1:] if b.parent_id == branch.id]
    if children:
        raise DatasetError(
            f"branch {name!r} has sub-branches {children}: delete them first (Deep Lake 3 "
            "refuses too)"
        )
    delete_branch_files(raw, branch)


# ---- diff


def _chain(storage, version: Version, stop_ids: set[str] | None = None) -> list[Version]:
    """`version` and its ancestors, newest first (until a version gc removed)."""
    out = [version]
    while out[-1].seq > 1 and (stop_ids is None or out[-1].id not in stop_ids):
        try:
            parent = read_version(storage, out[-1].seq - 1)
        except DatasetError:
            break
        if parent.id != out[-1].parent:
            break
        out.append(parent)
    return out


def common_ancestor(chain_1: list[Version], chain_2: list[Version]) -> Version | None:
    ids = {v.id for v in chain_2}
    return next((v for v in chain_1 if v.id in ids), None)


def _handle(ds, version: Version):
    from slicewise.dataset.dataset import Dataset

    return Dataset(raw_storage(ds), version, read_only=True, url=ds.path,
                   storage_options=ds._storage_options)


def row_values(handle, name: str, rows) -> list[bytes]:
    """Comparable bytes of each row: stored bytes, decoded ids for class labels."""
    tensor = handle.tensors[name]
    if tensor.htype == "class_label":
        return [tensor[int(r)].numpy().tobytes() for r in rows]
    return [tensor[int(r)].tobytes() for r in rows]


def changed_rows(old_handle, new_handle, name: str, k: int) -> set[int]:
    """Rows of chunk slot k whose value differs between the two versions."""
    state = new_handle._base.tensors[name]
    start = int(state.cum_rows[k])
    rows = range(start, start + state.rows[k])
    old, new = row_values(old_handle, name, rows), row_values(new_handle, name, rows)
    return {r for r, a, b in zip(rows, old, new, strict=True) if a != b}


def _empty_change() -> dict:
    return {"created": False, "cleared": False, "info_updated": False, "data_added": [0, 0],
            "data_updated": set(), "data_deleted": set(), "data_transformed_in_place": False}


def commit_changes(ds, new: Version, old: Version | None, commit_id=None) -> tuple[dict, dict]:
    """Deep Lake 3's per-commit diff entries (dataset change, tensor changes) of `new`
    relative to its parent `old`."""
    commit_id = commit_id or new.id
    date = str(datetime.datetime.fromtimestamp(new.time))[:19] if new.time else None
    old_tensors = old.tensors if old is not None else {}
    deleted = [n for n in old_tensors if n not in new.tensors]
    ds_change = {"commit_id": commit_id, "author": None, "message": new.message, "date": date,
                 "info_updated": False, "renamed": {}, "deleted": deleted}
    tensor_change: dict[str, Any] = {"commit_id": commit_id}
    popped = (new.meta or {}).get("pop") if old is not None else None
    cleared = set((new.changes or {}).get("cleared", []))
    new_handle = old_handle = None
    for name, state in new.tensors.items():
        change = _empty_change()
        prev = old_tensors.get(name)
        if prev is None or prev.meta.id != state.meta.id:
            change["created"] = True
            change["data_added"] = [0, state.length]
        elif popped is not None and name in popped.get("tensors", [name]):
            change["data_deleted"] = {int(i) for i in popped.get("rows", [])}
        elif name in cleared:
            if not (new.meta or {}).get("rechunk"):
                change["data_transformed_in_place"] = True
        else:
            if state.length > prev.length:
                change["data_added"] = [prev.length, state.length]
            slots = [k for k in range(min(len(prev.keys), len(state.keys)))
                     if prev.keys[k] != state.keys[k]]
            if slots:
                if new_handle is None:
                    new_handle, old_handle = _handle(ds, new), _handle(ds, old)
                for k in slots:
                    change["data_updated"] |= changed_rows(old_handle, new_handle, name, k)
        if prev is not None and prev.meta.info != state.meta.info:
            change["info_updated"] = True
        tensor_change[name] = change
    return ds_change, tensor_change


def _head_state(ds) -> tuple[Version, Any]:
    """The current state: the base plus pending changes (Deep Lake 3's HEAD)."""
    if ds.has_pending:
        return ds._data_view(), "HEAD"
    return ds._base, None


def _changes_to(ds, version: Version, storage, stop: Version, head_id=None):
    ds_list, tensor_list = [], []
    chain = _chain(storage, version, {stop.id})
    for i, current in enumerate(chain):
        if current.id == stop.id:
            break
        parent = chain[i + 1] if i + 1 < len(chain) else None
        d, t = commit_changes(ds, current, parent, head_id if i == 0 else None)
        ds_list.append(d)
        tensor_list.append(t)
    return ds_list, tensor_list


def diff(ds, id_1=None, id_2=None, as_dict: bool = False):
    """See Dataset.diff."""
    if id_1 is None and id_2 is not None:
        raise ValueError("Can't specify id_2 without specifying id_1")
    raw = raw_storage(ds)
    head, head_id = _head_state(ds)
    if id_1 is None:
        if head_id is not None:
            d, t = commit_changes(ds, head, ds._base, "HEAD")
        else:
            parent = _chain(ds._storage, ds._base)[1:2]
            d, t = commit_changes(ds, ds._base, parent[0] if parent else None)
        changes = {"dataset": [d], "tensor": [t]}
        message = "Diff in HEAD relative to the previous commit"
    else:
        if id_2 is None:
            first, first_storage, first_id = ds._base, ds._storage, head_id
            second_branch, second = locate(ds, id_1)
        else:
            branch_1, first = locate(ds, id_1)
            first_storage, first_id = branch_storage(raw, branch_1), None
            second_branch, second = locate(ds, id_2)
        second_storage = branch_storage(raw, second_branch)
        lca = common_ancestor(_chain(first_storage, first), _chain(second_storage, second))
        if lca is None:
            raise DatasetError("the two versions have no common ancestor left (gc?)")
        d1, t1 = _changes_to(ds, first, first_storage, lca, first_id)
        if first_id is not None:  # HEAD's pending changes come first
            d0, t0 = commit_changes(ds, head, ds._base, "HEAD")
            d1, t1 = [d0, *d1], [t0, *t1]
        d2, t2 = _changes_to(ds, second, second_storage, lca)
        changes = {"dataset": (d1, d2), "tensor": (t1, t2)}
        message = f"Diffs relative to the most recent common ancestor ({lca.id})"
    if as_dict:
        return changes
    print(_diff_text(message, changes))
    return None


def _diff_text(message: str, changes: dict) -> str:
    lines = ["## slicewise diff", message]
    tensor_lists = changes["tensor"]
    if isinstance(tensor_lists, list):
        tensor_lists = (tensor_lists,)
    ds_lists = changes["dataset"] if isinstance(changes["dataset"], tuple) else (
        changes["dataset"],)
    for side, (ds_list, tensor_list) in enumerate(zip(ds_lists, tensor_lists, strict=True)):
        if len(tensor_lists) > 1:
            lines.append(f"-- side {side + 1}")
        for ds_change, tensor_change in zip(ds_list, tensor_list, strict=True):
            lines.append(f"commit {ds_change['commit_id']}: {ds_change['message']!r}")
            for name in ds_change["deleted"]:
                lines.append(f"  * deleted tensor {name}")
            for name, change in tensor_change.items():
                if name == "commit_id":
                    continue
                what = []
                if change["created"]:
                    what.append("created")
                start, stop = change["data_added"]
                if stop > start:
                    what.append(f"added rows {start}-{stop - 1}")
                if change["data_updated"]:
                    what.append(f"updated rows {sorted(change['data_updated'])}")
                if change["data_deleted"]:
                    what.append(f"deleted rows {sorted(change['data_deleted'])}")
                if change["data_transformed_in_place"]:
                    what.append("transformed in place")
                if change["info_updated"]:
                    what.append("info updated")
                if what:
                    lines.append(f"  {name}: {', '.join(what)}")
    return "\n".join(lines)


def reset(ds) -> str:
    """Drop uncommitted changes; the dataset reads its current version again."""
    ds.discard()
    return ds._base.id
