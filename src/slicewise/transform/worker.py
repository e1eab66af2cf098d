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
`sw.gc` removes them). A write the storage refuses (`is_storage_error`: ENOSPC and other
OSErrors of the writer) is not the input's fault: it stops the batch as a failure of kind
"storage" (never skipped), naming the file and its tensor (`locate_storage_error`).
"""

from __future__ import annotations

import errno
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
    # kind "storage" (the dataset's storage refused a write): the file and its tensor
    filename: str = ""
    tensor: str = ""
    at_finish: int = 0  # > 0: failed writing the batch's last chunks, after this many inputs


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
    sync: bool = False  # finish(sync=True): every chunk file durable before the receipt

    def __call__(self, batch: Batch) -> BatchResult:
        from slicewise.format import DatasetWriter

        started = time.perf_counter()
        result = BatchResult(batch.batch_id, worker=_worker_name())
        writer = DatasetWriter.from_spec(self.writer_spec, f"{self.run_id}-{batch.batch_id}")
        run_one, append = self.pipeline.run_one, writer.append_columns
        output_tensors, required = self.output_tensors, self.required_tensors
        rows = 0

        def stop(failure: ItemFailure, offset: int) -> BatchResult:
            result.failure = failure
            _abandon(writer)
            result.items = offset
            result.busy_s = time.perf_counter() - started
            return result

        for offset, item in enumerate(unpack(batch.payload)):
            index = batch.position_of(offset)
            writing = False  # the user's functions run first, then the writer
            try:
                sample_out = run_one(item, output_tensors)
                count = _checked_count(sample_out, required)
                if count:
                    writing = True
                    append(sample_out.tensors, count)  # all of the input's rows, or none
            except Exception as error:  # noqa: BLE001 - every failure is reported by index
                if writing and is_storage_error(error, self.writer_spec):
                    # the storage refused a write: not this input's fault, never skipped
                    return stop(storage_failure(index, item, error, self.writer_spec), offset)
                failure = _failure(index, item, error)
                if not self.ignore_errors:
                    return stop(failure, offset)
                result.skipped.append(failure)
                continue
            rows += count
        result.rows = rows
        result.items = batch.count
        # The last chunk files, and any still being written on the helper thread, are
        # flushed by the parent (Dataset.sync_receipt) while this worker goes on with its
        # next batch; the commit waits for them, and checks they were written whole.
        # sync=True (a batch run again because a chunk file of its first run was found
        # short): wait for every file here, so a write that fails says why.
        try:
            result.receipt = writer.finish(sync=self.sync)
        except OSError as error:
            failure = storage_failure(batch.position_of(0), None, error, self.writer_spec)
            failure.at_finish = batch.count
            return stop(failure, batch.count)
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


# errnos only a write can get: an input being read never fails with these
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
)


def is_storage_error(error: BaseException, spec: dict) -> bool:
    """Did the dataset's storage refuse a write (rather than the input, or the user's
    function, fail)? An OSError whose errno only writes get, or which names a file of the
    dataset, or which was raised in the storage layer's code."""
    if not isinstance(error, OSError):
        return False
    if error.errno in WRITE_ERRNOS:
        return True
    filename, _ = locate_storage_error(error, spec)
    if filename:
        return True
    return any(_is_storage_frame(frame) for frame, _ in _frames(error))


def locate_storage_error(error: BaseException, spec: dict) -> tuple[str, str]:
    """(the dataset file a failed write was writing, the tensor it belongs to), either
    "" where unknown: the OSError's own filename (or its cause's), else the path the
    storage layer's frame was writing (its traceback); the tensor from the chunk file's
    folder (`chunks/<tensor id>/`), else from the writer frame that was flushing it."""
    root = str(spec.get("url", ""))
    ids = {str(meta.get("id")): name for name, meta in spec.get("tensors", {}).items()}
    filename = ""
    seen: BaseException | None = error
    while seen is not None and not filename:
        name = getattr(seen, "filename", None)
        if isinstance(name, (str, bytes, os.PathLike)):
            filename = os.fsdecode(name)
        seen = seen.__cause__
    tensor = ""
    for frame, _ in _frames(error):
        local = frame.f_locals
        if not filename and _is_storage_frame(frame):
            path = getattr(local.get("self"), "path", None) or local.get("path")
            if isinstance(path, str):
                filename = path
        buf = local.get("buf")
        if not tensor and frame.f_code.co_name == "_flush" and hasattr(buf, "name"):
            tensor = str(buf.name)
    if filename and root and not filename.startswith(root) and "chunks/" not in filename:
        return "", tensor  # some other file: not the dataset's
    parts = filename.replace(os.sep, "/").split("/")
    for position, part in enumerate(parts[:-1]):
        if part == "chunks" and parts[position + 1] in ids:
            tensor = ids[parts[position + 1]]
    return filename, tensor


def storage_failure(index: int, item: Any, error: OSError, spec: dict) -> ItemFailure:
    filename, tensor = locate_storage_error(error, spec)
    failure = _failure(index, item, error)
    failure.kind = "storage"
    failure.filename, failure.tensor = filename, tensor
    if item is None:
        failure.sample_repr = ""
    return failure


def _frames(error: BaseException):
    return traceback.walk_tb(error.__traceback__)


_STORAGE_MODULES = ("storage.py", "storage_fsspec.py", "syncqueue.py")


def _is_storage_frame(frame: Any) -> bool:
    """A frame of the storage layer's code (format/storage*.py, format/syncqueue.py)."""
    folder, _, module = frame.f_code.co_filename.replace(os.sep, "/").rpartition("/")
    return folder.endswith("slicewise/format") and module in _STORAGE_MODULES


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
