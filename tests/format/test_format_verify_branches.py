"""verify covers every branch and saved view, not only main (issue 9's leftover: a flipped
bit in a chunk only a branch references, a damaged branch manifest or record, and a saved
view naming rows that do not exist all said OK before)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import slicewise as sw


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """main: 10 rows (one chunk); branch "alt": 5 and 3 rows more in two commits of its
    own; a saved view "evens" of main's rows."""
    url = str(tmp_path_factory.mktemp("verify-branches") / "ds")
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.x.extend(np.arange(10, dtype=np.int32))
    main_chunks = set(_chunks(url))
    ds.checkout("alt", create=True)
    ds.x.extend(np.arange(100, 105, dtype=np.int32))
    ds.commit("five on alt")
    ds.x.extend(np.arange(200, 203, dtype=np.int32))
    ds.commit("three on alt")
    ds.checkout("main")
    ds.filter(lambda s: int(s.x.numpy().ravel()[0]) % 2 == 0).save_view(id="evens")
    report = sw.verify(url)
    assert report.ok, str(report)
    assert report.branches == 1 and report.views == 1
    branch_chunks = sorted(set(_chunks(url)) - main_chunks)
    assert branch_chunks
    return url, branch_chunks


def _chunks(url: str) -> list[str]:
    out = []
    for folder, _, files in os.walk(os.path.join(url, "chunks")):
        out += [os.path.join(folder, f) for f in files if not f.startswith(".")]
    return out


@pytest.fixture
def copy(original, tmp_path):
    url, branch_chunks = original
    dest = str(tmp_path / "ds")
    shutil.copytree(url, dest)
    return dest, [dest + path[len(url):] for path in branch_chunks]


def _branch_manifests(url: str) -> list[str]:
    (record,) = [f for f in os.listdir(os.path.join(url, "branches")) if f.endswith(".json")]
    branch_id = json.loads(open(os.path.join(url, "branches", record)).read())["id"]
    folder = os.path.join(url, "branches", branch_id, "versions")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def _files(report) -> list[str]:
    assert not report.ok
    return [p["file"] for p in report.problems]


def _flip(path: str, at: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[at % len(data)] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_a_flipped_bit_in_a_chunk_only_a_branch_references(copy):
    url, branch_chunks = copy
    target = branch_chunks[-1]
    _flip(target, os.path.getsize(target) - 3)  # in the samples, not the header
    assert _files(sw.verify(url)) == [target]
    # the dataset itself still reads on main: only the branch's chunk is bad
    assert sw.load(url, read_only=True).x.numpy().ravel().tolist() == list(range(10))


def test_a_damaged_branch_manifest(copy):
    url, _ = copy
    manifest = _branch_manifests(url)[-1]
    _flip(manifest, os.path.getsize(manifest) // 2)
    assert manifest in _files(sw.verify(url))


def test_a_branch_manifest_missing_in_the_middle(copy):
    url, _ = copy
    manifests = _branch_manifests(url)
    assert len(manifests) >= 3
    os.remove(manifests[1])
    problems = sw.verify(url).problems
    assert any(p["file"] == manifests[1] and "missing" in p["error"] for p in problems)


def test_a_branch_manifest_whose_parent_is_not_the_one_before(copy):
    """A manifest of another history dropped into the branch's folder: the parent link
    between consecutive versions is what catches it."""
    url, _ = copy
    manifests = _branch_manifests(url)
    shutil.copyfile(manifests[0], manifests[1] + ".swap")
    # a manifest names its own seq, so a copy under another seq is refused as it is read
    os.replace(manifests[1] + ".swap", manifests[1])
    assert manifests[1] in _files(sw.verify(url))


def test_a_garbled_branch_record(copy):
    url, _ = copy
    record = os.path.join(url, "branches", "alt.json")
    open(record, "w").write("{not json")
    assert _files(sw.verify(url)) == [record]


def test_a_saved_view_naming_rows_past_its_version(copy):
    url, _ = copy
    path = os.path.join(url, "views", "evens.json")
    doc = json.loads(open(path).read())
    doc["rows"].append(10)  # main's version has rows 0..9
    open(path, "w").write(json.dumps(doc))
    report = sw.verify(url)
    assert _files(report) == [path] and "row 10" in report.problems[0]["error"]


def test_a_view_whose_version_gc_retired_is_no_problem(copy):
    url, _ = copy
    ds = sw.load(url)
    with ds:
        ds.x.append(np.int32(7))
    ds.filter(lambda s: True).save_view(id="later")  # of the version just committed
    with ds:
        ds.x.append(np.int32(8))
    ds.delete_branch("alt")  # else gc keeps alt's fork and every version after it
    sw.gc(url, keep_last=1, grace_seconds=0)  # retires it
    report = sw.verify(url)
    assert report.ok, str(report)
    assert sorted(report.stale_views) == ["views/evens.json", "views/later.json"]


@pytest.mark.timeout(120)
def test_the_cli_fails_on_a_damaged_branch(copy):
    url, branch_chunks = copy
    _flip(branch_chunks[0], os.path.getsize(branch_chunks[0]) - 3)
    done = subprocess.run([sys.executable, "-m", "slicewise", "verify", url],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 1
    assert branch_chunks[0] in done.stdout + done.stderr
