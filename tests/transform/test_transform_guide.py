"""Every python example in docs/guides/transform.md runs as the complete script it claims
to be, each in a fresh folder holding real JPEG files: ./animals/<class>/<n>.jpg and the
same tree as ./photos/<class>/<n>.jpg, classes cat and dog."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "transform.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def make_image_tree(root: Path, classes=("cat", "dog"), per_class=3) -> None:
    """root/<class>/<n>.jpg, n = 0..per_class-1: small noise photos of different sizes."""
    rng = np.random.default_rng(0)
    for class_name in classes:
        (root / class_name).mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 255, size=(24 + index, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / class_name / f"{index}.jpg", quality=85)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_guide_example_runs(number, tmp_path):
    make_image_tree(tmp_path / "animals")
    make_image_tree(tmp_path / "photos")
    script = tmp_path / f"example_{number}.py"
    script.write_text(EXAMPLES[number])
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=80,
        cwd=tmp_path, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
