"""sw.ingest_folder: the library side of `slicewise ingest`."""

from __future__ import annotations

import pytest

import slicewise as sw
from slicewise.transform.ingest import list_image_folder, parse_size

from .conftest import make_jpeg_tree


def test_list_image_folder_is_sorted_and_filters(tmp_path):
    make_jpeg_tree(tmp_path / "src", classes=("b", "a"), per_class=2)
    (tmp_path / "src" / "a" / "readme.md").write_text("x")
    (tmp_path / "src" / "a" / "deeper").mkdir()
    make_jpeg_tree(tmp_path / "src" / "a" / "deeper", classes=("x",), per_class=1)
    (tmp_path / "src" / ".hidden").mkdir()
    names, files = list_image_folder(tmp_path / "src")
    assert names == ["a", "b"]
    assert [(p.split("src/")[1], c) for p, c in files] == [
        ("a/000.jpg", "a"), ("a/001.jpg", "a"), ("a/deeper/x/000.jpg", "a"),
        ("b/000.jpg", "b"), ("b/001.jpg", "b"),
    ]


def test_parse_size():
    assert parse_size("250x200") == (250, 200)
    assert parse_size((3, 4)) == (3, 4)
    for bad in ("250", "ax2", "0x5", "-1x5"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.timeout(90)
def test_ingest_folder_into_an_open_dataset_then_again(tmp_path):
    files = make_jpeg_tree(tmp_path / "src", per_class=3)
    ds = sw.empty(str(tmp_path / "ds"))
    report = sw.ingest_folder(tmp_path / "src", ds, scheduler="serial", progressbar=False,
                              checkpoint_interval=4)
    assert report.checkpoints == 2  # after 4 and 8 of the 9 files; the end is the commit
    assert report.rows_written == len(files) == len(ds)
    names = list(ds.labels.info.class_names)
    assert names == ["birds", "cats", "dogs"]
    _, listed = list_image_folder(tmp_path / "src")
    for row, (path, class_name) in enumerate(listed):
        assert ds.images[row].tobytes() == open(path, "rb").read()
        assert names[int(ds.labels[row].numpy().reshape(-1)[0])] == class_name
    version = ds.version
    again = sw.ingest_folder(tmp_path / "src", str(tmp_path / "ds"), workers=2,
                             progressbar=False)
    assert again.rows_written == 0 and again.resumed_from == len(files)
    assert sw.load(str(tmp_path / "ds")).version == version


def test_ingest_refuses_a_dataset_with_other_tensors(tmp_path):
    make_jpeg_tree(tmp_path / "src", per_class=1)
    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("other")
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        sw.ingest_folder(tmp_path / "src", ds, progressbar=False)
