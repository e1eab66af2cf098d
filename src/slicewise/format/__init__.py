"""slicewise.format: the on-disk format (spec: docs/FORMAT.md).

    samples ──SampleEncoder (htypes.py)──► DatasetWriter (writer.py) ──encode_chunk (chunk.py)──►
        Storage.put("chunks/<tensor id>/<uuid>")        (storage.py: local os calls | fsspec)
    receipts ──Transaction (commit.py)──► apply(base) ──► Version (manifest.py)
        ──► Storage.set_if_not_exists("versions/<seq>.json")   put-if-absent; rebase or
                                                                 CommitConflictError
    reads:  Version.tensors[t].cum_rows ──► ChunkReader (reader.py: cached headers, mmap)
        ──► decode_sample (htypes.py)
    maintenance.py: verify (every file, every checksum) and gc (retention, leftovers;
                    spares versions readers may hold and commits that land meanwhile)

Modules:
- storage.py   Storage interface (get, get_range, put(sync), begin_put, sync_file,
               written_size, touch_all, set_if_not_exists, list(refresh), delete) and its
               races; LocalStorage (PendingPut: direct I/O), FsspecStorage, open_storage,
               SyncQueue.
- chunk.py     chunk file layout: encode_chunk, parse_header (every field checked against
               the file before it sizes anything: files may come from strangers), CRC-32
               (zlib's; computed by ISA-L when the optional `isal` package is there).
- codecs.py    lz4/zstd/zlib and jpeg/png/webp; image format and shape sniffing.
- htypes.py    htype registry, TensorMeta, SampleEncoder (the one encode path),
               decode_sample, FileSample (sw.read).
- manifest.py  Version / TensorState (JSON manifests), reading versions.
- commit.py    Transaction, apply, publish (the commit protocol).
- writer.py    DatasetWriter and its receipts (workers and ds.append both use it); chunk
               files are written (large ones with O_DIRECT under a flock) and flushed on
               a helper thread (storage.SyncQueue); finish() waits, finish(sync=False)
               leaves the last flushes, and writes still running, to the committer, who
               waits for the lock and checks sizes (FORMAT.md 3.1).
- arena.py     the reusable memory a writer reads files and copies raw arrays into.
- reader.py    ChunkReader with header, mmap (bounded by bytes) and payload caches; a
               whole chunk's checksum is checked once per process per file.
- errors.py    DatasetError, CorruptionError, CommitConflictError, SampleError, ReadOnlyError.

Worker-side use (see writer.py for the receipt layout):

    spec = ds.writer_spec()                        # parent, JSON-able
    w = DatasetWriter.from_spec(spec, "worker-3")  # any process
    w.append_row({"images": sw.read(path), "labels": "cat"})
    receipt = w.finish()                           # JSON-able, back to the parent
    ds.add_receipts([receipt]); ds.commit("eval", meta={"checkpoint": 1000})
"""

from __future__ import annotations

from slicewise.format.errors import (
    CommitConflictError,
    CorruptionError,
    DatasetError,
    ReadOnlyError,
    SampleError,
)
from slicewise.format.storage import FsspecStorage, LocalStorage, Storage, open_storage
from slicewise.format.writer import DEFAULT_CHUNK_TARGET_BYTES, DatasetWriter

__all__ = [
    "CommitConflictError",
    "CorruptionError",
    "DatasetError",
    "ReadOnlyError",
    "SampleError",
    "Storage",
    "LocalStorage",
    "FsspecStorage",
    "open_storage",
    "DatasetWriter",
    "DEFAULT_CHUNK_TARGET_BYTES",
]
