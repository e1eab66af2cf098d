"""Errors raised by compute / compose / eval, with Deep Lake 3's names and meaning.

Every error that concerns one input carries `index` (the global position of the input in
`data_in`, counting from 0 even when the eval resumed from a checkpoint) and `sample` (the
input itself, or a short repr of it when the input could not travel back from a worker).
"""

from __future__ import annotations

from typing import Any


class TransformError(Exception):
    """A transform failed. `index` is the global input index, `sample` the input, and
    `__cause__` the original exception (when it could be brought back from the worker).

    Raised by `eval`; the base class of the other eval errors.

    Args:
        message: the error text (default: "transform failed at input index N").
        index: the input's global index in `data_in`.
        sample: the input (or a short repr of it).
        suggest: unused; kept for Deep Lake 3's signature.

    Example:
        >>> try:
        ...     double().eval([1, "x"], ds)                   # doctest: +SKIP
        ... except sw.TransformError as error:
        ...     print(error.index, error.sample)
        1 x
    """

    def __init__(
        self,
        message: str | None = None,
        index: int | None = None,
        sample: Any = None,
        suggest: bool = False,
    ):
        self.index = index
        self.sample = sample
        self.suggest = suggest
        if message is None:
            message = "transform failed"
            if index is not None:
                message += f" at input index {index}"
        super().__init__(message)


class InvalidInputDataError(TransformError):
    """`data_in` cannot be iterated, or cannot travel to the chosen scheduler's workers.

    Example:
        >>> double().eval(42, ds)                             # doctest: +SKIP
        Traceback (most recent call last):
        slicewise.transform.errors.InvalidInputDataError: ...
    """


class InvalidOutputDatasetError(TransformError):
    """`ds_out` cannot receive the transform's rows: read-only, missing, or its tensors
    have different lengths (with check_lengths=True).

    Example:
        >>> double().eval([1, 2], sw.load(path, read_only=True))  # doctest: +SKIP
        Traceback (most recent call last):
        slicewise.transform.errors.InvalidOutputDatasetError: ...
    """


class TensorMismatchError(TransformError):
    """The function wrote tensors that `ds_out` does not have, or left out tensors that it
    has (unless skip_ok=True), or wrote a different number of rows to two tensors for one
    input.

    Example:
        >>> except sw.TensorMismatchError as error: print(error.index)  # doctest: +SKIP
    """


class UnsupportedSchedulerError(TransformError):
    """The scheduler name is not one slicewise runs.

    Example:
        >>> double().eval([1], ds, scheduler="spark")         # doctest: +SKIP
        Traceback (most recent call last):
        slicewise.transform.errors.UnsupportedSchedulerError: ...
    """


class AllSamplesSkippedError(TransformError):
    """ignore_errors=True skipped every input: nothing was written.

    Example:
        >>> double().eval(["x", "y"], ds, ignore_errors=True)  # doctest: +SKIP
        Traceback (most recent call last):
        slicewise.transform.errors.AllSamplesSkippedError: ...
    """


class ComposeError(TransformError):
    """compose() was given an empty list or something that is not a compute function."""


class ResumeError(TransformError):
    """A re-run of an eval found its unfinished checkpoint but cannot resume it exactly:
    the rows that checkpoint holds are no longer all in the dataset as the eval wrote them
    (a commit since removed, rewrote or cleared some), or two unfinished evals match. The
    message names the eval (`eval_id`, its input fingerprint), what changed, and how to
    start over: `eval(..., resume=False)`, which starts from the first input.

    Args:
        message: the error text.
        eval_id: the unfinished eval's id.
        fingerprint: its input fingerprint.

    Example:
        >>> try:
        ...     fn().eval(files, ds, checkpoint_interval=100)  # doctest: +SKIP
        ... except sw.ResumeError:
        ...     fn().eval(files, ds, checkpoint_interval=100, resume=False)
    """

    def __init__(self, message: str, eval_id: str | None = None, fingerprint: str | None = None):
        super().__init__(message)
        self.eval_id = eval_id
        self.fingerprint = fingerprint


class EvalStorageError(TransformError, OSError):
    """Writing the eval's results to the dataset's storage failed: a full disk (ENOSPC), a
    quota (EDQUOT), a file size limit (EFBIG), a read-only or failing file system. It is
    an `OSError` with the storage's `errno`, `strerror` and `filename` (the file being
    written), and a `TransformError` with `index` and `sample` (the input whose rows were
    being written, or the first of the batch when the failure came at its end) and
    `tensor` (the tensor the file belongs to, when known). `__cause__` is the original
    OSError. The dataset is left at its last commit (or checkpoint).

    Args:
        message: the error text.
        errno: the OSError's errno (e.g. errno.ENOSPC).
        strerror: the OSError's text.
        filename: the file being written.
        tensor: the tensor the file belongs to.
        index: the input whose rows were being written.
        sample: that input.

    Example:
        >>> try:
        ...     fn().eval(files, ds)                          # doctest: +SKIP
        ... except sw.EvalStorageError as error:
        ...     print(error.errno == errno.ENOSPC, error.filename)
    """

    def __init__(
        self,
        message: str,
        errno: int | None = None,
        strerror: str | None = None,
        filename: str | None = None,
        tensor: str | None = None,
        index: int | None = None,
        sample: Any = None,
    ):
        OSError.__init__(self, errno, strerror, filename)
        self.index = index
        self.sample = sample
        self.suggest = False
        self.tensor = tensor
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (_storage_error, (self.message, self.errno, self.strerror, self.filename,
                                 self.tensor, self.index, self.sample))


def _storage_error(*args: Any) -> EvalStorageError:
    return EvalStorageError(*args)
