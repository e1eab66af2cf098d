"""Errors raised by compute / compose / eval, with Deep Lake 3's names and meaning.

Every error that concerns one input carries `index` (the global position of the input in
`data_in`, counting from 0 even when the eval resumed from a checkpoint) and `sample` (the
input itself, or a short repr of it when the input could not travel back from a worker).
"""

from __future__ import annotations

from typing import Any


class TransformError(Exception):
    """A transform failed. `index` is the global input index, `sample` the input, and
    `__cause__` the original exception (when it could be brought back from the worker)."""

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
    """`data_in` cannot be iterated, or cannot travel to the chosen scheduler's workers."""


class InvalidOutputDatasetError(TransformError):
    """`ds_out` cannot receive the transform's rows: read-only, missing, or its tensors
    have different lengths (with check_lengths=True)."""


class TensorMismatchError(TransformError):
    """The function wrote tensors that `ds_out` does not have, or left out tensors that it
    has (unless skip_ok=True), or wrote a different number of rows to two tensors for one
    input."""


class UnsupportedSchedulerError(TransformError):
    """The scheduler name is not one slicewise runs."""


class AllSamplesSkippedError(TransformError):
    """ignore_errors=True skipped every input: nothing was written."""


class ComposeError(TransformError):
    """compose() was given an empty list or something that is not a compute function."""


class ResumeError(TransformError):
    """A re-run of an eval found its unfinished checkpoint but cannot resume it exactly:
    the rows that checkpoint holds are no longer all in the dataset as the eval wrote them
    (a commit since removed, rewrote or cleared some), or two unfinished evals match. The
    message names the eval (`eval_id`, its input fingerprint), what changed, and how to
    start over: `eval(..., resume=False)`, which starts from the first input."""

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
    OSError. The dataset is left at its last commit (or checkpoint)."""

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
