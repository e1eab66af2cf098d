"""The dataset on S3: a real S3-protocol server (moto) on 127.0.0.1 through s3fs.
Put-if-absent is a conditional PUT (If-None-Match: *); listings are refreshed before the
commit protocol trusts them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import slicewise as sw  # noqa: E402
from slicewise.format.storage import FsspecStorage  # noqa: E402


@pytest.mark.timeout(60)
def test_put_if_absent_on_s3(s3_options, s3_url):
    storage = FsspecStorage(s3_url, s3_options)
    assert storage.atomic_create
    assert storage.set_if_not_exists("versions/000000000001.json", b"first")
    assert not storage.set_if_not_exists("versions/000000000001.json", b"second")
    assert storage.get("versions/000000000001.json") == b"first"
    assert storage.list("versions/") == ["versions/000000000001.json"]


@pytest.mark.timeout(60)
def test_round_trip_on_s3(s3_options, s3_url, jpeg_files):
    ds = sw.empty(s3_url, storage_options=s3_options)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label")
        ds.create_tensor("x", dtype="float32", chunk_compression="zstd")
        for i, f in enumerate(jpeg_files):
            ds.append({"images": sw.read(f), "labels": f.split("/")[-2], "x": np.full(3, i)})
    again = sw.load(s3_url, storage_options=s3_options)
    for i, f in enumerate(jpeg_files):
        assert again.images[i].tobytes() == open(f, "rb").read()
    assert again.labels.data()["text"][:2] == [["dog"], ["cat"]]
    assert again.x.numpy()[:, 0].tolist() == list(range(6))
    assert sw.verify(s3_url, storage_options=s3_options).ok
    spec = ds.writer_spec()
    assert spec["storage_options"] == s3_options


@pytest.mark.timeout(60)
def test_stale_listing_never_loses_a_commit(s3_options, s3_url):
    """Two handles share s3fs's listing cache; the second commit must see the first."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int32")
    first = sw.load(s3_url, storage_options=s3_options)
    second = sw.load(s3_url, storage_options=s3_options)
    first.storage.list("versions/")  # warm the listing cache
    first.x.append(np.array([1]))
    second.x.append(np.array([2]))  # its slot is taken: must rebase, not overwrite
    final = sw.load(s3_url, storage_options=s3_options)
    assert sorted(final.x.numpy().ravel().tolist()) == [1, 2]
    assert len(final.log()) == 4


@pytest.mark.timeout(60)
def test_gc_and_delete_on_s3(s3_options, s3_url):
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x")
    ds.x.append(np.ones(2))
    ds.x.append(np.ones(2))
    report = sw.gc(s3_url, keep_last=1, grace_seconds=0, storage_options=s3_options)
    assert len(report.removed_versions) == 3
    assert len(sw.load(s3_url, storage_options=s3_options).x) == 2
    sw.delete(s3_url, storage_options=s3_options)
    assert not sw.exists(s3_url, storage_options=s3_options)


@pytest.mark.timeout(60)
def test_deeplake_creds_reach_s3(s3_options, s3_url):
    # Deep Lake 3 code passes S3 credentials as creds=...; they become s3fs options
    creds = {
        "aws_access_key_id": s3_options["key"],
        "aws_secret_access_key": s3_options["secret"],
        "endpoint_url": s3_options["endpoint_url"],
        "aws_region": "us-east-1",
    }
    ds = sw.empty(s3_url, creds=creds, verbose=False, token=None)
    ds.create_tensor("x", dtype="int32")
    ds.x.append(np.int32(7))
    assert sw.exists(s3_url, creds=creds)
    assert sw.load(s3_url, creds=creds, read_only=True).x.numpy().tolist() == [[7]]
    assert sw.dataset(s3_url, creds=creds).x.numpy().tolist() == [[7]]
    with pytest.raises(TypeError, match="'aws_secret'"):
        sw.load(s3_url, creds={"aws_secret": "x"})
    with pytest.raises(TypeError, match="not both"):
        sw.load(s3_url, creds=creds, storage_options=s3_options)
    sw.delete(s3_url, creds=creds, force=True)
    assert not sw.exists(s3_url, creds=creds)
