"""FsspecStorage: the `Storage` of any fsspec file system (memory://, s3://, gcs://, ...).

What put-if-absent means on each is in `storage`'s module docstring. Symlink checks
(FORMAT.md §7) are the local storage's business: object stores have no links.

On S3 (FORMAT.md §3):

- Conditional and plain PUTs are retried with jittered exponential backoff when S3 says
  "try again": `409 ConditionalRequestConflict` (a concurrent conditional write on the
  same key), `503 SlowDown`, 500/502/504, and dropped connections. After
  `RETRY_ATTEMPTS` tries the error is an `OSError(EAGAIN)` naming the object. A
  retried put-if-absent that finds the key taken (`412`) reads it back: when it holds
  exactly our bytes, an earlier try of ours landed (its answer was lost) and we won.
- `exists`, and the check a commit makes that its chunk objects are there
  (`touch_all`), are HEAD requests on the keys, never a listing: nothing on the write or
  read path trusts a LIST being fresh. A receipt lists only uploads that completed, but
  `gc(grace_seconds=...)` may have removed a chunk since (S3 cannot refresh an object's
  mtime, so a long eval's first chunks can age past a short grace period), and a manifest
  must never name a missing object. So a commit HEADs its chunks unless one GET of the
  gc record shows no gc ran since they were written (commit.py, FORMAT.md 3).
- A whole-object read (`get`) is one GET of the range from byte 0: s3fs's own first HEADs
  the object for its size (and LISTs a missing one as a folder).
- Writers hand each chunk's PUT to a helper thread (`overlapped_put`, SyncQueue.upload)
  and encode the next chunk meanwhile. Chunks up to 100 MiB (the default is 16 MiB) go
  up in one PUT; s3fs sends larger ones as multipart uploads of 50 MiB parts, 10 at a
  time.
- `abort_incomplete_uploads` (used by gc) aborts multipart uploads under the dataset's
  prefix that were started before a grace period.
"""

from __future__ import annotations

import errno
import random
import threading
import time

from slicewise.format.storage import Storage, storage_error

_MEMORY_LOCK = threading.Lock()

# Retries of S3 requests that S3 asks to repeat (module docstring). With the defaults the
# waits are drawn from [0, 0.05], [0, 0.1], ... [0, 3.2] seconds (full jitter): about 6 s
# at most in all, a few ms when one retry does it.
RETRY_ATTEMPTS = 8
RETRY_BASE_SECONDS = 0.05
RETRY_MAX_SECONDS = 5.0
_RETRY_CODES = frozenset((
    "ConditionalRequestConflict", "OperationAborted", "SlowDown", "ServiceUnavailable",
    "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "500", "502",
    "503", "504", "409",
))
_RETRY_STATUS = frozenset((409, 500, 502, 503, 504))
# concurrent HEADs when a commit checks its chunk objects (touch_all)
HEAD_CONCURRENCY = 32


def _causes(exc: BaseException | None, depth: int = 8):
    """`exc`, then what caused it (`__cause__`, else `__context__`), at most `depth`."""
    while exc is not None and depth > 0:
        yield exc
        exc = exc.__cause__ or exc.__context__
        depth -= 1


def retryable(exc: BaseException) -> bool:
    """Whether S3 asked for the request to be repeated: a 409/500/502/503/504 or a
    throttling code anywhere in the exception's causes, or a dropped connection."""
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if error.get("Code") in _RETRY_CODES or status in _RETRY_STATUS:
                return True
            return False
        name = type(cause).__name__
        if name in ("ConnectionClosedError", "EndpointConnectionError", "ReadTimeoutError",
                    "ConnectTimeoutError", "ServerDisconnectedError",
                    "ClientConnectionError", "ClientOSError", "IncompleteRead"):
            return True
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        text = str(cause)
        if "ConditionalRequestConflict" in text or "SlowDown" in text:
            return True
    return False


def backoff_seconds(attempt: int) -> float:
    """Full-jitter exponential backoff before try `attempt + 1` (attempt counts from 0)."""
    return random.uniform(0, min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


def gave_up(exc: BaseException, what: str, attempts: int) -> OSError:
    error = OSError(
        errno.EAGAIN,
        f"gave up after {attempts} tries: the object store kept answering 'try again' "
        f"({type(exc).__name__}: {str(exc)[:200]}) for {what}",
        what,
    )
    error.slicewise_file = what
    return error


# botocore's errors for credentials it cannot find or load: not OSErrors, and they name
# neither the dataset nor the fix (below)
_CREDENTIAL_ERRORS = frozenset((
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
    "NoAuthTokenError", "TokenRetrievalError", "UnauthorizedSSOTokenError",
))


def _credential_error(exc: BaseException) -> BaseException | None:
    return next((e for e in _causes(exc) if type(e).__name__ in _CREDENTIAL_ERRORS), None)


def _names_credentials(method):
    """Missing S3 credentials come out as a PermissionError naming the object, the
    dataset and where credentials come from, wherever the storage was called: in a
    cluster worker a storage error is never blamed on an input (transform/worker.py)."""
    import functools

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            missing = _credential_error(exc)
            if missing is None:
                raise
            where = self.full_path(args[0]) if args and isinstance(args[0], str) else self.url
            error = PermissionError(
                errno.EACCES,
                f"no S3 credentials found for dataset {self.url} ({type(missing).__name__}: "
                f"{missing}): pass storage_options with 'key' and 'secret' (or 'profile'), "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for "
                "every process that reads or writes it (cluster workers too), or "
                "storage_options={'anon': True} for a public bucket",
                where,
            )
            error.slicewise_file = where
            raise error from exc

    return checked


def _range_refused(exc: BaseException) -> bool:
    """An S3 416 (InvalidRange), as s3fs words it or in the botocore error under it."""
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code == "InvalidRange" or status == 416:
                return True
        if "range is not satisfiable" in str(cause) or "InvalidRange" in str(cause):
            return True
    return False


class FsspecStorage(Storage):
    """Any fsspec file system; see the module docstring for what put-if-absent means here."""

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, root = fsspec.core.url_to_fs(url, **self.storage_options)
        self.root = root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = protocol
        self.atomic_create = protocol in ("memory", "s3", "s3a")
        # writers PUT chunk objects on a helper thread (SyncQueue.upload) while they encode
        # the next chunk; memory:// has nothing to wait for
        self.overlapped_put = protocol != "memory"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    @_names_credentials
    def get(self, key: str) -> bytes:
        # s3fs sizes a whole-object read from its listing cache when it holds the folder:
        # a stale listing would make a new object "missing". Reads never trust a listing.
        path = self._path(key)
        self.fs.invalidate_cache(path)
        if not self.is_s3:
            return self.fs.cat_file(path)
        # One GET: s3fs's whole-object read first HEADs the object for its size (and, for
        # a missing one, LISTs it as a folder); a GET of the range from byte 0 does neither
        try:
            return self.fs.cat_file(path, start=0)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or not _range_refused(exc):
                raise
            return b""  # S3 answers 416 to a range of an empty object

    @_names_credentials
    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self.fs.cat_file(self._path(key), start=start, end=start + length)

    @_names_credentials
    def get_head(self, key: str, length: int) -> tuple[bytes, int]:
        if not self.is_s3 or length <= 0:
            return super().get_head(key, length)
        from fsspec.asyn import sync

        bucket, path = self._bucket_key(key)

        async def ranged_get() -> tuple[bytes, str | None]:
            answer = await self.fs._call_s3("get_object", Bucket=bucket, Key=path,
                                            Range=f"bytes=0-{length - 1}")
            try:
                return await answer["Body"].read(), answer.get("ContentRange")
            finally:
                answer["Body"].close()

        try:
            data, content_range = self._retrying(key, lambda _a: sync(self.fs.loop, ranged_get))
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or not _range_refused(exc):
                raise
            return b"", 0  # an empty object: S3 answers 416 to a range of it
        # "bytes 0-65535/16777216": the whole size after the slash (one GET, no HEAD)
        total = str(content_range or "").rpartition("/")[2]
        return data, int(total) if total.isdigit() else self.size(key)

    @_names_credentials
    def size(self, key: str) -> int:
        path = self._path(key)
        self.fs.invalidate_cache(path)  # as in get: never a size from a cached listing
        return int(self.fs.size(path))

    @property
    def is_s3(self) -> bool:
        return self.protocol in ("s3", "s3a")

    def _retrying(self, key: str, call):
        """`call()`, repeated with backoff while S3 answers 409/503/... (module docstring);
        other errors, and the last one, come out at once. Only S3 is retried here (other
        fsspec file systems retry, or not, on their own)."""
        for attempt in range(RETRY_ATTEMPTS):
            try:
                return call(attempt)
            except Exception as exc:
                if not self.is_s3 or not retryable(exc):
                    raise
                if attempt == RETRY_ATTEMPTS - 1:
                    raise gave_up(exc, self.full_path(key), RETRY_ATTEMPTS) from exc
                time.sleep(backoff_seconds(attempt))
        raise AssertionError("unreachable")

    @_names_credentials
    def put(self, key: str, data: bytes | memoryview | list, sync: bool = True) -> None:
        if isinstance(data, list):
            data = b"".join(data)
        data = bytes(data)
        path = self._path(key)
        try:
            # keys put are fresh (chunk files): repeating a PUT is harmless
            self._retrying(key, lambda _attempt: self.fs.pipe_file(path, data))
        except OSError as exc:  # as itself, naming the object and the dataset
            raise storage_error(exc, self.full_path(key), self.url) from exc

    @_names_credentials
    def set_if_not_exists(self, key: str, data: bytes) -> bool:
        try:
            return self._set_if_not_exists(key, data)
        except OSError as exc:
            raise storage_error(exc, self.full_path(key), self.url) from exc

    def _set_if_not_exists(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if self.protocol == "memory":
            with _MEMORY_LOCK:
                if self.fs.exists(path):
                    return False
                self.fs.pipe_file(path, data)
                return True
        if self.is_s3:
            return self._retrying(key, lambda attempt: self._create_s3(path, data))
        # Generic fallback: check, then write. Not atomic against another machine.
        self.fs.invalidate_cache(path)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def _create_s3(self, path: str, data: bytes) -> bool:
        """One PUT with If-None-Match: *. A 412 (key taken) is ours when the object holds
        exactly our bytes: an earlier try whose answer was lost (a dropped connection,
        retried here or inside botocore) landed. Manifests, staged checkpoints and branch
        records carry random ids, so another writer's bytes are never equal to ours."""
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except OSError as exc:
            # s3fs maps 412 Precondition Failed to FileExistsError (some versions EINVAL)
            taken = isinstance(exc, FileExistsError) or (
                exc.errno == errno.EINVAL or "recondition" in str(exc)
            )
            if not taken:
                raise
            self.fs.invalidate_cache(path)
            try:
                return self.fs.cat_file(path) == data
            except FileNotFoundError:
                if isinstance(exc, FileExistsError):
                    return False  # deleted meanwhile (gc of a stale staged file): taken
                raise exc from None

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, path, _ = self.fs.split_path(self._path(key))
        return bucket, path

    def _head(self, key: str) -> bool:
        """Whether `key` exists: one HEAD request (s3fs's `exists` falls back to a
        listing when the HEAD misses, and may answer from its listing cache)."""
        bucket, path = self._bucket_key(key)
        try:
            self._retrying(key, lambda _a: self.fs.call_s3("head_object", Bucket=bucket,
                                                           Key=path))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            if "Not Found" in str(exc) or "404" in str(exc):
                return False
            raise

    @_names_credentials
    def touch_all(self, keys: list[str]) -> list[str]:
        """S3: a HEAD per key (HEAD_CONCURRENCY at a time), no listing; S3 cannot refresh
        an object's mtime, so gc's grace period counts from the write (FORMAT.md §5)."""
        if not self.is_s3:
            return super().touch_all(keys)
        if not keys:
            return []
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(HEAD_CONCURRENCY, len(keys))) as pool:
            present = list(pool.map(self._head, keys))
        return [key for key, ok in zip(keys, present, strict=True) if not ok]

    @_names_credentials
    def abort_incomplete_uploads(
        self, older_than: float, dry_run: bool = False, now: float | None = None
    ) -> list[str]:
        """Abort the multipart uploads under this dataset's prefix started more than
        `older_than` seconds ago (a writer killed mid-upload leaves one: invisible to
        listings, billed, and removed only by AbortMultipartUpload or a bucket lifecycle
        rule). Returns '<key> <upload id>' for each. Nothing on other file systems."""
        if not self.is_s3:
            return []
        bucket, prefix = self._bucket_key("")
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        now = time.time() if now is None else now
        found, markers = [], {}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix,
                                   **markers)
            for upload in page.get("Uploads", []) or []:
                if older_than > 0 and not self._upload_stale(bucket, upload, now, older_than):
                    continue
                found.append((upload["Key"], upload["UploadId"]))
            if not page.get("IsTruncated"):
                break
            markers = {"KeyMarker": page.get("NextKeyMarker", ""),
                       "UploadIdMarker": page.get("NextUploadIdMarker", "")}
        done = []
        for key, upload_id in found:
            if not dry_run:
                try:
                    self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key,
                                    UploadId=upload_id)
                except FileNotFoundError:  # completed or aborted meanwhile
                    continue
            done.append(f"{key} {upload_id}")
        return done

    def _upload_stale(self, bucket: str, upload: dict, now: float, older_than: float) -> bool:
        """Started more than `older_than` seconds ago and no part sent since (a large
        object still uploading past the grace period keeps sending parts). moto answers a
        fixed `Initiated` date of 2010; its parts' dates are real."""
        started = upload.get("Initiated")
        if not hasattr(started, "timestamp") or now - started.timestamp() < older_than:
            return False
        markers: dict = {}
        while True:
            try:
                page = self.fs.call_s3("list_parts", Bucket=bucket, Key=upload["Key"],
                                       UploadId=upload["UploadId"], **markers)
            except FileNotFoundError:  # completed or aborted meanwhile
                return False
            for part in page.get("Parts", []) or []:
                sent = part.get("LastModified")
                if not hasattr(sent, "timestamp") or now - sent.timestamp() < older_than:
                    return False
            if not page.get("IsTruncated"):
                return True
            markers = {"PartNumberMarker": page.get("NextPartNumberMarker", 0)}

    @_names_credentials
    def list(self, prefix: str = "", refresh: bool = True) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if refresh:
            self.fs.invalidate_cache(base)
            self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        finally:
            if refresh:  # keep no listing behind for others to trust (get, size, info)
                self.fs.invalidate_cache(base)
        root_len = len(self.root) + 1
        out = []
        for path in found:
            path = path.rstrip("/")
            # some file systems return paths without the leading '/' of the root
            idx = path.find(self.root.lstrip("/"))
            rel = path[idx + len(self.root.lstrip("/")) + 1 :] if idx >= 0 else path[root_len:]
            if rel:
                out.append(rel)
        return out

    @_names_credentials
    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    @_names_credentials
    def exists(self, key: str) -> bool:
        if self.is_s3 and key:
            return self._head(key)
        path = self._path(key)
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    @_names_credentials
    def mtime(self, key: str) -> float | None:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        for field in ("mtime", "LastModified", "created", "last_modified"):
            value = info.get(field)
            if value is None:
                continue
            if hasattr(value, "timestamp"):
                return float(value.timestamp())
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
        return None

    @_names_credentials
    def delete_all(self) -> None:
        try:
            self.fs.rm(self.root, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self.root)
