"""ds.merge(target): bring another branch's (or version's) changes since the common
ancestor into the current branch, as one new version (Deep Lake 3's merge).

Per tensor, with L its state in the common ancestor, O ours, T theirs:

- created on theirs only: created here, with its chunks (no data is copied: a merge
  publishes the same chunk files under a new manifest);
- rows appended on theirs: appended after ours (their chunk files, as they are);
- rows updated on theirs: a chunk slot only theirs changed takes their chunk; in a slot
  both changed, the rows only theirs changed are written here by value, and rows both
  changed (to different values) are conflicts;
- rewritten on theirs (pop, rechunk, an in-place eval: the chunk list no longer extends
  L's): taken whole when ours did not change the tensor, else a conflict;
- info changed on theirs: taken, or a conflict when ours changed it differently;
- deleted on theirs: deleted here with delete_removed_tensors=True, else kept;
- created on both: a conflict.

conflict_resolution None raises MergeConflictError naming each conflict (nothing is
written); "ours" keeps ours; "theirs" takes theirs. Class labels are matched by name: a
chunk taken from theirs gets a label table mapping its ids onto ours (FORMAT.md 2.2).
"""

from __future__ import annotations

from slicewise.dataset.versioning import (
    MergeConflictError,
    _auto_commit,
    _chain,
    _handle,
    changed_rows,
    common_ancestor,
    current_branch,
    locate,
    raw_storage,
    row_values,
)
from slicewise.format.branches import branch_storage
from slicewise.format.commit import Transaction
from slicewise.format.errors import DatasetError
from slicewise.format.htypes import TensorMeta


def chunk_entry(state, k: int, target_names: list[str] | None) -> dict:
    """Chunk k of `state` as a receipt entry for another version of the same tensor, whose
    class names are `target_names` (the label table re-expresses its ids by name)."""
    entry = {
        "key": state.keys[k],
        "rows": state.rows[k],
        "nbytes": state.nbytes[k],
        "min_shape": list(state.min_shape[k]),
        "max_shape": list(state.max_shape[k]),
    }
    if state.meta.dtype is not None:
        entry["dtype"] = state.meta.dtype
    theirs = state.meta.class_names
    if theirs is None:
        return entry
    ours = target_names or []
    prefix = 0
    while prefix < min(len(theirs), len(ours)) and theirs[prefix] == ours[prefix]:
        prefix += 1
    remap = state.chunk_remap(k)
    if remap is None:
        if prefix < len(theirs):
            entry["labels"] = {"base": prefix, "names": list(theirs[prefix:])}
        return entry
    base, ids = remap
    low = min(base, prefix)
    names = [theirs[s] for s in range(low, base)] + [theirs[int(i)] for i in ids]
    entry["labels"] = {"base": low, "names": names}
    return entry


def _extends(state, ancestor) -> bool:
    """True when `state`'s chunk list is the ancestor's, slot for slot, plus more: only
    appends and row replacements happened since."""
    n = len(ancestor.keys)
    return len(state.keys) >= n and state.rows[:n] == ancestor.rows


def _changed(state, ancestor) -> bool:
    return state.keys != ancestor.keys or state.meta.info != ancestor.meta.info or (
        state.meta.class_names != ancestor.meta.class_names)


def merge(ds, target, conflict_resolution=None, delete_removed_tensors: bool = False,
          force: bool = False) -> str:
    """See Dataset.merge."""
    if conflict_resolution not in (None, "ours", "theirs"):
        raise ValueError(
            "conflict_resolution must be one of None, 'ours', or 'theirs'. Got "
            f"{conflict_resolution!r}"
        )
    ds._check_writable()
    _auto_commit(ds, f"merging {target!r}")
    raw = raw_storage(ds)
    their_branch, theirs = locate(ds, target)
    ours = ds._base
    our_chain = _chain(ds._storage, ours)
    their_chain = _chain(branch_storage(raw, their_branch), theirs)
    ancestor = common_ancestor(our_chain, their_chain)
    if ancestor is None:
        raise DatasetError(f"{target!r} has no common ancestor with {ds.version} (gc?)")
    ancestor = _last_merged(our_chain, their_chain, ancestor)
    if ancestor.id == theirs.id:
        return ours.id  # nothing of theirs is missing here
    plan = _Plan(ds, ancestor, ours, theirs, conflict_resolution, delete_removed_tensors)
    for name in sorted(set(theirs.tensors) | set(ancestor.tensors)):
        plan.tensor(name)
    if plan.conflicts and conflict_resolution is None:
        listed = "; ".join(
            f"{name}: {'rows ' + str(sorted(rows)[:20]) if rows else 'the tensor'}"
            for name, rows in plan.conflicts.items()
        )
        raise MergeConflictError(
            f"merge of {target!r} into {current_branch(ds).name!r} has conflicts ({listed}). "
            "Pass conflict_resolution='ours' or 'theirs'. Nothing was written.",
            plan.conflicts,
        )
    txn = plan.txn
    for group in theirs.groups:
        if group not in ours.groups and group not in txn.groups:
            txn.groups.append(group)
    ds._txn = txn
    ds._touch()
    try:
        ds._with_depth += 1  # rows written by value join this merge's one commit
        try:
            for name, values in plan.writes.items():
                ds._update(name, values)
        finally:
            ds._with_depth -= 1
        return ds.commit(
            f"Merge {target} into {current_branch(ds).name}",
            meta={"merge": {"from": str(target), "version": theirs.id,
                            "ancestor": ancestor.id}},
        )
    except BaseException:
        ds.discard()
        raise


def _last_merged(our_chain, their_chain, ancestor):
    """The newest version of theirs an earlier merge brought here (its meta says which),
    when newer than the common ancestor: what theirs changed before it is here already."""
    by_id = {v.id: v for v in their_chain}
    for version in our_chain:
        merged = (version.meta or {}).get("merge")
        found = by_id.get(merged.get("version")) if isinstance(merged, dict) else None
        if found is not None:
            return found if found.seq > ancestor.seq else ancestor
    return ancestor


class _Plan:
    """The transaction a merge publishes, built tensor by tensor."""

    def __init__(self, ds, ancestor, ours, theirs, resolution, delete_removed):
        self.ds, self.ancestor, self.ours, self.theirs = ds, ancestor, ours, theirs
        self.resolution, self.delete_removed = resolution, delete_removed
        self.txn = Transaction()
        self.conflicts: dict[str, set | None] = {}
        self.writes: dict[str, dict] = {}  # rows written by value (both changed a chunk)
        self._handles: dict = {}

    def handle(self, version):
        if version.id not in self._handles:
            self._handles[version.id] = _handle(self.ds, version)
        return self._handles[version.id]

    def conflict(self, name: str, rows=None) -> bool:
        """Record a conflict; True when theirs wins it."""
        self.conflicts[name] = set(rows) if rows else None
        return self.resolution == "theirs"

    def tensor(self, name: str) -> None:
        low = self.ancestor.tensors.get(name)
        our = self.ours.tensors.get(name)
        their = self.theirs.tensors.get(name)
        if their is None:
            if low is not None and our is not None and self.delete_removed:
                self.txn.deleted.add(name)
            return
        if low is None or low.meta.id != their.meta.id:  # created on theirs
            if our is None:
                self.take_whole(name, their, create=True)
            elif our.meta.id != their.meta.id and self.conflict(name):
                self.txn.deleted.add(name)
                self.take_whole(name, their, create=True)
            return
        if our is None or our.meta.id != their.meta.id or not _changed(their, low):
            return  # deleted or recreated on ours, or unchanged on theirs
        if not _extends(their, low):
            if not _changed(our, low) or self.conflict(name):
                self.txn.cleared.add(name)
                self.take_whole(name, their)
            return
        if not self.updates(name, low, our, their):  # theirs wins a chunk-level conflict
            self.txn.cleared.add(name)
            self.take_whole(name, their)
            return
        self.appends(name, low, our, their)
        self.info(name, low, our, their)

    def take_whole(self, name: str, their, create: bool = False) -> None:
        if create:
            meta = TensorMeta.from_json(their.meta.to_json())
            self.txn.created[name] = meta
            names = meta.class_names
        else:
            names = self.ours.tensors[name].meta.class_names
            self.info(name, self.ancestor.tensors.get(name), self.ours.tensors[name], their)
        entries = self.txn.appended.setdefault(name, [])
        entries += [chunk_entry(their, k, names) for k in range(len(their.keys))]

    def appends(self, name, low, our, their) -> None:
        names = our.meta.class_names
        entries = self.txn.appended.setdefault(name, [])
        entries += [chunk_entry(their, k, names) for k in range(len(low.keys), len(their.keys))]
        extra = [n for n in (their.meta.class_names or []) if n not in (names or [])]
        if extra and not entries:
            self.txn.class_names_added.setdefault(name, []).extend(extra)

    def updates(self, name, low, our, their) -> bool:
        """Their replaced chunks into ours; False when theirs must be taken whole."""
        slots = {key: j for j, key in enumerate(our.keys)}
        aligned = _extends(our, low)
        for k in range(len(low.keys)):
            if their.keys[k] == low.keys[k]:
                continue
            j = slots.get(low.keys[k])
            if j is not None:  # only theirs changed this chunk: their chunk in its slot
                entry = chunk_entry(their, k, our.meta.class_names)
                self.txn.replaced.setdefault(name, {})[j] = entry
                continue
            if not aligned:  # ours rewrote the tensor (pop, rechunk): rows do not line up
                if self.conflict(name):
                    return False
                continue
            lo, ou, th = self.handle(self.ancestor), self.handle(self.ours), self.handle(
                self.theirs)
            theirs_rows = changed_rows(lo, th, name, k)
            ours_rows = changed_rows(lo, ou, name, k)
            both = sorted(theirs_rows & ours_rows)
            differ = {r for r, a, b in zip(both, row_values(ou, name, both),
                                           row_values(th, name, both), strict=True) if a != b}
            take = theirs_rows - ours_rows
            if differ and self.conflict(name, differ):
                take |= differ
            tensor = th.tensors[name]
            for row in sorted(take):
                value = tensor[row]
                value = value.text() if tensor.htype == "class_label" else (
                    value.data()["value"] if tensor.htype in ("text", "json") else value.numpy())
                self.writes.setdefault(name, {})[row] = value
        return True

    def info(self, name, low, our, their) -> None:
        if low is None or their.meta.info == low.meta.info:
            return
        if our.meta.info == low.meta.info or our.meta.info == their.meta.info:
            self.txn.info[name] = dict(their.meta.info)
        elif self.conflict(name):
            self.txn.info[name] = dict(their.meta.info)
