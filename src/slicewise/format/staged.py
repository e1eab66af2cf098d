"""Staged checkpoints: progress of an in-place eval that is not a version (FORMAT.md §3.2).

An in-place eval replaces the contents of the tensors it writes, in one new version built
on the version it started from (its *base*), which its workers read the input from. Its
checkpoints cannot be versions: the newest version is the dataset, and a half-replaced
dataset must never be what readers see. So a checkpoint is staged beside the versions:

    staged/<base id>/<n>.json     n = 1, 2, ... (12 digits), written with put-if-absent;
                                  the highest n that reads whole is the checkpoint
      {"format": "slicewise-staged", "format_version": 2, "base": <base id>, "n": n,
       "time": t, "progress": {...the eval's checkpoint meta...},
       "receipts": [writer receipts, in input order], "checksum": "crc32:<8 hex>"}

The checksum is a manifest's (FORMAT.md 2.4): a staged file with a flipped bit is never
resumed from (it could name the wrong chunks or rows); the eval warns and starts over
from its base, which duplicates nothing (its rows were never a version).

A staged checkpoint names its chunk files only after they are durable (`prepare_chunks`),
so it is as safe to resume from as a version. It counts only while its base is the
newest version: a re-run of the same eval on that version resumes it, and the final
commit (or any other commit on top of the base) makes it stale. `gc` spares the chunks a
live staged checkpoint names, and removes stale ones (after the grace period) with the
chunks only they named. Readers of the dataset never look here.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import dataclass

from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.manifest import check_checksum, chunk_key, encode_manifest
from slicewise.format.storage import Storage

STAGED_PREFIX = "staged"
STAGED_FORMAT = "slicewise-staged"
_STAGED_FILE = re.compile(r"^staged/([^/]+)/(\d{12})\.json$")


@dataclass
class StagedCheckpoint:
    base: str  # the version id it builds on
    n: int
    progress: dict
    receipts: list[dict]


def staged_key(base_id: str, n: int) -> str:
    return f"{STAGED_PREFIX}/{base_id}/{n:012d}.json"


def _staged_files(storage: Storage, base_id: str | None = None) -> list[tuple[str, str, int]]:
    """(key, base id, n) of every staged file (of `base_id` only, when given)."""
    prefix = f"{STAGED_PREFIX}/{base_id}" if base_id else STAGED_PREFIX
    try:
        keys = storage.list(prefix, refresh=True)
    except FileNotFoundError:
        return []
    out = []
    for key in keys:
        match = _STAGED_FILE.match(key)
        if match and (base_id is None or match.group(1) == base_id):
            out.append((key, match.group(1), int(match.group(2))))
    return out


def read_staged(storage: Storage, base_id: str) -> StagedCheckpoint | None:
    """The newest whole staged checkpoint built on version `base_id`, or None."""
    for key, _, n in sorted(_staged_files(storage, base_id), key=lambda f: -f[2]):
        staged = _read(storage, key, base_id, n)
        if staged is not None:
            return staged
    return None


def _read(storage: Storage, key: str, base_id: str, n: int) -> StagedCheckpoint | None:
    try:
        data = storage.get(key)
    except FileNotFoundError:
        return None  # removed meanwhile: an older one may be there
    try:
        return decode_staged(data, storage.full_path(key), base_id, n)
    except CorruptionError as exc:
        warnings.warn(f"{exc}; not resuming from it", RuntimeWarning, stacklevel=3)
        return None


def decode_staged(data: bytes, where: str, base_id: str, n: int) -> StagedCheckpoint:
    """A staged file's bytes, checked (format, checksum, base, members): CorruptionError
    naming `where` otherwise."""
    try:
        data = bytes(data)
        checksummed = check_checksum(data)
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != STAGED_FORMAT:
            raise ValueError(f"not a {STAGED_FORMAT} file")
        version = doc.get("format_version")
        if version not in (1, 2) or type(version) is not int:
            raise ValueError(f"format_version {str(version)[:40]} (this slicewise reads 1, 2)")
        if version == 2 and not checksummed:
            raise ValueError("a version-2 staged file must end with its checksum member")
        if doc.get("base") != base_id or doc.get("n") != n:
            raise ValueError(f"it says base {doc.get('base')!r}, n {doc.get('n')!r}; its "
                             f"name says {base_id!r}, {n}")
        if not isinstance(doc.get("progress"), dict) or not isinstance(doc.get("receipts"),
                                                                      list):
            raise ValueError("'progress' must be an object and 'receipts' a list")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptionError(f"staged checkpoint {where} is damaged: {exc}", where) from None
    return StagedCheckpoint(base_id, n, doc["progress"], doc["receipts"])


def verify_staged(storage: Storage) -> list[tuple[str, str]]:
    """For verify: (path, problem) for every staged file that does not decode whole."""
    problems = []
    for key, base_id, n in _staged_files(storage):
        try:
            decode_staged(storage.get(key), storage.full_path(key), base_id, n)
        except FileNotFoundError:
            continue
        except CorruptionError as exc:
            problems.append((storage.full_path(key), str(exc)))
    return problems


def write_staged(storage: Storage, base_id: str, progress: dict, receipts: list[dict]) -> int:
    """Stage a checkpoint on `base_id` (its chunk files already durable), superseding the
    earlier ones, which are then removed. Returns its n."""
    files = _staged_files(storage, base_id)
    n = max((f[2] for f in files), default=0) + 1
    doc = {
        "format": STAGED_FORMAT,
        "format_version": 2,
        "base": base_id,
        "n": n,
        "time": time.time(),
        "progress": progress,
        "receipts": [_durable(receipt) for receipt in receipts],
    }
    while not storage.set_if_not_exists(staged_key(base_id, n), encode_manifest(doc)):
        n += 1  # another eval staged on the same base meanwhile: the newest one wins
        doc["n"] = n
    for key, _, older in files:
        if older < n:
            _delete(storage, key)
    return n


def clear_staged(storage: Storage, base_id: str) -> None:
    """Remove the staged checkpoints on `base_id` (its eval committed, or gave up)."""
    for key, _, _ in _staged_files(storage, base_id):
        _delete(storage, key)


def _delete(storage: Storage, key: str) -> None:
    try:
        storage.delete(key)
    except FileNotFoundError:
        pass


def _durable(receipt: dict) -> dict:
    """The receipt with every chunk marked synced: staging made them durable."""
    if not isinstance(receipt, dict) or not isinstance(receipt.get("tensors"), dict):
        raise DatasetError(f"not a writer receipt: {str(receipt)[:200]}")
    tensors = {}
    for name, tensor in receipt["tensors"].items():
        chunks = [{**entry, "synced": True} for entry in tensor.get("chunks", ())]
        tensors[name] = {**tensor, "chunks": chunks}
    return {**receipt, "tensors": tensors}


def staged_references(
    storage: Storage, newest_id: str | None, tensor_ids: dict[str, str], now: float,
    grace_seconds: float,
) -> tuple[set[str], list[str]]:
    """For gc: (chunk keys that live staged checkpoints name, staged files that are stale
    and past the grace period). A staged file is live while its base is the newest version
    `newest_id`, or while it is younger than the grace period (an eval may be staging on a
    version that is being superseded). `tensor_ids` maps tensor names to their ids."""
    referenced: set[str] = set()
    stale: list[str] = []
    live: set[str] = set()
    for key, base_id, _ in _staged_files(storage):
        if base_id != newest_id:
            mtime = storage.mtime(key)
            if grace_seconds <= 0 or (mtime is not None and now - mtime >= grace_seconds):
                stale.append(key)
                continue
        live.add(base_id)
    for base_id in live:
        for _ in range(8):  # an eval staging meanwhile removes the file listed: list again
            staged = read_staged(storage, base_id)
            if staged is not None or not _staged_files(storage, base_id):
                break
        if staged is None:
            continue
        for receipt in staged.receipts:
            for name, tensor in (receipt.get("tensors") or {}).items():
                tensor_id = tensor_ids.get(name)
                if tensor_id is None:
                    continue
                for entry in tensor.get("chunks", ()):
                    referenced.add(chunk_key(tensor_id, entry["key"]))
    return referenced, stale
