"""verify (read everything, report every problem by file) and gc (remove what no kept
version references, and old versions per retention). FORMAT.md §5."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from slicewise.format.chunk import check_chunk, claim_problem
from slicewise.format.commit import checked_by_gc_record, gc_running_token, write_gc_record
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
from slicewise.format.staged import staged_references, verify_staged
from slicewise.format.storage import Storage


@dataclass
class VerifyReport:
    """What verify found. `ok` is True when `problems` is empty."""

    url: str
    versions: int = 0
    chunks: int = 0
    samples: int = 0
    bytes: int = 0
    branches: int = 0  # besides main
    views: int = 0  # saved views read
    problems: list[dict] = field(default_factory=list)
    stale_views: list[str] = field(default_factory=list)  # their version was retired by gc

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, message: str) -> None:
        self.problems.append({"file": path, "error": message})

    def __str__(self) -> str:
        head = (
            f"verify {self.url}: {self.versions} versions, {self.chunks} chunks, "
            f"{self.samples} samples, {self.bytes} bytes"
            + (f", {self.branches} branch(es)" if self.branches else "")
            + (f", {self.views} saved view(s)" if self.views else "")
            + ": "
        )
        if self.ok:
            return head + "OK"
        lines = [head + f"{len(self.problems)} problem(s)"]
        lines += [f"  {p['file']}: {p['error']}" for p in self.problems]
        return "\n".join(lines)


def verify_storage(storage: Storage, decode: bool = True) -> VerifyReport:
    """Check everything (FORMAT.md §5): the marker, that there are versions and none is
    missing between the oldest and the newest, every manifest (2.4) and the parent links
    between them, and every chunk any manifest references; then every branch (its record
    and its own manifests and chunks, §8.1-8.2), every saved view (§8.4) and every staged
    checkpoint's checksum (§3.2). A path that
    holds no dataset is a problem too, never an empty OK."""
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
    # each chunk file is read and checked once, whichever branch's manifest names it
    seen: dict[str, tuple | None] = {}
    main = _verify_history(storage, storage, seqs, None, report, seen, decode)
    lengths = {v.id: _max_rows(v) for v in main}
    for branch, view, own in _branch_histories(storage, report):
        # a branch's first own version's parent is the version it forked from
        versions = _verify_history(storage, view, own, branch.fork, report, seen, decode)
        lengths.update((v.id, _max_rows(v)) for v in versions)
        report.branches += 1
    _verify_views(storage, report, lengths)
    for where, problem in verify_staged(storage):  # an in-place eval's checkpoints (3.2)
        report.add(where, problem)
    return report


def _verify_history(storage, view, seqs, first_parent, report, seen, decode) -> list[Version]:
    """One linear history (main's `versions/`, or a branch's own folder through `view`):
    no gap between its oldest and newest seq, every manifest readable, each one's parent
    the version before it (the first one's `first_parent`, when known), every chunk."""
    gaps = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs)) if seqs else []
    for seq in gaps:
        report.add(
            _manifest_path(storage, view, seq),
            f"missing: versions {seqs[0]} to {seqs[-1]} exist, and only gc removes "
            "versions (the oldest first)",
        )
    versions: list[Version] = []
    for seq in seqs:
        try:
            versions.append(read_version(view, seq))
        except (DatasetError, OSError) as exc:
            report.add(_manifest_path(storage, view, seq), str(exc))
    by_seq = {v.seq: v for v in versions}
    for version in versions:
        before = by_seq.get(version.seq - 1)
        expected = before.id if before is not None else (
            first_parent if version.seq == seqs[0] else None)
        if expected is not None and version.parent != expected:
            what = f"version {before.seq}" if before is not None else "its fork"
            report.add(
                _manifest_path(storage, view, version.seq),
                f"its parent is {version.parent!r}, but {what} is {expected!r}",
            )
    report.versions += len(versions)
    # what every version says of a chunk is checked against its header (a manifest's
    # rows, nbytes and shapes are what readers trust)
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
    return versions


def _manifest_path(storage: Storage, view, seq: int) -> str:
    mapped = getattr(view, "_map", None)
    return storage.full_path(mapped(version_key(seq)) if mapped else version_key(seq))


def _max_rows(version: Version) -> int:
    return max((sum(state.rows) for state in version.tensors.values()), default=0)


def _branch_histories(storage: Storage, report: VerifyReport):
    """(branch, a storage view of its own folder, its own seqs) for every branch record
    that decodes and whose parent exists; the problems of the others go into `report`."""
    from slicewise.format.branches import BranchStorage, lineage, list_branches, record_key

    problems: list[tuple[str, str]] = []
    branches = list_branches(storage, problems)
    for where, message in problems:
        report.add(where, message)
    for branch in branches[1:]:
        where = storage.full_path(record_key(branch.name))
        try:
            lineage(storage, branch, branches)
        except CorruptionError as exc:
            report.add(where, str(exc))
            continue
        view = BranchStorage(storage, branch, [(branch.versions_prefix, branch.fork_seq)])
        try:
            own = list_version_seqs(view)
        except (DatasetError, OSError) as exc:
            report.add(storage.full_path(branch.versions_prefix), f"cannot be listed: {exc}")
            continue
        yield branch, view, own


def _verify_views(storage: Storage, report: VerifyReport, lengths: dict[str, int]) -> None:
    """Every saved view (FORMAT.md 8.4) decodes and names rows of a version that exists.
    A view whose version gc retired is no problem (documented: load_view then fails
    naming it); it is listed in `report.stale_views`."""
    import json

    for key in storage.list("views/", refresh=True):
        if not key.endswith(".json") or "/.tmp-" in key:
            continue
        where = storage.full_path(key)
        try:
            doc = json.loads(storage.get(key))
        except FileNotFoundError:
            continue
        except (ValueError, OSError, DatasetError) as exc:
            report.add(where, f"saved view does not decode: {exc}")
            continue
        report.views += 1
        rows = doc.get("rows") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or not all(type(r) is int and r >= 0 for r in rows):
            report.add(where, "saved view has no valid rows (a list of row numbers)")
            continue
        version = doc.get("version")
        if version not in lengths:
            report.stale_views.append(key)
            continue
        if rows and max(rows) >= lengths[version]:
            report.add(where, f"saved view names row {max(rows)}, past the "
                              f"{lengths[version]} rows of version {version}")


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
    running = None
    if not dry_run and checked_by_gc_record(storage):
        # first: while this says "running", and after it (a new token), commits check
        # each chunk object they publish (FORMAT.md 3)
        running = write_gc_record(storage, "running")
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
    # last: "done" with a fresh token, unless another gc began meanwhile (its "running"
    # stays; it writes "done" when it ends). A gc that dies before this leaves "running":
    # commits then check every chunk object until a gc completes.
    if running is not None and gc_running_token(storage) == running:
        write_gc_record(storage, "done")
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
