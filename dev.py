#!/usr/bin/env python3
"""The project's two commands, runnable from a fresh clone with only python3, pip and venv.

    python3 dev.py run     # the main job: a parallel job over real photos, then read back
    python3 dev.py test    # ruff, then the whole test suite
    python3 dev.py bench   # benchmarks/ side by side with the peers -> BENCHMARKS.md

Each command creates (or refreshes, when pyproject.toml changed) the virtual environment
in ./.venv first, so nothing else has to be installed by hand.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
EXTRAS = {"run": "test", "test": "test", "bench": "test,bench"}


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(extras: str) -> Path:
    """Create ./.venv and install the project editable with `extras`, once per pyproject."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp = VENV / f".slicewise-stamp-{extras.replace(',', '-')}"  # one per extras set
    py = venv_python()
    if not py.exists():
        print("[dev] creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if stamp.exists() and stamp.read_text() == digest:
        return py
    print(f"[dev] installing slicewise[{extras}] into .venv", flush=True)
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f".[{extras}]"], check=True, cwd=ROOT)
    stamp.write_text(digest)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    py = str(ensure_venv(EXTRAS[command]))
    if command == "run":
        return subprocess.call([py, str(ROOT / "examples" / "main_job.py"), *rest], cwd=ROOT)
    if command == "test":
        lint = subprocess.call([py, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples", "dev.py"], cwd=ROOT)
        if lint:
            return lint
        return subprocess.call([py, "-m", "pytest", "-q", *rest], cwd=ROOT)
    return subprocess.call([py, str(ROOT / "benchmarks" / "run.py"), *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
