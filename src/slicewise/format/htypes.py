"""htypes: what a tensor accepts, and the files (`sw.read`) that become its samples.

    create_tensor(name, htype=..., dtype=..., sample_compression=...)
        --make_tensor_meta--> TensorMeta (stored in the manifest, checked on load)
    sw.read(path) --> FileSample (opened only when appended)

How a value becomes stored bytes and back (`SampleEncoder`, `decode_sample`) is samples.py;
the media htypes (link, polygon, audio, video) are htypes_media.py.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from slicewise.format.arena import Arena
from slicewise.format.chunk import is_stored_dtype
from slicewise.format.codecs import (
    BYTE_COMPRESSIONS,
    CHUNK_COMPRESSIONS,
    IMAGE_COMPRESSIONS,
    SAMPLE_COMPRESSIONS,
    decode_image,
    normalize_compression,
)
from slicewise.format.errors import DatasetError, SampleError
from slicewise.format.htypes_media import MEDIA_HTYPES
from slicewise.format.images import (
    FILE_FORMATS,
    ImageFileError,
    check_file,
    header_shape,
    sniff_file_format,
)

# htype -> (default dtype, allowed sample compressions, extra keyword arguments it accepts)
HTYPES: dict[str, dict] = {
    "generic": {"dtype": None, "compressions": SAMPLE_COMPRESSIONS, "kwargs": ()},
    "image": {"dtype": "uint8", "compressions": SAMPLE_COMPRESSIONS, "kwargs": ()},
    "image.rgb": {"dtype": "uint8", "compressions": SAMPLE_COMPRESSIONS, "kwargs": ()},
    "image.gray": {"dtype": "uint8", "compressions": SAMPLE_COMPRESSIONS, "kwargs": ()},
    "class_label": {
        "dtype": "uint32",
        "compressions": BYTE_COMPRESSIONS,
        "kwargs": ("class_names",),
    },
    "text": {"dtype": "str", "compressions": BYTE_COMPRESSIONS, "kwargs": ()},
    "json": {"dtype": "str", "compressions": BYTE_COMPRESSIONS, "kwargs": ("schema",)},
    "bbox": {"dtype": "float32", "compressions": BYTE_COMPRESSIONS, "kwargs": ("coords",)},
    "embedding": {"dtype": "float32", "compressions": BYTE_COMPRESSIONS, "kwargs": ()},
    # Deep Lake 3's annotation htypes stored as plain arrays, with its dtypes and shapes:
    # binary_mask (H, W, objects) bool; segment_mask (H, W) uint32 class ids, the names in
    # info.class_names; keypoints_coco (3 * keypoints, objects) int32 (x, y, visibility);
    # point_cloud (points, 3 or more) float32
    "binary_mask": {"dtype": "bool", "compressions": BYTE_COMPRESSIONS, "kwargs": ()},
    "segment_mask": {"dtype": "uint32", "compressions": BYTE_COMPRESSIONS,
                     "kwargs": ("class_names",)},
    "keypoints_coco": {"dtype": "int32", "compressions": BYTE_COMPRESSIONS,
                       "kwargs": ("keypoints", "connections")},
    "point_cloud": {"dtype": "float32", "compressions": BYTE_COMPRESSIONS, "kwargs": ()},
    # link[...], polygon, audio, video: format/htypes_media.py
    **MEDIA_HTYPES,
}

_NAME_MAX = 200
_RESERVED = re.compile(r"[/\\\x00]")
_TENSOR_ID = re.compile(r"^t[0-9a-f]{1,32}$")


def validate_tensor_name(name: object) -> str:
    """Tensor names end up in messages and APIs (never in paths: chunk paths use ids), but we
    still refuse anything path-like or hidden so exports to folders stay safe."""
    if not isinstance(name, str) or not name:
        raise DatasetError(f"a tensor name must be a non-empty string, got {name!r}")
    if _RESERVED.search(name) or ".." in name:
        raise DatasetError(f"invalid tensor name {name!r}: no '/', '\\', NUL or '..'")
    if name[0] in "._":
        raise DatasetError(f"invalid tensor name {name!r}: must not start with '.' or '_'")
    if len(name) > _NAME_MAX:
        raise DatasetError(f"invalid tensor name {name[:40]!r}...: longer than {_NAME_MAX}")
    if not name.isprintable():
        raise DatasetError(f"invalid tensor name {name!r}: non-printable characters")
    return name


@dataclass
class TensorMeta:
    """A tensor's schema, stored in every manifest (JSON)."""

    id: str
    htype: str
    dtype: str | None
    sample_compression: str | None
    chunk_compression: str | None
    htype_kwargs: dict = field(default_factory=dict)
    class_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        if self.class_names is None:
            out.pop("class_names")
        return out

    @classmethod
    def from_json(cls, data: dict) -> TensorMeta:
        """Build from a manifest's JSON, checking every field (a manifest may come from a
        stranger): ValueError says which field is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a tensor entry must be an object")
        tensor_id = data.get("id")
        if not isinstance(tensor_id, str) or not _TENSOR_ID.match(tensor_id):
            raise ValueError(f"tensor id {str(tensor_id)[:40]!r} is not 't' + hex digits")
        htype = data.get("htype")
        if htype not in HTYPES:
            raise ValueError(f"unknown htype {str(htype)[:40]!r}")
        dtype = data.get("dtype")
        if dtype is not None and not is_stored_dtype(dtype):
            raise ValueError(f"unsupported dtype {str(dtype)[:40]!r}")
        if (dtype == "str") != (HTYPES[htype]["dtype"] == "str"):
            raise ValueError(f"dtype {dtype!r} does not fit htype {htype!r}")
        sample_compression = data.get("sample_compression")
        if (
            sample_compression is not None
            and sample_compression not in HTYPES[htype]["compressions"]
        ):
            raise ValueError(f"sample_compression {str(sample_compression)[:40]!r}")
        chunk_compression = data.get("chunk_compression")
        if chunk_compression is not None and chunk_compression not in CHUNK_COMPRESSIONS:
            raise ValueError(f"chunk_compression {str(chunk_compression)[:40]!r}")
        htype_kwargs = data.get("htype_kwargs") or {}
        info = data.get("info") or {}
        if not isinstance(htype_kwargs, dict) or not isinstance(info, dict):
            raise ValueError("htype_kwargs and info must be objects")
        class_names = data.get("class_names")
        if class_names is not None:
            if not isinstance(class_names, list) or not all(
                isinstance(n, str) for n in class_names
            ):
                raise ValueError("class_names must be a list of strings")
            if len(set(class_names)) != len(class_names):
                raise ValueError("class_names has duplicates")
            class_names = list(class_names)
        return cls(
            id=tensor_id,
            htype=htype,
            dtype=dtype,
            sample_compression=sample_compression,
            chunk_compression=chunk_compression,
            htype_kwargs=dict(htype_kwargs),
            class_names=class_names,
            info=dict(info),
        )

    @property
    def is_image(self) -> bool:
        return self.htype.startswith("image")


def make_tensor_meta(
    tensor_id: str,
    name: str,
    htype: str,
    dtype,
    sample_compression,
    chunk_compression,
    htype_kwargs: dict,
) -> TensorMeta:
    if htype is None:
        htype = "generic"
    if htype not in HTYPES:
        raise DatasetError(
            f"tensor {name!r}: unknown htype {htype!r}; choose one of {', '.join(HTYPES)}"
        )
    spec = HTYPES[htype]
    unknown = set(htype_kwargs) - set(spec["kwargs"])
    if unknown:
        raise DatasetError(
            f"tensor {name!r}: htype {htype!r} takes no argument(s) {sorted(unknown)}"
            + (f"; it takes {list(spec['kwargs'])}" if spec["kwargs"] else "")
        )
    sample_compression = normalize_compression(
        sample_compression,
        spec["compressions"],
        f"sample_compression for {htype!r} tensor {name!r}",
    )
    chunk_compression = normalize_compression(
        chunk_compression, CHUNK_COMPRESSIONS, f"chunk_compression for tensor {name!r}"
    )
    if sample_compression is not None and chunk_compression is not None:
        raise DatasetError(
            f"tensor {name!r}: use sample_compression or chunk_compression, not both"
        )
    if dtype is not None:
        if spec["dtype"] == "str":
            raise DatasetError(f"tensor {name!r}: htype {htype!r} has no dtype argument")
        try:
            dtype = np.dtype(dtype)
        except TypeError as exc:
            raise DatasetError(f"tensor {name!r}: invalid dtype {dtype!r}") from exc
        if dtype.kind not in "biuf c" or dtype.hasobject:
            raise DatasetError(f"tensor {name!r}: unsupported dtype {dtype}")
        dtype = dtype.str.lstrip("<|=") if dtype.byteorder != ">" else dtype.str
        dtype = np.dtype(dtype).name
    else:
        dtype = spec["dtype"]
    if htype in MEDIA_HTYPES:  # links keep "str" (the stored record) with an image codec
        from slicewise.format.htypes_media import media_meta_dtype

        dtype = media_meta_dtype(name, htype, dtype, sample_compression)
    elif sample_compression in IMAGE_COMPRESSIONS:
        if dtype not in (None, "uint8"):
            raise DatasetError(
                f"tensor {name!r}: {sample_compression} stores uint8 images, dtype is {dtype}"
            )
        dtype = "uint8"
    class_names = None
    kwargs = dict(htype_kwargs)
    if htype == "class_label":
        names = kwargs.pop("class_names", None) or []
        if isinstance(names, (str, bytes)) or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"tensor {name!r}: class_names must be a list of strings")
        if len(set(names)) != len(names):
            raise DatasetError(f"tensor {name!r}: class_names has duplicates")
        class_names = list(names)
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise DatasetError(f"tensor {name!r}: htype arguments must be JSON-able: {exc}") from exc
    return TensorMeta(
        id=tensor_id,
        htype=htype,
        dtype=dtype,
        sample_compression=sample_compression,
        chunk_compression=chunk_compression,
        htype_kwargs=kwargs,
        class_names=class_names,
    )


# ---- files: sw.read -------------------------------------------------------------------------


class FileSample:
    """A file to be stored as one sample, opened only when it is appended (`sw.read`).

    Stored byte for byte when its format matches the tensor's sample compression; decoded
    otherwise. Missing or undecodable files raise SampleError naming the path at append time.
    """

    __slots__ = ("path", "storage_options", "verify", "_bytes")

    def __init__(self, path, verify: bool = False, storage_options: dict | None = None):
        self.path = os.fspath(path) if not isinstance(path, str) else path
        self.verify = verify
        self.storage_options = storage_options
        self._bytes: bytes | None = None

    def __getstate__(self):
        return (self.path, self.verify, self.storage_options)

    def __setstate__(self, state):
        self.path, self.verify, self.storage_options = state
        self._bytes = None

    def __repr__(self) -> str:
        return f"read({self.path!r})"

    def buffer(self) -> bytes:
        if self._bytes is not None:
            return self._bytes
        try:
            if "://" in self.path and not self.path.startswith("file://"):
                import fsspec

                with fsspec.open(self.path, "rb", **(self.storage_options or {})) as f:
                    return f.read()
            path = self.path[len("file://") :] if self.path.startswith("file://") else self.path
            return _read_local_file(path)
        except OSError as exc:
            raise SampleError(f"cannot read file {self.path!r}: {exc}") from exc

    def keep(self, data: bytes) -> None:
        """Remember the file's bytes (read once already), so later reads reuse them."""
        self._bytes = data

    def read_into(self, arena: Arena) -> bytes | memoryview:
        """The file's bytes, read straight into `arena` when it is a local file that fits
        (a view of the arena comes back), else as `buffer()` gives them."""
        path = self.path
        if self._bytes is not None or ("://" in path and not path.startswith("file://")):
            return self.buffer()
        local = path[len("file://") :] if path.startswith("file://") else path
        try:
            fd = os.open(local, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                view = arena.take(size)
                if view is None:
                    return _read_open_file(fd, size)
                # one byte past the size: a file that grew meanwhile is read whole below
                got = os.readv(fd, [view, bytearray(1)])
                if got == size:
                    return view
                arena.give_back()
                os.lseek(fd, 0, os.SEEK_SET)
                return _read_open_file(fd, size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SampleError(f"cannot read file {self.path!r}: {exc}") from exc

    @property
    def compression(self) -> str | None:
        """The file's image format (jpeg, png, webp, bmp, gif, tiff), or None."""
        return sniff_file_format(self.buffer()[:12])

    @property
    def shape(self) -> tuple[int, ...]:
        """(H, W, C) as an `image` tensor stores it (checked, not decoded)."""
        data = self.buffer()
        fmt = sniff_file_format(data[:12])
        if fmt is None:
            raise SampleError(f"file {self.path!r} is not an image ({', '.join(FILE_FORMATS)})")
        try:
            shape = check_file(data, fmt, "image")
            return shape if shape is not None else header_shape(data, "image")
        except ImageFileError as exc:
            raise SampleError(f"file {self.path!r} {exc}") from exc

    def numpy(self) -> np.ndarray:
        """The decoded image (HWC uint8 for 8-bit images)."""
        data = self.buffer()
        try:
            return decode_image(data)
        except Exception as exc:
            raise SampleError(f"file {self.path!r} cannot be decoded as an image: {exc}") from exc

    @property
    def array(self) -> np.ndarray:
        """The decoded image, as Deep Lake 3's `deeplake.read(path).array` (a property
        there too; `numpy()` is the method form)."""
        return self.numpy()


def _read_local_file(path: str) -> bytes:
    """The whole file in one read() sized by fstat (a third cheaper than open().read() for
    the ~100 KB files of an image ingest); a file that changes size meanwhile is read to
    its end all the same."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_open_file(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _read_open_file(fd: int, size: int) -> bytes:
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data
    parts = [data]
    while parts[-1]:
        parts.append(os.read(fd, 1 << 20))
    return b"".join(parts)
