"""`sample_out`: the buffer a compute function appends its rows to, for one input.

A fresh `SampleOut` is handed to the user's function for every input, so a function that
raises halfway leaves nothing behind: the rows of an input reach the dataset writer only
after the function returned (and, in a compose, after every later stage ran on them).
The names mirror Deep Lake 3's `TransformDataset`:

    sample_out.append({"images": x, "labels": 1})        # one row across tensors
    sample_out.extend({"images": [x, y], "labels": [1, 2]})
    sample_out.images.append(x); sample_out["labels"].extend([1, 2])

In a compose, stage k+1 runs once per row of stage k's buffer: `sample_out[i]` (and
iteration) gives a `RowView`, whose `row.images.numpy()` reads like a dataset row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from slicewise.transform.errors import TensorMismatchError


class SampleOut:
    """Rows written by one compute function for one input, held as one list per tensor.

    `allowed_tensors` is the output dataset's tensor names for the last stage of a
    pipeline; earlier stages of a compose may write any names (None)."""

    __slots__ = ("_columns", "_allowed")

    def __init__(self, allowed_tensors: frozenset[str] | None = None):
        self._columns: dict[str, list[Any]] = {}
        self._allowed = allowed_tensors

    # -- writing ----------------------------------------------------------------------
    def _column(self, name: str) -> list[Any]:
        column = self._columns.get(name)
        if column is None:
            if not isinstance(name, str):
                raise TypeError(f"tensor names are strings, got {name!r}")
            if self._allowed is not None and name not in self._allowed:
                raise TensorMismatchError(
                    f"the function wrote tensor {name!r}, which the output dataset does not "
                    f"have (its tensors: {sorted(self._allowed)}); create it first with "
                    f"ds.create_tensor({name!r}, ...)"
                )
            column = self._columns[name] = []
        return column

    def append(self, sample: Mapping[str, Any]) -> SampleOut:
        """Append one row: a mapping from tensor name to value."""
        if type(sample) is not dict and not isinstance(sample, Mapping):
            raise TypeError(
                "sample_out.append takes a dict of tensor name -> value, got "
                f"{type(sample).__name__}; use sample_out.<tensor>.append(x) for one tensor"
            )
        columns = self._columns
        for name, value in sample.items():
            column = columns.get(name)
            if column is None:
                column = self._column(name)
            column.append(value)
        return self

    def extend(self, samples: Mapping[str, Iterable[Any]] | Iterable[Mapping[str, Any]]):
        """Append many rows: a dict of tensor name -> sequence of values (all the same
        length), or a sequence of row dicts."""
        if isinstance(samples, Mapping):
            columns = {name: list(values) for name, values in samples.items()}
            lengths = {name: len(values) for name, values in columns.items()}
            if len(set(lengths.values())) > 1:
                raise TensorMismatchError(
                    f"sample_out.extend got sequences of different lengths: {lengths}"
                )
            for name, values in columns.items():
                self._column(name).extend(values)
        else:
            for row in samples:
                self.append(row)
        return self

    def __getattr__(self, name: str) -> TensorBuffer:
        if name.startswith("__"):
            raise AttributeError(name)
        return TensorBuffer(self, name)

    def __getitem__(self, key: str | int) -> TensorBuffer | RowView:
        if isinstance(key, str):
            return TensorBuffer(self, key)
        if isinstance(key, (int, np.integer)):
            count = len(self)
            position = int(key) + count if key < 0 else int(key)
            if not 0 <= position < count:
                raise IndexError(f"row {key} out of range for {count} rows")
            return RowView(self, position)
        raise TypeError(f"sample_out[...] takes a tensor name or a row number, got {key!r}")

    # -- reading (by the runner, and by the next stage of a compose) ------------------
    @property
    def tensors(self) -> dict[str, list[Any]]:
        return self._columns

    def __len__(self) -> int:
        return max((len(values) for values in self._columns.values()), default=0)

    def __iter__(self) -> Iterator[RowView]:
        for position in range(len(self)):
            yield RowView(self, position)

    def row_count(self) -> int:
        """The number of rows, after checking every tensor got the same number."""
        counts = [len(values) for values in self._columns.values()]
        if not counts:
            return 0
        if counts.count(counts[0]) != len(counts):
            lengths = {name: len(values) for name, values in self._columns.items()}
            raise TensorMismatchError(
                f"one input produced a different number of rows per tensor: {lengths}; "
                "every row needs a value in each tensor it writes"
            )
        return counts[0]

    def rows(self) -> Iterator[dict[str, Any]]:
        names = list(self._columns)
        for values in zip(*(self._columns[name] for name in names), strict=True):
            yield dict(zip(names, values, strict=True))

    def __repr__(self) -> str:
        counts = {name: len(values) for name, values in self._columns.items()}
        return f"SampleOut({counts})"


class TensorBuffer:
    """`sample_out.<tensor>`: append / extend values of one tensor."""

    __slots__ = ("_owner", "_name")

    def __init__(self, owner: SampleOut, name: str):
        self._owner = owner
        self._name = name

    def append(self, value: Any) -> None:
        self._owner._column(self._name).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self._owner._column(self._name).extend(values)

    def __len__(self) -> int:
        return len(self._owner.tensors.get(self._name, ()))

    def __getitem__(self, position: int) -> RowValue:
        return RowValue(self._owner.tensors.get(self._name, [])[position])

    def numpy(self, aslist: bool = False) -> Any:
        values = [_as_array(value) for value in self._owner.tensors.get(self._name, [])]
        if aslist:
            return values
        try:
            return np.stack(values) if values else np.empty((0,))
        except ValueError:  # ragged: Deep Lake 3 gives a list
            return values


class RowView:
    """One row of a SampleOut, as the next stage of a compose sees it."""

    __slots__ = ("_owner", "_position")

    def __init__(self, owner: SampleOut, position: int):
        self._owner = owner
        self._position = position

    def __getattr__(self, name: str) -> RowValue:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> RowValue:
        column = self._owner.tensors.get(name)
        if column is None:
            raise KeyError(
                f"the previous stage wrote no tensor {name!r} (it wrote "
                f"{sorted(self._owner.tensors)})"
            )
        return RowValue(column[self._position])

    @property
    def tensors(self) -> dict[str, RowValue]:
        return {name: self[name] for name in self._owner.tensors}

    def __repr__(self) -> str:
        return f"RowView({self._position}, tensors={sorted(self._owner.tensors)})"


class RowValue:
    """One value of a row: `.numpy()` decodes it (a `sw.read` file sample included),
    `.data()` gives it as written, `.tobytes()` the stored bytes when there are some."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def numpy(self) -> np.ndarray:
        return _as_array(self.value)

    def data(self) -> Any:
        return self.value

    def tobytes(self) -> bytes:
        value = self.value
        for attribute in ("tobytes", "buffer", "compressed_bytes"):
            method = getattr(value, attribute, None)
            if method is not None:
                result = method() if callable(method) else method
                return bytes(result)
        return np.asarray(value).tobytes()

    def __array__(self, dtype=None, copy=None):
        array = _as_array(self.value)
        return array.astype(dtype) if dtype is not None else array

    def __repr__(self) -> str:
        return f"RowValue({self.value!r})"


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    numpy_method = getattr(value, "numpy", None)
    if callable(numpy_method):
        return numpy_method()
    array = getattr(value, "array", None)  # a sw.read file sample decodes with .array()
    if callable(array):
        array = array()
    if isinstance(array, np.ndarray):
        return array
    return np.asarray(value)
