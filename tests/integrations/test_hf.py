"""Hugging Face `datasets` both ways, with the real library: Image features byte for byte,
ClassLabel names and ids, numbers, arrays and text; from_hf in parallel (2 workers)."""

from __future__ import annotations

import io

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

import slicewise as sw  # noqa: E402

N = 30
NAMES = ["angular_leaf_spot", "bean_rust", "healthy"]


def _image(value: int, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((9 + value % 2, 14, 3), value, np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _hf_dataset():
    f = datasets.features
    files = [_image(i * 7, "JPEG") for i in range(N)]
    features = f.Features({
        "image": f.Image(), "labels": f.ClassLabel(names=NAMES),
        "box": f.Array2D(shape=(2, 2), dtype="float32"),
        "tokens": f.List(f.Value("int32")), "text": f.Value("string"),
        "score": f.Value("float64"),
    })
    data = {"image": [{"bytes": b, "path": None} for b in files],
            "labels": [i % 3 for i in range(N)],
            "box": [np.full((2, 2), i, np.float32) for i in range(N)],
            "tokens": [list(range(i % 5)) for i in range(N)],
            "text": [f"bean {i}" for i in range(N)],
            "score": [i / 2 for i in range(N)]}
    return datasets.Dataset.from_dict(data, features=features), files


def _check(ds, files) -> None:
    assert len(ds) == N
    assert ds.image.htype == "image" and ds.image.sample_compression == "jpeg"
    assert [ds.image[i].tobytes() for i in range(N)] == files  # byte for byte
    assert ds.labels.htype == "class_label" and ds.labels.info.class_names == NAMES
    assert ds.labels.numpy().reshape(-1).tolist() == [i % 3 for i in range(N)]
    assert ds.box.dtype == np.float32 and ds.box.shape == (N, 2, 2)
    assert ds.box[7].numpy().tolist() == [[7.0, 7.0], [7.0, 7.0]]
    assert ds.tokens.dtype == np.int32 and ds.tokens[4].numpy().tolist() == [0, 1, 2, 3]
    assert ds.tokens[5].numpy().size == 0
    assert ds.text.data()["value"][3] == "bean 3"
    assert ds.score.dtype == np.float64 and ds.score[5].numpy().tolist() == [2.5]


@pytest.mark.timeout(120)
def test_from_hf_in_memory_in_parallel(tmp_path):
    hf_ds, files = _hf_dataset()
    ds = sw.from_hf(hf_ds, str(tmp_path / "ds"), num_workers=2, rows_per_task=7)
    _check(ds, files)


@pytest.mark.timeout(120)
def test_from_hf_on_disk(tmp_path):
    hf_ds, files = _hf_dataset()
    hf_ds.save_to_disk(str(tmp_path / "hf"))
    on_disk = datasets.load_from_disk(str(tmp_path / "hf"))
    assert on_disk.cache_files
    _check(sw.from_hf(on_disk, str(tmp_path / "ds"), num_workers=2, rows_per_task=8), files)


@pytest.mark.timeout(120)
def test_to_hf_and_back(tmp_path):
    hf_ds, files = _hf_dataset()
    ds = sw.from_hf(hf_ds, str(tmp_path / "ds"), num_workers=0)
    out = ds.to_hf()
    f = datasets.features
    assert isinstance(out.features["image"], f.Image)
    assert out.features["labels"] == f.ClassLabel(names=NAMES)
    assert isinstance(out.features["box"], f.Array2D)
    assert out.with_format("arrow")["image"].combine_chunks().field("bytes").to_pylist() == files
    assert out[4]["labels"] == 1 and out[4]["text"] == "bean 4"
    assert out[4]["image"].size == (14, 9)  # decoded by datasets itself
    assert out.features["labels"].int2str(out[5]["labels"]) == NAMES[2]
    _check(sw.from_hf(out, str(tmp_path / "again"), num_workers=2), files)


def test_a_dataset_dict_is_refused(tmp_path):
    hf_ds, _ = _hf_dataset()
    with pytest.raises(TypeError, match="one split"):
        sw.from_hf(datasets.DatasetDict({"train": hf_ds}), str(tmp_path / "ds"))
