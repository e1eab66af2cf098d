"""Fixtures for the transform tests: real JPEG trees made with Pillow, and helpers that
run Python scripts in a child process (for kill -9 and `import slicewise as deeplake`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import slicewise as sw

ROOT = Path(__file__).resolve().parents[2]


# -- the resume tests' eval: one int and one text row per input -------------------------
@sw.compute
def record(item, sample_out, fail_from=None):
    if fail_from is not None and item >= fail_from:
        raise RuntimeError(f"stopped at {item}")
    sample_out.append({"x": np.int64(item), "name": f"item{item}"})


def new_ds(path):
    """An empty dataset with record's tensors, committed."""
    ds = sw.empty(str(path), overwrite=True)
    ds.create_tensor("x")
    ds.create_tensor("name", htype="text")
    ds.commit("tensors")
    return ds


def values(ds, tensor="x"):
    """The tensor's rows as ints (one scalar per row)."""
    return [int(v) for v in ds[tensor].numpy().reshape(-1)] if len(ds[tensor]) else []


def names(ds):
    """The text tensor `name`'s rows."""
    return [ds.name[i].data()["value"] for i in range(len(ds.name))]


# -- child processes to kill ------------------------------------------------------------
@contextlib.contextmanager
def running_children(tmp_path, source: str, *arg_lists: list[str]):
    """Child processes running `source` (a script) with each list of arguments; they never
    outlive the block, whatever the test asserts or raises inside it."""
    script = tmp_path / "child.py"
    script.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    children = [
        subprocess.Popen([sys.executable, str(script), *args], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in arg_lists
    ]
    try:
        yield children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=30)  # reaps it and closes its pipes


@contextlib.contextmanager
def running_child(tmp_path, source: str):
    """One child running `source` with the dataset path tmp_path/ds as its argument."""
    with running_children(tmp_path, source, [str(tmp_path / "ds")]) as children:
        yield children[0]


def wait_for(condition, child):
    """Poll `condition()` until it holds; fail if the child ends first."""
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"the child ended first: {child.communicate()}")
        time.sleep(0.05)


def kill_9_once(condition, child):
    """kill -9 the child as soon as `condition()` holds, and wait until it is gone."""
    wait_for(condition, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def make_jpeg_tree(root: Path, classes=("cats", "dogs", "birds"), per_class=4, seed=0):
    """root/<class>/<n>.jpg with small real photos-like images (noise + gradients)."""
    rng = np.random.default_rng(seed)
    files = []
    for class_index, class_name in enumerate(classes):
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = int(rng.integers(24, 48)), int(rng.integers(24, 48))
            gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
            noise = rng.integers(0, 60, (height, width, 3)).astype(np.float32)
            pixels = np.clip(gradient * (class_index + 1) / 3 + noise, 0, 255).astype(np.uint8)
            path = folder / f"{index:03d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            files.append(path)
    return files


@pytest.fixture
def jpeg_tree(tmp_path):
    root = tmp_path / "animals"
    make_jpeg_tree(root)
    return root


def run_script(code: str, cwd: Path, *args: str, timeout: float = 90, check=True):
    """Run `code` as a Python script in a child process; returns CompletedProcess."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"script failed ({done.returncode}):\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done
