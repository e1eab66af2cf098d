"""integrations: slicewise datasets as dask citizens and PyTorch input; HDF5, Zarr, image
stacks, Arrow/Parquet/pandas and Hugging Face datasets in and out; a joblib backend; pictures
of a dataset. Seed 003's larger-than-memory work, without rebuilding dask.

    READ (lazy)                                   WRITE / IMPORT (parallel, one commit)
    ───────────                                   ─────────────────────────────────────
    ds.t.dask() ─► dask.array, blocks are runs    dask array ─► whole-row blocks ─► dask's
      of whole stored chunks (≤ 64 MiB); a task     scheduler on an engine Pool: a worker
      reads its chunks straight into a reused       computes a block and writes it with its
      buffer (nothing is read to build it)          own DatasetWriter ─► receipt
    ds.t.dask_bag() ─► dask.bag per chunk         HDF5 file / Zarr store / image files /
      (ragged tensors, text)                        Parquet row groups / HF datasets ─►
    ds.t.to_zarr / ds.to_zarr(store) ─► workers     row blocks aligned with the source's
      write whole Zarr chunks; dimension names      chunks ─► engine Pool: each worker opens
      for xarray                                    the source itself, reads its rows,
    ds.to_hdf5(file) ─► streamed chunk by chunk     writes them with its own DatasetWriter
      (HDF5 has one writer)                                   │ receipts, a few hundred bytes
    ds.to_parquet(dir) ─► workers write parts;                ▼
      ds.to_arrow / to_pandas / to_hf: in memory  parent: ds.add_receipts(in order) ─►
    ds.pytorch(), TorchDataset, TorchIterable-      ds.commit(message, meta): the tensors
      Dataset (chunk-order shuffle, each row once   and all their rows, or nothing
      per epoch across ranks and loader workers),
      TorchLoader (resumes mid-epoch)
    dask.compute(x, scheduler=pool) ─► dask's local scheduler submits tasks to the Pool
      (a concurrent.futures.Executor): crash isolation for any dask graph
    joblib.parallel_backend("slicewise") ─► joblib's calls on the engine's warm pool
    ds.show() ─► a grid of the rows shown (PNG or HTML); notebooks: _repr_html_ views

Modules (each imports its optional dependency on first use, with an error naming the extra
that installs it: `pip install slicewise[dask]`, `[hdf5]`, `[zarr]`, `[torch]`, `[arrow]`,
`[hf]`; joblib_backend.py is imported by joblib itself):

    _common.py         what they share: row blocks, TensorRows (a tensor as an array-like
                       that pickles lightly), running jobs on the engine, the one commit
    dask.py            tensor_to_dask (Tensor.dask), tensor_to_dask_bag (Tensor.dask_bag),
                       extend_from_dask (Tensor.extend(dask_array)), from_dask
                       (sw.from_dask), pool_scheduler
    hdf5.py            from_hdf5 (sw.from_hdf5), dataset_to_hdf5 (Dataset.to_hdf5)
    zarr.py            from_zarr (sw.from_zarr), tensor_to_zarr (Tensor.to_zarr),
                       dataset_to_zarr (Dataset.to_zarr: one group, an array per tensor)
    images.py          from_images (sw.from_images): TIFF/PNG/JPEG stacks via Pillow or a
                       reader (format/images.py is another thing: the checks of image
                       files appended to image tensors)
    torch.py           TorchDataset, TorchIterableDataset, TorchLoader, dataset_pytorch
                       (ds.pytorch)
    rows.py            read_rows / read_row / finish_value: stored rows read, checked and
                       decoded one way for torch.py, arrow.py and hf.py
    arrow.py           to_arrow / to_parquet / to_pandas (Dataset methods), from_arrow,
                       from_parquet (sw.from_arrow, sw.from_parquet)
    hf.py              from_hf (sw.from_hf), to_hf (Dataset.to_hf)
    joblib_backend.py  SlicewiseBackend, imported by joblib when "slicewise" is asked for
    _joblib_hook.py    registers it lazily (installed by `import slicewise`; never imports
                       joblib)
    pictures.py        show (Dataset.show, `slicewise show`): Grid, thumbnails, overlays
    html.py            the notebook views (_repr_html_) of Dataset, Tensor, Group, row
                       views and EvalReport

Memory is bounded by design: a reduction over `ds.t.dask()` holds only the blocks dask's
threads are working on (about threads + 1 blocks of up to 64 MiB); writers hold one block
each (~32 MiB by default); the parent holds only receipts. tests/integrations/test_bounded_memory.py checks it on a 512 MiB tensor.
"""
