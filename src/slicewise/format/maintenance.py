"""verify (read everything, report every problem by file) and gc (remove what no kept
version references, and old versions per retention). FORMAT.md §5."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from slicewise.format.chunk import check_payload, parse_header
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import decode_sample
from slicewise.format.manifest import (
    MARKER_KEY,
    Version,
    chunk_key,
    list_version_seqs,
    read_version,
    version_key,
)
from slicewise.format.staged import staged_references
from slicewise.format.storage import Storage


@dataclass
class VerifyReport:
    """What verify found. `ok` is True when `problems` is empty."""

    url: str
    versions: int = 0
    chunks: int = 0
    samples: int = 0
    bytes: int = 0
    problems: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, message: str) -> None:
        self.problems.append({"file": path, "error": message})

    def __str__(self) -> str:
        head = (
            f"verify {self.url}: {self.versions} versions, {self.chunks} chunks, "
            f"{self.samples} samples, {self.bytes} bytes: "
        )
        if self.ok:
            return head + "OK"
        lines = [head + f"{len(self.problems)} problem(s)"]
        lines += [f"  {p['file']}: {p['error']}" for p in self.problems]
        return "\n".join(lines)


def verify_storage(storage: Storage, decode: bool = True) -> VerifyReport:
    report = VerifyReport(storage.url)
    versions: list[Version] = []
    for seq in list_version_seqs(storage):
        where = storage.full_path(version_key(seq))
        try:
            versions.append(read_version(storage, seq))
        except (CorruptionError, DatasetError) as exc:
            report.add(where, str(exc))
    report.versions = len(versions)
    seen: set[str] = set()
    for version in versions:
        for name, state in version.tensors.items():
            for k, key_name in enumerate(state.keys):
                key = chunk_key(state.meta.id, key_name)
                if key in seen:
                    continue
                seen.add(key)
                report.chunks += 1
                _verify_chunk(storage, report, version, name, state, k, key, decode)
    return report


def _verify_chunk(storage, report, version, name, state, k, key, decode) -> None:
    where = storage.full_path(key)
    try:
        data = storage.get(key)
    except FileNotFoundError:
        report.add(where, f"missing (tensor {name!r}, chunk {k} of version {version.id})")
        return
    report.bytes += len(data)
    try:
        head = parse_header(data, len(data), where)
        payload = check_payload(head, memoryview(data)[head.payload_start :], where)
        if head.n != state.rows[k]:
            raise CorruptionError(
                f"holds {head.n} samples, version {version.id} says {state.rows[k]}", where
            )
        if decode:
            remap = state.chunk_remap(k)
            for i in range(head.n):
                sample = payload[int(head.offsets[i]) : int(head.offsets[i + 1])]
                try:
                    decode_sample(state.meta, sample, head.shape(i), head.dtype, remap)
                except Exception as exc:
                    raise CorruptionError(f"sample {i} does not decode: {exc}", where) from exc
        report.samples += head.n
    except CorruptionError as exc:
        message = str(exc).replace(f"chunk file {where}: ", "").replace(f"chunk file {where} ", "")
        report.add(where, message)


@dataclass
class GcReport:
    url: str
    removed_versions: list[int] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    kept_versions: list[int] = field(default_factory=list)
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"gc {self.url}: {verb} {len(self.removed_versions)} version(s) and "
            f"{len(self.removed_files)} unreferenced file(s); kept {len(self.kept_versions)} "
            "version(s)"
        )


def gc_storage(
    storage: Storage,
    keep_last: int | None = None,
    grace_seconds: float = 600.0,
    dry_run: bool = False,
) -> GcReport:
    """Remove old versions (all but the newest `keep_last`; None keeps all) and every
    unreferenced chunk or temporary file older than `grace_seconds`. FORMAT.md §5 says
    which races this is safe against, and why."""
    report = GcReport(storage.url, dry_run=dry_run)
    seqs = list_version_seqs(storage)
    if not seqs:
        raise DatasetError(f"no versions at {storage.url}: not a dataset, nothing removed")
    now = time.time()
    drop: list[int] = []
    if keep_last is not None:
        if keep_last < 1:
            raise DatasetError("keep_last must be at least 1 (the newest version is always kept)")
        # A version stays while it was the newest less than grace_seconds ago: a reader
        # that opened it then may still be reading its chunks.
        for index, seq in enumerate(seqs[:-keep_last]):
            superseded_at = _published_at(storage, seqs[index + 1])
            if grace_seconds > 0 and (superseded_at is None or now - superseded_at < grace_seconds):
                break
            drop.append(seq)
        seqs = seqs[len(drop) :]
    report.kept_versions = list(seqs)
    # Every kept manifest must be read: one that cannot be read stops gc (its chunks are
    # unknown, so nothing may be deleted).
    referenced: set[str] = set()
    newest = None
    for seq in seqs:
        newest = read_version(storage, seq)
        referenced |= _references(newest)
    # an in-place eval's staged checkpoint names chunks no version does yet (staged.py):
    # spare them while it can be resumed; remove it once stale
    tensor_ids = {name: state.meta.id for name, state in newest.tensors.items()}
    staged, stale_staged = staged_references(storage, newest.id, tensor_ids, now, grace_seconds)
    referenced |= staged
    candidates = []
    for key in storage.list("", refresh=True):
        if key == MARKER_KEY or key in referenced:
            continue
        if key.startswith("versions/") and re.match(r"^versions/\d{12}\.json$", key):
            continue
        is_chunk = key.startswith("chunks/")
        is_tmp = "/.tmp-" in key or key.startswith(".tmp-")
        if not (is_chunk or is_tmp):
            continue  # not ours: leave foreign files alone
        if _young(storage, key, now, grace_seconds):
            continue
        candidates.append(key)
    # Commits that landed while we listed may reference candidates (a writer that took
    # longer than grace_seconds): read them and spare their files.
    for seq in list_version_seqs(storage):
        if seq > seqs[-1]:
            referenced |= _references(read_version(storage, seq))
    # Versions go first: if gc dies midway, every remaining manifest is still whole.
    for seq in drop:
        if not dry_run:
            storage.delete(version_key(seq))
        report.removed_versions.append(seq)
    for key in stale_staged:  # before the chunks only they named
        if not dry_run:
            storage.delete(key)
        report.removed_files.append(key)
    for key in candidates:
        if key in referenced:
            continue
        # a commit about to publish this file refreshes its mtime first (commit.py): look
        # again right before deleting
        if _young(storage, key, time.time(), grace_seconds):
            continue
        if not dry_run:
            storage.delete(key)
        report.removed_files.append(key)
    return report


def _references(version: Version) -> set[str]:
    return {
        chunk_key(state.meta.id, name) for state in version.tensors.values() for name in state.keys
    }


def _young(storage: Storage, key: str, now: float, grace_seconds: float) -> bool:
    if grace_seconds <= 0:
        return False
    mtime = storage.mtime(key)
    return mtime is None or now - mtime < grace_seconds


def _published_at(storage: Storage, seq: int) -> float | None:
    """When version `seq` was published: its manifest's mtime, else the time it records."""
    mtime = storage.mtime(version_key(seq))
    if mtime is not None:
        return mtime
    try:
        return read_version(storage, seq).time
    except DatasetError:
        return None
