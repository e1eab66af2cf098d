"""The rest of Deep Lake 3's dataset API around compute: delete_tensor, pop, ds.info,
rechunk, and copies (deepcopy / copy of a dataset, copy of a view's rows).

Each change is one commit (atomic: chunk files are written first, the manifest put
publishes them; a process killed before the put leaves the previous version):

- pop(i): the tensors' chunk lists are rebuilt: every chunk but the one holding row i is
  kept as it is (no copy), that one is rewritten without the row. The old rows stay
  readable through the log (`ds.checkout(old_id)`). The version's meta records
  {"pop": {"rows": [i], "tensors": [...]}} (diff reports it as data_deleted).
- rechunk: the chunks of each tensor are rewritten into chunks of about the target size
  (samples keep their stored bytes), meta {"rechunk": true}.
"""

from __future__ import annotations

import json
import secrets

import numpy as np

from slicewise.dataset.info import InfoDict
from slicewise.dataset.merging import chunk_entry
from slicewise.format.chunk import encode_chunk
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.htypes import FileSample
from slicewise.format.manifest import chunk_key
from slicewise.format.samples import SampleEncoder, apply_label_remap, with_location
from slicewise.format.writer import shape_bounds


def _fresh(ds, what: str) -> None:
    """Operations that rebuild chunk lists start from a committed version."""
    ds._check_writable()
    if ds.has_pending:
        ds.commit(f"auto-commit before {what}")


def delete_tensor(ds, name: str, large_ok: bool = False) -> None:
    """Remove tensor `name` in a new version (its rows stay in the older ones)."""
    ds._check_writable()
    view = ds._view()
    if name not in view.tensors:
        raise DatasetError(f"tensor {name!r} does not exist in {ds.path}")
    ds._flush_writer()
    txn = ds._pending()
    if name in txn.created:  # created in this open `with` block: never published
        del txn.created[name]
        txn.appended.pop(name, None)
    else:
        txn.deleted.add(name)
        for kind in (txn.appended, txn.replaced, txn.info, txn.class_names_added):
            kind.pop(name, None)
        txn.cleared.discard(name)
    ds._writer = None
    ds._touch()
    ds._autocommit(f"delete tensor {name!r}")


def _samples(ds, state, k: int):
    """(stored bytes, shape) of each sample of chunk k."""
    key = state.full_key(k)
    head = ds._reader.header(key)
    payload = ds._reader.payload(key)
    return [(bytes(payload[int(head.offsets[i]):int(head.offsets[i + 1])]),
             tuple(head.shape(i))) for i in range(head.n)]


def _write_chunk(ds, state, samples, labels=None, dtype: str | None = None) -> dict:
    """Write (stored bytes, shape) samples as a new chunk file of `state`'s tensor; its
    manifest entry. `dtype` defaults to the tensor's."""
    meta = state.meta
    dtype = dtype or meta.dtype
    blob = encode_chunk([s for s, _ in samples], [sh for _, sh in samples], dtype or "float64",
                        meta.sample_compression, meta.chunk_compression)
    name = secrets.token_hex(16)
    ds._storage.put(chunk_key(meta.id, name), blob)
    low, high = shape_bounds([sh for _, sh in samples])
    entry = {"key": name, "rows": len(samples), "nbytes": len(blob), "min_shape": low,
             "max_shape": high}
    if dtype is not None:
        entry["dtype"] = dtype
    if labels:
        entry["labels"] = labels
    return entry


def rewrite_chunk(ds, state, k: int, updates: dict, encoder) -> dict:
    """Chunk k of `state` with the rows in `updates` ({row in the chunk: value}) encoded
    anew, as a new chunk file; its manifest entry. Class labels the chunk stores with a
    remap are rewritten as view-global ids, local to `encoder`."""
    meta = state.meta
    remap = state.chunk_remap(k)
    samples = _samples(ds, state, k)
    for i, (data, shape) in enumerate(samples):
        if i in updates:
            data, shape = encoder.encode(updates[i])
            samples[i] = (data, tuple(shape))
        elif meta.htype == "class_label":
            ids = np.frombuffer(_plain(data, meta, shape), dtype=np.uint32)
            if remap is not None:  # store view-global ids; local to `encoder`
                try:
                    ids = apply_label_remap(ids, remap)
                except CorruptionError as exc:
                    raise with_location(exc, ds._storage.full_path(state.full_key(k)),
                                        i) from None
                samples[i] = (encoder._compress(ids.astype(np.uint32).tobytes()), shape)
            if ids.size:  # unnamed ids must not share a chunk with local names
                encoder._check_unnamed_ids(int(ids.max()))
    labels = None
    if meta.htype == "class_label" and encoder.local_class_names:
        labels = {"base": encoder.class_base, "names": encoder.local_class_names}
    dtype = encoder.dtype_name if meta.dtype is None else meta.dtype
    return _write_chunk(ds, state, samples, labels, dtype)


def pop(ds, index: int | None = None) -> None:
    """Remove row `index` (default: the last) from every tensor that has it."""
    _fresh(ds, "pop")
    base = ds._base
    length = ds.max_len
    if length == 0:
        raise IndexError("pop from an empty dataset")
    index = length - 1 if index is None else int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"pop index {index} out of range for {length} rows")
    txn = ds._pending()
    names = []
    for name, state in base.tensors.items():
        if state.length <= index:
            continue
        names.append(name)
        k = int(state.cum_rows.searchsorted(index, side="right")) - 1
        entries = [chunk_entry(state, j, state.meta.class_names) for j in range(len(state.keys))]
        samples = _samples(ds, state, k)
        del samples[index - int(state.cum_rows[k])]
        if samples:
            entries[k] = _write_chunk(ds, state, samples, entries[k].get("labels"))
        else:
            del entries[k]
        txn.cleared.add(name)
        txn.appended[name] = entries
    ds._touch()
    try:
        ds.commit(f"pop row {index}", meta={"pop": {"rows": [index], "tensors": names}})
    except BaseException:
        ds.discard()
        raise


def rechunk(ds, tensors=None, num_workers: int = 0, scheduler: str = "threaded",
            progressbar: bool = True, target_bytes: int | None = None) -> None:
    """Rewrite each tensor's chunks into chunks of about `target_bytes` (the dataset's
    chunk target by default), in one atomic commit."""
    _fresh(ds, "rechunk")
    target = int(target_bytes or ds.chunk_target_bytes)
    if target < 1:
        raise DatasetError("target_bytes must be at least 1")
    names = list(ds._base.tensors) if tensors is None else (
        [tensors] if isinstance(tensors, str) else list(tensors))
    txn = ds._pending()
    for name in names:
        state = ds._base.tensors.get(name)
        if state is None:
            raise DatasetError(f"tensor {name!r} does not exist in {ds.path}")
        if not state.keys:
            continue
        encoder = SampleEncoder(name, state.meta) if state.meta.class_names is not None else None
        entries, pending, size = [], [], 0
        for k in range(len(state.keys)):
            remap = state.chunk_remap(k)
            for data, shape in _samples(ds, state, k):
                if remap is not None:  # store global ids: chunks of many writers merge
                    ids = np.frombuffer(_plain(data, state.meta, shape), dtype=np.uint32)
                    data, shape = encoder.encode(apply_label_remap(ids, remap).astype(np.uint32))
                pending.append((bytes(data), tuple(shape)))
                size += len(data)
                if size >= target:
                    entries.append(_write_chunk(ds, state, pending))
                    pending, size = [], 0
        if pending:
            entries.append(_write_chunk(ds, state, pending))
        txn.cleared.add(name)
        txn.appended[name] = entries
    ds._touch()
    try:
        ds.commit("rechunk", meta={"rechunk": True})
    except BaseException:
        ds.discard()
        raise


def _plain(data: bytes, meta, shape) -> bytes:
    """A sample's stored bytes without its byte compression (lz4/zstd)."""
    from slicewise.format.codecs import BYTE_COMPRESSIONS, decompress_bounded

    if meta.sample_compression in BYTE_COMPRESSIONS:
        return decompress_bounded(data, meta.sample_compression, 4 * int(np.prod(shape)))
    return data


# ---- ds.info


def get_info(ds) -> InfoDict:
    """`ds.info` (Deep Lake 3's dataset info), as pending in an open `with` block."""
    txn = ds._txn
    data = txn.ds_info if txn is not None and txn.ds_info is not None else ds._base.ds_info
    return InfoDict(dict(data), lambda changes, replace: set_info(ds, changes, replace))


def set_info(ds, changes: dict, replace: bool = False) -> None:
    ds._check_writable()
    try:
        json.dumps(changes)
    except TypeError as exc:
        raise DatasetError(f"dataset info must be JSON-able: {exc}") from exc
    txn = ds._pending()
    current = dict(txn.ds_info if txn.ds_info is not None else ds._base.ds_info)
    # recorded as an edit, not as the whole dict: a commit that lands first and sets other
    # keys keeps them when this one is replayed on top of it (commit.apply)
    removed = [key for key in current if key not in changes] if replace else []
    txn.ds_info_edits.append((dict(changes), removed))
    info = {} if replace else current
    info.update(changes)
    txn.ds_info = info
    ds._touch()
    ds._autocommit("update dataset info")


# ---- copies


def _copy_sample(tensor, row: int):
    """A row as a value to append: image files keep their bytes (passthrough)."""
    meta = tensor.meta
    view = tensor[row]
    if meta.htype == "class_label":
        return view.numpy()
    if meta.htype in ("text", "json"):
        return view.data()["value"]
    if meta.sample_compression in ("jpeg", "png", "webp"):
        sample = FileSample(f"{tensor.dataset.path}#{tensor.name}[{row}]")
        sample.keep(view.tobytes())
        return sample
    return view.numpy()


def copy_rows(src, rows, dest, overwrite: bool = False, storage_options=None,
              message: str | None = None):
    """Rows `rows` of dataset `src` into a new dataset at `dest`, one commit."""
    from slicewise.dataset.opening import empty

    out = empty(dest, overwrite=overwrite, storage_options=storage_options,
                chunk_target_bytes=src.chunk_target_bytes)
    view = src._view()
    with out:
        for group in view.groups:
            out.create_group(group, exist_ok=True)
        for name, state in view.tensors.items():
            meta = state.meta
            kwargs = dict(meta.htype_kwargs)
            if meta.class_names is not None:
                kwargs["class_names"] = list(meta.class_names)
            dtype = meta.dtype if meta.dtype not in (None, "str") else None
            out.create_tensor(name, htype=meta.htype, dtype=dtype,
                              sample_compression=meta.sample_compression,
                              chunk_compression=meta.chunk_compression, **kwargs)
            if meta.info:
                out[name].info.update(meta.info)
        if view.ds_info:
            set_info(out, dict(view.ds_info))
        for name in view.tensors:
            tensor = src.tensors[name]
            length = len(tensor)
            values = [_copy_sample(tensor, int(r)) for r in rows if int(r) < length]
            if values:
                out[name].extend(values)
        out.commit(message or f"copy of {src.path}@{src.version}")
    return out


def deepcopy(src, dest, tensors=None, overwrite: bool = False, src_creds=None,
             dest_creds=None, token=None, num_workers: int = 0, scheduler: str = "threaded",
             progressbar: bool = True, public: bool = False, verbose: bool = True,
             storage_options=None, keep_history: bool = True, **kwargs):
    """Deep Lake 3's deepcopy: the dataset at `src` (a path or a Dataset) to `dest`. With
    keep_history (the default) every file is copied as it is, in parallel (chunk files are
    immutable, so a copy is byte for byte and keeps every version, branch and saved view);
    keep_history=False copies the current version only, as one version."""
    from slicewise.dataset.dataset import Dataset
    from slicewise.dataset.opening import load

    ds = src if isinstance(src, Dataset) else load(src, storage_options=storage_options)
    if tensors is not None or not keep_history:
        out = copy_rows(ds, range(ds.max_len), dest, overwrite=overwrite,
                        storage_options=storage_options)
        if tensors is not None:
            for name in list(out._view().tensors):
                if name not in tensors:
                    delete_tensor(out, name)
        return out
    return _copy_files(ds, dest, overwrite, storage_options, num_workers)


def _copy_files(ds, dest, overwrite, storage_options, num_workers):
    from concurrent.futures import ThreadPoolExecutor

    from slicewise.dataset.opening import load
    from slicewise.dataset.versioning import raw_storage
    from slicewise.format.manifest import MARKER_KEY
    from slicewise.format.storage import open_storage

    src = raw_storage(ds)
    url = dest.path if hasattr(dest, "path") else str(dest)
    out = open_storage(url, storage_options)
    if out.exists(MARKER_KEY) or (out.supports_listing and out.list("")):
        if not overwrite:
            raise DatasetError(f"{out.url} is not empty; pass overwrite=True to replace it")
        out.delete_all()
        out = open_storage(url, storage_options)
    keys = [k for k in src.list("", refresh=True) if "/.tmp-" not in k and k != MARKER_KEY]
    # chunks first, then views and branches, then manifests (oldest first), then the
    # marker: a copy killed midway is not a dataset yet, never a dataset missing chunks
    order = {"chunks": 0, "views": 1, "staged": 1, "branches": 2, "versions": 3}
    keys.sort(key=lambda k: (order.get(k.split("/", 1)[0], 1), k))

    def copy(key):
        out.put(key, src.get(key))

    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(order.get(key.split("/", 1)[0], 1), []).append(key)
    with ThreadPoolExecutor(max(1, min(16, num_workers or 8))) as executor:
        for level in sorted(groups):
            list(executor.map(copy, groups[level]))
    out.put(MARKER_KEY, src.get(MARKER_KEY))
    return load(url, storage_options=storage_options)
