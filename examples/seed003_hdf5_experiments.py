"""Seed 003, HDF5: Control and Treatment groups of experiments, read lazily and in parallel.

    .venv/bin/python examples/seed003_hdf5_experiments.py

The seed opens `experiments.h5` and wraps each `/Control/Experiment i` in `da.from_array`;
h5py handles cannot cross processes, so that stays on threads. `sw.from_hdf5` imports the
groups with every core (each worker opens the file itself), once; the tensors then serve
dask, random access and versions; `ds.to_hdf5` writes them back, and `ds.to_zarr` writes
them into one Zarr group that xarray opens as one Dataset.
"""

from __future__ import annotations

import os
import time

import dask.array as da
import h5py
import numpy as np
import xarray as xr

import slicewise as sw

FILE = "demo-data/seed003/experiments.h5"


def make_experiments(path: str, experiments: int = 9) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        for group, offset in (("Control", 100), ("Treatment", 130)):
            for i in range(1, experiments + 1):
                frames = rng.poisson(offset, size=(50, 256, 256)).astype(np.uint16)
                dset = f.create_dataset(f"/{group}/Experiment {i}", data=frames,
                                        chunks=(10, 128, 128), compression="gzip")
                dset.attrs["day"] = i


def main() -> None:
    make_experiments(FILE)
    start = time.perf_counter()
    ds = sw.from_hdf5(FILE, "demo-data/seed003/experiments_ds",
                      datasets=["Control", "Treatment"], overwrite=True)
    print(f"imported {len(ds.tensors)} experiments in {time.perf_counter() - start:.1f} s")

    controls = [ds.Control[f"Experiment {i}"].dask() for i in range(1, 10)]   # HDF5 groups
    treatments = [ds[f"Treatment/Experiment {i}"].dask() for i in range(1, 10)]  # are groups
    control_mean = da.stack([c.mean() for c in controls]).mean()
    treatment_mean = da.stack([t.mean() for t in treatments]).mean()
    c, t = da.compute(control_mean, treatment_mean)
    print(f"mean intensity: control {c:.2f}, treatment {t:.2f}")
    print("attributes travel:", dict(ds.Control["Experiment 3"].info))

    out = ds.to_hdf5("demo-data/seed003/experiments_copy.h5")
    with h5py.File(out, "r") as f:
        print("exported back to", out, "->", list(f["Control"])[:3], "...")

    store = "demo-data/seed003/experiments.zarr"
    start = time.perf_counter()
    ds.to_zarr(store, dimension_names=("time", "y", "x"), overwrite=True)
    print(f"exported to Zarr in {time.perf_counter() - start:.1f} s")
    # lazy: one xarray.Dataset per group, every experiment of it a variable
    treatment = xr.open_zarr(store, group="Treatment")
    print(f"xarray: {len(treatment.data_vars)} variables on {dict(treatment.sizes)}; "
          f"day of Treatment 4: {treatment['Experiment 4'].attrs['day']}")


if __name__ == "__main__":
    main()
