"""slicewise.format: the on-disk format (spec: docs/FORMAT.md).

    samples ──SampleEncoder (samples.py; image files: images.py)──► DatasetWriter (writer.py)
        ──encode_chunk (chunk.py: header with a CRC-32 per checksum block)──►
        SyncQueue.put (syncqueue.py) ──► Storage.put / begin_put("chunks/<tensor id>/<uuid>")
            (storage.py: LocalStorage, os calls, O_DIRECT | storage_fsspec.py: memory://, S3)
    receipts ──Transaction (commit.py)──► apply(base) ──► Version (manifest.py: v2, or v3
        with removed tensors / dataset info; CRC-32 of the file last)
        ──► Storage.set_if_not_exists("versions/<seq>.json")   put-if-absent; rebase or
                                                                 CommitConflictError
        on a branch: BranchStorage (branches.py) ──► branches/<id>/versions/<seq>.json
        an in-place eval's checkpoints: staged.py ──► staged/<base id>/<n>.json
    reads:  Version.tensors[t].cum_rows ──► ChunkReader (reader.py: header and the
        manifest's claims checked, cached; mmap; every returned block's CRC checked)
        ──► decode_sample (samples.py)
    maintenance.py: verify (every file, every checksum) and gc (retention, leftovers,
                    S3 multipart uploads left behind;
                    spares versions readers may hold, commits that land meanwhile, branch
                    manifests, forks and live staged checkpoints)

Modules:
- storage.py   Storage interface (get, get_range, put(sync), begin_put, sync_file,
               written_size, touch_all, set_if_not_exists, list(refresh), delete, exists,
               size, mtime, sync, abort_incomplete_uploads): what each guarantees and its
               races; LocalStorage (PendingPut: direct I/O; refuses symlinks),
               open_storage, storage_error.
- storage_fsspec.py  FsspecStorage: any fsspec file system (S3 conditional PUT, retries).
- syncqueue.py SyncQueue (new files made durable on helper threads) and short_files (the
               size check a commit makes of files written that way).
- chunk.py     chunk file layout (format 2; version 1 still read): encode_chunk, parse_header
               (every field checked against the file before it sizes anything: files may
               come from strangers), checksum blocks, check_chunk, CRC-32 (zlib's;
               computed by ISA-L when the optional `isal` package is there).
- codecs.py    lz4/zstd/zlib and jpeg/png/webp; image format and shape sniffing.
- htypes.py    htype registry, TensorMeta, tensor names, FileSample (sw.read).
- samples.py   SampleEncoder (the one encode path) and decode_sample (the one decode path).
- images.py    image files into image tensors: structural checks (JPEG markers, PNG CRCs),
               what each image htype stores, conversions (Pillow); stored JPEGs decoded
               by libjpeg-turbo (simplejpeg, optional) where that gives Pillow's pixels.
- manifest.py  Version / TensorState (JSON manifests, versions 1-3, every member checked),
               reading versions, the marker, tensor and group name rules.
- commit.py    Transaction, apply, publish (the commit protocol).
- branches.py  Branch records, BranchStorage (a branch seen as a dataset), fork seqs.
- staged.py    staged checkpoints of in-place evals (not versions).
- writer.py    DatasetWriter and its receipts (workers and ds.append both use it); chunk
               files are written (large ones with O_DIRECT under a flock) and flushed on
               a helper thread (SyncQueue); finish() waits, finish(sync=False)
               leaves the last flushes, and writes still running, to the committer, who
               waits for the lock and checks sizes (FORMAT.md 3.1).
- arena.py     the reusable memory a writer reads files and copies raw arrays into.
- reader.py    ChunkReader with header, mmap (bounded by bytes) and payload caches; the
               CRC-32 of every checksum block it returns, on every read (version-1 files:
               the whole payload once per process per file).
- maintenance.py  verify_storage and gc_storage (VerifyReport, GcReport).
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
