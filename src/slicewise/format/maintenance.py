"""verify (read everything, report every problem by file) and gc (remove what no kept
version references, and old versions per retention). FORMAT.md §5."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from slicewise.format.chunk import check_chunk, claim_problem
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.manifest import (
    MARKER_KEY,
    VERSIONS_PREFIX,
    Version,
    chunk_key,
    decode_marker,
    list_version_seqs,
    read_version,
    version_key,
)
from slicewise.format.samples import decode_sample
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
    """Check everything (FORMAT.md §5): the marker, that there are versions and none is
    missing between the oldest and the newest, every manifest (2.4) and the parent links
    between them, and every chunk any manifest references. A path that holds no dataset
    is a problem too, never an empty OK."""
    report = VerifyReport(storage.url)
    if not _verify_marker(storage, report):
        return report
    versions_at = storage.full_path(VERSIONS_PREFIX.rstrip("/"))
    try:
        seqs = list_version_seqs(storage)
    except (DatasetError, OSError) as exc:
        report.add(versions_at, f"cannot be listed: {exc}")
        return report
    if not seqs:
        report.add(
            versions_at,
            "no version manifests (versions/ is missing or empty): every dataset has at "
            "least version 1, so the versions were removed or never written",
        )
        return report
    gaps = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
    for seq in gaps:
        report.add(
            storage.full_path(version_key(seq)),
            f"missing: versions {seqs[0]} to {seqs[-1]} exist, and only gc removes "
            "versions (the oldest first)",
        )
    versions: list[Version] = []
    for seq in seqs:
        where = storage.full_path(version_key(seq))
        try:
            versions.append(read_version(storage, seq))
        except (DatasetError, OSError) as exc:
            report.add(where, str(exc))
    by_seq = {v.seq: v for v in versions}
    for version in versions:
        before = by_seq.get(version.seq - 1)
        if before is not None and version.parent != before.id:
            report.add(
                storage.full_path(version_key(version.seq)),
                f"its parent is {version.parent!r}, but version {before.seq} is {before.id!r}",
            )
    report.versions = len(versions)
    # each chunk file is read and checked once; what every version says of it is checked
    # against its header (a manifest's rows, nbytes and shapes are what readers trust)
    seen: dict[str, tuple | None] = {}
    for version in versions:
        for name, state in version.tensors.items():
            for k, key_name in enumerate(state.keys):
                key = chunk_key(state.meta.id, key_name)
                if key not in seen:
                    report.chunks += 1
                    seen[key] = _verify_chunk(storage, report, version, name, state, k, key,
                                              decode)
                if seen[key] is not None:
                    where = storage.full_path(key)
                    try:
                        _check_claims(*seen[key], state, k, version, where)
                    except CorruptionError as exc:
                        report.add(where, _short_message(exc, where))
    return report


def _short_message(exc: CorruptionError, where: str) -> str:
    return str(exc).replace(f"chunk file {where}: ", "").replace(f"chunk file {where} ", "")


def _verify_marker(storage: Storage, report: VerifyReport) -> bool:
    """Whether `storage` holds a dataset whose marker is valid; the problem goes into
    `report` otherwise. False means there is nothing more to check."""
    where = storage.full_path(MARKER_KEY)
    try:
        data = storage.get(MARKER_KEY)
    except FileNotFoundError:
        try:
            present = bool(storage.list("", refresh=True))
        except (DatasetError, OSError):
            present = True
        if not present:
            report.add(storage.url, "no dataset here: the path does not exist or is empty")
            return False
        report.add(
            where,
            "the dataset marker is missing: not a slicewise dataset, or its marker was "
            "removed",
        )
        return True  # versions and chunks may still be there: check them too
    except (DatasetError, OSError) as exc:
        kind = "not a folder" if isinstance(exc, NotADirectoryError) else "cannot be read"
        report.add(where, f"the dataset marker {kind}: {exc}")
        return not isinstance(exc, NotADirectoryError)
    try:
        decode_marker(data, where)
    except CorruptionError as exc:
        report.add(where, str(exc).replace(f"{where} ", "", 1))
    return True


def _verify_chunk(storage, report, version, name, state, k, key, decode) -> tuple | None:
    """Read chunk `key` whole and check it (header, checksums, every sample decodes):
    (header, file size), or None with the problem in `report`."""
    where = storage.full_path(key)
    context = f"tensor {name!r}, chunk {k} of version {version.id}"
    try:
        data = storage.get(key)
    except FileNotFoundError:
        report.add(where, f"missing ({context})")
        return None
    except (DatasetError, OSError) as exc:
        report.add(where, f"cannot be read ({context}): {exc}")
        return None
    report.bytes += len(data)
    try:
        # header, size, every checksum (every sample's, in chunk format 2), decompression
        head, payload = check_chunk(data, where)
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
        report.add(where, _short_message(exc, where))
        return None
    return head, len(data)


def _check_claims(head, size: int, state, k: int, version: Version, where: str) -> None:
    """What `version` says of its chunk k against the chunk's header (`claim_problem`):
    rows, nbytes (the file's size), the min/max shapes (from which a tensor's shape is
    computed without reading chunks), and the compressions."""
    meta = state.meta
    problem = claim_problem(head, state.rows[k], state.nbytes[k], state.min_shape[k],
                            state.max_shape[k], meta.sample_compression, meta.chunk_compression)
    if problem is not None:
        raise CorruptionError(f"{problem.replace('the manifest', f'version {version.id}')}",
                              where)


@dataclass
class GcReport:
    url: str
    removed_versions: list[int] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    kept_versions: list[int] = field(default_factory=list)
    dry_run: bool = False
    # object stores: incomplete multipart uploads aborted, '<key> <upload id>' each
    aborted_uploads: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        uploads = (
            f", {'would abort' if self.dry_run else 'aborted'} {len(self.aborted_uploads)} "
            "incomplete upload(s)" if self.aborted_uploads else ""
        )
        return (
            f"gc {self.url}: {verb} {len(self.removed_versions)} version(s) and "
            f"{len(self.removed_files)} unreferenced file(s){uploads}; kept "
            f"{len(self.kept_versions)} version(s)"
        )


def gc_storage(
    storage: Storage,
    keep_last: int | None = None,
    grace_seconds: float = 600.0,
    dry_run: bool = False,
    protect: set[int] | frozenset[int] = frozenset(),
) -> GcReport:
    """Remove old versions (all but the newest `keep_last`; None keeps all; never one in
    `protect` nor any after it), every unreferenced chunk or temporary file older than
    `grace_seconds`, and (object stores) abort the incomplete multipart uploads under the
    dataset started before that. FORMAT.md §5 says
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
            if seq in protect:  # e.g. an unfinished eval's checkpoint (see sw.gc)
                break
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
    # and every branch's own manifests (FORMAT.md 8): gc retires main's versions only
    from slicewise.format.branches import branch_references

    referenced |= branch_references(storage)
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
    # object stores: multipart uploads a killed writer never completed (invisible to
    # listings, billed) and started before the grace period: no live writer finishes them
    abort = getattr(storage, "abort_incomplete_uploads", None)
    if abort is not None:
        report.aborted_uploads = list(abort(grace_seconds, dry_run=dry_run))
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
