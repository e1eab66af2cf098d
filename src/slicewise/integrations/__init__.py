"""integrations: slicewise datasets as dask citizens, and HDF5, Zarr and image stacks in and
out. Seed 003's larger-than-memory work, without rebuilding dask.

    READ (lazy)                                   WRITE / IMPORT (parallel, one commit)
    ───────────                                   ─────────────────────────────────────
    ds.t.dask() ─► dask.array, blocks are runs    dask array ─► whole-row blocks ─► dask's
      of whole stored chunks (≤ 64 MiB); a task     scheduler on an engine Pool: a worker
      reads its chunks straight into a reused       computes a block and writes it with its
      buffer (nothing is read to build it)          own DatasetWriter ─► receipt
    ds.t.dask_bag() ─► dask.bag per chunk         HDF5 file / Zarr store / image files ─►
      (ragged tensors, text)                        row blocks aligned with the source's
    ds.t.to_zarr / ds.to_zarr(store) ─► workers     chunks ─► engine Pool: each worker opens
      write whole Zarr chunks; dimension names      the source itself, reads its rows,
      for xarray                                    writes them with its own DatasetWriter
    ds.to_hdf5(file) ─► streamed chunk by chunk               │ receipts, a few hundred bytes
      (HDF5 has one writer)                                   ▼
    dask.compute(x, scheduler=pool) ─► dask's     parent: ds.add_receipts(in order) ─►
      local scheduler submits tasks to the Pool     ds.commit(message, meta): the tensors
      (a concurrent.futures.Executor): crash        and all their rows, or nothing
      isolation for any dask graph

Modules (each imports its optional dependency on first use, with an error naming the extra
that installs it: `pip install slicewise[dask]`, `[hdf5]`, `[zarr]`):

    _common.py  what they share: row blocks, TensorRows (a tensor as an array-like that
                pickles lightly), running jobs on the engine, the one commit
    dask.py     tensor_to_dask (Tensor.dask), tensor_to_dask_bag (Tensor.dask_bag),
                extend_from_dask (Tensor.extend(dask_array)), from_dask (sw.from_dask),
                pool_scheduler
    hdf5.py     from_hdf5 (sw.from_hdf5), dataset_to_hdf5 (Dataset.to_hdf5)
    zarr.py     from_zarr (sw.from_zarr), tensor_to_zarr (Tensor.to_zarr),
                dataset_to_zarr (Dataset.to_zarr: one group, an array per tensor)
    images.py   from_images (sw.from_images): TIFF/PNG/JPEG stacks via Pillow or a reader

Memory is bounded by design: a reduction over `ds.t.dask()` holds only the blocks dask's
threads are working on (about threads + 1 blocks of up to 64 MiB); writers hold one block
each (~32 MiB by default); the parent holds only receipts. tests/integrations/test_bounded_memory.py checks it on a 512 MiB tensor.
"""
