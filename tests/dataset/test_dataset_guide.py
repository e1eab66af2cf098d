"""The python examples of docs/guides/dataset.md run, in order, as the one script the guide
says they are, in a folder holding real JPEG files: ./cat/<n>.jpg and ./dog/<n>.jpg."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "dataset.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.timeout(90)
def test_guide_examples_run_as_one_script(tmp_path, make_image_tree, run_script):
    make_image_tree(tmp_path)
    stdout = run_script("\n".join(EXAMPLES), "dataset_guide.py")
    # ds.summary() and print(sw.verify(...)) are the script's output.
    assert "images" in stdout and "OK" in stdout, stdout[-3000:]
