"""Dataset: versioned tensors over the format layer, with Deep Lake 3's API.

State of an open Dataset (one process):
- `_base`: the published Version it reads (the newest when opened, or a pinned one).
- `_txn`: pending changes (Transaction) or None.
- `_writer`: the DatasetWriter that buffers appended samples of the pending transaction;
  full buffers become chunk files at once, the rest on flush. Same class workers use.
- `_with_depth`: open `with ds:` blocks. Outside them every write commits at once.
- `_syncs`: flushes of chunk files that writers left unsynced (`finish(sync=False)`),
  started by `sync_receipt` on helper threads; the commit that publishes them waits.
- `_pad_tensors`: a padded read view (`ds.padded()`, `sw.load(..., pad_tensors=True)`,
  Deep Lake 3's `pad_tensors`): len() is the longest tensor's length and a shorter
  tensor's rows past its end read as empty samples (Tensor.empty_sample). Always
  read-only, and it travels with the pickled handle (eval's `pad_data_in` relies on it).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import numpy as np

from slicewise.dataset.tensor import Tensor, TensorView, _normalize_index
from slicewise.format.chunk import encode_chunk
from slicewise.format.commit import Transaction, apply, publish
from slicewise.format.errors import CorruptionError, DatasetError, ReadOnlyError
from slicewise.format.htypes import (
    SampleEncoder,
    apply_label_remap,
    make_tensor_meta,
    validate_tensor_name,
    with_location,
)
from slicewise.format.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MARKER_KEY,
    Version,
    chunk_key,
    find_version,
    list_version_seqs,
    read_latest,
    read_version,
)
from slicewise.format.reader import ChunkReader
from slicewise.format.storage import Storage, SyncQueue, open_storage
from slicewise.format.writer import DEFAULT_CHUNK_TARGET_BYTES, DatasetWriter, shape_bounds

# What a dataset marker may ask for (a marker may come from a stranger).
MIN_CHUNK_TARGET = 1
MAX_CHUNK_TARGET = 1024**3


class Dataset:
    """A chunked, compressed, versioned dataset of tensors. Open one with `sw.empty`,
    `sw.load` or `sw.dataset`."""

    def __init__(
        self,
        storage: Storage,
        base: Version,
        *,
        read_only: bool = False,
        pinned: bool = False,
        storage_options: dict | None = None,
        chunk_target_bytes: int = DEFAULT_CHUNK_TARGET_BYTES,
        url: str | None = None,
        pad_tensors: bool = False,
    ):
        self._storage = storage
        self._url = url if url is not None else storage.url
        self._storage_options = dict(storage_options or {})
        self._reader = ChunkReader(storage)
        self._base = base
        self._read_only = bool(read_only)
        self._pinned = pinned
        self._txn: Transaction | None = None
        self._writer: DatasetWriter | None = None
        self._with_depth = 0
        self._view_cache: Version | None = None
        self._syncs: SyncQueue | None = None
        self._pad_tensors = bool(pad_tensors)
        self.chunk_target_bytes = int(chunk_target_bytes)

    # ---- identity, pickling

    @property
    def path(self) -> str:
        return self._url

    url = path

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def read_only(self) -> bool:
        return self._read_only or self._pinned or self._pad_tensors

    @property
    def pad_tensors(self) -> bool:
        """True for a padded read view (see `padded`)."""
        return self._pad_tensors

    def __reduce__(self):
        # A light handle: url, version, options, padding. Pending changes do not travel.
        return (
            _open_pickled,
            (
                self._url,
                self._base.id,
                self._storage_options,
                self.chunk_target_bytes,
                self._pad_tensors,
            ),
        )

    def __repr__(self) -> str:
        padded = ", padded" if self._pad_tensors else ""
        return (
            f"Dataset(path={self._url!r}, version={self.version!r}, "
            f"tensors={list(self._view().tensors)}{padded})"
        )

    def padded(self) -> Dataset:
        """A read-only view of this version whose tensors are padded to the longest one
        (Deep Lake 3's `pad_tensors`, what eval's `pad_data_in=True` reads):
        `len(view) == ds.max_len`, and a shorter tensor's rows past its end read as an
        empty sample: for numeric and image tensors a numpy array of shape (0,) * ndim
        (at least one dimension) of the tensor's dtype, for text "", for json {}.
        `tobytes()` of such a row is b"". A tensor keeps its own `len()` (so
        `view.labels.numpy()` is its stored rows), but is indexed over the view's rows:
        `view.labels[i]` is `view[i].labels`. Writing through the view raises
        ReadOnlyError. This dataset is unchanged.

        >>> len(ds.images), len(ds.labels)          # 5, 3
        >>> view = ds.padded(); len(view)           # 5
        >>> view[4].labels.numpy()                  # array([], dtype=uint32)
        """
        if self.has_pending:
            raise DatasetError(
                f"dataset {self._url} has uncommitted changes, which a padded view would "
                "not show; commit them first (ds.commit())"
            )
        view = Dataset(
            self._storage,
            self._base,
            read_only=True,
            pinned=self._pinned,
            storage_options=self._storage_options,
            chunk_target_bytes=self.chunk_target_bytes,
            url=self._url,
            pad_tensors=True,
        )
        view._reader = self._reader  # same files, same header cache
        return view

    # ---- views

    def _view(self) -> Version:
        """Base plus pending changes, without rows still buffered in the writer: enough for
        names and schemas, and cheap (no flush)."""
        if self._txn is None:
            return self._base
        if self._view_cache is None:
            self._view_cache = apply(self._base, self._txn)
        return self._view_cache

    def _data_view(self) -> Version:
        """The version reads see: buffered rows are flushed to (small) chunk files first, so
        reading inside `with ds:` sees every append."""
        if self._txn is None and self._writer is None:
            return self._base
        if self._writer is not None and self._writer_has_rows():
            self._flush_writer()
        return self._view()

    def _writer_has_rows(self) -> bool:
        writer = self._writer
        return any(buf.samples or buf.chunks for buf in writer._buffers.values())

    def _touch(self) -> None:
        self._view_cache = None

    # ---- tensors

    @property
    def tensors(self) -> dict[str, Tensor]:
        return {name: Tensor(self, name) for name in self._view().tensors}

    def __getattr__(self, name: str) -> Tensor:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._view().tensors:
            return Tensor(self, name)
        raise AttributeError(
            f"dataset {self._url} has no tensor or attribute {name!r}; "
            f"tensors: {list(self._view().tensors)}"
        )

    def __getitem__(self, index):
        if isinstance(index, str):
            if index not in self._view().tensors:
                raise KeyError(f"dataset {self._url} has no tensor {index!r}")
            return Tensor(self, index)
        single, rows = _normalize_index(index, len(self))
        return RowView(self, single, rows)

    def __len__(self) -> int:
        """Rows: the shortest tensor's length (Deep Lake 3), the longest one's in a padded
        view."""
        return self.max_len if self._pad_tensors else self.min_len

    @property
    def max_len(self) -> int:
        lengths = [t.length for t in self._data_view().tensors.values()]
        return max(lengths) if lengths else 0

    @property
    def min_len(self) -> int:
        lengths = [t.length for t in self._data_view().tensors.values()]
        return min(lengths) if lengths else 0

    def __iter__(self):
        for i in range(len(self)):
            yield RowView(self, i, None)

    def __contains__(self, name: str) -> bool:
        return name in self._view().tensors

    def create_tensor(
        self,
        name: str,
        htype: str = "generic",
        dtype=None,
        sample_compression: str | None = None,
        chunk_compression: str | None = None,
        exist_ok: bool = False,
        *,
        hidden: bool = False,
        verbose: bool = True,
        verify: bool = False,
        create_shape_tensor: bool = True,
        create_sample_info_tensor: bool = True,
        create_id_tensor: bool = True,
        downsampling=None,
        tiling_threshold=None,
        max_chunk_size=None,
        **htype_kwargs,
    ) -> Tensor:
        """Deep Lake 3's create_tensor. Its bookkeeping flags (hidden tensors, shape/id/
        sample-info tensors, tiling, downsampling) are accepted for compatibility and have
        nothing to do here: shapes live in chunk headers, there are no hidden tensors."""
        self._check_writable()
        if hidden:
            raise DatasetError("hidden tensors are not supported")
        if downsampling is not None:
            raise DatasetError("downsampling is not supported")
        validate_tensor_name(name)
        if name in self._view().tensors:
            if exist_ok:
                return Tensor(self, name)
            raise DatasetError(f"tensor {name!r} already exists in {self._url}")
        if name in dir(type(self)):
            raise DatasetError(f"invalid tensor name {name!r}: it is a Dataset attribute")
        meta = make_tensor_meta(
            f"t{secrets.token_hex(4)}",
            name,
            htype,
            dtype,
            sample_compression,
            chunk_compression,
            htype_kwargs,
        )
        # the writer knows a fixed set of tensors: hand its rows over, the next write
        # makes a writer that knows the new tensor too
        self._flush_writer()
        self._pending().created[name] = meta
        self._touch()
        self._autocommit(f"create tensor {name!r}")
        return Tensor(self, name)

    # ---- writing

    def _check_writable(self) -> None:
        if self._pad_tensors:
            raise ReadOnlyError(
                f"dataset {self._url} is a padded read view (padded() / pad_tensors=True), "
                f"whose short tensors read as empty samples and cannot be written; write "
                f"through the dataset itself, e.g. sw.load({self._url!r})"
            )
        if self._read_only:
            raise ReadOnlyError(f"dataset {self._url} is open read-only")
        if self._pinned:
            raise ReadOnlyError(
                f"dataset {self._url} is at version {self._base.id}, not the newest; "
                "checkout() the newest version to write"
            )

    def _pending(self) -> Transaction:
        if self._txn is None:
            self._txn = Transaction()
        return self._txn

    def _class_bases(self) -> dict[str, int]:
        """Per class_label tensor, how many class names are committed (stable forever)."""
        out = {}
        for name, state in self._view().tensors.items():
            if state.meta.htype == "class_label":
                committed = self._base.tensors.get(name)
                out[name] = len(committed.meta.class_names or []) if committed else 0
        return out

    def _get_writer(self) -> DatasetWriter:
        if self._writer is None:
            view = self._view()
            self._writer = DatasetWriter(
                self._storage,
                {name: t.meta for name, t in view.tensors.items()},
                self.chunk_target_bytes,
                writer_id="parent",
                class_bases=self._class_bases(),
            )
        return self._writer

    def _flush_writer(self) -> None:
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        receipt = writer.finish()
        if receipt["tensors"]:
            self._pending().add_receipt(receipt, set(self._view().tensors))
            self._touch()

    def _write(self, op, many: bool = False) -> None:
        """Run `op(writer)`; if it fails, none of its rows stay (a single row is atomic by
        itself, multi-row ops roll the writer back to a mark)."""
        self._check_writable()
        writer = self._get_writer()
        mark = writer.mark() if many and self._with_depth else None
        try:
            op(writer)
        except BaseException:
            if self._with_depth == 0:
                self.discard()
            elif mark is not None:
                writer.rollback(mark)
            raise
        self._pending()  # rows sit in the writer; the transaction's view is unchanged
        self._autocommit("append")

    def append(self, sample: dict, skip_ok: bool = False, append_empty: bool = False) -> None:
        """Append one row: {tensor: value}. Every tensor must get a value unless skip_ok."""
        if not isinstance(sample, dict):
            raise DatasetError(
                f"ds.append takes a dict {{tensor: value}}, got {type(sample).__name__}"
            )
        self._check_row_keys(sample.keys(), skip_ok)
        self._write(lambda w: w.append_row(sample))

    def extend(self, samples: dict, skip_ok: bool = False) -> None:
        """Append rows: {tensor: sequence of values}, all sequences of the same length."""
        if not isinstance(samples, dict):
            raise DatasetError(
                f"ds.extend takes a dict {{tensor: values}}, got {type(samples).__name__}"
            )
        self._check_row_keys(samples.keys(), skip_ok)
        lengths = {name: len(values) for name, values in samples.items()}
        if len(set(lengths.values())) > 1:
            raise DatasetError(f"ds.extend needs sequences of equal length, got {lengths}")
        n = next(iter(lengths.values()), 0)
        names = list(samples)

        def op(writer: DatasetWriter) -> None:
            for i in range(n):
                try:
                    writer.append_row({name: samples[name][i] for name in names})
                except DatasetError as exc:
                    raise type(exc)(f"{exc} (row {i} of the extend)") from exc

        self._write(op, many=True)

    def _check_row_keys(self, keys, skip_ok: bool) -> None:
        tensors = set(self._view().tensors)
        unknown = set(keys) - tensors
        if unknown:
            raise DatasetError(f"tensor(s) {sorted(unknown)} do not exist in {self._url}")
        missing = tensors - set(keys)
        if missing and not skip_ok:
            raise DatasetError(
                f"no value for tensor(s) {sorted(missing)}; pass skip_ok=True to leave them shorter"
            )

    def _update(self, name: str, values: dict[int, Any]) -> None:
        """ds.<t>[i] = x: copy-on-write of the chunks holding the rows."""
        self._check_writable()
        view = self._data_view()
        state = view.tensors[name]
        meta = state.meta
        txn = self._pending()
        committed = self._base.tensors.get(name)
        n_committed = len(committed.keys) if committed is not None else 0
        encoder = SampleEncoder(name, meta, self._class_bases().get(name))
        by_chunk: dict[int, dict[int, Any]] = {}
        tensor = Tensor(self, name)
        for row, value in values.items():
            k, local = tensor._locate(row)
            by_chunk.setdefault(k, {})[local] = value
        try:
            for k, updates in by_chunk.items():
                entry = self._rewrite_chunk(state, k, updates, encoder)
                if k < n_committed:
                    txn.replaced.setdefault(name, {})[k] = entry
                else:
                    txn.appended[name][k - n_committed] = entry
        except BaseException:
            if self._with_depth == 0:
                self.discard()
            raise
        self._touch()
        self._autocommit(f"update {name!r}")

    def _rewrite_chunk(self, state, k: int, updates: dict[int, Any], encoder) -> dict:
        meta = state.meta
        key = state.full_key(k)
        head = self._reader.header(key)
        payload = self._reader.payload(key)
        remap = state.chunk_remap(k)
        samples, shapes = [], []
        for i in range(head.n):
            if i in updates:
                data, shape = encoder.encode(updates[i])
            else:
                data = bytes(payload[int(head.offsets[i]) : int(head.offsets[i + 1])])
                shape = head.shape(i)
                if meta.htype == "class_label":
                    ids = np.frombuffer(_maybe_decompress(data, meta, shape), dtype=np.uint32)
                    if remap is not None:  # store view-global ids; local to `encoder`
                        try:
                            ids = apply_label_remap(ids, remap)
                        except CorruptionError as exc:
                            raise with_location(exc, self._storage.full_path(key), i) from None
                        data = encoder._compress(ids.astype(np.uint32).tobytes())
                    if ids.size:  # unnamed ids must not share a chunk with local names
                        encoder._check_unnamed_ids(int(ids.max()))
            samples.append(data)
            shapes.append(tuple(shape))
        dtype = encoder.dtype_name if meta.dtype is None else meta.dtype
        blob = encode_chunk(samples, shapes, dtype, meta.sample_compression, meta.chunk_compression)
        new_name = secrets.token_hex(16)
        self._storage.put(chunk_key(meta.id, new_name), blob)
        min_shape, max_shape = shape_bounds(shapes)
        entry = {
            "key": new_name,
            "rows": head.n,
            "nbytes": len(blob),
            "dtype": dtype,
            "min_shape": min_shape,
            "max_shape": max_shape,
        }
        if meta.htype == "class_label" and encoder.local_class_names:
            entry["labels"] = {"base": encoder.class_base, "names": encoder.local_class_names}
        return entry

    def _set_info(self, name: str, changes: dict) -> None:
        self._check_writable()
        state = self._view().tensors[name]
        changes = dict(changes)
        if "class_names" in changes and state.meta.htype == "class_label":
            # a class label's names live in its meta (labels are indexes into them); on any
            # other tensor "class_names" is ordinary info, e.g. an imported HDF5 attribute
            names = list(changes.pop("class_names"))
            current = list(state.meta.class_names or [])
            if names[: len(current)] != current:
                raise DatasetError(
                    f"tensor {name!r}: class names can only be added at the end (current {current})"
                )
            self._pending().class_names_added.setdefault(name, []).extend(names[len(current) :])
        if changes:
            try:
                json.dumps(changes)
            except TypeError as exc:
                raise DatasetError(f"tensor {name!r}: info must be JSON-able: {exc}") from exc
            info = dict(self._pending().info.get(name, state.meta.info))
            info.update(changes)
            self._pending().info[name] = info
        self._touch()
        self._autocommit(f"update info of {name!r}")

    # ---- the interface transforms use

    def writer_spec(self) -> dict:
        """A JSON-able recipe for `DatasetWriter.from_spec` in another process."""
        self._check_writable()
        view = self._data_view()
        return {
            "format_version": FORMAT_VERSION,
            "url": self._url,
            "storage_options": self._storage_options,
            "chunk_target_bytes": self.chunk_target_bytes,
            "tensors": {name: t.meta.to_json() for name, t in view.tensors.items()},
            "class_bases": self._class_bases(),
        }

    def sync_receipt(self, receipt: dict) -> None:
        """Start flushing the chunk files a writer left unsynced (`finish(sync=False)`) on
        helper threads, so the disk works while the parent waits for other writers. The
        commit that publishes them waits for these flushes (and syncs any not started)."""
        view = self._view()
        for name, tensor in receipt.get("tensors", {}).items():
            state = view.tensors.get(name)
            if state is None:
                continue  # add_receipts names the problem
            for entry in tensor.get("chunks", ()):
                if entry.get("synced", True) is False:
                    if self._syncs is None:
                        self._syncs = SyncQueue(self._storage, threads=4)
                    self._syncs.submit(chunk_key(state.meta.id, entry["key"]))

    def add_receipts(self, receipts) -> None:
        """Queue the chunks of writer receipts (in the given order) for the next commit.
        Never commits by itself, also outside `with`: call commit()."""
        self._check_writable()
        self._flush_writer()
        txn = self._pending()
        known = set(self._view().tensors)
        for receipt in receipts:
            txn.add_receipt(receipt, known)
        self._touch()

    def commit(self, message: str = "", meta: dict | None = None, allow_empty: bool = True) -> str:
        """Publish pending changes as a new version (works inside `with ds:` too)."""
        self._check_writable()
        if meta is not None:
            if not isinstance(meta, dict):
                raise DatasetError(f"commit meta must be a dict, got {type(meta).__name__}")
            try:
                json.dumps(meta)
            except TypeError as exc:
                raise DatasetError(f"commit meta must be JSON-able: {exc}") from exc
        self._flush_writer()
        txn = self._txn or Transaction()
        if txn.is_empty() and not allow_empty:
            return self._base.id
        version = publish(self._storage, self._base, txn, message, meta, self._syncs)
        self._base = version
        self._txn = None
        self._writer = None
        self._touch()
        return version.id

    def discard(self) -> None:
        """Drop pending changes. Chunk files already written stay until `gc`."""
        self._txn = None
        self._writer = None
        if self._syncs is not None:
            self._syncs.abandon()
            self._syncs = None
        self._touch()

    @property
    def has_pending(self) -> bool:
        if self._writer is not None and self._writer_has_rows():
            return True
        return self._txn is not None and not self._txn.is_empty()

    def _autocommit(self, message: str) -> None:
        if self._with_depth == 0:
            try:
                self.commit(message)
            except BaseException:
                self.discard()  # the write failed as a whole: nothing of it stays pending
                raise

    def __enter__(self) -> Dataset:
        self._with_depth += 1
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._with_depth -= 1
        if self._with_depth > 0:
            return
        if exc_type is not None:
            self.discard()
            return
        if self.has_pending:
            self.commit("with block")

    def flush(self) -> None:
        """Deep Lake 3 name: commit pending changes now."""
        if self.has_pending:
            self.commit("flush")

    # ---- versions

    @property
    def version(self) -> str:
        return self._base.id

    @property
    def version_info(self) -> dict:
        return self._base.info()

    @property
    def commit_id(self) -> str:
        return self._base.id

    def log(self) -> list[dict]:
        """Every version still stored, newest first: id, seq, parent, time, message, meta."""
        out = []
        for seq in reversed(list_version_seqs(self._storage)):
            out.append(read_version(self._storage, seq).info())
        return out

    def checkout(self, version=None) -> str:
        """Read an older version (read-only), or the newest with version=None/'latest'."""
        if self.has_pending:
            raise DatasetError("commit or discard pending changes before checkout()")
        latest = read_latest(self._storage)
        if version is None or version == "latest":
            target = latest
        else:
            target = find_version(self._storage, version)
        self._base = target
        self._pinned = target.seq != latest.seq
        self._txn = None
        self._writer = None
        self._touch()
        return target.id

    def refresh(self) -> str:
        """Move to the newest version (picks up other processes' commits)."""
        if self.has_pending:
            raise DatasetError("commit or discard pending changes before refresh()")
        if not self._pinned:
            self._base = read_latest(self._storage)
            self._touch()
        return self._base.id

    # ---- misc

    def summary(self) -> None:
        rows = [("tensor", "htype", "shape", "dtype", "compression")]
        for name, tensor in self.tensors.items():
            comp = tensor.sample_compression or tensor.chunk_compression or "None"
            rows.append((name, tensor.htype, str(tensor.shape), str(tensor.meta.dtype), comp))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"Dataset(path='{self._url}', version='{self.version}')", ""]
        for i, row in enumerate(rows):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        print("\n".join(lines))

    def to_hdf5(self, file, **kwargs):
        from slicewise.integrations.hdf5 import dataset_to_hdf5

        return dataset_to_hdf5(self, file, **kwargs)

    def to_zarr(self, store, tensors=None, **kwargs):
        """Write tensors into one Zarr group at `store` (a path, URL or zarr store), one
        array per tensor, in parallel blocks of whole Zarr chunks (a worker holds one
        ~16 MiB piece at a time, whatever the dataset's size), so that
        `xarray.open_zarr(store)` opens them as one Dataset with named dimensions. Returns
        the zarr Group.

        `tensors`: None for every tensor, a list of names, or a dict {tensor: array name}.
        Fixed-shape numeric tensors become N-D arrays, text tensors 1-D string arrays. A
        tensor with no such form (ragged, JSON) is never skipped silently: the export
        refuses before writing anything, names each such tensor, and says which
        tensors=[...] exports the others.

        `dimension_names`: one sequence for every tensor, or {tensor: names}; otherwise a
        tensor keeps the names it was imported with, else gets ("sample", "dim_1", ...)
        (images: "height", "width", "channel"). xarray needs one size per dimension name,
        so a default name that would clash across tensors takes the array's name as prefix
        ("labels_dim_1"); names you give that clash raise an error.

        Attributes: each array gets its tensor's info (and htype, under "slicewise_htype",
        which sw.from_zarr reads back). Existing arrays are an error unless
        overwrite=True. Also: chunk_rows, zarr_format (2 or 3), pool, num_workers,
        progress, consolidate, storage_options, and zarr create_array options (e.g.
        compressors=...). Zarr has no transactions: an export that fails part way leaves
        the arrays it made; run it again with overwrite=True.

        >>> ds.to_zarr("experiments.zarr", dimension_names=("time", "y", "x"))
        >>> xarray.open_zarr("experiments.zarr")
        """
        from slicewise.integrations.zarr import dataset_to_zarr

        return dataset_to_zarr(self, store, tensors, **kwargs)

    def numpy(self, aslist: bool = False) -> dict:
        return {name: t.numpy(aslist=aslist) for name, t in self.tensors.items()}


class RowView:
    """`ds[i]` (one row) or `ds[i:j]`: tensors restricted to those rows."""

    def __init__(self, dataset: Dataset, single: int | None, rows):
        self._dataset = dataset
        self._single = single
        self._rows = rows

    def _index(self):
        return self._single if self._single is not None else self._rows

    @property
    def tensors(self) -> dict[str, TensorView]:
        return {name: t[self._index()] for name, t in self._dataset.tensors.items()}

    def __getattr__(self, name: str) -> TensorView:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._dataset._view().tensors:
            return Tensor(self._dataset, name)[self._index()]
        raise AttributeError(f"no tensor {name!r}")

    def __getitem__(self, key):
        if isinstance(key, str):
            return Tensor(self._dataset, key)[self._index()]
        if self._single is not None:
            raise IndexError("a single row cannot be indexed further; pick a tensor")
        single, rows = _normalize_index(key, len(self._rows))
        base = self._rows
        if single is not None:
            return RowView(self._dataset, int(base[single]), None)
        return RowView(self._dataset, None, np.asarray(base, dtype=np.int64)[np.asarray(rows)])

    def __len__(self) -> int:
        if self._single is not None:
            raise TypeError("a single row has no len()")
        return len(self._rows)

    def __iter__(self):
        if self._single is not None:
            raise TypeError("a single row is not iterable; use .tensors")
        for r in self._rows:
            yield RowView(self._dataset, int(r), None)

    def numpy(self, aslist: bool = False) -> dict:
        return {name: view.numpy(aslist=aslist) for name, view in self.tensors.items()}

    def __repr__(self) -> str:
        return f"RowView({self._dataset.path!r}, {self._index()})"


def _maybe_decompress(data: bytes, meta, shape) -> bytes:
    from slicewise.format.codecs import BYTE_COMPRESSIONS, decompress_bounded

    if meta.sample_compression in BYTE_COMPRESSIONS:
        return decompress_bounded(data, meta.sample_compression, 4 * int(np.prod(shape)))
    return data


# ---- module functions (sw.empty, sw.load, ...) --------------------------------------------


def _marker(chunk_target_bytes: int) -> bytes:
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "chunk_target_bytes": int(chunk_target_bytes),
    }
    return json.dumps(doc).encode()


def _read_marker(storage: Storage) -> dict | None:
    try:
        data = storage.get(MARKER_KEY)
    except FileNotFoundError:
        return None
    where = storage.full_path(MARKER_KEY)
    try:
        if len(data) > 64 * 1024:
            raise ValueError(f"{len(data)} bytes, a marker is a few dozen")
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError("not a slicewise marker")
        target = doc.get("chunk_target_bytes", DEFAULT_CHUNK_TARGET_BYTES)
        if type(target) is not int or not MIN_CHUNK_TARGET <= target <= MAX_CHUNK_TARGET:
            raise ValueError(f"chunk_target_bytes {str(target)[:40]} is not a sane chunk size")
    except Exception as exc:
        raise CorruptionError(f"{where} is not a slicewise dataset marker: {exc}", where) from exc
    if doc.get("format_version") != FORMAT_VERSION:
        raise CorruptionError(
            f"{where}: format_version {str(doc.get('format_version'))[:40]}; this slicewise "
            f"reads {FORMAT_VERSION} (written by a newer slicewise?)",
            where,
        )
    return doc


def _path_str(path) -> str:
    if isinstance(path, Dataset):
        return path.path
    import os

    return path if isinstance(path, str) else os.fspath(path)


def exists(path, storage_options: dict | None = None, **deeplake_kwargs) -> bool:
    """True when `path` holds a slicewise dataset."""
    storage_options = _deeplake_options("exists", deeplake_kwargs, storage_options)
    storage = open_storage(_path_str(path), storage_options)
    return storage.exists(MARKER_KEY)


def empty(
    path,
    overwrite: bool = False,
    storage_options: dict | None = None,
    chunk_target_bytes: int | None = None,
    **deeplake_kwargs,
) -> Dataset:
    """Create a new, empty dataset at `path` (a directory, memory://..., s3://...)."""
    storage_options = _deeplake_options("empty", deeplake_kwargs, storage_options)
    url = _path_str(path)
    storage = open_storage(url, storage_options)
    if storage.exists(MARKER_KEY) or list_version_seqs(storage):
        if not overwrite:
            raise DatasetError(
                f"a dataset already exists at {storage.url}; pass overwrite=True to replace it "
                "or use sw.load()"
            )
        storage.delete_all()
        storage = open_storage(url, storage_options)
    elif storage.supports_listing and storage.list("") and not overwrite:
        raise DatasetError(
            f"{storage.url} is not empty and is not a slicewise dataset; refusing to write there"
        )
    target = int(chunk_target_bytes or DEFAULT_CHUNK_TARGET_BYTES)
    if not MIN_CHUNK_TARGET <= target <= MAX_CHUNK_TARGET:
        raise DatasetError(
            f"chunk_target_bytes={target}: choose between {MIN_CHUNK_TARGET} and "
            f"{MAX_CHUNK_TARGET} (about 8-16 MB is best)"
        )
    if not storage.set_if_not_exists(MARKER_KEY, _marker(target)):
        raise DatasetError(f"another process created a dataset at {storage.url} meanwhile")
    first = publish(storage, Version.empty(), Transaction(), "create dataset")
    return Dataset(
        storage, first, storage_options=storage_options, chunk_target_bytes=target, url=url
    )


def load(
    path,
    version=None,
    read_only: bool | None = None,
    storage_options: dict | None = None,
    pad_tensors: bool = False,
    **deeplake_kwargs,
) -> Dataset:
    """Open the dataset at `path`: the newest version, or `version` (an id or number).
    `pad_tensors=True` opens it as a padded read view (see `Dataset.padded`)."""
    storage_options = _deeplake_options("load", deeplake_kwargs, storage_options)
    url = _path_str(path)
    storage = open_storage(url, storage_options)
    marker = _read_marker(storage)
    if marker is None:
        raise DatasetError(f"no slicewise dataset at {storage.url} (use sw.empty to create one)")
    seqs = list_version_seqs(storage)
    if not seqs:
        raise DatasetError(f"dataset at {storage.url} has no versions (damaged or being created)")
    base = read_version(storage, seqs[-1]) if version is None else find_version(storage, version)
    return Dataset(
        storage,
        base,
        read_only=bool(read_only),
        pinned=base.seq != seqs[-1],
        storage_options=storage_options,
        chunk_target_bytes=marker.get("chunk_target_bytes", DEFAULT_CHUNK_TARGET_BYTES),
        url=url,
        pad_tensors=pad_tensors,
    )


def dataset(
    path,
    read_only: bool | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
    chunk_target_bytes: int | None = None,
    **deeplake_kwargs,
) -> Dataset:
    """Open the dataset at `path`, creating an empty one when there is none
    (`chunk_target_bytes` applies to a new one)."""
    storage_options = _deeplake_options("dataset", deeplake_kwargs, storage_options)
    if not overwrite and exists(path, storage_options):
        return load(path, read_only=read_only, storage_options=storage_options)
    return empty(path, overwrite=overwrite, storage_options=storage_options,
                 chunk_target_bytes=chunk_target_bytes)


def delete(path, storage_options: dict | None = None, **deeplake_kwargs) -> None:
    """Delete the dataset at `path` (refuses folders that are not slicewise datasets)."""
    storage_options = _deeplake_options("delete", deeplake_kwargs, storage_options)
    storage = open_storage(_path_str(path), storage_options)
    if not storage.exists(MARKER_KEY):
        raise DatasetError(f"no slicewise dataset at {storage.url}; nothing deleted")
    storage.delete_all()


def _open_pickled(
    url, version_id, storage_options, chunk_target_bytes, pad_tensors=False
) -> Dataset:
    storage = open_storage(url, storage_options)
    base = find_version(storage, version_id) if version_id else read_latest(storage)
    return Dataset(
        storage,
        base,
        read_only=True,
        storage_options=storage_options,
        chunk_target_bytes=chunk_target_bytes,
        url=url,
        pad_tensors=pad_tensors,
    )


# Deep Lake 3's arguments to empty/load/dataset/delete/exists that mean nothing here (its
# cloud, caches, locks, indexes, logging): accepted so its code runs unchanged, and
# ignored. Any other name is a TypeError, so a misspelt argument is never dropped silently.
_DEEPLAKE_CACHES = {"memory_cache_size", "local_cache_size", "token", "org_id", "verbose",
                    "lock_enabled", "lock_timeout", "index_params"}
_DEEPLAKE_IGNORED = {
    "empty": _DEEPLAKE_CACHES | {"runtime", "public"},
    "load": _DEEPLAKE_CACHES | {"access_method", "unlink", "reset", "indra", "check_integrity"},
    "delete": {"force", "large_ok", "token", "verbose", "org_id"},
    "exists": {"token", "org_id"},
}
_DEEPLAKE_IGNORED["dataset"] = _DEEPLAKE_IGNORED["empty"] | _DEEPLAKE_IGNORED["load"]

# Deep Lake 3's S3 `creds` keys -> s3fs storage options
_CREDS_TO_S3FS = {"aws_access_key_id": "key", "aws_secret_access_key": "secret",
                  "aws_session_token": "token", "profile_name": "profile"}
_CREDS_TO_CLIENT = {"endpoint_url": "endpoint_url", "aws_region": "region_name",
                    "region": "region_name"}


def _deeplake_options(function: str, kwargs: dict, storage_options: dict | None) -> dict | None:
    """Check the Deep Lake 3 keyword arguments of sw.<function>(); returns the storage
    options, with Deep Lake 3's S3 `creds` translated into them."""
    unknown = sorted(set(kwargs) - _DEEPLAKE_IGNORED[function] - {"creds"})
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(f"sw.{function}() got unexpected keyword argument(s) {names}")
    creds = kwargs.get("creds")
    if creds is None or creds == "ENV" or creds == {}:
        return storage_options  # "ENV": the environment's credentials, as fsspec does anyway
    if not isinstance(creds, dict):
        raise TypeError(f"sw.{function}(): creds must be a dict (Deep Lake 3's S3 keys) or "
                        f"'ENV', got {type(creds).__name__}")
    if storage_options:
        raise TypeError(f"sw.{function}(): pass creds= (Deep Lake 3) or storage_options=, "
                        "not both")
    options: dict = {}
    for key, value in creds.items():
        if key in _CREDS_TO_S3FS:
            options[_CREDS_TO_S3FS[key]] = value
        elif key in _CREDS_TO_CLIENT:
            options.setdefault("client_kwargs", {})[_CREDS_TO_CLIENT[key]] = value
        else:
            known = sorted(_CREDS_TO_S3FS) + sorted(_CREDS_TO_CLIENT)
            raise TypeError(f"sw.{function}(): creds key {key!r} is not understood; known: "
                            f"{', '.join(known)} (or pass fsspec storage_options=)")
    return options
