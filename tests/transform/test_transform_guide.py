"""Every python example in docs/guides/transform.md runs as the complete script it claims
to be, each in a fresh folder holding real JPEG files: ./animals/<class>/<n>.jpg and the
same tree as ./photos/<class>/<n>.jpg, classes cat and dog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "transform.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.timeout(90)
@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_guide_example_runs(number, tmp_path, make_image_tree, run_script):
    make_image_tree(tmp_path / "animals")
    make_image_tree(tmp_path / "photos")
    run_script(EXAMPLES[number], f"example_{number}.py")
