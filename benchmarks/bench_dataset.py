"""Dataset format benchmarks: slicewise side by side with the floor, files in a folder.

    run(quick) -> rows {"benchmark", "tool", "value", "unit", "ratio", "target", "met", "note"}

Workload: N JPEG files of ~86 KB (photo crops from the scikit-image wheel, 640x480),
made once under ./bench-data/dataset/jpegs/ and reused.

  write  2 writer processes store the files durably (fsync), passthrough: slicewise
         workers use DatasetWriter.from_spec and the parent commits their receipts; the
         floor copies each file into a folder (fsync) and writes an index atomically; "dd"
         writes the same number of bytes like `dd bs=8M conv=fsync` (one file per
         process, one flush at the end), the usual quick measure of a disk. It is a
         reference, not a ceiling: flushing only at the end, it never overlaps writing
         with flushing, which slicewise's writers do. All three interleaved, per
         repetition, so they see the same machine load.
  read   one random sample's stored bytes, warm: `ds.images[i].tobytes()` vs reading the
         file: median per read.
  decode `ds.images[i].numpy()` vs `np.asarray(PIL.Image.open(path))`: median per image,
         interleaved so both see the same machine load.
  scan   every sample's stored bytes in order, warm: GB/s.
  open   a dataset of 1M samples: `sw.load` time, and index memory per sample after
         every chunk header has been read (tracemalloc).
  check  the cost of checking stored bytes (chunk format version 2) against version-1
         files and a raw pread of the same bytes: random read, scan, seed-000 ingest
         (`python benchmarks/bench_dataset.py --checking` runs only these rows).

`ratio` is slicewise relative to the floor, above 1 better for slicewise.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

WORKERS = 2
DATA_ROOT = Path(os.environ.get("SLICEWISE_BENCH_DATA", "bench-data")) / "dataset"
SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")


def make_jpegs(count: int) -> list[str]:
    """`count` JPEGs of about 86 KB (640x480 crops, quality 90), made once and reused."""
    import skimage

    folder = DATA_ROOT / "jpegs"
    folder.mkdir(parents=True, exist_ok=True)
    data_dir = Path(skimage.__file__).parent / "data"
    photos = []
    rng = random.Random(0)
    files = []
    for index in range(count):
        path = folder / f"{index:06d}.jpg"
        if not path.exists():
            if not photos:
                for name in SOURCES:
                    if (data_dir / name).exists():
                        with Image.open(data_dir / name) as opened:
                            photos.append(opened.convert("RGB"))
            photo = photos[index % len(photos)]
            width, height = photo.size
            scale = rng.uniform(0.6, 1.0)
            w, h = int(width * scale), int(height * scale)
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            crop = photo.crop((left, top, left + w, top + h)).resize((640, 480))
            crop.save(path, quality=90)
        files.append(str(path))
    return files


# -- write: 2 processes ----------------------------------------------------------------------


def _sw_write_part(spec: dict, files: list[str], writer_id: str) -> dict:
    from slicewise.format import DatasetWriter
    from slicewise.format.htypes import FileSample

    writer = DatasetWriter.from_spec(spec, writer_id)
    for path in files:
        writer.append("images", FileSample(path))
    return writer.finish()


def _floor_write_part(files: list[str], dest: str) -> list[str]:
    names = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        name = os.path.basename(path)
        fd = os.open(os.path.join(dest, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        names.append(name)
    return names


def _raw_disk_write_part(nbytes: int, dest: str, part: int) -> int:
    """The disk as `dd bs=8M conv=fsync` measures it: one file per process written in 8 MB
    blocks and flushed once at the end; no per-sample work, no per-file flush."""
    block = os.urandom(8 * 1024 * 1024)
    written = 0
    fd = os.open(os.path.join(dest, f"part{part}"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while written < nbytes:
            written += os.write(fd, block[: min(len(block), nbytes - written)])
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _noop() -> int:
    import slicewise.format.writer  # noqa: F401  (import cost outside the timing)

    return os.getpid()


def bench_write(files: list[str], workdir: str, pool, reps: int) -> tuple[float, float, float, str]:
    """MB/s of slicewise, the floor, and dd, interleaved per repetition so all three see
    the same machine load; medians."""
    import slicewise as sw

    total = sum(os.path.getsize(f) for f in files)
    halves = [files[i::WORKERS] for i in range(WORKERS)]
    sw_times, floor_times, raw_times = [], [], []
    ds_path = ""
    for path in files:  # both tools then read the inputs from the page cache
        with open(path, "rb") as f:
            f.read()
    for rep in range(reps):
        ds_path = os.path.join(workdir, f"ds{rep}")
        started = time.perf_counter()
        ds = sw.empty(ds_path)
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        spec = ds.writer_spec()
        futures = [
            pool.submit(_sw_write_part, spec, part, f"w{i}") for i, part in enumerate(halves)
        ]
        ds.add_receipts([f.result() for f in futures])
        ds.commit("ingest")
        sw_times.append(time.perf_counter() - started)

        dest = os.path.join(workdir, f"floor{rep}")
        started = time.perf_counter()
        os.makedirs(dest)
        futures = [pool.submit(_floor_write_part, part, dest) for part in halves]
        names = [n for f in futures for n in f.result()]
        _fsync_dir(dest)
        index_tmp = os.path.join(dest, ".index.tmp")
        with open(index_tmp, "w") as f:
            f.write("\n".join(names))
            f.flush()
            os.fsync(f.fileno())
        os.replace(index_tmp, os.path.join(dest, "index.txt"))
        _fsync_dir(dest)
        floor_times.append(time.perf_counter() - started)

        dest = os.path.join(workdir, f"raw{rep}")
        started = time.perf_counter()
        os.makedirs(dest)
        share = -(-total // WORKERS)
        futures = [pool.submit(_raw_disk_write_part, share, dest, i) for i in range(WORKERS)]
        for f in futures:
            f.result()
        _fsync_dir(dest)
        raw_times.append(time.perf_counter() - started)
        shutil.rmtree(dest, ignore_errors=True)
    mb = total / 1e6
    return (
        mb / statistics.median(sw_times),
        mb / statistics.median(floor_times),
        mb / statistics.median(raw_times),
        ds_path,
    )


# -- reads -----------------------------------------------------------------------------------


def _median_call_us(fn, indices) -> float:
    times = []
    clock = time.perf_counter_ns
    for i in indices:
        t0 = clock()
        fn(i)
        times.append(clock() - t0)
    return statistics.median(times) / 1000


def bench_reads(ds_path: str, files: list[str], quick: bool) -> list[dict]:
    import slicewise as sw

    ds = sw.load(ds_path)
    images = ds.images
    n = len(images)
    stored = [os.path.join(os.path.dirname(ds_path), "floor0", os.path.basename(f)) for f in files]
    order = {os.path.basename(f): i for i, f in enumerate(files)}
    # rows were written by two workers: map row -> the same image's floor file
    row_file = [images[r].tobytes() for r in range(n)]
    by_bytes = {open(p, "rb").read(): p for p in stored}
    row_path = [by_bytes[b] for b in row_file]
    del row_file, by_bytes, order
    rng = random.Random(1)
    picks = [rng.randrange(n) for _ in range(20000 if not quick else 5000)]

    def sw_read(i):
        return images[i].tobytes()

    def floor_read(i):
        with open(row_path[i], "rb") as f:
            return f.read()

    for i in picks[:2000]:  # warm both
        sw_read(i)
        floor_read(i)
    sw_us, floor_us = [], []
    for _ in range(3):
        sw_us.append(_median_call_us(sw_read, picks))
        floor_us.append(_median_call_us(floor_read, picks))
    sw_read_us, floor_read_us = min(sw_us), min(floor_us)

    dec_picks = picks[: 150 if quick else 400]
    sw_dec, pil_dec = [], []
    for i in dec_picks:  # interleaved: both see the same load
        t0 = time.perf_counter_ns()
        images[i].numpy()
        sw_dec.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        np.asarray(Image.open(row_path[i]))
        pil_dec.append(time.perf_counter_ns() - t0)
    sw_dec_ms = statistics.median(sw_dec) / 1e6
    pil_dec_ms = statistics.median(pil_dec) / 1e6

    total = sum(len(images[i].tobytes()) for i in range(n))
    sw_scan, floor_scan = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            images[i].tobytes()
        sw_scan.append(total / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        for i in range(n):
            floor_read(i)
        floor_scan.append(total / (time.perf_counter() - t0) / 1e9)
    sw_gbs, floor_gbs = max(sw_scan), max(floor_scan)

    return [
        row(
            "random read, stored bytes (warm, median)",
            "slicewise",
            sw_read_us,
            "us",
            floor_read_us / sw_read_us,
            "<= 30 us",
            sw_read_us <= 30,
        ),
        row("random read, stored bytes (warm, median)", "files in a folder", floor_read_us, "us"),
        row(
            "numpy() of one JPEG (median)",
            "slicewise",
            sw_dec_ms,
            "ms",
            pil_dec_ms / sw_dec_ms,
            "<= 1.1x Pillow",
            sw_dec_ms <= 1.1 * pil_dec_ms,
        ),
        row("numpy() of one JPEG (median)", "Pillow from the file", pil_dec_ms, "ms"),
        row(
            "sequential scan, stored bytes (warm)",
            "slicewise",
            sw_gbs,
            "GB/s",
            sw_gbs / floor_gbs,
            ">= 1 GB/s",
            sw_gbs >= 1.0,
        ),
        row("sequential scan, stored bytes (warm)", "files in a folder", floor_gbs, "GB/s"),
    ]


# -- open: 1M samples ------------------------------------------------------------------------


def bench_open(workdir: str, samples: int) -> list[dict]:
    import slicewise as sw
    from slicewise.format import DatasetWriter

    path = os.path.join(workdir, "million")
    ds = sw.empty(path, chunk_target_bytes=64 * 1024)
    ds.create_tensor("embedding", dtype="float16")
    ds.create_tensor("labels", htype="class_label", class_names=["a", "b", "c"])
    writer = DatasetWriter.from_spec(ds.writer_spec(), "bulk")
    vectors = np.random.default_rng(0).standard_normal((1000, 16)).astype(np.float16)
    labels = np.arange(samples, dtype=np.uint32) % 3
    for i in range(samples):
        writer.append_row({"embedding": vectors[i % 1000], "labels": labels[i : i + 1]})
    ds.add_receipts([writer.finish()])
    ds.commit("one million rows")
    chunks = len(ds.embedding.chunk_row_ranges()) + len(ds.labels.chunk_row_ranges())

    from slicewise.format import manifest

    open_times = []
    for _ in range(7):
        manifest._decoded.clear()  # a first open in this process: the manifest is parsed
        t0 = time.perf_counter()
        opened = sw.load(path)
        len(opened)
        open_times.append(time.perf_counter() - t0)
    open_ms = statistics.median(open_times) * 1e3

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    opened = sw.load(path)
    for name in ("embedding", "labels"):
        tensor = opened[name]
        for start, _stop in tensor.chunk_row_ranges():
            tensor[start].tobytes()  # loads and caches the chunk header
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_sample = (after - before) / samples
    note = f"{samples:,} rows x 2 tensors in {chunks} chunks; headers of all chunks cached"
    return [
        row(
            "open a dataset of 1M samples (median)",
            "slicewise",
            open_ms,
            "ms",
            None,
            "<= 100 ms",
            open_ms <= 100,
            note,
        ),
        row(
            "index memory per sample (all headers read)",
            "slicewise",
            per_sample,
            "bytes",
            None,
            "<= 50 B",
            per_sample <= 50,
            note,
        ),
    ]


# -- cost of checking: version-2 chunks (every read checked) vs version-1 ---------------------


def _ingest(root: str, files: list[str], labels: list[int]) -> float:
    """Seed 000 in one process: sw.read JPEGs (passthrough) + class labels, the writer path
    every eval worker runs, durable, one commit. MB/s of JPEG bytes."""
    import slicewise as sw

    ds = sw.empty(root)
    t0 = time.perf_counter()
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=["a", "b", "c"])
        for f, label in zip(files, labels, strict=True):
            ds.append({"images": sw.read(f), "labels": label})
    seconds = time.perf_counter() - t0
    return sum(os.path.getsize(f) for f in files) / seconds / 1e6


def bench_checking(quick: bool) -> list[dict]:
    """The cost of checking every stored byte read (chunk format version 2: a CRC-32 per
    checksum block, checked on every read) against version-1 files (one CRC per chunk,
    checked once per process; later reads unchecked) and a raw pread of the same bytes."""
    import slicewise as sw
    from slicewise.format import chunk as chunk_module

    count = 300 if quick else 2000
    files = make_jpegs(count)
    labels = [i % 3 for i in range(count)]
    workdir = tempfile.mkdtemp(prefix="sw-bench-check-", dir=str(DATA_ROOT))
    paths = {2: os.path.join(workdir, "v2"), 1: os.path.join(workdir, "v1")}
    ingest = {1: [], 2: []}
    try:
        for rep in range(2 if quick else 6):  # interleaved, alternating who goes first
            for version in ((2, 1) if rep % 2 == 0 else (1, 2)):
                chunk_module.WRITE_VERSION = version
                shutil.rmtree(paths[version], ignore_errors=True)
                ingest[version].append(_ingest(paths[version], files, labels))
        chunk_module.WRITE_VERSION = chunk_module.VERSION
        handles = {v: sw.load(p) for v, p in paths.items()}
        for v, ds in handles.items():
            head = ds._reader.header(ds.images._state.full_key(0))
            assert head.version == v, (v, head.version)
        # where each row's bytes lie in the v2 chunk files, for the raw pread
        ds2 = handles[2]
        state = ds2.images._state
        cum = state.cum_rows
        fds, where = {}, []
        for r in range(count):
            k = int(np.searchsorted(cum, r, side="right")) - 1
            key = state.full_key(k)
            head = ds2._reader.header(key)
            i = r - int(cum[k])
            if key not in fds:
                fds[key] = os.open(ds2.storage.local_path(key), os.O_RDONLY)
            start = head.payload_start + int(head.offsets[i])
            where.append((fds[key], int(head.offsets[i + 1] - head.offsets[i]), start))
        rng = random.Random(2)
        picks = [rng.randrange(count) for _ in range(5000 if quick else 20000)]

        def raw(i):
            fd, nbytes, start = where[i]
            return os.pread(fd, nbytes, start)

        reads = {"v2": handles[2].images, "v1": handles[1].images}
        for i in picks[:3000]:  # warm everything
            raw(i)
            for images in reads.values():
                images[i].tobytes()
        for i in range(count):
            assert reads["v2"][i].tobytes() == raw(i)
        medians = {"v2": [], "v1": [], "raw": []}
        for _ in range(5):
            for name, images in reads.items():
                medians[name].append(_median_call_us(lambda i, t=images: t[i].tobytes(), picks))
            medians["raw"].append(_median_call_us(raw, picks))
        us = {name: min(values) for name, values in medians.items()}
        total = sum(where[i][1] for i in range(count))
        scans = {"v2": [], "v1": [], "raw": []}
        for _ in range(3):
            for name, images in reads.items():
                t0 = time.perf_counter()
                for i in range(count):
                    images[i].tobytes()
                scans[name].append(total / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            for i in range(count):
                raw(i)
            scans["raw"].append(total / (time.perf_counter() - t0) / 1e9)
        gbs = {name: max(values) for name, values in scans.items()}
        for fd in fds.values():
            os.close(fd)
    finally:
        chunk_module.WRITE_VERSION = chunk_module.VERSION
        shutil.rmtree(workdir, ignore_errors=True)
    mb = {v: statistics.median(values) for v, values in ingest.items()}
    note = f"{count} JPEGs of ~86 KB; checksum: CRC-32 ({chunk_module.crc32.__module__})"
    bench = "cost of checking: "
    return [
        row(bench + "random read of one stored sample (warm, median)", "slicewise, v2 (checked)",
            us["v2"], "us", us["raw"] / us["v2"], "<= 1.5x raw pread or <= 30 us",
            us["v2"] <= 1.5 * us["raw"] or us["v2"] <= 30, note),
        row(bench + "random read of one stored sample (warm, median)",
            "slicewise, v1 files (unchecked after first read)", us["v1"], "us"),
        row(bench + "random read of one stored sample (warm, median)",
            "os.pread of the same bytes", us["raw"], "us"),
        row(bench + "sequential scan, stored bytes (warm)", "slicewise, v2 (checked)",
            gbs["v2"], "GB/s", gbs["v2"] / gbs["raw"], ">= 1 GB/s", gbs["v2"] >= 1.0),
        row(bench + "sequential scan, stored bytes (warm)", "slicewise, v1 files",
            gbs["v1"], "GB/s"),
        row(bench + "sequential scan, stored bytes (warm)", "os.pread of the same bytes",
            gbs["raw"], "GB/s"),
        row(bench + "seed-000 ingest, one process, durable", "slicewise, v2", mb[2], "MB/s",
            mb[2] / mb[1], "within 5% of v1", mb[2] >= 0.95 * mb[1],
            "median of interleaved runs; ratio v2/v1"),
        row(bench + "seed-000 ingest, one process, durable", "slicewise, v1", mb[1], "MB/s"),
    ]


def row(benchmark, tool, value, unit, ratio=None, target=None, met=None, note=None) -> dict:
    out = {"benchmark": benchmark, "tool": tool, "value": float(value), "unit": unit}
    if ratio is not None:
        out["ratio"] = round(float(ratio), 3)
    if target is not None:
        out["target"] = target
        out["met"] = "yes" if met else "NO"
    if note:
        out["note"] = note
    return out


def run(quick: bool) -> list[dict]:
    count = 500 if quick else 5000
    files = make_jpegs(count)
    workdir = tempfile.mkdtemp(prefix="sw-bench-dataset-", dir=str(DATA_ROOT))
    rows: list[dict] = []
    try:
        with ProcessPoolExecutor(WORKERS, mp_context=get_context("spawn")) as pool:
            for f in [pool.submit(_noop) for _ in range(WORKERS * 2)]:
                f.result()
            sw_mbs, floor_mbs, raw_mbs, ds_path = bench_write(
                files, workdir, pool, 1 if quick else 3
            )
        mean_kb = sum(os.path.getsize(f) for f in files) / len(files) / 1e3
        note = f"{count} JPEGs of {mean_kb:.0f} KB, {WORKERS} writer processes, fsync, + commit"
        rows.append(
            row(
                "durable passthrough write + commit",
                "slicewise",
                sw_mbs,
                "MB/s",
                sw_mbs / floor_mbs,
                ">= 1000 MB/s",
                sw_mbs >= 1000,
                note,
            )
        )
        rows.append(
            row(
                "durable passthrough write + commit",
                "files in a folder + index",
                floor_mbs,
                "MB/s",
                None,
                None,
                None,
                note,
            )
        )
        rows.append(
            row(
                "durable passthrough write + commit",
                "dd bs=8M conv=fsync, 1 file per process (reference)",
                raw_mbs,
                "MB/s",
                None,
                None,
                None,
                "same bytes and processes; flushes once at the end, so not a ceiling",
            )
        )
        rows += bench_reads(ds_path, files, quick)
        rows += bench_open(workdir, 1_000_000)
        rows += bench_checking(quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


if __name__ == "__main__":
    import sys

    # --checking: only the cost-of-checking rows (what BENCHMARKS.md "Cost of checking" ran)
    bench = bench_checking if "--checking" in sys.argv else run
    for r in bench(quick="--quick" in sys.argv):
        print(r)
