"""The engine's failures as eval reads them, and the EvalStorageError for a storage's
OSError (run.py's helpers)."""

from __future__ import annotations

import errno
import os
from typing import Any

from slicewise.transform.errors import EvalStorageError


def is_engine_failure(outcome: Any) -> bool:
    from slicewise.engine.errors import Failure

    return isinstance(outcome, Failure)


def failure_kind(failure: Any) -> str:
    return str(getattr(failure, "kind", "exception"))


def failure_reason(failure: Any) -> str:
    kind = failure_kind(failure)
    exception = getattr(failure, "exception", None)
    if kind == "worker_lost":
        signal = getattr(failure, "signal", None)
        exitcode = getattr(failure, "exitcode", None)
        how = f"killed by {signal}" if signal else f"exit code {exitcode}"
        return f"the worker process died ({how}) while running it"
    if kind == "timeout":
        return f"ran longer than the timeout of {getattr(failure, 'timeout', None)} s"
    if exception is not None:
        return f"{kind}: {type(exception).__name__}: {exception}"
    return kind


def failure_exception(failure: Any) -> Any:
    exception = getattr(failure, "exception", None)
    return exception if isinstance(exception, BaseException) else None


def failure_item_repr(failure: Any) -> str:
    return str(getattr(failure, "item_repr", ""))


def storage_error(
    doing: str, cause: Any, left_at: str, filename: str = "", tensor: str = "",
    index: int | None = None, sample: Any = None, traceback_text: str = "",
) -> EvalStorageError:
    """The EvalStorageError for `cause`, an OSError the dataset's storage raised while the
    eval was `doing` something."""
    errno_ = getattr(cause, "errno", None)
    strerror = getattr(cause, "strerror", None) or str(cause)
    filename = filename or os.fsdecode(getattr(cause, "filename", None) or "")
    code = errno.errorcode.get(errno_, str(errno_)) if errno_ is not None else "OSError"
    target = f" of tensor {tensor!r}" if tensor else ""
    where = f" to {filename}" if filename else ""
    message = (
        f"{doing}{target}{where} failed: the storage refused the write with {code} "
        f"({type(cause).__name__}: {cause}). Nothing of this run past its last checkpoint "
        f"was published; {left_at}."
    )
    if traceback_text:
        message += f"\n\nworker traceback:\n{traceback_text}"
    return EvalStorageError(message, errno_, strerror, filename or None, tensor or None,
                            index=index, sample=sample)
