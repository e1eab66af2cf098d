"""Fixtures shared by the format and dataset tests (subfolders may add their own)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["local", "memory"])
def ds_url(request, tmp_path):
    """A fresh dataset location: a local directory and a memory:// URL."""
    if request.param == "local":
        yield str(tmp_path / "ds")
        return
    url = f"memory://sw-test-{uuid.uuid4().hex}"
    yield url
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


@pytest.fixture
def jpeg_files(tmp_path):
    """Six real JPEG files in class folders (cat/dog), different sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        label = "cat" if i % 2 else "dog"
        folder = tmp_path / "imgs" / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(
            path, quality=85
        )
        files.append(str(path))
    return files
