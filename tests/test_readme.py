"""The README's quickstart examples run as they are, in a folder holding ./animals."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def make_animals(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / "animals" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "animals" / label / f"{i}.jpg", quality=85)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.timeout(180)
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(tmp_path, index):
    make_animals(tmp_path)
    script = tmp_path / f"example_{index}.py"
    script.write_text(BLOCKS[index])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, f"README example {index} failed:\n{done.stdout}\n{done.stderr}"
