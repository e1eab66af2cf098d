"""The dataset on S3 when S3 misbehaves the way real S3 does and moto never does.

Everything runs against the real moto server on 127.0.0.1 (`s3_options`), through s3fs
and slicewise's real commit code. The one stand-in is `S3FaultInjector`, a **fault
injector**: a botocore `before-send` hook on s3fs's client that answers some requests
itself, before they reach the server, with what real S3 sends and moto cannot:

- `409 ConditionalRequestConflict`: real S3's answer to a conditional PUT racing another
  on the same key ("retry the upload");
- `503 SlowDown`: request-rate throttling;
- a dropped connection *after* the PUT landed: the hook sends the request to the server
  itself, then raises `ConnectionClosedError`, so the client never sees the answer and
  retries a PUT that already succeeded (the retry then meets its own object: 412);
- a lagging listing (`after-call` on ListObjectsV2): the newest keys under `versions/`
  are left out of the answer, as an eventually consistent S3-compatible store may do.
"""

from __future__ import annotations

import errno
import random
import threading

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import slicewise as sw  # noqa: E402
from slicewise.format import storage_fsspec  # noqa: E402
from slicewise.format.storage import FsspecStorage  # noqa: E402
from slicewise.format.writer import DatasetWriter  # noqa: E402

_BODIES = {
    409: (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict'
          b"</Code><Message>A conflicting conditional operation is currently in progress "
          b"against this resource. Please try again.</Message><RequestId>inj</RequestId>"
          b"</Error>"),
    503: (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>'
          b"Please reduce your request rate.</Message><RequestId>inj</RequestId></Error>"),
}


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    async def read(self, *args):
        return self.data


class S3FaultInjector:
    """Fault injector (see the module docstring): the only stand-in in these tests.

    `faults` maps a kind ("409", "503", "drop") to the probability that a matching PUT
    gets it; `keys` restricts injection to keys containing that text; `conditional_only`
    to PUTs carrying If-None-Match/If-Match (the commit protocol's writes); `burst_key` +
    `burst` answers the PUTs of one key with that kind (every one, or the first
    `burst_times`);
    `hide_newest_versions` drops that many of the newest `versions/` keys from listings.
    Counts what it did in `injected`; `lists` counts ListObjectsV2 calls, `puts` PUTs."""

    def __init__(self, fs, faults=None, keys="", conditional_only=True, seed=0,
                 burst_key=None, burst=None, burst_times=None, hide_newest_versions=0):
        import boto3

        self.fs = fs
        self.endpoint = fs.s3.meta.endpoint_url
        self.client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=fs.key or "testing", aws_secret_access_key=fs.secret or "testing",
        )
        self.faults = dict(faults or {})
        self.keys = keys
        self.conditional_only = conditional_only
        self.rng = random.Random(seed)
        self.burst_key = burst_key
        self.burst = burst
        self.burst_times = burst_times
        self.hide = hide_newest_versions
        self.injected = {"409": 0, "503": 0, "drop": 0}
        self.lists = 0
        self.puts = 0
        self.lock = threading.Lock()
        self.events = fs.s3.meta.events

    def __enter__(self):
        self.events.register("before-parameter-build.s3.PutObject", self._on_params)
        self.events.register("before-send.s3.PutObject", self._on_send)
        self.events.register("before-send.s3.ListObjectsV2", self._on_list)
        self.events.register("after-call.s3.ListObjectsV2", self._after_list)
        return self

    def __exit__(self, *exc):
        self.events.unregister("before-parameter-build.s3.PutObject", self._on_params)
        self.events.unregister("before-send.s3.PutObject", self._on_send)
        self.events.unregister("before-send.s3.ListObjectsV2", self._on_list)
        self.events.unregister("after-call.s3.ListObjectsV2", self._after_list)

    def _on_list(self, request, **kwargs):
        with self.lock:
            self.lists += 1

    def _after_list(self, parsed, **kwargs):
        if not self.hide or not isinstance(parsed, dict):
            return
        contents = parsed.get("Contents") or []
        versions = sorted(c["Key"] for c in contents if "/versions/" in c["Key"])
        hidden = set(versions[-self.hide:])
        parsed["Contents"] = [c for c in contents if c["Key"] not in hidden]

    def _pick(self, key: str, conditional: bool) -> str | None:
        with self.lock:
            self.puts += 1
            if self.burst_key is not None and key.endswith(self.burst_key):
                if self.burst_times is None:
                    return self.burst
                if self.burst_times > 0:
                    self.burst_times -= 1
                    return self.burst
                return None
            if self.keys not in key or (self.conditional_only and not conditional):
                return None
            draw = self.rng.random()
            for kind, rate in self.faults.items():
                if draw < rate:
                    return kind
                draw -= rate
        return None

    def _on_params(self, params, context, **kwargs):
        conditional = "IfNoneMatch" in params or "IfMatch" in params
        kind = self._pick(params["Key"], conditional)
        if kind is None:
            return
        with self.lock:
            self.injected[kind] += 1
        if kind != "drop":
            context["slicewise_fault"] = kind  # answered in before-send (below)
            return
        # the PUT reaches the server and lands (or meets a 412); its answer is lost
        wanted = ("Bucket", "Key", "Body", "IfNoneMatch", "IfMatch")
        try:
            self.client.put_object(**{k: params[k] for k in wanted if k in params})
        except Exception:
            pass
        from botocore.exceptions import ConnectionClosedError

        raise ConnectionClosedError(endpoint_url=self.endpoint)

    def _on_send(self, request, **kwargs):
        # once per decision: botocore's own retry of this request goes through
        kind = (getattr(request, "context", None) or {}).pop("slicewise_fault", None)
        if kind is None:
            return None
        from aiobotocore.awsrequest import AioAWSResponse

        status = int(kind)
        return AioAWSResponse(request.url, status, {"content-type": "application/xml"},
                              _Body(_BODIES[status]))


def _fs(s3_options, s3_url):
    """The storage; botocore's own retries are left on (as users have them)."""
    storage = FsspecStorage(s3_url, s3_options)
    storage.fs.connect()
    return storage


@pytest.mark.timeout(60)
def test_put_if_absent_survives_409_503_and_lost_answers(s3_options, s3_url):
    storage = _fs(s3_options, s3_url)
    faults = {"409": 0.3, "503": 0.15, "drop": 0.15}
    won = 0
    with S3FaultInjector(storage.fs, faults, seed=1) as injector:
        for i in range(12):
            key = f"versions/{i:012d}.json"
            won += storage.set_if_not_exists(key, f"first {i}".encode())
            assert not storage.set_if_not_exists(key, f"second {i}".encode())
            assert storage.get(key) == f"first {i}".encode()
    assert won == 12
    assert all(injector.injected[kind] > 0 for kind in faults), injector.injected


@pytest.mark.timeout(60)
def test_a_put_whose_answer_was_lost_is_won_once(s3_options, s3_url):
    storage = _fs(s3_options, s3_url)
    key = "branches/alt.json"
    with S3FaultInjector(storage.fs, burst_key=key, burst="drop", burst_times=1) as injector:
        assert storage.set_if_not_exists(key, b"mine")  # landed, answer lost, 412, ours
    assert injector.injected["drop"] >= 1
    assert not storage.set_if_not_exists(key, b"theirs")
    assert storage.get(key) == b"mine"


@pytest.mark.timeout(60)
def test_gives_up_after_bounded_tries_naming_the_key(s3_options, s3_url, monkeypatch):
    monkeypatch.setattr(storage_fsspec, "RETRY_ATTEMPTS", 4)
    monkeypatch.setattr(storage_fsspec, "RETRY_BASE_SECONDS", 0.01)
    storage = _fs(s3_options, s3_url)
    key = "versions/000000000007.json"
    with S3FaultInjector(storage.fs, burst_key=key, burst="409") as injector:
        with pytest.raises(OSError) as info:
            storage.set_if_not_exists(key, b"x")
    assert info.value.errno == errno.EAGAIN
    assert key in str(info.value) and "ConditionalRequestConflict" in str(info.value)
    assert injector.injected["409"] == 4
    assert not storage.exists(key)


@pytest.mark.timeout(120)
def test_16_concurrent_committers_under_faults_land_every_receipt_once(s3_options, s3_url):
    """16 threads, each its own dataset handle, commit receipts of chunk files written by
    DatasetWriter (as eval's driver does) while 409/503/lost answers hit the commits."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    storage = _fs(s3_options, s3_url)
    threads, per_thread = 16, 1
    errors = []

    def committer(t):
        try:
            handle = sw.load(s3_url, storage_options=s3_options)
            for k in range(per_thread):
                writer = DatasetWriter.from_spec(handle.writer_spec(), writer_id=f"w{t}-{k}")
                for j in range(4):
                    writer.append("x", np.int64(1000 * t + 10 * k + j))
                handle.add_receipts([writer.finish()])
                handle.commit(f"thread {t} batch {k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with S3FaultInjector(storage.fs, {"409": 0.25, "503": 0.05, "drop": 0.05},
                         keys="/versions/", seed=2) as injector:
        workers = [threading.Thread(target=committer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert not errors, errors[0]
    final = sw.load(s3_url, storage_options=s3_options)
    values = sorted(final.x.numpy().ravel().tolist())
    expected = sorted(1000 * t + 10 * k + j for t in range(threads)
                      for k in range(per_thread) for j in range(4))
    assert values == expected  # every receipt once: none lost, none twice
    assert len(final.log()) == 2 + threads * per_thread
    assert sum(injector.injected.values()) > 10, injector.injected
    assert sw.verify(s3_url, storage_options=s3_options).ok


@pytest.mark.timeout(60)
def test_commit_and_worker_writes_never_list(s3_options, s3_url):
    """Writers and the commit make no LIST request (HEADs and conditional PUTs only);
    opening uses one listing as a hint and probes past it with HEADs, so a listing that
    lags (the injector hides the newest version) still opens the newest version."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    ds.create_tensor("y", dtype="int64")  # versions 1-3; the listing shows only 1
    storage = _fs(s3_options, s3_url)
    with S3FaultInjector(storage.fs, hide_newest_versions=2) as injector:
        handle = sw.load(s3_url, storage_options=s3_options)
        assert handle.commit_id == ds.commit_id  # found past the lagging listing
        lists_at_open = injector.lists
        for k in range(3):  # the eval driver's loop: receipts in, commit
            writer = DatasetWriter.from_spec(handle.writer_spec())
            writer.append("x", np.int64(k))
            handle.add_receipts([writer.finish()])
            handle.commit(f"batch {k}")
        assert injector.lists == lists_at_open  # no LIST while writing and committing
        again = sw.load(s3_url, storage_options=s3_options)
        assert again.commit_id == handle.commit_id
        assert again.x.numpy().ravel().tolist() == [0, 1, 2]
    assert lists_at_open <= 1


@pytest.mark.timeout(60)
def test_object_store_chunks_default_to_16_mib_and_specs_travel_by_value(
    s3_options, s3_url, tmp_path
):
    import json
    import pickle

    ds = sw.empty(s3_url, storage_options=s3_options)
    assert ds.chunk_target_bytes == 16 * 1024 * 1024
    assert sw.load(s3_url, storage_options=s3_options).chunk_target_bytes == 16 * 1024 * 1024
    ds.create_tensor("x", dtype="int64")
    spec = ds.writer_spec()
    assert spec["chunk_target_bytes"] == 16 * 1024 * 1024
    assert spec["storage_options"] == s3_options
    json.dumps(spec)  # plain data: no live file system or client
    assert b"S3FileSystem" not in pickle.dumps(spec)
    chosen = sw.empty(s3_url + "-own", storage_options=s3_options, chunk_target_bytes=4 << 20)
    assert chosen.chunk_target_bytes == 4 << 20
    assert sw.empty(str(tmp_path / "local")).chunk_target_bytes == 8 * 1024 * 1024


@pytest.mark.timeout(60)
def test_gc_aborts_stale_multipart_uploads_under_the_dataset_only(s3_options, s3_url):
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    ds.x.append(np.int64(5))
    storage = _fs(s3_options, s3_url)
    bucket, prefix = s3_url[len("s3://"):].split("/", 1)
    # a writer killed mid-upload: started, one part sent, never completed
    key = f"{prefix}/chunks/{ds.x.meta.id}/dead-writer-chunk"
    upload = storage.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    storage.fs.call_s3("upload_part", Bucket=bucket, Key=key, PartNumber=1,
                       UploadId=upload["UploadId"], Body=b"\0" * (5 << 20))
    other = storage.fs.call_s3("create_multipart_upload", Bucket=bucket,
                               Key=f"{prefix}-neighbour/chunks/x")

    def pending(under):
        found = storage.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=under)
        return [u["UploadId"] for u in found.get("Uploads", []) or []]

    # within the grace period (its part was sent just now; moto dates every upload's
    # start 2010-11-10, its parts truly): a live writer may still complete it
    assert sw.gc(s3_url, grace_seconds=600, storage_options=s3_options).aborted_uploads == []
    assert pending(prefix + "/") == [upload["UploadId"]]
    report = sw.gc(s3_url, grace_seconds=0, storage_options=s3_options)
    assert report.aborted_uploads == [f"{key} {upload['UploadId']}"]
    assert "aborted 1 incomplete upload" in str(report)
    assert pending(prefix + "/") == []
    assert pending(f"{prefix}-neighbour/") == [other["UploadId"]]  # not this dataset's
    assert sw.load(s3_url, storage_options=s3_options).x.numpy().ravel().tolist() == [5]
    storage.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=f"{prefix}-neighbour/chunks/x",
                       UploadId=other["UploadId"])


class _HeadCounter:
    """Counts the HEAD requests s3fs's client sends for keys under chunks/ (an event hook
    that only looks; every request reaches the server)."""

    def __init__(self, fs):
        self.events = fs.s3.meta.events
        self.chunk_heads = 0

    def __enter__(self):
        self.events.register("before-parameter-build.s3.HeadObject", self._on_head)
        return self

    def __exit__(self, *exc):
        self.events.unregister("before-parameter-build.s3.HeadObject", self._on_head)

    def _on_head(self, params, **kwargs):
        if "/chunks/" in params.get("Key", ""):
            self.chunk_heads += 1


def _write_receipt(handle, values):
    writer = DatasetWriter.from_spec(handle.writer_spec())
    for value in values:
        writer.append("x", np.int64(value))
    return writer.finish()


@pytest.mark.timeout(60)
def test_commit_checks_each_chunk_object_only_after_a_gc_began(s3_options, s3_url):
    """A commit proves its chunk objects are still there with one GET of the gc record
    when no gc ran since they were written; after a gc began, with a HEAD per chunk,
    and a chunk that gc took (grace_seconds=0) stops the commit, naming it, with nothing
    published."""
    from slicewise.format.commit import read_gc_token
    from slicewise.format.errors import CorruptionError

    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    storage = _fs(s3_options, s3_url)
    created = ds.writer_spec()["gc_token"]  # a new dataset's record: "done", its own token
    assert len(created) == 32
    with _HeadCounter(storage.fs) as counter:
        ds.add_receipts([_write_receipt(ds, [1, 2]), _write_receipt(ds, [3])])
        ds.commit("no gc")
    assert counter.chunk_heads == 0
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3]

    # a gc that begins after the writers read the token, and takes nothing (grace)
    receipt = _write_receipt(ds, [4])
    assert sw.gc(s3_url, grace_seconds=600, storage_options=s3_options).removed_files == []
    with _HeadCounter(storage.fs) as counter:
        ds.add_receipts([receipt])
        ds.commit("gc began, took nothing")
    assert counter.chunk_heads == 1
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3, 4]

    # a gc that takes the chunk before its commit
    before = ds.commit_id
    receipt = _write_receipt(ds, [5])
    token = read_gc_token(storage)
    report = sw.gc(s3_url, grace_seconds=0, storage_options=s3_options)
    assert read_gc_token(storage) not in (token, None)
    [taken] = report.removed_files
    ds.add_receipts([receipt])
    with pytest.raises(CorruptionError, match="missing") as caught:
        ds.commit("after gc took a chunk")
    assert taken in str(caught.value)
    ds.discard()
    again = sw.load(s3_url, storage_options=s3_options)
    assert again.commit_id == before
    assert again.x.numpy().ravel().tolist() == [1, 2, 3, 4]
    assert sw.verify(s3_url, storage_options=s3_options).ok


@pytest.mark.timeout(60)
def test_a_gc_running_when_the_spec_is_made_is_not_trusted(s3_options, s3_url):
    """A gc that began before the writers read the record, and deletes after they wrote
    (its "running" record, then the rest of gc_storage with grace_seconds=0): the spec
    carries no token, the commit HEADs and refuses the chunk gc took. A gc that died
    mid-run leaves "running": commits check every chunk until a gc completes."""
    from slicewise.format.commit import write_gc_record
    from slicewise.format.errors import CorruptionError
    from slicewise.format.maintenance import gc_storage

    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    ds.x.append(np.int64(0))
    storage = _fs(s3_options, s3_url)
    write_gc_record(storage, "running")  # a gc has begun (or died mid-run)
    assert "gc_token" not in ds.writer_spec()
    receipt = _write_receipt(ds, [1])
    assert "gc_token" not in receipt
    report = gc_storage(FsspecStorage(s3_url, s3_options), grace_seconds=0)
    assert len(report.removed_files) == 1
    ds.add_receipts([receipt])
    with _HeadCounter(storage.fs) as counter, pytest.raises(CorruptionError, match="missing"):
        ds.commit("a gc ran meanwhile")
    assert counter.chunk_heads == 1
    ds.discard()
    assert "gc_token" in ds.writer_spec()  # that gc completed: "done" again


@pytest.mark.timeout(60)
def test_receipts_written_elsewhere_are_checked_object_by_object(s3_options, s3_url):
    """The token ties a receipt to the dataset and tensors its chunks went into: a
    receipt written into another dataset, or into a tensor since deleted and made again
    under its name, is checked object by object and refused (nothing there)."""
    from slicewise.format.errors import CorruptionError

    other = sw.empty(s3_url + "-other", storage_options=s3_options)
    other.create_tensor("x", dtype="int64")
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    storage = _fs(s3_options, s3_url)
    for receipt, why in ((_write_receipt(other, [1]), "another dataset"),
                         (_write_receipt(ds, [2]), "a tensor made again")):
        if why == "a tensor made again":
            ds.delete_tensor("x")
            ds.create_tensor("x", dtype="int64")
        ds.add_receipts([receipt])
        with _HeadCounter(storage.fs) as counter:
            with pytest.raises(CorruptionError, match="missing"):
                ds.commit(why)
        assert counter.chunk_heads == 1, why
        ds.discard()
    assert len(sw.load(s3_url, storage_options=s3_options).x.numpy()) == 0


@pytest.mark.timeout(60)
def test_receipts_without_one_gc_token_are_checked_object_by_object(s3_options, s3_url):
    """A writer made without a spec carries no token, and receipts read under different
    tokens prove nothing: the commit HEADs every chunk. gc(dry_run=True) begins nothing."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    storage = _fs(s3_options, s3_url)
    plain = DatasetWriter(storage, {"x": ds.x.meta}, ds.chunk_target_bytes)
    plain.append("x", np.int64(1))
    with _HeadCounter(storage.fs) as counter:
        ds.add_receipts([plain.finish(), _write_receipt(ds, [2])])
        ds.commit("one receipt without a token")
    assert counter.chunk_heads == 2

    early = _write_receipt(ds, [3])
    sw.gc(s3_url, dry_run=True, storage_options=s3_options)
    assert early["gc_token"] == ds.writer_spec()["gc_token"]  # a dry run wrote nothing
    sw.gc(s3_url, storage_options=s3_options)
    late = _write_receipt(ds, [4])
    assert late["gc_token"] != early["gc_token"]
    with _HeadCounter(storage.fs) as counter:
        ds.add_receipts([early, late])
        ds.commit("two tokens")
    assert counter.chunk_heads == 2
    assert ds.x.numpy().ravel().tolist() == [1, 2, 3, 4]


@pytest.mark.timeout(120)
def test_an_eval_into_s3_commits_without_a_head_per_chunk(s3_options, s3_url):
    """The seed's eval, with worker processes writing to S3: its commit reads the gc record
    instead of asking after each chunk object; every row lands once, in order."""

    @sw.compute
    def square(x, sample_out):
        sample_out.append({"x": np.int64(x * x)})

    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    storage = _fs(s3_options, s3_url)
    with _HeadCounter(storage.fs) as counter:
        square().eval(list(range(300)), ds, num_workers=2, scheduler="processed",
                      progressbar=False)
    assert counter.chunk_heads == 0
    assert sw.load(s3_url, storage_options=s3_options).x.numpy().ravel().tolist() == [
        x * x for x in range(300)]
    assert sw.verify(s3_url, storage_options=s3_options).ok


@pytest.mark.timeout(60)
def test_whole_object_reads_are_one_get(s3_options, s3_url):
    """A whole-object read is one ranged GET (no HEAD for its size, no LIST when it is
    missing); an empty object reads as b"" (S3 answers a range of it with 416)."""
    storage = _fs(s3_options, s3_url)
    storage.put("chunks/t/empty", b"")
    storage.put("chunks/t/full", b"abc")
    with S3FaultInjector(storage.fs) as injector, _HeadCounter(storage.fs) as counter:
        assert storage.get("chunks/t/full") == b"abc"
        assert storage.get("chunks/t/empty") == b""
        with pytest.raises(FileNotFoundError):
            storage.get("chunks/t/missing")
    assert counter.chunk_heads == 0
    assert injector.lists == 0


@pytest.mark.timeout(60)
def test_a_chunk_header_is_read_with_one_get(s3_options, s3_url):
    """Reading a sample of a chunk object not read before costs no HEAD: the first ranged
    GET's Content-Range gives the object's size the header checks need. An empty object
    reads as nothing, sized 0."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    ds.x.extend(np.arange(10, dtype=np.int64))
    storage = _fs(s3_options, s3_url)
    fresh = sw.load(s3_url, storage_options=s3_options, read_only=True)
    with _HeadCounter(storage.fs) as counter:
        assert fresh.x[7].numpy().ravel().tolist() == [7]
    assert counter.chunk_heads == 0
    [key] = [f"chunks/{ds.x.meta.id}/{name.rsplit('/', 1)[1]}"
             for name in storage.fs.find(f"{s3_url[len('s3://'):]}/chunks/{ds.x.meta.id}")]
    head, size = storage.get_head(key, 16)
    assert len(head) == 16 and size == storage.size(key) > 16
    storage.put("chunks/t/empty", b"")
    assert storage.get_head("chunks/t/empty", 16) == (b"", 0)
    with pytest.raises(FileNotFoundError):
        storage.get_head("chunks/t/missing", 16)
