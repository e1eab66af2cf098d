"""The serial backend: every item runs in the caller's thread, one after another.

For debugging (a breakpoint in the function just works) with the same options and error
semantics as the other backends. A per-item timeout interrupts the function with SIGALRM
when the call runs in the main thread of a POSIX process; elsewhere an item that ran too
long is reported as timed out after it returns.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque

from slicewise.engine.backends.base import Backend, Worker
from slicewise.engine.worker import IDLE, PHASE, SEQ, pack_failure, read_progress, run_batch


class _ItemTimedOut(BaseException):
    """Raised inside the function by SIGALRM when a serial item passes its timeout."""


def _alarm(signum, frame):
    raise _ItemTimedOut()


class SerialWorker(Worker):
    def __init__(self, slot: int, backend: SerialBackend) -> None:
        super().__init__(slot)
        self._backend = backend
        self._outbox: deque[tuple] = deque()
        self._slot = [0, IDLE, 0, 0]
        self._timed_out_offsets: list[int] = []
        self._initialized = backend.initializer is None
        self._stopped = False
        self.ready = True  # nothing to start

    def send(self, batch) -> None:
        backend = self._backend
        if not self._initialized:
            self._initialized = True
            try:
                backend.initializer(*backend.initargs)
            except BaseException as exc:
                self._outbox.append(("init_failed", pack_failure(-1, "initializer", exc)))
                return
        job = batch.job
        self._slot[SEQ] = batch.seq
        if job.timeout is None:
            values, failures, seconds = run_batch(
                job.fn, job.mode, batch.items, self._slot, False, batch.stride
            )
        else:
            values, failures, seconds = self._run_with_timeout(batch)
        self._slot[PHASE] = IDLE
        self._outbox.append(("done", batch.seq, seconds, values, failures))

    def _run_with_timeout(self, batch):
        job = batch.job
        use_alarm = hasattr(signal, "setitimer") and (
            threading.current_thread() is threading.main_thread()
        )
        values, failures, seconds = [], [], 0.0
        for offset, item in enumerate(batch.items):
            previous = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
            started = time.monotonic()
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, job.timeout)
                value, item_failures, spent = run_batch(
                    job.fn, job.mode, [item], self._slot, True
                )
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
            seconds += spent
            timed_out = time.monotonic() - started > job.timeout
            if item_failures and "_ItemTimedOut" in item_failures[0][4]:
                timed_out = True
            if timed_out:
                values.append(None)
                failures.append((offset, "timeout", None, "", "TimeoutError", ""))
            else:
                values.append(value[0])
                failures.extend((offset, *f[1:]) for f in item_failures)
        return values, failures, seconds

    def receive(self) -> list[tuple]:
        events = list(self._outbox)
        self._outbox.clear()
        return events

    def progress(self) -> tuple[int, int, int, int]:
        return read_progress(self._slot)

    def has_exited(self) -> bool:
        return self._stopped

    def kill(self) -> None:
        self._stopped = True

    def stop(self) -> None:
        self._stopped = True


class SerialBackend(Backend):
    name = "serial"
    inline = True

    def start_worker(self, slot: int) -> SerialWorker:
        return SerialWorker(slot, self)
