"""verify fails on anything that is not a whole dataset (issue 9, case 3: it said OK for a
path that does not exist, a dataset whose versions/ is gone, and a missing or garbled
slicewise.json), and checks a manifest's claims against the chunks it names."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import slicewise as sw
from slicewise.format.manifest import encode_manifest


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("verify") / "ds")
    ds = sw.empty(url, chunk_target_bytes=2000)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        for i in range(20):
            ds.x.append(np.full((i % 4 + 1, 3), i, np.uint8))
    with ds:
        ds.x.append(np.zeros((2, 3), np.uint8))
    assert sw.verify(url).ok
    return url


@pytest.fixture
def url(original, tmp_path):
    copy = str(tmp_path / "ds")
    shutil.copytree(original, copy)
    return copy


def problems(url) -> list[tuple[str, str]]:
    report = sw.verify(url)
    assert not report.ok and "OK" not in str(report).splitlines()[0]
    return [(p["file"], p["error"]) for p in report.problems]


def test_a_path_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "no-such-dataset")
    assert problems(missing) == [(missing, "no dataset here: the path does not exist or is empty")]
    os.mkdir(missing)  # an empty folder is no dataset either
    assert problems(missing)[0][0] == missing
    assert not sw.verify("memory://no-such-dataset").ok


def test_versions_folder_gone(url):
    shutil.rmtree(os.path.join(url, "versions"))
    [(where, error)] = problems(url)
    assert where == os.path.join(url, "versions") and "no version manifests" in error


def test_versions_folder_empty_but_for_temporaries(url):
    folder = os.path.join(url, "versions")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    open(os.path.join(folder, ".tmp-0123"), "w").write("{}")
    assert "no version manifests" in problems(url)[0][1]


def test_marker_missing(url):
    marker = os.path.join(url, "slicewise.json")
    os.unlink(marker)
    found = problems(url)
    assert found == [(marker, "the dataset marker is missing: not a slicewise dataset, or its "
                      "marker was removed")]


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"\xff\xfe", b"[]", b'{"format": "slicewise"}',
     b'{"format": "slicewisf", "format_version": 1, "chunk_target_bytes": 8388608}',
     b'{"format": "slicewise", "format_version": 9, "chunk_target_bytes": 8388608}',
     b'{"format": "slicewise", "format_version": 1, "chunk_targeu_bytes": 8388608}',
     b'{"format": "slicewise", "format_version": 1, "chunk_target_bytes": -1}',
     b'{"format": "slicewise", "format": "slicewise", "format_version": 1, '
     b'"chunk_target_bytes": 1}',
     b" " * 70000],
)
def test_marker_garbled(url, garbage):
    marker = os.path.join(url, "slicewise.json")
    open(marker, "wb").write(garbage)
    found = problems(url)
    assert found[0][0] == marker and "not a valid slicewise dataset marker" in found[0][1]
    assert len(found) == 1  # the rest of the dataset is still checked, and fine


def test_a_version_missing_in_the_middle(url):
    path = os.path.join(url, "versions", f"{2:012d}.json")
    os.unlink(path)
    assert (path, "missing: versions 1 to 3 exist, and only gc removes versions (the oldest "
            "first)") in problems(url)


def test_a_manifest_replaced_by_another_versions_manifest(url, tmp_path):
    """Each manifest is valid alone, but the chain of parents is broken."""
    other = str(tmp_path / "other")
    shutil.copytree(url, other)
    sw.load(other).commit("diverges")  # a version 4 of the other dataset
    mine = sw.load(url)
    mine.commit("mine")  # version 4 here
    mine.commit("next")  # version 5, whose parent is this version 4
    name = f"{4:012d}.json"
    shutil.copy(os.path.join(other, "versions", name), os.path.join(url, "versions", name))
    found = problems(url)
    fifth = os.path.join(url, "versions", f"{5:012d}.json")
    assert [where for where, error in found if "parent" in error] == [fifth], found


def _rewrite_newest(url, change) -> str:
    folder = os.path.join(url, "versions")
    path = os.path.join(folder, sorted(os.listdir(folder))[-1])
    doc = json.loads(open(path, "rb").read())
    change(doc["tensors"]["x"]["chunks"])
    open(path, "wb").write(encode_manifest(doc))
    return path


def test_nbytes_that_lie_are_found(url):
    chunks = {}
    _rewrite_newest(url, lambda c: (c["nbytes"].__setitem__(0, c["nbytes"][0] + 1),
                                    chunks.update(key=c["keys"][0])))
    found = problems(url)
    assert len(found) == 1 and found[0][0].endswith(chunks["key"]) and "bytes" in found[0][1]


def test_shapes_that_lie_are_found(url):
    _rewrite_newest(url, lambda c: c["max_shape"].__setitem__(0, [9, 3]))
    found = problems(url)
    assert len(found) == 1 and "shapes" in found[0][1]
    _rewrite_newest(url, lambda c: (c["max_shape"].__setitem__(0, [9, 3, 1]),
                                    c["min_shape"].__setitem__(0, [1, 3, 1])))
    assert "shapes" in " ".join(e for _, e in problems(url))
