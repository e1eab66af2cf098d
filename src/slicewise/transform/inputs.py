"""What `eval` accepts as `data_in`, cut into batch payloads, and fingerprinted.

    data_in ──► InputSource.payloads(first, next_size)  (parent, lazily, one batch at a time)
                   │ (start, count, payload)                 │ digest of each payload, in order
                   ▼                                          ▼
            unpack(payload) in the worker          InputDigest (resume fingerprint)

Payload kinds (plain tuples, so they pickle cheaply):
  ("items", list)               any sequence or iterable: the items themselves
  ("array", ndarray)            a numpy array: rows of the slice
  ("frame", DataFrame)          a pandas DataFrame: rows (Series) of the slice
  ("indexed", obj, start, stop) a slicewise Dataset or Tensor: obj[i] for i in the range;
                                obj pickles as (url, version, padding), so a padded view
                                (pad_data_in=True) stays padded in process workers
"""

from __future__ import annotations

import abc
import hashlib
import itertools
import math
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from slicewise.transform.errors import InvalidInputDataError

Payload = tuple


class InputSource(abc.ABC):
    """An input cut into consecutive batches. `length` is None for generators."""

    kind = "items"

    def __init__(self, data: Any, length: int | None, identity: str):
        self.data = data
        self.length = length
        self.identity = identity  # what the fingerprint starts from

    @abc.abstractmethod
    def payloads(
        self, first: int, next_size: Callable[[int], int]
    ) -> Iterator[tuple[int, int, Payload]]:
        """(position, count, payload) per batch from `first` on, sized by `next_size`."""

    def digest_payload(self, digest: InputDigest, payload: Payload) -> None:
        """Feed one batch's inputs to `digest`. What a batch adds depends on its inputs
        only, never on where batches begin and end: a re-run cuts its checked prefix
        into other batches than the run that stored the checkpoint."""
        for item in unpack(payload):
            digest.add_item(item)

    def prefix_digest(self, digest: InputDigest, count: int) -> bool:
        """Feed the first `count` inputs to `digest`; False when there are fewer."""
        return count in self.prefix_digests(lambda: digest, [count])

    def prefix_digests(
        self, new_digest: Callable[[], InputDigest], counts: Sequence[int]
    ) -> dict[int, InputDigest]:
        """{count: the digest of the first `count` inputs} for each of `counts` there are
        that many inputs for (one pass over the longest prefix)."""
        wanted = sorted({count for count in counts
                         if count >= 0 and (self.length is None or count <= self.length)})
        out: dict[int, InputDigest] = {}
        if not wanted:
            return out
        digest = new_digest()
        if wanted[0] == 0:
            out[0] = digest.copy()
        stops = [count for count in wanted if count > 0]
        if not stops:
            return out

        def size(position: int) -> int:
            upcoming = next((count for count in stops if count > position), stops[-1])
            return max(1, min(4096, upcoming - position))

        for position, count, payload in self.payloads(0, size):
            self.digest_payload(digest, payload)
            if position + count in stops:
                out[position + count] = digest.copy()
            if position + count >= stops[-1]:
                break
        return out


def batch_ranges(
    first: int, length: int, next_size: Callable[[int], int]
) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges that cut inputs [first, length) into consecutive batches. Sizes
    are asked for one batch at a time, as it is cut, because they follow how fast the
    workers have been so far."""
    position = first
    while position < length:
        stop = position + min(next_size(position), length - position)
        yield position, stop
        position = stop


class SequenceSource(InputSource):
    def payloads(self, first, next_size):
        for start, stop in batch_ranges(first, self.length, next_size):
            items = self.data[start:stop]
            if not isinstance(items, list):
                items = list(items)
            yield start, len(items), ("items", items)


class IterableSource(InputSource):
    """Generators and other iterables of unknown length: consumed lazily, once. The
    inputs a resume check read ahead are kept until `payloads` says whether they are
    skipped (resumed) or replayed (not resumed)."""

    def __init__(self, data: Any, length: int | None, identity: str):
        super().__init__(data, length, identity)
        self._iterator = iter(data)
        self._read_ahead: list[Any] = []

    def prefix_digests(self, new_digest, counts):
        wanted = sorted({count for count in counts if count >= 0})
        if not wanted:
            return {}
        self._read_ahead = list(itertools.islice(self._iterator, wanted[-1]))
        digest, out, position = new_digest(), {}, 0
        for count in wanted:
            if count > len(self._read_ahead):
                break
            for item in self._read_ahead[position:count]:
                digest.add_item(item)
            position = count
            out[count] = digest.copy()
        return out

    def payloads(self, first, next_size):
        if first > len(self._read_ahead):
            raise ValueError("an iterable input resumes only within its checked prefix")
        iterator = itertools.chain(self._read_ahead[first:], self._iterator)
        self._read_ahead = []
        position = first
        while True:
            items = list(itertools.islice(iterator, next_size(position)))
            if not items:
                return
            yield position, len(items), ("items", items)
            position += len(items)


class ArraySource(InputSource):
    kind = "array"

    def payloads(self, first, next_size):
        for start, stop in batch_ranges(first, self.length, next_size):
            yield start, stop - start, ("array", self.data[start:stop])

    def digest_payload(self, digest, payload):
        # dtype and row shape are in the identity: the rows' bytes follow one another
        block = np.ascontiguousarray(payload[1])
        digest.update(memoryview(block).cast("B") if block.size else b"")


class FrameSource(InputSource):
    kind = "frame"

    def payloads(self, first, next_size):
        for start, stop in batch_ranges(first, self.length, next_size):
            yield start, stop - start, ("frame", self.data.iloc[start:stop])

    def digest_payload(self, digest, payload):
        import pandas as pd

        # the columns are in the identity; one 8-byte hash per row
        frame = payload[1]
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())


class IndexedSource(InputSource):
    """A slicewise Dataset (rows) or Tensor (samples): workers index it themselves."""

    kind = "indexed"

    def payloads(self, first, next_size):
        for start, stop in batch_ranges(first, self.length, next_size):
            yield start, stop - start, ("indexed", self.data, start, stop)

    def digest_payload(self, digest, payload):
        """Nothing to add: the identity (path, version, length, padding) stands for the
        rows' contents, and `inputs_done` says how many of them."""

    def prefix_digests(self, new_digest, counts):
        digest = new_digest()
        return {count: digest.copy() for count in counts if 0 <= count <= self.length}


def unpack(payload: Payload) -> Iterable[Any]:
    """The items of one batch, in order (runs in the worker)."""
    kind = payload[0]
    if kind == "items":
        return payload[1]
    if kind == "array":
        return iter(payload[1])
    if kind == "frame":
        frame = payload[1]
        return (frame.iloc[row] for row in range(len(frame)))
    if kind == "indexed":
        data, start, stop = payload[1], payload[2], payload[3]
        return (data[position] for position in range(start, stop))
    raise ValueError(f"unknown batch payload kind {kind!r}")


def open_source(data_in: Any) -> InputSource:
    """Wrap `data_in` in the InputSource that fits it, or raise InvalidInputDataError."""
    indexed_kind = _slicewise_kind(data_in)
    if indexed_kind is not None:
        identity = _dataset_identity(data_in, indexed_kind)
        return IndexedSource(data_in, len(data_in), identity)
    if isinstance(data_in, np.ndarray):
        if data_in.ndim == 0:
            raise InvalidInputDataError("data_in is a 0-d numpy array; it has no items")
        return ArraySource(
            data_in, len(data_in), f"ndarray:{data_in.dtype.str}:{data_in.shape[1:]}"
        )
    if _is_dataframe(data_in):
        return FrameSource(data_in, len(data_in), f"dataframe:{list(data_in.columns)!r}")
    if isinstance(data_in, (str, bytes, bytearray)):
        raise InvalidInputDataError(
            f"data_in is a {type(data_in).__name__}, whose items are single characters; "
            "pass a list, e.g. [path]"
        )
    if isinstance(data_in, Sequence) or (
        hasattr(data_in, "__getitem__") and hasattr(data_in, "__len__")
        and not hasattr(data_in, "keys")
    ):
        try:
            length = len(data_in)
        except TypeError as error:
            raise InvalidInputDataError(f"len(data_in) failed: {error}") from error
        return SequenceSource(data_in, length, "items")
    if isinstance(data_in, Iterable) and not hasattr(data_in, "keys"):
        return IterableSource(data_in, None, "items")
    raise InvalidInputDataError(
        f"data_in must be a sequence, an iterable, a numpy array, a pandas DataFrame or a "
        f"slicewise Dataset/Tensor; got {type(data_in).__name__}"
    )


def _slicewise_kind(data_in: Any) -> str | None:
    module = type(data_in).__module__ or ""
    if not module.startswith("slicewise."):
        return None
    try:
        from slicewise.dataset import Dataset, Tensor
    except ImportError:  # the dataset package is optional for plain-data evals
        return None
    if isinstance(data_in, Dataset):
        return "dataset"
    if isinstance(data_in, Tensor):
        return "tensor"
    return None


def _dataset_identity(data_in: Any, kind: str) -> str:
    """Path, version and length stand for a Dataset/Tensor input's contents. A padded view
    reads other rows (empty samples past a short tensor's end) than the dataset itself,
    even where both have the same length, so it is named apart."""
    parts = [kind]
    if kind == "dataset" and getattr(data_in, "pad_tensors", False) is True:
        parts.append("padded")
    for attribute in ("path", "key", "name"):
        value = getattr(data_in, attribute, None)
        if isinstance(value, str):
            parts.append(value)
    version = getattr(data_in, "version", None)
    version = getattr(version, "id", version)
    parts.append(str(version))
    parts.append(str(len(data_in)))
    return ":".join(parts)


def _is_dataframe(data_in: Any) -> bool:
    module = type(data_in).__module__ or ""
    if not module.startswith("pandas"):
        return False
    import pandas as pd

    return isinstance(data_in, pd.DataFrame)


class InputDigest:
    """A running hash of the inputs, in order: the fingerprint a checkpoint stores so that
    a later eval can tell it is being given the same inputs (and resume) or not."""

    def __init__(self, identity: str, pipeline_names: Sequence[str]):
        self._hash = hashlib.blake2b(digest_size=16)
        self.update(f"{identity}|{'/'.join(pipeline_names)}|".encode())

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def add_item(self, item: Any) -> None:
        self._hash.update(_item_bytes(item))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def copy(self) -> InputDigest:
        twin = InputDigest.__new__(InputDigest)
        twin._hash = self._hash.copy()
        return twin


def _item_bytes(item: Any) -> bytes:
    """A stable byte form of one input: the same value gives the same bytes in every run
    (no id(), no hash randomisation)."""
    if isinstance(item, str):
        return b"s" + str(len(item)).encode() + b":" + item.encode("utf-8", "surrogatepass")
    if isinstance(item, (bytes, bytearray, memoryview)):
        return b"b" + str(len(item)).encode() + b":" + bytes(item)
    if item is None or isinstance(item, (bool, int)):
        return b"i" + repr(item).encode() + b";"
    if isinstance(item, float):
        return b"f" + (repr(item) if not math.isnan(item) else "nan").encode() + b";"
    if isinstance(item, np.ndarray):
        block = np.ascontiguousarray(item)
        return f"a{block.dtype.str}{block.shape}:".encode() + block.tobytes()
    if isinstance(item, np.generic):
        return f"n{item.dtype.str}:".encode() + item.tobytes()
    if isinstance(item, (list, tuple)):
        return b"(" + b"".join(_item_bytes(part) for part in item) + b")"
    if isinstance(item, dict):
        parts = sorted((repr(key), _item_bytes(value)) for key, value in item.items())
        return b"{" + b"".join(key.encode() + b"=" + value for key, value in parts) + b"}"
    fspath = getattr(item, "__fspath__", None)
    if fspath is not None:
        return b"p" + _item_bytes(fspath())
    try:
        return b"o" + pickle.dumps(item, protocol=5)
    except Exception:  # unpicklable items: their type and repr are the best stable form
        return f"r{type(item).__qualname__}:{item!r}".encode()
