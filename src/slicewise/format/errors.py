"""Errors raised by the format and dataset layers. Every message names what went wrong and
where: the file (full URL or path), the tensor, the row or the version."""

from __future__ import annotations


class DatasetError(Exception):
    """Base class: something about a dataset is wrong or impossible (bad name, bad sample,
    missing version, read-only dataset...).

    Raised by `sw.load`, `sw.empty`, `Dataset` writes and reads; catch it for any of
    the dataset layer's errors (SampleError, ReadOnlyError, CorruptionError, ...).

    Example:
        >>> try:
        ...     sw.load("memory://no-such-dataset")
        ... except sw.DatasetError as error:
        ...     print("no dataset")
        no dataset
    """


class CorruptionError(DatasetError):
    """A file in the dataset is not what the format says it must be: truncated, checksum
    mismatch, garbage, or missing although a manifest references it. `path` names it.

    Args:
        message: the error text.
        path: the damaged file's full path or URL.

    Example:
        >>> try:
        ...     ds.images.numpy()                                # doctest: +SKIP
        ... except sw.CorruptionError as error:
        ...     print(error.path)
    """

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class CommitConflictError(DatasetError):
    """Another committer published a version that conflicts with this commit (it modified
    or created a tensor this commit touches, or this commit modifies rows). Nothing was
    published by this commit; the chunk files it wrote stay until `gc`.

    Raised by `Dataset.commit` (and the commit at the end of `with ds:`).

    Example:
        >>> try:
        ...     ds.commit("relabel")                             # doctest: +SKIP
        ... except sw.CommitConflictError:
        ...     ds.discard(); ds.refresh()
    """


class SampleError(DatasetError):
    """A sample cannot be stored: wrong dtype or shape for the tensor, a file from `read()`
    that is missing or not decodable. The message names the tensor and the file or value."""


class ReadOnlyError(DatasetError):
    """A write was attempted on a dataset opened read-only (or at an older version)."""
