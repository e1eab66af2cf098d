"""DatasetWriter: samples in, chunk files out, a small JSON receipt back.

    spec = ds.writer_spec()                          # parent: JSON-able, a few hundred bytes
    w = DatasetWriter.from_spec(spec, writer_id)     # worker (any process, any machine)
    w.append_row({"images": sw.read(f), "labels": "cat"})   # encode via htypes.SampleEncoder
        │ per-tensor buffer reaches chunk_target_bytes
        ▼
    chunks/<tensor_id>/<uuid4> written straight into storage, never touched again. On
        local disks (SyncQueue.put): a large chunk is copied into aligned memory and
        written with O_DIRECT, then fdatasynced, on a helper thread, under a file lock
        (storage.PendingPut), while the next chunk is encoded; a small one is written
        here (one writev) and fdatasynced there. On object stores (SyncQueue.upload):
        copied into one buffer and PUT on a helper thread while the next chunk is
        encoded (at most 2 uploads in flight per process); every upload has
        completed before finish() or flush() returns
    receipt = w.finish()                             # flush the rest, wait for every sync;
                                                     # JSON-able receipt of durable chunks
      (or w.finish(sync=False): the last chunks,       # their entries say "synced": false;
       and any still being written, are left to        # ds.sync_receipt(receipt) starts them
       the committer; it returns at once)
    ds.add_receipts([receipt, ...]); ds.commit(...)  # parent: publish atomically (a commit
                                                     # waits for writers' locks, syncs
                                                     # unsynced chunks, checks their sizes)

A chunk's file is chunks/<tensor id>/<key>; the tensor id is in the spec's tensor metas.
`ds.append` in the parent goes through this same class, so there is one code path for
encoding, compression, passthrough and chunking.

Receipt (JSON-able; entries in write order):

    {"writer_id": "w3", "format_version": 1,
     "tensors": {"images": {"rows": 250, "dtype": "uint8",
                            "class_base": 0, "new_class_names": [],
                            "chunks": [{"key": "<uuid4 hex>", "rows": 113,
                                        "nbytes": 9810440, "dtype": "uint8",
                                        "min_shape": [375, 500, 3], "max_shape": [480, 640, 3]}]}}}

A receipt carries `"gc_token"` when its spec did (object stores: the token of the last gc
that ended on the dataset, read when the spec was made, before any chunk was written),
and then also the dataset's `"url"` and each tensor's `"tensor_id"`: the commit skips its
per-chunk checks only for chunks written into the dataset and tensors it publishes.

A chunk entry carries `"synced": false` only after `finish(sync=False)`, for a file not yet
flushed (maybe not yet fully written: its writer holds its lock until it is); the field
never reaches a manifest.

class_label tensors: a writer starts from the class names in its spec; new string labels
get writer-local ids (class_base + j) and are listed in `new_class_names`; the commit maps
them onto the dataset's names without rewriting a chunk (FORMAT.md §2.2).
"""

from __future__ import annotations

import uuid

from slicewise.format.arena import Arena
from slicewise.format.chunk import encode_chunk_parts
from slicewise.format.errors import DatasetError, SampleError
from slicewise.format.htypes import TensorMeta
from slicewise.format.manifest import FORMAT_VERSION, chunk_key
from slicewise.format.samples import SampleEncoder
from slicewise.format.storage import Storage, SyncQueue, open_storage, short_files
from slicewise.format.syncqueue import UPLOAD_THREADS

DEFAULT_CHUNK_TARGET_BYTES = 8 * 1024 * 1024
# Object stores: fewer, larger objects (measured on a moto S3 server: 16 MB objects
# 142-180 MB/s against 14-22 MB/s for 80 KB ones; on real S3 also fewer billed PUTs)
OBJECT_STORE_CHUNK_TARGET_BYTES = 16 * 1024 * 1024
OBJECT_STORE_PROTOCOLS = frozenset(
    ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2")
)


def default_chunk_target_bytes(storage: Storage) -> int:
    """The chunk size a new dataset gets when its creator names none: 16 MiB on object
    stores, 8 MiB elsewhere (local disks, memory://). Recorded in the dataset's marker."""
    if getattr(storage, "protocol", None) in OBJECT_STORE_PROTOCOLS:
        return OBJECT_STORE_CHUNK_TARGET_BYTES
    return DEFAULT_CHUNK_TARGET_BYTES


def shape_bounds(shapes: list[tuple[int, ...]]) -> tuple[list[int], list[int]]:
    """A chunk entry's min_shape and max_shape: per dimension, over the chunk's samples."""
    first = shapes[0]
    if shapes.count(first) == len(shapes):  # the common case, one C-level pass
        return list(first), list(first)
    ndim = len(first)
    return (
        [min(s[d] for s in shapes) for d in range(ndim)],
        [max(s[d] for s in shapes) for d in range(ndim)],
    )


def unfinished_chunks(storage: Storage, spec: dict, receipt: dict) -> list[str]:
    """The chunk files of `receipt` that its writer left unsynced and did not finish
    writing: it died or failed while its helper thread still wrote them, after it handed
    out the receipt (finish(sync=False); FORMAT.md 3.1). Waits for writers still writing.
    A commit refuses such a receipt; its rows must be written again."""
    expected = [
        (chunk_key(spec["tensors"][name]["id"], entry["key"]), entry["nbytes"])
        for name, tensor in receipt.get("tensors", {}).items()
        for entry in tensor.get("chunks", ())
        if entry.get("synced", True) is False
    ]
    return [storage.full_path(key) for key in short_files(storage, expected)]


class _TensorBuffer:
    """One tensor's samples waiting for their chunk: stored bytes (views of the arena, or
    references to the encoder's output, never copied here) and shapes, in row order."""

    __slots__ = (
        "name", "meta", "encoder", "arena", "samples", "shapes", "nbytes", "chunks", "rows",
        "ndim",
    )

    def __init__(self, name: str, meta: TensorMeta, class_base: int | None, target: int):
        self.name = name
        self.meta = meta
        self.encoder = SampleEncoder(name, meta, class_base)
        self.arena = Arena(target)  # files and raw arrays land here (see arena.py)
        self.samples: list[bytes] = []
        self.shapes: list[tuple[int, ...]] = []
        self.nbytes = 0
        self.chunks: list[dict] = []
        self.rows = 0
        self.ndim: int | None = None  # every sample of a tensor has the same ndim


class DatasetWriter:
    """Writes chunk files for a fixed set of tensors; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        tensors: dict[str, TensorMeta],
        chunk_target_bytes: int = DEFAULT_CHUNK_TARGET_BYTES,
        writer_id: str | None = None,
        class_bases: dict[str, int] | None = None,
        ndims: dict[str, int] | None = None,
        gc_token: str | None = None,
    ):
        self.storage = storage
        # the dataset's gc token when the spec was made (before any chunk here): carried
        # in the receipt, so the commit can skip checking each chunk object (commit.py)
        self.gc_token = gc_token if isinstance(gc_token, str) else None
        self.chunk_target_bytes = int(chunk_target_bytes)
        self.writer_id = str(writer_id) if writer_id is not None else uuid.uuid4().hex[:8]
        bases = class_bases or {}
        self._buffers = {
            name: _TensorBuffer(name, meta, bases.get(name), self.chunk_target_bytes)
            for name, meta in tensors.items()
        }
        for buf in self._buffers.values():
            buf.encoder.link_storage = storage  # links of the dataset's protocol: its options
        # the committed rows fix each tensor's number of dimensions: a sample that differs
        # is refused at its append, not at the commit that would publish it
        for name, ndim in (ndims or {}).items():
            if name in self._buffers:
                self._buffers[name].ndim = int(ndim)
        self._finished = False
        # local disks: write now, fdatasync on a helper thread (see SyncQueue)
        self._deferred_sync = bool(getattr(storage, "deferred_sync", False))
        # object stores: the whole PUT on helper threads, while the next chunk is encoded
        self._uploads = bool(getattr(storage, "overlapped_put", False))
        self._syncs = SyncQueue(storage, UPLOAD_THREADS if self._uploads else 1)

    # -- construction in another process

    @classmethod
    def from_spec(cls, spec: dict, writer_id: str | None = None) -> DatasetWriter:
        if spec.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"writer spec has format_version {spec.get('format_version')!r}")
        storage = open_storage(spec["url"], spec.get("storage_options"))
        tensors = {name: TensorMeta.from_json(meta) for name, meta in spec["tensors"].items()}
        return cls(
            storage,
            tensors,
            spec.get("chunk_target_bytes", DEFAULT_CHUNK_TARGET_BYTES),
            writer_id,
            spec.get("class_bases"),
            spec.get("ndims"),
            spec.get("gc_token"),
        )

    @property
    def tensors(self) -> list[str]:
        return list(self._buffers)

    def rows(self, tensor: str) -> int:
        """Samples appended to `tensor` so far (written or buffered)."""
        buf = self._buffer(tensor)
        return buf.rows + len(buf.samples)

    # -- writing

    def _buffer(self, tensor: str) -> _TensorBuffer:
        try:
            return self._buffers[tensor]
        except KeyError:
            raise DatasetError(
                f"tensor {tensor!r} does not exist; tensors are {list(self._buffers)}"
            ) from None

    def append(self, tensor: str, value) -> None:
        buf = self._buffer(tensor)
        data, shape = buf.encoder.encode(value, buf.arena)
        self._add(buf, data, shape)

    def extend(self, tensor: str, values) -> None:
        buf = self._buffer(tensor)
        for i, value in enumerate(values):
            try:
                data, shape = buf.encoder.encode(value, buf.arena)
            except SampleError as exc:
                raise SampleError(f"{exc} (item {i} of the extend)") from exc
            self._add(buf, data, shape)

    def append_row(self, row: dict) -> None:
        """Append one value per tensor named in `row`. All values are encoded before any is
        buffered, so a bad value leaves no half row behind."""
        buffers = self._buffers
        encoded = []
        for tensor, value in row.items():
            buf = buffers.get(tensor) or self._buffer(tensor)
            encoded.append((buf, buf.encoder.encode(value, buf.arena)))
        for buf, (data, shape) in encoded:
            self._add(buf, data, shape)

    def append_columns(self, columns: dict, count: int) -> None:
        """Append `count` rows given column-wise: {tensor: [value per row]}, every list
        `count` long (how a compute function's sample_out holds them). Every value is
        encoded before any is buffered, so a bad value leaves none of these rows behind."""
        buffers = self._buffers
        encoded = []
        for tensor, values in columns.items():
            buf = buffers.get(tensor) or self._buffer(tensor)
            encode, arena = buf.encoder.encode, buf.arena
            if count == 1:
                encoded.append((buf, (encode(values[0], arena),)))
            else:
                encoded.append((buf, [encode(value, arena) for value in values]))
        for buf, samples in encoded:
            for data, shape in samples:
                self._add(buf, data, shape)

    def _add(self, buf: _TensorBuffer, data: bytes, shape: tuple[int, ...]) -> None:
        if len(shape) != buf.ndim:
            self._first_shape(buf, shape)
        buf.samples.append(data)
        buf.shapes.append(shape)
        buf.nbytes += len(data)
        if buf.nbytes >= self.chunk_target_bytes:
            self._flush(buf)

    def _first_shape(self, buf: _TensorBuffer, shape: tuple[int, ...]) -> None:
        """The slow path of _add: a finished writer, a tensor's first sample, or a sample
        whose number of dimensions differs from the tensor's."""
        if self._finished:
            raise DatasetError("this writer is finished; make a new one")
        if buf.ndim is not None:
            raise SampleError(
                f"tensor {buf.name!r}: a sample of shape {shape} has {len(shape)} dimensions; "
                f"the tensor's samples have {buf.ndim}"
            )
        buf.ndim = len(shape)

    def _flush(self, buf: _TensorBuffer, final: bool = False, leave_unsynced: bool = False):
        if not buf.samples:
            return
        meta = buf.meta
        dtype = buf.encoder.dtype_name
        parts = encode_chunk_parts(
            buf.samples, buf.shapes, dtype, meta.sample_compression, meta.chunk_compression
        )
        key = chunk_key(meta.id, uuid.uuid4().hex)
        if self._uploads:  # waited for (and its failure raised) before any receipt
            self._syncs.upload(key, parts)
        elif not self._deferred_sync:
            self.storage.put(key, parts)  # durable when it returns (memory://)
        elif final and leave_unsynced:  # the committer flushes it (finish())
            self._syncs.put(key, parts, flush=False, size_hint=buf.arena.capacity)
        elif final and self._syncs.idle:
            self.storage.put(key, parts, sync=True)  # nothing to overlap with: sync inline
        else:  # written (or copied, then written) and flushed on the helper thread
            self._syncs.put(key, parts, size_hint=buf.arena.capacity)
        buf.arena.reset(buf.samples)  # written or copied: the memory takes the next chunk
        nbytes = sum(len(part) for part in parts)
        min_shape, max_shape = shape_bounds(buf.shapes)
        entry = {
            "key": key.rsplit("/", 1)[1],
            "rows": len(buf.samples),
            "nbytes": nbytes,
            "dtype": dtype,
            "min_shape": min_shape,
            "max_shape": max_shape,
        }
        buf.chunks.append(entry)
        buf.rows += len(buf.samples)
        buf.samples, buf.shapes, buf.nbytes = [], [], 0

    def mark(self) -> dict:
        """A point to `rollback` to, so a failed multi-row write leaves no rows behind.
        Costs a shallow copy of the buffered sample list: take it per extend, not per row."""
        for buf in self._buffers.values():
            buf.arena.pin()  # the views kept here must survive the next chunk
        return {
            name: (
                list(b.samples),
                list(b.shapes),
                b.nbytes,
                len(b.chunks),
                b.rows,
                len(b.encoder.class_names),
                b.encoder.dtype,
                b.ndim,
            )
            for name, b in self._buffers.items()
        }

    def rollback(self, mark: dict) -> None:
        """Forget everything appended since `mark`. Chunk files flushed meanwhile stay
        unreferenced (gc removes them); the rows buffered before `mark` are restored."""
        for name, (samples, shapes, nbytes, chunks, rows, names, dtype, ndim) in mark.items():
            buf = self._buffers[name]
            buf.samples, buf.shapes, buf.nbytes, buf.ndim = samples, shapes, nbytes, ndim
            del buf.chunks[chunks:]
            buf.rows = rows
            encoder = buf.encoder
            for label in encoder.class_names[names:]:
                del encoder.class_index[label]
            del encoder.class_names[names:]
            encoder.dtype = dtype

    def flush(self) -> None:
        """Write every buffered sample to chunk files and wait until they are durable."""
        for buf in self._buffers.values():
            self._flush(buf, final=True)
        self._syncs.wait()

    def _close(self) -> None:
        self._finished = True
        for buf in self._buffers.values():
            buf.ndim = -1  # no sample has -1 dimensions: every later _add takes the slow path

    def abort(self) -> None:
        """Drop buffered samples and finish without a receipt. Chunk files written so far
        stay unreferenced until `gc`."""
        self._close()
        for buf in self._buffers.values():
            buf.samples, buf.shapes, buf.nbytes = [], [], 0
        self._syncs.abandon()  # nothing will reference these files

    def finish(self, sync: bool = True) -> dict:
        """Flush every buffer and return the receipt (see module docstring).

        sync=True: every chunk file is durable when it returns. sync=False: it returns
        without waiting for the disk: the last chunk of each tensor (whose flush would
        have nothing left to overlap with here), and any chunk still being written on the
        helper thread under its file lock (storage.PendingPut), are left to the
        committer, their entries marked `"synced": false`; every other one is durable. A
        commit syncs such chunks before it publishes them (waiting for the lock), and
        `Dataset.sync_receipt` starts that at once, so the flush overlaps the parent's
        wait for other writers, and this writer's process goes on with its next work."""
        for buf in self._buffers.values():
            self._flush(buf, final=True, leave_unsynced=not sync)
        if sync:
            self._syncs.wait()
        else:
            unsynced = self._syncs.hand_over()
            for buf in self._buffers.values():
                for entry in buf.chunks:
                    if chunk_key(buf.meta.id, entry["key"]) in unsynced:
                        entry["synced"] = False
        self._close()
        for buf in self._buffers.values():
            buf.arena.release()
        tensors = {}
        for name, buf in self._buffers.items():
            if not buf.chunks:
                continue
            tensors[name] = {
                "rows": buf.rows,
                "dtype": buf.encoder.dtype_name if buf.meta.dtype != "str" else "str",
                "class_base": buf.encoder.class_base,
                "new_class_names": buf.encoder.local_class_names,
                "chunks": buf.chunks,
            }
        receipt = {"writer_id": self.writer_id, "format_version": FORMAT_VERSION,
                   "tensors": tensors}
        if self.gc_token is not None:  # and where the chunks went (commit._note_gc_token)
            receipt.update(gc_token=self.gc_token, url=self.storage.url)
            for name, tensor in tensors.items():
                tensor["tensor_id"] = self._buffers[name].meta.id
        return receipt
