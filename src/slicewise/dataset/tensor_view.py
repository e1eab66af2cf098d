"""TensorView: rows of a tensor picked by an index (`t[i]`, `t[i:j]`, `t[[1, 5]]`, a mask),
and the one rule that turns a row index into (single row, rows) for tensors, datasets,
groups and views alike.

    t[index] --normalize_index--> (single, rows) --> TensorView(tensor, single, rows)
    view.numpy() --> tensor._sample(row) / tensor._read_rows(rows)

A TensorView reads through its Tensor, so it stays valid across commits as the Tensor does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slicewise.format.errors import DatasetError
from slicewise.format.htypes_media import LINK_HTYPES, link_bytes, plain_arrays

if TYPE_CHECKING:
    from slicewise.dataset.tensor import Tensor


def normalize_index(index, length: int):
    """-> (single_row or None, rows as range or int64 array)."""
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if i < 0:
            i += length
        if not 0 <= i < length:
            raise IndexError(f"index {index} out of range for length {length}")
        return i, None
    if isinstance(index, slice):
        return None, range(*index.indices(length))
    if isinstance(index, range):
        return None, normalize_index(slice(index.start, index.stop, index.step), length)[1]
    if isinstance(index, tuple):
        raise IndexError("multi-dimensional indexing: select rows first, then index the array")
    arr = np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (length,):
            raise IndexError(f"boolean index of shape {arr.shape} for length {length}")
        return None, np.nonzero(arr)[0].astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise IndexError(f"cannot index rows with {type(index).__name__}")
    arr = arr.astype(np.int64).reshape(-1)
    bad = (arr < -length) | (arr >= length)
    if bad.any():
        raise IndexError(f"index {int(arr[bad][0])} out of range for length {length}")
    arr = np.where(arr < 0, arr + length, arr)
    return None, arr


class TensorView:
    """Rows of a tensor: one row (`t[i]`) or several (`t[i:j]`, `t[[1, 5]]`)."""

    def __init__(self, tensor: Tensor, single: int | None, rows):
        self.tensor = tensor
        self._single = single
        self._rows = rows

    @property
    def index(self):
        return self._single if self._single is not None else self._rows

    def __len__(self) -> int:
        if self._single is not None:
            raise TypeError("a single row has no len(); use .shape")
        return len(self._rows)

    def _values(self) -> list:
        if self._single is not None:
            return [self.tensor._sample(self._single)]
        return self.tensor._read_rows(self._rows)

    def numpy(self, aslist: bool = False, fetch_chunks: bool = True, copy: bool = True):
        """One row: its array. Several: one array when all shapes agree (and not aslist),
        else a list of arrays.

        copy=False: when the rows lie in one uncompressed chunk of one sample shape (what a
        dask block of `.dask()` reads), the array is a read-only view of the stored bytes
        (the chunk file's memory map): no copy. Otherwise, a fresh array as with copy=True.
        """
        htype = self.tensor.htype
        if self._single is not None:
            return _as_numpy(self.tensor._sample(self._single), htype)
        rows = self._rows
        meta = self.tensor.meta
        if (
            not aslist
            and isinstance(rows, range)
            and rows.step == 1
            and rows.stop <= len(self.tensor)
            and plain_arrays(meta)
        ):
            blocks = self.tensor._read_range(rows.start, rows.stop, stack=True)
            if not blocks:
                return (
                    np.zeros((0, *self.tensor._dims()), dtype=self.tensor.dtype)
                    if not self.tensor.is_ragged and self.tensor.dtype is not None
                    else []
                )
            if all(b.shape[1:] == blocks[0].shape[1:] for b in blocks):
                if len(blocks) > 1:
                    return np.concatenate(blocks)
                return blocks[0].copy() if copy else blocks[0]
            values = [row for b in blocks for row in b]
            return [v.copy() for v in values]
        values = [_as_numpy(v, htype) for v in self._values()]
        if aslist or htype == "polygon":  # polygons: a list per row, as in Deep Lake 3
            return values
        if not values:
            dims = self.tensor._dims()
            if self.tensor.dtype is not None and None not in dims and htype not in ("text", "json"):
                return np.zeros((0, *dims), dtype=self.tensor.dtype)
            return []
        first = values[0].shape
        if all(v.shape == first for v in values):
            return np.stack(values)
        return values

    def data(self, aslist: bool = False) -> dict:
        """Deep Lake 3's data(): {"value": ...} (text: str, json: object; class_label adds
        "text" with the class names)."""
        meta = self.tensor.meta
        values = self._values()
        if meta.htype in ("text", "json"):
            value = values[0] if self._single is not None else values
            return {"value": value}
        if meta.htype == "class_label":
            names = meta.class_names or []

            def label_names(ids):
                return [names[int(i)] if int(i) < len(names) else int(i) for i in ids]

            if self._single is not None:
                return {"value": values[0], "text": label_names(values[0])}
            return {"value": values, "text": [label_names(v) for v in values]}
        value = self.numpy(aslist=aslist)
        return {"value": value}

    def text(self):
        data = self.data()
        if self.tensor.htype == "class_label":
            return data["text"]
        return data["value"]

    def tobytes(self) -> bytes:
        """The stored bytes of one row (for a passthrough JPEG: the file's bytes; for a
        link: the linked file's bytes, fetched)."""
        if self._single is None:
            raise DatasetError("tobytes() needs a single row, e.g. t[3].tobytes()")
        state = self.tensor._state
        cum = state.cum_rows
        row = self._single
        k = int(cum.searchsorted(row, side="right")) - 1
        if k >= len(state.keys):
            self.tensor._past_end(row)  # raises unless a padded view's row
            return b""  # an empty sample has no stored bytes
        reader = self.tensor.dataset._reader
        data = reader.sample_bytes(state.full_key(k), row - int(cum[k]))
        if state.meta.htype in LINK_HTYPES:
            return link_bytes(data, reader.storage)
        return data

    @property
    def shape(self) -> tuple[int | None, ...]:
        tensor = self.tensor
        if self._single is not None:
            if self._single >= len(tensor):
                empty = tensor._past_end(self._single)
                return empty.shape if isinstance(empty, np.ndarray) else (1,)
            k, local = tensor._locate(self._single)
            reader = tensor.dataset._reader
            key = tensor._state.full_key(k)
            head = reader.header(key)
            if local >= head.n:
                raise reader._short(key, head, local + 1)
            shape = head.shape(local)
            if tensor.htype == "image.rgb" and len(shape) == 2:
                shape = (*shape, 3)
            elif tensor.htype == "image.gray" and len(shape) == 2:  # written as (H, W) once
                shape = (*shape, 1)
            return shape
        shapes = {self.tensor[int(r)].shape for r in self._rows}
        if len(shapes) == 1:
            return (len(self._rows), *shapes.pop())
        ndims = {len(s) for s in shapes}
        if len(ndims) != 1:
            return (len(self._rows), None)
        dims = list(zip(*shapes, strict=False))
        return (len(self._rows), *(d[0] if len(set(d)) == 1 else None for d in dims))

    def __getitem__(self, index):
        if self._single is not None:
            return self.numpy()[index]
        single, rows = normalize_index(index, len(self._rows))
        base = self._rows
        if single is not None:
            return TensorView(self.tensor, int(base[single]), None)
        if isinstance(base, range) and isinstance(rows, range):
            return TensorView(self.tensor, None, base[rows.start : rows.stop : rows.step])
        return TensorView(self.tensor, None, np.asarray(base, dtype=np.int64)[np.asarray(rows)])

    def __iter__(self):
        if self._single is not None:
            raise TypeError("iterate over a tensor or a range of rows, not a single row")
        for r in self._rows:
            yield TensorView(self.tensor, int(r), None)

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self.numpy())
        return array.astype(dtype) if dtype is not None else array

    def __repr__(self) -> str:
        where = self._single if self._single is not None else self._rows
        return f"TensorView({self.tensor.name!r}, {where})"


def _as_numpy(value, htype: str):
    if htype == "text":
        return np.array([value])
    if htype == "json":
        out = np.empty(1, dtype=object)
        out[0] = value
        return out
    return value
