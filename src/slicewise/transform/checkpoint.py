"""Where an eval's results go, and where a re-run resumes from.

    AppendSink(ds_out)       ds_out given: the rows go after the dataset's rows; each
                             checkpoint and the end are versions (add_receipts + commit)
    InPlaceSink(data_in)     ds_out=None: the new contents of the tensors the pipeline
                             wrote replace the old, in one version at the end; checkpoints
                             are staged, never versions (inplace.py)
    find_resume_point(sink)  an unfinished eval of this pipeline over the same first
                             inputs, whose rows are still where it wrote them: skip them
                             (below); in place, the staged checkpoint of the version

The checkpoint meta (key CHECKPOINT_KEY), stored with each commit (or staged checkpoint):
  state          "checkpoint" while inputs remain, "done" for the final commit
  pipeline       the stage names
  inputs_done    how many inputs (from 0) the checkpoint holds the rows of
  input_digest   InputDigest of those inputs: a re-run resumes only when its own first
                 `inputs_done` inputs hash the same
  rows_before    the dataset's row count before the first run started
  rows_written   rows the whole eval (all runs) has written so far
  skipped        inputs skipped so far (ignore_errors=True)
  in_place       true for an in-place eval, whose final version also records
  replaced       the tensors whose contents it replaced
  eval           the eval's id (12 hex digits), the same in every commit of the eval, over
                 all its runs (a resumed run carries it on)
  chunks         {tensor: [[first chunk key, chunks, rows, keys digest], ...]}: where every
                 row the eval has committed so far lies, as runs of consecutive chunks of
                 the tensor (one per checkpoint, merged where they lie back to back; the
                 digest is a blake2b of the run's chunk keys). Appending evals only.
  abandoned      ids of unfinished evals of the same pipeline and inputs that this eval
                 replaced (`resume=False`): a later re-run resumes none of them

Finding the checkpoint to resume (appending evals, `find_resume_point`): the version log
is read newest first; for each eval id its newest record counts (a "done" record, or an
`abandoned` entry in a newer eval, closes it). The unfinished evals of this pipeline whose
fingerprint matches this run's first `inputs_done` inputs are the candidates: none, a new
eval (a warning names any unfinished eval of the pipeline on other inputs); two, a
ResumeError (ambiguous); one, it resumes only if every chunk run it recorded is still in
the newest version, with the same keys and rows (other commits since are fine: they
appended after its rows, or changed other tensors), else a ResumeError says what changed
and that `eval(..., resume=False)` starts over. A run resumed after other evals' rows
appends its remaining rows after them: an eval's rows are all there exactly once, in input
order, but not necessarily contiguous.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from slicewise.format.manifest import list_version_seqs, read_version
from slicewise.transform.errors import ResumeError
from slicewise.transform.inputs import InputDigest, InputSource
from slicewise.transform.pipeline import Pipeline

CHECKPOINT_KEY = "slicewise.transform"


class AppendSink:
    """ds_out given: receipts are published by the dataset's own commit, after its rows."""

    in_place = False
    not_resuming = "its rows stay, this eval appends after them"

    def __init__(self, target: Any):
        self.target = target

    def progress(self) -> dict | None:
        return head_progress(self.target)

    def resume(self) -> None:
        """The checkpoint's rows are the dataset's: nothing to take over."""

    def checkpoint(self, receipts: list[dict], message: str, meta: dict) -> str | None:
        return self.finish(receipts, message, meta)

    def finish(self, receipts: list[dict], message: str, meta: dict) -> str | None:
        if receipts:
            self.target.add_receipts(receipts)
        return self.target.commit(message, meta=meta)


@dataclass
class ResumePoint:
    inputs_done: int
    rows_before: int
    rows_written: int
    digest: InputDigest


@dataclass
class EvalRecord:
    """What an appending eval records about itself in each of its commits (see above)."""

    eval_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    chunks: dict[str, list[list]] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)

    def meta(self, receipts: list[dict], laid_out: Any) -> dict:
        """The record for a commit of `receipts` (in input order) made on a version where
        the runs committed before lie as in `laid_out` (the eval's last published
        version; None: merge nothing). Each tensor's new chunks are one run: a commit
        appends a receipt's chunks one after another."""
        chunks = _merged(self.chunks, laid_out)
        for name, keys, rows in _new_runs(receipts):
            chunks.setdefault(name, []).append([keys[0], len(keys), rows, _keys_digest(keys)])
        return {"eval": self.eval_id, "chunks": chunks, "abandoned": list(self.abandoned)}


@dataclass
class _Candidate:
    eval_id: str
    version_id: str
    progress: dict


def find_resume_point(
    sink: Any, source: InputSource, pipeline: Pipeline, resume: bool = True
) -> tuple[ResumePoint | None, EvalRecord]:
    """Where this run starts, and the record its commits carry. In place: the staged
    checkpoint of the dataset's version (inplace.py). Appending: see the module docstring."""
    if sink.in_place:
        return _find_staged(sink, source, pipeline, resume), EvalRecord()
    newest, candidates = _unfinished_evals(sink.target, pipeline.names)
    if not candidates:
        return None, EvalRecord()
    digests = source.prefix_digests(
        lambda: InputDigest(source.identity, pipeline.names),
        sorted({int(c.progress.get("inputs_done", 0)) for c in candidates}),
    )
    matching = []
    for candidate in candidates:
        found = digests.get(int(candidate.progress.get("inputs_done", 0)))
        if found is not None and found.hexdigest() == candidate.progress.get("input_digest"):
            matching.append(candidate)
    if not resume:  # start over: the matching unfinished evals are closed for good
        return None, EvalRecord(abandoned=[c.eval_id for c in matching])
    if not matching:
        warnings.warn(
            f"the dataset holds the checkpoint of an unfinished eval of "
            f"{' -> '.join(pipeline.names)} on other inputs; not resuming it "
            f"({sink.not_resuming})",
            stacklevel=5,
        )
        return None, EvalRecord()
    if len(matching) > 1:
        ids = ", ".join(f"{c.eval_id} (version {c.version_id})" for c in matching)
        raise ResumeError(
            f"cannot resume: {len(matching)} unfinished evals of "
            f"{' -> '.join(pipeline.names)} over these same inputs have checkpoints in the "
            f"dataset: {ids}. Resuming either could write rows the other holds. Run it "
            "again with eval(..., resume=False) to start over from the first input "
            "(their checkpointed rows stay in the dataset)",
            eval_id=matching[0].eval_id,
            fingerprint=matching[0].progress.get("input_digest"),
        )
    candidate = matching[0]
    progress = candidate.progress
    done = int(progress.get("inputs_done", 0))
    changed = _what_changed(candidate, newest)
    if changed is not None:
        raise ResumeError(
            f"cannot resume the unfinished eval {candidate.eval_id} of "
            f"{' -> '.join(pipeline.names)} (input fingerprint {progress['input_digest']}, "
            f"{done} inputs and {progress.get('rows_written', 0)} rows checkpointed in "
            f"version {candidate.version_id}): {changed}, so its checkpointed rows are no "
            "longer the rows it wrote, and resuming could lose rows or write them twice. "
            "To start this eval over from its first input, run it again with "
            "eval(..., resume=False); it appends all of its rows after the dataset's "
            "current ones (what is left of the checkpointed rows stays: remove it first, "
            "or load the version before the eval, if you do not want it twice)",
            eval_id=candidate.eval_id,
            fingerprint=progress["input_digest"],
        )
    point = ResumePoint(
        inputs_done=done,
        rows_before=int(progress.get("rows_before", 0)),
        rows_written=int(progress.get("rows_written", 0)),
        digest=digests[done],
    )
    chunks = progress.get("chunks") if isinstance(progress.get("chunks"), dict) else {}
    return point, EvalRecord(candidate.eval_id, {k: list(v) for k, v in chunks.items()})


def _find_staged(sink, source, pipeline, resume) -> ResumePoint | None:
    """In place: the staged checkpoint of the dataset's current version (a stale one, on an
    older version, is never resumed: the eval replaces the tensors, so nothing repeats)."""
    progress = sink.progress()
    if not resume or progress is None or progress.get("state") != "checkpoint":
        return None
    if progress.get("pipeline") != pipeline.names or not progress.get("input_digest"):
        return None
    done = int(progress.get("inputs_done", 0))
    digest = source.prefix_digests(
        lambda: InputDigest(source.identity, pipeline.names), [done]).get(done)
    if digest is None or digest.hexdigest() != progress["input_digest"]:
        warnings.warn(
            f"the dataset's last checkpoint is one of an unfinished eval of "
            f"{' -> '.join(pipeline.names)} on other inputs; not resuming it "
            f"({sink.not_resuming})",
            stacklevel=5,
        )
        return None
    sink.resume()
    return ResumePoint(
        inputs_done=done,
        rows_before=int(progress.get("rows_before", 0)),
        rows_written=int(progress.get("rows_written", 0)),
        digest=digest,
    )


def _eval_heads(storage: Any):
    """(seq, version, eval id, record) of each appending eval's newest record, reading the
    log newest first; evals closed by a newer eval's `abandoned` list are left out. The
    first item's version is the newest version (yielded with record None when it holds no
    record of its own, so callers always learn it)."""
    closed: set[str] = set()
    newest = None
    for seq in reversed(list_version_seqs(storage)):
        version = read_version(storage, seq)
        first = newest is None
        newest = newest or version
        meta = version.meta if isinstance(version.meta, dict) else {}
        progress = meta.get(CHECKPOINT_KEY)
        if not isinstance(progress, dict) or progress.get("in_place"):
            if first:
                yield seq, version, None, None
            continue
        if not progress.get("eval") and version is not newest:
            continue  # a record from before eval ids counts only at the head
        eval_id = str(progress.get("eval") or f"version {version.id}")
        abandoned = progress.get("abandoned")
        if isinstance(abandoned, list):
            closed.update(str(entry) for entry in abandoned)
        if eval_id in closed:
            if first:
                yield seq, version, None, None
            continue
        closed.add(eval_id)  # its older records are not its state
        yield seq, version, eval_id, progress


def _unfinished_evals(ds: Any, names: list[str]) -> tuple[Any, list[_Candidate]]:
    """(the newest version, the unfinished evals of the pipeline `names`, newest first)."""
    candidates: list[_Candidate] = []
    newest = None
    for _seq, version, eval_id, progress in _eval_heads(ds.storage):
        newest = newest or version
        if (
            progress is not None
            and progress.get("state") == "checkpoint"
            and progress.get("pipeline") == names
            and progress.get("input_digest")
        ):
            candidates.append(_Candidate(eval_id, version.id, progress))
    return newest, candidates


def resumable_versions(storage: Any) -> set[int]:
    """The versions (seqs) holding the newest checkpoint record of an unfinished eval: gc
    keeps them, or a re-run would find no checkpoint and write its rows again."""
    return {
        seq
        for seq, _version, _eval_id, progress in _eval_heads(storage)
        if progress is not None and progress.get("state") == "checkpoint"
    }


def _what_changed(candidate: _Candidate, newest: Any) -> str | None:
    """None when every chunk run the eval recorded is in `newest` as it wrote it; else
    what is different."""
    chunks = candidate.progress.get("chunks")
    if not isinstance(chunks, dict):  # a record from before chunk runs: only at the head
        if newest is not None and newest.id == candidate.version_id:
            return None
        return (f"its checkpoint (version {candidate.version_id}) does not say where its "
                f"rows are, and version {newest.id} was committed after it")
    for name, runs in chunks.items():
        state = newest.tensors.get(name)
        if state is None:
            return f"tensor {name!r} no longer exists (version {newest.id})"
        position = {key: k for k, key in enumerate(state.keys)}
        after = -1
        for first, count, rows, digest in runs:
            k = position.get(first)
            if k is None:
                return (f"chunk {first} of tensor {name!r}, the first of {count} holding "
                        f"{rows} of its rows, is not in version {newest.id} (a commit "
                        "since removed, rewrote or cleared them)")
            keys = state.keys[k:k + count]
            if (len(keys) != count or _keys_digest(keys) != digest
                    or sum(state.rows[k:k + count]) != rows or k <= after):
                return (f"the {count} chunks of tensor {name!r} from {first} on ({rows} rows) "
                        f"are not the ones it wrote, in version {newest.id}")
            after = k + count - 1
    return None


def _new_runs(receipts: list[dict]):
    """(tensor, chunk keys in order, rows) of the chunks `receipts` add."""
    keys: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    for receipt in receipts:
        for name, tensor in receipt.get("tensors", {}).items():
            for entry in tensor.get("chunks", ()):
                keys.setdefault(name, []).append(entry["key"])
                rows[name] = rows.get(name, 0) + int(entry["rows"])
    return [(name, keys[name], rows[name]) for name in keys]


def _merged(chunks: dict[str, list[list]], laid_out: Any) -> dict[str, list[list]]:
    """The runs, with those that lie back to back in version `laid_out` made one."""
    out: dict[str, list[list]] = {}
    for name, runs in chunks.items():
        state = laid_out.tensors.get(name) if laid_out is not None else None
        if state is None:
            out[name] = [list(run) for run in runs]
            continue
        position = {key: k for k, key in enumerate(state.keys)}
        merged: list[list] = []
        for run in runs:
            if merged:
                last = merged[-1]
                start, k = position.get(last[0]), position.get(run[0])
                if start is not None and k is not None and start + last[1] == k:
                    count = last[1] + run[1]
                    merged[-1] = [last[0], count, last[2] + run[2],
                                  _keys_digest(state.keys[start:start + count])]
                    continue
            merged.append(list(run))
        out[name] = merged
    return out


def _keys_digest(keys: list[str]) -> str:
    return hashlib.blake2b("/".join(keys).encode(), digest_size=8).hexdigest()


def _head_meta(ds: Any) -> dict:
    """The meta dict of the dataset's current version ({} when it has none)."""
    meta = ds.version_info.get("meta")
    return meta if isinstance(meta, dict) else {}


def head_progress(ds: Any) -> dict | None:
    """What the eval that made the dataset's current version recorded, if one did."""
    progress = _head_meta(ds).get(CHECKPOINT_KEY)
    return progress if isinstance(progress, dict) else None
