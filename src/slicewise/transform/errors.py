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
