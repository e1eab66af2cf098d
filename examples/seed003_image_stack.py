"""Seed 003, "Delayed loading of images with Dask": a TIFF movie (the seed: 1,500 frames of
2048x2048) loaded lazily and in parallel into a tensor, then computed on with dask.

    .venv/bin/python examples/seed003_image_stack.py                 # 150 frames of 512x512
    .venv/bin/python examples/seed003_image_stack.py --frames 1500 --size 2048   # the seed

The seed stacks `delayed(imread)` per file, so every computation decodes every TIFF again.
`sw.from_images` decodes each file once, in worker processes, into a chunked tensor; the
parent only reads the first file's header.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from PIL import Image

import slicewise as sw


def make_movie(folder: str, frames: int, size: int) -> None:
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (size, size), dtype=np.uint8)
    for i in range(frames):  # a drifting, slowly brightening field of view
        frame = np.roll(base, i, axis=1) + np.uint8(i * 50 // frames)
        Image.fromarray(frame).save(os.path.join(folder, f"image{i:04d}.tif"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    folder = f"demo-data/seed003/images_{args.size}"
    make_movie(folder, args.frames, args.size)

    start = time.perf_counter()
    ds = sw.from_images(f"{folder}/image*.tif", "demo-data/seed003/movie_ds", "frames",
                        overwrite=True, progress=True)
    print(f"decoded {args.frames} TIFFs in {time.perf_counter() - start:.1f} s: {ds.frames}")

    stack = ds.frames.dask().rechunk((10, 512, 512))  # the seed's rechunk
    print(stack)
    print("mean of the movie:", float(stack.mean().compute()))
    print("brightest frame:", int(stack.mean(axis=(1, 2)).argmax().compute()))


if __name__ == "__main__":
    main()
