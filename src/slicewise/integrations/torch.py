"""PyTorch input: `ds.pytorch()` (Deep Lake 3's), a map-style Dataset, a streaming
IterableDataset, and a DataLoader that can save and resume its place in an epoch.

    TorchDataset(ds)            map-style: ds_t[i] -> {tensor: value}; random access, one
                                ranged read (or mmap slice) per tensor and row
    TorchIterableDataset(ds)    streaming, one pass per epoch:
      plan (every consumer computes the same one, nothing is exchanged):
        blocks = the stored chunks of the heaviest tensor (cut to <= n/64 rows)
        epoch order = blocks shuffled by (seed, epoch)     (shuffle=True; else in order)
        rank r of R: rows [r*n/R, (r+1)*n/R) of that order; DataLoader worker w of W:
          its share of the rank's rows  -> every row exactly once per epoch, counts
          differ by at most one
      a consumer: its rows through a shuffle buffer (a window of buffer_size MB of
        samples), the order precomputed from (seed, epoch, consumer) alone (row numbers
        only), so resuming skips rows unread. Two ways to read a row's samples:
        - large samples (DIRECT_MIN_BYTES on average) of local, not chunk-compressed
          chunk files: read one by one when the row is due (a checked slice of the
          file's map, whose pages are then given back): no sample bytes held, so a
          worker's memory is its row numbers (8 bytes a row of its share), not the
          buffer; reads stay within the window (in random order there: a smaller
          buffer_size keeps them closer together)
        - the rest (small samples, object storage, chunk-compressed): a block is read (one
          ranged read per chunk and tensor) when its first row is due, its rows held (as
          stored bytes, e.g. JPEG) until yielded: memory ~ the window + one block
      a sample: stored bytes -> decoded here, in the DataLoader's worker, by the one
        decode path (decode_sample; JPEG: format/images.py's libjpeg-turbo fast path;
        class label -> int), writable arrays
        (torch.from_numpy never warns), transform
    TorchLoader(iterable, ...)  a torch DataLoader that counts what each worker delivered:
        state_dict() mid-epoch -> load_state_dict() -> the next pass yields exactly the
        rows not yet delivered; the epoch advances by itself after each full pass

Everything that travels to DataLoader workers pickles as handles: the dataset as its URL
and version (Dataset.__reduce__), tensor names and options; never samples or caches.
"""

from __future__ import annotations

import copy
import math
import os
import secrets
from collections import OrderedDict
from typing import Any

import numpy as np

from slicewise.format.errors import DatasetError
from slicewise.integrations._common import require
from slicewise.integrations.rows import finish_value, read_row, read_rows, tensor_names

MB = 2**20
DEFAULT_BUFFER_MB = 128
KEEP_HEADERS = 64  # chunk headers a stream keeps parsed (see _StreamHeaders)
DIRECT_MIN_BYTES = 4096  # mean stored sample size from which a stream reads samples one by one
DECODE_METHODS = ("numpy", "tobytes", "pil")


def _torch() -> Any:
    return require("torch", "ds.pytorch()")


# ---- what both datasets share


class _Rows:
    """The dataset handle, the chosen tensors, and how their samples are handed out."""

    def __init__(self, ds: Any, tensors: Any = None, transform: Any = None,
                 decode_method: dict | None = None, return_index: bool = False,
                 transform_kwargs: dict | None = None) -> None:
        if getattr(ds, "has_pending", False):
            raise DatasetError(f"dataset {ds.path} has uncommitted changes, which loader "
                               "workers would not see; commit them first (ds.commit())")
        self._ds = ds
        self._pid = os.getpid()
        self.tensors = tensor_names(ds, tensors)
        self.transform = transform
        self.transform_kwargs = dict(transform_kwargs or {})
        self.return_index = bool(return_index)
        self.decode_method = _decode_methods(ds, self.tensors, decode_method)
        self.length = len(ds)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_metas", None)
        state.pop("_direct", None)
        state["_pid"] = None  # reopened where it is unpickled
        return state

    @property
    def ds(self) -> Any:
        """The dataset handle, reopened once in each process (a DataLoader worker forked
        from this one must not share its object-store client, which is not fork-safe)."""
        if self._pid != os.getpid():
            self._ds = copy.copy(self._ds)  # pickles as URL + version: a fresh handle
            self._pid = os.getpid()
            self.__dict__.pop("_metas", None)
            self.__dict__.pop("_direct", None)
        return self._ds

    @property
    def metas(self) -> dict:
        metas = self.__dict__.get("_metas")
        if metas is None:
            metas = self._metas = {name: self.ds[name].meta for name in self.tensors}
        return metas

    @property
    def direct(self) -> list[str]:
        """The tensors a streaming pass reads one sample at a time, when the sample is due,
        instead of holding stored bytes in its shuffle buffer: those in local chunk files,
        not chunk-compressed, of samples of DIRECT_MIN_BYTES or more on average (reading
        small samples one by one would cost more than holding them)."""
        direct = self.__dict__.get("_direct")
        if direct is None:
            direct = self._direct = [name for name in self.tensors
                                     if _reads_direct(self.ds, name)]
        return direct

    def read(self, start: int, stop: int, release: bool = False,
             names: list[str] | None = None) -> dict[str, list]:
        return {name: read_rows(self.ds, name, start, stop,
                                self.decode_method[name] == "tobytes", release)
                for name in (self.tensors if names is None else names)}

    def read_one(self, name: str, row: int) -> Any:
        return read_row(self.ds, name, row, self.decode_method[name] == "tobytes",
                        release=True)

    def sample(self, row: int, stored: dict) -> Any:
        metas = self.metas
        out = {name: finish_value(metas[name], value, self.decode_method[name])
               for name, value in stored.items()}
        if self.return_index:
            out["index"] = row
        transform = self.transform
        if transform is None:
            return out
        if isinstance(transform, dict):
            for name, fn in transform.items():
                if name in out:
                    out[name] = fn(out[name], **self.transform_kwargs)
            return out
        return transform(out, **self.transform_kwargs)


def _reads_direct(ds: Any, name: str) -> bool:
    state = ds[name]._state
    if state.meta.chunk_compression is not None or not len(state.keys):
        return False
    if ds._reader.storage.local_path(state.full_key(0)) is None:
        return False
    rows = int(state.cum_rows[-1])
    return rows > 0 and sum(state.nbytes) / rows >= DIRECT_MIN_BYTES


def _decode_methods(ds: Any, names: list[str], decode_method: dict | None) -> dict:
    methods = dict.fromkeys(names, "numpy")
    for name, method in (decode_method or {}).items():
        if name not in methods:
            raise KeyError(f"decode_method names {name!r}, which is not among the loader's "
                           f"tensors {names}")
        if method not in DECODE_METHODS:
            raise ValueError(f"decode_method[{name!r}] = {method!r}; choose one of "
                             f"{DECODE_METHODS}")
        if method == "pil" and not ds[name].meta.is_image:
            raise ValueError(f"decode_method[{name!r}] = 'pil' needs an image tensor, "
                             f"{name!r} is {ds[name].htype!r}")
        methods[name] = method
    return methods


# ---- map-style


def _dataset_base() -> type:
    return _torch().utils.data.Dataset


class TorchDataset:
    """A map-style `torch.utils.data.Dataset` over a dataset's rows: `len()` rows,
    `[i]` a dict {tensor: value} (decoded where it is read: in a DataLoader's worker).
    Use it with any sampler: `DataLoader(sw.TorchDataset(ds), shuffle=True, num_workers=2)`.
    Pickles as the dataset's URL and version plus these options.

    Args:
        ds: the Dataset (committed: no pending changes), or a padded view.
        tensors: tensor or group names to read (default: every tensor).
        transform: a function of the sample dict, or a dict {tensor: function of its
            value}; called with `**transform_kwargs`.
        decode_method: {tensor: "numpy" | "tobytes" | "pil"} (default "numpy"; "pil" for
            image tensors only).
        return_index: add the row number to each sample as "index".
        transform_kwargs: keyword arguments for `transform`.

    Raises:
        DatasetError: the dataset has uncommitted changes.
        KeyError: an unknown tensor or group, or a decode_method for a tensor not read.
        ValueError: an unknown decode method, or "pil" for a non-image tensor.
        ImportError: torch is not installed.

    Example:
        >>> data = sw.TorchDataset(ds, tensors=["images", "labels"])  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)  # doctest: +SKIP
    """

    def __new__(cls, ds: Any, tensors: Any = None, transform: Any = None,
                decode_method: dict | None = None, return_index: bool = False,
                transform_kwargs: dict | None = None) -> Any:
        return super().__new__(_map_class())

    def __init__(self, ds: Any, tensors: Any = None, transform: Any = None,
                 decode_method: dict | None = None, return_index: bool = False,
                 transform_kwargs: dict | None = None) -> None:
        self.rows = _Rows(ds, tensors, transform, decode_method, return_index,
                          transform_kwargs)

    def __len__(self) -> int:
        return self.rows.length

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        if index < 0:
            index += self.rows.length
        if not 0 <= index < self.rows.length:
            raise IndexError(f"index {index} out of range for {self.rows.length} rows")
        rows = self.rows
        return rows.sample(index, {name: rows.read_one(name, index) for name in rows.tensors})


_MAP_CLASS: type | None = None


def _map_class() -> type:
    global _MAP_CLASS
    if _MAP_CLASS is None:
        _MAP_CLASS = type("TorchDataset", (TorchDataset, _dataset_base()),
                          {"__module__": __name__, "__new__": object.__new__,
                           "__reduce__": _reduce_map})
    return _MAP_CLASS


def _reduce_map(self: Any) -> tuple:
    return (_rebuild, ("map", self.__dict__))


def _rebuild(kind: str, state: dict) -> Any:
    cls = _map_class() if kind == "map" else _iterable_class()
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return obj


# ---- streaming


class TorchIterableDataset:
    """A `torch.utils.data.IterableDataset` that streams rows chunk by chunk (see the module
    docstring): every row exactly once per epoch across DataLoader workers and distributed
    ranks, a shuffle that keeps reads sequential (chunk order shuffled, then a buffer of
    `buffer_size` MB), `set_epoch(e)`, and mid-epoch resume (`state_dict`,
    `load_state_dict`; with DataLoader workers use `TorchLoader`, which counts what each
    worker delivered).

    `rank`/`world_size` default to torch.distributed's when it is initialized. `seed`
    defaults to a random one (0 under torch.distributed, so that every rank agrees).

    Args:
        ds: the Dataset (committed: no pending changes), or a padded view.
        tensors: tensor or group names to read (default: every tensor).
        transform: a function of the sample dict, or a dict {tensor: function of its
            value}; called with `**transform_kwargs`.
        decode_method: {tensor: "numpy" | "tobytes" | "pil"} (default "numpy").
        return_index: add the row number to each sample as "index".
        transform_kwargs: keyword arguments for `transform`.
        shuffle: shuffle the chunk order and through a buffer, per (seed, epoch).
        buffer_size: the shuffle buffer in MB of stored samples (0: chunk order only).
            Large samples in local chunk files are not held in it: they are read when
            due, from within that window; others are held as stored bytes.
        seed: the shuffle's seed.
        rank: this process's rank (with `world_size`).
        world_size: the number of ranks.

    Raises:
        DatasetError: the dataset has uncommitted changes.
        KeyError: an unknown tensor or group, or a decode_method for a tensor not read.
        ValueError: an unknown decode method, rank outside [0, world_size), or a
            negative buffer_size.
        ImportError: torch is not installed.

    Example:
        >>> data = sw.TorchIterableDataset(ds, shuffle=True, seed=0)  # doctest: +SKIP
        >>> loader = sw.TorchLoader(data, batch_size=32, num_workers=2)  # doctest: +SKIP
    """

    def __new__(cls, ds: Any, tensors: Any = None, transform: Any = None,
                decode_method: dict | None = None, return_index: bool = False,
                transform_kwargs: dict | None = None, *, shuffle: bool = False,
                buffer_size: float = DEFAULT_BUFFER_MB, seed: int | None = None,
                rank: int | None = None, world_size: int | None = None) -> Any:
        return super().__new__(_iterable_class())

    def __init__(self, ds: Any, tensors: Any = None, transform: Any = None,
                 decode_method: dict | None = None, return_index: bool = False,
                 transform_kwargs: dict | None = None, *, shuffle: bool = False,
                 buffer_size: float = DEFAULT_BUFFER_MB, seed: int | None = None,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.rows = _Rows(ds, tensors, transform, decode_method, return_index,
                          transform_kwargs)
        if rank is None or world_size is None:
            rank, world_size = _distributed()
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle = bool(shuffle)
        if buffer_size is None or buffer_size < 0:
            raise ValueError(f"buffer_size is in MB and must be >= 0, got {buffer_size}")
        self.buffer_size = float(buffer_size)
        if seed is None:
            seed = 0 if self.world_size > 1 else secrets.randbits(32)
        self.seed = int(seed)
        self.epoch = 0
        self._resume: dict[int, int] = {}  # consumer -> rows already delivered this epoch
        self._yielded: dict[int, int] = {}  # in this process: consumer -> rows yielded
        self._tag = False  # TorchLoader: yield (consumer, sample) pairs

    def __len__(self) -> int:
        """Rows this rank yields per epoch (all its DataLoader workers together)."""
        n = self.rows.length
        return (self.rank + 1) * n // self.world_size - self.rank * n // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for this epoch (call it before each epoch, as with DistributedSampler;
        TorchLoader does it for you).

        Args:
            epoch: the epoch number (with the seed, it fixes the order).

        Example:
            >>> data.set_epoch(3)                             # doctest: +SKIP
        """
        self.epoch = int(epoch)
        self._yielded = {}

    def state_dict(self) -> dict:
        """Where this epoch stands: rows delivered per consumer (rank x loader worker),
        as counted in this process (iterating here, num_workers=0). A TorchLoader's
        state_dict counts for its workers.

        Returns:
            A JSON-able dict: epoch, seed, rank, world_size, shuffle, rows, consumed.

        Example:
            >>> state = data.state_dict()                     # doctest: +SKIP
        """
        consumed = dict(self._resume)
        for consumer, count in self._yielded.items():
            consumed[consumer] = count
        return self._state(consumed)

    def _state(self, consumed: dict) -> dict:
        return {"epoch": self.epoch, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "shuffle": self.shuffle, "rows": self.rows.length,
                "consumed": {str(c): int(n) for c, n in consumed.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass yields exactly the rows of `state`'s epoch not yet
        delivered. The dataset (version, tensors), seed, ranks and number of loader workers
        must be those the state was saved with.

        Args:
            state: what `state_dict()` returned.

        Raises:
            ValueError: the state is of a dataset of another length, or of another rank.

        Example:
            >>> data.load_state_dict(state)                   # doctest: +SKIP
        """
        if int(state["rows"]) != self.rows.length:
            raise ValueError(f"the state is of a dataset of {state['rows']} rows, this one has "
                             f"{self.rows.length}")
        if (int(state["world_size"]), int(state["rank"])) != (self.world_size, self.rank):
            raise ValueError(f"the state is of rank {state['rank']} of {state['world_size']}, "
                             f"this is rank {self.rank} of {self.world_size}")
        self.seed, self.shuffle = int(state["seed"]), bool(state["shuffle"])
        self.epoch = int(state["epoch"])
        self._resume = {int(c): int(n) for c, n in state["consumed"].items()}
        self._yielded = {}

    # -- the plan

    def _blocks(self) -> list[tuple[int, int]]:
        """Row ranges read as one piece: the stored chunks of the heaviest tensor."""
        n = self.rows.length
        if n == 0:
            return []
        ds = self.rows.ds
        heaviest = max(self.rows.tensors, key=lambda name: sum(ds[name]._state.nbytes))
        bounds = sorted({0, n, *(min(stop, n) for _, stop in ds[heaviest].chunk_row_ranges())})
        cap = max(16, -(-n // 64))
        blocks = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            blocks.extend((s, min(s + cap, b)) for s in range(a, b, cap))
        return blocks

    def _buffer_rows(self) -> int:
        ds = self.rows.ds
        row_bytes = sum(sum(ds[name]._state.nbytes) / max(1, len(ds[name])) for name in
                        self.rows.tensors)
        return max(1, int(self.buffer_size * MB / max(1.0, row_bytes)))

    def _plan(self, worker: int, workers: int) -> tuple[list[tuple[int, int]], np.ndarray]:
        """This consumer's pieces (row ranges, in reading order) and the order its rows are
        yielded in."""
        blocks = self._blocks()
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        n = self.rows.length
        lo = self.rank * n // self.world_size
        hi = (self.rank + 1) * n // self.world_size
        span = hi - lo
        lo, hi = lo + worker * span // workers, lo + (worker + 1) * span // workers
        pieces, at = [], 0
        for a, b in blocks:  # positions [at, at + b - a) of the epoch's sequence
            first, last = max(lo, at), min(hi, at + b - a)
            if first < last:
                pieces.append((a + first - at, a + last - at))
            at += b - a
        rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in pieces]) \
            if pieces else np.zeros(0, np.int64)
        if self.shuffle and len(rows) > 1:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, workers])
            rows = _buffer_shuffle(rows, self._buffer_rows(), rng)
        return pieces, rows

    # -- iterating

    def __iter__(self):
        # settled now, not at the first next(): TorchLoader changes them right after
        info = _torch().utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        consumer = self.rank * workers + worker
        skip = self._resume.pop(consumer, 0)
        return self._generate(worker, workers, consumer, skip, self._tag)

    def _generate(self, worker: int, workers: int, consumer: int, skip: int, tag: bool):
        pieces, order = self._plan(worker, workers)
        skip = min(skip, len(order))
        rows = self.rows
        direct = rows.direct
        held = [name for name in rows.tensors if name not in direct]
        by_start = sorted(pieces)
        starts = np.array([a for a, _ in by_start], dtype=np.int64)
        done = set(order[:skip].tolist()) if skip and held else set()
        cache: dict[int, dict] = {}  # rows of blocks read, not yet yielded (held tensors)
        headers = _StreamHeaders(rows.ds, direct, order[skip:]) if direct else None
        self._yielded[consumer] = skip
        for position in range(skip, len(order)):
            row = int(order[position])
            stored = cache.pop(row, None) if held else {}
            if stored is None:
                a, b = by_start[int(np.searchsorted(starts, row, side="right")) - 1]
                columns = rows.read(a, b, release=True, names=held)
                stored = {name: column[row - a] for name, column in columns.items()}
                for r in range(a, b):
                    if r != row and r not in done:
                        cache[r] = {name: column[r - a] for name, column in columns.items()}
                del columns
            if direct:
                stored = {name: stored[name] if name in stored else rows.read_one(name, row)
                          for name in rows.tensors}
                headers.read(row)
            sample = rows.sample(row, stored)
            self._yielded[consumer] = position + 1
            yield (consumer, sample) if tag else sample


class _StreamHeaders:
    """The parsed chunk headers a stream keeps for its tensors read one by one. The reader
    keeps every header it parses for its life (their per-sample tables: ~120 bytes a
    sample), so a worker's memory would grow with its share of the dataset; here a
    chunk's header is let go once the stream has read the last of its rows in that chunk,
    and at most KEEP_HEADERS are kept (the least recently read goes first: read again, it
    is parsed and checked again, ~0.1 ms)."""

    def __init__(self, ds: Any, names: list[str], rows: np.ndarray) -> None:
        self.reader = ds._reader
        self.states = [ds[name]._state for name in names]
        self.left = []  # per tensor: rows still to read in each stored chunk
        for state in self.states:
            chunk = np.searchsorted(state.cum_rows, rows, side="right") - 1
            self.left.append(np.bincount(chunk[chunk < len(state.keys)],
                                         minlength=len(state.keys)))
        self.recent: OrderedDict[str, None] = OrderedDict()

    def read(self, row: int) -> None:
        """`row` has been read."""
        for state, left in zip(self.states, self.left, strict=True):
            k = int(np.searchsorted(state.cum_rows, row, side="right")) - 1
            if k >= len(left):  # a padded view's row past the end
                continue
            key = state.full_key(k)
            left[k] -= 1
            if left[k] <= 0:
                self.recent.pop(key, None)
                self.reader._headers.pop(key, None)
                continue
            self.recent[key] = None
            self.recent.move_to_end(key)
            if len(self.recent) > KEEP_HEADERS:
                old, _ = self.recent.popitem(last=False)
                self.reader._headers.pop(old, None)


def _buffer_shuffle(rows: np.ndarray, size: int, rng: Any) -> np.ndarray:
    """The order a shuffle buffer of `size` rows yields `rows` (arriving in order) in: fill
    the buffer, then each arrival replaces a random buffered row, which goes out."""
    size = min(size, len(rows))
    out = np.empty_like(rows)
    buffer = rows[:size].copy()
    picks = rng.integers(0, size, len(rows) - size) if len(rows) > size else ()
    for j, (row, pick) in enumerate(zip(rows[size:].tolist(), picks, strict=False)):
        out[j] = buffer[pick]
        buffer[pick] = row
    rng.shuffle(buffer)
    out[len(rows) - size :] = buffer
    return out


def _distributed() -> tuple[int, int]:
    torch = _torch()
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_ITERABLE_CLASS: type | None = None


def _iterable_class() -> type:
    global _ITERABLE_CLASS
    if _ITERABLE_CLASS is None:
        _ITERABLE_CLASS = type(
            "TorchIterableDataset",
            (TorchIterableDataset, _torch().utils.data.IterableDataset),
            {"__module__": __name__, "__new__": object.__new__,
             "__reduce__": lambda self: (_rebuild, ("iterable", self.__dict__))})
    return _ITERABLE_CLASS


# ---- the loader


def _tagged_collate(collate: Any) -> Any:
    return _TaggedCollate(collate)


class _TaggedCollate:
    """Batches of (consumer, sample) pairs -> (consumer, count, collate(samples)): a batch of
    an IterableDataset comes from one worker, so the loader learns who delivered it."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, items: list) -> tuple:
        return (items[0][0], len(items), self.collate([sample for _, sample in items]))


def TorchLoader(dataset: Any, batch_size: int = 1, **kwargs: Any) -> Any:  # noqa: N802
    """A `torch.utils.data.DataLoader` over a TorchIterableDataset that knows where it is
    in an epoch: `state_dict()` / `load_state_dict()` (resume mid-epoch, exactly), and an
    epoch that advances by itself after each full pass (`set_epoch` to choose). Takes
    DataLoader's arguments (not `persistent_workers`, whose copies of the dataset would
    never see the next epoch).

    Args:
        dataset: a `TorchIterableDataset`.
        batch_size: rows per batch.
        **kwargs: `torch.utils.data.DataLoader`'s other arguments (num_workers,
            collate_fn, pin_memory, drop_last, ...).

    Returns:
        The loader: a DataLoader with `state_dict()`, `load_state_dict(state)` (the
        state must come from a loader with the same num_workers) and `set_epoch(e)`.

    Raises:
        TypeError: `dataset` is not a TorchIterableDataset.
        ValueError: persistent_workers=True, or batch_size < 1.
        ImportError: torch is not installed.

    Example:
        >>> loader = sw.TorchLoader(sw.TorchIterableDataset(ds), batch_size=32,
        ...                         num_workers=2)            # doctest: +SKIP
        >>> state = loader.state_dict(); loader.load_state_dict(state)  # doctest: +SKIP
    """
    return _loader_class()(dataset, batch_size=batch_size, **kwargs)


_LOADER_CLASS: type | None = None


def _loader_class() -> type:
    global _LOADER_CLASS
    if _LOADER_CLASS is not None:
        return _LOADER_CLASS
    data = _torch().utils.data

    class Loader(data.DataLoader):
        __module__ = __name__

        def __init__(self, dataset: Any, batch_size: int = 1, collate_fn: Any = None,
                     **kwargs: Any) -> None:
            if not isinstance(dataset, TorchIterableDataset):
                raise TypeError("TorchLoader takes a TorchIterableDataset "
                                f"(ds.pytorch() makes both), got {type(dataset).__name__}")
            if kwargs.get("persistent_workers"):
                raise ValueError("persistent_workers=True: the workers' copies of the dataset "
                                 "would never see the next epoch; leave it off")
            if batch_size is None or int(batch_size) < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size}")
            collate = collate_fn if collate_fn is not None else data.default_collate
            super().__init__(dataset, batch_size=int(batch_size),
                             collate_fn=_tagged_collate(collate), **kwargs)
            self._consumed: dict[int, int] = {}
            self._next_epoch = dataset.epoch

        def set_epoch(self, epoch: int) -> None:
            """The epoch the next pass runs (it advances by itself after each pass)."""
            self._next_epoch = int(epoch)

        def state_dict(self) -> dict:
            """Rows delivered (as batches yielded to you) this epoch, per worker."""
            state = self.dataset._state(self._consumed)
            state["num_workers"] = self.num_workers
            return state

        def load_state_dict(self, state: dict) -> None:
            """Resume from `state_dict()`: the next pass yields the rows not yet delivered."""
            if int(state.get("num_workers", self.num_workers)) != self.num_workers:
                raise ValueError(f"the state was saved with num_workers="
                                 f"{state['num_workers']}, this loader has {self.num_workers}")
            self.dataset.load_state_dict(state)
            self._next_epoch = self.dataset.epoch
            self._consumed = dict(self.dataset._resume)

        def __iter__(self):
            dataset = self.dataset
            resume = dict(dataset._resume)
            dataset.epoch = self._next_epoch
            dataset._tag = True
            self._consumed = resume
            try:
                iterator = super().__iter__()
            finally:
                dataset._tag = False
                dataset._resume = {}  # the workers have their copies
            for consumer, count, batch in iterator:
                self._consumed[consumer] = self._consumed.get(consumer, 0) + count
                yield batch
            self._next_epoch = dataset.epoch + 1
            self._consumed = {}

        def __len__(self) -> int:
            n = len(self.dataset)
            workers = max(1, self.num_workers)
            per = [(w + 1) * n // workers - w * n // workers for w in range(workers)]
            if self.drop_last:
                return sum(p // self.batch_size for p in per)
            return sum(math.ceil(p / self.batch_size) for p in per)

    Loader.__name__ = Loader.__qualname__ = "TorchLoader"
    _LOADER_CLASS = Loader
    return Loader


# ---- ds.pytorch()

_DEEPLAKE_IGNORED = {"use_local_cache", "progressbar", "cache_size", "num_threads",
                     "use_progress_bar"}


def dataset_pytorch(ds: Any, transform: Any = None, tensors: Any = None,
                    num_workers: int = 1, batch_size: int = 1, drop_last: bool = False,
                    collate_fn: Any = None, pin_memory: bool = False, shuffle: bool = False,
                    buffer_size: float = DEFAULT_BUFFER_MB, return_index: bool = True,
                    pad_tensors: bool = False, transform_kwargs: dict | None = None,
                    decode_method: dict | None = None, tobytes: Any = False,
                    seed: int | None = None, **kwargs: Any) -> Any:
    """Deep Lake 3's `ds.pytorch()`: see `Dataset.pytorch`."""
    for name in _DEEPLAKE_IGNORED & set(kwargs):
        kwargs.pop(name)
    if pad_tensors and not ds.pad_tensors:
        ds = ds.padded()
    names = tensor_names(ds, tensors)
    methods = dict(decode_method or {})
    if tobytes is True:
        tobytes = names
    for name in tobytes or ():
        methods.setdefault(name, "tobytes")
    dataset = TorchIterableDataset(ds, names, transform, methods, return_index,
                                   transform_kwargs, shuffle=shuffle,
                                   buffer_size=buffer_size, seed=seed)
    return TorchLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                       drop_last=drop_last, collate_fn=collate_fn, pin_memory=pin_memory,
                       **kwargs)
