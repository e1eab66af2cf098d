"""What every import and export in integrations/ shares: optional-dependency loading, row
blocks, running jobs on the engine, and the one atomic commit at the end.

    parent                                   worker (engine Pool)
    ──────                                   ────────────────────
    plan: split each source into row         open the source itself (file, store, tensor)
    blocks aligned with its chunks   ──jobs──► read rows [start, stop) ─► DatasetWriter.append
                                             finish() ─► receipt (JSON, a few hundred bytes)
    ds.add_receipts(in job order) ◄─receipts─┘
    ds.commit(message, meta)   one atomic commit: all the import, or none of it
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np

# Rows handed to one worker task are about this many bytes: big enough that per-task overhead
# (a few hundred microseconds) vanishes, small enough that workers x block stays far below RAM.
DEFAULT_BLOCK_BYTES = 32 * 2**20
# ... and at least this many, when there are that many: the dataset's default chunk size.
MIN_BLOCK_BYTES = 8 * 2**20

_EXTRA_FOR_MODULE = {
    "dask": "dask",
    "dask.array": "dask",
    "dask.bag": "dask",
    "h5py": "hdf5",
    "zarr": "zarr",
    "xarray": "zarr",
}


def require(module: str, feature: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_FOR_MODULE.get(module, module.split(".")[0])
        raise ImportError(
            f"{feature} needs the optional dependency {module.split('.')[0]!r}; "
            f"install it with `pip install slicewise[{extra}]`"
        ) from exc


def row_blocks(
    n_rows: int,
    row_nbytes: int,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    align: int = 1,
) -> list[tuple[int, int]]:
    """Split rows [0, n_rows) into (start, stop) blocks for workers, each a whole number of
    `align` rows (a source's chunk height, so no source chunk is read twice).

    Blocks hold at most `block_bytes`; a small import is cut finer, into about four blocks
    per core so every worker has work to the end, but never below MIN_BLOCK_BYTES (each
    block ends in a partial chunk of its own, and chunks should stay big)."""
    if n_rows <= 0:
        return []
    align = max(1, int(align))
    row_nbytes = max(1, row_nbytes)
    most = max(1, block_bytes // row_nbytes)
    least = max(1, min(most, MIN_BLOCK_BYTES // row_nbytes))
    spread = -(-n_rows // (4 * _cores()))
    rows = min(most, max(least, spread))
    rows = max(align, (rows // align) * align)
    return [(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


def _cores() -> int:
    from slicewise.engine import cpu_count

    return cpu_count()


def natural_key(text: str) -> list[Any]:
    """Sort key so that image2.tif comes before image10.tif."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def run_jobs(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    *,
    pool: Any = None,
    num_workers: int | None = None,
    backend: str = "processes",
    progress: bool = False,
) -> list[Any]:
    """Run fn over jobs on the engine, results in job order.

    `pool` reuses a caller's sw.Pool; `num_workers=0` runs in this process (debugging);
    otherwise the engine's warm shared pool (the one `sw.map` uses) with `num_workers`
    processes (default: all usable cores), so repeated imports pay no start-up. Threads
    (for objects that cannot leave this process) get a pool of their own for the call.
    """
    if not jobs:
        return []
    if num_workers == 0 or backend == "serial":
        return [fn(job) for job in jobs]
    if pool is not None:
        return list(pool.map(fn, jobs, chunksize=1, progress=progress))
    from slicewise.engine import Pool, get_default_pool

    if backend == "processes":
        return list(get_default_pool(num_workers).map(fn, jobs, chunksize=1,
                                                      progress=progress))
    with Pool(num_workers, backend=backend) as owned:
        return list(owned.map(fn, jobs, chunksize=1, progress=progress))


def commit_receipts(ds: Any, receipts: Iterable[Any], message: str, meta: dict) -> str:
    """Add the workers' receipts in job order and publish them, with everything else pending
    (tensors created, info set), as one version. Returns the version id."""
    ds.add_receipts([receipt for receipt in receipts if receipt is not None])
    return ds.commit(message, meta=meta)


def in_callers_block(ds: Any) -> bool:
    """True inside the caller's own `with ds:` block: then an extend's receipts join the
    block's pending changes and the block commits them at its end, as every write does."""
    return getattr(ds, "_with_depth", 0) > 0


@contextmanager
def new_dataset(path: Any, *, overwrite: bool, chunk_target_bytes: int | None) -> Iterator[Any]:
    """A new empty dataset whose tensor creation, info and data are published by the one
    commit_receipts() call inside this block. If anything fails, nothing is published and
    the empty dataset is removed again, so the same call can simply be run again."""
    from slicewise.dataset import delete, empty

    ds = empty(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes)
    try:
        with ds:
            yield ds
    except BaseException:
        with suppress(Exception):  # the import's own error is the one to see
            delete(path)
        raise


def json_safe(value: Any) -> Any:
    """An HDF5/Zarr attribute as a JSON value, or None when it has no JSON form."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf" and value.size <= 4096:
            return value.tolist()
        if value.dtype.kind in "OSU" and value.size <= 4096:
            return [json_safe(v) for v in value.tolist()]
        return None
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return None


def fspath(value: Any) -> str | None:
    """The URL, or absolute path, of a file-like location (workers may run in another
    directory); None for an in-memory object."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        return path if "://" in path else os.path.abspath(path)
    return None


class ImportJob:
    """One worker task of an import: rows [start, stop) of `source` into `tensor`, written
    by a DatasetWriter of its own. Its repr is what an error names (the engine shows the
    failing item, shortened), so it says rows, source and tensor first, briefly, and not
    the writer spec."""

    def __init__(self, spec: dict, writer_id: str, tensor: str, source: Any, start: int,
                 stop: int) -> None:
        self.spec, self.writer_id, self.tensor = spec, writer_id, tensor
        self.source, self.start, self.stop = source, start, stop

    def __repr__(self) -> str:
        return f"rows [{self.start}:{self.stop}] of {self.source!r} -> tensor {self.tensor!r}"


def write_rows_job(job: ImportJob) -> dict:
    """Worker side of an import: read one block of rows from a source the worker opens
    itself, append them with this job's own DatasetWriter, return the receipt.
    `source.read(start, stop)` gives the rows (image files: the frames of files
    [start, stop))."""
    return write_rows(job.spec, job.writer_id, job.tensor, job.source.read(job.start, job.stop))


def write_rows(spec: dict, writer_id: str, tensor: str, rows: Iterable[Any]) -> dict:
    """Append `rows` to `tensor` with a DatasetWriter of their own; the writer's receipt,
    which the parent commits."""
    from slicewise.format.writer import DatasetWriter

    writer = DatasetWriter.from_spec(spec, writer_id)
    for row in rows:
        writer.append(tensor, row)
    return writer.finish()


def import_blocks(
    ds: Any,
    blocks: Sequence[tuple[str, Any, int, int]],
    *,
    pool: Any = None,
    num_workers: int | None = None,
    backend: str = "processes",
    progress: bool = False,
) -> list[Any]:
    """Write (tensor name, source, start, stop) blocks into `ds` on the engine; receipts in
    block order. The caller commits them once."""
    spec = ds.writer_spec()
    jobs = [ImportJob(spec, f"import:{index}", tensor, source, start, stop)
            for index, (tensor, source, start, stop) in enumerate(blocks)]
    return run_jobs(write_rows_job, jobs, pool=pool, num_workers=num_workers, backend=backend,
                    progress=progress)


# What integrations/ needs to know about Tensor and Dataset objects, in one place


def own_handle(ds: Any) -> Any:
    """A read-only handle of `ds`'s version for one read, dropped after it (its chunk maps
    close with it). Uncommitted rows live only in `ds` itself: then read through `ds`."""
    if getattr(ds, "has_pending", False):
        return ds
    return copy.copy(ds)  # Dataset pickles (and copies) as URL + version


class TensorRows:
    """A picklable, array-like view of one tensor that dask's tasks index into.

    It carries the dataset (which pickles as its URL and version, so it travels to workers
    read-only) and the tensor's name. Each read opens its own read-only handle of that
    version (a copy goes through the same light pickling, well under a millisecond) and lets
    it go afterwards: the chunk files a handle maps are unmapped with it, so a scan of any
    size keeps only the chunks in flight in memory, not the reader's cache of recent ones.
    """

    def __init__(self, tensor: Any) -> None:
        self.dataset = dataset_of(tensor)
        self.tensor_name = name_of(tensor)
        self.shape = tuple(int(d) for d in tensor.shape)
        self.dtype = np.dtype(tensor.dtype)
        self.ndim = len(self.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = np.asarray(own_handle(self.dataset)[self.tensor_name][start:stop].numpy())
        if rows.dtype != self.dtype:
            rows = rows.astype(self.dtype, copy=False)
        return rows

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first = key[0] if key else slice(None)
        rest = key[1:]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(self.shape[0])
            rows = self.read(start, max(start, stop))
            return rows[(slice(None), *rest)] if rest else rows
        if isinstance(first, (int, np.integer)):
            index = int(first) + (self.shape[0] if first < 0 else 0)
            return self.read(index, index + 1)[(0, *rest)]
        # steps and lists of rows: read the covering range once, then pick
        positions = np.arange(self.shape[0])[first]
        if positions.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]
        low, high = int(positions.min()), int(positions.max()) + 1
        if high - low <= 4 * positions.size:
            rows = self.read(low, high)[positions - low]
        else:  # scattered rows: read each one, not everything between them
            rows = np.asarray(own_handle(self.dataset)[self.tensor_name][positions].numpy())
            rows = rows.astype(self.dtype, copy=False)
        return rows[(slice(None), *rest)] if rest else rows

    def __dask_tokenize__(self) -> Any:
        return ("slicewise.TensorRows", dataset_token(self.dataset), self.tensor_name,
                self.shape, str(self.dtype))

    def __repr__(self) -> str:
        return f"TensorRows({self.tensor_name!r}, shape={self.shape}, dtype={self.dtype})"


def row_nbytes(row_shape: Sequence[int], dtype: Any) -> int:
    """Bytes of one row of `row_shape` (the shape without its first axis), at least 1 so
    that callers can divide by it (a row of a zero-length axis holds no bytes)."""
    return max(1, int(np.prod(tuple(row_shape), dtype=np.int64)) * np.dtype(dtype).itemsize)


def is_ragged(tensor: Any) -> bool:
    """True when the tensor's samples differ in shape (a shape of None on some axis), so it
    has no single N-D array form: no dask.array, HDF5 dataset or Zarr array."""
    return bool(getattr(tensor, "is_ragged", False)) or any(d is None for d in tensor.shape)


def info_to_attributes(tensor: Any, *, where: str, skip: Iterable[str] = (),
                       fits: Callable[[Any], bool] = lambda value: True,
                       fits_what: str = "") -> dict:
    """The attributes an export writes for a tensor: its htype (under HTYPE_ATTRIBUTE, which
    the imports read back) and its info as JSON values, without the keys in `skip` (what the
    export stores another way: a path, dimension names). A value the format cannot hold
    (`fits` says no; `fits_what` says what it holds) is left out, and one warning names
    them all: metadata is not dropped without a word."""
    attributes: dict = {}
    htype = getattr(tensor, "htype", None)
    if htype:
        attributes[HTYPE_ATTRIBUTE] = str(htype)
    info = getattr(tensor, "info", None)
    left_out = []
    for key, value in (info.items() if info is not None and hasattr(info, "items") else ()):
        if key in skip:
            continue
        safe = json_safe(value)
        if (safe is None and value is not None) or not fits(safe):
            left_out.append(str(key))
        else:
            attributes[str(key)] = safe
    if left_out:
        warnings.warn(f"{where}: tensor {name_of(tensor)!r}: info {left_out} left out of the "
                      f"export ({fits_what or 'no attribute form'})", UserWarning,
                      stacklevel=_first_frame_outside_slicewise())
    return attributes


def _first_frame_outside_slicewise() -> int:
    """The stacklevel at which a warning points at the user's own call, not at slicewise."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
            "slicewise."):
        frame, level = frame.f_back, level + 1
    return level


def set_tensor_info(tensor: Any, info: dict) -> None:
    """Put an import's attributes into the tensor's info; values with no JSON form
    (json_safe gave None) are left out rather than stored as null."""
    info = {key: value for key, value in info.items() if value is not None}
    target = getattr(tensor, "info", None)
    if info and target is not None and hasattr(target, "update"):
        target.update(info)


def info_value(tensor: Any, key: str) -> Any:
    """One value of the tensor's info (e.g. what an import remembered there), or None."""
    info = getattr(tensor, "info", None)
    return info.get(key) if info is not None and hasattr(info, "get") else None


def array_form_problem(tensor: Any, target: str,
                       *, text_allowed: bool = False) -> tuple[type[Exception], str] | None:
    """Why `tensor` cannot become `target` (e.g. "a dask.array", "a Zarr array"), which needs
    numeric samples of one shape: the exception type and the reason, naming the tensor;
    None when it can. `text_allowed`: text tensors pass (an export writes them as strings).
    """
    name = name_of(tensor)
    if text_allowed and is_text(tensor):
        return None
    dtype = getattr(tensor, "dtype", None)
    if dtype is None or np.dtype(dtype).kind in "OUSV":
        htype = getattr(tensor, "htype", None)
        held = "numeric arrays or text" if text_allowed else "numeric arrays"
        return TypeError, (f"tensor {name!r} (htype {htype!r}, dtype {dtype!r}) does not hold "
                           f"{held}, so it cannot become {target}")
    if is_ragged(tensor):
        return ValueError, (f"tensor {name!r} is ragged (its samples have different shapes: "
                            f"{tensor.shape}), and {target} needs one shape")
    return None


# A ragged tensor's way out, whatever it was meant to become
_RESIZE = "resize the samples to one shape in a transform (@sw.compute) first"


def require_one_shape(tensor: Any, target: str = "a dask.array",
                      remedy: str = "use ds[{name!r}].dask_bag() for a dask.bag of its samples",
                      *, text_allowed: bool = False) -> None:
    """Raise a clear error unless the tensor holds numeric samples of one shape (or text,
    with `text_allowed`). The error ends with `remedy`, formatted with the tensor's `name`
    (a ragged tensor's error first suggests resizing)."""
    problem = array_form_problem(tensor, target, text_allowed=text_allowed)
    if problem is None:
        return
    kind, reason = problem
    remedies = [_RESIZE] if kind is ValueError else []
    if remedy:
        remedies.append(remedy.format(name=name_of(tensor)))
    raise kind(f"{reason}; {', or '.join(remedies)}" if remedies else reason)


def exportable_tensors(ds: Any, tensors: str | Iterable[str] | None, *, where: str, target: str,
                       text_allowed: bool) -> list[str]:
    """The tensors an export writes: `tensors` (names, or one name), or every tensor of `ds`
    when None, all checked before anything is written. A tensor with no `target` form is
    never skipped silently: one error lists each such tensor and why, and names the
    tensors=[...] that exports the others. (An export that skipped them would lose data
    without a word.)"""
    if isinstance(tensors, str):
        tensors = [tensors]
    names = list(tensors) if tensors is not None else tensor_names(ds)
    problems = {}
    for name in names:
        problem = array_form_problem(ds[name], target, text_allowed=text_allowed)
        if problem is not None:
            problems[name] = problem
    if not problems:
        return names
    kinds = {kind for kind, _ in problems.values()}
    reasons = "; ".join(reason for _, reason in problems.values())
    rest = [name for name in names if name not in problems]
    remedies = []
    if ValueError in kinds:
        remedies.append("resize a ragged tensor's samples to one shape in a transform "
                        "(@sw.compute) first")
    if rest:
        remedies.append(f"export the others with tensors={rest!r}")
    message = f"{where}: {reasons}" + (f"; {', or '.join(remedies)}" if remedies else "")
    raise (TypeError if kinds == {TypeError} else ValueError)(message)


def tensor_names(ds: Any) -> list[str]:
    tensors = ds.tensors
    return list(tensors.keys() if hasattr(tensors, "keys") else tensors)


def is_text(tensor: Any) -> bool:
    return getattr(tensor, "htype", None) == "text"


def dataset_of(tensor: Any) -> Any:
    for attribute in ("dataset", "ds", "_ds", "_dataset"):
        ds = getattr(tensor, attribute, None)
        if ds is not None:
            return ds
    raise TypeError(f"{type(tensor).__name__} does not say which dataset it belongs to")


def name_of(tensor: Any) -> str:
    for attribute in ("key", "name", "_key", "_name"):
        value = getattr(tensor, attribute, None)
        if isinstance(value, str):
            return value
    raise TypeError(f"{type(tensor).__name__} does not say its name")


def dataset_token(ds: Any) -> Any:
    return (str(getattr(ds, "path", getattr(ds, "url", id(ds)))),
            str(getattr(ds, "commit_id", getattr(ds, "version", ""))))


def tensor_name_for(source_path: str, where: str) -> str:
    """The tensor name for an HDF5/Zarr path: the same path, its groups slicewise groups
    ("/Control/Experiment 1" -> tensor "Control/Experiment 1" in group "Control"). A path
    no tensor may have (a component starting with "." or "_", holding "..", ...) is an
    error that says how to name it."""
    from slicewise.format.errors import DatasetError
    from slicewise.format.manifest import validate_name

    name = source_path.strip("/")
    try:
        return validate_name(name)
    except DatasetError as exc:
        raise ValueError(
            f"{where}: {source_path!r} gives no valid tensor name ({exc}); name it yourself "
            f"with a dict, e.g. {{{source_path!r}: 'my_name'}}"
        ) from None


def chosen_groups(selection: Any, groups: Sequence[str]) -> list[str]:
    """The source's groups (HDF5/Zarr group paths, no leading "/") that an import's
    `datasets=` / `arrays=` selection takes in: every group for None, else the groups named
    and every group below them (a dict's entries name arrays, unless their tensor name is
    None). An import makes the empty ones among them slicewise groups (make_empty_groups),
    so they come back on export; the others exist through their tensors' names."""
    if selection is None:
        return [group.strip("/") for group in groups if group.strip("/")]
    if isinstance(selection, str):
        keys = [selection]
    elif isinstance(selection, dict):
        keys = [key for key, name in selection.items() if name is None]
    else:
        keys = list(selection)
    keys = [key.strip("/") for key in keys if isinstance(key, str)]
    out = []
    for group in (group.strip("/") for group in groups):
        if group and any(not key or group == key or group.startswith(key + "/")
                         for key in keys):
            out.append(group)
    return out


def make_empty_groups(ds: Any, groups: Iterable[str], tensor_names: Iterable[str],
                      where: str) -> None:
    """Create the groups that hold none of `tensor_names` (an empty group in the source);
    a group whose path is no valid group name is left out with a warning (it holds nothing
    to lose)."""
    from slicewise.format.errors import DatasetError
    from slicewise.format.manifest import ancestors

    groups = list(groups)
    # a group that holds a tensor, or another group made here, exists through that name
    held = {outer for name in [*tensor_names, *groups] for outer in ancestors(name)}
    skipped = []
    for group in groups:
        if group in held or group in ds:
            continue
        try:
            ds.create_group(group, exist_ok=True)
        except DatasetError as exc:
            skipped.append(f"{group!r} ({exc})")
    if skipped:
        warnings.warn(f"{where}: empty group(s) left out: {'; '.join(skipped)}", UserWarning,
                      stacklevel=_first_frame_outside_slicewise())


def export_groups(ds: Any, tensors: Any) -> list[str]:
    """The groups an export recreates in the file or store: all of the dataset's groups
    (empty ones too) when it exports every tensor; none (beyond those its arrays' paths
    make) when it exports chosen tensors."""
    if tensors is not None:
        return []
    return list(getattr(ds, "groups", None) or {})


def chosen_sources(selection: Any, members: Sequence[str], *, where: str,
                   kind: str) -> dict[str, str]:
    """What an import's `datasets=` / `arrays=` argument picks among `members` (the path of
    every array in the source, "group/array", no leading "/"), as {path: tensor name}.

    None picks every member; a string picks one array, or a group: every member under it;
    a dict {path: tensor name} picks arrays and names their tensors; any other iterable
    lists paths. Paths may start with "/". Other tensors are named by their paths, groups
    and all (tensor_name_for). `kind` names the source's arrays in errors ("HDF5 dataset")."""
    if selection is None:
        wanted: dict[str, str | None] = {member: None for member in members}
    elif isinstance(selection, str):
        wanted = {selection: None}
    elif isinstance(selection, dict):
        wanted = dict(selection)
    else:
        wanted = {name: None for name in selection}

    chosen: dict[str, str] = {}
    for name, tensor_name in wanted.items():
        key = name.strip("/")
        if key in members:
            chosen[key] = tensor_name or tensor_name_for(key, where)
            continue
        under = [member for member in members if not key or member.startswith(key + "/")]
        if not under:
            raise KeyError(f"{where}: no {kind} {name!r}, nor a group holding any")
        if tensor_name is not None:
            raise ValueError(f"{where}: {name!r} is a group; only a single {kind} can be "
                             "given a tensor name")
        for member in under:
            chosen.setdefault(member, tensor_name_for(member, where))
    if not chosen:
        raise ValueError(f"{where}: nothing to import (no {kind}s found)")
    return chosen


# Exports record a tensor's htype under this attribute; imports restore it when attributes
# alone rebuild it: plain numeric arrays, and class labels (with their class names).
HTYPE_ATTRIBUTE = "slicewise_htype"
_ARRAY_HTYPES = ("generic", "image", "image.rgb", "image.gray", "embedding")


def tensor_from_attributes(attrs: Any, skip: Iterable[str] = ()) -> tuple[dict, dict]:
    """What an import makes of an array's attributes: the create_tensor options (the htype
    an export recorded, and a class_label tensor's class names) and the tensor's info (the
    other attributes as JSON values, without the keys in `skip`: what the import keeps
    another way)."""
    skipped = {HTYPE_ATTRIBUTE, *skip}
    info = {str(key): json_safe(value) for key, value in attrs.items() if key not in skipped}
    htype = json_safe(attrs.get(HTYPE_ATTRIBUTE))
    class_names = info.get("class_names")
    if (htype == "class_label" and isinstance(class_names, list)
            and all(isinstance(name, str) for name in class_names)):
        del info["class_names"]  # they belong to the tensor's creation, not its info
        return {"htype": "class_label", "class_names": class_names}, info
    return {"htype": htype if htype in _ARRAY_HTYPES else "generic"}, info
