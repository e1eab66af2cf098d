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
    small enough near the end that every worker gets a share of the tail.

    With `chunk_bytes` (datasets on object stores, where every chunk object costs a PUT
    whatever its size, and each batch writes its own chunks: a tiny one per small tensor
    too), a batch also fills whole chunks of that size in its
    heaviest tensor, at least MIN_CHUNKS of them (a batch's first chunks then upload
    while its last is filled): the bytes each input adds to each tensor are learnt from
    the receipts (`observe_receipt`), and a batch gets a whole number of chunks' worth of
    inputs, a little under (so its last chunk is not a sliver past the target). Near the
    end a batch holds at most `remaining / workers` inputs (every worker gets a share),
    but never less than a chunk's worth split among the workers, and leaves no smaller
    sliver behind it. Before the first receipt, batches are sized by time alone."""

    MAX_ITEMS = 8192
    # Each batch ends in its own chunk files (a write and an fsync each): never split the
    # tail into batches shorter than this much work.
    MIN_BATCH_SECONDS = 0.02
    # On a cluster each batch is also a task whose round trip costs milliseconds (Dask:
    # 10.6 ms from submit to result on this 2-core VM, against 0.3 ms for a process
    # pool's): its tail batches hold at least this much work
    CLUSTER_MIN_BATCH_SECONDS = 0.1
    # chunk_bytes: a batch fills at least this many chunks (measured on moto, seed 000:
    # 2 beat 1 and 3, BENCHMARKS.md "cluster"), aiming this far under a whole number
    CHUNK_MARGIN = 0.05
    MIN_CHUNKS = 2

    def __init__(self, workers, length, first, checkpoint_interval, batch_seconds,
                 chunk_bytes: int | None = None, cluster: bool = False):
        self.workers = workers
        self.min_batch_seconds = (
            self.CLUSTER_MIN_BATCH_SECONDS if cluster else self.MIN_BATCH_SECONDS
        )
        self.length = length
        self.checkpoint_interval = checkpoint_interval
        self.batch_seconds = batch_seconds
        self.chunk_bytes = int(chunk_bytes) if chunk_bytes else None
        self.seconds_per_item: float | None = None
        self._inputs_seen = 0  # inputs of the receipts observed (observe_receipt)
        self._tensor_bytes: dict[str, int] = {}  # their chunk bytes, per tensor
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

    def observe_receipt(self, items: int, receipt: dict | None) -> None:
        """Learn the bytes per input of each tensor from a batch's receipt (its chunk
        entries' nbytes), `items` the inputs the batch ran. Used with `chunk_bytes`."""
        if self.chunk_bytes is None or items <= 0 or not receipt:
            return
        self._inputs_seen += items
        for name, tensor in receipt.get("tensors", {}).items():
            written = sum(int(entry.get("nbytes", 0)) for entry in tensor.get("chunks", ()))
            self._tensor_bytes[name] = self._tensor_bytes.get(name, 0) + written

    def chunk_inputs(self) -> float | None:
        """Inputs that fill one chunk of the heaviest tensor (None: not known yet)."""
        if self.chunk_bytes is None or not self._inputs_seen or not self._tensor_bytes:
            return None
        heaviest = max(self._tensor_bytes.values()) / self._inputs_seen
        if heaviest <= 0:
            return None
        return self.chunk_bytes / heaviest

    def next_size(self, position: int) -> int:
        if self.seconds_per_item is None:
            size = self.initial
        else:
            size = int(self.batch_seconds / max(self.seconds_per_item, 1e-7))
        per_chunk = self.chunk_inputs()
        if per_chunk is not None:  # whole chunks, a little under
            chunks = max(self.MIN_CHUNKS, int(size / per_chunk))
            size = max(1, int((chunks - self.CHUNK_MARGIN) * per_chunk))
        if self.length is not None:
            remaining = self.length - position
            tail_share = math.ceil(remaining / (2 * self.workers))
            if self.seconds_per_item is not None:
                tail_share = max(tail_share, int(self.min_batch_seconds / self.seconds_per_item))
            if per_chunk is not None:
                tail_share = max(tail_share, math.ceil(remaining / self.workers),
                                 math.ceil(per_chunk / self.workers))
                if remaining - tail_share < per_chunk / self.workers:
                    tail_share = remaining  # no sliver of a batch after this one
            size = min(size, max(1, tail_share))
        if self.checkpoint_interval:  # batches end on checkpoint boundaries
            interval = self.checkpoint_interval
            size = min(size, (position // interval + 1) * interval - position)
        return max(1, min(size, self.MAX_ITEMS))
