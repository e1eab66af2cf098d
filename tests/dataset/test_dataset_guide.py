"""The python examples of docs/guides/dataset.md run, in order, as the one script the guide
says they are, in a folder holding real JPEG files: ./cat/<n>.jpg and ./dog/<n>.jpg."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "dataset.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def make_class_folders(root: Path, classes=("cat", "dog"), per_class=3) -> None:
    """root/<class>/<n>.jpg, n = 0..per_class-1: small noise photos of different sizes."""
    rng = np.random.default_rng(0)
    for class_name in classes:
        (root / class_name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, size=(24 + index, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{index}.jpg", quality=85)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.timeout(90)
def test_guide_examples_run_as_one_script(tmp_path):
    make_class_folders(tmp_path)
    script = tmp_path / "dataset_guide.py"
    script.write_text("\n".join(EXAMPLES))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=80,
        cwd=tmp_path, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # ds.summary() and print(sw.verify(...)) are the script's output.
    assert "images" in out.stdout and "OK" in out.stdout, out.stdout[-3000:]
