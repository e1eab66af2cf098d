"""Checkpoints, resume, and kill -9 of the parent in the middle of an eval."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import slicewise as sw
from slicewise.transform.run import CHECKPOINT_KEY

from .conftest import kill_9_once, new_ds, record, running_child, values, wait_for


def progress_of(ds):
    return ds.version_info["meta"].get(CHECKPOINT_KEY)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("make_input", [list, lambda items: (i for i in items)],
                         ids=["list", "generator"])
def test_checkpoints_keep_progress_and_a_rerun_resumes(tmp_path, make_input):
    ds = new_ds(tmp_path / "ds")
    items = list(range(100))
    with pytest.raises(sw.TransformError) as caught:
        record(fail_from=64).eval(make_input(items), ds, num_workers=2,
                                  scheduler="processed", checkpoint_interval=10,
                                  progressbar=False)
    assert caught.value.index == 64
    reopened = sw.load(str(tmp_path / "ds"))
    progress = progress_of(reopened)
    assert progress["state"] == "checkpoint"
    done = progress["inputs_done"]
    assert 10 <= done <= 64  # checkpointed progress, nothing at or past the failure
    assert values(reopened) == list(range(done))

    report = record().eval(make_input(items), reopened, num_workers=2,
                           scheduler="processed", checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == done
    assert report.rows_written == 100 - done
    assert values(reopened) == items
    assert [reopened.name[i].data()["value"] for i in (0, 99)] == ["item0", "item99"]
    assert progress_of(reopened)["state"] == "done"
    # The eval finished: running it again is a new eval, appending (Deep Lake 3's meaning).
    record().eval(items[:3], reopened, progressbar=False)
    assert values(reopened)[-3:] == [0, 1, 2]


@pytest.mark.timeout(60)
def test_other_input_does_not_resume_the_checkpoint(tmp_path):
    ds = new_ds(tmp_path / "ds")
    with pytest.raises(sw.TransformError):
        record(fail_from=30).eval(list(range(50)), ds, checkpoint_interval=10,
                                  progressbar=False)  # serial: checkpoints at 10, 20, 30
    done = progress_of(ds)["inputs_done"]
    assert done == 30  # every input before the failing one
    with pytest.warns(UserWarning, match="not resuming"):
        report = record().eval(list(range(1000, 1005)), ds, checkpoint_interval=10,
                               progressbar=False)
    assert report.resumed_from == 0
    assert values(ds) == list(range(done)) + list(range(1000, 1005))


@sw.compute
def slow(item, sample_out):  # the child's function, under the same name
    sample_out.append({"x": np.int64(item), "name": f"item{item}"})


CHILD = """
import sys, time
import numpy as np
import slicewise as sw

@sw.compute
def slow(item, sample_out):
    time.sleep(0.01)
    sample_out.append({{"x": np.int64(item), "name": f"item{{item}}"}})

ds = sw.load(sys.argv[1])
print("started", flush=True)
slow().eval(list(range({count})), ds, num_workers=2, scheduler="processed",
            checkpoint_interval={interval}, progressbar=False)
print("finished", flush=True)
"""


@pytest.mark.timeout(120)
def test_kill_9_of_the_parent_then_rerun_resumes_from_the_last_checkpoint(tmp_path):
    ds = new_ds(tmp_path / "ds")
    ds.x.append(np.int64(-1))
    ds.name.append("before")
    ds.commit("one row before the eval")
    observer = sw.load(str(tmp_path / "ds"), read_only=True)

    def checkpointed():
        observer.refresh()
        progress = progress_of(observer)
        return progress is not None and progress["inputs_done"] >= 50

    with running_child(tmp_path, CHILD.format(count=400, interval=25)) as child:
        kill_9_once(checkpointed, child)
    reopened = sw.load(str(tmp_path / "ds"))
    progress = progress_of(reopened)
    assert progress["state"] == "checkpoint"  # killed before the end
    done = progress["inputs_done"]
    assert 50 <= done < 400
    assert values(reopened) == [-1] + list(range(done))

    report = slow().eval(list(range(400)), reopened, num_workers=2, scheduler="processed",
                         checkpoint_interval=25, progressbar=False)
    assert report.resumed_from == done
    assert values(reopened) == [-1] + list(range(400))
    assert reopened.name[400].data()["value"] == "item399"
    assert len(sw.load(str(tmp_path / "ds"), read_only=True)) == 401


@pytest.mark.timeout(120)
def test_kill_9_without_checkpoints_leaves_the_previous_version(tmp_path):
    ds = new_ds(tmp_path / "ds")
    version = ds.version
    with running_child(tmp_path, CHILD.format(count=300, interval=0)) as child:
        kill_9_once(lambda: (tmp_path / "ds" / "chunks").exists() and any(
            len(files) for _, _, files in os.walk(tmp_path / "ds" / "chunks")), child)
    reopened = sw.load(str(tmp_path / "ds"))
    assert reopened.version == version and len(reopened) == 0
    report = sw.compute(lambda item, out: out.append(
        {"x": np.int64(item), "name": str(item)}))().eval(
        list(range(300)), reopened, num_workers=2, scheduler="processed", progressbar=False)
    assert report.resumed_from == 0
    assert values(reopened) == list(range(300))


@pytest.mark.timeout(120)
def test_ctrl_c_during_an_eval_leaves_the_previous_version(tmp_path):
    ds = new_ds(tmp_path / "ds")
    version = ds.version
    with running_child(tmp_path, CHILD.format(count=400, interval=0)) as child:
        wait_for(lambda: child.stdout.readline().startswith("started"), child)
        time.sleep(0.5)  # inside the eval: workers are writing chunk files
        os.kill(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    reopened = sw.load(str(tmp_path / "ds"))
    assert reopened.version == version and len(reopened) == 0
