"""Batch sizes by time, not by count.

The first batches hold one item each, so the first results come back fast and measure the
work. From then on a batch aims at `TARGET_SECONDS` of work: long enough that the ~0.1 ms a
batch costs in messages is noise, short enough that no worker sits idle at the end while
another finishes a long batch. When the input's length is known, a batch never takes more
than 1/(2*workers) of what is left (unless that is under TAIL_SECONDS of work), so the last
batches shrink and every worker stays busy to the end.

A batch's fixed cost is ~0.1 ms on a local pool but a task round trip on a cluster (1-10
ms on Dask or Ray, more across machines). Cluster backends report it (`observe_overhead`);
a batch then aims at OVERHEAD_FACTOR times that cost at least, and the tail stops
shrinking below one round trip of work: splitting work smaller than the cost of a task
only adds tasks.

On a cluster a call's single-item first batches cost a whole round trip before the rest
can be sized (10-16 ms on a loaded 2-core Dask, often more than the work). Cluster pools
therefore remember what earlier calls of the same function measured (`SizerMemory`, keyed
by the cloudpickled function's token): a call of a function the pool has run before
starts from that per-item time and the pool's round trip, and its first batches are sized
by time at once (still bounded by the tail rule above). A function the pool has not run
yet would start with single items, as everywhere, costing two sequential round trips
(measure, then the rest); instead its first batches take their share of the input
(remaining / workers, at most FIRST_MAX_ITEMS) with a time budget (`first_budget`): the
task runs them in growing windows and stops after FIRST_BUDGET_SECONDS, handing back a
prefix; the scheduler runs the rest in batches sized by what the prefix measured. Trivial
items then take one round trip; a slow function's first task still returns after about
one item.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

TARGET_SECONDS = 0.025
TAIL_SECONDS = 0.002
MAX_BATCH = 250_000
STRIDE_BELOW_SECONDS = 5e-6
TINY_ITEM_STRIDE = 64
OVERHEAD_FACTOR = 4  # a batch's work is at least this many times its fixed cost
FIRST_BUDGET_SECONDS = 0.05  # a budgeted first task on a cluster stops after this
FIRST_MAX_ITEMS = 8192  # and holds at most this many items


class BatchSizer:
    """Per-call batch sizing: `observe()` what batches cost, ask `next_size()` for the next."""

    def __init__(self, workers: int, chunksize: int | str = "auto") -> None:
        if chunksize != "auto" and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be 'auto' or a positive int, got {chunksize!r}")
        self.workers = max(1, workers)
        self.fixed = None if chunksize == "auto" else int(chunksize)
        self.seconds_per_item: float | None = None
        self.overhead = 0.0  # seconds a batch costs beyond its work (cluster round trips)
        self.budgeted = False  # cluster pools: first batches with a time budget (above)
        self._budgeted_out = 0  # budgeted first batches handed out so far

    def observe_overhead(self, seconds: float) -> None:
        """A batch took `seconds` longer (wall clock, sent to answered) than its work."""
        if seconds >= 0:
            self.overhead = seconds if not self.overhead else 0.5 * (self.overhead + seconds)

    def start_from(self, earlier: BatchSizer) -> None:
        """Start from what an earlier call measured (its per-item time and batch overhead)
        instead of from nothing; this call's own measurements then take over."""
        if self.seconds_per_item is None and earlier.seconds_per_item is not None:
            self.seconds_per_item = earlier.seconds_per_item
        if not self.overhead and earlier.overhead:
            self.overhead = earlier.overhead

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0 or seconds < 0:
            return
        sample = seconds / items
        if self.seconds_per_item is None:
            self.seconds_per_item = sample
        else:  # smooth, but follow a change in the work within a few batches
            self.seconds_per_item = 0.5 * self.seconds_per_item + 0.5 * sample

    def first_budget(self, items: int) -> float | None:
        """The time budget of a batch of `items` sent now: FIRST_BUDGET_SECONDS while
        nothing is measured (a budgeted first batch), else None (run it whole)."""
        if self.budgeted and self.fixed is None and self.seconds_per_item is None and items > 1:
            return FIRST_BUDGET_SECONDS
        return None

    def progress_stride(self) -> int:
        """How often a worker should record which item it is on: every item, unless items
        take so little time (under STRIDE_BELOW_SECONDS) that the record costs more."""
        if self.seconds_per_item is None or self.seconds_per_item >= STRIDE_BELOW_SECONDS:
            return 1
        return TINY_ITEM_STRIDE

    def expected_seconds(self, items: int) -> float | None:
        if self.seconds_per_item is None:
            return None
        return items * self.seconds_per_item

    def next_size(self, remaining: int | None) -> int:
        """How many items the next batch should take; `remaining` is how many items are
        left to hand out when the input's length is known, else None."""
        if self.fixed is not None:
            return self.fixed
        if self.seconds_per_item is None:
            if self.budgeted and remaining:
                # each worker's equal share of the input (the last ones split what is left)
                shares = max(1, self.workers - self._budgeted_out)
                self._budgeted_out += 1
                return max(1, min(math.ceil(remaining / shares), FIRST_MAX_ITEMS))
            return 1
        per_item = max(self.seconds_per_item, 1e-9)
        size = int(max(TARGET_SECONDS, OVERHEAD_FACTOR * self.overhead) / per_item)
        if remaining is not None:
            # shrink toward the end, but never below TAIL_SECONDS of work (or one batch's
            # fixed cost): a batch that short cannot unbalance the workers, and more
            # batches only add messages
            floor = max(TAIL_SECONDS, self.overhead)
            tail = max(math.ceil(remaining / (2 * self.workers)), int(floor / per_item))
            size = min(size, tail)
        return max(1, min(size, MAX_BATCH))


class SizerMemory:
    """A cluster pool's memory of what its calls measured, so the next call of the same
    function skips the single-item first batches (module docstring). `token` identifies
    the function by its cloudpickled bytes: the same code with the same captured values.
    At most `size` functions are remembered (the least recently called is forgotten).
    Thread-safe: calls are prepared in the callers' threads."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._sizers: OrderedDict[bytes, BatchSizer] = OrderedDict()
        self._lock = threading.Lock()

    def seed(self, token: bytes, sizer: BatchSizer) -> None:
        """Start `sizer` (a new call's) from the last call of the same function, and
        remember it in that call's place: it holds the newest measurements as the call
        runs. A fixed chunksize stays fixed."""
        with self._lock:
            earlier = self._sizers.pop(token, None)
            self._sizers[token] = sizer
            while len(self._sizers) > self._size:
                self._sizers.popitem(last=False)
        if earlier is not None:
            sizer.start_from(earlier)
