"""Samples: how a value becomes a tensor's stored bytes, and back.

This is the single code path for samples: `ds.append` in the parent and `DatasetWriter` in
a worker both encode through `SampleEncoder`, readers decode through `decode_sample`.
What a tensor accepts (its htype, dtype and compressions) is `TensorMeta` in htypes.py.

    value (array, scalar, str, dict, FileSample) --SampleEncoder.encode--> (bytes, shape)
    (bytes, shape, dtype) --decode_sample--> numpy array / str / object

A `FileSample` (from `sw.read`) is stored *as is* when its format equals the tensor's
sample compression (passthrough: a JPEG file into a jpeg tensor keeps its bytes), and is
decoded (and re-encoded) otherwise.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from slicewise.format.arena import Arena
from slicewise.format.chunk import MAX_CHUNK_UNCOMPRESSED
from slicewise.format.codecs import (
    BYTE_COMPRESSIONS,
    IMAGE_COMPRESSIONS,
    compress_bytes,
    decode_image,
    decompress_bounded,
    encode_image,
    encoded_image_shape,
    jpeg_shape,
    sniff_image_format,
)
from slicewise.format.errors import CorruptionError, DatasetError, SampleError
from slicewise.format.htypes import FileSample, TensorMeta
from slicewise.format.htypes_media import MEDIA_HTYPES, LinkError, decode_media, encode_media
from slicewise.format.images import (
    FILE_FORMATS,
    ImageFileError,
    array_pixels,
    check_file,
    decode_pixels,
    file_pixels,
    header_shape,
    sniff_file_format,
    verify_decode,
)

# ---- encode ---------------------------------------------------------------------------------


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_U32 = struct.Struct("<I").pack  # one stored class id
_ONE = (1,)
# exact types of a single class id that needs no check beyond its range (bool is excluded)
_PLAIN_INTS = frozenset({int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                         np.uint32, np.uint64})


class SampleEncoder:
    """Turns values for one tensor into (stored bytes, shape). Holds the writer-local state:
    the dtype fixed by the first sample of a dtype-less generic tensor, and class names.

    `encode` runs once per stored value, so the common cases (a named class label, a JPEG
    file into a jpeg tensor) take short paths decided here, at construction."""

    def __init__(self, name: str, meta: TensorMeta, class_base: int | None = None):
        self.name = name
        self.meta = meta
        # a class label stored as its 4 bytes, without a per-sample numpy array
        self._plain_labels = meta.htype == "class_label" and meta.sample_compression is None
        # a JPEG file into a jpeg image tensor is stored as it is (passthrough)
        self._jpeg_passthrough = meta.sample_compression == "jpeg" and (
            meta.is_image or meta.htype == "generic"
        )
        self.dtype: np.dtype | None = (
            np.dtype(meta.dtype) if meta.dtype not in (None, "str") else None
        )
        # class names [0, class_base) are committed (stable forever); later ones, and the
        # names this encoder adds, are local and travel in the receipt (FORMAT.md 2.2)
        self.class_names: list[str] = list(meta.class_names or [])
        self.class_base = len(self.class_names) if class_base is None else int(class_base)
        self.class_index = {n: i for i, n in enumerate(self.class_names)}
        # the first int id this writer stored that has no name (see _check_unnamed_ids)
        self._unnamed_id: int | None = None
        self.link_storage = None  # the writer's storage: its options fetch links (htypes_media)

    @property
    def local_class_names(self) -> list[str]:
        """Names whose ids are writer-local: resolved by name at commit."""
        return self.class_names[self.class_base :]

    @property
    def dtype_name(self) -> str:
        if self.meta.dtype == "str":
            return "str"
        return self.dtype.name if self.dtype is not None else "float64"

    def encode(self, value, arena: Arena | None = None) -> tuple[bytes, tuple[int, ...]]:
        """(stored bytes, shape) of one value. With an `arena` (a writer's), files and raw
        arrays are read or copied into it and a view of it comes back: valid until the
        writer has written the chunk it goes into."""
        meta = self.meta
        if meta.htype == "text":
            return self._encode_text(value)
        if meta.htype == "json":
            try:
                text = json.dumps(value, default=_json_default, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise SampleError(f"tensor {self.name!r}: value is not JSON-able: {exc}") from exc
            return self._compress(text.encode("utf-8")), (1,)
        if meta.htype == "class_label":
            return self._encode_labels(value)
        if meta.htype in MEDIA_HTYPES:
            return encode_media(self, value, self.link_storage)
        if isinstance(value, FileSample):
            return self._encode_file(value, arena)
        array = self._as_array(value)
        return self._encode_array(array, arena)

    # -- per kind

    def _encode_text(self, value) -> tuple[bytes, tuple[int, ...]]:
        if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "US":
            value = value.reshape(()).item()
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if not isinstance(value, str):
            raise SampleError(
                f"tensor {self.name!r} (text) takes strings, got {type(value).__name__}"
            )
        return self._compress(value.encode("utf-8")), (1,)

    def _label_id(self, label) -> int:
        if isinstance(label, (str, np.str_)):
            label = str(label)
            idx = self.class_index.get(label)
            if idx is None:
                if self._unnamed_id is not None:
                    raise self._mixed_labels(self._unnamed_id, label)
                idx = len(self.class_names)
                self.class_names.append(label)
                self.class_index[label] = idx
            return idx
        if isinstance(label, (bool, np.bool_)):
            raise SampleError(f"tensor {self.name!r}: a class label cannot be a bool")
        if isinstance(label, (int, np.integer)):
            if label < 0 or label > 0xFFFFFFFF:
                raise SampleError(f"tensor {self.name!r}: class label {label} out of range")
            self._check_unnamed_ids(int(label))
            return int(label)
        raise SampleError(
            f"tensor {self.name!r} (class_label) takes ints or strings, got {type(label).__name__}"
        )

    def _check_unnamed_ids(self, largest: int) -> None:
        """An int id at or past the names this writer knows has no name. It must not share a
        chunk with writer-local ids (>= class_base, remapped by name at commit), or the
        commit would remap it into some other class. So: unnamed ids only while this writer
        has no local names, and no new string names after an unnamed id."""
        if largest < len(self.class_names):
            return
        if self.local_class_names:
            raise self._mixed_labels(largest, self.local_class_names[0])
        self._unnamed_id = largest if self._unnamed_id is None else self._unnamed_id

    def _mixed_labels(self, label_id: int, name: str) -> SampleError:
        return SampleError(
            f"tensor {self.name!r}: class id {label_id} has no class name (there are "
            f"{len(self.class_names)}), and the new class name {name!r} would get an id of "
            "its own at commit: the two cannot be told apart. Give every class a name "
            "(class_names=... or info.update(class_names=...)) or use only ids"
        )

    def _encode_labels(self, value) -> tuple[bytes, tuple[int, ...]]:
        if self._plain_labels:  # one label: a known name, or an id that has a name
            kind = type(value)
            if kind is str:
                label_id = self.class_index.get(value)
                if label_id is not None:
                    return _U32(label_id), _ONE
            elif kind in _PLAIN_INTS and 0 <= value < len(self.class_names):
                return _U32(int(value)), _ONE
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "iu":
                if value.size and (value.min() < 0 or value.max() > 0xFFFFFFFF):
                    raise SampleError(f"tensor {self.name!r}: class label out of range")
                if value.size:
                    self._check_unnamed_ids(int(value.max()))
                ids = value.astype(np.uint32).reshape(-1)
                return self._compress(ids.tobytes()), (ids.size,)
            value = value.reshape(-1).tolist()
        if isinstance(value, (list, tuple)):
            ids = np.array([self._label_id(v) for v in value], dtype=np.uint32)
        else:
            ids = np.array([self._label_id(value)], dtype=np.uint32)
        return self._compress(ids.tobytes()), (ids.size,)

    def _as_array(self, value) -> np.ndarray:
        if isinstance(value, np.ndarray):
            array = value
        else:
            try:
                array = np.asarray(value)
            except Exception as exc:
                raise SampleError(
                    f"tensor {self.name!r}: cannot store a {type(value).__name__}: {exc}"
                ) from exc
        if array.dtype.hasobject or array.dtype.kind in "USVMm":
            raise SampleError(
                f"tensor {self.name!r} ({self.meta.htype}) cannot store a value of dtype "
                f"{array.dtype} ({type(value).__name__}); ragged lists must be appended "
                "one sample at a time"
            )
        if array.ndim == 0:
            array = array.reshape(1)
        if self.dtype is None:
            self.dtype = array.dtype
        elif array.dtype != self.dtype:
            array = self._cast(array)
        return array

    def _cast(self, array: np.ndarray) -> np.ndarray:
        """`array` as the tensor's dtype, or a SampleError when that would change a value
        beyond the target's usual rounding: integers out of range, a float that overflows
        to inf, an integer a float cannot hold exactly, anything that is not a number of
        the target's kind (floats, NaN and inf into integer tensors)."""
        target = self.dtype
        source = array.dtype
        if np.can_cast(source, target, "safe"):
            return array.astype(target)
        problem = "does not fit"
        if source.kind in "iub" and target.kind in "iu":
            info = np.iinfo(target)
            if array.size == 0 or (array.min() >= info.min and array.max() <= info.max):
                return array.astype(target)
            problem = f"holds values outside [{info.min}, {info.max}]"
        elif source.kind in "iu" and target.kind in "fc":
            with np.errstate(all="ignore"):
                cast = array.astype(target)
                exact = np.array_equal(cast.astype(source), array)
            if exact:
                return cast
            problem = f"holds integers that {target} cannot represent exactly"
        elif source.kind in "fc" and target.kind in "fc" and not (
            source.kind == "c" and target.kind == "f"
        ):
            with np.errstate(all="ignore"):
                cast = array.astype(target)
            if not np.array_equal(np.isfinite(cast), np.isfinite(array)):
                return self._refuse_cast(array, f"holds values beyond {target}'s range "
                                         f"(+-{np.finfo(target).max:.4g}), which would become inf")
            return cast
        elif source.kind == "f" and target.kind in "iu":
            problem = "is floating point (NaN, inf and fractions have no integer value)"
        return self._refuse_cast(array, problem)

    def _refuse_cast(self, array: np.ndarray, problem: str):
        raise SampleError(
            f"tensor {self.name!r} has dtype {self.dtype}, got a {array.dtype} sample of shape "
            f"{array.shape} that {problem}; cast it first"
        )

    def _encode_file(self, sample: FileSample, arena: Arena | None = None):
        if self.meta.is_image:
            return self._encode_image_file(sample, arena)
        if self._jpeg_passthrough and not sample.verify:
            # a JPEG into a jpeg tensor: its own bytes (read straight into the arena), its
            # shape from the SOF marker; anything else takes the general path below
            data = sample.read_into(arena) if arena is not None else sample.buffer()
            if data[:3] == b"\xff\xd8\xff":
                shape = jpeg_shape(data)
                if shape is not None:
                    return data, shape
            if type(data) is memoryview:
                data = bytes(data)
                arena.give_back()
            sample.keep(data)
        data = sample.buffer()
        fmt = sniff_image_format(data[:16])
        comp = self.meta.sample_compression
        if fmt is not None and fmt == comp and not sample.verify:
            try:
                shape = encoded_image_shape(data, fmt)
            except Exception as exc:
                raise SampleError(f"file {sample.path!r} is not a readable {fmt}: {exc}") from exc
            return data, shape
        if fmt is None:
            raise SampleError(
                f"tensor {self.name!r}: file {sample.path!r} is not a jpeg, png or webp image"
            )
        array = sample.numpy()
        if fmt == comp:  # verify=True: decoded fine, keep the original bytes
            return data, array.shape
        return self._encode_array(self._as_array(array), arena)

    def _encode_image_file(self, sample: FileSample, arena: Arena | None = None):
        """A file into an image tensor (format/images.py has the rules): checked by its
        structure, stored byte for byte when its format is the tensor's compression,
        otherwise decoded and converted for the htype once, here."""
        htype, comp = self.meta.htype, self.meta.sample_compression
        if arena is None or sample.verify or comp not in IMAGE_COMPRESSIONS:
            data = sample.buffer()
        else:
            data = sample.read_into(arena)  # the bytes most likely stay: read them in place
        taken = type(data) is memoryview
        try:
            if not len(data):
                raise ImageFileError("is empty (0 bytes)")
            fmt = sniff_file_format(data[:12])
            if fmt is None:
                raise ImageFileError(
                    f"is not an image ({', '.join(FILE_FORMATS)}): it starts with "
                    f"{bytes(data[:8])!r}")
            shape = check_file(data, fmt, htype)
            if fmt == comp:
                if sample.verify:
                    verify_decode(data)
                return data, shape if shape is not None else header_shape(data, htype)
            pixels = file_pixels(data, htype)
        except ImageFileError as exc:
            if taken:
                arena.give_back()
            raise SampleError(f"tensor {self.name!r} ({htype}): file {sample.path!r} {exc}") \
                from exc
        if taken:
            arena.give_back()
        return self._encode_array(self._as_array(pixels), arena, sample.path)

    def _encode_array(self, array: np.ndarray, arena: Arena | None = None,
                      path: str | None = None):
        comp = self.meta.sample_compression
        htype = self.meta.htype
        is_image = htype.startswith("image")
        if is_image:
            try:
                array = array_pixels(array, htype)  # (H, W, C): format/images.py
            except ImageFileError as exc:
                raise SampleError(f"tensor {self.name!r} ({htype}) {exc}") from exc
        if htype == "bbox" and (array.ndim != 2 or array.shape[-1] != 4):
            if array.ndim == 1 and array.shape[0] == 4:
                array = array.reshape(1, 4)
            else:
                raise SampleError(f"tensor {self.name!r} (bbox) takes (N, 4), got {array.shape}")
        if comp in IMAGE_COMPRESSIONS:
            try:
                data = encode_image(array, comp)
            except DatasetError as exc:
                source = f" file {path!r}" if path is not None else ""
                raise SampleError(
                    f"tensor {self.name!r} ({htype}, {comp}) cannot hold{source}: {exc}"
                    + ("; use htype='image.rgb' (drops it) or sample_compression='png'"
                       if "alpha" in str(exc) else "")) from exc
            shape = array.shape
            if len(shape) == 3 and shape[2] == 1 and not is_image:
                shape = shape[:2]
            return data, tuple(shape)
        if comp is None and arena is not None and array.nbytes:
            view = arena.take(array.nbytes)
            if view is not None:  # one copy, straight into the chunk's memory
                np.copyto(np.frombuffer(view, dtype=array.dtype).reshape(array.shape), array)
                return view, tuple(array.shape)
        raw = np.ascontiguousarray(array).tobytes()
        return self._compress(raw), tuple(array.shape)

    def _compress(self, raw: bytes) -> bytes:
        comp = self.meta.sample_compression
        if comp in BYTE_COMPRESSIONS:
            return compress_bytes(raw, comp)
        return raw


# ---- decode ---------------------------------------------------------------------------------


def decode_sample(
    meta: TensorMeta,
    data: bytes | memoryview,
    shape: tuple[int, ...],
    dtype: str,
    remap: tuple[int, np.ndarray] | None = None,
    link_storage=None,
):
    """Stored bytes -> the value `numpy()` returns for one sample.

    Stored bytes that do not decode raise CorruptionError without a path; the caller, who
    knows the chunk file and row, adds them (`with_location`). A link whose file cannot be
    fetched (with `link_storage`'s options) raises LinkError, not CorruptionError."""
    try:
        if meta.htype in MEDIA_HTYPES and meta.htype != "polygon":
            return decode_media(meta, data, shape, dtype, link_storage)
        return _decode_sample(meta, data, shape, dtype, remap)
    except LinkError:
        raise  # the dataset is fine; the linked file is not there
    except DatasetError as exc:
        if isinstance(exc, CorruptionError) or "pip install" not in str(exc):
            raise CorruptionError(str(exc)) from exc
        raise  # a missing optional codec package is not corruption
    except MemoryError:
        raise  # out of memory is reported as itself, never as corruption
    except Exception as exc:
        raise CorruptionError(f"stored sample does not decode: {exc}") from exc


def with_location(exc: CorruptionError, where: str, row: int | None = None) -> CorruptionError:
    """`exc` (from decode_sample) restated with the chunk file (and row) it came from."""
    if exc.path is not None:
        return exc
    at = f"chunk file {where}" + (f", sample {row}" if row is not None else "")
    return CorruptionError(f"{at}: {exc}", where)


def _decode_sample(meta, data, shape, dtype, remap):
    comp = meta.sample_compression
    if comp in IMAGE_COMPRESSIONS:
        if meta.is_image:  # the htype's form: format/images.py
            return decode_pixels(data, meta.htype, tuple(shape))
        array = decode_image(data)
        if array.shape != tuple(shape):
            # codecs without a gray mode (webp) decode more bands than were stored
            mode = {2: "L", 3: "RGB", 4: "RGBA"}.get(len(shape) if len(shape) == 2 else shape[-1])
            if mode is not None:
                array = _convert_image(array, mode)
        return array
    if comp in BYTE_COMPRESSIONS:
        if meta.htype in ("text", "json"):
            limit = MAX_CHUNK_UNCOMPRESSED
        else:
            limit = np.dtype(dtype).itemsize
            for dim in shape:
                limit *= int(dim)
            if limit > MAX_CHUNK_UNCOMPRESSED:
                raise CorruptionError(f"a sample of shape {tuple(shape)} is over the limit")
        data = decompress_bounded(data, comp, limit)
    if meta.htype == "text":
        return bytes(data).decode("utf-8")
    if meta.htype == "json":
        return json.loads(bytes(data).decode("utf-8"))
    if meta.htype == "polygon":
        return decode_media(meta, data, shape, dtype)
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if remap is not None:
        array = apply_label_remap(array, remap)
    return array


def apply_label_remap(array: np.ndarray, remap: tuple[int, np.ndarray]) -> np.ndarray:
    """Writer-local class ids (>= base) to global ids (FORMAT.md 2.2)."""
    base, ids = remap
    if not array.size or array.max() < base:
        return array
    local = array >= base
    positions = array[local].astype(np.int64) - base
    if positions.max() >= len(ids):
        raise CorruptionError(
            f"class id {int(positions.max()) + base} is past the chunk's label table "
            f"({base} + {len(ids)} ids)"
        )
    array = array.copy()
    array[local] = ids[positions]
    return array


def _convert_image(array: np.ndarray, mode: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(array).convert(mode))
