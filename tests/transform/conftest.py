"""Fixtures for the transform tests: real JPEG trees made with Pillow, and helpers that
run Python scripts in a child process (for kill -9 and `import slicewise as deeplake`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def make_jpeg_tree(root: Path, classes=("cats", "dogs", "birds"), per_class=4, seed=0):
    """root/<class>/<n>.jpg with small real photos-like images (noise + gradients)."""
    rng = np.random.default_rng(seed)
    files = []
    for class_index, class_name in enumerate(classes):
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
            noise = rng.integers(0, 60, (height, width, 3)).astype(np.float32)
            pixels = np.clip(gradient * (class_index + 1) / 3 + noise, 0, 255).astype(np.uint8)
            path = folder / f"{index:03d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            files.append(path)
    return files


@pytest.fixture
def jpeg_tree(tmp_path):
    root = tmp_path / "animals"
    make_jpeg_tree(root)
    return root


def run_script(code: str, cwd: Path, *args: str, timeout: float = 90, check=True):
    """Run `code` as a Python script in a child process; returns CompletedProcess."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"script failed ({done.returncode}):\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done
