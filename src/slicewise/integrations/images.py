"""Image stacks into a tensor: `sw.from_images("images/image*.tif", "./movie_ds")`.

Seed 003 builds a 1,500-frame 2048x2048 movie with `delayed(imread)` per file, then
`da.from_delayed` and `da.stack`; nothing is stored, and every computation decodes the TIFFs
again. Here the stack is decoded once, in parallel, into a chunked tensor:

    glob / list of files ──natural sort──► parent opens the FIRST file's header only
        │                                  (shape, dtype, frames) to create the tensor
        │ blocks of consecutive files (~32 MiB of pixels each)
        ▼
    workers: decode each file (Pillow, every frame of a multi-page TIFF; or your reader),
    check each frame's shape against the first, append it with their own DatasetWriter
        │ receipts, one per block, in file order
        ▼
    parent: one commit ──► ds.images.dask() computes on the stack with bounded memory
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from slicewise.integrations._common import (
    DEFAULT_BLOCK_BYTES,
    commit_receipts,
    import_blocks,
    natural_key,
    new_dataset,
    row_blocks,
    row_nbytes,
)

__all__ = ["ImageFiles", "from_images"]

# Pillow modes whose pixels map onto one numpy dtype without conversion
_SINGLE_BAND = {"1": np.bool_, "L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16,
                "I;16L": np.uint16, "I": np.int32, "F": np.float32}
_MULTI_BAND = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _frames(path: str) -> Iterator[np.ndarray]:
    """Every frame of an image file as a numpy array (multi-page TIFFs give several)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        for frame in ImageSequence.Iterator(image):
            if frame.mode == "P":
                frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
            elif frame.mode not in _SINGLE_BAND and frame.mode not in _MULTI_BAND:
                frame = frame.convert("RGB")
            yield np.asarray(frame)


class ImageFiles:
    """A block of image files that a worker decodes: `read(start, stop)` yields the frames of
    files [start, stop), each checked against the stack's frame shape."""

    def __init__(self, files: Sequence[str], first_index: int, frame_shape: tuple | None,
                 dtype: np.dtype, reader: Callable[[str], Any] | None) -> None:
        self.files = list(files)
        self.first_index = first_index
        self.frame_shape = frame_shape
        self.dtype = np.dtype(dtype)
        self.reader = reader

    def read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        for offset in range(start, stop):
            path = self.files[offset]
            where = f"image {self.first_index + offset} ({path})"
            try:
                frames = ([np.asarray(self.reader(path))] if self.reader is not None
                          else _frames(path))
                for frame in frames:
                    yield self._check(frame, where)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            except (OSError, SyntaxError) as exc:  # Pillow raises SyntaxError on bad headers
                raise OSError(f"{where}: cannot read the image: {exc}") from exc

    def _check(self, frame: np.ndarray, where: str) -> np.ndarray:
        if self.frame_shape is not None and frame.shape != self.frame_shape:
            raise ValueError(
                f"frame shape {frame.shape} differs from the stack's {self.frame_shape} "
                "(the first image's); pass allow_ragged=True to store frames of different "
                "shapes"
            )
        if frame.dtype != self.dtype:
            if not np.can_cast(frame.dtype, self.dtype, casting="same_kind"):
                raise ValueError(f"pixels are {frame.dtype}, the stack holds {self.dtype}")
            frame = frame.astype(self.dtype)
        return frame

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        last = self.first_index + len(self.files) - 1
        return f"images {self.first_index}-{last} ({os.path.basename(self.files[0])} ...)"


def list_images(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Paths from a glob pattern (naturally sorted: image2 before image10), a directory
    (its files, naturally sorted), or a list (kept in its order)."""
    if isinstance(files, (str, os.PathLike)):
        pattern = os.fspath(files)
        if os.path.isdir(pattern):
            paths = [os.path.join(pattern, name) for name in os.listdir(pattern)
                     if os.path.isfile(os.path.join(pattern, name)) and not name.startswith(".")]
        else:
            paths = glob.glob(pattern, recursive=True)
        paths = sorted(paths, key=natural_key)
        if not paths:
            raise FileNotFoundError(f"from_images: no files match {pattern!r}")
    else:
        paths = [os.fspath(path) for path in files]
        if not paths:
            raise ValueError("from_images: the list of files is empty")
    return [os.path.abspath(path) for path in paths]  # workers may run in another directory


def probe(path: str, reader: Callable[[str], Any] | None) -> tuple[tuple, np.dtype]:
    """Frame shape and dtype from the first file: Pillow reads only its header."""
    if reader is not None:
        first = np.asarray(reader(path))
        return first.shape, first.dtype
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
            transparent = "transparency" in image.info
    except OSError as exc:
        raise OSError(f"from_images: image 0 ({path}): cannot read the image: {exc}") from exc
    if mode in _SINGLE_BAND:
        return (height, width), np.dtype(_SINGLE_BAND[mode])
    bands = (4 if transparent else 3) if mode == "P" else _MULTI_BAND.get(mode, 3)  # as _frames
    return (height, width, bands), np.dtype(np.uint8)


def from_images(
    files: str | os.PathLike | Sequence[str | os.PathLike],
    path: Any,
    tensor: str = "images",
    *,
    reader: Callable[[str], Any] | None = None,
    htype: str | None = None,
    dtype: Any = None,
    allow_ragged: bool = False,
    overwrite: bool = False,
    chunk_target_bytes: int | None = None,
    pool: Any = None,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
    **tensor_options: Any,
) -> Any:
    """Decode a stack of images into tensor `tensor` of a new dataset at `path`, in
    parallel, one commit.

    With Pillow every frame of a multi-page TIFF becomes a row. Frames must share one
    shape unless `allow_ragged=True`.

    Args:
        files: a glob pattern ("images/image*.tif", naturally sorted), a directory, or a
            list of paths.
        path: where the new dataset goes (a directory or URL).
        tensor: the tensor's name.
        reader: a function path -> array (e.g. skimage.io.imread) instead of Pillow.
        htype: the tensor's htype (default: "image" for uint8 (H, W, C) frames, else
            "generic").
        dtype: the tensor's dtype (default: the first image's).
        allow_ragged: allow frames of different shapes.
        overwrite: replace a dataset already at `path`.
        chunk_target_bytes: the chunk files' target size.
        pool: an `sw.Pool` to run on (default: the shared warm pool).
        num_workers: its workers (0: decode in this process).
        block_bytes: about how many bytes each task decodes and writes.
        progress: show a progress bar.
        **tensor_options: more `create_tensor` arguments (e.g. chunk_compression="lz4").

    Returns:
        The new Dataset. If anything fails, nothing is published and the dataset at
        `path` is removed again.

    Raises:
        FileNotFoundError: no files match the pattern.
        ValueError: an empty list, a frame of another shape (without allow_ragged) or of a
            dtype that does not cast to the tensor's.
        OSError: an image that cannot be read.

    Example:
        >>> ds = sw.from_images("images/image*.tif", "./movie_ds", "frames")  # doctest: +SKIP
        >>> ds.frames.dask()[:, :10].mean().compute()         # doctest: +SKIP
    """
    paths = list_images(files)
    frame_shape, frame_dtype = probe(paths[0], reader)
    dtype = np.dtype(dtype) if dtype is not None else frame_dtype
    if htype is None:
        # an image tensor stores (H, W, C); a stack of one-band frames keeps (H, W) rows
        htype = "image" if dtype == np.uint8 and len(frame_shape) == 3 else "generic"

    frame_nbytes = row_nbytes(frame_shape, dtype)  # a frame is one row of the tensor
    file_blocks = row_blocks(len(paths), frame_nbytes, block_bytes=block_bytes)
    checked_shape = None if allow_ragged else tuple(frame_shape)
    with new_dataset(path, overwrite=overwrite, chunk_target_bytes=chunk_target_bytes) as ds:
        ds.create_tensor(tensor, htype=htype, dtype=dtype, **tensor_options)
        blocks = []
        for first, stop in file_blocks:
            source = ImageFiles(paths[first:stop], first, checked_shape, dtype, reader)
            blocks.append((tensor, source, 0, stop - first))
        receipts = import_blocks(ds, blocks, pool=pool, num_workers=num_workers,
                                 progress=progress)
        meta = {"integration": "images", "files": len(paths), "first": paths[0],
                "last": paths[-1], "tensor": tensor}
        commit_receipts(ds, receipts, f"from_images: {len(paths)} files into {tensor!r}", meta)
    return ds
