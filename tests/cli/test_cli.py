"""The `slicewise` command, run as a real child process (`python -m slicewise.cli`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import slicewise as sw

ROOT = Path(__file__).resolve().parents[2]


def make_tree(root: Path, classes=("cats", "dogs"), per_class=5):
    rng = np.random.default_rng(1)
    files = []
    for class_name in classes:
        (root / class_name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, (40, 30 + index, 3), dtype=np.uint8)
            path = root / class_name / f"{index}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            files.append((path, class_name))
    (root / "dogs" / "notes.txt").write_text("not an image")
    png = root / "cats" / "zz.png"
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(png)
    files.insert(per_class, (png, "cats"))
    return files


def slicewise(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "slicewise.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(120)
def test_ingest_summary_log_verify_gc_and_rerun(tmp_path):
    files = make_tree(tmp_path / "src")
    target = tmp_path / "ds"
    done = slicewise("ingest", str(tmp_path / "src"), str(target), "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "11 rows from 11 inputs" in done.stdout
    assert "images" in done.stdout and "labels" in done.stdout  # the dataset summary
    ds = sw.load(str(target), read_only=True)
    assert len(ds) == len(files)
    names = list(ds.labels.info.class_names)
    assert names == ["cats", "dogs"]
    labels = ds.labels.numpy().reshape(-1)
    for row, (path, class_name) in enumerate(files):
        assert names[int(labels[row])] == class_name
        if path.suffix == ".jpg":
            assert ds.images[row].tobytes() == path.read_bytes()
        else:  # a PNG is decoded and stored as JPEG
            assert ds.images[row].numpy().shape == (20, 20, 3)
    version = ds.version

    again = slicewise("ingest", str(tmp_path / "src"), str(target))
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert sw.load(str(target), read_only=True).version == version

    for command in ("summary", "log", "verify"):
        result = slicewise(command, str(target))
        assert result.returncode == 0, (command, result.stderr)
    assert "ingest" in slicewise("log", str(target)).stdout
    assert slicewise("gc", str(target)).returncode == 0


@pytest.mark.timeout(120)
def test_ingest_with_resize(tmp_path):
    make_tree(tmp_path / "src", per_class=3)
    done = slicewise("ingest", str(tmp_path / "src"), str(tmp_path / "ds"), "--workers", "2",
                     "--resize", "16x12", "--no-progress")
    assert done.returncode == 0, done.stderr
    ds = sw.load(str(tmp_path / "ds"), read_only=True)
    assert len(ds) == 7
    assert {ds.images[i].numpy().shape for i in range(7)} == {(12, 16, 3)}


def test_errors_are_one_clear_line(tmp_path):
    missing = slicewise("ingest", str(tmp_path / "nope"), str(tmp_path / "ds"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "flat").mkdir()
    flat = slicewise("ingest", str(tmp_path / "flat"), str(tmp_path / "ds"))
    assert flat.returncode == 1 and "one subfolder per class" in flat.stderr
    make_tree(tmp_path / "src", per_class=1)
    bad_size = slicewise("ingest", str(tmp_path / "src"), str(tmp_path / "ds"), "--resize",
                         "big")
    assert bad_size.returncode == 1 and "WIDTHxHEIGHT" in bad_size.stderr
    assert slicewise("ingest", "--workers", "0", "a", "b").returncode == 2
    assert slicewise().returncode == 2


@pytest.mark.timeout(120)
def test_unreadable_file_stops_or_is_skipped(tmp_path):
    make_tree(tmp_path / "src", per_class=2)
    (tmp_path / "src" / "dogs" / "broken.jpg").write_bytes(b"not a jpeg at all")
    failed = slicewise("ingest", str(tmp_path / "src"), str(tmp_path / "ds"), "--workers",
                       "2", "--no-progress")
    assert failed.returncode == 1 and "broken.jpg" in failed.stderr
    skipped = slicewise("ingest", str(tmp_path / "src"), str(tmp_path / "ds"), "--workers",
                        "2", "--no-progress", "--ignore-errors")
    assert skipped.returncode == 0, skipped.stderr
    assert "broken.jpg" in skipped.stdout + skipped.stderr
    assert len(sw.load(str(tmp_path / "ds"), read_only=True)) == 5


@pytest.mark.timeout(180)
def test_verify_fails_on_what_is_not_a_whole_dataset(tmp_path):
    """Issue 9, case 3: `slicewise verify` said OK (exit 0) for a path that does not exist,
    a dataset without versions/, and a missing or garbled slicewise.json."""
    import shutil

    good = tmp_path / "good"
    ds = sw.empty(str(good))
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.x.append(np.arange(3, dtype=np.uint8))
    done = slicewise("verify", str(good))
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr

    def broken(name, damage):
        path = tmp_path / name
        shutil.copytree(good, path)
        damage(path)
        return path

    cases = {
        broken("no-versions", lambda p: shutil.rmtree(p / "versions")): "versions",
        broken("no-marker", lambda p: (p / "slicewise.json").unlink()): "slicewise.json",
        broken("bad-marker", lambda p: (p / "slicewise.json").write_text("{garbage")):
            "slicewise.json",
        tmp_path / "does-not-exist": "does not exist",
    }
    for path, named in cases.items():
        done = slicewise("verify", str(path))
        assert done.returncode == 1, (path, done.stdout, done.stderr)
        assert "OK" not in done.stdout.splitlines()[0]
        [line] = done.stderr.strip().splitlines()  # one clear line, no traceback
        assert line.startswith(f"slicewise verify: {path} FAILED: ") and named in line, line
