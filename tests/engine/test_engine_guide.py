"""Every python example in docs/guides/engine.md runs, as the script it claims to be."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "engine.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_examples():
    assert len(EXAMPLES) >= 6


@pytest.mark.timeout(90)
@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_guide_example_runs(number, tmp_path):
    script = tmp_path / f"example_{number}.py"
    script.write_text(EXAMPLES[number])
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=80,
        cwd=tmp_path, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()
