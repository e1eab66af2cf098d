"""The htypes that are not one plain array per sample: links, polygons, audio, video.

Hooked into htypes.py (HTYPES, make_tensor_meta) and samples.py (SampleEncoder.encode,
decode_sample); kept here so those modules stay about arrays, text and images. Deep Lake
3's names, shapes and dtypes:

- `link[image]` (also `link[image.rgb]`, `link[image.gray]`, `link[audio]`,
  `link[video]`): `sw.link(path_or_url)`. The sample stored is a small UTF-8 JSON record,
  `{"path": ...}` (and `"creds_key"` when given): never the file, never pickled. Its
  header shape is the linked file's, read at append (which also checks that the path
  exists); `numpy()` fetches the file through fsspec and decodes it as the inner htype.
- `polygon`: a list of polygons, each an (N_i, 2 or more) float32 array. Stored as one
  float32 array (polygons, max points, dims) padded with NaN rows, which is also its
  shape; read back as Deep Lake 3 returns it, a list of (N_i, dims) arrays.
- `audio`: an mp3, flac or wav file stored byte for byte; `numpy()` is (samples,
  channels) float32 in [-1, 1]. wav is decoded with the stdlib `wave` module (8, 16, 24,
  32-bit PCM), mp3 and flac (and float wav) with PyAV (`pip install 'slicewise[media]'`).
- `video`: an mp4, mkv or avi file stored byte for byte; `numpy()` is (frames, H, W, 3)
  uint8 RGB decoded with PyAV.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from slicewise.format.codecs import (
    AUDIO_COMPRESSIONS,
    BYTE_COMPRESSIONS,
    IMAGE_COMPRESSIONS,
    VIDEO_COMPRESSIONS,
)
from slicewise.format.errors import CorruptionError, DatasetError, SampleError

# link[inner] -> the inner htype a fetched file is decoded as
LINK_HTYPES = {
    "link[image]": "image",
    "link[image.rgb]": "image.rgb",
    "link[image.gray]": "image.gray",
    "link[audio]": "audio",
    "link[video]": "video",
}

MEDIA_HTYPES: dict[str, dict] = {
    "polygon": {"dtype": "float32", "compressions": BYTE_COMPRESSIONS, "kwargs": ()},
    "audio": {"dtype": "float32", "compressions": AUDIO_COMPRESSIONS, "kwargs": ()},
    "video": {"dtype": "uint8", "compressions": VIDEO_COMPRESSIONS, "kwargs": ()},
    **{
        name: {
            "dtype": "str",  # the stored record is text; numpy() gives the inner htype's
            "compressions": {"image": IMAGE_COMPRESSIONS, "audio": AUDIO_COMPRESSIONS,
                             "video": VIDEO_COMPRESSIONS}[inner.split(".")[0]],
            "kwargs": (),
        }
        for name, inner in LINK_HTYPES.items()
    },
}

_MEDIA_INSTALL = "pip install 'slicewise[media]'"


class LinkSample:
    """A link to a file (`sw.link`): the tensor stores the path or URL, not the bytes."""

    __slots__ = ("path", "creds_key")

    def __init__(self, path, creds_key: str | None = None):
        path = path if isinstance(path, str) else os.fspath(path)
        if not path:
            raise DatasetError("sw.link needs a path or URL")
        if creds_key is not None and not isinstance(creds_key, str):
            raise DatasetError(f"creds_key must be a string, got {type(creds_key).__name__}")
        self.path = path
        self.creds_key = creds_key

    def __getstate__(self):
        return (self.path, self.creds_key)

    def __setstate__(self, state):
        self.path, self.creds_key = state

    def __repr__(self) -> str:
        return f"link({self.path!r})"


class LinkError(SampleError):
    """A linked file that cannot be fetched (missing, unreachable, no access)."""


def plain_arrays(meta) -> bool:
    """True when a tensor's stored samples are plain C-order arrays a reader may use as
    they are (no sample compression, no text, no link record, no padded polygons)."""
    return meta.sample_compression is None and meta.dtype != "str" and meta.htype != "polygon"


def media_meta_dtype(name: str, htype: str, dtype, sample_compression):
    """make_tensor_meta's checks for these htypes: the dtype they store (None: not one of
    them)."""
    if htype not in MEDIA_HTYPES:
        return None
    spec = MEDIA_HTYPES[htype]
    if htype in ("audio", "video") and sample_compression is None:
        raise DatasetError(
            f"tensor {name!r}: htype {htype!r} stores encoded files; give "
            f"sample_compression= one of {', '.join(spec['compressions'])}")
    if dtype is not None and htype in ("audio", "video") and dtype != spec["dtype"]:
        raise DatasetError(f"tensor {name!r}: htype {htype!r} reads as {spec['dtype']}, "
                           f"not {dtype}")
    return spec["dtype"] if htype != "polygon" or dtype is None else dtype


# ---- fetching -------------------------------------------------------------------------------


def _options_for(path: str, storage) -> dict:
    """fsspec options for a linked URL: the dataset's storage options when the link uses
    the dataset's own protocol (an S3 dataset linking to S3 objects), else none (fsspec's
    defaults: environment variables, ~/.aws, instance roles...)."""
    options = getattr(storage, "storage_options", None)
    protocol = getattr(storage, "protocol", None)
    if not options or not protocol:
        return {}
    scheme = path.split("://", 1)[0]
    same = {scheme, protocol} <= {"s3", "s3a"} or scheme == protocol
    return dict(options) if same else {}


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def fetch_link(path: str, storage=None) -> bytes:
    """The bytes of a linked file, local or through fsspec; LinkError names the path."""
    try:
        if _is_url(path):
            import fsspec

            with fsspec.open(path, "rb", **_options_for(path, storage)) as f:
                return f.read()
        local = path[len("file://"):] if path.startswith("file://") else path
        with open(local, "rb") as f:
            return f.read()
    except Exception as exc:  # fsspec backends raise many kinds
        raise LinkError(f"cannot fetch linked file {path!r}: {type(exc).__name__}: {exc}") \
            from exc


def link_record(data: bytes | memoryview) -> dict:
    """The stored record of one link sample ({"path": ..., "creds_key": ...})."""
    try:
        record = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptionError(f"stored link record is not JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise CorruptionError("stored link record has no path")
    return record


def link_bytes(data: bytes | memoryview, storage=None) -> bytes:
    """`tobytes()` of a link sample: the linked file's bytes."""
    return fetch_link(link_record(data)["path"], storage)


# ---- encoding -------------------------------------------------------------------------------


def encode_media(encoder, value, storage=None) -> tuple[bytes, tuple[int, ...]]:
    """(stored bytes, shape) of one value for a link, polygon, audio or video tensor."""
    htype = encoder.meta.htype
    if htype in LINK_HTYPES:
        return _encode_link(encoder, value, storage)
    if htype == "polygon":
        return _encode_polygons(encoder, value)
    return _encode_media_file(encoder, value)


def _encode_link(encoder, value, storage) -> tuple[bytes, tuple[int, ...]]:
    htype = encoder.meta.htype
    if not isinstance(value, LinkSample):
        raise SampleError(
            f"tensor {encoder.name!r} ({htype}) takes sw.link(path), got "
            f"{type(value).__name__}")
    path = value.path
    if not _is_url(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        path = os.path.abspath(local)  # a relative path would depend on the reader's cwd
    # Deep Lake 3's verify=True (its default for link tensors): the file is read here,
    # so a missing or unreadable one is refused now, and its shape is recorded
    try:
        data = fetch_link(path, storage)
        shape = _inner_shape(LINK_HTYPES[htype], data)
    except LinkError as exc:  # it names the path
        raise SampleError(f"tensor {encoder.name!r} ({htype}): {exc}") from exc
    except DatasetError as exc:
        raise SampleError(f"tensor {encoder.name!r} ({htype}): linked file {path!r} {exc}") \
            from exc
    record = {"path": path}
    if value.creds_key is not None:
        record["creds_key"] = value.creds_key
    stored = json.dumps(record, separators=(",", ":")).encode("utf-8")
    return encoder._compress(stored), shape


def _inner_shape(inner: str, data: bytes) -> tuple[int, ...]:
    if inner.startswith("image"):
        from slicewise.format.images import (
            FILE_FORMATS,
            ImageFileError,
            check_file,
            header_shape,
            sniff_file_format,
        )

        fmt = sniff_file_format(data[:12])
        if fmt is None:
            raise SampleError(f"is not an image ({', '.join(FILE_FORMATS)})")
        try:
            shape = check_file(data, fmt, inner)
            return shape if shape is not None else header_shape(data, inner)
        except ImageFileError as exc:
            raise SampleError(str(exc)) from exc
    if inner == "audio":
        return decode_audio(data, sniff_media(data)).shape
    return _video_shape(data)


def sniff_media(data: bytes | memoryview) -> str | None:
    """mp3, flac, wav, mp4, mkv or avi from a file's first bytes, or None."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


def _encode_media_file(encoder, value) -> tuple[bytes, tuple[int, ...]]:
    """An audio or video file, stored byte for byte; its shape read now (audio: decoded,
    so a broken file is refused here; video: from the container, without decoding)."""
    from slicewise.format.htypes import FileSample

    htype, comp = encoder.meta.htype, encoder.meta.sample_compression
    if isinstance(value, FileSample):
        data, where = value.buffer(), f"file {value.path!r}"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data, where = bytes(value), "the bytes"
    else:
        raise SampleError(
            f"tensor {encoder.name!r} ({htype}) stores encoded {comp} files: append "
            f"sw.read(path), got {type(value).__name__}")
    fmt = sniff_media(data)
    if fmt != comp:
        raise SampleError(
            f"tensor {encoder.name!r} ({htype}, {comp}): {where} is "
            f"{'a ' + fmt + ' file' if fmt else 'not an audio or video file'}; slicewise "
            f"does not transcode, store it in a {fmt or comp} tensor")
    try:
        shape = decode_audio(data, fmt).shape if htype == "audio" else _video_shape(data)
    except DatasetError as exc:
        raise SampleError(f"tensor {encoder.name!r} ({htype}): {where}: {exc}") from exc
    return data, tuple(int(d) for d in shape)


def _encode_polygons(encoder, value) -> tuple[bytes, tuple[int, ...]]:
    """Polygons (a list of (N_i, dims) point lists) as one NaN-padded float32 array."""
    if isinstance(value, np.ndarray) and value.ndim == 3:
        polygons = list(value)
    elif isinstance(value, (list, tuple)):
        polygons = list(value)
    elif value is None:
        polygons = []
    else:
        raise SampleError(
            f"tensor {encoder.name!r} (polygon) takes a list of polygons, each (N, 2) "
            f"points, got {type(value).__name__}")
    dtype = np.dtype(encoder.meta.dtype or "float32")
    arrays = []
    for i, polygon in enumerate(polygons):
        try:
            points = np.asarray(polygon, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SampleError(f"tensor {encoder.name!r} (polygon): polygon {i}: {exc}") from exc
        if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] < 2:
            raise SampleError(
                f"tensor {encoder.name!r} (polygon): polygon {i} must be (N >= 1, 2 or more) "
                f"points, got shape {points.shape}")
        if not np.isfinite(points).all():
            raise SampleError(f"tensor {encoder.name!r} (polygon): polygon {i} has NaN or inf")
        arrays.append(points.astype(dtype))
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise SampleError(f"tensor {encoder.name!r} (polygon): polygons of different "
                          f"dimensions {sorted(dims)} in one sample")
    ndim = dims.pop() if dims else 2
    most = max((len(a) for a in arrays), default=0)
    padded = np.full((len(arrays), most, ndim), np.nan, dtype=dtype)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    encoder.dtype = dtype
    return encoder._compress(padded.tobytes()), padded.shape


# ---- decoding -------------------------------------------------------------------------------


def decode_media(meta, data, shape, dtype, storage=None):
    """The value `numpy()` returns for one stored sample of these htypes (polygon: after
    any lz4/zstd decompression)."""
    htype = meta.htype
    if htype in LINK_HTYPES:
        inner = LINK_HTYPES[htype]
        file = fetch_link(link_record(data)["path"], storage)
        if inner.startswith("image"):
            from slicewise.format.images import file_pixels

            return file_pixels(file, inner)
        if inner == "audio":
            return decode_audio(file, sniff_media(file))
        return decode_video(file)
    if htype == "polygon":
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        return [p[~np.isnan(p).any(axis=1)].copy() for p in array]
    if htype == "audio":
        return decode_audio(data, meta.sample_compression)
    return decode_video(data)


def decode_audio(data: bytes | memoryview, fmt: str | None) -> np.ndarray:
    """(samples, channels) float32 in [-1, 1]: wav (PCM) with the stdlib, else PyAV."""
    if fmt == "wav":
        array = _wav_pcm(bytes(data))
        if array is not None:
            return array
    elif fmt not in ("mp3", "flac"):
        raise SampleError("is not an mp3, flac or wav file")
    return _av_audio(bytes(data))


def _wav_pcm(data: bytes) -> np.ndarray | None:
    """A PCM wav file through the stdlib `wave` module; None for what it cannot read
    (float or compressed wav: PyAV)."""
    import wave

    try:
        with wave.open(io.BytesIO(data)) as f:
            channels, width, frames = f.getnchannels(), f.getsampwidth(), f.getnframes()
            raw = f.readframes(frames)
    except (wave.Error, EOFError):
        return None
    frames = len(raw) // (width * channels)
    raw = raw[: frames * width * channels]
    if width == 1:
        ints = np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0
        scale = 128.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32)
        scale = float(1 << 23)
    elif width in (2, 4):
        ints = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float32)
        scale = float(1 << (8 * width - 1))
    else:
        return None
    return (ints / scale).reshape(frames, channels)


def _av():
    try:
        import av
    except ImportError:
        raise DatasetError(
            f"decoding mp3, flac and video needs PyAV: {_MEDIA_INSTALL}") from None
    return av


def _av_audio(data: bytes) -> np.ndarray:
    av = _av()
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise SampleError("has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout,
                                          rate=stream.rate)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray())
            for out in resampler.resample(None):
                parts.append(out.to_ndarray())
    except av.FFmpegError as exc:
        raise SampleError(f"does not decode: {exc}") from exc
    channels = stream.channels
    if not parts:
        return np.zeros((0, channels), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts, axis=1).T, dtype=np.float32)


def _video_shape(data: bytes | memoryview) -> tuple[int, int, int, int]:
    """(frames, H, W, 3) from the container: frames counted from its packets (no
    decoding)."""
    av = _av()
    try:
        with av.open(io.BytesIO(bytes(data))) as container:
            if not container.streams.video:
                raise SampleError("has no video stream")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            frames = sum(1 for p in container.demux(stream) if p.size)
    except av.FFmpegError as exc:
        raise SampleError(f"is not a readable video: {exc}") from exc
    return (frames, height, width, 3)


def decode_video(data: bytes | memoryview) -> np.ndarray:
    """(frames, H, W, 3) uint8 RGB, every frame, with PyAV."""
    av = _av()
    try:
        with av.open(io.BytesIO(bytes(data))) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            height, width = stream.codec_context.height, stream.codec_context.width
    except av.FFmpegError as exc:
        raise SampleError(f"video does not decode: {exc}") from exc
    if not frames:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.stack(frames)
