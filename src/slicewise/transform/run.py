"""`eval`, the parent side: inputs in, one atomic commit out.

    run_eval(pipeline, data_in, ds_out)
      target = ds_out (or data_in, in place); checked before anything runs
      sink = AppendSink(ds_out) | InPlaceSink(data_in)   checkpoint.py, inplace.py: where
                                                         the receipts go
      source = open_source(data_in)                      inputs.py; pad_data_in=True reads
                                                         a Dataset through ds.padded(), at
                                                         the version the eval starts from
      resume = find_resume_point(sink, source)           an unfinished eval of the same
                                                         inputs in the log, its rows intact?
                                                         skip its inputs (else ResumeError;
                                                         resume=False: start over)
      pool.imap_unordered(BatchRunner, batches)          engine; batches sized by time, made
                                                         lazily, one per free worker (on
                                                         object stores, whole chunks too:
                                                         BatchSizer, from the receipts)
        └─ worker: pipeline per input -> chunk files -> BatchResult (receipt)   worker.py
      ReceiptOrder: results back in input order          only the parent touches metadata
        every checkpoint_interval inputs: sink.checkpoint(receipts, meta=progress)
          (optional; appending: a commit; in place: staged, not a version)
      batches whose chunk files a worker died writing    after its receipt (FORMAT.md
        (after handing back the receipt) run again       3.1): checked before each commit
      sink.finish(rest, meta=done)                       one atomic version
      return EvalReport

Storage errors (an OSError from writing chunk files, in a worker or in the commit: a
full disk...) are raised at once as EvalStorageError, an OSError with the errno and file
that names the tensor and input; never skipped or retried as a dead worker. A chunk file
found short after its writer's receipt (a writer that died, or its background write
failed: the parent cannot tell) runs its batch once more with every write waited for.

Failure rule: the dataset changes only by `commit`. Until then the workers' chunk files
are unreferenced, so an exception, a Ctrl-C or a kill -9 anywhere leaves `ds_out` at its
previous version (or its last checkpoint; in place, always the previous version) and the
files for `sw.gc`. The checkpoint meta is described in checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slicewise.engine.backends.base import CLUSTER_BACKENDS
from slicewise.format.manifest import find_version
from slicewise.transform.batches import BatchSizer, ReceiptOrder
from slicewise.transform.checkpoint import (
    CHECKPOINT_KEY,
    AppendSink,
    find_resume_point,
    head_progress,
)
from slicewise.transform.errors import (
    AllSamplesSkippedError,
    InvalidInputDataError,
    InvalidOutputDatasetError,
    TensorMismatchError,
    TransformError,
)
from slicewise.transform.failures import failure_exception as _failure_exception
from slicewise.transform.failures import failure_item_repr as _failure_item_repr
from slicewise.transform.failures import failure_kind as _failure_kind
from slicewise.transform.failures import failure_reason as _failure_reason
from slicewise.transform.failures import is_engine_failure as _is_engine_failure
from slicewise.transform.failures import storage_error as _storage_error
from slicewise.transform.inplace import InPlaceSink
from slicewise.transform.inputs import InputDigest, InputSource, unpack
from slicewise.transform.pipeline import Pipeline
from slicewise.transform.prepare import (
    OUT_OF_PROCESS,
    check_equal_lengths,
    choose_backend,
    open_input,
    open_pool,
    resolve_target,
    row_count,
    start_pool,
    tensor_names,
    version_of,
)
from slicewise.transform.report import EvalReport, SkippedInput, WorkerFigures
from slicewise.transform.worker import (
    Batch,
    BatchResult,
    BatchRunner,
    ItemFailure,
    ProbeRunner,
)


def run_eval(
    pipeline: Pipeline,
    data_in: Any,
    ds_out: Any,
    *,
    num_workers: int,
    scheduler: str,
    progressbar: bool,
    skip_ok: bool,
    check_lengths: bool,
    pad_data_in: bool,
    read_only_ok: bool,
    cache_size: int,
    checkpoint_interval: int,
    ignore_errors: bool,
    batch_seconds: float = 0.25,
    **unknown: Any,
) -> EvalReport:
    """Pipeline.eval's work. Its parameters have no defaults here: Pipeline.eval, the
    public signature, holds Deep Lake 3's defaults, once. `batch_seconds` is not Deep
    Lake's: the work each batch aims at (see BatchSizer)."""
    del cache_size  # Deep Lake 3's per-worker cache (MB); slicewise writers need none
    unknown.pop("verbose", None)  # Deep Lake 3 accepted it; the report says it all
    # slicewise's: resume=False starts over from the first input, never resuming an
    # unfinished eval's checkpoint (a keyword, so Deep Lake 3's signature is unchanged)
    resume = unknown.pop("resume", True)
    # slicewise's: report="run.html" / "run.png" also writes the run's timeline there
    # (every eval records it: EvalReport.timeline)
    timeline_path = unknown.pop("report", None)
    if not isinstance(resume, bool):
        raise TypeError(f"eval() resume must be True or False, got {resume!r}")
    if unknown:
        raise TypeError(f"eval() got unexpected keyword arguments {sorted(unknown)}")
    backend, workers = choose_backend(scheduler, num_workers)
    if not isinstance(checkpoint_interval, int) or checkpoint_interval < 0:
        raise ValueError(f"checkpoint_interval must be an int >= 0, got {checkpoint_interval!r}")
    target = resolve_target(data_in, ds_out, read_only_ok)
    if backend in OUT_OF_PROCESS and str(target.path).startswith("memory://"):
        raise InvalidOutputDatasetError(
            f"the output dataset {target.path!r} lives in this process's memory, where "
            "worker processes cannot write; use scheduler='threaded' or a path on disk"
        )
    if not check_lengths:
        skip_ok = True  # Deep Lake 3: no length check means tensors may be left out
    output_tensors = frozenset(tensor_names(target))
    if not output_tensors:
        raise InvalidOutputDatasetError(
            "the output dataset has no tensors; create them (ds.create_tensor) before eval"
        )
    if check_lengths:
        check_equal_lengths(target)
    if backend == "processes":  # workers start in the background while the run is set up
        start_pool(workers)
    sink = InPlaceSink(target) if ds_out is None else AppendSink(target)
    source = open_input(data_in, backend, pad_data_in)  # pinned to the version of now

    report = EvalReport(pipeline.names, scheduler, workers, inputs_total=source.length)
    run = _Run(
        pipeline=pipeline,
        target=target,
        sink=sink,
        source=source,
        report=report,
        backend=backend,
        workers=workers,
        checkpoint_interval=checkpoint_interval,
        ignore_errors=ignore_errors,
        progressbar=progressbar,
        batch_seconds=batch_seconds,
        runner_tensors=(output_tensors, frozenset() if skip_ok else output_tensors),
        resume=resume,
        timeline_path=timeline_path,
    )
    try:
        return run.execute()
    except (TransformError, KeyboardInterrupt):
        raise
    except OSError as error:  # the parent's writes: a commit, a flush, a staged checkpoint
        raise _storage_error(
            f"committing the eval of {' -> '.join(pipeline.names)}", error, run._left_at(),
        ) from error
    except Exception as error:  # Deep Lake 3: every other problem is a TransformError
        raise TransformError(
            f"eval of {' -> '.join(pipeline.names)} failed: {type(error).__name__}: {error}"
        ) from error


def _object_store_chunk_bytes(spec: dict) -> int | None:
    """The dataset's chunk size when it lives on an object store (s3://, gs://, ...),
    where every chunk object costs a request (a PUT) whatever
    its size: batches are then sized to fill whole chunks (BatchSizer). None elsewhere
    (local disks, memory://): batches are sized by time alone."""
    from slicewise.format.writer import OBJECT_STORE_PROTOCOLS

    url = str(spec.get("url", ""))
    protocol = url.split("://", 1)[0].lower() if "://" in url else ""
    if protocol not in OBJECT_STORE_PROTOCOLS:
        return None
    target = spec.get("chunk_target_bytes")
    return int(target) if target else None


def _spec_for(target: Any, in_place: bool) -> dict:
    """The workers' writer spec. In place, the written tensors get new contents, which
    may have another number of dimensions than the rows they replace."""
    spec = target.writer_spec()
    if in_place:
        spec.pop("ndims", None)
    return spec


@dataclass
class _Run:
    """One eval call's state. Only the parent thread touches the dataset."""

    pipeline: Pipeline
    target: Any
    sink: Any  # AppendSink | InPlaceSink
    source: InputSource
    report: EvalReport
    backend: str
    workers: int
    checkpoint_interval: int
    ignore_errors: bool
    progressbar: bool
    batch_seconds: float
    runner_tensors: tuple[frozenset[str], frozenset[str]]
    resume: bool = True
    timeline_path: Any = None

    def execute(self) -> EvalReport:
        started = time.perf_counter()
        target, report = self.target, self.report
        resume, self.record = find_resume_point(self.sink, self.source, self.pipeline,
                                                self.resume)
        self.first_input = resume.inputs_done if resume else 0
        self.rows_before = resume.rows_before if resume else row_count(target)
        self.rows_committed_earlier = resume.rows_written if resume else 0
        report.resumed_from = self.first_input
        self.digest = resume.digest if resume else None
        if self.digest is None and self.checkpoint_interval:
            self.digest = InputDigest(self.source.identity, self.pipeline.names)
        self.committed_position = self.first_input  # inputs whose results are in order
        self.checkpoint_position = self.first_input  # inputs the dataset holds (committed)
        self.checkpoint_digest = resume.digest.hexdigest() if resume else None
        self.pending_results: list[BatchResult] = []
        self.pending_batches: dict[int, Batch] = {}  # batch_id -> Batch of pending_results
        self._check_storage: Any = None  # ds_out's storage, to check unsynced chunk files
        self._whole: set[int] = set()  # batch ids of pending results found written whole
        self.retried: dict[int, Batch] = {}  # batch_id -> a lost batch's rerun, killers out
        self.killers: dict[int, list] = {}  # batch_id -> a lost batch's probed killers
        self.digest_at: dict[int, str] = {}
        self.inflight: dict[int, Batch] = {}  # handed to the engine, result not seen yet
        self.stopping = False  # a failure ends the eval: hand out no more batches
        self.handed_out = self.first_input  # inputs put into batches so far
        self.spans: dict[int, tuple[int, int]] = {}  # batch_id -> (first input, count)
        self.batch_skips: dict[int, int] = {}  # batch_id -> inputs it skipped
        runner = BatchRunner(
            pipeline=self.pipeline,
            writer_spec=_spec_for(target, self.sink.in_place),
            run_id=uuid.uuid4().hex[:12],
            output_tensors=self.runner_tensors[0],
            required_tensors=self.runner_tensors[1],
            ignore_errors=self.ignore_errors,
        )
        self.sizer = BatchSizer(
            self.workers, self.source.length, self.first_input,
            self.checkpoint_interval, self.batch_seconds,
            chunk_bytes=_object_store_chunk_bytes(runner.writer_spec),
            cluster=self.backend in CLUSTER_BACKENDS,
        )
        self.runner_spec = runner.writer_spec
        progress = _progress_bar(self.progressbar, self.source.length, self.first_input,
                                 report.pipeline)
        lost: list[tuple[Batch, Any]] = []
        order = ReceiptOrder(self.first_input)
        try:
            with open_pool(self.backend, self.workers) as pool:
                results = pool.imap_unordered(
                    runner, self._batches(), chunksize=1, on_error="collect", report=True
                )
                fatal: list[tuple[int, Batch, Any]] = []
                try:
                    for outcome in results:
                        failed = self._take(outcome, order, lost, progress, (pool, runner))
                        if failed is not None:
                            fatal.append(failed)
                            self.stopping = True  # no new batches from here on
                        if fatal and self._earlier_batches_done(
                            min(position for position, _, _ in fatal)
                        ):
                            break
                finally:
                    # a failure ends the eval: let the batches still running finish
                    # first, so no worker writes into the dataset after eval returns
                    failing = bool(fatal) or sys.exc_info()[0] not in (None, KeyboardInterrupt)
                    _close_iterator(results, wait=failing)
                    report.timeline = self._timeline(results)
                if fatal:
                    self._raise_first_failure(pool, min(fatal, key=lambda entry: entry[0]))
                for batch, failure in lost:
                    self._resolve_lost_batch(pool, runner, batch, failure, order, progress)
                self._drain(order)
                self._rewrite_unfinished(pool, runner)
        finally:
            progress.close()
        self._drain(order)
        if order.waiting():
            raise TransformError("internal error: batch results left unordered at the end")
        total_inputs = self.committed_position - self.first_input
        if total_inputs and len(report.skipped) == total_inputs and report.rows_written == 0:
            raise AllSamplesSkippedError(
                f"every one of the {total_inputs} inputs failed and was skipped; nothing was "
                f"written. First failure: [{report.skipped[0].index}] {report.skipped[0].reason}",
                index=report.skipped[0].index,
            )
        self._commit(state="done")
        report.seconds = time.perf_counter() - started
        if self.timeline_path is not None and report.timeline is not None:
            report.timeline.save(self.timeline_path)
        if report.skipped:
            print(report.summary(), file=sys.stderr)
        return report

    # -- the batch stream (runs where the engine pulls tasks) -------------------------
    def _batches(self) -> Iterator[Batch]:
        payloads = self.source.payloads(self.first_input, self.sizer.next_size)
        batch_id = 0
        while not self.stopping:
            try:
                start, count, payload = next(payloads)
            except StopIteration:
                return
            except Exception as error:  # a generator or __getitem__ of data_in raised
                raise InvalidInputDataError(
                    f"reading data_in failed after input {self.handed_out - 1}: "
                    f"{type(error).__name__}: {error}",
                    index=self.handed_out,
                ) from error
            self.handed_out = start + count
            if self.digest is not None:
                self.source.digest_payload(self.digest, payload)
                self.digest_at[start + count] = self.digest.hexdigest()
            batch = Batch(batch_id, start, count, payload)
            self.inflight[batch_id] = batch
            self.spans[batch_id] = (start, count)
            batch_id += 1
            yield batch

    # -- results, in whatever order workers finish -------------------------------------
    def _take(self, outcome: Any, order: ReceiptOrder, lost: list, progress: Any,
              engine: tuple[Any, BatchRunner] | None = None):
        """Account for one finished batch. Returns (first input index it may concern,
        batch, failure) when the eval must stop: the caller waits for the batches before
        it (one of them may hold an earlier failure, and the error must name the first
        failing input, as a serial run would) and then raises. With `engine` (the pool
        and the runner), a batch whose worker died is probed at once (_rerun_lost_batch):
        a death that no input of it causes again was an outside event, and the batch's
        second run is taken instead."""
        if _is_engine_failure(outcome) and engine is not None and not self.ignore_errors:
            rerun = self._rerun_lost_batch(engine, outcome)
            if rerun is not None:
                return self._take(rerun, order, lost, progress)
        if _is_engine_failure(outcome):
            batch = self.inflight.pop(outcome.index)
            if _failure_kind(outcome) == "exception":  # not the user's function: ours failed
                cause = _failure_exception(outcome)
                if isinstance(cause, OSError):  # e.g. opening the dataset's storage
                    raise _storage_error(
                        f"writing inputs {_input_range(batch)}", cause, self._left_at(),
                        index=batch.position_of(0), traceback_text=outcome.traceback,
                    ) from cause
                raise TransformError(
                    f"writing inputs {batch.start}..{batch.start + batch.count - 1} failed: "
                    f"{_failure_reason(outcome)}\n\nworker traceback:\n{outcome.traceback}",
                    index=batch.start,
                ) from _failure_exception(outcome)
            if not self.ignore_errors:
                return batch.start, batch, outcome
            lost.append((batch, outcome))
            return None
        result: BatchResult = outcome
        batch = self.inflight.pop(result.batch_id)
        if result.failure is not None:
            return result.failure.index, batch, result.failure
        if result.receipt is not None:  # flush its last chunks while workers go on
            self.target.sync_receipt(result.receipt)
        self.sizer.observe(result.items, result.busy_s)
        self.sizer.observe_receipt(result.items, result.receipt)
        progress.update(batch.count)
        order.add(batch, result)
        self._commit_ready(order)
        return None

    def _earlier_batches_done(self, position: int) -> bool:
        return all(batch.start >= position for batch in list(self.inflight.values()))

    def _raise_first_failure(self, pool: Any, entry: tuple[int, Batch, Any]) -> None:
        _, batch, failure = entry
        if isinstance(failure, ItemFailure):
            self._raise_item_failure(batch, failure)
        self._raise_for_lost_batch(pool, batch, failure)

    def _drain(self, order: ReceiptOrder) -> None:
        for batch, result in order.pop_ready():
            self.pending_results.append(result)
            self.pending_batches[result.batch_id] = self.retried.pop(result.batch_id, batch)
            self.committed_position = batch.start + batch.count
            self._account(result)

    def _commit_ready(self, order: ReceiptOrder) -> None:
        self._drain(order)
        position, length = self.committed_position, self.source.length
        if (
            self.checkpoint_interval
            and position - self.checkpoint_position >= self.checkpoint_interval
            and (length is None or position < length)  # the final commit comes next anyway
        ):
            self._commit(state="checkpoint")

    def _account(self, result: BatchResult) -> None:
        report = self.report
        report.batches += 1
        report.inputs_processed += result.items
        report.rows_written += result.rows
        for failure in result.skipped:
            report.skipped.append(_skipped(failure))
        if result.skipped:
            self.batch_skips[result.batch_id] = len(result.skipped)
        figures = report.workers.setdefault(result.worker, WorkerFigures(result.worker))
        figures.batches += 1
        figures.inputs += result.items
        figures.rows += result.rows
        figures.busy_s += result.busy_s

    def _commit(self, state: str) -> None:
        receipts = [result.receipt for result in self.pending_results if result.receipt]
        position = self.committed_position
        nothing_new = not receipts and position == self.checkpoint_position
        if state == "checkpoint" and nothing_new:
            return
        if state == "done" and nothing_new and position == self.first_input == 0:
            return  # empty input: a no-op, no version
        rows_so_far = self.rows_committed_earlier + self.report.rows_written
        meta = {
            CHECKPOINT_KEY: {
                "state": state,
                "pipeline": self.pipeline.names,
                "inputs_done": position,
                "input_digest": self._digest_of_prefix(position),
                "rows_before": self.rows_before,
                "rows_written": rows_so_far,
                "skipped": len(self.report.skipped),
            }
        }
        if state == "checkpoint" and meta[CHECKPOINT_KEY]["input_digest"] is None:
            return  # cannot prove a later run's inputs match: no resumable checkpoint
        if not self.sink.in_place:  # which eval this is, and where its rows lie
            laid_out = find_version(self.target.storage, self.target.version) \
                if self.record.chunks else None
            meta[CHECKPOINT_KEY].update(self.record.meta(receipts, laid_out))
        unfinished = self._unfinished_results()
        if unfinished:
            if state == "checkpoint":
                return  # their batches run again after the main loop (_rewrite_unfinished)
            batch = self.pending_batches[unfinished[0].batch_id]
            raise TransformError(
                f"chunk files of inputs {_input_range(batch)} were left short by their "
                "writer, which died while writing them; nothing was published"
            )
        names = " -> ".join(self.pipeline.names)
        where = " in place" if self.sink.in_place else ""
        if state == "checkpoint":
            message = f"eval {names}{where}: checkpoint after {position} inputs"
            version = self.sink.checkpoint(receipts, message, meta)
        else:
            message = f"eval {names}{where}: {rows_so_far} rows from {position} inputs"
            version = self.sink.finish(receipts, message, meta)
        self.report.version = version if version is not None else version_of(self.target)
        if not self.sink.in_place:
            self.record.chunks = meta[CHECKPOINT_KEY]["chunks"]
        self.pending_results.clear()
        self.pending_batches.clear()
        self._whole.clear()
        self.checkpoint_digest = self._digest_of_prefix(position)
        for key in [key for key in self.digest_at if key <= position]:
            del self.digest_at[key]
        self.checkpoint_position = position
        if state == "checkpoint":
            self.report.checkpoints += 1

    def _timeline(self, results: Any) -> Any:
        """The engine's timeline of the batches (each one engine item), in inputs."""
        timeline = getattr(results, "report", None)
        if timeline is None:
            return None
        for record in timeline.records:  # engine position k is the batch with batch_id k
            batch_id = record.start
            record.start, record.size = self.spans.get(batch_id, (batch_id, record.size))
            if self.batch_skips.get(batch_id):
                record.outcome, record.failures = "failed", self.batch_skips[batch_id]
        timeline.title = f"eval {' -> '.join(self.pipeline.names)}"
        timeline.unit, timeline.backend, timeline.workers = "inputs", self.backend, self.workers
        return timeline

    # -- writers that died after their receipt -------------------------------------------
    def _unfinished_results(self) -> list[BatchResult]:
        """Pending results with a chunk file their writer did not finish: a worker hands
        back its receipt while its helper thread still writes the last chunk files, under
        a lock this waits for (FORMAT.md 3.1); a worker that dies meanwhile (the user's
        function crashing it in its next batch, the OOM killer) leaves them short. A
        result found whole stays whole: it is not looked at again."""
        from slicewise.format.storage import open_storage
        from slicewise.format.writer import unfinished_chunks

        unchecked = [result for result in self.pending_results
                     if result.receipt and result.batch_id not in self._whole]
        if not unchecked:
            return []
        spec = self.runner_spec
        if self._check_storage is None:
            self._check_storage = open_storage(spec["url"], spec.get("storage_options"))
        unfinished = []
        for result in unchecked:
            if unfinished_chunks(self._check_storage, spec, result.receipt):
                unfinished.append(result)
            else:
                self._whole.add(result.batch_id)
        return unfinished

    def _rewrite_unfinished(self, pool: Any, runner: BatchRunner) -> None:
        """Run again the batches whose chunk files a dead worker left unfinished, and put
        their new results in place of the old (whose files stay for `sw.gc`)."""
        # Which was it, a writer that died or a background write that failed (a full
        # disk)? Only the writer's process knew. The batches run again with every chunk
        # file waited for (sync=True): a storage error then comes back as itself.
        runner = dataclasses.replace(runner, sync=True)
        for _ in range(3):
            unfinished = self._unfinished_results()
            if not unfinished:
                return
            batches = [self.pending_batches[result.batch_id] for result in unfinished]
            outcomes = list(pool.imap(runner, batches, chunksize=1, on_error="collect"))
            for old, batch, outcome in zip(unfinished, batches, outcomes, strict=True):
                if _is_engine_failure(outcome):
                    cause = _failure_exception(outcome)
                    if isinstance(cause, OSError):
                        raise _storage_error(
                            f"writing inputs {_input_range(batch)}", cause, self._left_at(),
                            index=batch.position_of(0), traceback_text=outcome.traceback,
                        ) from cause
                    raise TransformError(
                        f"writing inputs {_input_range(batch)} again (a worker died while "
                        f"writing them) failed: {_failure_reason(outcome)}",
                        index=batch.position_of(0),
                    ) from _failure_exception(outcome)
                if outcome.failure is not None:
                    self._raise_item_failure(batch, outcome.failure)
                self._replace_result(old, outcome, batch)
        unfinished = self._unfinished_results()
        if unfinished:
            batch = self.pending_batches[unfinished[0].batch_id]
            raise TransformError(
                f"the chunk files of inputs {_input_range(batch)} were found short after "
                "each of 3 runs, although no worker died and no write failed; "
                f"{self._left_at()}",
                index=batch.position_of(0),
            )

    def _replace_result(self, old: BatchResult, new: BatchResult, batch: Batch) -> None:
        """`new` (from running `batch` again) takes `old`'s place, in the report too."""
        ran = {batch.position_of(offset) for offset in range(batch.count)}
        # inputs skipped before without being run again (a lost batch's killers) stay so
        new.skipped = sorted(
            [failure for failure in old.skipped if failure.index not in ran] + new.skipped,
            key=lambda failure: failure.index,
        )
        report = self.report
        report.rows_written += new.rows - old.rows
        if old.skipped or new.skipped:
            dropped = {failure.index for failure in old.skipped}
            report.skipped = [entry for entry in report.skipped if entry.index not in dropped]
            report.skipped += [_skipped(failure) for failure in new.skipped]
            report.skipped.sort(key=lambda entry: entry.index)
        new.items = old.items
        self.pending_results[self.pending_results.index(old)] = new

    def _digest_of_prefix(self, position: int) -> str | None:
        """The input digest of inputs [0, position), when this run knows it."""
        if self.digest is None:
            return None
        if position == self.checkpoint_position:
            return self.checkpoint_digest
        return self.digest_at.get(position)

    # -- failures ----------------------------------------------------------------------
    def _item_of(self, batch: Batch, index: int) -> Any:
        offset = batch.positions.index(index) if batch.positions is not None \
            else index - batch.start
        for position, item in enumerate(unpack(batch.payload)):
            if position == offset:
                return item
        return None

    def _raise_item_failure(self, batch: Batch, failure: ItemFailure) -> None:
        if failure.kind == "storage":
            self._raise_storage_failure(batch, failure)
        sample = self._item_of(batch, failure.index)
        cause = failure.exception
        error_class = type(cause) if isinstance(cause, TransformError) else TransformError
        message = (
            f"transform failed at input index {failure.index} ({failure.sample_repr}): "
            f"{failure.reason}\n\nworker traceback:\n{failure.traceback}"
        )
        try:
            error = error_class(message, index=failure.index, sample=sample)
        except TypeError:  # a TransformError subclass with its own signature
            error = TransformError(message, index=failure.index, sample=sample)
        raise error from cause

    def _raise_storage_failure(self, batch: Batch, failure: ItemFailure) -> None:
        """The dataset's storage refused a write in a worker (a full disk...): raised at
        once as itself, an EvalStorageError (an OSError with its errno and file, and a
        TransformError naming the input), never retried or skipped: it is neither the
        input's fault nor a crash."""
        cause = failure.exception
        if failure.at_finish:
            where = f"the last chunk files of inputs {_input_range(batch)}"
            sample = None
        else:
            where = f"the rows of input index {failure.index} ({failure.sample_repr})"
            sample = self._item_of(batch, failure.index)
        raise _storage_error(
            f"writing {where}", cause, self._left_at(), failure.filename, failure.tensor,
            index=failure.index, sample=sample, traceback_text=failure.traceback,
        ) from cause

    def _left_at(self) -> str:
        """Where a failure leaves the dataset, for the error's message."""
        version = version_of(self.target)
        position = getattr(self, "checkpoint_position", 0)
        if position and not self.sink.in_place:
            return (f"the dataset stays at version {version}, its checkpoint after "
                    f"{position} inputs; run the same eval again to resume")
        if position:
            return (f"the dataset stays at version {version}, as before the eval (a staged "
                    f"checkpoint holds {position} inputs; run the same eval again to resume)")
        return f"the dataset stays at version {version}, as before the eval"

    def _rerun_lost_batch(self, engine: tuple[Any, BatchRunner], outcome: Any) -> Any:
        """A batch whose worker died (on a cluster, after the engine's own retries, and
        the scheduler's second run of it): which of its inputs kills a worker on its own?
        If one does, None (the eval fails naming the first). If none does, the deaths
        were not the inputs' doing (a worker killed from outside, its machine lost): the
        batch runs once more, and that run's outcome is returned. No input is ever failed
        as a killer unless it killed a worker again alone."""
        if _failure_kind(outcome) != "worker_lost":
            return None
        pool, runner = engine
        batch = self.inflight[outcome.index]
        killers = self.killers[batch.batch_id] = self._find_killers(pool, batch)
        if killers:
            return None
        rerun = list(pool.imap(runner, [batch], chunksize=1, on_error="collect"))[0]
        if _is_engine_failure(rerun):
            return None  # lost again, and still no input to blame: the eval fails, naming none
        return rerun

    def _raise_for_lost_batch(self, pool: Any, batch: Batch, engine_failure: Any) -> None:
        # Which input killed the worker? Re-run the batch's inputs one by one (writing
        # nothing) through the engine, which isolates the exact item (already done when
        # the batch came back: _rerun_lost_batch).
        killers = self.killers.pop(batch.batch_id, None)
        if killers is None:
            killers = self._find_killers(pool, batch)
        failure = killers[0][1] if killers else engine_failure
        index = killers[0][0] if killers else None
        sample = self._item_of(batch, index) if index is not None else None
        where = f"input index {index}" if index is not None else (
            f"one of inputs {batch.start}..{batch.start + batch.count - 1} (no single input "
            "fails alone)")
        raise TransformError(
            f"transform failed at {where}: {_failure_reason(failure)}", index=index,
            sample=sample,
        ) from _failure_exception(failure)

    def _find_killers(self, pool: Any, batch: Batch) -> list[tuple[int, Any]]:
        """The inputs of `batch` that kill a worker on their own, with the engine's
        Failure for each."""
        probe = ProbeRunner(self.pipeline, self.runner_tensors[0])
        items = list(unpack(batch.payload))
        outcomes = list(pool.imap(probe, items, chunksize=1, on_error="collect"))
        killers = []
        for offset, outcome in enumerate(outcomes):
            if _is_engine_failure(outcome) and _failure_kind(outcome) != "exception":
                killers.append((batch.position_of(offset), outcome))
        return killers

    def _resolve_lost_batch(self, pool, runner, batch, engine_failure, order, progress):
        """ignore_errors=True: skip the inputs that kill a worker, run the rest again."""
        killers = self._find_killers(pool, batch)
        killer_positions = {index for index, _ in killers}  # none: a transient loss
        kept = [
            (batch.position_of(offset), item)
            for offset, item in enumerate(unpack(batch.payload))
            if batch.position_of(offset) not in killer_positions
        ]
        retry = Batch(
            batch.batch_id, batch.start, len(kept), ("items", [item for _, item in kept]),
            positions=[position for position, _ in kept],
        )
        outcomes = list(pool.imap(runner, [retry], chunksize=1, on_error="collect"))
        outcome = outcomes[0]
        self.retried[batch.batch_id] = retry  # what _rewrite_unfinished would run again
        if _is_engine_failure(outcome):
            result = BatchResult(batch.batch_id, worker="(lost)")
            result.skipped = [
                ItemFailure(position, _failure_kind(outcome), _failure_reason(outcome))
                for position, _ in kept
            ]
        else:
            result = outcome
            if result.failure is not None:
                self._raise_item_failure(retry, result.failure)
        for index, failure in killers:
            result.skipped.append(
                ItemFailure(
                    index, _failure_kind(failure), _failure_reason(failure),
                    sample_repr=_failure_item_repr(failure),
                )
            )
        result.skipped.sort(key=lambda failure: failure.index)
        result.items = batch.count
        self.inflight.pop(batch.batch_id, None)
        progress.update(batch.count)
        order.add(batch, result)
        self._commit_ready(order)


STRAGGLER_WAIT_SECONDS = 30.0  # at most this long for running batches after a failure


def _close_iterator(results: Any, wait: bool = False) -> None:
    close = getattr(results, "close", None)
    if callable(close):
        close()
    wait_idle = getattr(results, "wait_idle", None)
    if wait and callable(wait_idle):
        wait_idle(STRAGGLER_WAIT_SECONDS)


def _input_range(batch: Batch) -> str:
    return f"{batch.position_of(0)}..{batch.position_of(batch.count - 1)}"


def _skipped(failure: ItemFailure) -> SkippedInput:
    return SkippedInput(failure.index, failure.reason, failure.kind, failure.sample_repr)


def _progress_bar(enabled: bool, total: int | None, initial: int, names: list[str]):
    from slicewise.engine.progress import tqdm_class

    tqdm = tqdm_class()  # a widget in notebooks with ipywidgets, else a text bar

    # `disable` only when turned off: tqdm's TQDM_* environment variables (TQDM_DISABLE=1
    # in CI logs) apply to the arguments a caller leaves out
    off = {} if enabled else {"disable": True}
    return tqdm(total=total, initial=initial, unit="input", desc=f"eval {' -> '.join(names)}",
                dynamic_ncols=True, **off)


__all__ = [
    "CHECKPOINT_KEY",
    "BatchSizer",
    "EvalReport",
    "ReceiptOrder",
    "head_progress",
    "InvalidInputDataError",
    "TensorMismatchError",
    "run_eval",
]
