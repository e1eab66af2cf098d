"""Transactions and the commit protocol (docs/FORMAT.md §3).

    Transaction (pending changes: created tensors, appended chunk entries from receipts,
                 replaced chunks, cleared tensors (an in-place eval's new contents),
                 info and class-name edits)
        │ apply(base) -> Version seq+1      (pure: builds the new manifest in memory)
        ▼
    storage.set_if_not_exists("versions/<seq+1>.json")  ── taken? ──► read what landed,
        │ won                                                rebase (append-only on both
        ▼                                                    sides) or CommitConflictError
    the new current version

A transaction never writes chunk data: the writers did that already. It only remembers
chunk entries (from receipts) and publishes them.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from dataclasses import dataclass, field

from slicewise.format.errors import CommitConflictError, CorruptionError, DatasetError
from slicewise.format.htypes import TensorMeta
from slicewise.format.manifest import (
    TensorState,
    Version,
    check_hierarchy,
    chunk_key,
    decode_version,
    list_version_seqs,
    read_version,
    version_key,
)
from slicewise.format.storage import Storage, SyncQueue, short_files

MAX_COMMIT_ATTEMPTS = 64

# The gc record (FORMAT.md 3 and 5): {"token", "state": "running" | "done"}. A gc writes
# a fresh token with "running" before it looks at anything and a fresh one with "done"
# after its last delete; a dataset on an object store starts with a "done" one. A "done"
# token read before a transaction's chunks were written and read again, unchanged, at its
# commit proves no gc ran at any moment in between (one GET instead of a HEAD per chunk).
GC_RECORD_KEY = "gc.json"


@dataclass
class Transaction:
    """Changes not yet published. Entries are receipt chunk entries (see writer.py)."""

    created: dict[str, TensorMeta] = field(default_factory=dict)
    appended: dict[str, list[dict]] = field(default_factory=dict)
    replaced: dict[str, dict[int, dict]] = field(default_factory=dict)
    info: dict[str, dict] = field(default_factory=dict)
    class_names_added: dict[str, list[str]] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # made by create_group
    # tensors whose chunk lists start empty in the new version: their rows are then the
    # `appended` ones only (an in-place eval replaces the tensors it wrote; the old chunk
    # files stay readable through the older versions until gc)
    cleared: set[str] = field(default_factory=set)
    # tensors removed in the new version (delete_tensor, a merge); FORMAT.md 2.5
    deleted: set[str] = field(default_factory=set)
    # the dataset's info as this transaction sees it (ds.info.update), or None when
    # unchanged; what is published is `ds_info_edits` replayed on the version the commit
    # lands on, so a commit that landed meanwhile keeps the keys it set (a rebase)
    ds_info: dict | None = None
    ds_info_edits: list[tuple[dict, list]] = field(default_factory=list)  # (set, removed)
    # the gc token (read_gc_token) read before every chunk of `appended` was written, or
    # None: unknown (a receipt carried none, or receipts carried different ones, or were
    # written into another dataset or tensor); set by the first receipt with chunks. The
    # commit then skips its per-chunk checks (_no_gc_since_written).
    gc_token: str | None = None
    gc_written_into: tuple[str, dict] | None = None  # (dataset URL, {tensor: tensor id})
    _receipts_seen: bool = False

    def is_empty(self) -> bool:
        return not (
            self.groups
            or self.created
            or self.cleared
            or self.deleted
            or self.ds_info is not None
            or any(self.appended.values())
            or self.replaced
            or self.info
            or self.class_names_added
        )

    def touched(self) -> set[str]:
        return set(self.created) | {k for k, v in self.appended.items() if v} | self.modified()

    def modified(self) -> set[str]:
        return set(self.replaced) | set(self.info) | set(self.class_names_added) | self.cleared

    def changes(self) -> dict:
        changes = {
            "appended": sorted(k for k, v in self.appended.items() if v),
            "created": list(self.created),
            "modified": sorted(self.modified()),
        }
        if self.groups:
            changes["groups"] = list(self.groups)
        if self.cleared:
            changes["cleared"] = sorted(self.cleared)
        if self.deleted:
            changes["deleted"] = sorted(self.deleted)
        return changes

    def _note_gc_token(self, receipt: dict) -> None:
        """Keep `gc_token` only while every receipt with chunks carries the same one, for
        the same dataset, and names the tensor ids its chunks were written under."""
        written = {name: tensor.get("tensor_id") for name, tensor in receipt["tensors"].items()
                   if tensor.get("chunks")}
        if not written:
            return
        token = receipt.get("gc_token")
        url = receipt.get("url")
        usable = (isinstance(token, str) and token and isinstance(url, str)
                  and all(isinstance(tid, str) for tid in written.values()))
        if not usable:
            self.gc_token = None
        elif not self._receipts_seen:
            self.gc_token, self.gc_written_into = token, (url, dict(written))
        elif self.gc_token is not None:
            into_url, ids = self.gc_written_into
            if token != self.gc_token or url != into_url or any(
                ids.setdefault(name, tid) != tid for name, tid in written.items()
            ):
                self.gc_token = None
        self._receipts_seen = True

    def add_receipt(self, receipt: dict, known: set[str]) -> None:
        """Queue the chunks a writer reported (in the order given)."""
        if not isinstance(receipt, dict) or "tensors" not in receipt:
            raise DatasetError(f"not a writer receipt: {str(receipt)[:200]}")
        self._note_gc_token(receipt)
        for name, tensor in receipt["tensors"].items():
            if name not in known:
                raise DatasetError(
                    f"receipt from writer {receipt.get('writer_id')!r} has chunks for tensor "
                    f"{name!r}, which this dataset does not have"
                )
            labels = None
            if tensor.get("new_class_names"):
                labels = {
                    "base": int(tensor["class_base"]),
                    "names": list(tensor["new_class_names"]),
                }
            entries = self.appended.setdefault(name, [])
            for entry in tensor["chunks"]:
                _check_entry(receipt, name, entry)
                entry = dict(entry)
                if labels is not None:
                    entry["labels"] = labels
                entries.append(entry)


def _check_entry(receipt: dict, name: str, entry: dict) -> None:
    """A receipt's chunk entry becomes manifest content: refuse what a reader would refuse
    (FORMAT.md 2.4) here, naming the writer, rather than publish an unreadable version."""
    try:
        TensorState.from_json(
            {
                "id": "t0",
                "htype": "generic",
                "chunks": {
                    "keys": [entry["key"]],
                    "rows": [entry["rows"]],
                    "nbytes": [entry["nbytes"]],
                    "min_shape": [entry["min_shape"]],
                    "max_shape": [entry["max_shape"]],
                    "remap": [None],
                },
            }
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(
            f"receipt from writer {receipt.get('writer_id')!r}, tensor {name!r}: bad chunk "
            f"entry {str(entry)[:200]}: {exc}"
        ) from None


def new_version_id(seq: int) -> str:
    return f"v{seq}-{secrets.token_hex(8)}"


def apply(base: Version, txn: Transaction, message: str = "", meta: dict | None = None) -> Version:
    """The version that `txn` on top of `base` makes (nothing is written)."""
    tensors: dict[str, TensorState] = {}
    touched = txn.touched()
    for name in txn.deleted:
        if name not in base.tensors:
            raise CommitConflictError(f"tensor {name!r} no longer exists")
    for name, state in base.tensors.items():
        if name not in txn.deleted:
            tensors[name] = state.copy() if name in touched else state
    for name, tmeta in txn.created.items():
        if name in tensors:
            raise CommitConflictError(f"tensor {name!r} was created by another commit")
        tensors[name] = TensorState(meta=TensorMeta.from_json(tmeta.to_json()))
    for name, added in txn.class_names_added.items():
        names = tensors[name].meta.class_names
        for label in added:
            if label not in names:
                names.append(label)
    for name in sorted(txn.cleared):
        if name not in tensors:
            raise CommitConflictError(f"tensor {name!r} no longer exists")
        if name in txn.replaced:
            raise DatasetError(f"tensor {name!r}: a commit cannot both clear and rewrite it")
        _clear(tensors[name])
    for name, replacements in txn.replaced.items():
        state = tensors[name]
        for k, entry in replacements.items():
            if k >= len(state.keys):
                raise CommitConflictError(f"tensor {name!r}: replaced chunk {k} no longer exists")
            _check_dtype(name, state, entry)
            state.keys[k] = entry["key"]
            state.nbytes[k] = int(entry["nbytes"])
            state.min_shape[k] = list(entry["min_shape"])
            state.max_shape[k] = list(entry["max_shape"])
            labels = entry.get("labels")
            state.remap[k] = _resolve_labels(state, labels, {}) if labels else None
            if int(entry["rows"]) != state.rows[k]:
                raise DatasetError(f"tensor {name!r}: a replacement chunk changes the row count")
    for name, entries in txn.appended.items():
        if not entries:
            continue
        if name not in tensors:
            raise CommitConflictError(f"tensor {name!r} no longer exists")
        state = tensors[name]
        resolved: dict[tuple, int] = {}
        for entry in entries:
            _check_dtype(name, state, entry)
            remap_index = None
            labels = entry.get("labels")
            if labels:
                remap_index = _resolve_labels(state, labels, resolved)
            state.keys.append(entry["key"])
            state.rows.append(int(entry["rows"]))
            state.nbytes.append(int(entry["nbytes"]))
            state.min_shape.append(list(entry["min_shape"]))
            state.max_shape.append(list(entry["max_shape"]))
            state.remap.append(remap_index)
    for name, info in txn.info.items():
        tensors[name].meta.info = dict(info)
    groups = list(base.groups) + [g for g in txn.groups if g not in base.groups]
    if txn.groups or txn.created:
        try:
            check_hierarchy(tensors, groups)
        except ValueError as exc:
            raise CommitConflictError(f"another commit made a clashing name: {exc}") from None
    seq = base.seq + 1
    return Version(
        seq=seq,
        id=new_version_id(seq),
        parent=base.id or None,
        time=time.time(),
        message=str(message or ""),
        meta=dict(meta or {}),
        changes=txn.changes(),
        tensors=tensors,
        groups=groups,
        ds_info=_edited_info(base.ds_info, txn.ds_info_edits),
    )


def _edited_info(info: dict, edits: list[tuple[dict, list]]) -> dict:
    """The dataset info `info` with a transaction's edits replayed, in order: keys this
    transaction did not touch keep the value of the version it lands on."""
    out = dict(info)
    for assigned, removed in edits:
        for key in removed:
            out.pop(key, None)
        out.update(assigned)
    return out


def _clear(state: TensorState) -> None:
    """No chunks (the copy apply() made; the schema and class names stay)."""
    state.keys, state.rows, state.nbytes = [], [], []
    state.min_shape, state.max_shape, state.remap = [], [], []
    state.label_remaps = []
    state._cum = state._remap_arrays = state._full_keys = None


def _check_dtype(name: str, state: TensorState, entry: dict) -> None:
    dtype = entry.get("dtype")
    if dtype is None or state.meta.dtype == "str":
        return
    if state.meta.dtype is None:
        state.meta.dtype = dtype
    elif state.meta.dtype != dtype:
        raise DatasetError(
            f"tensor {name!r} has dtype {state.meta.dtype}, a chunk written for it has {dtype}"
        )


def _resolve_labels(state: TensorState, labels: dict, resolved: dict[tuple, int]) -> int:
    """Map a writer's new class names onto the tensor's names; record the table once."""
    key = (labels["base"], tuple(labels["names"]))
    if key in resolved:
        return resolved[key]
    names = state.meta.class_names
    if names is None:
        names = state.meta.class_names = []
    if labels["base"] > len(names):
        raise DatasetError(
            f"a receipt's class-label base ({labels['base']}) is beyond the tensor's "
            f"{len(names)} class names"
        )
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for label in labels["names"]:
        if label not in index:
            index[label] = len(names)
            names.append(label)
        ids.append(index[label])
    state.label_remaps.append({"base": int(labels["base"]), "ids": ids})
    state._remap_arrays = None
    resolved[key] = len(state.label_remaps) - 1
    return resolved[key]


def check_rebase(txn: Transaction, landed: list[Version]) -> None:
    """Raise CommitConflictError unless `txn` can be replayed on top of `landed` commits."""
    ours_touched = txn.touched() | txn.deleted
    ours_exclusive = set(txn.created) | txn.modified() | txn.deleted
    for version in landed:
        theirs = version.changes or {}
        their_exclusive = (set(theirs.get("created", [])) | set(theirs.get("modified", []))
                           | set(theirs.get("deleted", [])))
        their_appended = set(theirs.get("appended", []))
        clash = (their_exclusive & ours_touched) | (their_appended & ours_exclusive)
        if clash or not version.changes:
            raise CommitConflictError(
                f"commit conflict: version {version.id} ({version.message!r}) landed first and "
                f"changed tensor(s) {sorted(clash) or 'unknown'} that this commit also changes; "
                "nothing was published by this commit"
            )


def publish(
    storage: Storage,
    base: Version,
    txn: Transaction,
    message: str = "",
    meta: dict | None = None,
    syncs: SyncQueue | None = None,
) -> Version:
    """Publish `txn` as the version after `base`, rebasing over concurrent append-only commits.
    Chunk files their writers left unsynced are made durable first, on `syncs` when the
    caller already started them there (Dataset.sync_receipt)."""
    _prepare_chunks(storage, base, txn, syncs)
    for attempt in range(MAX_COMMIT_ATTEMPTS):
        version = apply(base, txn, message, meta)
        encoded = version.encode()
        # what readers will refuse must never be published: the newest version would be
        # unreadable (costs one parse of the manifest per commit)
        try:
            decode_version(encoded, storage.full_path(version_key(version.seq)))
        except CorruptionError as exc:
            raise DatasetError(f"refusing to publish an unreadable version: {exc}") from None
        if storage.set_if_not_exists(version_key(version.seq), encoded):
            return version
        # The slot is taken. Read every version after `base` by its key: a GET sees what
        # landed even where a listing lags (s3), and a version missing from a stale listing
        # would otherwise escape the conflict check. The listing only says how far to go.
        newest = max([version.seq, *list_version_seqs(storage)])
        landed = []
        for seq in range(base.seq + 1, newest + 1):
            try:
                landed.append(read_version(storage, seq))
            except DatasetError as exc:
                if seq < version.seq or isinstance(exc, CorruptionError):
                    raise CommitConflictError(
                        f"commit conflict: cannot read version {seq}, which landed after "
                        f"{base.id or 'the empty dataset'} ({exc}); nothing was published"
                    ) from exc
                break  # listed but gone (or not yet visible) past our slot: retry from here
        if not landed:  # the slot's owner is not readable yet: look again
            time.sleep(0.001 * (attempt + 1))
            continue
        check_rebase(txn, landed)
        base = landed[-1]
        time.sleep(random.random() * 0.002 * min(attempt, 10))
    raise CommitConflictError(
        f"gave up committing to {storage.url} after {MAX_COMMIT_ATTEMPTS} lost races"
    )


def new_chunk_keys(base: Version, txn: Transaction, unsynced_only: bool = False) -> list[str]:
    """Storage keys of the chunk files `txn` would publish (only those their writer left
    unsynced, with unsynced_only)."""
    return [key for key, _ in _new_chunks(base, txn, unsynced_only)]


def _new_chunks(base: Version, txn: Transaction, unsynced_only: bool) -> list[tuple[str, int]]:
    """(storage key, nbytes its writer wrote) of each chunk file `txn` would publish."""
    keys = []
    for name in list(txn.appended) + list(txn.replaced):
        meta = txn.created.get(name) or (base.tensors[name].meta if name in base.tensors else None)
        if meta is None:
            continue
        entries = list(txn.appended.get(name, [])) + list(txn.replaced.get(name, {}).values())
        keys += [
            (chunk_key(meta.id, entry["key"]), entry["nbytes"])
            for entry in entries
            if not unsynced_only or entry.get("synced", True) is False
        ]
    return keys


def _check_complete(storage: Storage, chunks: list[tuple[str, int]]) -> None:
    """A chunk its writer left unsynced may have been written on after the writer handed
    out its receipt (storage.PendingPut); the flush above waited for the writer's lock,
    which a writer that died or failed mid-write drops early. Its file is then short
    (FORMAT.md 3.1): never publish it."""
    short = short_files(storage, chunks)
    if short:
        where = storage.full_path(short[0])
        nbytes = dict(chunks)[short[0]]
        raise CorruptionError(
            f"chunk file {where} does not hold the {nbytes} bytes its writer reported: the "
            "writer died or failed before it finished writing it. Nothing was published; "
            "write those rows again.",
            where,
        )


def checked_by_gc_record(storage: Storage) -> bool:
    """Whether this storage keeps a gc record: where touch_all cannot refresh a chunk's
    age (object stores), so the record is what spares a commit its per-chunk checks."""
    return not getattr(storage, "touch_refreshes", True)


def _gc_record(storage: Storage) -> dict:
    """The gc record, or {} when there is none or it cannot be read or decoded."""
    try:
        record = json.loads(storage.get(GC_RECORD_KEY))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _token_in(record: dict, state: str) -> str | None:
    token = record.get("token")
    return token if record.get("state") == state and isinstance(token, str) and token else None


def read_gc_token(storage: Storage) -> str | None:
    """The token of the gc record when its state is "done" (no gc running), else None: no
    record (a dataset made before records existed), a gc running or killed mid-run, or a
    record that cannot be read. None means no check is skipped on its account."""
    return _token_in(_gc_record(storage), "done")


def gc_running_token(storage: Storage) -> str | None:
    """The token of the gc record when it says "running", else None."""
    return _token_in(_gc_record(storage), "running")


def gc_token_entry(storage: Storage) -> dict:
    """For a writer spec: {"gc_token": ...} on storages with a gc record whose state is
    "done", else {}."""
    token = read_gc_token(storage) if checked_by_gc_record(storage) else None
    return {} if token is None else {"gc_token": token}


def write_gc_record(storage: Storage, state: str) -> str:
    """A fresh token in `state` ("running": gc, before it reads its clock and lists;
    "done": gc after its last delete, and a new dataset on an object store). Returns it."""
    token = secrets.token_hex(16)
    record = {"token": token, "state": state, "time": time.time()}
    storage.put(GC_RECORD_KEY, json.dumps(record).encode())
    return token


def _no_gc_since_written(storage: Storage, base: Version, txn: Transaction) -> bool:
    """Where a commit's check of its chunk files can only ask whether they exist (object
    stores: a HEAD each; nothing refreshes their age there): True when every new chunk
    came in a receipt written into this dataset and these tensors with a "done" gc token
    read before it was written, and that token is still the current one: no gc ran at
    any moment in between (a gc rewrites the token when it starts and when it ends), and
    an answered PUT is durable. One GET instead of a HEAD per chunk object.

    Not covered (FORMAT.md 3): a gc of a slicewise release older than the record, or
    another tool, deleting chunk files without rewriting it."""
    if not checked_by_gc_record(storage) or txn.replaced or txn.gc_token is None:
        return False
    url, ids = txn.gc_written_into or ("", {})
    if url.rstrip("/") != str(storage.url).rstrip("/"):
        return False
    for name in txn.appended:
        meta = txn.created.get(name) or (base.tensors[name].meta if name in base.tensors else None)
        if txn.appended[name] and (meta is None or ids.get(name) != meta.id):
            return False
    return read_gc_token(storage) == txn.gc_token


def prepare_chunks(
    storage: Storage, base: Version, txn: Transaction, syncs: SyncQueue | None = None
) -> None:
    """What `publish` does to the chunk files before it names them (below), for a caller
    that records them elsewhere first (an in-place eval's staged checkpoint)."""
    _prepare_chunks(storage, base, txn, syncs)


def _prepare_chunks(
    storage: Storage, base: Version, txn: Transaction, syncs: SyncQueue | None = None
) -> None:
    """Before a manifest names them: every new chunk file must still exist (gc removes
    unreferenced files past their grace period; a worker's disk may have lost one), its
    modification time is refreshed where the storage allows (so gc's grace period counts
    from now), its data is durable (the writers flushed all but the chunks they left
    unsynced, flushed here), and so are the directory entries."""
    keys = new_chunk_keys(base, txn)
    missing = [] if _no_gc_since_written(storage, base, txn) else storage.touch_all(keys)
    if missing:
        where = storage.full_path(missing[0])
        raise CorruptionError(
            f"chunk file {where} written for this commit is missing ({len(missing)} of "
            f"{len(keys)} missing): removed by gc (a grace period shorter than the time "
            "from the write to this commit?) or lost by the storage. Nothing was published.",
            where,
        )
    if not keys:
        return
    unsynced = _new_chunks(base, txn, unsynced_only=True)
    if unsynced:
        (syncs or SyncQueue(storage, threads=4)).wait([key for key, _ in unsynced])
        _check_complete(storage, unsynced)
    for prefix in sorted({key.rsplit("/", 1)[0] for key in keys}):
        storage.sync(prefix)
    # the folders' own entries too: a worker that created one may have died before its
    # own fsync of the parent, and other workers then skip it (the folder existed)
    storage.sync("chunks")
    storage.sync("")
