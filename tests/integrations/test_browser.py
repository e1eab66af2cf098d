"""The HTML pictures opened in a real headless browser (Chromium): the screenshot must
show them, not a blank or broken page. Skipped where no Chromium is installed
(.ci/run installs Debian's `chromium`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from pictures_helpers import FILL, make_everything, not_blank
from PIL import Image

import slicewise as sw
from slicewise.engine.timeline import COLORS

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser",
                                                "google-chrome", "chrome")
                if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium installed (apt-get install chromium; CI does)")


def screenshot(page, tmp_path, name: str, size=(1280, 1000)) -> np.ndarray:
    shot = tmp_path / f"{name}-shot.png"
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert shot.exists(), f"no screenshot: {done.stderr[-2000:]}"
    with Image.open(shot) as image:
        return np.asarray(image.convert("RGB"))


def pixels_near(shot: np.ndarray, color, tolerance: int = 24) -> int:
    return int((np.abs(shot.astype(int) - np.array(color)).max(axis=2) <= tolerance).sum())


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    return make_everything(tmp_path_factory.mktemp("browser") / "ds")


@pytest.mark.timeout(120)
def test_grid_page_renders_its_thumbnails(everything, tmp_path):
    page = tmp_path / "grid.html"
    everything.show(rows="0:6", out=page)
    shot = screenshot(page, tmp_path, "grid")
    assert not_blank(Image.fromarray(shot))
    for color in FILL:  # each photo colour is on screen: the images decoded and drew
        assert pixels_near(shot, color) > 500, color


@pytest.mark.timeout(120)
def test_dataset_view_renders_in_a_page(everything, tmp_path):
    page = tmp_path / "view.html"
    page.write_text("<!DOCTYPE html><html><body>" + everything._repr_html_()
                    + everything.images._repr_html_() + "</body></html>")
    shot = screenshot(page, tmp_path, "view")
    assert not_blank(Image.fromarray(shot))
    assert pixels_near(shot, FILL[0], 40) > 200  # the thumbnail strip (JPEG)


def slow_abs(x):
    time.sleep(0.001)
    return abs(x)


@pytest.mark.timeout(120)
def test_timeline_page_renders_its_batches(tmp_path):
    with sw.Pool(2, backend="threads") as pool:
        result = pool.map(slow_abs, range(-100, 100), report=True, chunksize=10)
    page = result.report.save(tmp_path / "timeline.html")
    shot = screenshot(page, tmp_path, "timeline")
    assert not_blank(Image.fromarray(shot))
    assert pixels_near(shot, COLORS["ok"], 10) > 2000  # the Gantt bars
    assert pixels_near(shot, (34, 170, 119), 30) > 50  # the throughput line
