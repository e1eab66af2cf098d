"""Hugging Face `datasets`, both ways.

    sw.from_hf(hf_dataset, path, num_workers=2)
        parent: features ─► tensors (Image ─► image tensor in the images' own format, the
          bytes stored byte for byte; ClassLabel ─► class_label with its names; Value ─►
          numbers or text; ArrayND / List of numbers ─► arrays; anything else ─► json)
        row blocks ─► engine Pool: a worker opens its block (a dataset on disk travels as
          its cache files' paths; an in-memory one as an Arrow IPC slice of the block),
          converts column by column from Arrow, appends with its own DatasetWriter
        ─► receipts ─► one commit
    ds.to_hf() ─► a datasets.Dataset in memory (Arrow-backed): compressed images as
        Image() features with their stored bytes, single class labels as ClassLabel, text
        and numbers as Value, fixed-shape arrays as ArrayND / List, ragged ones as nested
        List; `.push_to_hub(...)` publishes it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    commit_receipts,
    new_dataset,
    require,
    run_jobs,
)

_IMAGE_COMPRESSIONS = ("jpeg", "png", "webp")
ROWS_PER_TASK = 1000


def _datasets() -> Any:
    try:
        return require("datasets", "Hugging Face interop")
    except ImportError as exc:
        raise ImportError("sw.from_hf / ds.to_hf need Hugging Face 'datasets'; install it "
                          "with `pip install slicewise[hf]`") from exc


# ---- import


def _plan(hf: Any, features: Any, first: dict) -> dict[str, dict]:
    """Per column: create_tensor arguments and the conversion kind."""
    from slicewise.format.manifest import validate_name

    f = hf.features.features
    plan = {}
    for name, feature in features.items():
        tensor = validate_name(name)
        if isinstance(feature, f.Image):
            data = first.get(name) or {}
            fmt = _image_format(data.get("bytes"), data.get("path"))
            plan[tensor] = {"column": name, "kind": "image",
                            "create": {"htype": "image", "sample_compression": fmt}}
        elif isinstance(feature, f.ClassLabel):
            plan[tensor] = {"column": name, "kind": "label",
                            "create": {"htype": "class_label",
                                       "class_names": list(feature.names)}}
        elif isinstance(feature, f.Value) and feature.dtype in ("string", "large_string"):
            plan[tensor] = {"column": name, "kind": "text", "create": {"htype": "text"}}
        elif isinstance(feature, f.Value) and _numeric(feature.dtype):
            plan[tensor] = {"column": name, "kind": "scalar",
                            "create": {"dtype": _numeric(feature.dtype)}}
        elif isinstance(feature, (f.Array2D, f.Array3D, f.Array4D, f.Array5D)) \
                and _numeric(feature.dtype):
            plan[tensor] = {"column": name, "kind": "array",
                            "create": {"dtype": _numeric(feature.dtype)}}
        elif _list_dtype(f, feature):
            plan[tensor] = {"column": name, "kind": "list",
                            "create": {"dtype": _list_dtype(f, feature)}}
        else:
            plan[tensor] = {"column": name, "kind": "json", "create": {"htype": "json"}}
    return plan


def _numeric(dtype: str) -> str | None:
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        return None
    return np_dtype.name if np_dtype.kind in "biuf" else None


def _list_dtype(f: Any, feature: Any) -> str | None:
    """The number type of a (nested) List / Sequence of numbers, else None."""
    depth = 0
    while isinstance(feature, (getattr(f, "List", ()), getattr(f, "LargeList", ()),
                               f.Sequence)) and depth < 8:
        feature = feature.feature
        depth += 1
    if depth and isinstance(feature, f.Value):
        return _numeric(feature.dtype)
    return None


def _image_format(data: bytes | None, path: str | None) -> str:
    from slicewise.format.codecs import sniff_image_format

    if data is None and path:
        with open(path, "rb") as handle:
            data = handle.read(16)
    fmt = sniff_image_format(data[:16]) if data else None
    return fmt if fmt in _IMAGE_COMPRESSIONS else "png"  # others are converted once


class _BlockJob:
    """Rows [start, stop) of a datasets.Dataset: the dataset itself when it lives in cache
    files (it pickles as their paths), else an Arrow IPC stream of just those rows."""

    def __init__(self, spec: dict, plan: dict, hf_dataset: Any, start: int, stop: int,
                 ipc: bytes | None) -> None:
        self.spec, self.plan, self.start, self.stop = spec, plan, start, stop
        self.hf_dataset, self.ipc = hf_dataset, ipc

    def __repr__(self) -> str:
        return f"rows [{self.start}:{self.stop}] of a Hugging Face dataset"

    def table(self) -> Any:
        if self.ipc is not None:
            import pyarrow as pa

            return pa.ipc.open_stream(self.ipc).read_all()
        return self.hf_dataset.with_format("arrow")[self.start : self.stop]


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _column_values(column: Any, kind: str, name: str, start: int, dtype: Any) -> list:
    from slicewise.format.htypes import FileSample

    if kind == "image":
        column = column.combine_chunks()
        out = []
        for i, (data, path) in enumerate(zip(column.field("bytes").to_pylist(),
                                             column.field("path").to_pylist(), strict=True)):
            sample = FileSample(path or f"<{name} row {start + i}>")
            if data is not None:
                sample.keep(data)
            out.append(sample)
        return out
    if kind in ("label", "scalar"):
        return list(column.to_numpy())
    if kind in ("array", "list"):  # (an Arrow IPC slice has no HF extension types)
        return [np.asarray(v, dtype=dtype) for v in column.to_pylist()]
    return column.to_pylist()  # text, json


def _write_block(job: _BlockJob) -> dict:
    from slicewise.format.writer import DatasetWriter

    table = job.table()
    writer = DatasetWriter.from_spec(job.spec, f"hf:{job.start}")
    step = 256
    for at in range(0, len(table), step):
        part = table.slice(at, step)
        columns = {tensor: _column_values(part.column(item["column"]), item["kind"],
                                          item["column"], job.start + at,
                                          item["create"].get("dtype"))
                   for tensor, item in job.plan.items()}
        writer.append_columns(columns, len(part))
    return writer.finish()


def from_hf(hf_dataset: Any, path: Any, *, num_workers: int | None = None,
            columns: list[str] | None = None, overwrite: bool = False,
            chunk_target_bytes: int | None = None, pool: Any = None,
            rows_per_task: int = ROWS_PER_TASK, progress: bool = False) -> Any:
    """A new slicewise dataset at `path` from a Hugging Face `datasets.Dataset`, written in
    parallel by the engine's workers (`num_workers`; 0 runs here), one commit.

    Image features become image tensors in the images' own format (JPEG, PNG or WebP:
    stored byte for byte, `ds.images[i].tobytes()` is the original file; other formats
    are converted to PNG once); ClassLabel features class_label tensors with the same
    names and ids; string Values text tensors; numbers, ArrayND and (nested) Lists of
    numbers numeric tensors; anything else json.

    Args:
        hf_dataset: one split, a `datasets.Dataset` (not a DatasetDict).
        path: where the new dataset goes (a directory or URL).
        num_workers: workers (0: write in this process).
        columns: the columns to import (default: all).
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        pool: an `sw.Pool` to run on (default: the shared warm pool).
        rows_per_task: rows each engine task writes.
        progress: show a progress bar.

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        TypeError: a DatasetDict (pick a split) was given.
        ImportError: Hugging Face `datasets` is not installed.

    Example:
        >>> ds = sw.from_hf(load_dataset("beans", split="train"), "./beans_ds",
        ...                 num_workers=2)                    # doctest: +SKIP
    """
    _datasets()
    if hasattr(hf_dataset, "keys") and not hasattr(hf_dataset, "features"):
        raise TypeError("from_hf takes one split (a datasets.Dataset), e.g. dataset['train'], "
                        f"got a {type(hf_dataset).__name__} of {list(hf_dataset.keys())}")
    hf = _datasets()
    features = hf_dataset.features
    if columns is not None:
        features = {name: features[name] for name in columns}
        hf_dataset = hf_dataset.select_columns(list(columns))
    n = len(hf_dataset)
    first = hf_dataset.with_format("arrow")[0:1].to_pylist()[0] if n else {}
    plan = _plan(hf, dict(features), first)
    on_disk = bool(hf_dataset.cache_files)
    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        for tensor, item in plan.items():
            ds.create_tensor(tensor, **item["create"])
        spec = ds.writer_spec()
        step = max(1, int(rows_per_task))
        jobs = []
        for start in range(0, n, step):
            stop = min(n, start + step)
            ipc = None if on_disk else _ipc(hf_dataset.with_format("arrow")[start:stop])
            jobs.append(_BlockJob(spec, plan, hf_dataset if on_disk else None, start, stop,
                                  ipc))
        receipts = run_jobs(_write_block, jobs, pool=pool, num_workers=num_workers,
                            progress=progress)
        commit_receipts(ds, receipts, "from_hf", {"integration": "hf", "rows": n})
    return ds


# ---- export


def to_hf(ds: Any, tensors: Any = None) -> Any:
    """The dataset's rows as an Arrow-backed `datasets.Dataset` (in memory): compressed
    image tensors as `Image()` features holding their stored bytes, single class labels as
    `ClassLabel(names=...)`, text as `Value("string")`, numbers as `Value`, arrays of one
    shape as `List(length=...)` / `Array2D`-`Array5D`, ragged ones as nested `List`s, json
    as JSON strings. Publish with `.push_to_hub(...)`."""
    hf = _datasets()
    from slicewise.integrations.arrow import column_kind
    from slicewise.integrations.rows import read_rows, tensor_names

    f = hf.features
    names = tensor_names(ds, tensors)
    n = len(ds)
    features, data = {}, {}
    for name in names:
        tensor = ds[name]
        kind = column_kind(tensor)
        view = tensor[0:n]
        dtype = np.dtype(tensor.meta.dtype or "float64") if kind not in ("text", "json") \
            else None
        if kind == "binary" and tensor.meta.is_image:
            features[name] = f.Image()
            data[name] = [{"bytes": b, "path": None} for b in read_rows(ds, name, 0, n, True)]
        elif kind == "binary":
            features[name] = f.Value("binary")
            data[name] = read_rows(ds, name, 0, n, True)
        elif kind == "label":
            features[name] = f.ClassLabel(names=list(tensor.meta.class_names or []))
            data[name] = np.asarray(view.numpy(aslist=True), np.int64).reshape(-1).tolist()
        elif kind == "text":
            features[name] = f.Value("string")
            data[name] = view.data()["value"]
        elif kind == "json":
            features[name] = f.Value("string")
            data[name] = [json.dumps(v) for v in view.data()["value"]]
        elif kind == "scalar":
            features[name] = f.Value(dtype.name)
            data[name] = np.asarray(view.numpy(), dtype).reshape(-1)
        elif kind == "tensor" and len(tensor._dims()) in (2, 3, 4, 5):
            dims = tensor._dims()
            array = getattr(f, f"Array{len(dims)}D")
            features[name] = array(shape=tuple(dims), dtype=dtype.name)
            data[name] = list(np.asarray(view.numpy(), dtype))
        else:  # one axis of fixed length, ragged arrays (labels too): nested lists
            samples = view.numpy(aslist=True)
            ndim = samples[0].ndim if samples else 1
            feature = f.Value(dtype.name)
            for axis in reversed(range(ndim)):
                length = tensor._dims()[axis] if kind == "tensor" else None
                feature = f.List(feature, length=length if length is not None else -1)
            features[name] = feature
            data[name] = [s.tolist() for s in samples]
    return hf.Dataset.from_dict(data, features=f.Features(features))
