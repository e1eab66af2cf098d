"""Every python example in docs/guides/engine.md runs, as the script it claims to be."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "engine.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.timeout(90)
@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_guide_example_runs(number, run_script):
    assert run_script(EXAMPLES[number], f"example_{number}.py").strip()
