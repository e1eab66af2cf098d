"""Arrow, Parquet and pandas, both ways.

    ds.to_arrow(tensors) ─► one pyarrow.Table; a column per tensor, its type fixed by the
        tensor alone (so every block and Parquet part has one schema):
          numeric, samples of one shape (1,)   ─► the plain type (int64, float32, ...)
          numeric, one shape                   ─► arrow.fixed_shape_tensor
          numeric, shapes that differ          ─► list (nested: one level per axis)
          image with jpeg/png/webp compression ─► binary: the stored bytes, byte for byte
          text ─► string; json ─► string (JSON text)
          class_label, one per row             ─► dictionary<int32, string> of class names
          class_label, several per row         ─► list<uint32>
        schema metadata "slicewise": each tensor's htype, dtype, compressions, class
        names and info, so sw.from_arrow / from_parquet rebuild the same tensors.
    ds.to_parquet(dir)   ─► row blocks (~64 MB of stored samples, whole chunks) ─► engine
        Pool: each worker reads its block a piece (~8 MB) at a time and writes
        part-NNNNN.parquet, one row group per piece: memory is one piece per worker.
        A path ending in .parquet is one file, streamed in this process.
    sw.from_parquet(file | dir | [files]) ─► one task per row group: the worker reads it,
        appends its rows with its own DatasetWriter ─► receipts ─► one commit.
    sw.from_arrow(table) ─► the same rows writer, in this process.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    commit_receipts,
    new_dataset,
    require,
    run_jobs,
)

METADATA_KEY = b"slicewise"
PART_BYTES = 64 * 2**20
PIECE_BYTES = 8 * 2**20
_IMAGE_COMPRESSIONS = ("jpeg", "png", "webp")


def _require(module: str, feature: str) -> Any:
    """An optional dependency of this module, or an error naming the extra (`[arrow]`)."""
    try:
        return require(module, feature)
    except ImportError as exc:
        raise ImportError(f"{feature} needs {module.split('.')[0]!r}; install it with "
                          "`pip install slicewise[arrow]`") from exc


def _pa() -> Any:
    return _require("pyarrow", "Arrow and Parquet export/import")


def _pq() -> Any:
    return _require("pyarrow.parquet", "Parquet export/import")


# ---- export


def column_kind(tensor: Any) -> str:
    """How a tensor becomes an Arrow column (see the module docstring)."""
    meta = tensor.meta
    if meta.htype == "text":
        return "text"
    if meta.htype == "json":
        return "json"
    dims = tensor._dims()
    if meta.htype == "class_label":
        return "label" if dims in ((), (1,)) else "labels"
    if meta.sample_compression in _IMAGE_COMPRESSIONS:
        return "binary"
    if dims in ((), (1,)):
        return "scalar"
    return "ragged" if None in dims else "tensor"


def _arrow_type(tensor: Any, kind: str) -> Any:
    pa = _pa()
    dtype = np.dtype(tensor.meta.dtype or "float64") if kind not in ("text", "json") else None
    if kind in ("text", "json"):
        return pa.string()
    if kind == "binary":
        return pa.binary()
    if kind == "label":
        return pa.dictionary(pa.int32(), pa.string())
    if kind == "labels":
        return pa.list_(pa.uint32())
    value = pa.from_numpy_dtype(dtype)
    if kind == "scalar":
        return value
    dims = tensor._dims()
    if kind == "tensor":
        return pa.fixed_shape_tensor(value, list(dims))
    out = value
    for _ in dims:
        out = pa.list_(out)
    return out


def _schema(ds: Any, names: list[str]) -> Any:
    pa = _pa()
    fields, meta = [], {}
    for name in names:
        tensor = ds[name]
        kind = column_kind(tensor)
        fields.append(pa.field(name, _arrow_type(tensor, kind)))
        m = tensor.meta
        meta[name] = {"kind": kind, "htype": m.htype, "dtype": m.dtype,
                      "sample_compression": m.sample_compression,
                      "chunk_compression": m.chunk_compression,
                      "class_names": list(m.class_names or []) or None,
                      "htype_kwargs": m.htype_kwargs or {}, "info": dict(m.info or {})}
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta).encode()})


def _column(ds: Any, name: str, field: Any, kind: str, start: int, stop: int) -> Any:
    pa = _pa()
    view = ds[name][start:stop]
    if kind == "binary":
        return _binary_column(ds, name, start, stop)
    if kind == "text":
        return pa.array(view.data()["value"], type=pa.string())
    if kind == "json":
        return pa.array([json.dumps(v, separators=(",", ":")) for v in view.data()["value"]],
                        type=pa.string())
    if kind == "label":
        names = ds[name].meta.class_names or []
        ids = np.asarray(view.numpy(aslist=True), dtype=np.int64).reshape(-1)
        if ids.size and ids.max() >= len(names):
            raise ValueError(f"tensor {name!r}: class id {int(ids.max())} has no class name "
                             f"(class_names: {names}); name every class to export it")
        return pa.DictionaryArray.from_arrays(pa.array(ids.astype(np.int32), pa.int32()),
                                              pa.array(names, pa.string()))
    if kind == "labels":
        return pa.array([v.astype(np.uint32).reshape(-1) for v in view.numpy(aslist=True)],
                        type=field.type)
    dtype = np.dtype(ds[name].meta.dtype or "float64")
    if kind == "scalar":
        return pa.array(np.asarray(view.numpy(), dtype=dtype).reshape(-1))
    if kind == "tensor":
        array = np.ascontiguousarray(np.asarray(view.numpy(), dtype=dtype))
        return pa.FixedShapeTensorArray.from_numpy_ndarray(array)
    return _nested_lists(view.numpy(aslist=True), dtype, field.type)


def _binary_column(ds: Any, name: str, start: int, stop: int) -> Any:
    """Rows [start, stop) of tensor `name` as their stored bytes, one Arrow binary array
    per stored chunk built on the chunk's span (its offsets, one copy of the bytes),
    instead of a Python bytes object per sample."""
    pa = _pa()
    tensor = ds[name]
    if stop > len(tensor) or tensor.meta.chunk_compression is not None:
        from slicewise.integrations.rows import read_rows  # a padded view's empty rows

        return pa.array(read_rows(ds, name, start, stop, tobytes=True), type=pa.binary())
    from slicewise.integrations.rows import chunk_spans

    pieces = []
    for _key, head, _k, a, b, span in chunk_spans(ds, name, start, stop):
        # a chunk is far below 2 GiB: int32 offsets, as pa.binary() has
        offsets = (np.asarray(head.offsets[a : b + 1], dtype=np.int64)
                   - int(head.offsets[a])).astype(np.int32)
        pieces.append(pa.Array.from_buffers(pa.binary(), b - a, [
            None, pa.py_buffer(offsets), pa.py_buffer(bytes(span))]))
    if not pieces:
        return pa.array([], type=pa.binary())
    return pieces[0] if len(pieces) == 1 else pa.chunked_array(pieces, type=pa.binary())


def _nested_lists(samples: list[np.ndarray], dtype: np.dtype, arrow_type: Any) -> Any:
    """Samples of one ndim and any shapes as nested lists, one level per axis."""
    pa = _pa()
    if not samples:
        return pa.array([], type=arrow_type)
    ndim = samples[0].ndim
    flat = np.concatenate([np.asarray(s, dtype=dtype).reshape(-1) for s in samples])
    out = pa.array(flat)
    for axis in reversed(range(ndim)):
        lengths = np.concatenate([np.full(int(np.prod(s.shape[:axis], dtype=np.int64)),
                                          s.shape[axis], dtype=np.int64) for s in samples])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        out = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), out)
    return out


def _names(ds: Any, tensors: Any) -> list[str]:
    from slicewise.integrations.rows import tensor_names

    return tensor_names(ds, tensors)


def table_of_rows(ds: Any, schema: Any, start: int, stop: int) -> Any:
    """Rows [start, stop) of the schema's tensors as a pyarrow Table of that schema."""
    pa = _pa()
    meta = json.loads(schema.metadata[METADATA_KEY])
    columns = [_column(ds, field.name, field, meta[field.name]["kind"], start, stop)
               for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def to_arrow(ds: Any, tensors: Any = None, start: int = 0, stop: int | None = None) -> Any:
    """The rows [start, stop) (all by default; `len(ds)` rows) of `tensors` (all by default;
    group names take their tensors) as one pyarrow.Table: see the module docstring for each
    tensor's column type. Its schema metadata lets sw.from_arrow rebuild the tensors."""
    names = _names(ds, tensors)
    stop = len(ds) if stop is None else min(int(stop), len(ds))
    return table_of_rows(ds, _schema(ds, names), int(start), stop)


def to_pandas(ds: Any, tensors: Any = None) -> Any:
    """A pandas.DataFrame, one column per tensor: numbers of one value per row as numeric
    columns, class labels as Categorical (by class name), text as str, json as objects,
    other arrays as a column of (writable) numpy arrays, compressed images as bytes."""
    pd = _require("pandas", "ds.to_pandas()")
    from slicewise.integrations.rows import read_rows

    names = _names(ds, tensors)
    n = len(ds)
    data = {}
    for name in names:
        tensor = ds[name]
        kind = column_kind(tensor)
        view = tensor[0:n]
        if kind == "scalar":
            data[name] = np.asarray(view.numpy()).reshape(-1)
        elif kind == "label":
            ids = np.asarray(view.numpy(aslist=True), dtype=np.int64).reshape(-1)
            names_ = list(tensor.meta.class_names or [])
            if ids.size and ids.max() >= len(names_):
                data[name] = ids
            else:
                data[name] = pd.Categorical.from_codes(ids, categories=names_)
        elif kind in ("text", "json"):
            data[name] = pd.Series(view.data()["value"], dtype=object)
        elif kind == "binary":
            data[name] = pd.Series(read_rows(ds, name, 0, n, tobytes=True), dtype=object)
        else:
            series = pd.Series([None] * n, dtype=object)
            for i, value in enumerate(view.numpy(aslist=True)):
                series.iat[i] = value
            data[name] = series
    return pd.DataFrame(data)


def _row_blocks(ds: Any, names: list[str], target: int) -> list[tuple[int, int]]:
    """Rows [0, len) in blocks of about `target` stored bytes, cut at the heaviest tensor's
    chunk boundaries."""
    n = len(ds)
    if n == 0:
        return []
    heaviest = max(names, key=lambda name: sum(ds[name]._state.nbytes))
    row_bytes = sum(sum(ds[t]._state.nbytes) / max(1, len(ds[t])) for t in names)
    rows = max(1, int(target / max(1.0, row_bytes)))
    bounds = [0]
    for _, stop in ds[heaviest].chunk_row_ranges():
        stop = min(stop, n)
        if stop - bounds[-1] >= rows:
            bounds.append(stop)
    if bounds[-1] != n:
        bounds.append(n)
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):  # chunks bigger than the target
        out.extend((s, min(s + rows, b)) for s in range(a, b, rows))
    return out


class _PartJob:
    def __init__(self, ds: Any, schema: Any, start: int, stop: int, pieces: list,
                 path: str, storage_options: dict) -> None:
        self.ds, self.schema, self.start, self.stop = ds, schema, start, stop
        self.pieces, self.path, self.storage_options = pieces, path, storage_options

    def __repr__(self) -> str:
        return f"rows [{self.start}:{self.stop}] -> {self.path}"


def _write_part(job: _PartJob) -> int:
    import fsspec

    pq = _pq()
    with fsspec.open(job.path, "wb", **job.storage_options) as file, \
            pq.ParquetWriter(file, job.schema) as writer:
        for a, b in job.pieces:
            writer.write_table(table_of_rows(job.ds, job.schema, a, b))
    return job.stop - job.start


def to_parquet(ds: Any, path: Any, tensors: Any = None, *, overwrite: bool = False,
               num_workers: int | None = None, pool: Any = None, part_bytes: int = PART_BYTES,
               row_group_bytes: int = PIECE_BYTES, storage_options: dict | None = None,
               progress: bool = False) -> str:
    """Write the dataset's rows as Parquet, in parallel and in bounded memory.

    `path` is a folder (local or an fsspec URL): part-00000.parquet, ... each holding about
    `part_bytes` of stored samples, written by the engine's workers a row group (about
    `row_group_bytes`) at a time; `pyarrow.parquet.read_table(path)` or
    `pandas.read_parquet(path)` read it as one table. A path ending in ".parquet" is a
    single file, streamed by this process one row group at a time. Existing part files
    are an error unless overwrite=True. Returns the path."""
    import fsspec

    if getattr(ds, "has_pending", False):
        raise ValueError(f"dataset {ds.path} has uncommitted changes; commit them first")
    names = _names(ds, tensors)
    schema = _schema(ds, names)
    target = os.fspath(path)
    options = dict(storage_options or {})
    fs, root = fsspec.core.url_to_fs(target, **options)
    pieces_of = _row_blocks(ds, names, row_group_bytes)
    if target.endswith(".parquet"):
        if fs.exists(root) and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        _write_part(_PartJob(ds, schema, 0, len(ds), pieces_of, target, options))
        return target
    old = [p for p in (fs.ls(root, detail=False) if fs.exists(root) else [])
           if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")]
    if old and not overwrite:
        raise FileExistsError(f"{target} already holds {len(old)} Parquet part(s); pass "
                              "overwrite=True to replace them")
    for p in old:
        fs.rm(p)
    fs.makedirs(root, exist_ok=True)
    jobs = []
    for index, (a, b) in enumerate(_row_blocks(ds, names, part_bytes)):
        pieces = [(max(a, s), min(b, e)) for s, e in pieces_of if s < b and e > a]
        jobs.append(_PartJob(ds, schema, a, b, pieces,
                             f"{target.rstrip('/')}/part-{index:05d}.parquet", options))
    run_jobs(_write_part, jobs, pool=pool, num_workers=num_workers, progress=progress)
    return target


# ---- import


def plan_columns(schema: Any) -> dict[str, dict]:
    """Per column: the tensor's create_tensor arguments and how values are converted."""
    from slicewise.format.manifest import validate_name

    pa = _pa()
    saved = json.loads(schema.metadata.get(METADATA_KEY, b"{}")) if schema.metadata else {}
    plan = {}
    for field in schema:
        name = validate_name(field.name)
        meta = saved.get(field.name)
        if meta is not None:
            create = {"htype": meta["htype"], "dtype": meta["dtype"],
                      "sample_compression": meta["sample_compression"],
                      "chunk_compression": meta["chunk_compression"],
                      **(meta.get("htype_kwargs") or {})}
            if meta["htype"] == "class_label":
                create["class_names"] = meta.get("class_names") or []
                create.pop("dtype")
            if meta["htype"] in ("text", "json"):
                create.pop("dtype")
            plan[name] = {"create": create, "kind": meta["kind"], "info": meta.get("info")}
            continue
        plan[name] = _infer(pa, field)
    return plan


def _infer(pa: Any, field: Any) -> dict:
    """A column without slicewise metadata: its tensor from the Arrow type."""
    t = field.type
    types = pa.types
    if types.is_dictionary(t):
        return {"create": {"htype": "class_label"}, "kind": "label"}
    if types.is_string(t) or types.is_large_string(t):
        return {"create": {"htype": "text"}, "kind": "text"}
    if types.is_binary(t) or types.is_large_binary(t):
        return {"create": {"htype": "generic", "dtype": "uint8"}, "kind": "binary_auto"}
    if isinstance(t, pa.FixedShapeTensorType):
        return {"create": {"dtype": t.value_type.to_pandas_dtype()}, "kind": "tensor"}
    inner = t
    while types.is_list(inner) or types.is_large_list(inner) or types.is_fixed_size_list(inner):
        inner = inner.value_type
    if types.is_integer(inner) or types.is_floating(inner) or types.is_boolean(inner):
        kind = "scalar" if inner is t else "ragged"
        return {"create": {"dtype": np.dtype(inner.to_pandas_dtype()).name}, "kind": kind}
    raise TypeError(f"column {field.name!r} has Arrow type {t}, which no tensor holds "
                    "(numbers, lists of numbers, fixed-shape tensors, strings, binary, "
                    "dictionaries); select the other columns or convert it first")


def _values(column: Any, kind: str) -> list:
    """One value per row, as the writer takes it."""
    pa = _pa()
    from slicewise.format.htypes import FileSample

    if kind == "tensor":
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        return list(array.to_numpy_ndarray()) if len(array) else []
    if kind == "label":
        return column.cast(pa.string()).to_pylist()
    if kind == "json":
        return [json.loads(v) for v in column.to_pylist()]
    if kind == "binary":
        out = []
        for i, data in enumerate(column.to_pylist()):
            sample = FileSample(f"<arrow row {i}>")
            sample.keep(data)
            out.append(sample)
        return out
    if kind == "binary_auto":
        return [np.frombuffer(v, np.uint8).copy() for v in column.to_pylist()]
    if kind == "scalar":
        return list(column.to_numpy(zero_copy_only=False))
    if kind in ("ragged", "labels"):
        return [np.asarray(v) for v in column.to_pylist()]
    return column.to_pylist()  # text


def _images_auto(plan: dict, table: Any) -> None:
    """Binary columns without metadata holding images: image tensors of their format."""
    from slicewise.format.codecs import sniff_image_format

    for name, item in plan.items():
        if item["kind"] != "binary_auto" or not len(table):
            continue
        first = table.column(name)[0].as_py()
        fmt = sniff_image_format(first[:16]) if first else None
        if fmt in _IMAGE_COMPRESSIONS:
            item["create"] = {"htype": "image", "sample_compression": fmt}
            item["kind"] = "binary"


def write_table(spec: dict, writer_id: str, table: Any, plan: dict) -> dict:
    """Append a table's rows (columns per `plan`) with a DatasetWriter of its own; the
    receipt."""
    from slicewise.format.writer import DatasetWriter

    writer = DatasetWriter.from_spec(spec, writer_id)
    step = 1024
    for at in range(0, len(table), step):
        part = table.slice(at, step)
        columns = {name: _values(part.column(name), plan[name]["kind"]) for name in plan}
        writer.append_columns(columns, len(part))
    return writer.finish()


def _create(ds: Any, plan: dict) -> None:
    for name, item in plan.items():
        create = {k: v for k, v in item["create"].items() if v is not None}
        ds.create_tensor(name, **create)
        if item.get("info"):
            ds[name].info.update(item["info"])


def from_arrow(table: Any, path: Any, *, overwrite: bool = False,
               chunk_target_bytes: int | None = None) -> Any:
    """A new dataset at `path` from a pyarrow Table (or RecordBatch), a tensor per column:
    a table from ds.to_arrow comes back as the tensors it was made from (htypes, dtypes,
    compressions, class names, bytes); other tables by their types (numbers -> generic,
    lists/fixed-shape tensors -> arrays, strings -> text, dictionaries -> class labels,
    binary -> images when they are JPEG/PNG/WebP files, else uint8 arrays). One commit.

    Args:
        table: a pyarrow Table or RecordBatch.
        path: where the new dataset goes (a directory or URL).
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        TypeError: a column of an Arrow type no tensor holds.
        ImportError: pyarrow is not installed.

    Example:
        >>> table = pa.table({"x": [1.0, 2.0], "label": ["a", "b"]})  # doctest: +SKIP
        >>> ds = sw.from_arrow(table, "memory://doc-arrow", overwrite=True)  # doctest: +SKIP
        >>> len(ds)                                          # doctest: +SKIP
        2
    """
    pa = _pa()
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    plan = plan_columns(table.schema)
    _images_auto(plan, table)
    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        _create(ds, plan)
        receipt = write_table(ds.writer_spec(), "arrow", table, plan)
        commit_receipts(ds, [receipt], "from_arrow", {"integration": "arrow",
                                                      "rows": len(table)})
    return ds


class _RowGroupJob:
    def __init__(self, spec: dict, file: str, group: int, plan: dict, options: dict,
                 columns: list[str]) -> None:
        self.spec, self.file, self.group, self.plan = spec, file, group, plan
        self.options, self.columns = options, columns

    def __repr__(self) -> str:
        return f"row group {self.group} of {self.file}"


def _write_row_group(job: _RowGroupJob) -> dict:
    import fsspec

    with fsspec.open(job.file, "rb", **job.options) as handle:
        table = _pq().ParquetFile(handle).read_row_group(job.group, columns=job.columns)
    return write_table(job.spec, f"parquet:{job.file}:{job.group}", table, job.plan)


def _parquet_files(source: Any, options: dict) -> list[str]:
    import fsspec

    if isinstance(source, (list, tuple)):
        return [os.fspath(s) for s in source]
    source = os.fspath(source)
    fs, root = fsspec.core.url_to_fs(source, **options)
    if fs.isdir(root):
        found = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet"))
        if not found:
            raise FileNotFoundError(f"no .parquet files in {source}")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return found if protocol in ("file", "local") else [f"{protocol}://{p}" for p in found]
    return [source]


def from_parquet(source: Any, path: Any, *, columns: list[str] | None = None,
                 overwrite: bool = False, chunk_target_bytes: int | None = None,
                 num_workers: int | None = None, pool: Any = None,
                 storage_options: dict | None = None, progress: bool = False) -> Any:
    """A new dataset at `path` from Parquet: a file, a folder of .parquet files (e.g. what
    ds.to_parquet wrote; read in name order) or a list of files. One engine task per row
    group reads it and writes its rows; the rows keep the files' order; one commit. Column
    types as in from_arrow.

    Args:
        source: a file, a folder of .parquet files, or a list of files (paths or URLs).
        path: where the new dataset goes (a directory or URL).
        columns: the columns to import (default: all).
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        num_workers: workers (0: import in this process).
        pool: an `sw.Pool` to run on (default: the shared warm pool).
        storage_options: fsspec options for reading `source`.
        progress: show a progress bar.

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        FileNotFoundError: a folder with no .parquet files.
        TypeError: a column of an Arrow type no tensor holds.
        ImportError: pyarrow is not installed.

    Example:
        >>> ds = sw.from_parquet("./table_parquet/", "./table_ds", num_workers=4)  # doctest: +SKIP
    """
    pq = _pq()
    import fsspec

    options = dict(storage_options or {})
    files = _parquet_files(source, options)
    with fsspec.open(files[0], "rb", **options) as handle:
        first = pq.ParquetFile(handle)
        schema = first.schema_arrow
        sample = first.read_row_group(0, columns=columns) if first.num_row_groups else None
    if columns is not None:
        schema = _pa().schema([schema.field(c) for c in columns], metadata=schema.metadata)
    plan = plan_columns(schema)
    if sample is not None:
        _images_auto(plan, sample)
    groups = []
    for file in files:
        with fsspec.open(file, "rb", **options) as handle:
            groups.extend((file, g) for g in range(pq.ParquetFile(handle).num_row_groups))
    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        _create(ds, plan)
        spec = ds.writer_spec()
        jobs = [_RowGroupJob(spec, file, g, plan, options, list(plan)) for file, g in groups]
        receipts = run_jobs(_write_row_group, jobs, pool=pool, num_workers=num_workers,
                            progress=progress)
        commit_receipts(ds, receipts, "from_parquet", {"integration": "parquet",
                                                       "files": len(files)})
    return ds
