"""Writers read files and copy raw arrays into a reusable arena (format/arena.py): stored
bytes must be exactly the files' and arrays' bytes through every path around it: chunks
flushed mid-call, samples too large for it, files that are not what the tensor stores,
rollbacks of a failed extend across a chunk boundary, and arenas handed between writers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import slicewise as sw
from slicewise.format.arena import Arena
from slicewise.format.errors import SampleError


def test_arena_hands_out_views_and_retires_a_buffer_with_pending_views():
    arena = Arena(100)
    first = arena.take(60)
    first[:] = b"a" * 60
    second = arena.take(60)
    second[:] = b"b" * 60
    assert arena.capacity == 100 + arena.max_sample  # a chunk's target plus one sample
    assert arena.take(arena.max_sample + 1) is None
    assert arena.take(arena.capacity - 120 + 1) is None
    arena.reset([first])  # `second` is still pending: its buffer must not be reused
    third = arena.take(60)
    third[:] = b"c" * 60
    assert bytes(second) == b"b" * 60 and third.obj is not second.obj
    arena.reset([third])  # everything taken went into the chunk: reused
    assert arena.take(10).obj is third.obj
    arena.give_back()
    assert arena.used == 0


def _jpeg(path, height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return str(path)


@pytest.mark.parametrize("target", [20_000, 1_000_000])
def test_file_bytes_are_stored_exactly_through_the_arena(tmp_path, target):
    files = [_jpeg(tmp_path / f"{i}.jpg", 30 + i, 40, i) for i in range(40)]
    files.insert(7, _jpeg(tmp_path / "big.jpg", 300, 300, 99))  # larger than the arena takes
    png = tmp_path / "p.png"
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(png)  # not a jpeg: re-encoded
    ds = sw.empty(str(tmp_path / "ds"), chunk_target_bytes=target)
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    with ds:
        for path in files[:20]:
            ds.images.append(sw.read(path))
        ds.images.append(sw.read(str(png)))
        ds.images.extend([sw.read(path) for path in files[20:]])
    ds = sw.load(str(tmp_path / "ds"))
    stored = [ds.images[i].tobytes() for i in range(len(ds.images))]
    expected = [open(path, "rb").read() for path in files[:20]]
    expected_after = [open(path, "rb").read() for path in files[20:]]
    assert stored[:20] == expected and stored[21:] == expected_after
    assert ds.images[20].numpy().shape == (9, 8, 3)
    assert sw.verify(str(tmp_path / "ds")).ok


def test_a_failed_extend_rolls_back_across_a_chunk_boundary(tmp_path):
    files = [_jpeg(tmp_path / f"{i}.jpg", 32, 32, i) for i in range(30)]
    ds = sw.empty(str(tmp_path / "ds"), chunk_target_bytes=8_000)  # a few files per chunk
    ds.create_tensor("images", htype="image", sample_compression="jpeg")
    ds.create_tensor("x", dtype="float32")
    rng = np.random.default_rng(0)
    arrays = [rng.random((16, 16), dtype=np.float32) for _ in range(30)]
    with ds:
        ds.images.extend([sw.read(path) for path in files[:10]])
        ds.x.extend(arrays[:10])
        with pytest.raises(SampleError):  # the last one is missing: no row of it stays
            ds.images.extend([sw.read(path) for path in files[10:20]] + [str(tmp_path / "no")])
        with pytest.raises(SampleError):  # the last one has another ndim
            ds.x.extend(arrays[10:20] + [np.zeros(3, np.float32)])
        ds.images.extend([sw.read(path) for path in files[20:]])
        ds.x.extend(arrays[20:])
    ds = sw.load(str(tmp_path / "ds"))
    kept = files[:10] + files[20:]
    assert [ds.images[i].tobytes() for i in range(20)] == [open(p, "rb").read() for p in kept]
    np.testing.assert_array_equal(ds.x.numpy(), np.stack(arrays[:10] + arrays[20:]))


def test_a_file_that_grows_while_it_is_read_is_stored_whole(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 20, 20, 1)
    data = open(path, "rb").read()
    sample = sw.read(path)
    arena = Arena(1_000_000)
    assert bytes(sample.read_into(arena)) == data
    with open(path, "ab") as f:  # bytes after the JPEG's end marker: still one file
        f.write(b"tail")
    got = sw.read(path).read_into(arena)
    assert bytes(got) == data + b"tail"
    os.unlink(path)
    with pytest.raises(SampleError, match="a.jpg"):
        sw.read(path).read_into(arena)
