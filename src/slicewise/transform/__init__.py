"""compute, compose, eval: a user's function over many inputs, straight into a dataset.

    @sw.compute
    def file_to_ds(path, sample_out, class_names): sample_out.append({...})

    file_to_ds(class_names=names).eval(files, ds, num_workers=2)      pipeline.py
      │
      ▼  run.py (parent)
    target checked, inputs opened (prepare.py), resume point found   checkpoint.py
      (an unfinished eval of the same inputs in the log, its rows still where it wrote
       them; else ResumeError, or resume=False to start over)
      │ batches of input positions, sized by time, made lazily   BatchSizer (batches.py)
      ▼
    engine Pool.imap_unordered(BatchRunner, batches)                     engine/
      (scheduler: serial | threaded | processed: the warm default pool | dask | ray)
      │ in a worker (worker.py), for each input of the batch:
      │   sample_out = SampleOut()            a fresh buffer per input    sample_out.py
      │   pipeline: stage k+1 once per row of stage k
      │   DatasetWriter.append_columns(rows)  full buffers -> chunk files   format/
      │ BatchResult: receipt (chunks written, rows) + skipped inputs + figures
      │   (its last chunk files unsynced: the parent flushes them at once, on helper
      │    threads, while the workers go on; the commit waits for those flushes)
      ▼
    ReceiptOrder: results back in input order (batches.py; only the parent writes metadata)
      │ every checkpoint_interval inputs: sink.checkpoint(meta=progress)  checkpoint.py
      ▼
    sink.finish(meta=done): one atomic version  ──►  EvalReport (report.py, with the run's
                                                     timeline: engine/timeline.py)
      appending (ds_out given): add_receipts + commit, checkpoints are versions too
      in place (ds_out=None): the written tensors' contents replaced; checkpoints are
        staged, not versions (inplace.py, format/staged.py)

A failure anywhere before the commit leaves the dataset as it was (or at its last
checkpoint; in place, always as it was); the chunk files written so far are unreferenced
until `sw.gc`. A storage error (ENOSPC...) is an EvalStorageError, never skipped.

Modules:
    pipeline.py    compute, compose: ComputeFunction and Pipeline (eval's signature)
    run.py         run_eval, the parent side: resume, batches, receipts, commits
    prepare.py     what run_eval settles first: backend, target and input checks, the pool
    inputs.py      what data_in may be: InputSource payloads, unpack, InputDigest
    batches.py     BatchSizer (inputs per batch, by time; on object stores whole chunks)
                   and ReceiptOrder (input order)
    worker.py      BatchRunner (a batch in a worker), ProbeRunner, BatchResult
    sample_out.py  SampleOut: a fresh buffer per input
    checkpoint.py  AppendSink, the checkpoint meta and resume records, find_resume_point,
                   resumable_versions (what gc keeps)
    inplace.py     InPlaceSink: eval(ds) / eval(ds, None)
    failures.py    the engine's failures as eval reads them; EvalStorageError's making
    report.py      EvalReport, SkippedInput, WorkerFigures
    errors.py      Deep Lake 3's transform errors, ResumeError, EvalStorageError
    ingest.py      ingest_folder (`slicewise ingest`) on top of this
"""

from slicewise.transform.errors import (
    AllSamplesSkippedError,
    ComposeError,
    EvalStorageError,
    InvalidInputDataError,
    InvalidOutputDatasetError,
    ResumeError,
    TensorMismatchError,
    TransformError,
    UnsupportedSchedulerError,
)
from slicewise.transform.pipeline import ComputeFunction, Pipeline, compose, compute
from slicewise.transform.report import EvalReport, SkippedInput, WorkerFigures
from slicewise.transform.sample_out import SampleOut

__all__ = [
    "AllSamplesSkippedError",
    "ComposeError",
    "ComputeFunction",
    "EvalReport",
    "EvalStorageError",
    "InvalidInputDataError",
    "InvalidOutputDatasetError",
    "Pipeline",
    "ResumeError",
    "SampleOut",
    "SkippedInput",
    "TensorMismatchError",
    "TransformError",
    "UnsupportedSchedulerError",
    "WorkerFigures",
    "compose",
    "compute",
]
