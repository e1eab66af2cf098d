"""Tensor: a column of a dataset (its rows selected by an index: tensor_view.py).

A Tensor holds only its dataset and its name: every access resolves the tensor's state in
the dataset's current view, so a Tensor object stays valid across commits.

Reading one sample:  row -> chunk k (searchsorted over cum_rows) -> cached header ->
one ranged read / mmap slice -> decode_sample.

In a padded view of a dataset (`Dataset.padded`) a tensor is indexed over the view's rows
(the longest tensor's length); rows past its own end read as `empty_sample()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from slicewise.dataset.info import InfoDict
from slicewise.dataset.tensor_view import TensorView, normalize_index
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes_media import plain_arrays
from slicewise.format.manifest import TensorState
from slicewise.format.samples import apply_label_remap, decode_sample, with_location

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slicewise.dataset.dataset import Dataset
    from slicewise.format.htypes import TensorMeta


class Tensor:
    """One column of a Dataset. Deep Lake 3 names: append, extend, numpy, data, tobytes,
    shape, dtype, htype, info, len, indexing, iteration.

    Get one from its dataset (`ds.images`, `ds["images"]`); `t[i]`, `t[i:j]`,
    `t[[1, 5]]` are row views with `.numpy()`, `.tobytes()`, `.text()`; `t[i] = x`
    rewrites a row.

    Args:
        dataset: the Dataset it belongs to.
        name: its full name ("group/name" in a group).

    Example:
        >>> ds = sw.empty("memory://doc-tensor", overwrite=True)
        >>> t = ds.create_tensor("x", dtype="int32")
        >>> t.extend([1, 2, 3]); t[1].numpy()
        array([2], dtype=int32)
    """

    def __init__(self, dataset: Dataset, name: str):
        self.dataset = dataset
        self.name = name

    # -- state

    @property
    def _state(self) -> TensorState:
        try:
            return self.dataset._data_view().tensors[self.name]
        except KeyError:
            raise DatasetError(
                f"tensor {self.name!r} does not exist in {self.dataset.path} at version "
                f"{self.dataset.version}"
            ) from None

    @property
    def meta(self) -> TensorMeta:
        """The tensor's stored metadata (htype, dtype, compressions, class names, info)."""
        return self._state.meta

    @property
    def key(self) -> str:
        """Deep Lake 3's name for `name`."""
        return self.name

    @property
    def htype(self) -> str:
        """The htype ("generic", "image", "class_label", "text", ...)."""
        return self.meta.htype

    @property
    def dtype(self) -> np.dtype | None:
        """The samples' numpy dtype (object for text); None until the first sample."""
        dtype = self.meta.dtype
        if dtype is None:
            return None
        return np.dtype(object) if dtype == "str" else np.dtype(dtype)

    @property
    def sample_compression(self) -> str | None:
        """The per-sample compression ("jpeg", "png", "lz4", ...) or None."""
        return self.meta.sample_compression

    @property
    def chunk_compression(self) -> str | None:
        """The whole-chunk compression or None."""
        return self.meta.chunk_compression

    @property
    def base_htype(self) -> str:
        """The htype before its first "." ("image" for "image.rgb")."""
        return self.meta.htype.split(".")[0]

    @property
    def info(self) -> InfoDict:
        """The tensor's info: a dict (with class_names for a class label);
        `t.info.update(key=value)` writes a new version."""
        meta = self.meta
        data = dict(meta.info)
        if meta.htype == "class_label":
            data["class_names"] = list(meta.class_names or [])
        if meta.htype_kwargs:
            data.update(meta.htype_kwargs)
        return InfoDict(data, self._write_info)

    def _write_info(self, changes: dict, replace: bool) -> None:
        if replace:
            raise DatasetError(f"tensor {self.name!r}: info keys cannot be deleted; "
                               "set them to another value")
        self.dataset._set_info(self.name, changes)

    def __len__(self) -> int:
        return self._state.length

    def _index_length(self) -> int:
        """How many rows indexing covers: the tensor's own, or a padded view's."""
        if self.dataset._pad_tensors:
            return max(self._state.length, self.dataset.max_len)
        return self._state.length

    def empty_sample(self) -> Any:
        """What a row past this tensor's end reads as in a padded view (Deep Lake 3's
        get_empty_sample): text "", json {}, otherwise a numpy array of shape (0,) * ndim
        of the tensor's dtype. ndim is the stored samples' (at least 1: an empty scalar
        has no 0-d form); a tensor with no samples yet gives images 3, others 1, and a
        generic tensor with no dtype yet float64 (what it would store by default).

        Returns:
            "", {} or an empty numpy array.

        Example:
            >>> ds.labels.empty_sample()                         # doctest: +SKIP
            array([], dtype=uint32)
        """
        meta = self.meta
        if meta.htype == "text":
            return ""
        if meta.htype == "json":
            return {}
        state = self._state
        if state.min_shape:
            ndim = len(state.min_shape[0])
        else:
            ndim = 3 if meta.is_image else 1
        dtype = np.dtype(meta.dtype) if meta.dtype is not None else np.dtype(np.float64)
        return np.zeros((0,) * max(1, ndim), dtype=dtype)

    def _past_end(self, row: int):
        """The sample of a row past the tensor's end: only a padded view has such rows."""
        if self.dataset._pad_tensors and 0 <= row < self._index_length():
            return self.empty_sample()
        raise IndexError(f"index {row} out of range for tensor {self.name!r}")

    @property
    def num_samples(self) -> int:
        """Deep Lake 3's name for `len(t)`: the stored rows."""
        return len(self)

    def _dims(self) -> tuple[int | None, ...]:
        state = self._state
        if not state.min_shape:
            return ()
        lo = np.min(np.asarray(state.min_shape, dtype=np.int64), axis=0)
        hi = np.max(np.asarray(state.max_shape, dtype=np.int64), axis=0)
        return tuple(int(a) if a == b else None for a, b in zip(lo, hi, strict=False))

    @property
    def shape(self) -> tuple[int | None, ...]:
        """(len, *sample dims), None for every dimension that varies between samples."""
        return (len(self), *self._dims())

    @property
    def is_ragged(self) -> bool:
        """True when samples differ in shape (some dimension of `shape` is None)."""
        return any(d is None for d in self._dims())

    @property
    def ndim(self) -> int:
        """`len(t.shape)`: 1 + the samples' dimensions."""
        return len(self.shape)

    def chunk_row_ranges(self) -> list[tuple[int, int]]:
        """(start, stop) row boundaries of the stored chunks, in order.

        Returns:
            A list of (start, stop) pairs.

        Example:
            >>> ds.images.chunk_row_ranges()                     # doctest: +SKIP
            [(0, 120), (120, 240)]
        """
        cum = self._state.cum_rows
        return [(int(cum[k]), int(cum[k + 1])) for k in range(len(cum) - 1)]

    # -- reading

    def _locate(self, row: int) -> tuple[int, int]:
        cum = self._state.cum_rows
        k = int(np.searchsorted(cum, row, side="right")) - 1
        return k, row - int(cum[k])

    def _sample(self, row: int):
        state = self._state
        cum = state.cum_rows
        k = int(cum.searchsorted(row, side="right")) - 1
        if k >= len(state.keys):
            return self._past_end(row)
        local = row - int(cum[k])
        key = state.full_key(k)
        reader = self.dataset._reader
        head = reader.header(key)
        meta = state.meta
        try:
            if plain_arrays(meta):
                # the header check guarantees the span's length fits shape and dtype
                span = reader.span_bytes(key, local, local + 1)
                array = np.frombuffer(span, dtype=head.dtype).reshape(head.shape(local)).copy()
                remap = state.chunk_remap(k)
                if remap is not None:
                    array = apply_label_remap(array, remap)
                return array
            data = reader.sample_bytes(key, local)
            value = decode_sample(meta, data, head.shape(local), head.dtype, state.chunk_remap(k),
                                  reader.storage)
            if isinstance(value, np.ndarray) and not value.flags.writeable:
                value = value.copy()  # decoders hand out views of bytes: torch.from_numpy warns
            return value
        except CorruptionError as exc:
            raise with_location(exc, reader.storage.full_path(key), local) from None

    def _read_rows(self, rows) -> list:
        """Decoded samples of `rows` (range or array), reading each chunk once."""
        if isinstance(rows, range) and rows.step == 1:
            length = self._state.length
            if rows.stop <= length:
                return self._read_range(rows.start, rows.stop)
            # a padded view's rows run past the end: the stored ones, then empty samples
            padding = range(max(rows.start, length), rows.stop)
            if padding:
                self._past_end(padding[-1])  # raises unless the view has that many rows
            stored = self._read_range(rows.start, padding.start)
            return stored + [self.empty_sample() for _ in padding]
        return [self._sample(int(r)) for r in rows]

    def _read_range(self, start: int, stop: int, stack: bool = False):
        state = self._state
        meta = state.meta
        if stop <= start:
            return []
        cum = state.cum_rows
        reader = self.dataset._reader
        first = int(np.searchsorted(cum, start, side="right")) - 1
        out: list = []
        blocks: list[np.ndarray] = []
        raw = plain_arrays(meta)
        plain_text = meta.sample_compression is None and meta.htype == "text"
        k = first
        while k < len(state.keys) and int(cum[k]) < stop:
            a = max(start, int(cum[k])) - int(cum[k])
            b = min(stop, int(cum[k + 1])) - int(cum[k])
            key = state.full_key(k)
            head = reader.header(key)
            remap = state.chunk_remap(k)
            # a whole chunk's checksum is checked (once per process and file, see reader.py)
            span = reader.span_bytes(key, a, b, verify=a == 0 and b == head.n)
            if raw and head.uniform and remap is None:
                block = np.frombuffer(span, dtype=head.dtype).reshape((b - a, *head.shape(0)))
                if stack:
                    blocks.append(block)
                else:
                    out.extend(block.copy())
            elif plain_text and (texts := _decode_texts(span, head.offsets[a : b + 1])):
                (blocks if stack else out).extend(texts)
            else:  # one sample at a time; also names the sample when one does not decode
                base = int(head.offsets[a])
                for i in range(a, b):
                    lo, hi = int(head.offsets[i]) - base, int(head.offsets[i + 1]) - base
                    try:
                        value = decode_sample(meta, span[lo:hi], head.shape(i), head.dtype,
                                              remap, reader.storage)
                    except CorruptionError as exc:
                        raise with_location(exc, reader.storage.full_path(key), i) from None
                    if isinstance(value, np.ndarray) and not value.flags.writeable:
                        value = value.copy()
                    if stack:
                        blocks.append(value[None] if isinstance(value, np.ndarray) else value)
                    else:
                        out.append(value)
            k += 1
        if stack:
            return blocks
        return out

    def _read_range_into(self, start: int, stop: int, out: np.ndarray) -> None:
        """Rows [start, stop) of a tensor of one sample shape into `out` (C-contiguous,
        writable, of shape (stop - start, *sample shape)): what a `.dask()` block reads.

        Chunks of uncompressed samples in out's dtype go from the file straight into `out`,
        one read per chunk, nothing in between; others are decoded and copied in. A whole
        chunk's checksum is checked, as in `_read_range`."""
        if stop <= start:
            return
        state = self._state
        meta = state.meta
        cum = state.cum_rows
        reader = self.dataset._reader
        raw = plain_arrays(meta)
        sample_shape = tuple(out.shape[1:])
        row_bytes = int(np.prod(sample_shape, dtype=np.int64)) * out.dtype.itemsize
        out_bytes = memoryview(out.reshape(-1).view(np.uint8))
        k = int(np.searchsorted(cum, start, side="right")) - 1
        while k < len(state.keys) and int(cum[k]) < stop:
            first, last = max(start, int(cum[k])), min(stop, int(cum[k + 1]))
            a, b = first - int(cum[k]), last - int(cum[k])
            if b > a:
                key = state.full_key(k)
                head = reader.header(key)
                if (
                    raw
                    and head.uniform
                    and head.shape(0) == sample_shape
                    and np.dtype(head.dtype) == out.dtype
                    and state.chunk_remap(k) is None
                ):
                    at = (first - start) * row_bytes
                    reader.read_into(key, a, b, out_bytes[at : at + (b - a) * row_bytes],
                                     verify=a == 0 and b == head.n)
                else:
                    at = first - start
                    for block in self._read_range(first, last, stack=True):
                        out[at : at + len(block)] = block
                        at += len(block)
            k += 1

    def _private_rows(self, start: int, stop: int) -> np.ndarray | None:
        """Rows [start, stop), when they lie in one local chunk of uncompressed samples of the
        tensor's dtype and one shape, as a writable array over a private (copy-on-write) map
        of the chunk file: no copy, and writes stay in this process. None otherwise."""
        state = self._state
        meta = state.meta
        if stop <= start or not plain_arrays(meta) or self.dtype is None:
            return None
        cum = state.cum_rows
        k = int(np.searchsorted(cum, start, side="right")) - 1
        if int(cum[k + 1]) < stop or state.chunk_remap(k) is not None:
            return None
        key = state.full_key(k)
        reader = self.dataset._reader
        head = reader.header(key)
        if not head.uniform or np.dtype(head.dtype) != self.dtype:
            return None
        a, b = start - int(cum[k]), stop - int(cum[k])
        span = reader.private_span(key, a, b, verify=a == 0 and b == head.n)
        if span is None:
            return None
        return np.frombuffer(span, dtype=self.dtype).reshape((b - a, *head.shape(0)))

    def _stored(self) -> TensorView:
        """Every stored row (a padded view's empty samples past the end are not)."""
        return TensorView(self, None, range(len(self)))

    def numpy(self, aslist: bool = False, fetch_chunks: bool = True,
              copy: bool = True) -> np.ndarray | list:
        """Every stored row: one array when all samples have one shape (and not
        `aslist`), else a list of arrays.

        Args:
            aslist: a list of per-row arrays.
            fetch_chunks: Deep Lake 3's; no effect.
            copy: False may return a read-only view of the stored bytes.

        Returns:
            An array of shape (len, *sample shape), or a list of arrays.

        Raises:
            CorruptionError: a stored byte does not match its checksum.

        Example:
            >>> ds.labels.numpy().shape        # doctest: +SKIP
            (600, 1)
        """
        return self._stored().numpy(aslist=aslist, copy=copy)

    def data(self, aslist: bool = False) -> dict:
        """Deep Lake 3's data(): {"value": ...}; text and json give their values,
        class_label adds "text" (the class names).

        Args:
            aslist: values as a list of per-row arrays.

        Returns:
            {"value": ...} (and "text" for a class label).

        Example:
            >>> ds.labels.data()["text"]                         # doctest: +SKIP
            ['cat', 'dog']
        """
        return self._stored().data(aslist=aslist)

    def tobytes(self) -> bytes:
        """Refused on a whole tensor: take one row, `t[i].tobytes()`.

        Raises:
            DatasetError: always.

        Example:
            >>> ds.images[0].tobytes()[:2]                       # doctest: +SKIP
            b'\\xff\\xd8'
        """
        raise DatasetError(f"tensor {self.name!r}: tobytes() needs one row, e.g. t[0].tobytes()")

    def text(self) -> list:
        """Every stored row as text: a text tensor's strings, a class label's names.

        Returns:
            A list, one entry per row.

        Example:
            >>> ds.labels.text()                                 # doctest: +SKIP
            [['cat'], ['dog']]
        """
        return self._stored().text()

    def __getitem__(self, index) -> TensorView:
        if type(index) is int and index >= 0:  # hot path: one row, checked once here
            if index >= self._state.length and index >= self._index_length():
                raise IndexError(f"index {index} out of range for tensor {self.name!r}")
            return TensorView(self, index, None)
        single, rows = normalize_index(index, self._index_length())
        return TensorView(self, single, rows)

    def __iter__(self):
        for i in range(len(self)):
            yield TensorView(self, i, None)

    def __repr__(self) -> str:
        try:
            return (
                f"Tensor(key={self.name!r}, htype={self.htype!r}, shape={self.shape}, "
                f"dtype={self.meta.dtype!r}, sample_compression={self.sample_compression!r})"
            )
        except DatasetError:
            return f"Tensor(key={self.name!r}, <missing>)"

    def _repr_html_(self) -> str:
        """Jupyter's view: htype, shape, dtype, compression, size; thumbnails of images."""
        from slicewise.integrations.html import tensor_html

        return tensor_html(self)

    # -- writing

    def append(self, value: Any) -> None:
        """Append one sample (an array, a number, text, a dict for json, or `sw.read`
        of a file). Commits at once outside `with ds:`.

        Args:
            value: the sample.

        Raises:
            DatasetError: the sample does not fit the tensor (htype, dtype, dimensions);
                ReadOnlyError on a read-only dataset.

        Example:
            >>> ds.labels.append(np.uint32(1))   # doctest: +SKIP
        """
        self.dataset._write(lambda w: w.append(self.name, value))

    def extend(self, values: Any) -> None:
        """Append many samples: a sequence, an array (one sample per first-axis row) or
        a dask array (written by parallel workers). All or none are appended.

        Args:
            values: the samples.

        Raises:
            DatasetError: a sample does not fit (its position is named), or a 0-d array;
                ReadOnlyError on a read-only dataset.

        Example:
            >>> ds.labels.extend(["cat", "dog"])                 # doctest: +SKIP
        """
        if hasattr(values, "__dask_graph__"):
            from slicewise.integrations.dask import extend_from_dask

            extend_from_dask(self, values)
            return
        if isinstance(values, np.ndarray) and values.ndim == 0:
            raise DatasetError(f"tensor {self.name!r}: extend takes a sequence of samples")
        self.dataset._write(lambda w: w.extend(self.name, values), many=True)

    def __setitem__(self, index, value) -> None:
        single, rows = normalize_index(index, len(self))
        if single is not None:
            self.dataset._update(self.name, {single: value})
            return
        rows = list(rows)
        if isinstance(value, np.ndarray) and value.shape[:1] == (len(rows),):
            values = list(value)
        elif isinstance(value, (list, tuple)) and len(value) == len(rows):
            values = list(value)
        else:
            raise DatasetError(
                f"tensor {self.name!r}: assigning {len(rows)} rows needs {len(rows)} values"
            )
        self.dataset._update(self.name, dict(zip(rows, values, strict=False)))

    # -- integrations (implemented in slicewise.integrations, imported on use)

    def dask(self, *, block_bytes: int | None = None) -> Any:
        """The tensor as a lazy dask.array over its stored chunks (bounded memory).
        Builds only the graph; blocks are runs of whole stored chunks.

        Args:
            block_bytes: the most bytes per block (default 64 MiB, less for a small
                tensor; 0: one block per stored chunk).

        Returns:
            A dask.array of shape `t.shape`.

        Raises:
            ValueError: a ragged tensor (use `dask_bag`).
            TypeError: samples that are not numeric arrays (text, json).
            ImportError: dask is not installed.

        Example:
            >>> ds.frames.dask()[:, :10].mean().compute()   # doctest: +SKIP
        """
        from slicewise.integrations.dask import tensor_to_dask

        return tensor_to_dask(self, block_bytes=block_bytes)

    def dask_bag(self) -> Any:
        """The tensor as a dask.bag of samples, one partition per stored chunk: works for
        ragged tensors and non-array htypes.

        Returns:
            A dask.bag.

        Raises:
            ImportError: dask is not installed.

        Example:
            >>> ds.captions.dask_bag().map(len).sum().compute()  # doctest: +SKIP
        """
        from slicewise.integrations.dask import tensor_to_dask_bag

        return tensor_to_dask_bag(self)

    def to_zarr(self, store: Any, *, name: str | None = None,
                dimension_names: Sequence[str] | None = None, chunk_rows: int | None = None,
                zarr_format: int | None = None, overwrite: bool = False, pool: Any = None,
                num_workers: int | None = None, progress: bool = False,
                consolidate: bool = True, storage_options: dict | None = None,
                **array_options: Any) -> Any:
        """Write the tensor into a Zarr array in the group at `store`, in parallel, with
        dimension names so that `xarray.open_zarr(store)` labels its axes.

        Args:
            store: a path, URL or zarr store.
            name: the array's name (default: the tensor's).
            dimension_names: default: those it was imported with, else ("sample",
                "dim_1", ...); images ("sample", "height", "width", "channel").
            chunk_rows: rows per Zarr chunk.
            zarr_format: 2 or 3.
            overwrite: replace an existing array.
            pool: an `sw.Pool` to run on.
            num_workers: workers.
            progress: show a progress bar.
            consolidate: consolidate the group's metadata.
            storage_options: fsspec options for a URL store.
            **array_options: zarr create_array options (e.g. compressors=...).

        Returns:
            The zarr Array.

        Raises:
            ValueError: a ragged tensor, or bad dimension names.
            TypeError: a tensor of neither numbers nor text (json).
            FileExistsError: the array exists, without overwrite.
            ImportError: zarr is not installed.

        Example:
            >>> ds.frames.to_zarr("frames.zarr", dimension_names=("time", "y", "x"))  # doctest: +SKIP
        """
        from slicewise.integrations.zarr import tensor_to_zarr

        return tensor_to_zarr(self, store, name=name, dimension_names=dimension_names,
                              chunk_rows=chunk_rows, zarr_format=zarr_format,
                              overwrite=overwrite, pool=pool, num_workers=num_workers,
                              progress=progress, consolidate=consolidate,
                              storage_options=storage_options, **array_options)


def _decode_texts(span: bytes | memoryview, offsets: np.ndarray) -> list[str] | None:
    """The strings of consecutive uncompressed text samples, whose bounds within the chunk
    are `offsets` (one more than samples): one pass, no per-sample header lookups. None if
    some sample is not UTF-8, so the caller decodes one by one and names the sample."""
    data = bytes(span)
    bounds = (offsets - offsets[0]).tolist()
    try:
        return [data[lo:hi].decode("utf-8") for lo, hi in zip(bounds, bounds[1:], strict=False)]
    except UnicodeDecodeError:
        return None
