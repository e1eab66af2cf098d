"""The `slicewise` command keeps its promises (issue 10), run as `python -m slicewise`:
a folder of every kind of image goes in, bad files are named with their input index, no
Python traceback without --traceback (the worker's included), --version, gc's grace
period and dry run, class names in the summary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import slicewise as sw
from image_kinds import make_bad, make_kinds

ROOT = Path(__file__).resolve().parents[2]
JPEG_MEAN_ERROR = 3.0


def slicewise(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "slicewise", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """SRC/<class>/<every kind of image>, plus a truncated, a zero-byte and a text file."""
    root = tmp_path_factory.mktemp("cli")
    kinds = make_kinds(root / "kinds")
    bad = make_bad(root / "bad")
    src = root / "src"
    for index, kind in enumerate(kinds.values()):
        target = src / ("birds" if index % 2 else "fish")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(kind.path, target / kind.path.name)
    for name in ("truncated.jpg", "empty.jpg", "text.jpg"):
        shutil.copy(bad[name], src / "birds" / name)
    from slicewise.transform.ingest import list_image_folder

    _, files = list_image_folder(src)
    return src, files, {kind.path.name: kind for kind in kinds.values()}


def _bad_rows(files):
    return [i for i, (path, _) in enumerate(files)
            if Path(path).name in ("truncated.jpg", "empty.jpg", "text.jpg")]


@pytest.mark.timeout(150)
def test_ingest_stops_at_the_first_bad_file_without_a_traceback(folder, tmp_path):
    src, files, _ = folder
    first = _bad_rows(files)[0]
    target = tmp_path / "ds"
    failed = slicewise("ingest", str(src), str(target), "--workers", "2", "--no-progress")
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr and "worker traceback" not in failed.stderr
    assert f"input index {first}" in failed.stderr
    assert Path(files[first][0]).name in failed.stderr
    assert not target.exists()  # the dataset this run made is gone again

    shown = slicewise("--traceback", "ingest", str(src), str(target), "--workers", "2",
                      "--no-progress")
    assert shown.returncode == 1
    assert "Traceback" in shown.stderr and "worker traceback" in shown.stderr


@pytest.mark.timeout(150)
def test_ingest_ignore_errors_stores_every_kind_in_order_with_labels(folder, tmp_path):
    src, files, kinds = folder
    bad_rows = _bad_rows(files)
    target = tmp_path / "ds"
    done = slicewise("ingest", str(src), str(target), "--workers", "2", "--no-progress",
                     "--ignore-errors", "--verify-decode")
    assert done.returncode == 0, done.stderr
    assert f"skipped {len(bad_rows)} input(s)" in done.stdout
    for row in bad_rows:
        assert f"[{row}]" in done.stdout and Path(files[row][0]).name in done.stdout
    assert "class names birds, fish" in done.stdout

    ds = sw.load(str(target), read_only=True)
    good = [item for i, item in enumerate(files) if i not in bad_rows]
    assert len(ds) == len(good)
    names = list(ds.labels.info.class_names)
    labels = ds.labels.numpy().reshape(-1)
    images = ds.images.numpy()
    assert images.shape == (len(good), 48, 64, 3) and images.dtype == np.uint8
    for row, (path, class_name) in enumerate(good):
        kind = kinds[Path(path).name]
        assert names[int(labels[row])] == class_name
        if kind.jpeg:  # every JPEG, CMYK and grayscale too, byte for byte
            assert ds.images[row].tobytes() == kind.path.read_bytes()
            assert np.array_equal(images[row], kind.rgb())
        else:
            assert np.abs(images[row].astype(int) - kind.rgb()).mean() < JPEG_MEAN_ERROR

    summary = slicewise("summary", str(target))
    assert summary.returncode == 0 and "class names birds, fish" in summary.stdout


@pytest.mark.timeout(60)
def test_version_and_not_a_folder(tmp_path):
    version = slicewise("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"slicewise {sw.__version__}"
    a_file = tmp_path / "photo.jpg"
    a_file.write_bytes(b"x")
    refused = slicewise("ingest", str(a_file), str(tmp_path / "ds"))
    assert refused.returncode == 1
    assert "not a folder" in refused.stderr and "Traceback" not in refused.stderr
    old = subprocess.run([sys.executable, "-m", "slicewise.cli", "--version"], timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                         capture_output=True, text=True)
    assert old.returncode == 0 and "slicewise" in old.stdout


@pytest.mark.timeout(150)
def test_gc_grace_seconds_and_dry_run(folder, tmp_path):
    _, _, kinds = folder
    src = tmp_path / "src"  # good files first, one bad file last
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    for index in range(30):
        shutil.copy(kinds["baseline.jpg"].path, src / "a" / f"{index:02d}.jpg")
    (src / "b" / "text.jpg").write_text("not an image")
    target = tmp_path / "ds"
    ds = sw.empty(str(target))
    with ds:
        ds.create_tensor("images", htype="image.rgb", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label")
    # a failed ingest into an existing dataset leaves chunk files no version references
    failed = slicewise("ingest", str(src), str(target), "--workers", "2", "--no-progress")
    assert failed.returncode == 1
    leftovers = [p for p in (target / "chunks").rglob("*") if p.is_file()]
    assert leftovers

    spared = slicewise("gc", str(target))
    assert spared.returncode == 0, spared.stderr
    assert f"kept {len(leftovers)} leftover file(s)" in spared.stdout
    dry = slicewise("gc", str(target), "--grace-seconds", "0", "--dry-run")
    assert dry.returncode == 0 and f"would remove 0 version(s) and {len(leftovers)}" \
        in dry.stdout
    assert all(p.exists() for p in leftovers)
    removed = slicewise("gc", str(target), "--grace-seconds", "0")
    assert removed.returncode == 0 and f"removed 0 version(s) and {len(leftovers)}" \
        in removed.stdout
    assert not any(p.exists() for p in leftovers)
    bad = slicewise("gc", str(target), "--grace-seconds", "-1")
    assert bad.returncode == 2
