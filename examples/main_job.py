"""The main job: a folder of real photos into a dataset, in parallel, then read back.

    python3 dev.py run            (or: .venv/bin/python examples/main_job.py [--files N])

1. Builds ./demo-data/photos/<class>/*.jpg: random crops of the sample photos that ship
   inside the scikit-image wheel (no network), one class per photo.
2. Ingests the tree in parallel with `sw.ingest_folder` (the same as
   `slicewise ingest demo-data/photos demo-data/photos_ds`): a progress bar, the report.
3. Reads it back: the summary, a few decoded samples, and a check that every stored JPEG
   is byte for byte the file it came from.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

import slicewise as sw

PHOTOS = {  # class name -> file inside skimage/data
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
}


def sample_photo_dir() -> Path:
    import skimage  # the wheel ships these photos; nothing is downloaded

    return Path(skimage.__file__).parent / "data"


def build_photo_folder(root: Path, files_per_class: int, seed: int = 0) -> int:
    """Random crops (then a resize to a camera-like size) saved as JPEG files."""
    rng = random.Random(seed)
    data_dir = sample_photo_dir()
    count = 0
    for class_name, file_name in PHOTOS.items():
        with Image.open(data_dir / file_name) as opened:
            photo = opened.convert("RGB")
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        width, height = photo.size
        for index in range(files_per_class):
            side = rng.randint(min(width, height) // 3, min(width, height))
            left = rng.randint(0, width - side)
            top = rng.randint(0, height - side)
            crop = photo.crop((left, top, left + side, top + side))
            out_side = rng.choice((224, 256, 320))
            crop = crop.resize((out_side, out_side), Image.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(folder / f"{class_name}_{index:04d}.jpg", quality=rng.choice((85, 90)))
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600, help="photos to make (default 600)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default="demo-data")
    args = parser.parse_args(argv)

    root = Path(args.out)
    photos, dataset_path = root / "photos", root / "photos_ds"
    for stale in (photos, dataset_path):
        shutil.rmtree(stale, ignore_errors=True)

    started = time.perf_counter()
    made = build_photo_folder(photos, max(1, args.files // len(PHOTOS)))
    print(f"[1/3] made {made} JPEG photos under {photos}/ ({len(PHOTOS)} classes) "
          f"in {time.perf_counter() - started:.1f} s")

    print(f"[2/3] ingesting {photos}/ into {dataset_path} ...")
    report = sw.ingest_folder(photos, str(dataset_path), workers=args.workers)
    print(report.summary())

    print("[3/3] reading it back")
    ds = sw.load(str(dataset_path), read_only=True)
    summary = ds.summary()
    if summary is not None:
        print(summary)
    class_names = list(ds.labels.info.class_names) if hasattr(ds.labels.info, "class_names") \
        else list(ds.labels.info["class_names"])
    rng = random.Random(1)
    for row in sorted(rng.sample(range(len(ds)), k=min(5, len(ds)))):
        image = ds.images[row].numpy()
        label = int(ds.labels[row].numpy().reshape(-1)[0])
        print(f"  row {row}: image {image.shape} {image.dtype}, label {label} "
              f"({class_names[label]})")

    from slicewise.transform.ingest import list_image_folder

    _, files = list_image_folder(photos)
    if len(files) != len(ds):
        print(f"FAILED: {len(files)} files but {len(ds)} rows", file=sys.stderr)
        return 1
    mismatched = [
        path for row, (path, _) in enumerate(files)
        if ds.images[row].tobytes() != Path(path).read_bytes()
    ]
    if mismatched:
        print(f"FAILED: {len(mismatched)} stored images differ from their files, first "
              f"{mismatched[0]}", file=sys.stderr)
        return 1
    labels_ok = all(
        class_names[int(label)] == class_name
        for label, (_, class_name) in zip(ds.labels.numpy().reshape(-1), files, strict=True)
    )
    if not labels_ok:
        print("FAILED: labels do not match the folders", file=sys.stderr)
        return 1
    print(f"OK: {len(ds)} rows in input order, labels match their folders, every JPEG "
          f"stored byte for byte ({time.perf_counter() - started:.1f} s in all)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
