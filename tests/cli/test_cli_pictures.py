"""`slicewise show` and `slicewise ingest --report`, run as real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from html_tags import Parsed

ROOT = Path(__file__).resolve().parents[2]


def slicewise(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "slicewise.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_pictures")
    rng = np.random.default_rng(2)
    for class_name in ("cats", "dogs"):
        (root / "photos" / class_name).mkdir(parents=True)
        for index in range(12):
            pixels = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "photos" / class_name / f"{index}.jpg")
    done = slicewise("ingest", str(root / "photos"), str(root / "ds"), "--workers", "2",
                     "--report", str(root / "ingest.html"))
    assert done.returncode == 0, done.stderr
    return root, done


@pytest.mark.timeout(120)
def test_ingest_report_writes_a_timeline(ingested):
    root, done = ingested
    assert "timeline written to" in done.stdout
    page = Parsed((root / "ingest.html").read_text())
    batches = page.with_class("batch")
    assert batches and not [t for t, _ in page.tags if t == "script"]
    assert any("eval ingest" in text for text in page.texts)
    assert any("24 inputs" in text for text in page.texts)


@pytest.mark.timeout(120)
def test_show_rows_as_png_and_random_as_html(ingested):
    root, _ = ingested
    done = slicewise("show", str(root / "ds"), "--rows", "0:6", "--out", str(root / "g.png"))
    assert done.returncode == 0, done.stderr
    assert "rows 0..5 of 24" in done.stdout
    with Image.open(root / "g.png") as image:
        assert image.width > 6 * 40 and image.height > 48
    done = slicewise("show", str(root / "ds"), "--random", "5", "--seed", "1",
                     "--out", str(root / "g.html"))
    assert done.returncode == 0, done.stderr
    page = Parsed((root / "g.html").read_text())
    assert len(page.with_class("sw-thumb")) == 5
    labels = [t for t in page.texts if t in ("cats", "dogs")]
    assert len(labels) == 5


@pytest.mark.timeout(120)
def test_show_default_output_and_bad_arguments(ingested):
    root, _ = ingested
    done = slicewise("show", str(root / "ds"), cwd=root)
    assert done.returncode == 0, done.stderr
    assert (root / "ds-grid.png").exists()
    bad = slicewise("show", str(root / "ds"), "--out", str(root / "g.jpg"))
    assert bad.returncode == 1 and ".png or .html" in bad.stderr
    both = slicewise("show", str(root / "ds"), "--rows", "0:2", "--random", "2")
    assert both.returncode == 2  # argparse: not allowed together
