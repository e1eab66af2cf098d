"""Thread workers (the `multiprocessing.dummy` of slicewise): for I/O-bound functions.

Items and results are passed as objects: nothing is pickled. A thread cannot be killed,
so a per-item timeout *abandons* the stuck thread (its eventual result is dropped, and it
ends when the call returns) and starts a fresh one in its slot.
"""

from __future__ import annotations

import threading
from collections import deque
from queue import SimpleQueue

from slicewise.engine.backends.base import Backend, Worker
from slicewise.engine.worker import IDLE, PHASE, SEQ, pack_failure, read_progress, run_batch


class ThreadWorker(Worker):
    def __init__(self, slot: int, backend: ThreadBackend) -> None:
        super().__init__(slot)
        self._backend = backend
        self._inbox: SimpleQueue = SimpleQueue()
        self._outbox: deque[tuple] = deque()
        self._slot = [0, IDLE, 0, 0]
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, name=f"slicewise-thread-{slot}", daemon=True
        )
        self._thread.start()

    def _post(self, event: tuple) -> None:
        if not self._abandoned:
            self._outbox.append(event)
            self._backend.wake()

    def _run(self) -> None:
        backend = self._backend
        if backend.initializer is not None:
            try:
                backend.initializer(*backend.initargs)
            except BaseException as exc:
                self._post(("init_failed", pack_failure(-1, "initializer", exc)))
                return
        self._post(("ready",))
        while True:
            batch = self._inbox.get()
            if batch is None or self._abandoned:
                return
            job = batch.job
            self._slot[SEQ] = batch.seq
            values, failures, seconds = run_batch(
                job.fn, job.mode, batch.items, self._slot, job.timeout is not None, batch.stride
            )
            self._slot[PHASE] = IDLE
            self._post(("done", batch.seq, seconds, values, failures))

    def send(self, batch) -> None:
        self._inbox.put(batch)

    def receive(self) -> list[tuple]:
        events = []
        while self._outbox:
            events.append(self._outbox.popleft())
        return events

    def progress(self) -> tuple[int, int, int, int]:
        return read_progress(self._slot)

    def has_exited(self) -> bool:
        return self._abandoned or not self._thread.is_alive()

    def kill(self) -> None:
        self._abandoned = True
        self._inbox.put(None)

    def stop(self) -> None:
        self._inbox.put(None)

    def reap(self, timeout: float) -> None:
        if not self._abandoned:
            self._thread.join(timeout)


class ThreadBackend(Backend):
    name = "threads"

    def start_worker(self, slot: int) -> ThreadWorker:
        return ThreadWorker(slot, self)
