"""Arrow, Parquet and pandas with real pyarrow and pandas: round trips keep bytes, shapes,
dtypes and labels; Parquet is written and read in parallel (engine workers)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import slicewise as sw  # noqa: E402

N = 40
CLASSES = ["cat", "dog", "bird"]


def _jpeg(value: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, 12, 3), value, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Every column kind: JPEG images (of two heights), class labels, a fixed-shape float
    tensor, scalars, ragged 2-D ints, text and json; many small chunks."""
    path = tmp_path_factory.mktemp("arrow") / "ds"
    ds = sw.empty(str(path), chunk_target_bytes=3000)
    files = [_jpeg(i * 5, 10 + i % 2) for i in range(N)]
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=CLASSES)
        ds.create_tensor("emb", htype="embedding", dtype="float32")
        ds.create_tensor("score", dtype="float64")
        ds.create_tensor("ragged", dtype="int16")
        ds.create_tensor("caption", htype="text")
        ds.create_tensor("meta", htype="json")
        for i in range(N):
            image = sw.read(f"{i}.jpg")
            image.keep(files[i])
            ds.append({"images": image, "labels": CLASSES[i % 3],
                       "emb": np.full((2, 3), i, np.float32), "score": i / 4,
                       "ragged": np.arange(2 * (i % 4 + 1), dtype=np.int16).reshape(2, -1),
                       "caption": f"photo {i}", "meta": {"i": i, "odd": bool(i % 2)}})
    return sw.load(str(path)), files


def _same(ds, other, files) -> None:
    assert len(other) == len(ds) == N
    assert list(other.tensors) == list(ds.tensors)
    for name, tensor in ds.tensors.items():
        back = other[name]
        assert back.htype == tensor.htype and back.meta.dtype == tensor.meta.dtype, name
        assert back.sample_compression == tensor.sample_compression, name
        assert back.shape == tensor.shape, name
    assert [other.images[i].tobytes() for i in range(N)] == files
    assert other.labels.info.class_names == CLASSES
    assert other.labels.data()["text"] == ds.labels.data()["text"]
    for name in ("emb", "score", "ragged"):
        for a, b in zip(ds[name].numpy(aslist=True), other[name].numpy(aslist=True),
                        strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all(), name
    assert other.caption.data()["value"] == ds.caption.data()["value"]
    assert other.meta.data()["value"] == ds.meta.data()["value"]


def test_to_arrow_types(source):
    ds, files = source
    table = ds.to_arrow()
    types = {field.name: field.type for field in table.schema}
    assert types["images"] == pa.binary()
    assert table.column("images").to_pylist() == files
    assert pa.types.is_dictionary(types["labels"])
    assert table.column("labels").cast(pa.string()).to_pylist() == [
        CLASSES[i % 3] for i in range(N)]
    assert isinstance(types["emb"], pa.FixedShapeTensorType)
    assert table.column("emb").combine_chunks().to_numpy_ndarray().shape == (N, 2, 3)
    assert types["score"] == pa.float64()
    assert types["ragged"] == pa.list_(pa.list_(pa.int16()))
    assert table.column("ragged")[3].as_py() == np.arange(8).reshape(2, 4).tolist()
    assert types["caption"] == pa.string()
    assert json.loads(table.column("meta")[5].as_py()) == {"i": 5, "odd": True}
    assert ds.to_arrow(tensors=["score"], start=2, stop=5).column("score").to_pylist() == [
        0.5, 0.75, 1.0]


def test_arrow_round_trip(source, tmp_path):
    ds, files = source
    _same(ds, sw.from_arrow(ds.to_arrow(), str(tmp_path / "back")), files)


@pytest.mark.timeout(120)
def test_parquet_round_trip_in_parallel(source, tmp_path):
    ds, files = source
    out = tmp_path / "pq"
    ds.to_parquet(str(out), num_workers=2, part_bytes=8000, row_group_bytes=3000)
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) > 1 and parts[0] == "part-00000.parquet"
    assert sum(pq.ParquetFile(out / p).num_row_groups for p in parts) > len(parts) - 1
    assert pq.read_table(str(out)).num_rows == N
    with pytest.raises(FileExistsError):
        ds.to_parquet(str(out))
    back = sw.from_parquet(str(out), str(tmp_path / "back"), num_workers=2)
    _same(ds, back, files)
    assert back.version_info["meta"]["integration"] == "parquet"


@pytest.mark.timeout(120)
def test_single_parquet_file_and_plain_tables(source, tmp_path):
    ds, files = source
    target = str(tmp_path / "one.parquet")
    ds.to_parquet(target, row_group_bytes=3000)
    assert pq.ParquetFile(target).num_row_groups > 1
    _same(ds, sw.from_parquet(target, str(tmp_path / "back"), num_workers=2), files)

    plain = pa.table({"x": np.arange(6, dtype=np.int32), "name": list("abcdef"),
                      "v": [[1.0], [2.0, 3.0], [], [4.0], [5.0], [6.0]],
                      "img": files[:6],
                      "cls": pa.array(["a", "b", "a", "c", "b", "a"]).dictionary_encode()})
    pq.write_table(plain, tmp_path / "plain.parquet", row_group_size=2)
    got = sw.from_parquet(str(tmp_path / "plain.parquet"), str(tmp_path / "plain"),
                          num_workers=2)
    assert got.x.numpy().reshape(-1).tolist() == list(range(6))
    assert got.x.dtype == np.int32 and got.name.htype == "text"
    assert got.v[1].numpy().tolist() == [2.0, 3.0] and got.v[2].numpy().size == 0
    assert got.img.htype == "image" and got.img.sample_compression == "jpeg"
    assert got.img[4].tobytes() == files[4]
    assert got.cls.htype == "class_label"
    assert [t[0] for t in got.cls.data()["text"]] == ["a", "b", "a", "c", "b", "a"]


def test_to_pandas(source):
    pd = pytest.importorskip("pandas")
    ds, files = source
    frame = ds.to_pandas()
    assert list(frame.columns) == list(ds.tensors) and len(frame) == N
    assert isinstance(frame["labels"].dtype, pd.CategoricalDtype)
    assert frame["labels"].tolist() == [CLASSES[i % 3] for i in range(N)]
    assert frame["score"].dtype == np.float64 and frame["score"][8] == 2.0
    assert frame["images"][3] == files[3]
    assert frame["emb"][4].shape == (2, 3) and frame["emb"][4].flags.writeable
    assert frame["caption"][1] == "photo 1" and frame["meta"][2] == {"i": 2, "odd": False}
