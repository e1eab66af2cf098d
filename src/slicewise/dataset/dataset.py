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
from collections.abc import Iterable
from typing import Any

from slicewise.dataset import editing
from slicewise.dataset.api import DatasetAPI
from slicewise.dataset.exports import DatasetExports
from slicewise.dataset.group import Group, RowView, all_groups, check_new_name
from slicewise.dataset.tensor import Tensor
from slicewise.dataset.tensor_view import normalize_index
from slicewise.format.commit import Transaction, apply, gc_token_entry, publish
from slicewise.format.errors import DatasetError, ReadOnlyError
from slicewise.format.htypes import make_tensor_meta
from slicewise.format.manifest import (
    FORMAT_VERSION,
    Version,
    chunk_key,
    find_version,
    read_latest,
)
from slicewise.format.reader import ChunkReader
from slicewise.format.samples import SampleEncoder
from slicewise.format.storage import Storage, SyncQueue, open_storage
from slicewise.format.writer import DEFAULT_CHUNK_TARGET_BYTES, DatasetWriter


class Dataset(DatasetAPI, DatasetExports):
    """A chunked, compressed, versioned dataset of tensors. Open one with `sw.empty`,
    `sw.load` or `sw.dataset` (not with the constructor).

    Tensors and groups are attributes and keys (`ds.images`, `ds["Control/x"]`); rows
    are `ds[3]`, `ds[2:5]`, `ds[[1, 4]]`; `len(ds)` is the shortest tensor's length.
    Writes outside `with ds:` commit at once; inside, the block commits once at its end
    (nothing, if it raised). Pickles as a read-only handle (URL, version, options).

    Args:
        storage: the opened storage.
        base: the version it reads.
        read_only: refuse writes.
        pinned: an older version (read-only).
        storage_options: the fsspec options the storage was opened with.
        chunk_target_bytes: the chunk files' target size.
        url: the path or URL it was opened with.
        pad_tensors: a padded read view (see `padded`).

    Example:
        >>> ds = sw.empty("memory://doc-ds", overwrite=True)
        >>> with ds:
        ...     _ = ds.create_tensor("labels", htype="class_label")
        ...     ds.labels.extend(["cat", "dog"])
        >>> len(ds), ds.labels.numpy().ravel().tolist()
        (2, [0, 1])
    """

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
        self._reader.bind(self._view)  # headers are checked against this manifest's claims
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
        """The path or URL the dataset was opened with (also `ds.url`)."""
        return self._url

    url = path

    @property
    def storage(self) -> Storage:
        """The storage the dataset's files are in."""
        return self._storage

    @property
    def read_only(self) -> bool:
        """True when writes are refused: opened read-only, an older version, or padded."""
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

        Returns:
            The padded, read-only Dataset.

        Raises:
            DatasetError: this dataset has uncommitted changes.

        Example:
            >>> len(ds.images), len(ds.labels)          # doctest: +SKIP
            (5, 3)
            >>> view = ds.padded(); len(view)           # doctest: +SKIP
            5
            >>> view[4].labels.numpy()                  # doctest: +SKIP
            array([], dtype=uint32)
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
        """Every tensor, by full name ("Control/Experiment 1" for a tensor in a group)."""
        return {name: Tensor(self, name) for name in self._view().tensors}

    @property
    def groups(self) -> dict[str, Group]:
        """Every group, by full name ("a", "a/b"), as Deep Lake 3's `ds.groups`."""
        return {name: Group(self, name) for name in all_groups(self._view())}

    def _child(self, name: str) -> Tensor | Group | None:
        view = self._view()
        if name in view.tensors:
            return Tensor(self, name)
        if name in all_groups(view):
            return Group(self, name)
        return None

    def __getattr__(self, name: str) -> Any:  # a Tensor or a Group, found by name
        if name.startswith("_"):
            raise AttributeError(name)
        child = self._child(name)
        if child is not None:
            return child
        raise AttributeError(
            f"dataset {self._url} has no tensor, group or attribute {name!r}; "
            f"tensors: {list(self._view().tensors)}"
        )

    def __getitem__(self, index):
        """`ds["images"]`, `ds["Control/Experiment 1"]` (a tensor), `ds["Control"]` (a
        group), or rows: `ds[3]`, `ds[2:5]`, `ds[[1, 4]]`."""
        if isinstance(index, str):
            child = self._child(index)
            if child is None:
                raise KeyError(f"dataset {self._url} has no tensor or group {index!r}")
            return child
        single, rows = normalize_index(index, len(self))
        return RowView(self, single, rows)

    def __len__(self) -> int:
        """Rows: the shortest tensor's length (Deep Lake 3), the longest one's in a padded
        view."""
        return self.max_len if self._pad_tensors else self.min_len

    @property
    def max_len(self) -> int:
        """The longest tensor's length (0 without tensors)."""
        lengths = [t.length for t in self._data_view().tensors.values()]
        return max(lengths) if lengths else 0

    @property
    def min_len(self) -> int:
        """The shortest tensor's length (0 without tensors); `len(ds)`."""
        lengths = [t.length for t in self._data_view().tensors.values()]
        return min(lengths) if lengths else 0

    def __iter__(self):
        for i in range(len(self)):
            yield RowView(self, i, None)

    def __contains__(self, name: str) -> bool:
        """True for the name of a tensor or a group."""
        return isinstance(name, str) and self._child(name) is not None

    def create_group(self, name: str, exist_ok: bool = False) -> Group:
        """Deep Lake 3's create_group: a group of tensors, "a/b" nested (its outer groups
        come with it). Tensors go into it by name (`ds.create_tensor("Control/x")`) or
        through it (`ds.Control.create_tensor("x")`). An empty group persists (the
        manifest lists it).

        Args:
            name: the group's name; "a/b" nests.
            exist_ok: return an existing group instead of raising.

        Returns:
            The Group.

        Raises:
            DatasetError: a bad name, one taken by a tensor, or an existing group
                (without exist_ok).
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> g = ds.create_group("Control")                    # doctest: +SKIP
            >>> g.create_tensor("x")                              # doctest: +SKIP
        """
        self._check_writable()
        view = self._view()
        if isinstance(name, str) and name in all_groups(view):
            if exist_ok:
                return Group(self, name)
            raise DatasetError(f"group {name!r} already exists in {self._url}")
        check_new_name(self, name, "group")
        self._pending().groups.append(name)
        self._touch()
        self._autocommit(f"create group {name!r}")
        return Group(self, name)

    def create_tensor(
        self,
        name: str,
        htype: str = "generic",
        dtype: Any = None,
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
        downsampling: Any = None,
        tiling_threshold: Any = None,
        max_chunk_size: Any = None,
        **htype_kwargs: Any,
    ) -> Tensor:
        """Deep Lake 3's create_tensor. Its bookkeeping flags (hidden tensors, shape/id/
        sample-info tensors, tiling, downsampling) are accepted for compatibility and have
        nothing to do here: shapes live in chunk headers, there are no hidden tensors.

        Args:
            name: the tensor's name; "group/name" puts it in a group.
            htype: "generic", "image", "image.rgb", "class_label", "text", "json", ...
            dtype: a numpy dtype (default: the htype's, or the first sample's).
            sample_compression: per-sample compression ("jpeg", "png", "lz4", ...).
            chunk_compression: whole-chunk compression ("lz4", ...).
            exist_ok: return an existing tensor instead of raising.
            hidden: must be False (no hidden tensors).
            verbose: ignored.
            verify: ignored.
            create_shape_tensor: ignored.
            create_sample_info_tensor: ignored.
            create_id_tensor: ignored.
            downsampling: must be None.
            tiling_threshold: ignored.
            max_chunk_size: ignored.
            **htype_kwargs: the htype's options, e.g. `class_names=[...]`.

        Returns:
            The new (or, with exist_ok, existing) Tensor.

        Raises:
            DatasetError: an existing tensor (without exist_ok), a bad name, htype or
                option, hidden=True or downsampling.
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> ds = sw.empty("memory://doc-create", overwrite=True)
            >>> ds.create_tensor("images", htype="image", sample_compression="jpeg").htype
            'image'
        """
        self._check_writable()
        if hidden:
            raise DatasetError("hidden tensors are not supported")
        if downsampling is not None:
            raise DatasetError("downsampling is not supported")
        if isinstance(name, str) and name in self._view().tensors:
            if exist_ok:
                return Tensor(self, name)
            raise DatasetError(f"tensor {name!r} already exists in {self._url}")
        check_new_name(self, name, "tensor")
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

    def _ndims(self) -> dict[str, int]:
        """Per tensor with rows, its samples' number of dimensions (fixed by the first)."""
        return {
            name: len(state.min_shape[0])
            for name, state in self._view().tensors.items()
            if state.min_shape
        }

    def _get_writer(self) -> DatasetWriter:
        if self._writer is None:
            view = self._view()
            self._writer = DatasetWriter(
                self._storage,
                {name: t.meta for name, t in view.tensors.items()},
                self.chunk_target_bytes,
                writer_id="parent",
                class_bases=self._class_bases(),
                ndims=self._ndims(),
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
        """Append one row: {tensor: value}. Every tensor must get a value unless skip_ok.

        Args:
            sample: {tensor name: value}.
            skip_ok: allow leaving tensors out (they stay shorter).
            append_empty: Deep Lake 3's argument; ignored.

        Raises:
            DatasetError: not a dict, an unknown tensor, a missing one (without skip_ok),
                or a value the tensor cannot store (SampleError). Nothing of the row stays.
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> ds.append({"images": sw.read("cat.jpg"), "labels": "cat"})  # doctest: +SKIP
        """
        if not isinstance(sample, dict):
            raise DatasetError(
                f"ds.append takes a dict {{tensor: value}}, got {type(sample).__name__}"
            )
        self._check_row_keys(sample.keys(), skip_ok)
        self._write(lambda w: w.append_row(sample))

    def extend(self, samples: dict, skip_ok: bool = False) -> None:
        """Append rows: {tensor: sequence of values}, all sequences of the same length.

        Args:
            samples: {tensor name: sequence of values}.
            skip_ok: allow leaving tensors out (they stay shorter).

        Raises:
            DatasetError: not a dict, sequences of different lengths, an unknown or
                missing tensor, or a value a tensor cannot store (naming the row).
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> ds.extend({"labels": ["cat", "dog"]})            # doctest: +SKIP
        """
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
                entry = editing.rewrite_chunk(self, state, k, updates, encoder)
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
        """A JSON-able recipe for `DatasetWriter.from_spec` in another process.

        Returns:
            The spec: URL, storage options, chunk target, tensor metas, class bases.

        Raises:
            ReadOnlyError: the dataset is read-only (a DatasetError).

        Example:
            >>> writer = DatasetWriter.from_spec(ds.writer_spec(), "w0")  # doctest: +SKIP
        """
        self._check_writable()
        view = self._data_view()
        return {
            "format_version": FORMAT_VERSION,
            "url": self._url,
            "storage_options": self._storage_options,
            "chunk_target_bytes": self.chunk_target_bytes,
            "tensors": {name: t.meta.to_json() for name, t in view.tensors.items()},
            "class_bases": self._class_bases(),
            "ndims": self._ndims(),
            **gc_token_entry(self._storage),
        }

    def sync_receipt(self, receipt: dict) -> None:
        """Start flushing the chunk files a writer left unsynced (`finish(sync=False)`) on
        helper threads, so the disk works while the parent waits for other writers. The
        commit that publishes them waits for these flushes (and syncs any not started).

        Args:
            receipt: a writer's receipt (`DatasetWriter.finish(sync=False)`).

        Example:
            >>> ds.sync_receipt(receipt)                          # doctest: +SKIP
        """
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

    def add_receipts(self, receipts: Iterable[dict]) -> None:
        """Queue the chunks of writer receipts (in the given order) for the next commit.
        Never commits by itself, also outside `with`: call commit().

        Args:
            receipts: writers' receipts (`DatasetWriter.finish()`), in row order.

        Raises:
            ReadOnlyError: the dataset is read-only (a DatasetError).
            DatasetError: a receipt names a tensor the dataset does not have.

        Example:
            >>> ds.add_receipts([w.finish() for w in writers]); ds.commit("import")  # doctest: +SKIP
        """
        self._check_writable()
        self._flush_writer()
        txn = self._pending()
        known = set(self._view().tensors)
        for receipt in receipts:
            txn.add_receipt(receipt, known)
        self._touch()

    def commit(self, message: str = "", meta: dict | None = None, allow_empty: bool = True) -> str:
        """Publish pending changes as a new version (works inside `with ds:` too).

        Args:
            message: the commit message.
            meta: JSON-able metadata stored with the version (`version_info`, `log()`).
            allow_empty: False: with nothing pending, publish nothing.

        Returns:
            The new version's id (the current one if nothing was published).

        Raises:
            DatasetError: `meta` is not a JSON-able dict.
            ReadOnlyError: the dataset is read-only (a DatasetError).
            CommitConflictError: another committer published a conflicting version.

        Example:
            >>> ds.commit("added cats", meta={"source": "crawl-7"})  # doctest: +SKIP
            'v3-...'
        """
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
        """Drop pending changes. Chunk files already written stay until `gc`.

        Example:
            >>> ds.discard()                                     # doctest: +SKIP
        """
        self._txn = None
        self._writer = None
        if self._syncs is not None:
            self._syncs.abandon()
            self._syncs = None
        self._touch()

    @property
    def has_pending(self) -> bool:
        """True when there are uncommitted changes (rows, tensors, info)."""
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
        """Deep Lake 3 name: commit pending changes now (nothing if none are pending).

        Raises:
            CommitConflictError: another committer published a conflicting version.

        Example:
            >>> ds.flush()                                       # doctest: +SKIP
        """
        if self.has_pending:
            self.commit("flush")

    # ---- versions

    @property
    def version(self) -> str:
        """The id of the version this dataset reads ("v3-...")."""
        return self._base.id

    @property
    def version_info(self) -> dict:
        """The version's record: id, seq, parent, time, message, meta."""
        return self._base.info()

    @property
    def commit_id(self) -> str:
        """Deep Lake 3's name for `version`."""
        return self._base.id

    # log, checkout, branches, diff, merge, reset: DatasetAPI (versioning.py)

    def refresh(self) -> str:
        """Move to the newest version (picks up other processes' commits).

        A dataset pinned to an older version stays there.

        Returns:
            The id of the version it now reads.

        Raises:
            DatasetError: there are pending changes.

        Example:
            >>> ds.refresh()                                     # doctest: +SKIP
        """
        if self.has_pending:
            raise DatasetError("commit or discard pending changes before refresh()")
        if not self._pinned:
            self._base = read_latest(self._storage)
            self._touch()
        return self._base.id

    # ---- misc

    def numpy(self, aslist: bool = False) -> dict:
        """Every tensor's rows: {tensor name: `Tensor.numpy(aslist)`}.

        Args:
            aslist: lists of per-row arrays instead of stacked arrays.

        Returns:
            {tensor name: one array, or a list of arrays for a ragged tensor or aslist}.

        Raises:
            CorruptionError: a stored byte does not match its checksum.

        Example:
            >>> ds.numpy()["labels"].shape                       # doctest: +SKIP
            (2, 1)
        """
        return {name: t.numpy(aslist=aslist) for name, t in self.tensors.items()}


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
