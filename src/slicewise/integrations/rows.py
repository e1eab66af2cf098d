"""Rows of a dataset's tensors as the integrations read them: stored bytes without a
decode (`read_rows` for a span, `read_row` for one), then `finish_value` into what a loader
or an exporter hands out. The torch loaders, `to_arrow`/`to_parquet` and `to_hf` all read
through here, so a sample is read, checked and decoded the same way everywhere.

    read_rows(ds, tensor, start, stop) -> [_Encoded | value]   one checked span per chunk
    read_row(ds, tensor, row)          -> _Encoded | value     one checked sample; the
                                                               mapped pages given back
    finish_value(meta, value, method)  -> decoded (decode_sample), writable, labels as ints

They use the dataset's private reader (`_reader.header`, `span_bytes`, `sample_bytes`)
and `tensor._state`: docs/ARCHITECTURE.md lists this as one of the places where a
Dataset is touched from outside dataset/.
"""

from __future__ import annotations

import io
import mmap
from typing import Any

import numpy as np

from slicewise.format.errors import CorruptionError
from slicewise.format.htypes_media import plain_arrays
from slicewise.format.samples import apply_label_remap, decode_sample, with_location

_RELEASE_ALIGN = 1 << 18  # pages given back in aligned runs of this (see _release_pages)
_IMAGE_COMPRESSIONS = ("jpeg", "png", "webp")


class _Encoded:
    """A compressed sample's stored bytes, decoded only when it is handed out."""

    __slots__ = ("data", "shape", "dtype", "remap")

    def __init__(self, data: bytes, shape: tuple, dtype: str, remap: Any) -> None:
        self.data, self.shape, self.dtype, self.remap = data, shape, dtype, remap


def chunk_spans(ds: Any, name: str, start: int, stop: int):
    """For each stored chunk of tensor `name` holding rows of [start, stop): (key, header,
    k, a, b, span), `span` the checked bytes of its samples a..b-1 (one ranged read, or a
    slice of a local file's map). A damaged chunk raises CorruptionError naming its file.
    Rows past the tensor's end (a padded view) are not there: the caller pads."""
    state = ds[name]._state
    reader = ds._reader
    cum = state.cum_rows
    k = int(np.searchsorted(cum, start, side="right")) - 1
    while k < len(state.keys) and int(cum[k]) < stop:
        a, b = max(start, int(cum[k])) - int(cum[k]), min(stop, int(cum[k + 1])) - int(cum[k])
        key = state.full_key(k)
        try:
            head = reader.header(key)
            span = reader.span_bytes(key, a, b)
        except CorruptionError as exc:
            raise with_location(exc, reader.storage.full_path(key)) from None
        yield key, head, k, a, b, span
        k += 1


def read_rows(ds: Any, name: str, start: int, stop: int, tobytes: bool = False,
              release: bool = False) -> list:
    """Rows [start, stop) of tensor `name`: one span read per stored chunk. Uncompressed
    numeric samples come back as writable arrays, compressed ones as `_Encoded` (decoded
    by `finish_value`), with `tobytes` every sample as its stored bytes. Rows past the
    tensor's end (a padded view) are its empty samples. Every sample is a copy; with
    `release` the mapped pages of a local chunk file the span was read from are given
    back once copied (a streaming pass reads each span once: kept, they would count in
    the worker's RSS until the whole share had been read)."""
    tensor = ds[name]
    state = tensor._state
    reader = ds._reader
    raw = plain_arrays(state.meta)
    out: list = []
    for key, head, k, a, b, span in chunk_spans(ds, name, start, stop):
        try:
            remap = state.chunk_remap(k)
            base = int(head.offsets[a])
            for i in range(a, b):
                piece = span[int(head.offsets[i]) - base : int(head.offsets[i + 1]) - base]
                out.append(_stored(head, i, piece, remap, tobytes, raw))
            if release:
                _release_pages(reader, key, head, a, b)
        except CorruptionError as exc:
            raise with_location(exc, reader.storage.full_path(key)) from None
    while len(out) < stop - start:  # a padded view's rows past the end
        out.append(b"" if tobytes else tensor.empty_sample())
    return out


def read_row(ds: Any, name: str, row: int, tobytes: bool = False,
             release: bool = False) -> Any:
    """Row `row` of tensor `name`, as `read_rows` gives it: one checked read of that
    sample alone (a local chunk file: a slice of its map, and with `release` its pages
    are given back once copied)."""
    tensor = ds[name]
    state = tensor._state
    k = int(np.searchsorted(state.cum_rows, row, side="right")) - 1
    if k >= len(state.keys):  # a padded view's row past the end
        return b"" if tobytes else tensor.empty_sample()
    reader = ds._reader
    key = state.full_key(k)
    i = row - int(state.cum_rows[k])
    try:
        head = reader.header(key)
        data = reader.sample_bytes(key, i)
        if release:
            _release_pages(reader, key, head, i, i + 1)
        return _stored(head, i, data, state.chunk_remap(k), tobytes, plain_arrays(state.meta))
    except CorruptionError as exc:
        raise with_location(exc, reader.storage.full_path(key)) from None


def _stored(head: Any, i: int, piece: Any, remap: Any, tobytes: bool, raw: bool) -> Any:
    """Sample i of a chunk (its stored bytes `piece`) as the loaders hold it: a copy."""
    if tobytes:
        return bytes(piece)
    if raw:
        array = np.frombuffer(piece, dtype=head.dtype).reshape(head.shape(i))
        return apply_label_remap(array, remap) if remap is not None else array.copy()
    return _Encoded(bytes(piece), head.shape(i), head.dtype, remap)


def _release_pages(reader: Any, key: str, head: Any, a: int, b: int) -> None:
    """Drop this process's mapping of the pages that held samples [a, b) of a local,
    uncompressed chunk file, and the checksum blocks read with them (MADV_DONTNEED: clean
    file pages, the page cache keeps them; a later read maps them again). Best effort:
    anything unexpected leaves them mapped."""
    if (a >= b or head.chunk_compression is not None
            or not hasattr(mmap, "MADV_DONTNEED")):
        return
    try:
        local = reader.storage.local_path(key)
        if local is None:
            return
        mm = reader._mapped(key, local, head)
        lo, hi = ((int(head.offsets[a]), int(head.offsets[b])) if head.whole_payload_only
                  else head.covering(a, b))
        # widened to _RELEASE_ALIGN: a page fault maps the cached pages around it too
        # (the kernel's fault-around, 64 KiB by default), neighbours read earlier included
        first = (head.payload_start + int(lo)) // _RELEASE_ALIGN * _RELEASE_ALIGN
        last = min(len(mm), -(-(head.payload_start + int(hi)) // _RELEASE_ALIGN) * _RELEASE_ALIGN)
        if last > first:
            mm.madvise(mmap.MADV_DONTNEED, first, last - first)
    except (AttributeError, OSError, ValueError, TypeError):
        pass


def finish_value(meta: Any, value: Any, method: str) -> Any:
    """A stored sample as a loader hands it out: decoded, writable, a single class label
    as an int (several as an int64 array), text as str, json as its object; with
    method="pil" an image as a PIL image."""
    if method == "tobytes":
        return value
    if isinstance(value, _Encoded):
        if method == "pil" and meta.sample_compression in _IMAGE_COMPRESSIONS:
            from PIL import Image

            return Image.open(io.BytesIO(value.data))
        value = decode_sample(meta, value.data, value.shape, value.dtype, value.remap)
    if isinstance(value, np.ndarray):
        if meta.htype == "class_label":
            value = value.astype(np.int64)
            return int(value[0]) if value.size == 1 else value
        if not value.flags.writeable:
            value = value.copy()
        if method == "pil":
            from PIL import Image

            return Image.fromarray(value[..., 0] if value.ndim == 3 and value.shape[2] == 1
                                   else value)
    return value


def tensor_names(ds: Any, tensors: Any) -> list[str]:
    if tensors is None:
        return list(ds.tensors)
    if isinstance(tensors, str):
        tensors = [tensors]
    names: list[str] = []
    for name in tensors:
        if name in ds.tensors:
            names.append(name)
        elif name in ds.groups:
            names.extend(full for full in ds.tensors if full.startswith(name + "/"))
        else:
            raise KeyError(f"dataset {ds.path} has no tensor or group {name!r}; tensors: "
                           f"{list(ds.tensors)}")
    return list(dict.fromkeys(names))
