"""A full disk (or a file size limit) is reported as itself: an OSError with the real
errno (ENOSPC, EFBIG), naming the file and the dataset, never a bare "OSError 28"; the
dataset stays at its last commit. Issue 9, case 6. Real file systems, no mocks: a 2 MiB
tmpfs mounted for the test (needs root; skipped otherwise), and RLIMIT_FSIZE in a child
process (any Linux)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

import slicewise as sw

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def free_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(path: str, leave: int) -> None:
    """Write real bytes (tmpfs has no blocks for holes) until `leave` bytes are free."""
    with open(os.path.join(path, f"filler-{uuid.uuid4().hex}"), "wb") as f:
        while free_bytes(path) > leave:
            try:
                f.write(b"\1" * min(65536, max(4096, free_bytes(path) - leave)))
                f.flush()
            except OSError:
                break


def make(url: str) -> sw.Dataset:
    ds = sw.empty(url, chunk_target_bytes=64 * 1024)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.x.extend(np.arange(10 * 1000, dtype=np.uint8).reshape(10, 1000))
    return ds


def assert_names_the_file(exc: OSError, url: str, folder: str) -> None:
    assert exc.filename and exc.filename.startswith(os.path.join(url, folder)), exc
    assert url in str(exc) and exc.filename in str(exc)
    assert "No space left on device" in str(exc) or exc.errno == errno.EFBIG


@pytest.mark.timeout(120)
def test_a_full_disk_while_writing_chunks(small_disk):
    url = os.path.join(small_disk, "ds")
    make(url)
    expected = sw.load(url).x.numpy()
    ds = sw.load(url)
    with pytest.raises(OSError) as info, ds:
        for _ in range(40):  # 4 MB into 2 MiB
            ds.x.extend(np.full((100, 1000), 7, np.uint8))
    assert info.value.errno == errno.ENOSPC
    assert_names_the_file(info.value, url, "chunks")
    again = sw.load(url)  # still at its last commit, whole
    assert np.array_equal(again.x.numpy(), expected)
    assert sw.verify(url).ok


@pytest.mark.timeout(120)
def test_a_full_disk_while_writing_the_manifest(small_disk):
    url = os.path.join(small_disk, "ds")
    make(url)
    expected = sw.load(url).x.numpy()
    ds = sw.load(url)
    versions = sorted(os.listdir(os.path.join(url, "versions")))
    fill(small_disk, leave=4096)  # room for one small chunk file, none for a manifest
    with pytest.raises(OSError) as info, ds:
        ds.x.append(np.full(1000, 9, np.uint8))
    assert info.value.errno == errno.ENOSPC
    assert_names_the_file(info.value, url, "versions")  # the chunk fitted, the manifest not
    assert sorted(os.listdir(os.path.join(url, "versions"))) == versions  # no .tmp- left
    assert np.array_equal(sw.load(url).x.numpy(), expected)
    assert sw.verify(url).ok


CHILD = r"""
import json, os, resource, signal, sys
import numpy as np
import slicewise as sw

url = sys.argv[1]
ds = sw.empty(url, chunk_target_bytes=64 * 1024)
with ds:
    ds.create_tensor("x", dtype="uint8")
    ds.x.extend(np.zeros((10, 1000), np.uint8))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))
try:
    with ds:
        ds.x.extend(np.ones((100, 1000), np.uint8))  # 64 kB chunk files
except OSError as exc:
    print(json.dumps({"errno": exc.errno, "type": type(exc).__name__, "message": str(exc),
                      "filename": exc.filename}))
else:
    print(json.dumps({"errno": None}))
"""


@pytest.mark.timeout(120)
def test_a_file_size_limit_is_reported_as_efbig(tmp_path):
    url = str(tmp_path / "ds")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    done = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True,
                          timeout=90, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errno"] == errno.EFBIG and result["type"] == "OSError", result
    assert result["filename"].startswith(os.path.join(url, "chunks")), result
    assert url in result["message"] and "File too large" in result["message"]
    assert len(sw.load(url).x) == 10 and sw.verify(url).ok
