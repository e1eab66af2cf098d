"""Fixtures for integrations/: real datasets on disk, one warm engine pool per session."""

from __future__ import annotations

import numpy as np
import pytest

import slicewise as sw


@pytest.fixture(scope="session")
def pool():
    """Two process workers shared by the tests that need a pool (start-up is paid once)."""
    with sw.Pool(2) as shared:
        yield shared


def _make_dataset(path, tensors: dict[str, list[np.ndarray] | np.ndarray], **tensor_options):
    """A dataset whose tensors are filled piece by piece: each piece becomes its own stored
    chunk(s), so the chunk row ranges are irregular (what alignment tests need)."""
    ds = sw.empty(str(path), overwrite=True)
    for name, pieces in tensors.items():
        pieces = [pieces] if isinstance(pieces, np.ndarray) else list(pieces)
        ds.create_tensor(name, htype="generic", dtype=pieces[0].dtype, **tensor_options)
        for piece in pieces:
            ds[name].extend(piece)
    return ds


def _irregular_pieces(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    bounds = np.cumsum([0, *sizes])
    assert bounds[-1] == len(array)
    return [array[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.fixture
def make_dataset():
    return _make_dataset


@pytest.fixture
def irregular_pieces():
    return _irregular_pieces
