"""link[...] htypes (`deeplake.link`), polygon, audio and video, written as Deep Lake 3's
docs write them, on real files: a JPEG made with Pillow, a WAV made with the stdlib
`wave` module, FLAC and MP4 made with PyAV (when installed), and a link to an object on
a moto S3 server."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

import slicewise as deeplake
from slicewise.format.errors import DatasetError, SampleError


@pytest.fixture
def jpeg_file(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "cat.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    return path


def make_wav(path, channels=2, rate=8000, frames=400):
    t = np.arange(frames)
    samples = np.stack([(np.sin(t / (5 + c)) * 16000).astype(np.int16)
                        for c in range(channels)], axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return samples


# ---- link[image] ------------------------------------------------------------------------


def test_link_image_fetches_on_read(tmp_path, jpeg_file):
    from PIL import Image

    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("images", htype="link[image]", sample_compression="jpeg")
    ds.images.append(deeplake.link(str(jpeg_file)))
    ds.images.extend([deeplake.link(jpeg_file), deeplake.link(f"file://{jpeg_file}")])

    expected = np.asarray(Image.open(jpeg_file).convert("RGB"))
    assert ds.images.shape == (3, 20, 30, 3)
    assert ds.images[0].shape == (20, 30, 3)
    assert np.array_equal(ds.images[0].numpy(), expected)
    assert ds.images.numpy().shape == (3, 20, 30, 3)
    assert ds.images[1].tobytes() == jpeg_file.read_bytes()  # the file, fetched

    # the tensor stores the path (JSON text), not the file: the chunk is tiny
    reopened = deeplake.load(str(tmp_path / "ds"))
    assert sum(reopened.images._state.nbytes) < 3 * 200
    # a changed file reads as its new content: the link is followed on every read
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(jpeg_file)
    assert reopened.images[2].numpy().shape == (5, 6, 3)
    assert deeplake.verify(str(tmp_path / "ds")).ok


def test_link_rgb_gray_and_row_append(tmp_path, jpeg_file):
    ds = deeplake.empty(str(tmp_path / "ds"))
    with ds:
        ds.create_tensor("gray", htype="link[image.gray]")
        ds.create_tensor("labels", htype="class_label")
        ds.append({"gray": deeplake.link(jpeg_file), "labels": "cat"})
    assert ds.gray[0].numpy().shape == (20, 30, 1)
    assert ds.labels.data()["text"] == [["cat"]]
    with pytest.raises(DatasetError, match="has no dtype"):
        ds.create_tensor("bad", htype="link[image]", dtype="float32")


def test_missing_link_refused_at_append(tmp_path, jpeg_file):
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("images", htype="link[image]", sample_compression="jpeg")
    ds.images.append(deeplake.link(jpeg_file))
    missing = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(SampleError) as err:
        ds.images.append(deeplake.link(str(missing)))
    assert str(missing) in str(err.value) and "'images'" in str(err.value)
    with pytest.raises(SampleError, match="missing.jpg"):  # all or none
        ds.images.extend([deeplake.link(jpeg_file), deeplake.link(missing)])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(SampleError, match="notes.jpg"):
        ds.images.append(deeplake.link(text))
    with pytest.raises(SampleError, match="sw.link"):
        ds.images.append(str(jpeg_file))  # a plain string is not a link
    assert len(deeplake.load(str(tmp_path / "ds")).images) == 1


def test_link_removed_after_append_fails_on_read(tmp_path, jpeg_file):
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("images", htype="link[image]")
    ds.images.append(deeplake.link(jpeg_file))
    jpeg_file.unlink()
    with pytest.raises(SampleError, match="cat.jpg"):
        ds.images[0].numpy()


@pytest.mark.timeout(120)
def test_link_to_s3_object(s3_options, s3_url, jpeg_file):
    """A dataset on S3 linking to an S3 object: fetched with the dataset's options."""
    import fsspec

    fs = fsspec.filesystem("s3", **s3_options)
    target = f"{s3_url}-files/cat.jpg"
    fs.pipe(target, jpeg_file.read_bytes())
    ds = deeplake.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("images", htype="link[image]", sample_compression="jpeg")
    ds.images.append(deeplake.link(target, creds_key="my_s3_creds"))
    with pytest.raises(SampleError, match="missing.jpg"):
        ds.images.append(deeplake.link(f"{s3_url}-files/missing.jpg"))
    again = deeplake.load(s3_url, storage_options=s3_options)
    assert len(again.images) == 1
    assert again.images[0].numpy().shape == (20, 30, 3)
    assert again.images[0].tobytes() == jpeg_file.read_bytes()


# ---- polygon ----------------------------------------------------------------------------


def test_polygon_lists_of_arrays(tmp_path):
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("polygons", htype="polygon", sample_compression=None)
    triangle = [[0, 0], [10, 0], [5, 8]]
    square = np.array([[1, 1], [4, 1], [4, 4], [1, 4]], dtype=np.float64)
    ds.polygons.append([triangle, square])
    ds.polygons.append([square])
    ds.polygons.append([])

    first = ds.polygons[0].numpy()
    assert isinstance(first, list) and len(first) == 2
    assert first[0].dtype == np.float32 and first[0].shape == (3, 2)
    assert np.array_equal(first[1], square.astype(np.float32))
    assert ds.polygons[0].shape == (2, 4, 2)  # (polygons, most points, dims)
    rows = ds.polygons.numpy()
    assert [len(r) for r in rows] == [2, 1, 0]
    assert np.array_equal(rows[1][0], square)
    with pytest.raises(SampleError, match="polygon 0"):
        ds.polygons.append([[[1, 2]], [[np.nan, 1]]][1:])
    with pytest.raises(SampleError, match="different dimensions"):
        ds.polygons.append([[[0, 0, 0]], [[1, 1]]])
    assert len(ds.polygons) == 3


def test_polygon_compressed(tmp_path):
    pytest.importorskip("lz4")
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("polygons", htype="polygon", sample_compression="lz4")
    ds.polygons.append([[[0.5, 1.5], [2, 3]]])
    assert ds.polygons[0].numpy()[0].tolist() == [[0.5, 1.5], [2.0, 3.0]]


# ---- audio ------------------------------------------------------------------------------


def test_audio_wav_decoded_with_stdlib(tmp_path):
    path = tmp_path / "a.wav"
    samples = make_wav(path)
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("audios", htype="audio", sample_compression="wav")
    ds.audios.append(deeplake.read(str(path)))
    assert ds.audios.shape == (1, 400, 2)
    audio = ds.audios[0].numpy()
    assert audio.dtype == np.float32 and audio.shape == (400, 2)
    assert np.allclose(audio, samples / 32768.0)
    assert ds.audios[0].tobytes() == path.read_bytes()  # stored byte for byte


def test_audio_refusals(tmp_path, jpeg_file):
    ds = deeplake.empty(str(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="sample_compression"):
        ds.create_tensor("audios", htype="audio")
    ds.create_tensor("audios", htype="audio", sample_compression="mp3")
    path = tmp_path / "a.wav"
    make_wav(path)
    with pytest.raises(SampleError, match="wav"):  # no transcoding
        ds.audios.append(deeplake.read(str(path)))
    with pytest.raises(SampleError, match="sw.read"):
        ds.audios.append(np.zeros((10, 1), np.float32))
    with pytest.raises(SampleError, match="missing.mp3"):
        ds.audios.append(deeplake.read(str(tmp_path / "missing.mp3")))
    assert len(ds.audios) == 0


def test_link_audio_wav(tmp_path):
    path = tmp_path / "a.wav"
    samples = make_wav(path, channels=1)
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("audios", htype="link[audio]", sample_compression="wav")
    ds.audios.append(deeplake.link(path))
    assert np.allclose(ds.audios[0].numpy(), samples / 32768.0)


def test_audio_flac_decoded_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    tone = (np.sin(np.arange(800) / 10) * 16000).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone[None], format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    path = tmp_path / "a.flac"
    path.write_bytes(buf.getvalue())
    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("audios", htype="audio", sample_compression="flac")
    ds.audios.append(deeplake.read(path))
    audio = ds.audios[0].numpy()
    assert audio.shape == (800, 1) and ds.audios.shape == (1, 800, 1)
    assert np.allclose(audio[:, 0], tone / 32768.0)  # flac is lossless


# ---- video ------------------------------------------------------------------------------


def test_video_mp4_decoded_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), i * 60, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path = tmp_path / "clip.mp4"
    path.write_bytes(buf.getvalue())

    ds = deeplake.empty(str(tmp_path / "ds"))
    ds.create_tensor("videos", htype="video", sample_compression="mp4")
    ds.videos.append(deeplake.read(str(path)))
    assert ds.videos.shape == (1, 4, 24, 32, 3)
    video = ds.videos[0].numpy()
    assert video.dtype == np.uint8 and video.shape == (4, 24, 32, 3)
    assert np.abs(video[:, 12, 16, 0].astype(int) - [0, 60, 120, 180]).max() < 12
    assert ds.videos[0].tobytes() == path.read_bytes()

    ds.create_tensor("linked", htype="link[video]", sample_compression="mp4")
    ds.linked.append(deeplake.link(path))
    assert np.array_equal(ds.linked[0].numpy(), video)
    with pytest.raises(SampleError, match="a.wav"):
        wav = tmp_path / "a.wav"
        make_wav(wav)
        ds.videos.append(deeplake.read(wav))
