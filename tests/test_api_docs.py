"""The API reference (mkdocs + mkdocstrings, warnings as errors), the public signatures,
the py.typed marker, and mypy on a user's script made of the README's examples."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import slicewise as sw

ROOT = Path(__file__).resolve().parents[1]
API_PAGES = ROOT / "docs" / "api"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_every_public_name_has_a_docstring_and_a_page():
    pages = "\n".join(p.read_text() for p in API_PAGES.glob("*.md"))
    for name, module in sw._EXPORTS.items():
        obj = getattr(importlib.import_module(module), name)
        assert (obj.__doc__ or "").strip(), f"sw.{name} has no docstring"
        assert f"## `sw.{name}`" in pages, f"sw.{name} is missing from docs/api/"


def test_public_signatures_show_their_parameters():
    @sw.compute
    def store(item, sample_out, class_names, size=3):
        """Store one item."""

    bound = store(["a"])
    eval_params = inspect.signature(bound.eval).parameters
    assert list(eval_params)[:4] == ["data_in", "ds_out", "num_workers", "scheduler"]
    assert "report" in eval_params and "resume" in eval_params
    assert not any(p.kind is p.VAR_POSITIONAL for p in eval_params.values())
    assert list(inspect.signature(store).parameters) == ["class_names", "size"]
    for fn in (sw.Pool.map, sw.Pool.imap, sw.Pool.imap_unordered, sw.map):
        params = inspect.signature(fn).parameters
        assert {"on_error", "retries", "timeout", "report"} <= set(params), fn
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), fn
    show = inspect.signature(sw.Dataset.show).parameters
    assert {"rows", "tensors", "out", "random"} <= set(show)


def test_the_package_is_marked_typed():
    assert (ROOT / "src" / "slicewise" / "py.typed").exists()
    assert 'slicewise = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.timeout(300)
@pytest.mark.skipif(not (_has("mkdocs") and _has("mkdocstrings_handlers.python")),
                    reason="mkdocs and mkdocstrings[python] are not installed "
                    "(pip install -e .[test])")
def test_the_api_reference_builds_with_warnings_as_errors(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    engine = (site / "engine" / "index.html").read_text()
    assert "Pool" in engine and "on_error" in engine and "report" in engine
    transform = (site / "transform" / "index.html").read_text()
    assert "checkpoint_interval" in transform and "Raises" in transform


@pytest.mark.timeout(300)
@pytest.mark.skipif(not _has("mypy"), reason="mypy is not installed (pip install -e .[test])")
def test_mypy_passes_on_the_readme_examples(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for index, block in enumerate(blocks):  # one script each: names are reused
        (tmp_path / f"user_script_{index}.py").write_text(block)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--ignore-missing-imports",
         "--cache-dir", str(tmp_path / ".mypy_cache"),
         *sorted(str(p) for p in tmp_path.glob("user_script_*.py"))],
        cwd=tmp_path, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}\n{done.stderr}"
