"""Local storage refuses symbolic links inside a dataset (FORMAT.md §7). Issue 9, case 7:
a symlinked chunk file was read from another dataset, and a symlinked `chunks/` folder
made `append` write outside the dataset."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import slicewise as sw
from slicewise.format.storage import LocalStorage


def make(url: str, value: int) -> sw.Dataset:
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("x", dtype="int32")
        ds.x.extend(np.full((4, 3), value, np.int32))
    return ds


def chunk_files(url: str) -> list[str]:
    out = []
    for folder, _, names in os.walk(os.path.join(url, "chunks")):
        out += [os.path.join(folder, n) for n in names]
    return sorted(out)


def files_under(folder: str) -> set[str]:
    return {os.path.join(d, n) for d, _, names in os.walk(folder) for n in names}


@pytest.fixture
def two(tmp_path):
    mine, other = str(tmp_path / "mine"), str(tmp_path / "other")
    make(mine, 1)
    make(other, 2)
    return mine, other


def test_a_linked_chunk_file_is_refused(two):
    mine, other = two
    [victim] = chunk_files(mine)
    [theirs] = chunk_files(other)
    os.unlink(victim)
    os.symlink(theirs, victim)  # same size, valid checksums: only the link tells
    ds = sw.load(mine)
    for read in (lambda: ds.x.numpy(), lambda: ds.x[1].numpy(), lambda: ds.x[0:2].numpy(),
                 lambda: ds.x[2].tobytes()):
        with pytest.raises(sw.CorruptionError, match="symbolic link") as info:
            read()
        assert info.value.path == victim
    report = sw.verify(mine)
    assert [p["file"] for p in report.problems] == [victim]
    assert "symbolic link" in report.problems[0]["error"]


def test_a_linked_chunks_folder_is_refused_on_read_and_on_write(two):
    mine, other = two
    chunks = os.path.join(mine, "chunks")
    shutil.rmtree(chunks)
    os.symlink(os.path.join(other, "chunks"), chunks)
    before = files_under(other)
    with pytest.raises(sw.CorruptionError, match="symbolic link") as info:
        sw.load(mine).x.numpy()
    assert info.value.path.startswith(chunks)
    ds = sw.load(mine)
    with pytest.raises(sw.CorruptionError, match="symbolic link") as info, ds:
        ds.x.append(np.zeros(3, np.int32))
    assert info.value.path == chunks
    assert files_under(other) == before  # nothing written outside the dataset
    assert len(sw.load(mine).x) == 4  # still at its last commit
    # a new tensor's folder would be made through the link too
    with pytest.raises(sw.CorruptionError, match="symbolic link"), ds:
        ds.create_tensor("y", dtype="int8")
        ds.y.append(np.int8(1))
    assert files_under(other) == before


def test_a_linked_tensor_folder_is_refused(two):
    mine, other = two
    [victim] = chunk_files(mine)
    folder = os.path.dirname(victim)
    [theirs] = chunk_files(other)
    shutil.rmtree(folder)
    os.mkdir(os.path.join(os.path.dirname(theirs), "x"))
    os.symlink(os.path.dirname(theirs), folder)
    os.symlink(theirs, os.path.join(os.path.dirname(theirs), os.path.basename(victim)))
    with pytest.raises(sw.CorruptionError, match="symbolic link") as info:
        sw.load(mine).x.numpy()
    assert info.value.path == folder
    assert folder in [p["file"] for p in sw.verify(mine).problems] or any(
        "symbolic link" in p["error"] for p in sw.verify(mine).problems)


@pytest.mark.parametrize("what", ["versions", "manifest", "marker"])
def test_linked_manifests_and_markers_are_refused(two, what):
    mine, other = two
    if what == "versions":
        target, link = os.path.join(other, "versions"), os.path.join(mine, "versions")
        shutil.rmtree(link)
    elif what == "manifest":
        name = sorted(os.listdir(os.path.join(mine, "versions")))[-1]
        target, link = os.path.join(other, "versions", name), os.path.join(mine, "versions", name)
        os.unlink(link)
    else:
        target, link = os.path.join(other, "slicewise.json"), os.path.join(mine, "slicewise.json")
        os.unlink(link)
    os.symlink(target, link)
    with pytest.raises(sw.CorruptionError, match="symbolic link") as info:
        sw.load(mine).x.numpy()
    assert info.value.path == link
    report = sw.verify(mine)
    assert not report.ok and any("symbolic link" in p["error"] for p in report.problems)


def test_the_root_itself_may_be_a_link(two, tmp_path):
    mine, _ = two
    alias = str(tmp_path / "alias")
    os.symlink(mine, alias)
    ds = sw.load(alias)
    with ds:
        ds.x.append(np.full(3, 7, np.int32))
    assert sw.load(mine).x.numpy()[-1].tolist() == [7, 7, 7]
    assert sw.verify(alias).ok


def test_storage_refuses_links_in_every_operation(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "chunks").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "f").write_bytes(b"secret")
    os.symlink(elsewhere, root / "chunks" / "t1")
    os.symlink(elsewhere / "f", root / "chunks" / "f")
    storage = LocalStorage(str(root))
    for call in (
        lambda: storage.get("chunks/t1/f"),
        lambda: storage.get("chunks/f"),
        lambda: storage.get_range("chunks/f", 0, 2),
        lambda: storage.size("chunks/f"),
        lambda: storage.local_path("chunks/f"),
        lambda: storage.local_path("chunks/t1/f"),
        lambda: storage.put("chunks/t1/new", b"x"),
        lambda: storage.put("chunks/f", b"x"),
        lambda: storage.set_if_not_exists("chunks/t1/new", b"x"),
        lambda: storage.touch_all(["chunks/f"]),
        lambda: storage.list("chunks/t1"),
        lambda: storage.delete("chunks/t1/f"),
    ):
        with pytest.raises(sw.CorruptionError, match="symbolic link"):
            call()
    assert os.listdir(elsewhere) == ["f"] and (elsewhere / "f").read_bytes() == b"secret"
    assert storage.list("chunks") == ["chunks/f"]  # listed (not followed); reading is refused
    storage.delete("chunks/f")  # removes the link, never its target
    assert (elsewhere / "f").read_bytes() == b"secret"


def test_gc_removes_a_stray_link_never_its_target(two):
    mine, other = two
    [theirs] = chunk_files(other)
    stray = os.path.join(os.path.dirname(chunk_files(mine)[0]), "0" * 32)
    os.symlink(theirs, stray)
    report = sw.gc(mine, grace_seconds=0)
    assert stray.split(mine + os.sep)[1] in report.removed_files
    assert not os.path.lexists(stray) and os.path.exists(theirs)
    assert sw.verify(mine).ok and sw.verify(other).ok
