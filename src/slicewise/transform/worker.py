"""The worker side of an eval: one batch of inputs in, chunk files out, a receipt back.

    BatchRunner(batch)                                  (in a worker: process, thread, serial)
      for each input of the batch:
        sample_out = pipeline.run_one(item)             the user's functions, per input
        rows checked (tensor names, equal lengths)      an error names the input index
        writer.append_columns(sample_out)               all of the input's rows or none;
                                                        full buffers become chunk files
      return BatchResult(receipt=writer.finish(sync=False), rows, skipped, figures)
                                                        (chunks still being written, and
                                                        the last ones: the parent syncs)

Only the small BatchResult travels back; the samples are already in the dataset's
storage (or being written there by this process's helper thread, under a file lock the
parent's flush waits for: FORMAT.md 3.1), unpublished until the parent commits the
receipts. A failing input (without ignore_errors) stops the batch: its result names the
input, and the parent abandons the files written so far (they stay unreferenced;
`sw.gc` removes them).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from slicewise.transform.errors import TensorMismatchError, TransformError
from slicewise.transform.inputs import Payload, unpack
from slicewise.transform.pipeline import Pipeline


@dataclass
class Batch:
    """Consecutive inputs `start .. start+count`, or, after a dead worker's batch was
    split, the explicit global `positions` of the inputs left in it."""

    batch_id: int
    start: int
    count: int
    payload: Payload
    positions: list[int] | None = None

    def position_of(self, offset: int) -> int:
        return self.positions[offset] if self.positions is not None else self.start + offset


@dataclass
class ItemFailure:
    """One input that failed in a worker: where, why, and the exception when it could
    travel back (it is replaced by a RuntimeError carrying its text when it cannot)."""

    index: int
    kind: str  # "exception" | "worker_lost" | "timeout" | ...
    reason: str
    traceback: str = ""
    exception: BaseException | None = None
    sample_repr: str = ""


@dataclass
class BatchResult:
    batch_id: int
    receipt: Any = None
    items: int = 0
    rows: int = 0
    skipped: list[ItemFailure] = field(default_factory=list)
    failure: ItemFailure | None = None  # set when the batch stopped at a failing input
    worker: str = ""
    busy_s: float = 0.0


@dataclass
class BatchRunner:
    """The callable the engine runs once per batch. Plain data plus the pipeline, so it
    pickles with cloudpickle; the writer spec is the dataset's small JSON-able spec."""

    pipeline: Pipeline
    writer_spec: Any
    run_id: str
    output_tensors: frozenset[str]
    required_tensors: frozenset[str]  # empty with skip_ok=True
    ignore_errors: bool

    def __call__(self, batch: Batch) -> BatchResult:
        from slicewise.format import DatasetWriter

        started = time.perf_counter()
        result = BatchResult(batch.batch_id, worker=_worker_name())
        writer = DatasetWriter.from_spec(self.writer_spec, f"{self.run_id}-{batch.batch_id}")
        run_one, append = self.pipeline.run_one, writer.append_columns
        output_tensors, required = self.output_tensors, self.required_tensors
        rows = 0
        for offset, item in enumerate(unpack(batch.payload)):
            try:
                sample_out = run_one(item, output_tensors)
                count = _checked_count(sample_out, required)
                if count:
                    append(sample_out.tensors, count)  # all of the input's rows, or none
            except Exception as error:  # noqa: BLE001 - every failure is reported by index
                failure = _failure(batch.position_of(offset), item, error)
                if not self.ignore_errors:
                    result.failure = failure
                    _abandon(writer)
                    result.items = offset
                    result.busy_s = time.perf_counter() - started
                    return result
                result.skipped.append(failure)
                continue
            rows += count
        result.rows = rows
        result.items = batch.count
        # The last chunk files, and any still being written on the helper thread, are
        # flushed by the parent (Dataset.sync_receipt) while this worker goes on with its
        # next batch; the commit waits for them, and checks they were written whole.
        result.receipt = writer.finish(sync=False)
        result.busy_s = time.perf_counter() - started
        return result


@dataclass
class ProbeRunner:
    """Runs the pipeline on single inputs and writes nothing: used to find which input of
    a dead worker's batch kills the worker, through the engine's per-item isolation."""

    pipeline: Pipeline
    output_tensors: frozenset[str]

    def __call__(self, item: Any) -> int:
        return len(self.pipeline.run_one(item, self.output_tensors))


def _checked_count(sample_out, required_tensors: frozenset[str]) -> int:
    """The number of rows in one input's buffer, after checking them against the dataset
    (tensor names were checked as the function wrote them)."""
    columns = sample_out.tensors
    if not columns:
        return 0
    count = sample_out.row_count()  # raises when tensors got different numbers of rows
    if count and not columns.keys() >= required_tensors:
        missing = required_tensors.difference(columns)
        raise TensorMismatchError(
            f"the function wrote no value for tensor(s) {sorted(missing)} of the output "
            f"dataset (it wrote {sorted(columns)}); append them too, or pass "
            "skip_ok=True to leave them out"
        )
    return count


def _failure(index: int, item: Any, error: BaseException) -> ItemFailure:
    exception: BaseException | None = error
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # the exception cannot travel between processes: keep its text
        exception = RuntimeError(f"{type(error).__name__}: {error}")
    if isinstance(error, TransformError) and error.index is None:
        error.index = index
    return ItemFailure(
        index=index,
        kind="exception",
        reason=f"{type(error).__name__}: {error}",
        traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)),
        exception=exception,
        sample_repr=_short_repr(item),
    )


def _abandon(writer: Any) -> None:
    abort = getattr(writer, "abort", None)
    if callable(abort):
        try:
            abort()
        except Exception:  # noqa: BLE001 - abandoning is best effort; gc cleans up
            pass


def _worker_name() -> str:
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return f"pid {os.getpid()}"
    return f"pid {os.getpid()} {thread.name}"


def _short_repr(item: Any, limit: int = 200) -> str:
    try:
        text = repr(item)
    except Exception:  # noqa: BLE001
        text = f"<{type(item).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
