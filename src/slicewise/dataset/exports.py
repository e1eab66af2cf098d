"""What a Dataset hands to other tools: pictures and notebook views, PyTorch loaders,
Arrow/Parquet/pandas/Hugging Face tables, HDF5 and Zarr files.

    ds.show() / _repr_html_        integrations/pictures.py, html.py
    ds.pytorch(...)                integrations/torch.py
    ds.to_arrow / to_parquet / to_pandas / to_hf      integrations/arrow.py, hf.py
    ds.to_hdf5 / to_zarr           integrations/hdf5.py, zarr.py

`DatasetExports` is a base class of `Dataset` (dataset.py): each method reads the dataset
through its public interface and delegates to the integration module, imported on first
use so `import slicewise` pulls in none of torch, pyarrow, datasets, h5py or zarr.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class DatasetExports:
    """Dataset methods that hand its rows to other tools (see the module docstring)."""

    def summary(self) -> None:
        """Print the tensors: name, htype, shape, dtype, compression (Deep Lake 3's
        summary(), which prints and returns None).

        Example:
            >>> ds.summary()                                     # doctest: +SKIP
        """
        rows = [("tensor", "htype", "shape", "dtype", "compression")]
        for name, tensor in self.tensors.items():
            comp = tensor.sample_compression or tensor.chunk_compression or "None"
            rows.append((name, tensor.htype, str(tensor.shape), str(tensor.meta.dtype), comp))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"Dataset(path='{self._url}', version='{self.version}')", ""]
        for i, row in enumerate(rows):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
            )
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        print("\n".join(lines))

    def _repr_html_(self) -> str:
        """Jupyter's view: tensors (htype, shape, dtype, compression, size), thumbnails
        of image tensors, the newest versions."""
        from slicewise.integrations.html import dataset_html

        return dataset_html(self)

    def show(self, rows: Any = None, tensors: Any = None, out: Any = None, *,
             random: int | None = None, seed: int | None = None, thumb: int = 128,
             cols: int | None = None) -> Any:
        """Draw a grid of samples: images as thumbnails with their row numbers and class
        names, bounding boxes and masks overlaid, arrays as images or small plots, text
        and JSON as captions. Reads only the rows shown.

        Args:
            rows: None (the first 16), an int n (the first n), "a:b", a slice, range or
                list of row numbers.
            tensors: names of the tensors to show (default: all).
            out: a path ending in .png or .html to write the grid to.
            random: show this many rows picked at random instead (`seed` repeats a pick).
            thumb: the thumbnails' size in pixels; cols: cells per line.

        Returns:
            A `Grid` (`.image` is a Pillow image, `.to_html()` a page; Jupyter shows it).

        Raises:
            IndexError: a row out of range. KeyError: an unknown tensor.
            ValueError: `out` is neither .png nor .html, or both rows and random.

        Example:
            >>> ds.show(rows="0:16", out="grid.png")     # doctest: +SKIP
        """
        from slicewise.integrations.pictures import show

        return show(self, rows, tensors, out, random=random, seed=seed, thumb=thumb,
                    cols=cols)

    # ---- training input and Arrow (slicewise.integrations.torch / arrow / hf, on use)

    def pytorch(self, transform: Any = None, tensors: Any = None, num_workers: int = 1,
                batch_size: int = 1, drop_last: bool = False,
                collate_fn: Callable | None = None, pin_memory: bool = False,
                shuffle: bool = False, buffer_size: float = 128, return_index: bool = True,
                transform_kwargs: dict | None = None, decode_method: dict | None = None,
                *, pad_tensors: bool = False, tobytes: bool | Sequence[str] = False,
                seed: int | None = None, **kwargs: Any) -> Any:
        """Deep Lake 3's PyTorch loader: a torch DataLoader yielding dicts of tensors,
        streamed chunk by chunk, decoded in its `num_workers` workers (images to HWC
        uint8, a class label to an int). `shuffle` shuffles the chunk order, then rows in
        a buffer of `buffer_size` MB per worker; `decode_method={tensor: "numpy" |
        "tobytes" | "pil"}`; `transform(sample, **transform_kwargs)` or {tensor: fn};
        `return_index` adds "index". Every row once per epoch across workers and
        torch.distributed ranks; `loader.state_dict()` / `load_state_dict()` resume
        mid-epoch. Needs `pip install slicewise[torch]`; guide: docs/guides/training.md.

        Args:
            transform: a function of the sample dict, or {tensor: function}.
            tensors: tensor or group names (default: all).
            num_workers: DataLoader workers.
            batch_size: rows per batch.
            drop_last: drop a last, short batch.
            collate_fn: the DataLoader's collate function.
            pin_memory: the DataLoader's pin_memory.
            shuffle: shuffle chunk order, then rows in a buffer.
            buffer_size: the shuffle buffer in MB of samples per worker (a window: large
                samples in local chunk files are read when due, not held in it).
            return_index: add the row number as "index".
            transform_kwargs: keyword arguments for `transform`.
            decode_method: {tensor: "numpy" | "tobytes" | "pil"}.
            pad_tensors: read the dataset padded (see `padded`).
            tobytes: True or tensor names: hand those samples out as stored bytes.
            seed: the shuffle's seed.
            **kwargs: other DataLoader arguments; Deep Lake 3's use_local_cache,
                progressbar, cache_size, num_threads, use_progress_bar are ignored.

        Returns:
            A `TorchLoader` (a DataLoader with state_dict / load_state_dict).

        Raises:
            DatasetError: the dataset has uncommitted changes.
            KeyError: an unknown tensor or group.
            ImportError: torch is not installed.

        Example:
            >>> for batch in ds.pytorch(batch_size=64, num_workers=2, shuffle=True):  # doctest: +SKIP
            ...     images, labels = batch["images"], batch["labels"]
        """
        from slicewise.integrations.torch import dataset_pytorch

        return dataset_pytorch(
            self, transform=transform, tensors=tensors, num_workers=num_workers,
            batch_size=batch_size, drop_last=drop_last, collate_fn=collate_fn,
            pin_memory=pin_memory, shuffle=shuffle, buffer_size=buffer_size,
            return_index=return_index, transform_kwargs=transform_kwargs,
            decode_method=decode_method, pad_tensors=pad_tensors, tobytes=tobytes,
            seed=seed, **kwargs)

    def to_arrow(self, tensors: Any = None, start: int = 0, stop: int | None = None) -> Any:
        """A pyarrow.Table of the rows [start, stop), a column per tensor; its schema
        metadata lets `sw.from_arrow` rebuild the tensors.

        Args:
            tensors: tensor or group names (default: all).
            start: the first row.
            stop: the row after the last (default: `len(ds)`).

        Returns:
            The pyarrow.Table.

        Raises:
            KeyError: an unknown tensor or group.
            ImportError: pyarrow is not installed.

        Example:
            >>> table = ds.to_arrow(["labels"], stop=100)         # doctest: +SKIP
        """
        from slicewise.integrations.arrow import to_arrow

        return to_arrow(self, tensors=tensors, start=start, stop=stop)

    def to_parquet(self, path: str | os.PathLike, tensors: Any = None, *,
                   overwrite: bool = False, num_workers: int | None = None, pool: Any = None,
                   part_bytes: int | None = None, row_group_bytes: int | None = None,
                   storage_options: dict | None = None, progress: bool = False) -> str:
        """Write the rows as Parquet, in parallel and in bounded memory.

        Args:
            path: a folder (part-00000.parquet, ... written by the engine's workers) or a
                path ending in ".parquet" (one file, written by this process).
            tensors: tensor or group names (default: all).
            overwrite: replace existing part files (or the file).
            num_workers: workers (0: write in this process).
            pool: an `sw.Pool` to run on.
            part_bytes: stored bytes per part file (default 64 MiB).
            row_group_bytes: stored bytes per row group (default 8 MiB).
            storage_options: fsspec options for `path`.
            progress: show a progress bar.

        Returns:
            The path.

        Raises:
            FileExistsError: part files (or the file) exist, without overwrite.
            ValueError: the dataset has uncommitted changes.
            ImportError: pyarrow is not installed.

        Example:
            >>> ds.to_parquet("./animals_parquet/", num_workers=4)  # doctest: +SKIP
        """
        from slicewise.integrations.arrow import to_parquet

        sizes = {key: value for key, value in (("part_bytes", part_bytes),
                                               ("row_group_bytes", row_group_bytes))
                 if value is not None}
        return to_parquet(self, path, tensors=tensors, overwrite=overwrite,
                          num_workers=num_workers, pool=pool, storage_options=storage_options,
                          progress=progress, **sizes)

    def to_pandas(self, tensors: Any = None) -> Any:
        """A pandas.DataFrame of the rows, a column per tensor (class labels Categorical,
        text str, other arrays numpy arrays, compressed images bytes).

        Args:
            tensors: tensor or group names (default: all).

        Returns:
            The DataFrame.

        Raises:
            KeyError: an unknown tensor or group.
            ImportError: pandas is not installed.

        Example:
            >>> ds.to_pandas(["labels"]).labels.value_counts()   # doctest: +SKIP
        """
        from slicewise.integrations.arrow import to_pandas

        return to_pandas(self, tensors=tensors)

    def to_hf(self, tensors: Any = None) -> Any:
        """The rows as an Arrow-backed Hugging Face `datasets.Dataset`, in memory (images
        as `Image()` features of their stored bytes, class labels as `ClassLabel`).

        Args:
            tensors: tensor or group names (default: all).

        Returns:
            The `datasets.Dataset` (publish it with `.push_to_hub(...)`).

        Raises:
            KeyError: an unknown tensor or group.
            ImportError: Hugging Face `datasets` is not installed.

        Example:
            >>> ds.to_hf().push_to_hub("me/animals")             # doctest: +SKIP
        """
        from slicewise.integrations.hf import to_hf

        return to_hf(self, tensors=tensors)

    def to_hdf5(self, file: str | os.PathLike, tensors: Iterable[str] | None = None, *,
                mode: str = "w", compression: str | None = None) -> str:
        """Write the tensors into an HDF5 file, one HDF5 dataset per tensor, groups and all
        (needs h5py: `pip install slicewise[hdf5]`). It reads back with `sw.from_hdf5`.

        Args:
            file: the HDF5 file's path.
            tensors: tensor names (default: all, with the empty groups).
            mode: h5py's file mode ("w" truncates, "a" adds).
            compression: an HDF5 filter for numeric datasets, e.g. "gzip".

        Returns:
            The file's path.

        Raises:
            TypeError: `file` is not a path, or tensors of neither numbers nor text
                (nothing is written).
            ValueError: a ragged tensor (nothing is written).
            ImportError: h5py is not installed.

        Example:
            >>> ds.to_hdf5("experiments_copy.h5", compression="gzip")  # doctest: +SKIP
        """
        from slicewise.integrations.hdf5 import dataset_to_hdf5

        return dataset_to_hdf5(self, file, tensors, mode=mode, compression=compression)

    def to_zarr(self, store: Any, tensors: Iterable[str] | dict[str, str] | None = None, *,
                dimension_names: Sequence[str] | dict[str, Sequence[str]] | None = None,
                chunk_rows: int | None = None, zarr_format: int | None = None,
                overwrite: bool = False, pool: Any = None, num_workers: int | None = None,
                progress: bool = False, consolidate: bool = True,
                storage_options: dict | None = None, **array_options: Any) -> Any:
        """Write tensors into one Zarr group at `store` (a path, URL or zarr store), one
        array per tensor, in parallel blocks of whole Zarr chunks (a worker holds one
        ~16 MiB piece at a time, whatever the dataset's size), so that
        `xarray.open_zarr(store)` opens them as one Dataset with named dimensions. Returns
        the zarr Group.

        `tensors`: None for every tensor, a list of names, or a dict {tensor: array name}.
        Fixed-shape numeric tensors become N-D arrays, text tensors 1-D string arrays. A
        tensor with no such form (ragged, JSON) is never skipped silently: the export
        refuses before writing anything, names each such tensor, and says which
        tensors=[...] exports the others.

        `dimension_names`: one sequence for every tensor, or {tensor: names}; otherwise a
        tensor keeps the names it was imported with, else gets ("sample", "dim_1", ...)
        (images: "height", "width", "channel"). xarray needs one size per dimension name,
        so a default name that would clash across tensors takes the array's name as prefix
        ("labels_dim_1"); names you give that clash raise an error.

        Attributes: each array gets its tensor's info (and htype, under "slicewise_htype",
        which sw.from_zarr reads back). Existing arrays are an error unless
        overwrite=True. Also: chunk_rows, zarr_format (2 or 3), pool, num_workers,
        progress, consolidate, storage_options, and zarr create_array options (e.g.
        compressors=...). Zarr has no transactions: an export that fails part way leaves
        the arrays it made; run it again with overwrite=True.

        Args:
            store: a path, URL or zarr store.
            tensors: None, a list of names, or {tensor: array name}.
            dimension_names: one sequence for every tensor, or {tensor: names}.
            chunk_rows: rows per Zarr chunk.
            zarr_format: 2 or 3.
            overwrite: replace existing arrays.
            pool: an `sw.Pool` to run on.
            num_workers: workers.
            progress: show a progress bar.
            consolidate: consolidate the group's metadata.
            storage_options: fsspec options for a URL store.
            **array_options: zarr create_array options (e.g. compressors=...).

        Returns:
            The zarr Group.

        Raises:
            FileExistsError: arrays already there, without overwrite.
            TypeError: tensors of neither numbers nor text (nothing is written).
            ValueError: a ragged tensor, clashing array names, or bad dimension names.
            ImportError: zarr is not installed.

        Example:
            >>> ds.to_zarr("experiments.zarr", dimension_names=("time", "y", "x"))  # doctest: +SKIP
            >>> xarray.open_zarr("experiments.zarr")              # doctest: +SKIP
        """
        from slicewise.integrations.zarr import dataset_to_zarr

        return dataset_to_zarr(self, store, tensors, dimension_names=dimension_names,
                               chunk_rows=chunk_rows, zarr_format=zarr_format,
                               overwrite=overwrite, pool=pool, num_workers=num_workers,
                               progress=progress, consolidate=consolidate,
                               storage_options=storage_options, **array_options)
