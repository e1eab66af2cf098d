"""What a failed item looks like: `Failure` (a record) and the exception a caller gets.

With on_error="raise" the caller gets the exception the function raised, of its own class
(`except ValueError:` works as with the stdlib pools), with the worker's traceback chained
as `__cause__` (a `RemoteTraceback`, as multiprocessing does), a PEP 678 note naming the
item, and the attributes `index`, `item_repr` and `worker_traceback` (each set only where
the exception has no attribute of that name already). `TaskError` is for failures with
no exception of their own: `WorkerLostError` (the worker died), `TaskTimeoutError` (the
item ran too long), or an exception that could not travel back from the worker.

A `Failure` is plain data that travels well: `on_error="collect"` puts one at the failed
position, `.errors` lists them all, and `Failure.to_error()` makes the matching exception.
`kind` says what went wrong, `stage` says where:

    kind          stage                       meaning
    exception     call                        the function raised
    worker_lost   call | unpickling_args ...  the worker process died (exit code / signal)
    timeout       call                        the item ran longer than `timeout` seconds
    pickling      pickling_args               the parent could not pickle the item
                  unpickling_args             the worker could not unpickle the item
                  unpickling_function         the worker could not unpickle the function
                  pickling_result             the worker could not pickle the result
                  unpickling_result           the parent could not unpickle the result
"""

from __future__ import annotations

import reprlib
import signal as _signal
from dataclasses import dataclass
from typing import Any

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2

STAGE_TEXT = {
    "call": "while running the function",
    "pickling_args": "while pickling the arguments in the parent",
    "unpickling_args": "while unpickling the arguments in the worker",
    "unpickling_function": "while unpickling the function in the worker",
    "pickling_result": "while pickling the result in the worker",
    "unpickling_result": "while unpickling the result in the parent",
}


def short_repr(item: object) -> str:
    """A repr of at most ~80 characters that never raises (items can have broken reprs)."""
    try:
        text = _short.repr(item)
    except Exception as exc:  # a user's __repr__ may fail; the error must still be reported
        text = f"<{type(item).__name__} object (repr failed: {exc!r})>"
    return text if len(text) <= 80 else text[:77] + "..."


def signal_name(exitcode: int | None) -> str | None:
    """`-11` -> `"SIGSEGV"`: multiprocessing reports death by signal as a negative exit code."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return _signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback; chained under a re-raised exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\nWorker traceback:\n" + self.text


class RemoteError(Exception):
    """Stands in for a worker's exception that could not be pickled or unpickled."""


ATTACHED = "_slicewise_item"  # marks an exception that already names its item


def attach_item(exc: BaseException, failure: Failure) -> BaseException:
    """Name the failed item on the function's own exception: a PEP 678 note, the worker's
    traceback as `__cause__` (when the exception crossed a process boundary), and the
    attributes `index`, `item_repr`, `worker_traceback` where the exception has none."""
    if getattr(exc, ATTACHED, None) == failure.index:
        return exc  # already done (the same Failure raised twice)
    where = STAGE_TEXT.get(failure.stage, failure.stage)
    note = f"slicewise: item {failure.index} ({failure.item_repr}) failed {where}"
    if failure.attempts > 1:
        note += f" (after {failure.attempts} attempts)"
    try:
        exc.add_note(note)
    except Exception:  # an exception class that refuses notes still gets raised
        pass
    if failure.traceback and exc.__cause__ is None and exc.__traceback__ is None:
        exc.__cause__ = RemoteTraceback(failure.traceback)
    for name, value in (
        ("index", failure.index),
        ("item_repr", failure.item_repr),
        ("worker_traceback", failure.traceback),
        (ATTACHED, failure.index),
    ):
        if name == ATTACHED or not hasattr(exc, name):
            try:
                setattr(exc, name, value)
            except Exception:  # __slots__ or a read-only property: the note still says it
                pass
    return exc


class TaskError(Exception):
    """An item failed, with no exception of its own to raise.

    Raised by `Pool.map` and friends (and `Failure.to_error()`) for a worker that died
    (`WorkerLostError`), an item past its timeout (`TaskTimeoutError`), or an exception
    that could not travel back from the worker; the original exception is `__cause__`.

    Args:
        message: the error text.
        index: the item's position in the input.
        item_repr: a short repr of the item.
        worker_traceback: the traceback in the worker.
        kind: "exception", "worker_lost", "timeout" or "pickling".
        stage: where it failed ("call", "pickling_args", ...; see `Failure`).

    Example:
        >>> try:
        ...     sw.map(os._exit, [1], workers=1)              # doctest: +SKIP
        ... except sw.TaskError as error:
        ...     print(error.index, error.kind)
        0 worker_lost
    """

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        item_repr: str = "",
        worker_traceback: str = "",
        kind: str = "exception",
        stage: str = "call",
    ) -> None:
        super().__init__(message)
        self.index = index
        self.item_repr = item_repr
        self.worker_traceback = worker_traceback
        self.kind = kind
        self.stage = stage

    def __reduce__(self):
        return (
            _rebuild_error,
            (type(self), self.args[0], dict(self.__dict__)),
        )


def _rebuild_error(cls, message, state):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class WorkerLostError(TaskError):
    """The worker process died while it held the item.

    `.exitcode` is negative for a signal, as in multiprocessing; `.signal` names it
    (e.g. "SIGKILL"; an out-of-memory kill is a SIGKILL).

    Args:
        message: the error text.
        exitcode: the worker's exit code.
        **fields: `TaskError`'s index, item_repr, worker_traceback, stage.

    Example:
        >>> try:
        ...     sw.map(os._exit, [3], workers=1)              # doctest: +SKIP
        ... except sw.WorkerLostError as error:
        ...     print(error.exitcode)
        3
    """

    def __init__(self, message: str, *, exitcode: int | None = None, **fields: Any) -> None:
        super().__init__(message, kind="worker_lost", **fields)
        self.exitcode = exitcode
        self.signal = signal_name(exitcode)


class TaskTimeoutError(TaskError, TimeoutError):
    """The item ran longer than the per-item `timeout`; its worker was killed and replaced.

    Also a `TimeoutError`, so code written for `concurrent.futures` still catches it.

    Args:
        message: the error text.
        timeout: the timeout in seconds.
        **fields: `TaskError`'s index, item_repr, worker_traceback, stage.

    Example:
        >>> try:
        ...     sw.map(time.sleep, [10], timeout=0.5)         # doctest: +SKIP
        ... except sw.TaskTimeoutError as error:
        ...     print(error.timeout)
        0.5
    """

    def __init__(self, message: str, *, timeout: float | None = None, **fields: Any) -> None:
        super().__init__(message, kind="timeout", **fields)
        self.timeout = timeout


class InitializerError(RuntimeError):
    """The pool's `initializer` raised in a worker; the pool cannot run anything.

    Raised by the pool's calls once a worker's initializer failed.

    Example:
        >>> def init(): raise OSError("no GPU")
        >>> with sw.Pool(1, initializer=init) as pool:      # doctest: +SKIP
        ...     pool.map(abs, [1])
        Traceback (most recent call last):
        slicewise.engine.errors.InitializerError: ...
    """


class PoolClosedError(ValueError, RuntimeError):
    """Work was given to a pool after close(), shutdown() or terminate().

    A ValueError, as multiprocessing.Pool raises, and a RuntimeError, as
    concurrent.futures raises. Also raised by calls left unfinished by `terminate()`.

    Example:
        >>> pool = sw.Pool(1, backend="threads"); pool.close()
        >>> pool.map(abs, [1])
        Traceback (most recent call last):
        slicewise.engine.errors.PoolClosedError: the pool is closed: no new work can be submitted
    """


@dataclass
class Failure:
    """One failed item, as `on_error="collect"` reports it (and `.errors` lists it).

    Plain data that pickles well; `to_error()` makes the matching exception.

    Attributes:
        index: the item's position in the input.
        item_repr: a short repr of the item.
        kind: "exception", "worker_lost", "timeout" or "pickling".
        exception: the exception, when there is one.
        traceback: the worker's formatted traceback.
        stage: where it failed: "call", "pickling_args", "unpickling_args",
            "unpickling_function", "pickling_result" or "unpickling_result".
        exitcode: the dead worker's exit code (kind "worker_lost").
        signal: the signal that killed it, e.g. "SIGKILL".
        timeout: the timeout it ran past (kind "timeout").
        attempts: how many times it was tried (retries + 1 at most).

    Example:
        >>> results = sw.map(int, ["1", "x"], on_error="collect", backend="threads")
        >>> failure = results[1]
        >>> failure.index, failure.kind
        (1, 'exception')
    """

    index: int
    item_repr: str
    kind: str  # "exception" | "worker_lost" | "timeout" | "pickling"
    exception: BaseException | None = None
    traceback: str = ""
    stage: str = "call"
    exitcode: int | None = None
    signal: str | None = None
    timeout: float | None = None
    attempts: int = 1

    def describe(self) -> str:
        """A sentence on what went wrong, with the worker's traceback.

        Returns:
            The text (`WorkerLostError` and `TaskTimeoutError` use it as their message).

        Example:
            >>> print(failure.describe())                     # doctest: +SKIP
            item 1 ('x') failed while running the function: ValueError: ...
        """
        where = STAGE_TEXT.get(self.stage, self.stage)
        head = f"item {self.index} ({self.item_repr})"
        if self.kind == "worker_lost":
            how = f"signal {self.signal}" if self.signal else f"exit code {self.exitcode}"
            if self.exitcode is None and self.exception is not None:
                how = str(self.exception)  # a cluster's worker: the engine's own account
            hint = " (a SIGKILL is often the out-of-memory killer)" if self.signal == "SIGKILL" else ""
            text = f"{head}: the worker process died ({how}{hint}) {where}"
        elif self.kind == "timeout":
            text = f"{head}: ran longer than the timeout of {self.timeout} s; worker killed"
        else:
            exc = self.exception
            name = type(exc).__name__ if exc is not None else "error"
            text = f"{head} failed {where}: {name}: {exc}"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        if self.traceback:
            text += "\n\nWorker traceback:\n" + self.traceback.rstrip()
        return text

    def to_error(self) -> BaseException:
        """The exception a caller gets for this failure (it is returned, not raised).

        Returns:
            The function's own exception (with a note naming the item and the attributes
            `index`, `item_repr`, `worker_traceback`) when there is one, else a
            `WorkerLostError`, `TaskTimeoutError` or `TaskError`.

        Example:
            >>> raise failure.to_error()                      # doctest: +SKIP
        """
        exc = self.exception
        if (
            self.kind in ("exception", "pickling")
            and exc is not None
            and not isinstance(exc, RemoteError)
        ):
            return attach_item(exc, self)
        fields = dict(
            index=self.index,
            item_repr=self.item_repr,
            worker_traceback=self.traceback,
            stage=self.stage,
        )
        if self.kind == "worker_lost":
            error: TaskError = WorkerLostError(self.describe(), exitcode=self.exitcode, **fields)
        elif self.kind == "timeout":
            error = TaskTimeoutError(self.describe(), timeout=self.timeout, **fields)
        else:
            error = TaskError(self.describe(), kind=self.kind, **fields)
        error.__cause__ = self.exception
        return error

    def __repr__(self) -> str:
        return (
            f"Failure(index={self.index}, kind={self.kind!r}, stage={self.stage!r}, "
            f"item={self.item_repr}, error={self.exception!r})"
        )
