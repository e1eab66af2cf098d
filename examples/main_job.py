"""The main job: a folder of real photos into a dataset, in parallel, then read back.

    python3 dev.py run            (or: .venv/bin/python examples/main_job.py [--files N])

1. Builds ./demo-data/photos/<class>/*: random crops of the sample photos that ship
   inside the scikit-image wheel (no network), one class per photo, saved as an ordinary
   downloaded folder looks: mostly JPEGs (some progressive, grayscale or CMYK, some
   `.JPEG`), PNGs (RGB, RGBA, palette, 16-bit gray), WebP, BMP, GIF and TIFF files, and
   one truncated JPEG.
2. Ingests the tree in parallel with `sw.ingest_folder(..., ignore_errors=True)` (the same
   as `slicewise ingest demo-data/photos demo-data/photos_ds --ignore-errors`): a
   progress bar, the report, which names the truncated file and its input index.
3. Reads it back: the summary, a few decoded samples, and checks that the rows are the
   files in input order with their labels, every stored JPEG byte for byte the file it
   came from, and every other image Pillow's convert("RGB") of it, within JPEG's error.
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


def save_as_kind(crop: Image.Image, folder: Path, stem: str, index: int) -> None:
    """Most files JPEG, one in ten of another kind, as a folder from the web looks."""
    kind = index % 20
    if kind < 12:
        crop.save(folder / f"{stem}.jpg", quality=90)
    elif kind == 12:
        crop.save(folder / f"{stem}.JPEG", quality=90, progressive=True)
    elif kind == 13:
        crop.convert("L").save(folder / f"{stem}.jpg", quality=90)
    elif kind == 14:
        crop.convert("CMYK").save(folder / f"{stem}.jpg", quality=90)
    elif kind == 15:
        rgba = crop.copy()
        rgba.putalpha(200)
        rgba.save(folder / f"{stem}.png")
    elif kind == 16:
        crop.quantize(128).save(folder / f"{stem}.png")
    elif kind == 17:
        crop.save(folder / f"{stem}.webp", quality=90)
    elif kind == 18:
        crop.save(folder / f"{stem}.{('bmp', 'gif', 'tif')[index // 20 % 3]}")
    else:
        import numpy as np

        wide = np.asarray(crop.convert("L")).astype(np.uint16) * 257
        Image.fromarray(wide).save(folder / f"{stem}.png")  # 16-bit gray


def is_jpeg(path: str) -> bool:
    return Path(path).suffix.lower() in (".jpg", ".jpeg")


def build_photo_folder(root: Path, files_per_class: int, seed: int = 0) -> int:
    """Random crops (then a resize to a camera-like size) saved as images of every
    common kind, and one truncated JPEG."""
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
            save_as_kind(crop, folder, f"{class_name}_{index:04d}", index)
            count += 1
    whole = next(iter(sorted((root / next(iter(PHOTOS))).glob("*.jpg"))))
    data = whole.read_bytes()
    (whole.parent / "truncated_download.jpg").write_bytes(data[: len(data) // 2])
    return count + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=600, help="photos to make (default 600)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default="demo-data")
    parser.add_argument("--pictures", default=None, metavar="DIR",
                        help="where to write grid.png and timeline.png/.html (default: "
                        "--out; the README's come from --pictures docs/images)")
    args = parser.parse_args(argv)

    root = Path(args.out)
    photos, dataset_path = root / "photos", root / "photos_ds"
    for stale in (photos, dataset_path):
        shutil.rmtree(stale, ignore_errors=True)

    started = time.perf_counter()
    made = build_photo_folder(photos, max(1, args.files // len(PHOTOS)))
    print(f"[1/3] made {made} photos (JPEG, PNG, WebP, BMP, GIF, TIFF; one truncated) "
          f"under {photos}/ ({len(PHOTOS)} classes) in {time.perf_counter() - started:.1f} s")

    print(f"[2/3] ingesting {photos}/ into {dataset_path} ...")
    report = sw.ingest_folder(photos, str(dataset_path), workers=args.workers,
                              ignore_errors=True)
    print(report.summary())
    pictures = Path(args.pictures or root)
    pictures.mkdir(parents=True, exist_ok=True)
    for name in ("timeline.png", "timeline.html"):  # batches per worker, throughput, gaps
        report.save_timeline(pictures / name)

    print("[3/3] reading it back")
    ds = sw.load(str(dataset_path), read_only=True)
    summary = ds.summary()
    if summary is not None:
        print(summary)
    ds.show(random=12, seed=0, thumb=112, out=pictures / "grid.png")  # thumbnails + labels
    print(f"      pictures: {pictures}/grid.png, timeline.png, timeline.html")
    class_names = list(ds.labels.info.class_names) if hasattr(ds.labels.info, "class_names") \
        else list(ds.labels.info["class_names"])
    rng = random.Random(1)
    for row in sorted(rng.sample(range(len(ds)), k=min(5, len(ds)))):
        image = ds.images[row].numpy()
        label = int(ds.labels[row].numpy().reshape(-1)[0])
        print(f"  row {row}: image {image.shape} {image.dtype}, label {label} "
              f"({class_names[label]})")

    from slicewise.transform.ingest import list_image_folder

    _, all_files = list_image_folder(photos)
    skipped = [Path(all_files[failure.index][0]).name for failure in report.skipped]
    if skipped != ["truncated_download.jpg"]:
        print(f"FAILED: expected only the truncated file to be skipped, got {skipped}",
              file=sys.stderr)
        return 1
    files = [item for item in all_files if Path(item[0]).name != "truncated_download.jpg"]
    if len(files) != len(ds):
        print(f"FAILED: {len(files)} readable files but {len(ds)} rows", file=sys.stderr)
        return 1
    mismatched = [
        path for row, (path, _) in enumerate(files)
        if not same_image(ds.images[row], path)
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
    jpegs = sum(is_jpeg(path) for path, _ in files)
    print(f"OK: {len(ds)} rows in input order, labels match their folders, {jpegs} JPEGs "
          f"stored byte for byte, {len(ds) - jpegs} other images as their RGB pixels, the "
          f"truncated file skipped and named ({time.perf_counter() - started:.1f} s in all)")
    return 0


def same_image(stored, path: str) -> bool:
    """A JPEG is its file's bytes; any other image Pillow's convert("RGB") of the file,
    within JPEG's usual error (it was encoded as JPEG once, at quality 90): a PSNR of 30 dB
    or more."""
    if is_jpeg(path):
        return stored.tobytes() == Path(path).read_bytes()
    import numpy as np

    with Image.open(path) as opened:
        expected = np.asarray(opened.convert("RGB")).astype(np.int16)
    pixels = stored.numpy()
    if pixels.shape != expected.shape:
        return False
    mse = float(np.mean((pixels - expected) ** 2.0))
    return mse == 0 or 10 * np.log10(255**2 / mse) >= 30.0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
