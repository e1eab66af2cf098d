"""Images of every common kind into image tensors, through the Python API (issue 10).

Real files made with Pillow (image_kinds.py): the stored pixels are Pillow's
convert("RGB") / convert("L") of each file, exactly when stored losslessly, within JPEG's
error when re-encoded; JPEG files stay byte for byte in jpeg tensors; bad files are
refused at the append, naming the tensor and the file (and the input index in an eval).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import slicewise as sw
from image_kinds import garbage_idat_png, make_bad, make_kinds
from slicewise.format.errors import SampleError
from slicewise.transform.errors import TransformError

JPEG_MEAN_ERROR = 3.0  # mean absolute difference per pixel value after a JPEG re-encode


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    return make_kinds(tmp_path_factory.mktemp("kinds"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad(tmp_path_factory.mktemp("bad"))


def _filled(kinds, htype, compression, url="memory://kinds"):
    ds = sw.empty(url, overwrite=True)
    with ds:
        ds.create_tensor("images", htype=htype, sample_compression=compression)
        for kind in kinds.values():
            ds.images.append(sw.read(kind.path))
    return ds


@pytest.mark.parametrize("compression", ["png", None])
def test_image_rgb_stored_losslessly_gives_exactly_pillows_rgb(kinds, compression):
    ds = _filled(kinds, "image.rgb", compression)
    assert ds.images.shape == (len(kinds), 48, 64, 3)
    stacked = ds.images.numpy()  # one array: every row is (H, W, 3) uint8
    assert stacked.shape == (len(kinds), 48, 64, 3) and stacked.dtype == np.uint8
    for row, (name, kind) in enumerate(kinds.items()):
        assert np.array_equal(stacked[row], kind.rgb()), name


def test_image_rgb_jpeg_keeps_jpeg_files_and_converts_the_rest_once(kinds):
    ds = _filled(kinds, "image.rgb", "jpeg")
    for row, (name, kind) in enumerate(kinds.items()):
        pixels = ds.images[row].numpy()
        assert pixels.shape == (48, 64, 3) and ds.images[row].shape == (48, 64, 3), name
        if kind.jpeg:  # gray, CMYK, ICC, progressive: kept as they are, converted on read
            assert ds.images[row].tobytes() == kind.path.read_bytes(), name
            assert np.array_equal(pixels, kind.rgb()), name
        else:
            error = np.abs(pixels.astype(int) - kind.rgb()).mean()
            assert error < JPEG_MEAN_ERROR, (name, error)


def test_image_gray_gives_h_w_1(kinds):
    ds = _filled(kinds, "image.gray", "png")
    assert ds.images.shape == (len(kinds), 48, 64, 1)
    for row, (name, kind) in enumerate(kinds.items()):
        assert np.array_equal(ds.images[row].numpy(), kind.gray()), name
    gray = sw.empty("memory://gray-arrays", overwrite=True)
    gray.create_tensor("g", htype="image.gray")
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gray.g.extend([plane, plane[:, :, None]])
    assert gray.g.numpy().shape == (2, 3, 4, 1)
    assert np.array_equal(gray.g[0].numpy()[:, :, 0], plane)


def test_image_keeps_three_dimensions_and_refuses_what_it_cannot_hold(kinds):
    channels = {"gray.jpeg": 1, "onebit.png": 1, "sixteen.png": 1, "UPPER.TIFF": 1,
                "la.png": 2, "rgba.png": 4, "palette_transparent.png": 4, "lossless.webp": 4,
                "cmyk.jpg": 3, "palette.png": 3, "animated.gif": 3}
    ds = _filled(kinds, "image", "png")
    for row, name in enumerate(kinds):
        pixels = ds.images[row].numpy()
        assert pixels.shape == (48, 64, channels.get(name, 3)), name
    assert np.array_equal(ds.images[list(kinds).index("cmyk.jpg")].numpy(),
                          kinds["cmyk.jpg"].rgb())

    jpeg = sw.empty("memory://image-jpeg", overwrite=True)
    jpeg.create_tensor("images", htype="image", sample_compression="jpeg")
    jpeg.images.append(sw.read(kinds["baseline.jpg"].path))
    jpeg.images.append(sw.read(kinds["gray.jpeg"].path))  # (H, W, 1), not (H, W)
    with pytest.raises(SampleError) as refused:
        jpeg.images.append(sw.read(kinds["rgba.png"].path))
    assert "'images'" in str(refused.value) and "rgba.png" in str(refused.value)
    jpeg.images.append(np.zeros((5, 6), np.uint8))  # an (H, W) array becomes (H, W, 1)
    assert [jpeg.images[i].numpy().shape for i in range(3)] == [
        (48, 64, 3), (48, 64, 1), (5, 6, 1)]
    assert len(jpeg.images) == 3


def test_image_rgb_converts_arrays_and_refuses_others():
    ds = sw.empty("memory://rgb-arrays", overwrite=True)
    ds.create_tensor("images", htype="image.rgb", sample_compression="png")
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    ds.images.append(gray)
    assert np.array_equal(ds.images[0].numpy(), np.repeat(gray[:, :, None], 3, axis=2))
    with pytest.raises(SampleError, match="'images'"):
        ds.images.append(np.zeros((2, 3, 4, 5), np.uint8))
    assert len(ds.images) == 1


@pytest.mark.parametrize("name, reason", [
    ("truncated.jpg", "truncated"), ("truncated.png", "truncated"), ("crc.png", "CRC"),
    ("empty.jpg", "empty"), ("text.jpg", "not an image")])
@pytest.mark.parametrize("compression", ["jpeg", "png"])
def test_bad_files_are_refused_at_the_append_naming_tensor_and_file(bad, name, reason,
                                                                   compression):
    ds = sw.empty("memory://bad", overwrite=True)
    ds.create_tensor("images", htype="image.rgb", sample_compression=compression)
    ds.create_tensor("labels", htype="class_label")
    with pytest.raises(SampleError) as tensor_append:
        ds.images.append(sw.read(bad[name]))
    message = str(tensor_append.value)
    assert "'images'" in message and name in message and reason in message, message
    with pytest.raises(SampleError, match=name):
        ds.append({"images": sw.read(bad[name]), "labels": "cat"})
    with ds:
        ds.images.append(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(SampleError, match=rf"{name}.*item 1 of the extend"):
            ds.images.extend([np.zeros((8, 8, 3), np.uint8), sw.read(bad[name])])
    assert len(ds.images) == 1 and len(ds.labels) == 0  # nothing of the failed appends


def test_a_full_decode_only_when_asked(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(garbage_idat_png())  # chunks and CRCs whole: the structure is fine
    ds = sw.empty("memory://verify", overwrite=True)
    ds.create_tensor("images", htype="image.rgb", sample_compression="png")
    ds.images.append(sw.read(path))  # stored as it is, unchecked pixels
    with pytest.raises(SampleError, match="garbage.png.*does not decode"):
        ds.images.append(sw.read(path, verify=True))
    assert len(ds.images) == 1


def _store(item, sample_out):
    path, label = item
    sample_out.append({"images": sw.read(path), "labels": label})


@pytest.mark.timeout(120)
def test_sample_out_names_the_input_index_and_file_and_commits_nothing(kinds, bad, tmp_path):
    items = [(str(kind.path), "good") for kind in list(kinds.values())[:4]]
    items.insert(2, (str(bad["truncated.jpg"]), "bad"))
    ds = sw.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("images", htype="image.rgb", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label")
    with pytest.raises(TransformError) as failed:
        sw.compute(_store)().eval(items, ds, scheduler="threaded", num_workers=2)
    assert failed.value.index == 2
    assert "truncated.jpg" in str(failed.value) and "index 2" in str(failed.value)
    assert len(sw.load(str(tmp_path / "ds")).images) == 0
    report = sw.compute(_store)().eval(items, ds, scheduler="threaded", num_workers=2,
                                       ignore_errors=True)
    assert [skipped.index for skipped in report.skipped] == [2]
    again = sw.load(str(tmp_path / "ds"))
    assert len(again.images) == 4
    for row, (path, _) in enumerate(items[:2] + items[3:]):
        assert again.images[row].tobytes() == Path(path).read_bytes()


@pytest.mark.timeout(120)
def test_ingest_folder_mixed_kinds_in_order_with_labels(kinds, bad, tmp_path):
    import shutil

    src = tmp_path / "src"
    for index, kind in enumerate(kinds.values()):
        folder = src / ("cats" if index % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(kind.path, folder / kind.path.name)
    shutil.copy(bad["empty.jpg"], src / "cats" / "empty.jpg")
    shutil.copy(bad["truncated.png"], src / "dogs" / "truncated.png")
    from slicewise.transform.ingest import list_image_folder

    _, files = list_image_folder(src)
    bad_rows = [i for i, (path, _) in enumerate(files) if Path(path).name in (
        "empty.jpg", "truncated.png")]

    with pytest.raises(TransformError) as failed:
        sw.ingest_folder(src, str(tmp_path / "strict"), workers=2, progressbar=False)
    assert failed.value.index == bad_rows[0]
    assert Path(files[bad_rows[0]][0]).name in str(failed.value)
    assert not sw.exists(str(tmp_path / "strict"))  # a failed first ingest leaves nothing

    report = sw.ingest_folder(src, str(tmp_path / "ds"), workers=2, progressbar=False,
                              ignore_errors=True, verify=True)
    assert [skipped.index for skipped in report.skipped] == bad_rows
    ds = sw.load(str(tmp_path / "ds"), read_only=True)
    good = [item for i, item in enumerate(files) if i not in bad_rows]
    assert len(ds) == len(good) and ds.images.htype == "image.rgb"
    names = list(ds.labels.info.class_names)
    labels = ds.labels.numpy().reshape(-1)
    by_name = {kind.path.name: kind for kind in kinds.values()}
    for row, (path, class_name) in enumerate(good):
        kind = by_name[Path(path).name]
        assert names[int(labels[row])] == class_name
        pixels = ds.images[row].numpy()
        assert pixels.shape == (48, 64, 3)
        if kind.jpeg:
            assert ds.images[row].tobytes() == kind.path.read_bytes()
            assert np.array_equal(pixels, kind.rgb())
        else:
            assert np.abs(pixels.astype(int) - kind.rgb()).mean() < JPEG_MEAN_ERROR
