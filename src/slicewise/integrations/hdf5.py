"""HDF5 in and out: `sw.from_hdf5(file, path)` and `ds.to_hdf5(file)`.

Import (lazy and parallel: the parent reads only the file's structure):

    experiments.h5                         parent
    ├─ /Control/Experiment 1   ──walk──►   one tensor per HDF5 dataset, named by its path
    ├─ /Control/notes (strings)            ("Control/Experiment 1": HDF5 groups become slicewise
    │                                      groups, empty ones too);
    │                                      numbers -> a numeric tensor, strings -> a text tensor,
    └─ /Treatment/...                      attributes -> the tensor's info; anything else is
                                           refused up front, by path and dtype. Rows split
                                           into blocks of ~32 MiB aligned with the HDF5 chunks
                                              │ jobs (file path, dataset name, start, stop)
                                              ▼
                                           workers: each opens the file itself (h5py handles
                                           do not cross processes), reads its rows (strings
                                           decoded as UTF-8), writes them with its own
                                           DatasetWriter ─► receipt
                                              ▼
                                           parent: receipts in order ─► one commit

Export writes each tensor at its path ("Control/Experiment 1" -> /Control/Experiment 1) and
recreates the dataset's groups, empty ones too: HDF5 -> slicewise -> HDF5 gives back the
same paths, shapes, dtypes and values. It streams one stored chunk at a time (the next one is read while the current one is
written), so memory stays near two chunks whatever the dataset's size: numeric tensors into
N-D datasets, text tensors into variable-length UTF-8 string datasets, a block of rows per
read. HDF5 has one writer per file, so export writes from one process.

What an import remembers in a tensor's info, so that export writes the dataset back as it
was: "hdf5_path" (where it lived) and, for datasets whose rows gained an axis (a 1-D dataset's
rows are stored as samples of shape (1,), a 0-D one is one such row), "hdf5_ndim".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    chosen_groups,
    chosen_sources,
    commit_receipts,
    export_groups,
    exportable_tensors,
    fspath,
    import_blocks,
    info_to_attributes,
    info_value,
    is_text,
    make_empty_groups,
    new_dataset,
    require,
    row_blocks,
    row_nbytes,
    set_tensor_info,
    tensor_from_attributes,
)

__all__ = ["HDF5Rows", "dataset_to_hdf5", "from_hdf5"]

# Tensor info keys an import writes (and export reads back instead of writing as attributes):
# the HDF5 path (a tensor renamed on import, {"/Control/Experiment 2": "ctrl2"}, goes back to
# /Control/Experiment 2), and the number of
# axes of a dataset whose rows gained one (0 or 1), so that export drops it again.
HDF5_PATH_INFO = "hdf5_path"
HDF5_NDIM_INFO = "hdf5_ndim"

# HDF5 reads a chunk whole; ~1 MiB chunks keep one-sample reads of the exported file cheap.
EXPORT_CHUNK_BYTES = 2**20

# Strings have no size until read (and a Python str holds ~50 bytes more than its text);
# blocks of text rows assume this many bytes a row.
TEXT_ROW_BYTES = 256

# Refused datasets listed by name in an error, at most; more are counted.
_NAMED_AT_MOST = 10


class HDF5Rows:
    """Rows of one HDF5 dataset, opened afresh in whichever process reads them. A 0-D
    dataset is one row. `text`: the rows are strings, decoded as UTF-8 (ASCII is UTF-8)."""

    def __init__(self, file: str, name: str, text: bool = False) -> None:
        self.file = file
        self.name = name
        self.text = text

    def read(self, start: int, stop: int) -> np.ndarray | list[str]:
        h5py = require("h5py", "reading HDF5")
        with h5py.File(self.file, "r") as handle:
            dset = handle[self.name]
            rows = np.reshape(dset[()], (1,)) if dset.ndim == 0 else dset[start:stop]
        return self._decoded(rows, start) if self.text else rows

    def _decoded(self, rows: Any, start: int) -> list[str]:
        # h5py gives bytes for every string type (vlen, fixed-length, ASCII or UTF-8);
        # decoding them here lets a bad row be named by its index
        decoded = []
        for offset, value in enumerate(rows):
            if isinstance(value, str):
                decoded.append(value)
                continue
            try:
                decoded.append(bytes(value).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{self!r}: row {start + offset} is not UTF-8 text ({exc}; bytes "
                    f"{bytes(value)[:40]!r}); re-encode the strings as UTF-8, or leave the "
                    "dataset out with datasets=[...]"
                ) from None
        return decoded

    def __repr__(self) -> str:
        return f"HDF5 {self.name!r} in {os.path.basename(self.file)}"


def from_hdf5(
    file: str | os.PathLike,
    path: Any,
    datasets: str | Iterable[str] | dict[str, str] | None = None,
    *,
    overwrite: bool = False,
    chunk_target_bytes: int | None = None,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    **tensor_options: Any,
) -> Any:
    """Import HDF5 datasets into a new slicewise dataset at `path`, in parallel.

    `datasets` picks what to import: None for every dataset in the file; names of datasets
    or groups (a group imports everything under it), e.g. ["Control", "Treatment/Experiment
    1"]; or a dict {HDF5 name: tensor name}. Each HDF5 dataset becomes a tensor named by its
    HDF5 path, HDF5 groups becoming slicewise groups ("/Control/Experiment 1" -> tensor
    "Control/Experiment 1" of group "Control": `ds.Control["Experiment 1"]`), its first axis
    the rows (the chosen groups that hold no dataset come along as empty groups):

    - numbers (ints, floats, bools) of any shape: a numeric tensor. A 1-D dataset's rows
      are scalars, stored as samples of shape (1,); a 0-D one is a single such row.
    - strings (variable- or fixed-length, UTF-8 or ASCII), 1-D: a text tensor, one string
      per row; a 0-D string is a text tensor of one row. Strings are decoded as UTF-8.
    - anything else (compound, enum, references, variable-length numbers, strings of 2 or
      more axes, complex, opaque, empty) is refused before anything is written, by one
      error naming each such dataset, its dtype and what to do, and the datasets=[...]
      that imports the others.

    Attributes go to the tensor's info, with the HDF5 path under "hdf5_path" (ds.to_hdf5
    puts the tensor back there, with the shape it had). Tensors and data appear in one
    commit.

    Args:
        file: the HDF5 file's path (each worker opens it).
        path: where the new dataset goes (a directory or URL).
        datasets: what to import (see above; None: everything).
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        pool: an `sw.Pool` to run on (default: the shared warm pool).
        num_workers: its workers (0: import in this process).
        block_bytes: about how many bytes each task reads and writes.
        progress: show a progress bar.
        **tensor_options: more `create_tensor` arguments (e.g. chunk_compression="lz4").

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        FileNotFoundError: no such file.
        TypeError: `file` is not a path.
        KeyError: a name in `datasets` that the file does not hold.
        ValueError: datasets of unsupported types (nothing is written), nothing to
            import, or a tensor name given for a group.
        ImportError: h5py is not installed.

    Example:
        >>> ds = sw.from_hdf5("experiments.h5", "./exp_ds", datasets=["Control"])  # doctest: +SKIP
        >>> ds.Control["Experiment 1"].numpy().shape          # doctest: +SKIP
    """
    h5py = require("h5py", "sw.from_hdf5")
    file_path = fspath(file)
    if file_path is None:
        raise TypeError(f"from_hdf5 needs a file path (workers open it), got {type(file)!r}")
    if not os.path.exists(file_path):
        raise FileNotFoundError(f"from_hdf5: no such HDF5 file: {file_path}")
    with h5py.File(file_path, "r") as handle:  # structure and attributes only
        plan, groups = _plan_import(h5py, handle, file_path, datasets)

    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        blocks = []
        for item in plan:
            ds.create_tensor(item["tensor"], dtype=item["dtype"],
                             **{**item["create"], **tensor_options})
            set_tensor_info(ds[item["tensor"]], item["attrs"])
            source = HDF5Rows(file_path, item["name"], text=item["text"])
            for start, stop in row_blocks(item["rows"], item["row_nbytes"],
                                          block_bytes=block_bytes, align=item["align"]):
                blocks.append((item["tensor"], source, start, stop))
        make_empty_groups(ds, groups, [item["tensor"] for item in plan],
                          where=f"from_hdf5 {file_path}")
        receipts = import_blocks(ds, blocks, pool=pool, num_workers=num_workers,
                                 progress=progress)
        meta = {
            "integration": "hdf5",
            "source": os.path.abspath(file_path),
            "tensors": {item["tensor"]: item["name"] for item in plan},
        }
        commit_receipts(ds, receipts, f"from_hdf5 {os.path.basename(file_path)}", meta)
    return ds


def _plan_import(h5py: Any, handle: Any, file_path: str,
                 datasets: Any) -> tuple[list[dict], list[str]]:
    """What to import: one item per HDF5 dataset, and the HDF5 groups chosen."""
    members, groups = _members_under(h5py, handle)
    chosen = chosen_sources(datasets, members, where=f"from_hdf5 {file_path}",
                            kind="HDF5 dataset")
    found = {f"/{key}": tensor_name for key, tensor_name in chosen.items()}  # HDF5 names

    plan = []
    refused = []
    for name, tensor_name in found.items():
        dset = handle[name]
        refusal = _refusal(h5py, dset)
        if refusal:
            refused.append(f"{name} ({refusal})")
            continue
        plan.append(_plan_item(h5py, dset, name, tensor_name))
    if refused:
        raise ValueError(_refused_message(file_path, refused, [item["name"] for item in plan]))
    return plan, chosen_groups(datasets, groups)


def _plan_item(h5py: Any, dset: Any, name: str, tensor_name: str) -> dict:
    text = h5py.check_string_dtype(dset.dtype) is not None
    create, info = tensor_from_attributes(dset.attrs)
    info[HDF5_PATH_INFO] = name
    if dset.ndim == 0 or (dset.ndim == 1 and not text):  # its rows gained an axis
        info[HDF5_NDIM_INFO] = dset.ndim
    if text:
        create = {"htype": "text"}
    return {
        "name": name,
        "tensor": tensor_name,
        "text": text,
        "dtype": None if text else dset.dtype,
        "rows": 1 if dset.ndim == 0 else dset.shape[0],
        "row_nbytes": TEXT_ROW_BYTES if text else row_nbytes(dset.shape[1:], dset.dtype),
        "align": dset.chunks[0] if dset.chunks else 1,
        "create": create,
        "attrs": info,
    }


def _refusal(h5py: Any, dset: Any) -> str | None:
    """Why an HDF5 dataset cannot become a tensor, and what to do about it; None when it
    can (numbers of any shape, strings of at most one axis)."""
    dtype = dset.dtype
    if dset.shape is None:
        return f"dtype {dtype}, an empty dataspace (h5py.Empty): it holds no values"
    shape = f"shape {dset.shape}"
    if h5py.check_string_dtype(dtype) is not None:
        if dset.ndim <= 1:
            return None
        return (f"{shape}, strings: a text tensor holds one string per row; reshape it to "
                "1-D, or join each row's strings")
    if dtype.names:
        fields = ", ".join(f"{field}: {dtype.fields[field][0]}" for field in dtype.names)
        return (f"{shape}, compound dtype {{{fields}}}: split its fields into datasets of "
                "their own, e.g. f['field'] = f[path]['field']")
    enum = h5py.check_enum_dtype(dtype)
    if enum is not None:
        return (f"{shape}, enum {enum} over {dtype}: copy its codes to a plain integer "
                f"dataset, e.g. f['codes'] = f[path][()].astype('{dtype}')")
    reference = h5py.check_ref_dtype(dtype)
    if reference is not None:
        kind = "region" if reference is h5py.RegionReference else "object"
        return (f"{shape}, {kind} references: store the data they point to (f[ref]) as "
                "datasets of their own")
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None:
        return (f"{shape}, variable-length sequences of {np.dtype(vlen)}: rows of different "
                "lengths; pad them to one length, or write one dataset per row")
    if dtype.kind not in "biuf":
        return (f"{shape}, dtype {dtype}: slicewise imports numbers (int, uint, float, bool) "
                "and strings")
    return None


def _refused_message(file_path: str, refused: Sequence[str], others: Sequence[str]) -> str:
    listed = "; ".join(refused[:_NAMED_AT_MOST])
    if len(refused) > _NAMED_AT_MOST:
        listed += f"; and {len(refused) - _NAMED_AT_MOST} more"
    if not others:
        remedy = "nothing else was chosen to import"
    elif len(others) <= _NAMED_AT_MOST:
        remedy = f"import the others with datasets={list(others)!r}"
    else:
        remedy = (f"import the others with datasets=[...] naming them ({len(others)}, e.g. "
                  f"{list(others[:3])!r})")
    return (f"from_hdf5 {file_path}: {len(refused)} HDF5 dataset(s) cannot become tensors: "
            f"{listed}. Nothing was imported; {remedy}")


def _members_under(h5py: Any, group: Any) -> tuple[list[str], list[str]]:
    """Paths (no leading "/") of every dataset and every group in the file."""
    datasets: list[str] = []
    groups: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            datasets.append(name)
        elif isinstance(obj, h5py.Group):
            groups.append(name)

    group.visititems(visit)
    return datasets, groups


def dataset_to_hdf5(
    ds: Any,
    file: str | os.PathLike,
    tensors: Iterable[str] | None = None,
    *,
    mode: str = "w",
    compression: str | None = None,
) -> str:
    """Write tensors (default: all) into an HDF5 file, one HDF5 dataset per tensor, at the
    HDF5 path it was imported from (info["hdf5_path"]) or else at its name, groups and all
    ("Control/Experiment 1" -> /Control/Experiment 1); exporting every tensor (tensors=None)
    recreates the dataset's empty groups too. Fixed-shape
    numeric tensors become N-D datasets (`compression` applies to them), text tensors 1-D
    variable-length UTF-8 string datasets (HDF5 filters do not compress those). A tensor
    imported from a 0-D or 1-D dataset gets that shape back. Returns the file path; the
    file reads back with sw.from_hdf5, htypes and class names included.

    >>> ds.to_hdf5("experiments_copy.h5", compression="gzip")
    """
    h5py = require("h5py", "Dataset.to_hdf5")
    file_path = fspath(file)
    if file_path is None:
        raise TypeError(f"to_hdf5 needs a file path, got {type(file)!r}")
    names = exportable_tensors(ds, tensors, where="to_hdf5", target="an HDF5 dataset",
                               text_allowed=True)
    with h5py.File(file_path, mode) as handle, ThreadPoolExecutor(1) as reader:
        for name in names:
            tensor = ds[name]
            target = _hdf5_path(tensor, name)
            if is_text(tensor):
                _write_text(h5py, handle, target, tensor, reader)
            else:
                _write_array(handle, target, tensor, reader, compression)
            _write_attrs(handle[target], tensor)
        for group in export_groups(ds, tensors):
            handle.require_group(group)
    return file_path


def _hdf5_path(tensor: Any, name: str) -> str:
    remembered = info_value(tensor, HDF5_PATH_INFO)
    return remembered if isinstance(remembered, str) and remembered else name


def _source_ndim(tensor: Any, rows: int) -> int | None:
    """0 or 1 when the tensor came from a 0-D or 1-D dataset (its samples have shape (1,)),
    so export drops the axis the import added; a 0-D source that has since gained rows goes
    back 1-D. None: write the tensor's own shape."""
    ndim = info_value(tensor, HDF5_NDIM_INFO)
    if isinstance(ndim, bool) or ndim not in (0, 1):
        return None
    return 0 if ndim == 0 and rows == 1 else 1


def _write_array(handle: Any, name: str, tensor: Any, reader: ThreadPoolExecutor,
                 compression: str | None) -> None:
    shape = tuple(int(d) for d in tensor.shape)
    dtype = np.dtype(tensor.dtype)
    if shape[1:] == (1,):
        ndim = _source_ndim(tensor, shape[0])
        if ndim == 0:
            value = np.asarray(tensor[0:1].numpy(), dtype=dtype).reshape(())
            handle.create_dataset(name, data=value)
            return
        if ndim == 1:
            shape = shape[:1]
    bytes_per_row = row_nbytes(shape[1:], dtype)
    chunk_rows = max(1, min(shape[0], EXPORT_CHUNK_BYTES // bytes_per_row)) if shape[0] else 1
    dset = handle.create_dataset(
        name, shape=shape, dtype=dtype, compression=compression,
        chunks=(chunk_rows, *shape[1:]) if shape[0] and all(shape) else None,
    )

    def read(start: int, stop: int) -> np.ndarray:
        return np.asarray(tensor[start:stop].numpy()).reshape((stop - start, *shape[1:]))

    _stream_chunks(tensor, reader, read, dset.__setitem__)


def _write_text(h5py: Any, handle: Any, name: str, tensor: Any,
                reader: ThreadPoolExecutor) -> None:
    rows = len(tensor)
    strings = h5py.string_dtype()  # variable-length UTF-8: what h5py, pandas and others read
    if _source_ndim(tensor, rows) == 0:
        handle.create_dataset(name, data=_text_rows(tensor, 0, 1)[0], dtype=strings)
        return
    dset = handle.create_dataset(name, shape=(rows,), dtype=strings)

    def read(start: int, stop: int) -> np.ndarray:
        values = np.empty(stop - start, dtype=object)
        values[:] = _text_rows(tensor, start, stop)
        return values

    _stream_chunks(tensor, reader, read, dset.__setitem__)


def _text_rows(tensor: Any, start: int, stop: int) -> list[str]:
    """The strings of rows [start, stop), read as one range (each stored chunk once)."""
    return list(tensor[start:stop].data()["value"])


def _stream_chunks(tensor: Any, reader: ThreadPoolExecutor,
                   read: Callable[[int, int], np.ndarray],
                   write: Callable[[slice, np.ndarray], None]) -> None:
    """read() the tensor's rows one stored chunk at a time and write() each, the next chunk
    read on `reader` while the current one is written: memory near two chunks."""
    ranges = [(int(a), int(b)) for a, b in tensor.chunk_row_ranges() if b > a]
    if not ranges:
        return
    pending = reader.submit(read, *ranges[0])
    for index, (start, stop) in enumerate(ranges):
        rows = pending.result()
        if index + 1 < len(ranges):
            pending = reader.submit(read, *ranges[index + 1])
        write(slice(start, stop), rows)


def _write_attrs(dset: Any, tensor: Any) -> None:
    attributes = info_to_attributes(
        tensor, where="to_hdf5", skip=(HDF5_PATH_INFO, HDF5_NDIM_INFO),
        fits=_fits_hdf5_attribute,
        fits_what="HDF5 attributes hold numbers, strings and flat lists of either")
    for key, value in attributes.items():
        numbers = isinstance(value, list) and not isinstance(value[0], str)
        dset.attrs[key] = np.asarray(value) if numbers else value


def _fits_hdf5_attribute(value: Any) -> bool:
    """HDF5 attributes hold scalars and flat arrays of one type (no null, no nesting)."""
    if isinstance(value, (str, int, float, bool)):
        return True
    if not isinstance(value, list) or not value:
        return False
    return (all(isinstance(v, (int, float)) for v in value)
            or all(isinstance(v, str) for v in value))
