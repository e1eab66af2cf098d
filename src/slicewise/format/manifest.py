"""Version manifests: the JSON file of one version (docs/FORMAT.md §2), parsed into `Version`.

A `Version` is immutable once published. Per tensor it keeps the manifest's columnar chunk
lists plus `cum_rows` (a numpy int64 array, chunk k holds rows cum_rows[k]:cum_rows[k+1]),
which is all a reader needs to find the chunk of a row in O(log chunks).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from slicewise.format.chunk import MAX_NDIM
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import TensorMeta, validate_tensor_name
from slicewise.format.storage import Storage

FORMAT_NAME = "slicewise"
FORMAT_VERSION = 1
MARKER_KEY = "slicewise.json"
VERSIONS_PREFIX = "versions/"
_VERSION_FILE = re.compile(r"^versions/(\d{12})\.json$")
_VERSION_ID = re.compile(r"^v(\d+)-([0-9a-f]{16})$")
_CHUNK_NAME = re.compile(r"^[0-9a-f]{32}$")


# A tensor or group name: components joined by "/" (Deep Lake 3's groups), at most this long.
NAME_MAX = 1024


def validate_name(name: object, kind: str = "tensor") -> str:
    """A tensor or group name (FORMAT.md 2.1): one or more components joined by '/', each a
    valid single name (validate_tensor_name: non-empty, printable, no '\\', NUL or '..', not
    starting with '.' or '_'). So no leading, trailing or double '/', no '.' or '..'
    component: a name stays a name, never a path out of anywhere, whatever it is used
    for (chunk paths use tensor ids; exports to HDF5 and Zarr use names as paths)."""
    if not isinstance(name, str) or not name:
        raise DatasetError(f"a {kind} name must be a non-empty string, got {name!r}")
    if len(name) > NAME_MAX:
        raise DatasetError(f"invalid {kind} name {name[:40]!r}...: longer than {NAME_MAX}")
    for part in name.split("/"):
        if not part:
            raise DatasetError(
                f"invalid {kind} name {name!r}: an empty component (a leading, trailing or "
                "double '/'); groups are separated by single '/'"
            )
        try:
            validate_tensor_name(part)
        except DatasetError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise DatasetError(f"invalid {kind} name {name!r}: {reason}") from None
    return name


def ancestors(name: str) -> list[str]:
    """The groups a name lies in, outermost first: "a/b/c" -> ["a", "a/b"]."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def check_hierarchy(tensors, groups) -> None:
    """Names form one tree: no tensor is also a group, and nothing lies inside a tensor
    (ValueError says which)."""
    tensor_names = set(tensors)
    for name in groups:
        if name in tensor_names:
            raise ValueError(f"{name!r} is both a tensor and a group")
    for name in list(tensor_names) + list(groups):
        for outer in ancestors(name):
            if outer in tensor_names:
                raise ValueError(f"{name!r} lies inside {outer!r}, which is a tensor")


def version_key(seq: int) -> str:
    return f"{VERSIONS_PREFIX}{seq:012d}.json"


def chunk_key(tensor_id: str, name: str) -> str:
    return f"chunks/{tensor_id}/{name}"


CHUNK_FIELDS = ("keys", "rows", "nbytes", "min_shape", "max_shape", "remap")


@dataclass
class TensorState:
    """One tensor in one version: schema plus its chunk list (columnar, as in the JSON)."""

    meta: TensorMeta
    keys: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    min_shape: list[list[int]] = field(default_factory=list)
    max_shape: list[list[int]] = field(default_factory=list)
    remap: list[int | None] = field(default_factory=list)
    label_remaps: list[dict] = field(default_factory=list)
    _cum: np.ndarray | None = None
    _remap_arrays: list | None = None
    _full_keys: list[str] | None = None

    def full_key(self, k: int) -> str:
        """Storage key of chunk k (cached: the hot read path asks for it every time)."""
        keys = self._full_keys
        if keys is None or len(keys) != len(self.keys):
            prefix = f"chunks/{self.meta.id}/"
            keys = self._full_keys = [prefix + name for name in self.keys]
        return keys[k]

    @property
    def cum_rows(self) -> np.ndarray:
        if self._cum is None or len(self._cum) != len(self.rows) + 1:
            cum = np.zeros(len(self.rows) + 1, dtype=np.int64)
            if self.rows:
                np.cumsum(np.asarray(self.rows, dtype=np.int64), out=cum[1:])
            self._cum = cum
        return self._cum

    @property
    def length(self) -> int:
        return int(self.cum_rows[-1])

    def chunk_remap(self, k: int) -> tuple[int, np.ndarray] | None:
        idx = self.remap[k] if k < len(self.remap) else None
        if idx is None:
            return None
        if self._remap_arrays is None:
            self._remap_arrays = [
                (int(r["base"]), np.asarray(r["ids"], dtype=np.uint32)) for r in self.label_remaps
            ]
        return self._remap_arrays[idx]

    def copy(self) -> TensorState:
        return TensorState(
            meta=TensorMeta.from_json(self.meta.to_json()),
            keys=list(self.keys),
            rows=list(self.rows),
            nbytes=list(self.nbytes),
            min_shape=[list(s) for s in self.min_shape],
            max_shape=[list(s) for s in self.max_shape],
            remap=list(self.remap),
            label_remaps=[dict(r) for r in self.label_remaps],
        )

    def to_json(self) -> dict:
        out = self.meta.to_json()
        out["chunks"] = {
            "keys": self.keys,
            "rows": self.rows,
            "nbytes": self.nbytes,
            "min_shape": self.min_shape,
            "max_shape": self.max_shape,
            "remap": self.remap,
        }
        if self.label_remaps:
            out["label_remaps"] = self.label_remaps
        return out

    @classmethod
    def from_json(cls, data: dict) -> TensorState:
        """Build from a manifest's JSON, checking every field: chunk names become file
        paths, so nothing path-like or out of range may pass (ValueError says what)."""
        meta = TensorMeta.from_json(data)
        chunks = data.get("chunks") or {}
        if not isinstance(chunks, dict):
            raise ValueError("'chunks' must be an object")
        columns = {}
        for name in CHUNK_FIELDS:
            column = chunks.get(name, [])
            if not isinstance(column, list):
                raise ValueError(f"chunk list {name!r} must be a list")
            columns[name] = column
        n = len(columns["keys"])
        for name in CHUNK_FIELDS:
            if len(columns[name]) != n:
                raise ValueError(f"chunk list {name!r} has the wrong length")
        for key in columns["keys"]:
            if not isinstance(key, str) or not _CHUNK_NAME.match(key):
                raise ValueError(f"chunk name {str(key)[:40]!r} is not 32 hex digits")
        rows = [_count(r, "rows", 1) for r in columns["rows"]]
        nbytes = [_count(b, "nbytes", 0) for b in columns["nbytes"]]
        min_shape = [_shape(s) for s in columns["min_shape"]]
        max_shape = [_shape(s) for s in columns["max_shape"]]
        if len({len(s) for s in min_shape + max_shape}) > 1:
            raise ValueError("chunk shapes have different numbers of dimensions")
        label_remaps = data.get("label_remaps") or []
        if not isinstance(label_remaps, list):
            raise ValueError("'label_remaps' must be a list")
        names = len(meta.class_names or [])
        for table in label_remaps:
            if not isinstance(table, dict) or set(table) != {"base", "ids"}:
                raise ValueError("a label remap must be {'base': int, 'ids': [int, ...]}")
            if not isinstance(table["ids"], list) or _count(table["base"], "base", 0) > names:
                raise ValueError("a label remap's base is past the class names")
            if any(_count(i, "ids", 0) >= names for i in table["ids"]):
                raise ValueError("a label remap maps to a class id past the class names")
        remap = []
        for index in columns["remap"]:
            if index is not None and _count(index, "remap", 0) >= len(label_remaps):
                raise ValueError(f"chunk remap index {index} has no label remap")
            remap.append(index)
        return cls(
            meta=meta,
            keys=list(columns["keys"]),
            rows=rows,
            nbytes=nbytes,
            min_shape=min_shape,
            max_shape=max_shape,
            remap=remap,
            label_remaps=[{"base": t["base"], "ids": list(t["ids"])} for t in label_remaps],
        )


def _count(value, what: str, minimum: int) -> int:
    if type(value) is not int or not minimum <= value < 2**63:
        raise ValueError(f"{what} value {str(value)[:40]} is not an integer >= {minimum}")
    return value


def _shape(value) -> list[int]:
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise ValueError(f"shape {str(value)[:40]} is not a list of at most {MAX_NDIM} ints")
    return [_count(d, "shape", 0) for d in value]


@dataclass
class Version:
    seq: int
    id: str
    parent: str | None
    time: float
    message: str
    meta: dict
    changes: dict
    tensors: dict[str, TensorState]
    # groups made by create_group, in creation order (a tensor's groups need no entry:
    # "a/b/x" lies in "a" and "a/b"); so an empty group persists
    groups: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "seq": self.seq,
            "id": self.id,
            "parent": self.parent,
            "time": self.time,
            "message": self.message,
            "meta": self.meta,
            "changes": self.changes,
            "tensors": {name: t.to_json() for name, t in self.tensors.items()},
        }
        if self.groups:  # absent when none: manifests without groups stay as they were
            doc["groups"] = list(self.groups)
        return doc

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode("utf-8")

    def info(self) -> dict:
        """The log entry: id, seq, parent, time, message, meta, changes."""
        return {
            "id": self.id,
            "seq": self.seq,
            "parent": self.parent,
            "time": self.time,
            "message": self.message,
            "meta": self.meta,
            "changes": self.changes,
        }

    @classmethod
    def empty(cls) -> Version:
        return cls(0, "", None, 0.0, "", {}, {"appended": [], "created": [], "modified": []}, {})


def decode_version(data: bytes, where: str) -> Version:
    """Parse and check one manifest. Anything wrong with it, down to a chunk name that is
    not 32 hex digits, raises CorruptionError naming the file: a manifest may come from a
    stranger, and its names become file paths."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("format") != FORMAT_NAME:
            raise ValueError("missing 'format': 'slicewise'")
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"format_version {str(doc.get('format_version'))[:40]}; this slicewise reads "
                f"{FORMAT_VERSION} (written by a newer slicewise?)"
            )
        seq = _count(doc.get("seq"), "seq", 0)
        version_id = doc.get("id")
        match = _VERSION_ID.match(version_id) if isinstance(version_id, str) else None
        if seq and (match is None or int(match.group(1)) != seq):
            raise ValueError(f"id {str(version_id)[:40]!r} does not fit seq {seq}")
        parent = doc.get("parent")
        if parent is not None and (not isinstance(parent, str) or not _VERSION_ID.match(parent)):
            raise ValueError(f"parent {str(parent)[:40]!r} is not a version id")
        time_ = doc.get("time")
        if type(time_) not in (int, float) or not math.isfinite(time_):
            raise ValueError("'time' must be a number")
        message = doc.get("message", "")
        meta = doc.get("meta") or {}
        changes = doc.get("changes") or {}
        tensors_doc = doc.get("tensors")
        if not isinstance(message, str) or not isinstance(meta, dict):
            raise ValueError("'message' must be a string and 'meta' an object")
        if not isinstance(changes, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in changes.values()
        ):
            raise ValueError("'changes' must map to lists of tensor names")
        if not isinstance(tensors_doc, dict):
            raise ValueError("'tensors' must be an object")
        tensors = {}
        for name, tensor in tensors_doc.items():
            try:
                validate_name(name)
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
            try:
                tensors[name] = TensorState.from_json(tensor)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"tensor {name!r}: {exc}") from None
        if len({t.meta.id for t in tensors.values()}) != len(tensors):
            raise ValueError("two tensors share an id")
        groups = doc.get("groups", [])
        if not isinstance(groups, list):
            raise ValueError("'groups' must be a list of group names")
        for name in groups:
            try:
                validate_name(name, "group")
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
        if len(set(groups)) != len(groups):
            raise ValueError("a group is listed twice")
        check_hierarchy(tensors, groups)
        return Version(
            seq=seq,
            id=str(version_id) if seq else "",
            parent=parent,
            time=float(time_),
            message=message,
            meta=dict(meta),
            changes=dict(changes),
            tensors=tensors,
            groups=list(groups),
        )
    except Exception as exc:
        raise CorruptionError(
            f"manifest {where} is not a valid slicewise manifest: {exc}", where
        ) from exc


def list_version_seqs(storage: Storage) -> list[int]:
    """Sequence numbers of every manifest, ascending (listing cache refreshed first)."""
    seqs = []
    for key in storage.list(VERSIONS_PREFIX, refresh=True):
        match = _VERSION_FILE.match(key)
        if match:
            seqs.append(int(match.group(1)))
    seqs.sort()
    return seqs


# Decoded manifests by their exact bytes, per process: a manifest is immutable, and dask
# tasks open a handle of the same version per block (a parse with every check costs about a
# millisecond for a manifest of a few hundred chunks). Versions are never changed in place
# (a commit builds a new one, copying the tensor states it touches), so handles share them.
MAX_DECODED = 16
_decoded: OrderedDict[bytes, Version] = OrderedDict()
_decoded_lock = threading.Lock()


def _decode_cached(data: bytes, where: str) -> Version:
    data = bytes(data)
    with _decoded_lock:
        version = _decoded.get(data)
        if version is not None:
            _decoded.move_to_end(data)
            return version
    version = decode_version(data, where)
    with _decoded_lock:
        _decoded[data] = version
        while len(_decoded) > MAX_DECODED:
            _decoded.popitem(last=False)
    return version


def read_version(storage: Storage, seq: int) -> Version:
    key = version_key(seq)
    try:
        data = storage.get(key)
    except FileNotFoundError:
        raise DatasetError(
            f"version {seq} does not exist at {storage.full_path(key)} (removed by gc?)"
        ) from None
    version = _decode_cached(data, storage.full_path(key))
    if version.seq != seq:
        raise CorruptionError(
            f"manifest {storage.full_path(key)} says seq {version.seq}", storage.full_path(key)
        )
    return version


def read_latest(storage: Storage) -> Version | None:
    seqs = list_version_seqs(storage)
    if not seqs:
        return None
    return read_version(storage, seqs[-1])


def find_version(storage: Storage, version: int | str) -> Version:
    """A version by seq (int or digits) or id ('v3-...')."""
    if isinstance(version, (int, np.integer)) or (isinstance(version, str) and version.isdigit()):
        return read_version(storage, int(version))
    if isinstance(version, str):
        match = _VERSION_ID.match(version)
        if match:
            found = read_version(storage, int(match.group(1)))
            if found.id != version:
                raise DatasetError(
                    f"version {version!r} is not in {storage.url}: seq {match.group(1)} is "
                    f"{found.id!r} (a commit that lost a race, or a different dataset?)"
                )
            return found
    raise DatasetError(f"unknown version {version!r}: use an id like 'v3-...' or a number")
