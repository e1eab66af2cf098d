"""Opening datasets: sw.empty, sw.load, sw.dataset, sw.exists, sw.delete, with Deep Lake
3's arguments (those that mean nothing here are accepted and ignored; its S3 `creds` become
fsspec storage options), and the dataset marker (`slicewise.json`) they write and check.
"""

from __future__ import annotations

import json
import os
from typing import Any

from slicewise.dataset.dataset import Dataset
from slicewise.format.commit import (
    Transaction,
    checked_by_gc_record,
    publish,
    write_gc_record,
)
from slicewise.format.errors import CorruptionError, DatasetError
from slicewise.format.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MARKER_KEY,
    Version,
    find_version,
    list_version_seqs,
    read_version,
)
from slicewise.format.storage import Storage, open_storage
from slicewise.format.writer import DEFAULT_CHUNK_TARGET_BYTES, default_chunk_target_bytes

# What a dataset marker may ask for (a marker may come from a stranger).
MIN_CHUNK_TARGET = 1
MAX_CHUNK_TARGET = 1024**3


def _marker(chunk_target_bytes: int) -> bytes:
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "chunk_target_bytes": int(chunk_target_bytes),
    }
    return json.dumps(doc).encode()


def _read_marker(storage: Storage) -> dict | None:
    try:
        data = storage.get(MARKER_KEY)
    except FileNotFoundError:
        return None
    where = storage.full_path(MARKER_KEY)
    try:
        if len(data) > 64 * 1024:
            raise ValueError(f"{len(data)} bytes, a marker is a few dozen")
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError("not a slicewise marker")
        target = doc.get("chunk_target_bytes", DEFAULT_CHUNK_TARGET_BYTES)
        if type(target) is not int or not MIN_CHUNK_TARGET <= target <= MAX_CHUNK_TARGET:
            raise ValueError(f"chunk_target_bytes {str(target)[:40]} is not a sane chunk size")
    except Exception as exc:
        raise CorruptionError(f"{where} is not a slicewise dataset marker: {exc}", where) from exc
    if doc.get("format_version") != FORMAT_VERSION:
        raise CorruptionError(
            f"{where}: format_version {str(doc.get('format_version'))[:40]}; this slicewise "
            f"reads {FORMAT_VERSION} (written by a newer slicewise?)",
            where,
        )
    return doc


def _path_str(path) -> str:
    if isinstance(path, Dataset):
        return path.path

    return path if isinstance(path, str) else os.fspath(path)


def exists(path: str | os.PathLike | Dataset, storage_options: dict | None = None,
           **deeplake_kwargs: Any) -> bool:
    """True when `path` holds a slicewise dataset.

    Args:
        path: a directory, memory://... or s3://... URL (or a Dataset).
        storage_options: fsspec options for the storage (e.g. S3 credentials).
        **deeplake_kwargs: Deep Lake 3's `creds`, `token`, `org_id` (creds become
            storage options; the others are ignored).

    Returns:
        Whether the dataset marker is there.

    Raises:
        TypeError: an unknown keyword argument, or bad `creds`.

    Example:
        >>> sw.exists("memory://nothing-here")
        False
    """
    storage_options = _deeplake_options("exists", deeplake_kwargs, storage_options)
    storage = open_storage(_path_str(path), storage_options)
    return storage.exists(MARKER_KEY)


def empty(
    path: str | os.PathLike | Dataset,
    overwrite: bool = False,
    storage_options: dict | None = None,
    chunk_target_bytes: int | None = None,
    **deeplake_kwargs: Any,
) -> Dataset:
    """Create a new, empty dataset at `path` (a directory, memory://..., s3://...).

    Args:
        path: where: a directory, memory://... or s3://... URL.
        overwrite: replace a dataset (or other files) already there.
        storage_options: fsspec options for the storage (e.g. S3 credentials).
        chunk_target_bytes: the chunk files' target size (default: chosen for the
            storage; 1 byte to 1 GiB).
        **deeplake_kwargs: Deep Lake 3's `creds` (become storage options) and its cache,
            token and runtime arguments (ignored).

    Returns:
        The new Dataset, with one empty version.

    Raises:
        DatasetError: a dataset (or other files) already there without overwrite, a bad
            `chunk_target_bytes`, or another process created one at the same time.
        TypeError: an unknown keyword argument, or bad `creds`.

    Example:
        >>> ds = sw.empty("memory://doc-empty", overwrite=True)
        >>> len(ds)
        0
    """
    storage_options = _deeplake_options("empty", deeplake_kwargs, storage_options)
    url = _path_str(path)
    storage = open_storage(url, storage_options)
    if storage.exists(MARKER_KEY) or list_version_seqs(storage):
        if not overwrite:
            raise DatasetError(
                f"a dataset already exists at {storage.url}; pass overwrite=True to replace it "
                "or use sw.load()"
            )
        storage.delete_all()
        storage = open_storage(url, storage_options)
    elif storage.supports_listing and storage.list("") and not overwrite:
        raise DatasetError(
            f"{storage.url} is not empty and is not a slicewise dataset; refusing to write there"
        )
    target = int(chunk_target_bytes or default_chunk_target_bytes(storage))
    if not MIN_CHUNK_TARGET <= target <= MAX_CHUNK_TARGET:
        raise DatasetError(
            f"chunk_target_bytes={target}: choose between {MIN_CHUNK_TARGET} and "
            f"{MAX_CHUNK_TARGET} (about 8-16 MB is best)"
        )
    if not storage.set_if_not_exists(MARKER_KEY, _marker(target)):
        raise DatasetError(f"another process created a dataset at {storage.url} meanwhile")
    first = publish(storage, Version.empty(), Transaction(), "create dataset")
    if checked_by_gc_record(storage):
        write_gc_record(storage, "done")  # object stores: FORMAT.md 3, the gc record
    return Dataset(
        storage, first, storage_options=storage_options, chunk_target_bytes=target, url=url
    )


def load(
    path: str | os.PathLike | Dataset,
    version: str | int | None = None,
    read_only: bool | None = None,
    storage_options: dict | None = None,
    pad_tensors: bool = False,
    **deeplake_kwargs: Any,
) -> Dataset:
    """Open the dataset at `path`: the newest version, or `version` (an id or number).

    Args:
        path: a directory, memory://... or s3://... URL.
        version: a version id ("v3-...") or sequence number; an older version opens
            read-only.
        read_only: open it read-only.
        storage_options: fsspec options for the storage (e.g. S3 credentials).
        pad_tensors: open it as a padded read view (see `Dataset.padded`).
        **deeplake_kwargs: Deep Lake 3's `creds` (become storage options) and its cache,
            access and integrity arguments (ignored).

    Returns:
        The Dataset.

    Raises:
        DatasetError: no dataset there, it has no versions, or an unknown `version`.
        CorruptionError: the dataset marker is damaged or from a newer format.
        TypeError: an unknown keyword argument, or bad `creds`.

    Example:
        >>> ds = sw.load("./animals_ds", read_only=True)       # doctest: +SKIP
    """
    storage_options = _deeplake_options("load", deeplake_kwargs, storage_options)
    url = _path_str(path)
    storage = open_storage(url, storage_options)
    marker = _read_marker(storage)
    if marker is None:
        raise DatasetError(f"no slicewise dataset at {storage.url} (use sw.empty to create one)")
    seqs = list_version_seqs(storage)
    if not seqs:
        raise DatasetError(f"dataset at {storage.url} has no versions (damaged or being created)")
    base = read_version(storage, seqs[-1]) if version is None else find_version(storage, version)
    return Dataset(
        storage,
        base,
        read_only=bool(read_only),
        pinned=base.seq != seqs[-1],
        storage_options=storage_options,
        chunk_target_bytes=marker.get("chunk_target_bytes", DEFAULT_CHUNK_TARGET_BYTES),
        url=url,
        pad_tensors=pad_tensors,
    )


def dataset(
    path: str | os.PathLike | Dataset,
    read_only: bool | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
    chunk_target_bytes: int | None = None,
    **deeplake_kwargs: Any,
) -> Dataset:
    """Open the dataset at `path`, creating an empty one when there is none.

    Args:
        path: a directory, memory://... or s3://... URL.
        read_only: open an existing dataset read-only.
        overwrite: replace what is there with a new, empty dataset.
        storage_options: fsspec options for the storage (e.g. S3 credentials).
        chunk_target_bytes: the chunk files' target size (a new dataset only).
        **deeplake_kwargs: Deep Lake 3's arguments, as `sw.empty` and `sw.load`.

    Returns:
        The Dataset (newest version), new or existing.

    Raises:
        DatasetError: what `sw.empty` or `sw.load` raise (e.g. files that are not a
            dataset at `path`).
        TypeError: an unknown keyword argument, or bad `creds`.

    Example:
        >>> ds = sw.dataset("memory://doc-dataset")
        >>> ds.path
        'memory://doc-dataset'
    """
    storage_options = _deeplake_options("dataset", deeplake_kwargs, storage_options)
    if not overwrite and exists(path, storage_options):
        return load(path, read_only=read_only, storage_options=storage_options)
    return empty(path, overwrite=overwrite, storage_options=storage_options,
                 chunk_target_bytes=chunk_target_bytes)


def delete(path: str | os.PathLike | Dataset, storage_options: dict | None = None,
           **deeplake_kwargs: Any) -> None:
    """Delete the dataset at `path`, every version and file of it.

    Args:
        path: a directory, memory://... or s3://... URL (or a Dataset).
        storage_options: fsspec options for the storage (e.g. S3 credentials).
        **deeplake_kwargs: Deep Lake 3's `creds`, `force`, `large_ok`, ... (creds become
            storage options; the others are ignored).

    Raises:
        DatasetError: no slicewise dataset at `path` (other folders are never deleted).
        TypeError: an unknown keyword argument, or bad `creds`.

    Example:
        >>> sw.delete("./old_ds")                              # doctest: +SKIP
    """
    storage_options = _deeplake_options("delete", deeplake_kwargs, storage_options)
    storage = open_storage(_path_str(path), storage_options)
    if not storage.exists(MARKER_KEY):
        raise DatasetError(f"no slicewise dataset at {storage.url}; nothing deleted")
    storage.delete_all()


# Deep Lake 3's arguments to empty/load/dataset/delete/exists that mean nothing here (its
# cloud, caches, locks, indexes, logging): accepted so its code runs unchanged, and
# ignored. Any other name is a TypeError, so a misspelt argument is never dropped silently.
_DEEPLAKE_CACHES = {"memory_cache_size", "local_cache_size", "token", "org_id", "verbose",
                    "lock_enabled", "lock_timeout", "index_params"}
_DEEPLAKE_IGNORED = {
    "empty": _DEEPLAKE_CACHES | {"runtime", "public"},
    "load": _DEEPLAKE_CACHES | {"access_method", "unlink", "reset", "indra", "check_integrity"},
    "delete": {"force", "large_ok", "token", "verbose", "org_id"},
    "exists": {"token", "org_id"},
}
_DEEPLAKE_IGNORED["dataset"] = _DEEPLAKE_IGNORED["empty"] | _DEEPLAKE_IGNORED["load"]

# Deep Lake 3's S3 `creds` keys -> s3fs storage options
_CREDS_TO_S3FS = {"aws_access_key_id": "key", "aws_secret_access_key": "secret",
                  "aws_session_token": "token", "profile_name": "profile"}
_CREDS_TO_CLIENT = {"endpoint_url": "endpoint_url", "aws_region": "region_name",
                    "region": "region_name"}


def _deeplake_options(function: str, kwargs: dict, storage_options: dict | None) -> dict | None:
    """Check the Deep Lake 3 keyword arguments of sw.<function>(); returns the storage
    options, with Deep Lake 3's S3 `creds` translated into them."""
    unknown = sorted(set(kwargs) - _DEEPLAKE_IGNORED[function] - {"creds"})
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(f"sw.{function}() got unexpected keyword argument(s) {names}")
    creds = kwargs.get("creds")
    if creds is None or creds == "ENV" or creds == {}:
        return storage_options  # "ENV": the environment's credentials, as fsspec does anyway
    if not isinstance(creds, dict):
        raise TypeError(f"sw.{function}(): creds must be a dict (Deep Lake 3's S3 keys) or "
                        f"'ENV', got {type(creds).__name__}")
    if storage_options:
        raise TypeError(f"sw.{function}(): pass creds= (Deep Lake 3) or storage_options=, "
                        "not both")
    options: dict = {}
    for key, value in creds.items():
        if key in _CREDS_TO_S3FS:
            options[_CREDS_TO_S3FS[key]] = value
        elif key in _CREDS_TO_CLIENT:
            options.setdefault("client_kwargs", {})[_CREDS_TO_CLIENT[key]] = value
        else:
            known = sorted(_CREDS_TO_S3FS) + sorted(_CREDS_TO_CLIENT)
            raise TypeError(f"sw.{function}(): creds key {key!r} is not understood; known: "
                            f"{', '.join(known)} (or pass fsspec storage_options=)")
    return options


def link(path: str | os.PathLike, creds_key: str | None = None) -> Any:
    """Deep Lake 3's `deeplake.link`: a sample for a `link[...]` tensor that stores the
    path or URL, not the file. The file is read when appended (a missing one raises
    SampleError naming the path and the tensor; nothing is stored) and fetched through
    fsspec every time the sample is read.

    Args:
        path: a local path (stored as an absolute path) or an fsspec URL (s3://,
            gs://, https://, ...).
        creds_key: Deep Lake 3's name of the credentials to use; recorded with the link.
            slicewise has no credentials store: a URL of the dataset's own protocol is
            fetched with the dataset's `storage_options`, any other with fsspec's
            defaults (environment variables, ~/.aws/credentials, instance roles).

    Returns:
        A `LinkSample` to append to a `link[image]` (`link[audio]`, `link[video]`, ...)
        tensor.

    Example:
        >>> ds.create_tensor("images", htype="link[image]", sample_compression="jpeg")  # doctest: +SKIP
        >>> ds.images.append(sw.link("s3://bucket/cat.jpg"))                    # doctest: +SKIP
    """
    from slicewise.format.htypes_media import LinkSample

    return LinkSample(path, creds_key)
