"""Seed 003, "The dask array container": the mean of every frame's first ten rows of a
1000-frame 1024x1024 video, without holding the video in memory.

    .venv/bin/python examples/seed003_mean_larger_than_memory.py            # 200 frames
    .venv/bin/python examples/seed003_mean_larger_than_memory.py --frames 1000   # the seed

The seed computes on `da.random.randint(...)`, regenerated on every compute. Here the video
is written once into a dataset, by engine workers in parallel (`sw.from_dask`), and then
read back through `ds.frames.dask()`: chunks are read as dask's threads need them, so the
memory used stays near a few chunks whatever the video's size.
"""

from __future__ import annotations

import argparse
import time

import dask.array as da
import numpy as np

import slicewise as sw


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--path", default="demo-data/seed003/video_ds")
    args = parser.parse_args()

    # the seed's array: 1 byte per pixel here (the seed's int64 would be 8 GB at 1000 frames)
    x = da.random.randint(0, 255, size=(args.frames, 1024, 1024), chunks=(16, 1024, 1024),
                          dtype=np.uint8)
    start = time.perf_counter()
    ds = sw.from_dask(x, args.path, "frames", overwrite=True)
    print(f"wrote {x.nbytes / 2**20:.0f} MiB in {time.perf_counter() - start:.1f} s "
          f"with {sw.cpu_count()} workers: {ds.frames}")

    frames = ds.frames.dask()  # lazy: one block per stored chunk, nothing read yet
    print(frames)
    start = time.perf_counter()
    y = frames[:, :10].mean().compute()
    print(f"frames[:, :10].mean() = {float(y):.3f} in {time.perf_counter() - start:.2f} s")
    per_frame = frames.mean(axis=(1, 2)).compute()
    print(f"per-frame means: {per_frame[:3].round(2)} ... ({len(per_frame)} frames)")
    print(f"one frame: {frames[7].compute().shape}")


if __name__ == "__main__":
    main()
