"""Branches over the immutable versions (docs/FORMAT.md §8).

    versions/<seq>.json                       the "main" branch (unchanged: old readers see it)
    branches/<name>.json                      a branch record, written once (put-if-absent)
    branches/<branch id>/versions/<seq>.json  the branch's own commits, seq after its fork

A branch forks from a version `fork` (seq `s`) of a parent branch. Its history is its
parent's versions 1..s (the parent's own history up to the fork, recursively) followed by
its own manifests s+1, s+2, ... in its folder. So every branch is a linear sequence of
manifests exactly like main, and the commit protocol (put-if-absent on the next seq,
rebase or conflict, FORMAT.md §3) runs unchanged on it: the branch's head is its highest
manifest, and moving the head from seq n to n+1 is a put-if-absent of slot n+1 - a
compare-and-swap of the head on every storage that has put-if-absent (local disk, S3 with
If-None-Match, memory://). Two writers on two branches write to two folders and never
conflict; two writers on one branch race for one slot, as on main.

`BranchStorage` presents one branch as a dataset whose `versions/` folder is that history
(reads of version s <= fork go to the parent's folder, writes to the branch's own), so the
code that commits, lists and resumes (commit.py, transform/) runs on a branch unchanged.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import validate_tensor_name
from slicewise.format.storage import Storage

MAIN = "main"
BRANCHES_PREFIX = "branches/"
BRANCH_FORMAT = "slicewise-branch"
BRANCH_FORMAT_VERSION = 1
_BRANCH_ID = re.compile(r"^b[0-9a-f]{16}$")
_VERSION_ID = re.compile(r"^v(\d+)-([0-9a-f]{16})$")
_RECORD_KEY = re.compile(r"^branches/([^/]+)\.json$")
_VERSION_FILE = re.compile(r"^(\d{12})\.json$")
_RECORD_MAX = 64 * 1024
_RECORD_MEMBERS = frozenset(
    ("format", "format_version", "name", "id", "parent", "parent_id", "fork", "fork_seq", "time")
)


@dataclass(frozen=True)
class Branch:
    """One branch record. main has id "" and no parent or fork."""

    name: str
    id: str = ""
    parent: str | None = None
    parent_id: str | None = None
    fork: str | None = None
    fork_seq: int = 0
    time: float = 0.0

    @property
    def versions_prefix(self) -> str:
        return "versions/" if not self.id else f"{BRANCHES_PREFIX}{self.id}/versions/"

    def to_json(self) -> dict:
        return {
            "format": BRANCH_FORMAT,
            "format_version": BRANCH_FORMAT_VERSION,
            "name": self.name,
            "id": self.id,
            "parent": self.parent,
            "parent_id": self.parent_id,
            "fork": self.fork,
            "fork_seq": self.fork_seq,
            "time": self.time,
        }


MAIN_BRANCH = Branch(MAIN)


def validate_branch_name(name: object) -> str:
    """A branch name: the rule of one tensor-name component (printable, no '/', '\\', NUL or
    '..', not starting with '.' or '_', at most 200 characters), and not a version's
    form (all digits, or 'v' and a digit)."""
    try:
        validate_tensor_name(name)
    except DatasetError as exc:
        raise DatasetError(str(exc).replace("tensor name", "branch name")) from None
    if name.isdigit() or re.match(r"^v\d", name):  # reads as a version ("3", "v3-...")
        raise DatasetError(f"invalid branch name {name!r}: it reads as a version")
    return name


def record_key(name: str) -> str:
    return f"{BRANCHES_PREFIX}{name}.json"


def decode_record(data: bytes, where: str, name: str) -> Branch:
    """A branch record, every field checked (it may come from a stranger)."""
    try:
        if len(data) > _RECORD_MAX:
            raise ValueError(f"{len(data)} bytes; a branch record is a few hundred")
        doc = json.loads(bytes(data).decode("utf-8"))
        if not isinstance(doc, dict) or set(doc) != _RECORD_MEMBERS:
            raise ValueError(f"members must be exactly {sorted(_RECORD_MEMBERS)}")
        if doc["format"] != BRANCH_FORMAT or doc["format_version"] != BRANCH_FORMAT_VERSION:
            raise ValueError(
                f"format {str(doc['format'])[:40]!r} version {str(doc['format_version'])[:10]}"
                f"; this slicewise reads {BRANCH_FORMAT!r} version {BRANCH_FORMAT_VERSION}"
            )
        if doc["name"] != name:
            raise ValueError(f"names branch {str(doc['name'])[:40]!r}, its file {name!r}")
        validate_branch_name(name)
        if name == MAIN:
            raise ValueError("'main' has no record")
        if not isinstance(doc["id"], str) or not _BRANCH_ID.match(doc["id"]):
            raise ValueError("'id' is not 'b' + 16 hex digits")
        parent, parent_id = doc["parent"], doc["parent_id"]
        validate_branch_name(parent)
        if parent == MAIN:
            if parent_id != "":
                raise ValueError("a branch of main has parent_id ''")
        elif not isinstance(parent_id, str) or not _BRANCH_ID.match(parent_id):
            raise ValueError("'parent_id' is not a branch id")
        fork, fork_seq = doc["fork"], doc["fork_seq"]
        match = _VERSION_ID.match(fork) if isinstance(fork, str) else None
        if match is None or type(fork_seq) is not int or int(match.group(1)) != fork_seq:
            raise ValueError("'fork' is not a version id whose seq is 'fork_seq'")
        if type(doc["time"]) not in (int, float):
            raise ValueError("'time' is not a number")
    except (ValueError, TypeError, UnicodeDecodeError, DatasetError) as exc:
        raise CorruptionError(f"branch record {where} is not valid: {exc}", where) from None
    return Branch(name, doc["id"], parent, parent_id, fork, fork_seq, float(doc["time"]))


def read_branch(storage: Storage, name: str) -> Branch:
    if name == MAIN:
        return MAIN_BRANCH
    validate_branch_name(name)
    key = record_key(name)
    try:
        data = storage.get(key)
    except FileNotFoundError:
        raise DatasetError(
            f"branch {name!r} does not exist in {storage.url}; branches: "
            f"{[b.name for b in list_branches(storage)]}"
        ) from None
    return decode_record(data, storage.full_path(key), name)


def list_branches(storage: Storage, problems: list | None = None) -> list[Branch]:
    """main first, then every branch record, oldest first. A record that does not decode
    raises, unless `problems` is given (verify): then (path, message) goes there."""
    out = []
    for key in storage.list(BRANCHES_PREFIX, refresh=True):
        match = _RECORD_KEY.match(key)
        if match is None or "/.tmp-" in key:
            continue
        try:
            data = storage.get(key)
            out.append(decode_record(data, storage.full_path(key), match.group(1)))
        except FileNotFoundError:  # deleted meanwhile
            continue
        except (DatasetError, OSError) as exc:
            if problems is None:
                raise
            problems.append((storage.full_path(key), str(exc)))
    out.sort(key=lambda b: (b.time, b.name))
    return [MAIN_BRANCH, *out]


def create_branch(storage: Storage, name: str, parent: Branch, fork_id: str) -> Branch:
    """Write the record of a new branch forking at version `fork_id` of `parent`, with
    put-if-absent: of two processes creating the same name, one wins, the other gets a
    DatasetError."""
    validate_branch_name(name)
    if name == MAIN:
        raise DatasetError("branch 'main' always exists")
    match = _VERSION_ID.match(fork_id or "")
    if match is None:
        raise DatasetError(f"cannot branch from {fork_id!r}: not a version id")
    branch = Branch(
        name,
        "b" + secrets.token_hex(8),
        parent.name,
        parent.id,
        fork_id,
        int(match.group(1)),
        time.time(),
    )
    data = json.dumps(branch.to_json(), separators=(",", ":")).encode()
    if not storage.set_if_not_exists(record_key(name), data):
        raise DatasetError(f"branch {name!r} already exists in {storage.url}")
    storage.sync(BRANCHES_PREFIX.rstrip("/"))
    return branch


def lineage(storage: Storage, branch: Branch, branches: list[Branch] | None = None) -> list:
    """[(versions prefix, lowest seq exclusive)] from the branch's own folder down to main's:
    seq n of the branch's history lives in the first folder with n > its bound."""
    by_id = {b.id: b for b in (branches if branches is not None else list_branches(storage))}
    out, current, seen = [], branch, set()
    while current.id:
        if current.id in seen:
            raise CorruptionError(f"branch records form a cycle at {current.name!r}", current.name)
        seen.add(current.id)
        out.append((current.versions_prefix, current.fork_seq))
        parent = by_id.get(current.parent_id)
        if parent is None:
            raise CorruptionError(
                f"branch {current.name!r} forks from branch id {current.parent_id!r}, whose "
                "record is gone", storage.full_path(record_key(current.name))
            )
        current = parent
    out.append(("versions/", 0))
    return out


class BranchStorage:
    """The storage of one branch: every key passes through to `base` except the version
    manifests, which map onto the branch's history (module docstring)."""

    def __init__(self, base: Storage, branch: Branch, segments: list):
        self.base = base
        self.branch = branch
        self.segments = segments  # [(prefix, lowest seq exclusive)], own folder first

    def __getattr__(self, name):  # url, root, atomic_create, direct_io, sync_file, ...
        return getattr(self.base, name)

    def __repr__(self) -> str:
        return f"BranchStorage({self.base!r}, branch={self.branch.name!r})"

    def _map(self, key: str) -> str:
        if not key.startswith("versions/"):
            return key
        name = key[len("versions/"):]
        match = _VERSION_FILE.match(name)
        if match is None:  # temporary files and the folder itself: the branch's own
            return self.segments[0][0] + name if name else self.segments[0][0].rstrip("/")
        seq = int(match.group(1))
        for prefix, low in self.segments:
            if seq > low:
                return prefix + name
        return self.segments[-1][0] + name

    def get(self, key):
        return self.base.get(self._map(key))

    def get_range(self, key, start, length):
        return self.base.get_range(self._map(key), start, length)

    def get_head(self, key, length):
        return self.base.get_head(self._map(key), length)

    def size(self, key):
        return self.base.size(self._map(key))

    def put(self, key, data, sync=True):
        return self.base.put(self._map(key), data, sync)

    def set_if_not_exists(self, key, data):
        return self.base.set_if_not_exists(self._map(key), data)

    def delete(self, key):
        return self.base.delete(self._map(key))

    def exists(self, key):
        return self.base.exists(self._map(key))

    def mtime(self, key):
        return self.base.mtime(self._map(key))

    def full_path(self, key):
        return self.base.full_path(self._map(key))

    def local_path(self, key):
        return self.base.local_path(self._map(key))

    def sync(self, prefix):
        return self.base.sync(self._map(prefix))

    def touch_all(self, keys):
        mapped = {self._map(k): k for k in keys}
        return [mapped[k] for k in self.base.touch_all(list(mapped))]

    def list(self, prefix: str = "", refresh: bool = True) -> list[str]:
        if not prefix.startswith("versions"):
            return self.base.list(prefix, refresh)
        out = []
        high = None
        for folder, low in self.segments:
            for key in self.base.list(folder, refresh):
                match = _VERSION_FILE.match(key[len(folder):])
                if match is None:
                    continue
                seq = int(match.group(1))
                if seq > low and (high is None or seq <= high):
                    out.append("versions/" + key[len(folder):])
            high = low
        return out


def branch_storage(storage: Storage, branch: Branch) -> Storage:
    """`storage` itself for main, a BranchStorage otherwise."""
    base = storage.base if isinstance(storage, BranchStorage) else storage
    if not branch.id:
        return base
    return BranchStorage(base, branch, lineage(base, branch))


def branch_references(storage: Storage) -> set[str]:
    """Chunk keys referenced by any branch's own manifests (gc must spare them)."""
    from slicewise.format.manifest import chunk_key, decode_version

    refs: set[str] = set()
    for key in storage.list(BRANCHES_PREFIX, refresh=True):
        if not key.endswith(".json") or "/versions/" not in key or "/.tmp-" in key:
            continue
        try:
            data = storage.get(key)
        except FileNotFoundError:
            continue
        version = decode_version(data, storage.full_path(key))
        for state in version.tensors.values():
            refs |= {chunk_key(state.meta.id, name) for name in state.keys}
    return refs


def fork_seqs(storage: Storage) -> set[int]:
    """Seqs of main's versions that branches fork from (gc keeps them: a branch without
    commits of its own reads its fork)."""
    return {b.fork_seq for b in list_branches(storage)[1:] if b.parent == MAIN}


def find_in_branches(storage: Storage, version_id: str):
    """(branch, version) for a version id of any branch's own folder, or None."""
    from slicewise.format.manifest import read_version

    match = _VERSION_ID.match(version_id or "")
    if match is None:
        return None
    seq = int(match.group(1))
    branches = list_branches(storage)
    for branch in branches[1:]:
        if seq <= branch.fork_seq:
            continue
        view = BranchStorage(storage, branch, [(branch.versions_prefix, branch.fork_seq)])
        try:
            version = read_version(view, seq)
        except DatasetError:
            continue
        if version.id == version_id:
            return branch, version
    return None


def delete_branch_files(storage: Storage, branch: Branch) -> None:
    """Remove a branch: its record first (then nobody opens it), then its manifests. Its
    chunks become unreferenced, for gc."""
    storage.delete(record_key(branch.name))
    for key in storage.list(f"{BRANCHES_PREFIX}{branch.id}/", refresh=True):
        storage.delete(key)
