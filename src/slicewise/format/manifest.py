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
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields

import numpy as np

from slicewise.format.chunk import MAX_NDIM
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import TensorMeta, validate_tensor_name
from slicewise.format.storage import Storage

FORMAT_NAME = "slicewise"
# The dataset format version: the marker's and the writers' receipts' (FORMAT.md §6).
FORMAT_VERSION = 1
# Manifests: version 2 carries a checksum of its own bytes (FORMAT.md 2.4); version-1
# manifests (no checksum) are still read, with every other check.
MANIFEST_VERSION = 2
# Version 3 is version 2 plus `changes.deleted` (a commit that removed tensors) and a
# top-level `info` (the dataset's info), FORMAT.md 2.5: written only by manifests that have
# one of them, so every other manifest stays readable by readers of version 2, and those
# refuse a version-3 one as "written by a newer slicewise".
MANIFEST_VERSION_DELETED = 3
MANIFEST_VERSIONS = (1, 2, 3)
# A version-2 manifest ends with exactly this member: the CRC-32 (zlib) of every byte
# before its comma, in 8 lowercase hex digits.
_CHECKSUM_TAIL = re.compile(rb',"checksum":"crc32:([0-9a-f]{8})"\}\Z')
_CHECKSUM_TAIL_LEN = len(b',"checksum":"crc32:00000000"}')
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
        if len(set(columns["keys"])) != n:
            # one file counted twice: rows that are not stored (or are stored once) would
            # be served twice, and a tensor's size would be a fiction
            seen: set[str] = set()
            twice = next(k for k in columns["keys"] if k in seen or seen.add(k))
            raise ValueError(f"chunk {twice} is listed twice")
        rows = [_count(r, "rows", 1, MAX_CHUNK_ROWS) for r in columns["rows"]]
        nbytes = [_count(b, "nbytes", MIN_CHUNK_BYTES) for b in columns["nbytes"]]
        min_shape = [_shape(s) for s in columns["min_shape"]]
        max_shape = [_shape(s) for s in columns["max_shape"]]
        if len({len(s) for s in min_shape + max_shape}) > 1:
            raise ValueError("chunk shapes have different numbers of dimensions")
        for low, high in zip(min_shape, max_shape, strict=True):
            if any(a > b for a, b in zip(low, high, strict=True)):
                raise ValueError(f"chunk min_shape {low} exceeds its max_shape {high}")
        label_remaps = data.get("label_remaps") or []
        if not isinstance(label_remaps, list):
            raise ValueError("'label_remaps' must be a list")
        if label_remaps and meta.class_names is None:
            raise ValueError("'label_remaps' on a tensor without class names")
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


# A chunk file holds at most 2^32 - 1 samples (its header counts them in a u32) and is at
# least its fixed 36-byte header prefix long (FORMAT.md §1).
MAX_CHUNK_ROWS = 2**32 - 1
MIN_CHUNK_BYTES = 36


def _count(value, what: str, minimum: int, maximum: int = 2**63 - 1) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ValueError(
            f"{what} value {str(value)[:40]} is not an integer in [{minimum}, {maximum}]"
        )
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
    # the dataset's info (Deep Lake 3's ds.info), carried from version to version
    ds_info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        doc = {
            "format": FORMAT_NAME,
            "format_version": (
                MANIFEST_VERSION_DELETED if self.changes.get("deleted") or self.ds_info
                else MANIFEST_VERSION
            ),
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
        if self.ds_info:
            doc["info"] = dict(self.ds_info)
        return doc

    def encode(self) -> bytes:
        """The manifest file's bytes (version 2: with its checksum, FORMAT.md 2.4)."""
        return encode_manifest(self.to_json())

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


def encode_manifest(doc: dict) -> bytes:
    """A manifest document (any 'checksum' member is dropped) as the bytes of a version-2
    manifest: compact JSON whose last member is `"checksum":"crc32:<8 hex>"`, the CRC-32
    of every byte before its comma. Tests use it to forge manifests that pass the
    checksum, so the field checks behind it are exercised too."""
    body = {key: value for key, value in doc.items() if key != "checksum"}
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    if not data.endswith(b"}") or len(data) < 3:
        raise ValueError("a manifest is a non-empty JSON object")
    head = data[:-1]
    return head + b',"checksum":"crc32:%08x"}' % zlib.crc32(head)


def check_checksum(data: bytes) -> bool:
    """True when `data` ends with a checksum member and the checksum holds (a version-2
    manifest); False when it has none (version 1, or a damaged tail: the format version
    then decides). A checksum that does not hold raises ValueError."""
    tail = _CHECKSUM_TAIL.search(data, max(0, len(data) - _CHECKSUM_TAIL_LEN))
    if tail is None:
        return False
    stored, actual = int(tail.group(1), 16), zlib.crc32(data[: tail.start()])
    if stored != actual:
        raise ValueError(
            f"checksum mismatch (stored crc32 {stored:08x}, the bytes give {actual:08x}): "
            "the file was damaged or edited"
        )
    return True


def _no_duplicate_keys(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {str(twice)[:40]!r} appears twice in one object")
    return out


# Every member of a manifest (FORMAT.md 2.4): the required ones must be there, the optional
# ones are absent exactly when empty, and anything else is refused (a damaged name would
# otherwise be ignored and its value taken for a default).
_TOP_REQUIRED = frozenset(
    ("format", "format_version", "seq", "id", "parent", "time", "message", "meta", "changes",
     "tensors")
)
_TOP_OPTIONAL = frozenset(("groups", "info"))
_CHANGES_REQUIRED = frozenset(("appended", "created", "modified"))
_CHANGES_OPTIONAL = frozenset(("groups", "cleared", "deleted"))
_TENSOR_OPTIONAL = frozenset(("class_names", "label_remaps"))
_CHUNK_MEMBERS = frozenset(CHUNK_FIELDS)
# optional members written only when they hold something ("class_names" may be [])
_ABSENT_WHEN_EMPTY = frozenset(("groups", "cleared", "deleted", "label_remaps"))
_TENSOR_REQUIRED = frozenset(
    {f.name for f in dataclass_fields(TensorMeta)} - _TENSOR_OPTIONAL | {"chunks"}
)


def _check_members(obj: dict, required: frozenset, optional: frozenset, what: str) -> None:
    missing = required - obj.keys()
    if missing:
        raise ValueError(f"{what} has no {', '.join(repr(k) for k in sorted(missing))}")
    extra = obj.keys() - required - optional
    if extra:
        names = ", ".join(repr(str(k)[:40]) for k in sorted(extra, key=str)[:3])
        raise ValueError(f"{what} has unknown member(s) {names}")
    for key in optional & obj.keys() & _ABSENT_WHEN_EMPTY:
        if not isinstance(obj[key], list) or not obj[key]:
            raise ValueError(f"{what}: {key!r} must be a non-empty list (absent when empty)")


def decode_version(data: bytes, where: str) -> Version:
    """Parse and check one manifest (FORMAT.md 2.4). Anything wrong with it, from a
    checksum mismatch or a missing member to a chunk name that is not 32 hex digits, raises
    CorruptionError naming the file: a manifest may come from a stranger, and its names
    become file paths."""
    try:
        data = bytes(data)
        checksummed = check_checksum(data)
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("format") != FORMAT_NAME:
            raise ValueError("missing 'format': 'slicewise'")
        version = doc.get("format_version")
        if version not in MANIFEST_VERSIONS or type(version) is not int:
            raise ValueError(
                f"format_version {str(version)[:40]}; this slicewise reads manifests of "
                f"versions {', '.join(map(str, MANIFEST_VERSIONS))} (written by a newer "
                "slicewise?)"
            )
        if version >= 2:
            if not checksummed:
                raise ValueError(
                    f"a version-{version} manifest must end with its checksum member "
                    '\',"checksum":"crc32:<8 hex>"}\' (the file was damaged or edited)'
                )
            del doc["checksum"]
        elif checksummed:
            raise ValueError("a version-1 manifest has no checksum member")
        _check_members(doc, _TOP_REQUIRED, _TOP_OPTIONAL, "the manifest")
        seq = _count(doc["seq"], "seq", 1)
        version_id = doc["id"]
        match = _VERSION_ID.match(version_id) if isinstance(version_id, str) else None
        if match is None or int(match.group(1)) != seq:
            raise ValueError(f"id {str(version_id)[:40]!r} does not fit seq {seq}")
        parent = doc["parent"]
        if parent is None:
            if seq != 1:
                raise ValueError(f"version {seq} has no parent (only version 1 has none)")
        else:
            parent_match = _VERSION_ID.match(parent) if isinstance(parent, str) else None
            if parent_match is None or int(parent_match.group(1)) != seq - 1:
                raise ValueError(
                    f"parent {str(parent)[:40]!r} is not the id of a version {seq - 1}"
                )
        time_ = doc["time"]
        if type(time_) not in (int, float) or not math.isfinite(time_) or time_ < 0:
            raise ValueError("'time' must be a finite number >= 0")
        message, meta, changes = doc["message"], doc["meta"], doc["changes"]
        tensors_doc = doc["tensors"]
        if not isinstance(message, str) or not isinstance(meta, dict):
            raise ValueError("'message' must be a string and 'meta' an object")
        if not isinstance(changes, dict):
            raise ValueError("'changes' must be an object")
        _check_members(changes, _CHANGES_REQUIRED, _CHANGES_OPTIONAL, "'changes'")
        if ("deleted" in changes or "info" in doc) and version < MANIFEST_VERSION_DELETED:
            raise ValueError("'changes' 'deleted' and 'info' are in version-3 manifests only")
        if version >= MANIFEST_VERSION_DELETED and "deleted" not in changes and "info" not in doc:
            raise ValueError("a version-3 manifest has 'changes' 'deleted' or 'info'")
        ds_info = doc.get("info", {})
        if not isinstance(ds_info, dict) or ("info" in doc and not ds_info):
            raise ValueError("'info' must be a non-empty object (absent when empty)")
        for kind, names in changes.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"'changes' {kind!r} must be a list of names")
            if len(set(names)) != len(names):
                raise ValueError(f"'changes' {kind!r} lists a name twice")
        if not isinstance(tensors_doc, dict):
            raise ValueError("'tensors' must be an object")
        tensors = {}
        for name, tensor in tensors_doc.items():
            try:
                validate_name(name)
            except DatasetError as exc:
                raise ValueError(str(exc)) from None
            try:
                if not isinstance(tensor, dict):
                    raise ValueError("a tensor entry must be an object")
                _check_members(tensor, _TENSOR_REQUIRED, _TENSOR_OPTIONAL, "its entry")
                for key in ("info", "htype_kwargs", "chunks"):
                    if not isinstance(tensor[key], dict):
                        raise ValueError(f"{key!r} must be an object")
                _check_members(tensor["chunks"], _CHUNK_MEMBERS, frozenset(), "'chunks'")
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
        for kind in ("appended", "created", "modified", "cleared"):
            unknown = [n for n in changes.get(kind, ()) if n not in tensors]
            if unknown:
                raise ValueError(f"'changes' {kind!r} names {unknown[0][:40]!r}, not a tensor")
        all_groups = set(groups) | {g for n in list(tensors) + groups for g in ancestors(n)}
        unknown = [n for n in changes.get("groups", ()) if n not in all_groups]
        if unknown:
            raise ValueError(f"'changes' 'groups' names {unknown[0][:40]!r}, not a group")
        return Version(
            seq=seq,
            id=version_id,
            parent=parent,
            time=float(time_),
            message=message,
            meta=dict(meta),
            changes=dict(changes),
            tensors=tensors,
            groups=list(groups),
            ds_info=dict(ds_info),
        )
    except Exception as exc:
        raise CorruptionError(
            f"manifest {where} is not a valid slicewise manifest: {exc}", where
        ) from exc


# What a dataset marker may ask for (a marker may come from a stranger).
MARKER_MAX_BYTES = 64 * 1024
MIN_CHUNK_TARGET = 1
MAX_CHUNK_TARGET = 1024**3
_MARKER_REQUIRED = ("format", "format_version", "chunk_target_bytes")


def decode_marker(data: bytes, where: str) -> dict:
    """Check a dataset marker (`slicewise.json`, FORMAT.md top): a JSON object with
    `format` "slicewise", a `format_version` this slicewise reads, and `chunk_target_bytes`
    an integer in [1, 2^30]. CorruptionError naming the file otherwise."""
    try:
        if len(data) > MARKER_MAX_BYTES:
            raise ValueError(f"{len(data)} bytes, a marker is a few dozen")
        doc = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in _MARKER_REQUIRED if key not in doc]
        if missing:
            raise ValueError(f"no {', '.join(repr(k) for k in missing)}")
        if doc["format"] != FORMAT_NAME:
            raise ValueError(f"'format' is {str(doc['format'])[:40]!r}, not {FORMAT_NAME!r}")
        if doc["format_version"] != FORMAT_VERSION or type(doc["format_version"]) is not int:
            raise ValueError(
                f"format_version {str(doc['format_version'])[:40]}; this slicewise reads "
                f"{FORMAT_VERSION} (written by a newer slicewise?)"
            )
        target = doc["chunk_target_bytes"]
        if type(target) is not int or not MIN_CHUNK_TARGET <= target <= MAX_CHUNK_TARGET:
            raise ValueError(f"chunk_target_bytes {str(target)[:40]} is not a sane chunk size")
    except Exception as exc:
        raise CorruptionError(f"{where} is not a valid slicewise dataset marker: {exc}",
                              where) from exc
    return doc


def list_version_seqs(storage: Storage) -> list[int]:
    """Sequence numbers of every manifest, ascending. The listing (cache refreshed first)
    is only a hint: the keys after its newest are probed one by one (a HEAD on object
    stores) until one is absent, so a stale or lagging listing never hides the newest
    version (FORMAT.md §3)."""
    seqs = []
    for key in storage.list(VERSIONS_PREFIX, refresh=True):
        match = _VERSION_FILE.match(key)
        if match:
            seqs.append(int(match.group(1)))
    seqs.sort()
    probe = seqs[-1] + 1 if seqs else 1
    while storage.exists(version_key(probe)):
        seqs.append(probe)
        probe += 1
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
            try:
                found = read_version(storage, int(match.group(1)))
            except DatasetError:
                found = None
            if found is None or found.id != version:
                # a version of another branch (FORMAT.md 8): its own folder holds it
                from slicewise.format.branches import find_in_branches

                hit = find_in_branches(getattr(storage, "base", storage), version)
                if hit is not None:
                    return hit[1]
            if found is None:
                return read_version(storage, int(match.group(1)))  # raises, naming it
            if found.id != version:
                raise DatasetError(
                    f"version {version!r} is not in {storage.url}: seq {match.group(1)} is "
                    f"{found.id!r} (a commit that lost a race, or a different dataset?)"
                )
            return found
    raise DatasetError(f"unknown version {version!r}: use an id like 'v3-...' or a number")
