"""slicewise tensors as dask collections, dask arrays written into tensors, and a sw.Pool as
dask's scheduler.

Reading (lazy: building the array reads no sample data, only the chunk index):

    ds.frames.dask()  ──►  dask.array whose blocks are runs of whole stored chunks, up to
                           block_bytes (64 MiB) each: block edges are chunk edges
        │ a block's task (dask's threads, in this process)
        ▼
    _TensorBlocks[rows, ...]: one read() per chunk file, straight into the block's buffer
        (the GIL is released while the kernel copies); buffers are reused once dask has
        dropped their block (_BlockBuffers), so a block rarely costs fresh zeroed pages.
        A block that is exactly one big chunk is a private (copy-on-write) map of its
        file instead: no copy at all
    ds.frames.dask_bag() ─► dask.bag, one partition per stored chunk: ragged samples, text

Every stored byte a block holds was checked by the chunk reader on its way in (its
checksum block's CRC-32, FORMAT.md §4): a damaged chunk file fails the block's task with
a CorruptionError naming the file and its samples, never a block of wrong values.

Why several chunks per block: dask spends about a millisecond of Python per block on a
reduction, as much as numpy needs to sum 8 MiB, so one block per 8 MiB chunk made dask
itself the bottleneck; blocks of 64 MiB make that cost vanish (dask recommends blocks of
tens to hundreds of MB). A block of several chunk files cannot be a view of one file's
map, so it is read into memory of its own. Either way a block is an ordinary writable numpy
array, and writing to it never changes the dataset.

Writing (parallel, bounded memory, one atomic commit):

    dask array ──rechunk to whole-row blocks of ~32 MiB──► map_blocks(_write_block)
        │ dask fuses "make the block" and "write the block" into one task per block
        ▼
    dask's scheduler runs those tasks on an engine Pool (the Pool is a concurrent.futures
    Executor): a worker computes its block and writes it with its own DatasetWriter
        │ a receipt per block (JSON)
        ▼
    parent: ds.add_receipts(in block order) ──► ds.commit(...)  (all the blocks, or none)

At most one block per worker is in flight, so memory is bounded by workers x block size,
whatever the size of the array.

A Pool as dask's scheduler: `dask.compute(x, scheduler=pool)` works because the Pool is a
concurrent.futures.Executor (dask then runs its local scheduler with `pool.submit`), so a
dask graph gets the engine's crash isolation: a worker that dies raises sw.WorkerLostError
instead of hanging. `pool_scheduler(pool)` returns the same thing as a get function, for
`dask.config.set(scheduler=...)`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    commit_receipts,
    dataset_of,
    dataset_token,
    in_callers_block,
    name_of,
    new_dataset,
    own_handle,
    require,
    require_one_shape,
    row_nbytes,
    write_rows,
)

# dask keys of the tasks that write blocks (the progress bar counts these)
WRITE_TASK_PREFIX = "slicewise-write-"

__all__ = [
    "extend_from_dask",
    "from_dask",
    "pool_scheduler",
    "tensor_to_dask",
    "tensor_to_dask_bag",
]


# ---------------------------------------------------------------------------------------------
# Reading: a tensor as a dask array or bag


# Blocks of ds.t.dask() hold whole stored chunks up to this many bytes (and at least one
# chunk). Measured on a mean over 500 MiB of float32 in 8 MiB chunks, 2 threads, rounds
# interleaved with numpy on a loaded 2-core VM: blocks of one chunk 3.4-3.8x numpy's time,
# 32 MiB 2.9-3.5x, 64 MiB 2.3-2.9x. Memory in flight is about (threads + 1) blocks.
READ_BLOCK_BYTES = 64 * 2**20
# Reads of rows within one chunk from this size up map the chunk file copy-on-write instead
# of copying (smaller ones copy: a map costs system calls, and a kept row would keep it).
MAP_MIN_BYTES = 4 * 2**20


def tensor_to_dask(tensor: Any, *, block_bytes: int | None = None) -> Any:
    """The tensor as a dask.array. Builds only the graph: reads the chunk index, no samples.

    Each block is a run of whole stored chunks (block edges are chunk edges) of at most
    `block_bytes`, and at least one chunk. The default is READ_BLOCK_BYTES (64 MiB), or less
    for a small tensor, so that it still has two blocks per core for dask's threads;
    `block_bytes=0` gives one block per stored chunk. `x[i]` reads one row, whatever the
    block size. Blocks are writable numpy arrays; writing to one never changes the dataset.

    >>> frames = ds.frames.dask()
    >>> frames[:, :10].mean().compute()        # bounded memory, all cores
    """
    da = require("dask.array", "Tensor.dask()")
    require_one_shape(tensor)
    if block_bytes is None:
        block_bytes = _default_block_bytes(tensor)
    if not isinstance(block_bytes, int) or isinstance(block_bytes, bool) or block_bytes < 0:
        raise ValueError(f"tensor {name_of(tensor)!r}: block_bytes must be an int >= 0 "
                         f"(0: one block per stored chunk), got {block_bytes!r}")
    source = _TensorBlocks(tensor)
    row_chunks = _row_chunks(tensor, source.shape[0], block_bytes)
    chunks = (row_chunks, *((int(d),) for d in source.shape[1:]))
    name = f"slicewise-{_safe(source.tensor_name)}-{_token(source, row_chunks)}"
    return da.from_array(
        source,
        chunks=chunks,
        name=name,
        lock=False,
        asarray=False,
        # fancy=True lets dask fuse a later x[i] into the read itself, so one row costs one
        # row, not its block (dask leaves getter_nofancy reads unfused)
        fancy=True,
        meta=np.empty((0,) * source.ndim, source.dtype),
    )


def _default_block_bytes(tensor: Any) -> int:
    from slicewise.engine import cpu_count

    total = len(tensor) * row_nbytes(tuple(tensor.shape[1:]), tensor.dtype)
    return min(READ_BLOCK_BYTES, total // (2 * cpu_count()))


class _TensorBlocks:
    """What the tasks of `ds.t.dask()` index into: the rows of one tensor, in the version the
    array was built from.

    It carries a read-only handle of that version (a Dataset pickles as URL + version, so it
    travels to worker processes light) and the tensor's name. dask's threads share the
    handle: its reader keeps the parsed chunk headers (small); whole-sample reads go from
    the chunk files into the block's buffer, or for one big chunk into a private map that
    lives as long as the block, so nothing else builds up however much is read. A read of
    part of each sample (`x[:, :10]`) maps the chunks instead, to touch only the bytes it
    needs, through a handle of its own that is let go afterwards with its maps.
    """

    def __init__(self, tensor: Any) -> None:
        self.dataset = own_handle(dataset_of(tensor))
        self.tensor_name = name_of(tensor)
        self.shape = tuple(int(d) for d in tensor.shape)
        self.dtype = np.dtype(tensor.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first = key[0] if key else slice(None)
        rest = key[1:]
        n_rows = self.shape[0]
        if isinstance(first, (int, np.integer)):
            index = int(first) + (n_rows if first < 0 else 0)
            return self._rows(index, index + 1, rest)[0]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(n_rows)
            return self._rows(start, max(start, stop), rest)
        # steps and lists of rows: read the covering range once, or each row when scattered
        positions = np.arange(n_rows)[first]
        if positions.size == 0:
            return self._rows(0, 0, rest)
        low, high = int(positions.min()), int(positions.max()) + 1
        if high - low <= 4 * positions.size:
            return self._rows(low, high, rest)[positions - low]
        return np.stack([self._rows(int(p), int(p) + 1, rest)[0] for p in positions])

    def _rows(self, start: int, stop: int, rest: tuple) -> np.ndarray:
        """Rows [start, stop), then `rest` applied to each (the other axes' selection)."""
        sample_shape = self.shape[1:]
        if _selects_everything(rest, sample_shape):
            tensor = self.dataset[self.tensor_name]
            nbytes = (stop - start) * row_nbytes(sample_shape, self.dtype)
            if nbytes >= MAP_MIN_BYTES:
                view = tensor._private_rows(start, stop)  # rows of one chunk: no copy
                if view is not None:
                    return view
            out = _BUFFERS.take((stop - start, *sample_shape), self.dtype)
            tensor._read_range_into(start, stop, out)
            return out
        selection = (slice(None), *rest)
        tensor = own_handle(self.dataset)[self.tensor_name]
        # views of the stored chunks (or decoded copies), each cut down, then one copy
        pieces = [np.asarray(block)[selection]
                  for block in tensor._read_range(start, stop, stack=True)]
        if not pieces:
            return np.empty((0, *sample_shape), self.dtype)[selection]
        return np.concatenate(pieces).astype(self.dtype, copy=False)

    def __dask_tokenize__(self) -> Any:
        return ("slicewise._TensorBlocks", dataset_token(self.dataset), self.tensor_name,
                self.shape, str(self.dtype))

    def __repr__(self) -> str:
        return f"_TensorBlocks({self.tensor_name!r}, shape={self.shape}, dtype={self.dtype})"


def _selects_everything(rest: tuple, sample_shape: tuple) -> bool:
    """True when the selection on the sample axes keeps every element, in order."""
    if len(rest) > len(sample_shape):
        return False
    for index, size in zip(rest, sample_shape, strict=False):
        if not isinstance(index, slice) or index.indices(size) != (0, size, 1):
            return False
    return True


class _BlockBuffers:
    """The memory blocks are read into, reused once nothing refers to a block any more.

    A fresh numpy array of 32 MiB or more is fresh zeroed pages from the kernel each time
    (glibc maps big allocations anew): filling one cost about twice as much as refilling a
    buffer already in memory, and on a VM whose host must first back the pages, up to ten
    times as much. A block handed out is a view of a lease on a buffer; when the
    last array that refers to it is gone, the buffer comes back here, and the next block of
    its size reuses it. Holding on to a block simply keeps its buffer out of the pool.

    Shared state, one per process: `_free` {byte size: [buffers]}, sizes in order of last
    use, at most MAX_IDLE_BYTES in all (the least recently returned size goes first),
    emptied IDLE_SECONDS after the last buffer came back, so an idle process gives the
    memory back. Guarded by `_lock`, reentrant because a buffer may come back (its
    last array collected) inside any allocation, even one made while holding the lock.
    """

    MIN_BYTES = 4 * 2**20  # smaller arrays come from malloc's own free lists
    MAX_IDLE_BYTES = 256 * 2**20
    IDLE_SECONDS = 10.0

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            # a child starts with no pool, and no lock held by a thread it does not have
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.RLock()
        self._free: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._free_bytes = 0
        self._last_return = 0.0
        self._timer: threading.Timer | None = None

    def take(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A writable C-contiguous array of `shape` and `dtype`, contents undefined."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < self.MIN_BYTES:
            return np.empty(shape, dtype)
        buffer = None
        with self._lock:
            spare = self._free.get(nbytes)
            if spare:
                buffer = spare.pop()
                self._free_bytes -= nbytes
        if buffer is None:
            buffer = np.empty(nbytes, np.uint8)
        lease = _Lease(buffer)
        # not at exit: the pool would start its idle timer while the interpreter shuts down
        weakref.finalize(lease, self._give_back, buffer).atexit = False
        return np.asarray(lease).view(dtype).reshape(shape)

    def _give_back(self, buffer: np.ndarray) -> None:
        if buffer.nbytes > self.MAX_IDLE_BYTES:
            return  # dropped: numpy frees it
        with self._lock:
            self._free.setdefault(buffer.nbytes, []).append(buffer)
            self._free.move_to_end(buffer.nbytes)
            self._free_bytes += buffer.nbytes
            while self._free_bytes > self.MAX_IDLE_BYTES:
                size, spare = next(iter(self._free.items()))
                spare.pop()
                self._free_bytes -= size
                if not spare:
                    del self._free[size]
            self._last_return = time.monotonic()
            if self._timer is None:
                self._start_timer(self.IDLE_SECONDS)

    def _start_timer(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._release_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _release_if_idle(self) -> None:
        with self._lock:
            idle = time.monotonic() - self._last_return
            if idle < self.IDLE_SECONDS:
                self._start_timer(self.IDLE_SECONDS - idle)
                return
            self._free.clear()
            self._free_bytes = 0
            self._timer = None

    def idle_bytes(self) -> int:
        """Bytes held for reuse right now."""
        with self._lock:
            return self._free_bytes


class _Lease:
    """Owner, for numpy, of an array made from a pooled buffer: numpy keeps it as the array's
    base, so it lives exactly as long as some array uses the buffer."""

    __slots__ = ("__array_interface__", "__weakref__")

    def __init__(self, buffer: np.ndarray) -> None:
        self.__array_interface__ = buffer.__array_interface__


_BUFFERS = _BlockBuffers()


def tensor_to_dask_bag(tensor: Any) -> Any:
    """The tensor as a dask.bag of samples, one partition per stored chunk: works for ragged
    tensors (samples of different shapes) and for non-array htypes."""
    db = require("dask.bag", "Tensor.dask_bag()")
    ranges = [tuple(r) for r in tensor.chunk_row_ranges()]
    if not ranges:
        return db.from_sequence([], npartitions=1)
    source = _SampleReader(tensor)
    return db.from_sequence(ranges, npartitions=len(ranges)).map_partitions(
        _read_partition, source
    )


class _SampleReader:
    """Reads samples one by one (ragged and non-array tensors), picklable like TensorRows."""

    def __init__(self, tensor: Any) -> None:
        self.dataset = dataset_of(tensor)
        self.tensor_name = name_of(tensor)

    def read(self, start: int, stop: int) -> list:
        rows = own_handle(self.dataset)[self.tensor_name][start:stop]
        return [_plain(value) for value in rows.numpy(aslist=True)]

    def __dask_tokenize__(self) -> Any:
        return ("slicewise._SampleReader", dataset_token(self.dataset), self.tensor_name)


def _read_partition(ranges: list, source: _SampleReader) -> list:
    samples: list = []
    for start, stop in ranges:
        samples.extend(source.read(start, stop))
    return samples


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype.kind in "OUS" and value.ndim <= 1:
        # text and json samples come back as 1-element arrays: hand out the str / object
        return value.item() if value.size == 1 else value.tolist()
    return value


def _row_chunks(tensor: Any, n_rows: int, block_bytes: int) -> tuple[int, ...]:
    """Rows per block: runs of consecutive stored chunks of at most `block_bytes` (at least
    one chunk each), the chunks checked to tile [0, n_rows) exactly."""
    ranges = [(int(a), int(b)) for a, b in tensor.chunk_row_ranges()]
    expected = 0
    for start, stop in ranges:
        if start != expected or stop < start:
            raise ValueError(
                f"tensor {name_of(tensor)!r}: stored chunks do not tile its rows "
                f"(chunk at rows [{start}, {stop}) after row {expected})"
            )
        expected = stop
    if expected != n_rows:
        raise ValueError(
            f"tensor {name_of(tensor)!r}: stored chunks cover {expected} rows but it has "
            f"{n_rows}"
        )
    row_bytes = row_nbytes(tuple(tensor.shape[1:]), tensor.dtype)
    blocks: list[int] = []
    rows_in_block = 0
    for start, stop in ranges:
        rows = stop - start
        if rows == 0:
            continue
        if rows_in_block and (rows_in_block + rows) * row_bytes > block_bytes:
            blocks.append(rows_in_block)
            rows_in_block = 0
        rows_in_block += rows
    if rows_in_block:
        blocks.append(rows_in_block)
    return tuple(blocks) or (0,)


# ---------------------------------------------------------------------------------------------
# Writing: dask arrays into tensors


def extend_from_dask(
    tensor: Any,
    array: Any,
    *,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    message: str | None = None,
    progress: bool = False,
) -> str | None:
    """Append the rows of a dask array (or numpy array) to a tensor, computing and writing
    its blocks in parallel on the engine, as one commit. Returns the new version id (None
    inside your own `with ds:` block, which then commits the rows with everything else).

    `pool`: an sw.Pool to run on; default the engine's warm shared pool (sw.map's) with
    `num_workers` processes (default all cores); `num_workers=0` computes and writes in
    this process.
    """
    da = require("dask.array", "Tensor.extend(dask_array)")
    ds = dataset_of(tensor)
    name = name_of(tensor)
    array = _match_tensor(tensor, _as_dask_array(da, array, f"tensor {name!r}"))
    receipts = write_arrays(ds, {name: array}, pool=pool, num_workers=num_workers,
                            block_bytes=block_bytes, progress=progress)
    if in_callers_block(ds):
        ds.add_receipts(receipts)
        return None
    meta = {"integration": "dask", "tensor": name, "rows": int(array.shape[0]),
            "blocks": len(receipts)}
    return commit_receipts(ds, receipts, message or f"extend {name!r} from a dask array", meta)


def from_dask(
    array: Any,
    path: Any,
    tensor: str = "data",
    *,
    htype: str = "generic",
    overwrite: bool = False,
    chunk_target_bytes: int | None = None,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    **tensor_options: Any,
) -> Any:
    """A new dataset at `path` whose tensor `tensor` holds the rows of a dask array (or
    several: a dict {tensor name: dask array}), computed and written in parallel by engine
    workers; the tensors and their data appear in one commit.

    Args:
        array: a dask array (a numpy array is wrapped), or a dict {tensor name: array}.
        path: where the new dataset goes (a directory or URL).
        tensor: the tensor's name (for a single array).
        htype: the tensors' htype.
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        pool: an `sw.Pool` to run on (default: the shared warm pool).
        num_workers: its workers (0: compute in this process).
        block_bytes: about how many bytes each task computes and writes.
        progress: show a progress bar.
        **tensor_options: more `create_tensor` arguments (e.g. chunk_compression="lz4").

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        TypeError: an array that is neither a dask nor a numpy array.
        ImportError: dask is not installed.
        DatasetError: a dataset already at `path` (without overwrite).

    Example:
        >>> x = da.random.randint(0, 255, size=(1000, 64, 64), chunks=(16, 64, 64))  # doctest: +SKIP
        >>> ds = sw.from_dask(x, "./video_ds", "frames")      # doctest: +SKIP
        >>> ds.frames.dask()[:, :10].mean().compute()         # doctest: +SKIP
    """
    da = require("dask.array", "sw.from_dask")
    arrays = array if isinstance(array, dict) else {tensor: array}
    arrays = {key: _as_dask_array(da, value, f"tensor {key!r}") for key, value in arrays.items()}
    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        for key, value in arrays.items():
            ds.create_tensor(key, htype=htype, dtype=value.dtype, **tensor_options)
        receipts = write_arrays(ds, arrays, pool=pool, num_workers=num_workers,
                                block_bytes=block_bytes, progress=progress)
        meta = {"integration": "dask",
                "tensors": {key: [int(d) for d in value.shape] for key, value in arrays.items()}}
        commit_receipts(ds, receipts, f"from_dask: {', '.join(arrays)}", meta)
    return ds


def write_arrays(
    ds: Any,
    arrays: dict[str, Any],
    *,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
) -> list:
    """Compute the blocks of dask arrays ({tensor name: array}) on the engine and write each
    block, in the worker that computed it, with its own DatasetWriter. One dask graph for
    all arrays, so parts they share are computed once. Returns the receipts (tensor by
    tensor, each in row order); commits nothing."""
    dask = require("dask", "writing a dask array")
    spec = ds.writer_spec()
    writes = []
    for tensor_name, array in arrays.items():
        array = _whole_row_blocks(array, block_bytes)
        if array.shape[0] == 0:
            continue
        writes.append(array.map_blocks(
            _write_block,
            spec,
            tensor_name,
            dtype=object,
            drop_axis=list(range(1, array.ndim)),
            chunks=((1,) * array.numblocks[0],),
            meta=np.empty((0,), dtype=object),
            name=f"{WRITE_TASK_PREFIX}{_safe(tensor_name)}-{uuid.uuid4().hex[:12]}",
        ))
    if not writes:
        return []
    n_blocks = sum(write.numblocks[0] for write in writes)
    # a dask Callback reports while its `with` block is open
    progress_bar = _progress_callback(n_blocks) if progress else contextlib.nullcontext()
    with progress_bar:
        if pool is None and num_workers == 0:
            # the function, not the name "sync": naming it makes dask import distributed
            local = require("dask.local", "writing a dask array")
            results = dask.compute(*writes, scheduler=local.get_sync)
        else:
            from slicewise.engine import get_default_pool

            # the caller's pool, or the engine's warm shared one (sw.map's): no start-up
            run_on = pool if pool is not None else get_default_pool(num_workers)
            results = dask.compute(*writes, scheduler=pool_scheduler(run_on))
    return [receipt for result in results for receipt in result]


def _write_block(block: np.ndarray, spec: Any, tensor_name: str,
                 block_info: dict | None = None) -> np.ndarray:
    block_index = block_info[0]["chunk-location"][0] if block_info else 0
    out = np.empty((1,), dtype=object)
    out[0] = write_rows(spec, f"dask:{tensor_name}:{block_index}", tensor_name,
                        np.asarray(block))
    return out


def _whole_row_blocks(array: Any, block_bytes: int) -> Any:
    """Rechunk so that each block is whole rows (every other axis in one piece) of about
    `block_bytes`: a worker writes one block as one writer's chunks."""
    if array.ndim == 0:
        raise ValueError("a 0-d dask array has no rows; reshape it to (1,) to store one value")
    if any(math.isnan(c) for c in array.chunks[0]):
        raise ValueError(
            "the dask array has unknown chunk sizes along its first axis; call "
            "array.compute_chunk_sizes() before writing it"
        )
    rows_target = max(1, block_bytes // row_nbytes(array.shape[1:], array.dtype))
    other_axes_whole = all(len(c) == 1 for c in array.chunks[1:])
    sizes = array.chunks[0]
    well_sized = all(rows_target // 4 <= size <= rows_target * 4 for size in sizes[:-1]) and (
        not sizes or sizes[-1] <= rows_target * 4
    )
    if other_axes_whole and well_sized:
        return array
    return array.rechunk({0: rows_target, **{axis: -1 for axis in range(1, array.ndim)}})


def _as_dask_array(da: Any, array: Any, where: str) -> Any:
    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=(max(1, DEFAULT_BLOCK_BYTES // max(1, array[0:1].nbytes)),
                                            *array.shape[1:]) if array.ndim else ())
    raise TypeError(f"{where}: expected a dask.array or numpy array, got {type(array).__name__}")


def _match_tensor(tensor: Any, array: Any) -> Any:
    """Check the array's sample shape and dtype against what the tensor already holds."""
    name = name_of(tensor)
    dtype = getattr(tensor, "dtype", None)
    if dtype is not None and np.dtype(dtype) != array.dtype:
        dtype = np.dtype(dtype)
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise TypeError(
                f"tensor {name!r} holds {dtype} and the dask array is {array.dtype}; "
                f"cast it first with array.astype({str(dtype)!r})"
            )
        array = array.astype(dtype)
    n_rows = len(tensor)
    if n_rows and not getattr(tensor, "is_ragged", False):
        sample_shape = tuple(tensor.shape[1:])
        # a scalar row is stored as a sample of shape (1,), as Deep Lake does
        row_shape = tuple(array.shape[1:]) or (1,)
        if sample_shape != row_shape:
            raise ValueError(
                f"tensor {name!r} holds samples of shape {sample_shape}, the dask array's "
                f"rows are {tuple(array.shape[1:])}"
            )
    return array


# ---------------------------------------------------------------------------------------------
# A Pool as dask's scheduler


def pool_scheduler(pool: Any, *, chunksize: int = 1) -> Any:
    """A dask get function that runs tasks on an sw.Pool: pass it as `scheduler=`.

    `dask.compute(x, scheduler=pool)` does the same (the Pool is an Executor); this form also
    fits `dask.config.set(scheduler=pool_scheduler(pool))`.
    """
    local = require("dask.local", "pool_scheduler")
    return functools.partial(local.get_async, pool.submit, _worker_count(pool),
                             chunksize=chunksize)


def _worker_count(pool: Any) -> int:
    for attribute in ("_max_workers", "workers", "num_workers", "_processes"):
        value = getattr(pool, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    from slicewise.engine import cpu_count

    return cpu_count()


def _progress_callback(total: int) -> Any:
    from dask.callbacks import Callback
    from tqdm.auto import tqdm

    class _BlocksProgress(Callback):
        def _start(self, dsk: Any) -> None:
            self._bar = tqdm(total=total, desc="writing blocks", unit="block")

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(key, tuple) and str(key[0]).startswith(WRITE_TASK_PREFIX):
                self._bar.update(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            self._bar.close()

    return _BlocksProgress()


def _token(source: _TensorBlocks, row_chunks: tuple[int, ...]) -> str:
    from dask.base import tokenize

    return tokenize(source, row_chunks)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
