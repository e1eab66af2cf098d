"""`ingest_folder`: a class-per-subfolder tree of images into a dataset, in parallel.

    SRC/cat/001.jpg, SRC/dog/7.png ...
      └─ list_image_folder(SRC) -> class names (sorted subfolders), (path, class) in order
    ingest_folder(SRC, DATASET)
      dataset = sw.dataset(DATASET); tensors "images" (image.rgb, jpeg) and "labels"
      store_image(...).eval(files, dataset, checkpoint_interval=...)    transform/run.py
        each worker: sw.read(path): a JPEG is checked by its markers and kept byte for
        byte (converted to RGB when read), any other image (PNG, WebP, BMP, GIF, TIFF)
        is decoded, converted to RGB and encoded as JPEG once; a zero-byte, truncated,
        corrupt or non-image file is an error naming the file and its input index
        (skipped and listed with ignore_errors); or, with resize, decode + resize
      -> EvalReport; a re-run after a crash resumes from the last checkpoint, and a re-run
         after success finds the same files already ingested and writes nothing

`slicewise ingest SRC DATASET` (cli/) is this function.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy and the transform machinery are imported where they are used: `slicewise ingest`
# starts its worker pool first, so the workers' start-up runs while this process imports
# them (see ingest_folder).
if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from slicewise.transform.report import EvalReport

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
IMAGES, LABELS = "images", "labels"
CHECKPOINT_EVERY_AT_LEAST = 1000  # files, for the default checkpoint_interval
# what a worker imports to run store_image into a dataset: preloaded by the forkserver
INGEST_WORKER_MODULES = ("slicewise.transform.ingest", "slicewise.transform.worker",
                         "slicewise.format", "slicewise.dataset")


def list_image_folder(src: str | os.PathLike) -> tuple[list[str], list[tuple[str, str]]]:
    """The class names (the subfolders of `src`, sorted) and every image file under them
    as (path, class name), sorted by class then by path: the same order on every run and
    every machine (os.listdir's order is not)."""
    root = Path(src)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"ingest: {str(root)!r} is a file, not a folder; give the folder that holds "
            "one subfolder per class (SRC/cat/1.jpg, SRC/dog/2.jpg, ...)")
    if not root.is_dir():
        raise FileNotFoundError(f"ingest: source folder {str(root)!r} does not exist")
    class_names = sorted(entry.name for entry in root.iterdir()
                         if entry.is_dir() and not entry.name.startswith("."))
    if not class_names:
        raise ValueError(
            f"ingest: {str(root)!r} has no subfolders; expected one subfolder per class "
            "(SRC/cat/1.jpg, SRC/dog/2.jpg, ...)"
        )
    files: list[tuple[str, str]] = []
    for class_name in class_names:
        found = []
        for directory, subdirectories, names in os.walk(root / class_name):
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
            for name in names:
                if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                    found.append(os.path.join(directory, name))
        files.extend((path, class_name) for path in sorted(found))
    return class_names, files


def store_image(item: tuple[str, str], sample_out: Any, resize: tuple[int, int] | None,
                verify: bool = False) -> None:
    """One file -> one row. Without `resize`, the file goes in as `sw.read(path)`: a JPEG
    is stored byte for byte, other formats are converted to RGB and encoded as JPEG by the
    dataset (format/images.py); `verify` decodes every file fully first."""
    from slicewise.dataset import read

    path, class_name = item
    if resize is None:
        image: Any = read(path, verify=verify)
    else:
        image = resized_pixels(path, resize)
    sample_out.append({IMAGES: image, LABELS: class_name})


def resized_pixels(path: str, size: tuple[int, int]) -> np.ndarray:
    """The file's RGB pixels (Pillow's convert("RGB")) resized to `size` (W, H), after the
    same checks as an appended file: a bad file is a SampleError naming it."""
    import io

    import numpy as np
    from PIL import Image

    from slicewise.format.errors import SampleError
    from slicewise.format.htypes import FileSample
    from slicewise.format.images import ImageFileError, check_file, sniff_file_format

    data = FileSample(path).buffer()
    try:
        if not data:
            raise ImageFileError("is empty (0 bytes)")
        fmt = sniff_file_format(data[:12])
        if fmt is None:
            raise ImageFileError(f"is not an image: it starts with {data[:8]!r}")
        check_file(data, fmt, "image.rgb")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                return np.asarray(opened.convert("RGB").resize(size, Image.BILINEAR))
        except Exception as exc:  # Pillow: OSError, SyntaxError, ValueError, ...
            raise ImageFileError(f"does not decode: {exc}") from exc
    except ImageFileError as exc:
        raise SampleError(f"file {path!r} {exc}") from exc


def ingest_folder(
    src: str | os.PathLike,
    dataset: str | os.PathLike | Any,
    *,
    workers: int | None = None,
    resize: tuple[int, int] | str | None = None,
    scheduler: str = "processed",
    progressbar: bool = True,
    checkpoint_interval: int | None = None,
    ignore_errors: bool = False,
    verify: bool = False,
) -> EvalReport:
    """Ingest a class-per-subfolder image tree into `dataset` (a path/URL, or an open
    Dataset): tensors `images` (image.rgb, jpeg: every image reads back as (H, W, 3)
    uint8) and `labels` (class_label, the subfolder names).

    `workers` defaults to the usable CPUs; `resize` ("WxH" or (W, H)) decodes and resizes
    every image, otherwise JPEG files are stored as they are and other images (PNG, WebP,
    BMP, GIF, TIFF) converted to RGB and encoded as JPEG. Every file is checked in the
    worker (JPEG markers, PNG chunk CRCs; a full decode too with `verify=True`): a bad
    one stops the run with a SampleError naming the file and its input index, or, with
    `ignore_errors=True`, is skipped and listed in the report. Progress is committed every
    `checkpoint_interval` files (default: every 1/20 of the files, at least 1,000), so a run
    that is interrupted resumes where it stopped when started again; running it again
    after it finished writes nothing.

    Args:
        src: the folder with one subfolder per class (SRC/cat/1.jpg, SRC/dog/2.png, ...).
        dataset: a path or URL (created if missing), or an open Dataset.
        workers: parallel workers (default: `sw.cpu_count()`).
        resize: "WxH" or (W, H): decode and resize every image.
        scheduler: eval's scheduler ("processed", "threaded", "serial", ...).
        progressbar: show a progress bar.
        checkpoint_interval: commit progress every N files.
        ignore_errors: skip bad files (listed in the report's `skipped`).
        verify: fully decode every file before storing it.

    Returns:
        The eval's `EvalReport` (nothing written, `resumed_from` = all files, if this
        folder was already ingested).

    Raises:
        FileNotFoundError: `src` does not exist.
        NotADirectoryError: `src` is a file.
        ValueError: `src` has no subfolders, a bad `resize`, or the dataset has tensors
            but not both "images" and "labels".
        TransformError: a bad image file (its cause, a SampleError, names the file).

    Example:
        >>> report = sw.ingest_folder("animals/", "./animals_ds", workers=4)  # doctest: +SKIP
        >>> print(report.rows_written)                        # doctest: +SKIP
    """
    size = parse_size(resize) if resize is not None else None
    if workers is None:
        from slicewise.engine.cpu import cpu_count

        workers = cpu_count()
    if scheduler == "processed" and isinstance(workers, int) and workers > 0 \
            and Path(src).is_dir():
        # A cold start (the `slicewise ingest` command): the workers start now, in the
        # background, while this process imports the rest, lists the folder and opens
        # the dataset; the eval then finds them ready (the shared warm pool).
        _start_workers(workers)

    import slicewise as sw
    from slicewise.transform.pipeline import ComputeFunction
    from slicewise.transform.report import EvalReport

    class_names, files = list_image_folder(src)
    created = False
    if isinstance(dataset, (str, os.PathLike)):
        path = str(dataset)  # made by this call: removed again if it fails before any row
        created = not sw.exists(path) and ("://" in path or not os.path.exists(path))
        ds = sw.dataset(str(dataset))
    else:
        ds = dataset
    _prepare_tensors(ds, class_names)
    if checkpoint_interval is None:
        # A checkpoint is a commit (fsyncs, and batches end on its boundaries): one every
        # 1,000 files at least, so a small folder is not slowed down by commits that save
        # well under a second of work; a large one gets about 20.
        checkpoint_interval = max(CHECKPOINT_EVERY_AT_LEAST, len(files) // 20)
    # The name is what a checkpoint records: a run with another size is another ingest.
    name = "ingest" if size is None else f"ingest(resize={size[0]}x{size[1]})"
    kwargs: dict[str, Any] = {"resize": size}
    if verify:
        kwargs["verify"] = True  # checks more, writes the same: the same ingest
    pipeline = ComputeFunction(store_image, (), kwargs, name)
    if _already_ingested(ds, files, pipeline):
        report = EvalReport([pipeline.name], scheduler, workers, inputs_total=len(files))
        report.resumed_from = len(files)
        return report
    try:
        return pipeline.eval(
            files,
            ds,
            num_workers=workers,
            scheduler=scheduler,
            progressbar=progressbar,
            checkpoint_interval=checkpoint_interval,
            ignore_errors=ignore_errors,
        )
    except BaseException:
        if created:
            _remove_if_empty(str(dataset))
        raise


def _start_workers(workers: int) -> None:
    """Start the shared process pool that the eval will use (engine/default_pool.py),
    its forkserver preloading what an ingest worker imports. Best effort: the eval starts
    it anyway if this did not."""
    try:
        from slicewise.engine import get_default_pool
        from slicewise.engine.backends.processes import preload_in_forkserver

        preload_in_forkserver(INGEST_WORKER_MODULES)
        get_default_pool(workers, "processes")
    except Exception:  # noqa: BLE001 - the eval reports any real problem itself
        pass


def _remove_if_empty(path: str) -> None:
    """A failed ingest into a dataset it created, before any checkpoint held a row:
    remove it, so the same command can run again (and nothing half-made is left)."""
    import slicewise as sw

    try:
        if all(len(tensor) == 0 for tensor in sw.load(path, read_only=True).tensors.values()):
            sw.delete(path)
    except Exception:  # noqa: BLE001 - best effort: the original error is what matters
        pass


def parse_size(size: tuple[int, int] | Sequence[int] | str) -> tuple[int, int]:
    """"250x250" or (250, 250) -> (250, 250); anything else is a ValueError."""
    if isinstance(size, str):
        parts = size.lower().replace("*", "x").split("x")
        if len(parts) != 2:
            raise ValueError(f"resize must look like WIDTHxHEIGHT, e.g. 250x250; got {size!r}")
        try:
            width, height = (int(part) for part in parts)
        except ValueError as error:
            raise ValueError(f"resize must look like WIDTHxHEIGHT, got {size!r}") from error
    else:
        width, height = (int(part) for part in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"resize needs a positive width and height, got {size!r}")
    return width, height


def _prepare_tensors(ds: Any, class_names: list[str]) -> None:
    existing = set(ds.tensors)
    if not existing:
        with ds:  # one commit
            ds.create_tensor(IMAGES, htype="image.rgb", sample_compression="jpeg")
            ds.create_tensor(LABELS, htype="class_label", class_names=class_names)
        return
    if not {IMAGES, LABELS} <= existing:
        raise ValueError(
            f"ingest: the dataset already has tensors {sorted(existing)}; ingesting needs "
            f"{IMAGES!r} and {LABELS!r} (use a new dataset path)"
        )


def _already_ingested(ds: Any, files: list[tuple[str, str]], pipeline: Any) -> bool:
    """The last commit is this ingest, finished, over exactly these files."""
    from slicewise.transform.inputs import InputDigest, open_source
    from slicewise.transform.run import head_progress

    progress = head_progress(ds)
    if not progress or progress.get("state") != "done":
        return False
    if progress.get("inputs_done") != len(files) or not progress.get("input_digest"):
        return False
    if progress.get("pipeline") != [pipeline.name]:
        return False
    source = open_source(files)
    digest = InputDigest(source.identity, [pipeline.name])
    source.prefix_digest(digest, len(files))
    return digest.hexdigest() == progress["input_digest"]


def __getattr__(name: str) -> Any:
    if name == "CHECKPOINT_KEY":  # kept importable from here, without the eager import
        from slicewise.transform.checkpoint import CHECKPOINT_KEY

        return CHECKPOINT_KEY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ingest_folder", "list_image_folder", "parse_size",
           "resized_pixels", "store_image"]
