"""Arena: reusable memory that one tensor's buffered samples are read or copied into.

    file sample ──os.readv──► arena[used:used+size] ──┐   (no per-sample allocation)
    raw array  ──np.copyto──► arena[...]             ├─► chunk parts ──writev──► chunk file
    other encoded bytes (labels, jpeg from Pillow) ──┘     (references, never copied)

Why: a fresh buffer per sample (a `bytes` of a 40 KB file) is new memory each time; the
allocator hands freed blocks back to the system between chunks, so every sample costs its
pages' first-touch faults, which on a virtual machine cost more than the read and the
write together (measured: 45-210 us of system time per 48 KB sample, 23-38 us with one
reused buffer). An arena is allocated once per tensor and writer, and reused after each
chunk is written, and handed to the process's next writer when its writer finishes.

Rules that keep views into it valid:
- `take(size)` hands out the next `size` bytes, or None when the sample is too large or
  the arena is full (the caller then uses a buffer of its own).
- After a chunk is written, `reset(samples)` starts over only when every byte taken from
  the current buffer went into that chunk and no `pin()` (a writer mark, which keeps views of
  buffered samples for a rollback) holds it; otherwise the arena is *retired*: the next
  `take` allocates a new one, and the old one lives on as long as views of it do.
"""

from __future__ import annotations

import threading

# Samples larger than this are not worth an arena: their own allocation is amortised over
# many pages, and an arena must hold a whole chunk plus one such sample.
MAX_ARENA_SAMPLE = 4 * 1024 * 1024
# Buffers of finished writers, kept for the next writer of this process (a transform makes
# a writer per batch: without this, every batch would touch fresh memory again).
MAX_SPARE_BYTES = 64 * 1024 * 1024
_spare: list[bytearray] = []
_spare_lock = threading.Lock()


def _new_buffer(capacity: int) -> bytearray:
    with _spare_lock:
        for i, buffer in enumerate(_spare):
            if len(buffer) == capacity:
                return _spare.pop(i)
    return bytearray(capacity)


def _keep_spare(buffer: bytearray) -> None:
    with _spare_lock:
        if sum(map(len, _spare)) + len(buffer) <= MAX_SPARE_BYTES:
            _spare.append(buffer)


class Arena:
    __slots__ = ("capacity", "max_sample", "_buffer", "_view", "used", "_last", "_pinned")

    def __init__(self, chunk_target_bytes: int):
        # A chunk is flushed as soon as its bytes reach the target, so an arena of target +
        # one largest sample never runs out while samples are added one call at a time.
        self.max_sample = min(MAX_ARENA_SAMPLE, max(int(chunk_target_bytes), 4096))
        self.capacity = int(chunk_target_bytes) + self.max_sample
        self._buffer: bytearray | None = None
        self._view: memoryview | None = None
        self.used = 0
        self._last = 0  # where the latest take started (for give_back)
        self._pinned = False

    def take(self, size: int) -> memoryview | None:
        """The next `size` writable bytes, or None (too large, or no room left)."""
        end = self.used + size
        if size > self.max_sample or end > self.capacity:
            return None
        if self._view is None:
            self._buffer = _new_buffer(self.capacity)
            self._view = memoryview(self._buffer)
        self._last = self.used
        self.used = end
        return self._view[self._last : end]

    def give_back(self) -> None:
        """Undo the latest take (its view must not be used any more)."""
        self.used = self._last

    def pin(self) -> None:
        """Views handed out so far must stay valid past the next chunk (a writer mark)."""
        self._pinned = True

    def reset(self, chunk_samples: list) -> None:
        """A chunk holding `chunk_samples` was written: start over when they hold every
        byte taken from the current buffer, else retire it (a view is still pending)."""
        buffer = self._buffer
        if buffer is not None:
            in_chunk = 0
            for sample in chunk_samples:
                if type(sample) is memoryview and sample.obj is buffer:
                    in_chunk += len(sample)
            if self._pinned or in_chunk != self.used:
                self._buffer = self._view = None  # retired: views of it may be pending
        self._pinned = False
        self.used = self._last = 0

    def release(self) -> None:
        """The writer is done: its last chunk is written and nothing holds a view of the
        current buffer (reset() retires one that may be held), so the next writer of this
        process may have it."""
        view, buffer = self._view, self._buffer
        self._buffer = self._view = None
        self.used = self._last = 0
        if buffer is not None and not self._pinned:
            view.release()
            _keep_spare(buffer)
