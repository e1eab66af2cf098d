"""The parent's batch bookkeeping for eval: how many inputs the next batch gets
(BatchSizer), and results put back in input order (ReceiptOrder)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from slicewise.transform.worker import Batch, BatchResult


class ReceiptOrder:
    """Batch results arrive in any order; the dataset gets them in input order. Holds the
    results that finished ahead of an earlier, slower batch."""

    def __init__(self, first_position: int):
        self._next = first_position
        self._waiting: dict[int, tuple[Batch, BatchResult]] = {}

    def add(self, batch: Batch, result: BatchResult) -> None:
        self._waiting[batch.start] = (batch, result)

    def pop_ready(self) -> Iterator[tuple[Batch, BatchResult]]:
        while self._next in self._waiting:
            batch, result = self._waiting.pop(self._next)
            self._next = batch.start + batch.count
            yield batch, result

    def waiting(self) -> int:
        return len(self._waiting)


class BatchSizer:
    """How many inputs the next batch gets: aimed at `batch_seconds` of work, measured
    from finished batches (no static split: workers pull batches as they free up), and
    small enough near the end that every worker gets a share of the tail."""

    MAX_ITEMS = 8192
    # Each batch ends in its own chunk files (a write and an fsync each): never split the
    # tail into batches shorter than this much work.
    MIN_BATCH_SECONDS = 0.02

    def __init__(self, workers, length, first, checkpoint_interval, batch_seconds):
        self.workers = workers
        self.length = length
        self.checkpoint_interval = checkpoint_interval
        self.batch_seconds = batch_seconds
        self.seconds_per_item: float | None = None
        if length is None:
            self.initial = 16
        else:
            self.initial = max(1, min(256, (length - first) // (4 * workers)))

    def observe(self, items: int, busy_s: float) -> None:
        if items <= 0 or busy_s <= 0:
            return
        measured = busy_s / items
        previous = self.seconds_per_item
        self.seconds_per_item = measured if previous is None else 0.5 * previous + 0.5 * measured

    def next_size(self, position: int) -> int:
        if self.seconds_per_item is None:
            size = self.initial
        else:
            size = int(self.batch_seconds / max(self.seconds_per_item, 1e-7))
        if self.length is not None:
            remaining = self.length - position
            tail_share = math.ceil(remaining / (2 * self.workers))
            if self.seconds_per_item is not None:
                tail_share = max(tail_share, int(self.MIN_BATCH_SECONDS / self.seconds_per_item))
            size = min(size, max(1, tail_share))
        if self.checkpoint_interval:  # batches end on checkpoint boundaries
            interval = self.checkpoint_interval
            size = min(size, (position // interval + 1) * interval - position)
        return max(1, min(size, self.MAX_ITEMS))
