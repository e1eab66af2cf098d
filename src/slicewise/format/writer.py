"""DatasetWriter: samples in, chunk files out, a small JSON receipt back.

    spec = ds.writer_spec()                          # parent: JSON-able, a few hundred bytes
    w = DatasetWriter.from_spec(spec, writer_id)     # worker (any process, any machine)
    w.append_row({"images": sw.read(f), "labels": "cat"})   # encode via htypes.SampleEncoder
        │ per-tensor buffer reaches chunk_target_bytes
        ▼
    chunks/<tensor_id>/<uuid4> written straight into storage (one writev), never touched
        again; on local disks its fdatasync runs on a helper thread (_BackgroundSync) while
        the next chunk is encoded
    receipt = w.finish()                             # flush the rest, wait for every sync;
                                                     # JSON-able receipt of durable chunks
    ds.add_receipts([receipt, ...]); ds.commit(...)  # parent: publish atomically

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

class_label tensors: a writer starts from the class names in its spec; new string labels
get writer-local ids (class_base + j) and are listed in `new_class_names`; the commit maps
them onto the dataset's names without rewriting a chunk (FORMAT.md §2.2).
"""

from __future__ import annotations

import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from slicewise.format.chunk import encode_chunk_parts
from slicewise.format.errors import DatasetError, SampleError
from slicewise.format.htypes import SampleEncoder, TensorMeta
from slicewise.format.manifest import FORMAT_VERSION, chunk_key
from slicewise.format.storage import Storage, open_storage

DEFAULT_CHUNK_TARGET_BYTES = 8 * 1024 * 1024


class _BackgroundSync:
    """Flushes written chunk files to stable storage on one helper thread, in write order,
    so the disk flushes chunk k while the writer reads and writes chunk k+1 (fdatasync
    releases the GIL). `wait()` returns when every file handed over is durable and
    re-raises the first failure: a receipt is only made after it."""

    def __init__(self, storage: Storage):
        self._storage = storage
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, key: str) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="slicewise-sync")
        self._pending.append(self._executor.submit(self._storage.sync_file, key))

    @property
    def idle(self) -> bool:
        return self._executor is None

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        executor, self._executor = self._executor, None
        try:
            for future in pending:
                future.result()
        finally:
            if executor is not None:
                executor.shutdown(wait=True)


class _TensorBuffer:
    __slots__ = ("name", "meta", "encoder", "samples", "shapes", "nbytes", "chunks", "rows")

    def __init__(self, name: str, meta: TensorMeta, class_base: int | None):
        self.name = name
        self.meta = meta
        self.encoder = SampleEncoder(name, meta, class_base)
        self.samples: list[bytes] = []
        self.shapes: list[tuple[int, ...]] = []
        self.nbytes = 0
        self.chunks: list[dict] = []
        self.rows = 0


class DatasetWriter:
    """Writes chunk files for a fixed set of tensors; see the module docstring."""

    def __init__(
        self,
        storage: Storage,
        tensors: dict[str, TensorMeta],
        chunk_target_bytes: int = DEFAULT_CHUNK_TARGET_BYTES,
        writer_id: str | None = None,
        class_bases: dict[str, int] | None = None,
    ):
        self.storage = storage
        self.chunk_target_bytes = int(chunk_target_bytes)
        self.writer_id = str(writer_id) if writer_id is not None else uuid.uuid4().hex[:8]
        bases = class_bases or {}
        self._buffers = {
            name: _TensorBuffer(name, meta, bases.get(name)) for name, meta in tensors.items()
        }
        self._finished = False
        # local disks: write now, fdatasync on a helper thread (see _BackgroundSync)
        self._deferred_sync = bool(getattr(storage, "deferred_sync", False))
        self._syncs = _BackgroundSync(storage)

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

    def encode(self, tensor: str, value) -> tuple[bytes, tuple[int, ...]]:
        """Encode one value for `tensor` without buffering it (validation happens here)."""
        return self._buffer(tensor).encoder.encode(value)

    def append(self, tensor: str, value) -> None:
        buf = self._buffer(tensor)
        data, shape = buf.encoder.encode(value)
        self._add(buf, data, shape)

    def extend(self, tensor: str, values) -> None:
        buf = self._buffer(tensor)
        for i, value in enumerate(values):
            try:
                data, shape = buf.encoder.encode(value)
            except SampleError as exc:
                raise SampleError(f"{exc} (item {i} of the extend)") from exc
            self._add(buf, data, shape)

    def append_row(self, row: dict) -> None:
        """Append one value per tensor named in `row`. All values are encoded before any is
        buffered, so a bad value leaves no half row behind."""
        encoded = []
        for tensor, value in row.items():
            buf = self._buffer(tensor)
            encoded.append((buf, *buf.encoder.encode(value)))
        for buf, data, shape in encoded:
            self._add(buf, data, shape)

    def add_encoded(self, tensor: str, data: bytes, shape: tuple[int, ...]) -> None:
        """Append an already-encoded sample (as returned by `encode`)."""
        self._add(self._buffer(tensor), data, tuple(shape))

    def _add(self, buf: _TensorBuffer, data: bytes, shape: tuple[int, ...]) -> None:
        if self._finished:
            raise DatasetError("this writer is finished; make a new one")
        if buf.shapes and len(shape) != len(buf.shapes[0]):
            raise SampleError(
                f"tensor {buf.name!r}: sample has {len(shape)} dimensions {shape}, earlier "
                f"samples have {len(buf.shapes[0])}"
            )
        buf.samples.append(data)
        buf.shapes.append(shape)
        buf.nbytes += len(data)
        if buf.nbytes >= self.chunk_target_bytes:
            self._flush(buf)

    def _flush(self, buf: _TensorBuffer, final: bool = False) -> None:
        if not buf.samples:
            return
        meta = buf.meta
        dtype = buf.encoder.dtype_name
        parts = encode_chunk_parts(
            buf.samples, buf.shapes, dtype, meta.sample_compression, meta.chunk_compression
        )
        key = chunk_key(meta.id, uuid.uuid4().hex)
        if not self._deferred_sync:
            self.storage.put(key, parts)  # durable when it returns (object stores, memory)
        elif final and self._syncs.idle:
            self.storage.put(key, parts, sync=True)  # nothing to overlap with: sync inline
        else:
            self.storage.put(key, parts, sync=False)
            self._syncs.submit(key)
        nbytes = sum(len(part) for part in parts)
        ndim = len(buf.shapes[0])
        first = buf.shapes[0]
        if all(shape == first for shape in buf.shapes):  # the common case, one pass
            min_shape, max_shape = list(first), list(first)
        else:
            min_shape = [min(s[d] for s in buf.shapes) for d in range(ndim)]
            max_shape = [max(s[d] for s in buf.shapes) for d in range(ndim)]
        buf.chunks.append(
            {
                "key": key.rsplit("/", 1)[1],
                "rows": len(buf.samples),
                "nbytes": nbytes,
                "dtype": dtype,
                "min_shape": min_shape,
                "max_shape": max_shape,
            }
        )
        buf.rows += len(buf.samples)
        buf.samples, buf.shapes, buf.nbytes = [], [], 0

    def mark(self) -> dict:
        """A point to `rollback` to, so a failed multi-row write leaves no rows behind.
        Costs a shallow copy of the buffered sample list: take it per extend, not per row."""
        return {
            name: (
                list(b.samples),
                list(b.shapes),
                b.nbytes,
                len(b.chunks),
                b.rows,
                len(b.encoder.class_names),
                b.encoder.dtype,
            )
            for name, b in self._buffers.items()
        }

    def rollback(self, mark: dict) -> None:
        """Forget everything appended since `mark`. Chunk files flushed meanwhile stay
        unreferenced (gc removes them); the rows buffered before `mark` are restored."""
        for name, (samples, shapes, nbytes, chunks, rows, names, dtype) in mark.items():
            buf = self._buffers[name]
            buf.samples, buf.shapes, buf.nbytes = samples, shapes, nbytes
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

    def abort(self) -> None:
        """Drop buffered samples and finish without a receipt. Chunk files written so far
        stay unreferenced until `gc`."""
        self._finished = True
        for buf in self._buffers.values():
            buf.samples, buf.shapes, buf.nbytes = [], [], 0
        try:
            self._syncs.wait()
        except OSError:
            pass  # nothing will reference these files

    def finish(self) -> dict:
        """Flush every buffer, wait until every chunk file is durable, and return the
        receipt (see module docstring)."""
        self.flush()
        self._finished = True
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
        return {"writer_id": self.writer_id, "format_version": FORMAT_VERSION, "tensors": tensors}
