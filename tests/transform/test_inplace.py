"""Deep Lake 3's in-place eval, `fn().eval(ds)` / `fn().eval(ds, None)`, as its users write
it: the dataset then holds the outputs and only the outputs, in one atomic new version;
the old version stays in the log; failures and kill -9 leave the old version; checkpoints
are staged (not versions) and a re-run resumes them."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import slicewise as sw
from slicewise.transform.inplace import staged_progress
from slicewise.transform.run import CHECKPOINT_KEY

from .conftest import kill_9_once, names, running_child, values

SCHEDULERS = [("serial", 0), ("threaded", 2), ("processed", 2)]


@sw.compute
def double(row, sample_out):
    sample_out.x.append(row.x.numpy() * 2)


@sw.compute
def double_all(row, sample_out, fail_at=None):
    value = int(row.x.numpy().reshape(-1)[0])
    if fail_at is not None and value >= fail_at:
        raise ValueError(f"bad row {value}")
    sample_out.x.append(np.int64(value * 2))
    sample_out.name.append(row.name.data()["value"].upper())
    sample_out.labels.append(row.labels.numpy())


def make_ds(path, count=10):
    ds = sw.empty(str(path), overwrite=True)
    ds.create_tensor("x")
    ds.x.extend(np.arange(count, dtype=np.int64))
    return ds


def make_rich_ds(path, count=10):
    ds = sw.empty(str(path), overwrite=True)
    with ds:
        ds.create_tensor("x", dtype="int64")
        ds.create_tensor("name", htype="text")
        ds.create_tensor("labels", htype="class_label", class_names=["even", "odd"])
        for i in range(count):
            ds.append({"x": np.int64(i), "name": f"item{i}", "labels": np.uint32(i % 2)})
    return ds


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_in_place_holds_the_outputs_only(tmp_path, scheduler, workers):
    ds = make_ds(tmp_path / "ds")
    old = ds.version
    double().eval(ds, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(ds) == [2 * i for i in range(10)]
    assert len(ds) == 10 and len(ds.x) == 10  # replaced, not 20 rows
    assert ds.version != old
    reopened = sw.load(str(tmp_path / "ds"))
    assert values(reopened) == [2 * i for i in range(10)]
    # the old version stays in the log, readable
    assert values(sw.load(str(tmp_path / "ds"), version=old)) == list(range(10))
    log = ds.log()
    assert [entry["id"] for entry in log[:2]] == [ds.version, old]
    assert log[0]["meta"][CHECKPOINT_KEY]["in_place"] is True
    assert log[0]["meta"][CHECKPOINT_KEY]["replaced"] == ["x"]
    reopened.checkout(old)
    assert values(reopened) == list(range(10))
    reopened.checkout()
    assert values(reopened) == [2 * i for i in range(10)]


@pytest.mark.timeout(60)
def test_explicit_none_and_twice(tmp_path):
    ds = make_ds(tmp_path / "ds")
    double().eval(ds, None, num_workers=2, progressbar=False)
    double().eval(ds, None, num_workers=2, scheduler="processed", progressbar=False)
    assert values(ds) == [4 * i for i in range(10)]
    assert len(ds.log()) == 5  # dataset, tensor, rows, and one version per eval


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_in_place_with_several_tensors(tmp_path, scheduler, workers):
    ds = make_rich_ds(tmp_path / "ds", count=40)
    old = ds.version
    double_all().eval(ds, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(ds) == [2 * i for i in range(40)]
    assert names(ds) == [f"ITEM{i}" for i in range(40)]
    assert values(ds, "labels") == [i % 2 for i in range(40)]
    assert ds.labels.info.class_names == ["even", "odd"]
    assert len(ds) == 40
    old_ds = sw.load(str(tmp_path / "ds"), version=old, read_only=True)
    assert names(old_ds) == [f"item{i}" for i in range(40)]
    assert sw.verify(str(tmp_path / "ds")).ok


@pytest.mark.timeout(60)
def test_in_place_on_a_memory_dataset_threaded(tmp_path):
    ds = make_ds("memory://inplace-threaded")
    double().eval(ds, num_workers=2, scheduler="threaded", checkpoint_interval=3,
                  progressbar=False)
    assert values(ds) == [2 * i for i in range(10)]


@pytest.mark.timeout(60)
def test_rows_per_input_may_change_the_length(tmp_path):
    ds = make_ds(tmp_path / "ds")

    @sw.compute
    def keep_even_twice(row, sample_out):
        value = int(row.x.numpy().reshape(-1)[0])
        if value % 2 == 0:
            sample_out.x.extend([np.int64(value), np.int64(-value)])

    keep_even_twice().eval(ds, num_workers=2, progressbar=False)
    assert values(ds) == [0, 0, 2, -2, 4, -4, 6, -6, 8, -8]


@pytest.mark.timeout(60)
def test_tensors_the_pipeline_does_not_write_keep_their_rows(tmp_path):
    """Deep Lake 3: only tensors with generated samples are replaced (skip_ok=True lets a
    pipeline leave tensors out)."""
    ds = make_rich_ds(tmp_path / "ds")

    @sw.compute
    def negate(row, sample_out):
        sample_out.x.append(-row.x.numpy())

    with pytest.raises(sw.TensorMismatchError):  # without skip_ok every tensor is needed
        negate().eval(ds, num_workers=2, progressbar=False)
    negate().eval(ds, num_workers=2, skip_ok=True, progressbar=False)
    assert values(ds) == [-i for i in range(10)]
    assert names(ds) == [f"item{i}" for i in range(10)]
    assert ds.log()[0]["meta"][CHECKPOINT_KEY]["replaced"] == ["x"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_a_failing_row_leaves_the_dataset_exactly_as_before(tmp_path, scheduler, workers):
    ds = make_rich_ds(tmp_path / "ds", count=30)
    old, log = ds.version, ds.log()
    with pytest.raises(sw.TransformError) as caught:
        double_all(fail_at=17).eval(ds, num_workers=workers, scheduler=scheduler,
                                    progressbar=False)
    assert caught.value.index == 17
    assert isinstance(caught.value.__cause__, ValueError)
    for handle in (ds, sw.load(str(tmp_path / "ds"))):
        assert handle.version == old and handle.log() == log
        assert values(handle) == list(range(30))
        assert names(handle) == [f"item{i}" for i in range(30)]
    assert not ds.has_pending
    double_all().eval(ds, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(ds) == [2 * i for i in range(30)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_checkpoints_are_staged_and_a_rerun_resumes(tmp_path, scheduler, workers):
    ds = make_rich_ds(tmp_path / "ds", count=100)
    old = ds.version
    with pytest.raises(sw.TransformError):
        double_all(fail_at=64).eval(ds, num_workers=workers, scheduler=scheduler,
                                    checkpoint_interval=10, progressbar=False)
    reopened = sw.load(str(tmp_path / "ds"))
    assert reopened.version == old  # the checkpoints are no versions
    assert values(reopened) == list(range(100))
    progress = staged_progress(reopened)
    assert progress["state"] == "checkpoint" and progress["in_place"] is True
    done = progress["inputs_done"]
    assert 10 <= done <= 64 and done % 10 == 0

    report = double_all().eval(reopened, num_workers=workers, scheduler=scheduler,
                               checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == done
    assert report.inputs_processed == 100 - done
    assert values(reopened) == [2 * i for i in range(100)]
    assert names(reopened) == [f"ITEM{i}" for i in range(100)]
    assert reopened.log()[1]["id"] == old  # one new version on top of the old one
    assert staged_progress(reopened) is None
    assert not (tmp_path / "ds" / "staged").exists() or not any(
        files for _, _, files in os.walk(tmp_path / "ds" / "staged"))
    assert sw.verify(str(tmp_path / "ds")).ok


@pytest.mark.timeout(60)
def test_gc_spares_a_staged_checkpoint_and_removes_a_stale_one(tmp_path):
    path = str(tmp_path / "ds")
    ds = make_rich_ds(path, count=50)
    with pytest.raises(sw.TransformError):
        double_all(fail_at=30).eval(ds, checkpoint_interval=10, progressbar=False)
    assert staged_progress(ds)["inputs_done"] == 30
    sw.gc(path, grace_seconds=0)  # the staged chunks are no version's, yet kept
    report = double_all().eval(ds, checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == 30
    assert values(ds) == [2 * i for i in range(50)]
    assert sw.verify(path).ok

    # a staged checkpoint whose version is no longer the newest is stale: gc removes it
    with pytest.raises(sw.TransformError):
        double_all(fail_at=80).eval(ds, checkpoint_interval=10, progressbar=False)
    stale_base = ds.version
    assert staged_progress(ds)["inputs_done"] == 40
    ds.append({"x": np.int64(7), "name": "late", "labels": np.uint32(1)})
    assert staged_progress(ds) is None  # another commit: nothing to resume on it
    removed = sw.gc(path, grace_seconds=0).removed_files
    assert any(key.startswith(f"staged/{stale_base}/") for key in removed)
    assert any(key.startswith("chunks/") for key in removed)
    assert sw.verify(path).ok
    assert values(sw.load(path, version=stale_base)) == [2 * i for i in range(50)]


@pytest.mark.timeout(60)
def test_a_commit_that_lands_during_the_eval_on_a_replaced_tensor_wins(tmp_path):
    """Another writer appends to x while the in-place eval runs: the eval's replacement
    would drop that row, so it publishes nothing (CommitConflictError inside the
    TransformError); the dataset holds the other writer's commit."""
    path = str(tmp_path / "ds")
    ds = make_ds(path)
    landed = threading.Event()

    @sw.compute
    def double_while_another_writes(row, sample_out):
        if not landed.is_set():
            landed.set()
            other = sw.load(path)
            other.x.append(np.int64(100))
        sample_out.x.append(row.x.numpy() * 2)

    with pytest.raises(sw.TransformError, match="conflict"):
        double_while_another_writes().eval(ds, num_workers=2, scheduler="threaded",
                                           progressbar=False)
    assert values(sw.load(path)) == list(range(10)) + [100]


@pytest.mark.timeout(60)
def test_a_commit_that_lands_during_the_eval_on_another_tensor_is_kept(tmp_path):
    path = str(tmp_path / "ds")
    ds = make_rich_ds(path)
    landed = threading.Event()

    @sw.compute
    def negate_while_another_writes(row, sample_out):
        if not landed.is_set():
            landed.set()
            sw.load(path).name.append("another writer")
        sample_out.x.append(-row.x.numpy())

    negate_while_another_writes().eval(ds, num_workers=2, scheduler="threaded",
                                       skip_ok=True, progressbar=False)
    for handle in (ds, sw.load(path)):
        assert values(handle) == [-i for i in range(10)]
        assert names(handle) == [f"item{i}" for i in range(10)] + ["another writer"]


# -- kill -9 of the parent ----------------------------------------------------------------
CHILD = """
import sys, time
import numpy as np
import slicewise as sw

@sw.compute
def slow_double(row, sample_out):
    time.sleep(0.01)
    sample_out.x.append(row.x.numpy() * 2)

ds = sw.load(sys.argv[1])
print("started", flush=True)
slow_double().eval(ds, num_workers=2, scheduler="processed",
                   checkpoint_interval={interval}, progressbar=False)
print("finished", flush=True)
"""


@sw.compute
def slow_double(row, sample_out):  # the child's function, under the same name
    sample_out.x.append(row.x.numpy() * 2)


@pytest.mark.timeout(120)
def test_kill_9_during_a_checkpointed_in_place_eval_then_rerun_resumes(tmp_path):
    path = str(tmp_path / "ds")
    ds = make_ds(path, count=400)
    old = ds.version
    observer = sw.load(path, read_only=True)

    def staged_far_enough():
        progress = staged_progress(observer)
        return progress is not None and progress["inputs_done"] >= 50

    with running_child(tmp_path, CHILD.format(interval=25)) as child:
        kill_9_once(staged_far_enough, child)
    reopened = sw.load(path)
    assert reopened.version == old  # killed before the end: the old version, whole
    assert values(reopened) == list(range(400))
    assert sw.verify(path).ok
    done = staged_progress(reopened)["inputs_done"]
    assert 50 <= done < 400 and done % 25 == 0

    report = slow_double().eval(reopened, num_workers=2, scheduler="processed",
                                checkpoint_interval=25, progressbar=False)
    assert report.resumed_from == done
    assert report.inputs_processed == 400 - done
    assert values(reopened) == [2 * i for i in range(400)]
    assert len(sw.load(path, read_only=True)) == 400
    assert values(sw.load(path, version=old)) == list(range(400))
    assert [entry["id"] for entry in reopened.log()[:2]] == [reopened.version, old]


@pytest.mark.timeout(120)
def test_kill_9_during_an_in_place_eval_without_checkpoints(tmp_path):
    path = str(tmp_path / "ds")
    ds = make_ds(path, count=300)
    old = ds.version
    chunks = tmp_path / "ds" / "chunks"
    before = sum(len(files) for _, _, files in os.walk(chunks))

    def workers_wrote():
        return sum(len(files) for _, _, files in os.walk(chunks)) > before

    with running_child(tmp_path, CHILD.format(interval=0)) as child:
        kill_9_once(workers_wrote, child)
    reopened = sw.load(path)
    assert reopened.version == old and values(reopened) == list(range(300))
    assert staged_progress(reopened) is None
    report = slow_double().eval(reopened, num_workers=2, scheduler="processed",
                                progressbar=False)
    assert report.resumed_from == 0
    assert values(reopened) == [2 * i for i in range(300)]


@pytest.mark.timeout(60)
def test_a_damaged_staged_checkpoint_is_never_resumed_from(tmp_path):
    """A bit flipped in a staged file (it names chunks and row counts) could make a re-run
    resume from the wrong rows: its checksum catches it, verify names it, and the re-run
    warns and starts over from the base, exactly."""
    path = str(tmp_path / "ds")
    ds = make_rich_ds(path, count=50)
    with pytest.raises(sw.TransformError):
        double_all(fail_at=30).eval(ds, checkpoint_interval=10, progressbar=False)
    assert staged_progress(ds)["inputs_done"] == 30
    [staged] = [os.path.join(folder, f) for folder, _, files in
                os.walk(os.path.join(path, "staged")) for f in files]
    data = bytearray(open(staged, "rb").read())
    at = data.index(b'"inputs_done":30') + len(b'"inputs_done":')
    data[at] = ord("4")  # 30 -> 40: still JSON, still plausible
    open(staged, "wb").write(bytes(data))

    report = sw.verify(path)
    assert [p["file"] for p in report.problems] == [staged]
    assert "checksum" in report.problems[0]["error"]
    with pytest.warns(RuntimeWarning, match="not resuming"):
        assert staged_progress(ds) is None
    with pytest.warns(RuntimeWarning, match="not resuming"):
        rerun = double_all().eval(ds, checkpoint_interval=10, progressbar=False)
    assert rerun.resumed_from == 0
    assert rerun.inputs_processed == 50
    assert values(ds) == [2 * i for i in range(50)]
    assert names(ds) == [f"ITEM{i}" for i in range(50)]
    assert sw.verify(path).ok


@pytest.mark.timeout(120)
def test_in_place_on_s3_with_staged_checkpoints_checks_chunks_by_the_gc_record(
    s3_options, s3_url, monkeypatch
):
    """An in-place eval into S3 whose checkpoints are staged: the staged receipts keep
    the gc token their writers read, so each checkpoint and the final commit prove their
    chunk objects with a GET of gc.json instead of a HEAD each (the storage's touch_all,
    watched here by a spy that calls through); a gc between two checkpoints (it spares
    what the staged checkpoint names) makes the later commits HEAD theirs."""
    pytest.importorskip("s3fs")
    from slicewise.format.storage_fsspec import FsspecStorage

    checked: list[str] = []
    touch_all = FsspecStorage.touch_all

    def spy(self, keys):
        checked.extend(keys)
        return touch_all(self, keys)

    monkeypatch.setattr(FsspecStorage, "touch_all", spy)
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int64")
    ds.x.extend(np.arange(40, dtype=np.int64))
    checked.clear()
    double().eval(ds, num_workers=2, scheduler="threaded", checkpoint_interval=10,
                  progressbar=False)
    assert checked == []
    assert ds.x.numpy().ravel().tolist() == [2 * v for v in range(40)]

    gc_ran = threading.Event()

    @sw.compute
    def plus_one_with_gc(row, sample_out):
        value = int(row.x.numpy().reshape(-1)[0])
        if value == 2 * 25 and not gc_ran.is_set():  # mid-eval, after a checkpoint
            gc_ran.set()
            sw.gc(s3_url, grace_seconds=0, storage_options=s3_options)
        sample_out.x.append(np.int64(value + 1))

    plus_one_with_gc().eval(ds, num_workers=0, scheduler="serial", checkpoint_interval=10,
                            progressbar=False)
    assert gc_ran.is_set() and checked  # after the gc, commits check each chunk object
    assert ds.x.numpy().ravel().tolist() == [2 * v + 1 for v in range(40)]
    assert sw.verify(s3_url, storage_options=s3_options).ok
