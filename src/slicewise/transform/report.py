"""The report an eval returns: what was written, what was skipped and why, how fast."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SkippedInput:
    """An input that ignore_errors=True skipped: its global index, why, and a short repr."""

    index: int
    reason: str
    kind: str = "exception"  # "exception" | "worker_lost" | "timeout" | ...
    sample: str = ""


@dataclass
class WorkerFigures:
    worker: str
    batches: int = 0
    inputs: int = 0
    rows: int = 0
    busy_s: float = 0.0

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class EvalReport:
    """What `eval` did. `rows_written` counts rows this call added (not those committed by
    the checkpoints of an earlier, interrupted run it resumed).

    Returned by `eval` and `sw.ingest_folder`; `print(report)` shows `summary()`.

    Attributes:
        pipeline: the stages' names.
        scheduler: the scheduler it ran on.
        num_workers: its workers.
        inputs_total: the number of inputs, when known.
        inputs_processed: inputs this call ran.
        resumed_from: the input it resumed after (0: started from the first).
        rows_written: rows this call added.
        skipped: the inputs ignore_errors=True skipped (index, reason, kind, sample).
        seconds: wall time.
        batches: batches run.
        checkpoints: checkpoint commits made.
        version: the committed version.
        workers: per worker: batches, inputs, rows, busy seconds.
        timeline: what each worker did, batch by batch (a Timeline), or None.

    Example:
        >>> report = fn().eval(files, ds, num_workers=2)      # doctest: +SKIP
        >>> report.rows_written, len(report.skipped)          # doctest: +SKIP
        (1000, 0)
    """

    pipeline: list[str]
    scheduler: str
    num_workers: int
    inputs_total: int | None = None
    inputs_processed: int = 0
    resumed_from: int = 0
    rows_written: int = 0
    skipped: list[SkippedInput] = field(default_factory=list)
    seconds: float = 0.0
    batches: int = 0
    checkpoints: int = 0
    version: Any = None
    workers: dict[str, WorkerFigures] = field(default_factory=dict)
    # what each worker did, batch by batch (engine/timeline.py); None if not recorded
    timeline: Any = field(default=None, repr=False)

    @property
    def inputs_per_s(self) -> float:
        """Inputs processed per second of wall time (0.0 if no time passed)."""
        return self.inputs_processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        """Rows written per second of wall time (0.0 if no time passed)."""
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain, JSON-able data (without the timeline).

        Returns:
            A dict of the attributes, with `inputs_per_s`, the skipped inputs and the
            per-worker figures as dicts and `version` as a string.

        Example:
            >>> json.dumps(report.as_dict())                  # doctest: +SKIP
        """
        return {
            "pipeline": self.pipeline,
            "scheduler": self.scheduler,
            "num_workers": self.num_workers,
            "inputs_total": self.inputs_total,
            "inputs_processed": self.inputs_processed,
            "resumed_from": self.resumed_from,
            "rows_written": self.rows_written,
            "skipped": [vars(skipped) for skipped in self.skipped],
            "seconds": self.seconds,
            "inputs_per_s": self.inputs_per_s,
            "batches": self.batches,
            "checkpoints": self.checkpoints,
            "version": str(self.version) if self.version is not None else None,
            "workers": {
                name: {**vars(figures), "inputs_per_s": figures.inputs_per_s}
                for name, figures in self.workers.items()
            },
        }

    def summary(self, max_skipped: int = 10) -> str:
        """A few lines of text: rows, inputs, speed, checkpoints, version, each worker's
        figures and the skipped inputs.

        Args:
            max_skipped: list at most this many skipped inputs.

        Returns:
            The text (also what `str(report)` gives).

        Example:
            >>> print(report.summary(max_skipped=3))          # doctest: +SKIP
        """
        lines = [
            f"eval {' -> '.join(self.pipeline)}: {self.rows_written} rows from "
            f"{self.inputs_processed} inputs in {self.seconds:.2f} s "
            f"({self.inputs_per_s:,.0f} inputs/s), {self.scheduler} x {self.num_workers}, "
            f"{self.batches} batches"
        ]
        if self.resumed_from:
            lines.append(f"  resumed after input {self.resumed_from} (last checkpoint)")
        if self.checkpoints:
            lines.append(f"  {self.checkpoints} checkpoint commit(s)")
        if self.version is not None:
            lines.append(f"  committed version {self.version}")
        for figures in sorted(self.workers.values(), key=lambda figures: figures.worker):
            lines.append(
                f"  {figures.worker}: {figures.inputs} inputs, {figures.rows} rows, "
                f"{figures.batches} batches, busy {figures.busy_s:.2f} s"
            )
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} input(s):")
            for skipped in self.skipped[:max_skipped]:
                lines.append(f"    [{skipped.index}] {skipped.sample}: {skipped.reason}")
            if len(self.skipped) > max_skipped:
                lines.append(f"    ... and {len(self.skipped) - max_skipped} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"EvalReport({' -> '.join(self.pipeline)}: {self.rows_written} rows from "
                f"{self.inputs_processed} inputs in {self.seconds:.2f} s, "
                f"{len(self.skipped)} skipped, version={self.version!r})")

    def _repr_html_(self) -> str:
        """Jupyter's view: the figures, the workers, skipped inputs and the timeline."""
        from slicewise.integrations.html import eval_report_html

        return eval_report_html(self)

    def save_timeline(self, path: str | os.PathLike) -> Path:
        """Write the run's timeline (a Gantt of batches per worker, throughput, idle
        gaps, retries and failures) to `path`: .html (self-contained) or .png.

        Args:
            path: a path ending in .html (or .htm) or .png.

        Returns:
            The path written, as a `pathlib.Path`.

        Raises:
            ValueError: no timeline was recorded, or the path is neither .html nor .png.

        Example:
            >>> report.save_timeline("eval.html")             # doctest: +SKIP
        """
        if self.timeline is None:
            raise ValueError("this eval recorded no timeline")
        return self.timeline.save(path)
