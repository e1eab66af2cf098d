"""dask, h5py and zarr are extras: slicewise imports without them, and using a feature that
needs one says which extra installs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

WITHOUT_EXTRAS = """
import sys
for name in ("dask", "h5py", "zarr"):
    sys.modules[name] = None          # as if not installed: importing them fails
import numpy as np
import slicewise as sw
import slicewise.integrations.dask, slicewise.integrations.hdf5  # noqa: E401
import slicewise.integrations.images, slicewise.integrations.zarr  # noqa: E401

ds = sw.empty(sys.argv[1])
ds.create_tensor("x", dtype="uint8")
ds.x.extend(np.zeros((2, 2), np.uint8))
for call in (ds.x.dask, lambda: sw.from_hdf5("f.h5", sys.argv[1] + "_h5"),
             lambda: ds.x.to_zarr(sys.argv[1] + ".zarr")):
    try:
        call()
    except ImportError as exc:
        print(exc)
"""


@pytest.mark.timeout(60)
def test_missing_extras_are_named(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, str(tmp_path / "ds")],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    assert "Tensor.dask()" in lines[0] and "pip install slicewise[dask]" in lines[0]
    assert "pip install slicewise[hdf5]" in lines[1]
    assert "pip install slicewise[zarr]" in lines[2]


def test_importing_slicewise_loads_no_extra():
    code = ("import sys, slicewise as sw, slicewise.integrations.dask, "
            "slicewise.integrations.hdf5, slicewise.integrations.zarr; "
            "print(sorted(m for m in ('dask', 'h5py', 'zarr') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
