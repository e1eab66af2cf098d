"""Evals into a dataset on an object store (a real moto S3 server, tests/conftest.py): each
batch writes its own chunk objects, and every object costs a PUT and a HEAD at the
commit, so batches are sized to fill whole chunks (BatchSizer's `chunk_bytes`), learnt
from the receipts. The rows are the same as a local run's; resume stays exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

import slicewise as sw
from slicewise.format.manifest import find_version
from slicewise.transform.batches import BatchSizer
from slicewise.transform.run import CHECKPOINT_KEY, _object_store_chunk_bytes

ROW_BYTES = 4096
TARGET = 256 * 1024  # the S3 datasets' chunk size here: 64 rows of `blob` per chunk
INPUTS = 1200  # 4.9 MB: about 19 chunks of blob


@sw.compute
def make_row(item, sample_out, fail_from=None):
    if fail_from is not None and item >= fail_from:
        raise RuntimeError(f"stopped at {item}")
    blob = np.random.default_rng(item).integers(0, 256, ROW_BYTES, dtype=np.uint8)
    sample_out.append({"blob": blob, "label": np.uint32(item % 7)})


def new_ds(url, **options):
    ds = sw.empty(url, overwrite=True, **options)
    with ds:
        ds.create_tensor("blob", dtype="uint8")
        ds.create_tensor("label", dtype="uint32")
    return ds


def s3_ds(s3_url, s3_options):
    return new_ds(s3_url, storage_options=s3_options, chunk_target_bytes=TARGET)


def chunk_bytes_of(ds, tensor):
    return list(find_version(ds.storage, ds.version).tensors[tensor].nbytes)


def assert_same_rows(ds, reference):
    assert len(ds) == len(reference)
    np.testing.assert_array_equal(ds.blob.numpy(), reference.blob.numpy())
    np.testing.assert_array_equal(ds.label.numpy(), reference.label.numpy())


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The same eval into a local dataset: the rows every S3 run must hold."""
    ds = new_ds(str(tmp_path_factory.mktemp("local") / "ds"))
    make_row().eval(list(range(INPUTS)), ds, num_workers=2, scheduler="processed",
                    progressbar=False)
    return ds


@pytest.mark.timeout(120)
def test_eval_into_s3_writes_chunks_near_the_target(s3_url, s3_options, local_reference):
    ds = s3_ds(s3_url, s3_options)
    report = make_row().eval(list(range(INPUTS)), ds, num_workers=2, scheduler="processed",
                             progressbar=False)
    assert report.rows_written == INPUTS
    back = sw.load(s3_url, storage_options=s3_options)
    assert_same_rows(back, local_reference)
    assert sw.verify(s3_url, storage_options=s3_options)

    blob = chunk_bytes_of(back, "blob")
    whole = math.ceil(INPUTS * ROW_BYTES / TARGET)
    # Every batch ends its chunks: before the first receipt the batches are sized by
    # time (a few handed out at once), after it by whole chunks. Sized by time alone, the
    # tail's batches leave a sliver each (measured: 28 chunks, 15 batches; now 23, 10).
    assert len(blob) <= whole + 5, blob
    assert sum(nbytes >= 0.8 * TARGET for nbytes in blob) >= whole // 2, blob
    # the small tensor: one chunk per batch, so as few as the batches
    assert len(chunk_bytes_of(back, "label")) == report.batches
    assert report.batches <= 12, report.batches


@pytest.mark.timeout(120)
def test_resume_on_s3_after_a_failure_mid_eval_is_exact(s3_url, s3_options, local_reference):
    ds = s3_ds(s3_url, s3_options)
    items = list(range(INPUTS))
    with pytest.raises(sw.TransformError) as caught:
        make_row(fail_from=900).eval(items, ds, num_workers=2, scheduler="processed",
                                     checkpoint_interval=300, progressbar=False)
    assert caught.value.index == 900
    reopened = sw.load(s3_url, storage_options=s3_options)
    progress = reopened.version_info["meta"][CHECKPOINT_KEY]
    assert progress["state"] == "checkpoint"
    done = progress["inputs_done"]
    assert done in (300, 600, 900)  # batches end on checkpoint boundaries
    assert len(reopened) == done
    np.testing.assert_array_equal(reopened.blob.numpy(), local_reference.blob.numpy()[:done])

    report = make_row().eval(items, reopened, num_workers=2, scheduler="processed",
                             checkpoint_interval=300, progressbar=False)
    assert report.resumed_from == done
    assert report.rows_written == INPUTS - done
    back = sw.load(s3_url, storage_options=s3_options)
    assert_same_rows(back, local_reference)
    assert back.version_info["meta"][CHECKPOINT_KEY]["state"] == "done"
    assert sw.verify(s3_url, storage_options=s3_options)


# -- the sizer alone ---------------------------------------------------------------------
def receipt(tensor_bytes: dict) -> dict:
    return {"tensors": {name: {"chunks": [{"nbytes": nbytes}]}
                        for name, nbytes in tensor_bytes.items()}}


def test_sizer_fills_whole_chunks_of_the_heaviest_tensor():
    sizer = BatchSizer(2, 100_000, 0, 0, 0.25, chunk_bytes=16 << 20)
    assert sizer.next_size(0) == 256  # nothing known yet: as without chunk_bytes
    sizer.observe(256, 0.128)  # 0.5 ms per input: 500 inputs per 0.25 s
    assert sizer.next_size(0) == 500  # no receipt yet: by time alone
    sizer.observe_receipt(256, receipt({"images": 256 * 41_000, "labels": 256 * 4}))
    per_chunk = (16 << 20) / 41_000  # 409 inputs fill a chunk of images
    assert sizer.next_size(0) == int((BatchSizer.MIN_CHUNKS - 0.05) * per_chunk)
    sizer.observe(1000, 0.01)  # faster: 0.255 ms per input, time allows 980 inputs
    assert sizer.next_size(0) == int(1.95 * per_chunk)  # 2 whole chunks, a little under
    sizer.observe(10_000, 0.001)  # 0.128 ms (the mean of the last two): 1960 inputs
    assert sizer.next_size(0) == int(3.95 * per_chunk)  # 4 whole chunks, a little under


def test_sizer_tail_on_an_object_store_leaves_no_slivers():
    sizer = BatchSizer(2, 5000, 0, 0, 0.25, chunk_bytes=16 << 20)
    sizer.observe(400, 0.2)
    sizer.observe_receipt(400, receipt({"images": 400 * 41_000}))  # 409 inputs a chunk
    assert sizer.next_size(5000 - 600) == 300  # remaining / workers
    assert sizer.next_size(5000 - 300) == 300  # not 150 then 150: a chunk / workers min
    assert sizer.next_size(5000 - 250) == 250
    sizer = BatchSizer(2, 5000, 0, 100, 0.25, chunk_bytes=16 << 20)
    sizer.observe_receipt(400, receipt({"images": 400 * 41_000}))
    assert sizer.next_size(250) == 50  # never past a checkpoint boundary


def test_only_object_stores_size_batches_by_chunk():
    assert _object_store_chunk_bytes({"url": "s3://b/ds", "chunk_target_bytes": 1 << 24}) \
        == 1 << 24
    assert _object_store_chunk_bytes({"url": "gs://b/ds", "chunk_target_bytes": 99}) == 99
    assert _object_store_chunk_bytes({"url": "/data/ds", "chunk_target_bytes": 1 << 23}) is None
    assert _object_store_chunk_bytes({"url": "memory://ds", "chunk_target_bytes": 8}) is None
    local = BatchSizer(2, 10_000, 0, 0, 0.1)  # no chunk_bytes: receipts change nothing
    local.observe(100, 0.01)
    before = [local.next_size(p) for p in (0, 9_000, 9_900)]
    local.observe_receipt(100, receipt({"x": 10**9}))
    assert [local.next_size(p) for p in (0, 9_000, 9_900)] == before
