"""Chunk objects go up on a helper thread while the writer encodes the next chunk
(SyncQueue.upload), against the real moto S3 server (`s3_options`): a writer goes on
while its last chunk's PUT is held, every upload has completed before a receipt names it,
a failed upload is the same named error as a failed synchronous PUT, and the eval's rows
are the same as a local processed run's.

The one stand-in is an **upload fault injector**: a botocore `before-send` hook on s3fs's
client for PUTs of chunk objects, which either holds a PUT until the test lets it go (so
the overlap is seen without timing anything) or answers it with `403 AccessDenied`, a
failure moto never produces on its own.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import slicewise as sw  # noqa: E402
from slicewise import EvalStorageError  # noqa: E402
from slicewise.format import syncqueue  # noqa: E402
from slicewise.format.writer import DatasetWriter  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ROW_BYTES = 256 * 1024
TARGET = 1 << 20  # 4 rows per chunk

_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied (injected)</Message><RequestId>inj</RequestId></Error>"
)


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    async def read(self, *args):
        return self.data


class UploadFaultInjector:
    """Fault injector (module docstring) on the s3fs client of `fs`: PUTs of keys under
    `chunks/`. `hold=True`: the first such PUT waits for `release` (`held` is set once it
    waits); `deny_nth=n`: the n-th such PUT (from 1) gets 403 AccessDenied. `done` counts
    the chunk PUTs that completed."""

    def __init__(self, fs, hold: bool = False, deny_nth: int | None = None):
        self.events = fs.s3.meta.events
        self.hold = hold
        self.deny_nth = deny_nth
        self.held = threading.Event()
        self.release = threading.Event()
        self.seen = 0
        self.done = 0
        self.denied: list[str] = []
        self.lock = threading.Lock()

    def __enter__(self):
        self.events.register("before-send.s3.PutObject", self._on_send)
        self.events.register("after-call.s3.PutObject", self._after_call)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.events.unregister("before-send.s3.PutObject", self._on_send)
        self.events.unregister("after-call.s3.PutObject", self._after_call)

    def _on_send(self, request, **kwargs):
        if "/chunks/" not in request.url:
            return None
        with self.lock:
            self.seen += 1
            seen = self.seen
        if self.hold and seen == 1:
            self.held.set()
            self.release.wait(60)  # the writer must go on meanwhile
        if self.deny_nth is not None and seen == self.deny_nth:
            self.denied.append(request.url)
            from aiobotocore.awsrequest import AioAWSResponse

            return AioAWSResponse(
                request.url, 403, {"content-type": "application/xml"}, _Body(_DENIED)
            )
        return None

    def _after_call(self, http_response, **kwargs):
        if "/chunks/" in str(getattr(http_response, "url", "")):
            with self.lock:
                self.done += 1


def make_ds(url, options=None):
    ds = sw.empty(url, storage_options=options, chunk_target_bytes=TARGET)
    with ds:
        ds.create_tensor("x", dtype="uint8")
        ds.create_tensor("n", dtype="int64")
    return ds


def row(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, ROW_BYTES, dtype=np.uint8)


def test_the_writer_goes_on_while_its_chunk_uploads_and_receipts_name_only_uploads(
    s3_options, s3_url
):
    import sys

    ds = make_ds(s3_url, s3_options)
    writer = DatasetWriter.from_spec(ds.writer_spec(), "w")
    storage = writer.storage
    storage.fs.connect()
    interval = sys.getswitchinterval()
    with UploadFaultInjector(storage.fs, hold=True) as injector:
        for i in range(4):  # the first chunk is full: its upload starts, and is held
            writer.append("x", row(i))
        assert injector.held.wait(60)
        # while an upload is in flight, threads switch often (its sender needs the GIL)
        assert sys.getswitchinterval() == pytest.approx(syncqueue.UPLOAD_SWITCH_INTERVAL)
        for i in range(4, 8):  # the next chunk is encoded and handed over meanwhile
            writer.append("x", row(i))
        assert injector.done == 0  # no chunk PUT has completed yet
        # both upload slots are taken: a third chunk would wait here (bounded memory)
        assert not syncqueue._upload_slot().acquire(blocking=False)
        injector.release.set()
        receipt = writer.finish(sync=False)
    entries = receipt["tensors"]["x"]["chunks"]
    assert [entry["rows"] for entry in entries] == [4, 4]
    assert sys.getswitchinterval() == interval  # put back with the last upload
    assert all("synced" not in entry for entry in entries)  # uploads are whole or absent
    tensor_id = ds.x.meta.id
    for entry in entries:  # every chunk the receipt names is there, with its size
        assert storage.size(f"chunks/{tensor_id}/{entry['key']}") == entry["nbytes"]
    ds.add_receipts([receipt])
    ds.commit("two chunks")
    back = sw.load(s3_url, storage_options=s3_options, read_only=True)
    assert np.array_equal(back.x[5].numpy(), row(5))


def test_a_failed_upload_is_named_and_nothing_is_committed(s3_options, s3_url, tmp_path):
    @sw.compute
    def rows(i, sample_out):
        sample_out.append({"x": row(i), "n": np.int64(i)})

    ds = make_ds(s3_url, s3_options)
    before = ds.version
    storage = DatasetWriter.from_spec(ds.writer_spec()).storage
    storage.fs.connect()  # the s3fs instance the eval's writer threads share
    with UploadFaultInjector(storage.fs, deny_nth=3) as injector:
        with pytest.raises(EvalStorageError) as caught:
            rows().eval(list(range(40)), ds, num_workers=2, scheduler="threaded", progressbar=False)
    assert len(injector.denied) == 1
    error = caught.value
    # as a synchronous PUT's failure: s3fs's PermissionError, named by the storage layer
    assert isinstance(error, OSError) and isinstance(error.__cause__, PermissionError)
    assert "Access Denied (injected)" in str(error)
    assert error.filename and "/chunks/" in error.filename
    assert error.filename.rsplit("/", 1)[1] in injector.denied[0]
    assert error.tensor in ("x", "n") and f"tensor {error.tensor!r}" in str(error)
    assert f"/chunks/{ds[error.tensor].meta.id}/" in error.filename
    assert error.index is not None and 0 <= error.index < 40
    reopened = sw.load(s3_url, storage_options=s3_options, read_only=True)
    assert reopened.version == before and len(reopened.x) == 0

    # the same eval without the injector, and into a local dataset on processes
    rows().eval(list(range(40)), ds, num_workers=2, scheduler="threaded", progressbar=False)
    local = make_ds(str(tmp_path / "local"))
    rows().eval(list(range(40)), local, num_workers=2, scheduler="processed", progressbar=False)
    on_s3 = sw.load(s3_url, storage_options=s3_options, read_only=True)
    assert len(on_s3.x) == len(local.x) == 40
    assert on_s3.n.numpy().reshape(-1).tolist() == local.n.numpy().reshape(-1).tolist()
    for i in range(40):
        assert on_s3.x[i].numpy().tobytes() == local.x[i].numpy().tobytes() == row(i).tobytes()
    assert sw.verify(s3_url, storage_options=s3_options)
