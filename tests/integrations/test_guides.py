"""The seed-003 guides' programs run as written (each in a fresh interpreter and folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDES = sorted((Path(__file__).resolve().parents[2] / "docs" / "guides").glob("seed003-*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _programs(path: Path) -> list[str]:
    """The guide's complete programs: code blocks with a __main__ guard (the others are
    fragments that continue a program)."""
    return [code for code in BLOCK.findall(path.read_text()) if "__main__" in code]


def test_every_seed003_scenario_has_a_guide():
    names = {path.stem for path in GUIDES}
    assert names >= {"seed003-delayed-graph", "seed003-mean-larger-than-memory",
                     "seed003-image-stack", "seed003-hdf5-experiments"}
    assert all(_programs(path) for path in GUIDES)


@pytest.mark.timeout(100)
@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.stem)
def test_guide_programs_run(guide, tmp_path):
    for program in _programs(guide):
        done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"{guide.name}:\n{done.stdout}\n{done.stderr[-3000:]}"


@pytest.mark.timeout(150)
def test_cluster_guide_runs(tmp_path):
    """docs/guides/cluster.md: the same eval on this machine and on a Dask LocalCluster."""
    pytest.importorskip("distributed")
    guide = GUIDES[0].parent / "cluster.md"
    programs = _programs(guide)
    assert programs
    for program in programs:
        done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path,
                              capture_output=True, text=True, timeout=140)
        assert done.returncode == 0, f"cluster.md:\n{done.stdout}\n{done.stderr[-3000:]}"
        assert "[1994 1996 1998]" in done.stdout
