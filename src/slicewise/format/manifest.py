"""Version manifests: the JSON file of one version (docs/FORMAT.md §2), parsed into `Version`.

A `Version` is immutable once published. Per tensor it keeps the manifest's columnar chunk
lists plus `cum_rows` (a numpy int64 array, chunk k holds rows cum_rows[k]:cum_rows[k+1]),
which is all a reader needs to find the chunk of a row in O(log chunks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import TensorMeta
from slicewise.format.storage import Storage

FORMAT_NAME = "slicewise"
FORMAT_VERSION = 1
MARKER_KEY = "slicewise.json"
VERSIONS_PREFIX = "versions/"
_VERSION_FILE = re.compile(r"^versions/(\d{12})\.json$")
_VERSION_ID = re.compile(r"^v(\d+)-([0-9a-f]{16})$")


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
        chunks = data.get("chunks") or {}
        state = cls(
            meta=TensorMeta.from_json(data),
            keys=list(chunks.get("keys", [])),
            rows=[int(r) for r in chunks.get("rows", [])],
            nbytes=[int(b) for b in chunks.get("nbytes", [])],
            min_shape=list(chunks.get("min_shape", [])),
            max_shape=list(chunks.get("max_shape", [])),
            remap=list(chunks.get("remap", [])),
            label_remaps=list(data.get("label_remaps") or []),
        )
        n = len(state.keys)
        for name in CHUNK_FIELDS:
            if len(getattr(state, name)) != n:
                raise ValueError(f"chunk list {name!r} has the wrong length")
        return state


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

    def to_json(self) -> dict:
        return {
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
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        if doc.get("format") != FORMAT_NAME:
            raise ValueError("missing 'format': 'slicewise'")
        if doc.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"manifest {where} has format_version {doc.get('format_version')!r}; "
                f"this slicewise reads {FORMAT_VERSION}"
            )
        tensors = {name: TensorState.from_json(t) for name, t in doc["tensors"].items()}
        return Version(
            seq=int(doc["seq"]),
            id=str(doc["id"]),
            parent=doc.get("parent"),
            time=float(doc["time"]),
            message=str(doc.get("message", "")),
            meta=dict(doc.get("meta") or {}),
            changes=dict(doc.get("changes") or {}),
            tensors=tensors,
        )
    except DatasetError:
        raise
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


def read_version(storage: Storage, seq: int) -> Version:
    key = version_key(seq)
    try:
        data = storage.get(key)
    except FileNotFoundError:
        raise DatasetError(
            f"version {seq} does not exist at {storage.full_path(key)} (removed by gc?)"
        ) from None
    version = decode_version(data, storage.full_path(key))
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
