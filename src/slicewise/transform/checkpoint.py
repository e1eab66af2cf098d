"""Where an eval's results go, and where a re-run resumes from.

    AppendSink(ds_out)       ds_out given: the rows go after the dataset's rows; each
                             checkpoint and the end are versions (add_receipts + commit)
    InPlaceSink(data_in)     ds_out=None: the new contents of the tensors the pipeline
                             wrote replace the old, in one version at the end; checkpoints
                             are staged, never versions (inplace.py)
    find_resume_point(sink)  the sink's last checkpoint is an unfinished one of this
                             pipeline over the same first inputs: skip them

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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

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


def find_resume_point(sink: Any, source: InputSource, pipeline: Pipeline) -> ResumePoint | None:
    """The sink's last checkpoint is an unfinished one of this pipeline, and this run's
    first inputs hash the same as that checkpoint's: resume after them."""
    progress = sink.progress()
    if progress is None or progress.get("state") != "checkpoint":
        return None
    if progress.get("pipeline") != pipeline.names or not progress.get("input_digest"):
        return None
    done = int(progress.get("inputs_done", 0))
    digest = InputDigest(source.identity, pipeline.names)
    if not source.prefix_digest(digest, done) or digest.hexdigest() != progress["input_digest"]:
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


def _head_meta(ds: Any) -> dict:
    """The meta dict of the dataset's current version ({} when it has none)."""
    meta = ds.version_info.get("meta")
    return meta if isinstance(meta, dict) else {}


def head_progress(ds: Any) -> dict | None:
    """What the eval that made the dataset's current version recorded, if one did."""
    progress = _head_meta(ds).get(CHECKPOINT_KEY)
    return progress if isinstance(progress, dict) else None
