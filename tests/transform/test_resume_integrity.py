"""Resume never duplicates (issue 9, case 5): a re-run of an unfinished eval either resumes
exactly, its checkpointed rows being still the rows it wrote (even with other commits
since), or refuses with a ResumeError that says why and how to start over
(`eval(..., resume=False)`). Concurrent evals into one dataset get the same guarantee.

Reported: a re-run after any other commit (an empty `ds.commit()`, an `info` update)
restarted from input 0 and appended duplicates with no error; of two evals into one
dataset, the one killed and re-run duplicated its checkpointed rows (with a warning).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import numpy as np
import pytest

import slicewise as sw
from slicewise.transform.errors import ResumeError
from slicewise.transform.run import CHECKPOINT_KEY

from .conftest import names, new_ds, record, running_children, values


def fail_at_30(ds, items, **kwargs):
    """An eval of `items` that checkpoints every 10 inputs and fails at the 31st."""
    with pytest.raises(sw.TransformError):
        record(fail_from=items[30]).eval(items, ds, checkpoint_interval=10, progressbar=False,
                                         **kwargs)
    assert ds.version_info["meta"][CHECKPOINT_KEY]["inputs_done"] == 30


def other_commit(ds, kind):
    if kind == "empty commit":
        ds.commit("nothing")
    elif kind == "info update":
        ds.x.info.update(unit="mm")
    elif kind == "another eval's rows":
        with pytest.warns(UserWarning, match="not resuming"):  # it is another eval
            record().eval([1000, 1001], ds, progressbar=False)
    elif kind == "a row appended":
        ds.append({"x": np.int64(-5), "name": "hand"})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["empty commit", "info update", "another eval's rows",
                                  "a row appended"])
def test_rerun_after_another_commit_resumes_exactly(tmp_path, kind):
    ds = new_ds(tmp_path / "ds")
    items = list(range(50))
    fail_at_30(ds, items)
    other_commit(ds, kind)
    between = values(ds)[30:]
    report = record().eval(items, ds, checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == 30  # before the fix: 0, and rows 0..29 twice
    assert values(ds) == list(range(30)) + between + list(range(30, 50))
    assert Counter(values(ds))[0] == 1
    assert names(ds)[-1] == "item49"


@pytest.mark.timeout(90)
def test_rerun_after_other_commits_resumes_with_processes(tmp_path):
    ds = new_ds(tmp_path / "ds")
    items = list(range(200))
    with pytest.raises(sw.TransformError):
        record(fail_from=150).eval(items, ds, num_workers=2, scheduler="processed",
                                   checkpoint_interval=20, progressbar=False)
    done = ds.version_info["meta"][CHECKPOINT_KEY]["inputs_done"]
    assert 20 <= done <= 150
    ds.commit("empty")
    ds.x.info.update(unit="mm")
    ds.commit("empty again")
    report = record().eval(items, ds, num_workers=2, scheduler="processed",
                           checkpoint_interval=20, progressbar=False)
    assert report.resumed_from == done
    assert values(ds) == items


@pytest.mark.timeout(60)
def test_rerun_refuses_when_checkpointed_rows_were_changed(tmp_path):
    ds = new_ds(tmp_path / "ds")
    items = list(range(50))
    fail_at_30(ds, items)
    eval_id = ds.version_info["meta"][CHECKPOINT_KEY]["eval"]
    ds.x[5] = np.int64(-1)  # rewrites the chunk holding row 5: not the rows it wrote
    version = ds.version
    with pytest.raises(ResumeError) as caught:
        record().eval(items, ds, checkpoint_interval=10, progressbar=False)
    error = caught.value
    assert isinstance(error, sw.TransformError)
    assert error.eval_id == eval_id and eval_id in str(error)
    assert error.fingerprint and error.fingerprint in str(error)
    assert "tensor 'x'" in str(error) and "resume=False" in str(error)
    assert ds.version == version and len(ds.x) == 30  # nothing written
    # resume=False starts over from the first input, as the message says
    report = record().eval(items, ds, checkpoint_interval=10, progressbar=False,
                           resume=False)
    assert report.resumed_from == 0
    assert values(ds)[30:] == items
    # the abandoned eval is never resumed again: a later run is a new eval (Deep Lake 3)
    again = record().eval(items[:3], ds, progressbar=False)
    assert again.resumed_from == 0 and values(ds)[-3:] == [0, 1, 2]


@pytest.mark.timeout(60)
def test_rerun_refuses_when_checkpointed_rows_were_cleared(tmp_path):
    ds = new_ds(tmp_path / "ds")
    items = list(range(50))
    fail_at_30(ds, items)

    @sw.compute
    def keep_first(row, sample_out):
        if int(row.x.numpy().reshape(-1)[0]) == 0:
            sample_out.append({"x": row.x.numpy(), "name": row.name.data()["value"]})

    keep_first().eval(ds, progressbar=False)  # in place: now 1 row
    assert len(ds.x) == 1
    with pytest.raises(ResumeError, match="not in version"):
        record().eval(items, ds, checkpoint_interval=10, progressbar=False)
    assert len(ds.x) == 1


@pytest.mark.timeout(60)
def test_two_unfinished_evals_each_resume_their_own_rows(tmp_path):
    """Generators too: the re-run reads ahead the longest checked prefix and replays what
    it does not skip."""
    ds = new_ds(tmp_path / "ds")
    first, second = list(range(50)), list(range(100, 150))
    fail_at_30(ds, first)
    with pytest.raises(sw.TransformError), pytest.warns(UserWarning, match="not resuming"):
        record(fail_from=120).eval(second, ds, checkpoint_interval=10, progressbar=False)
    assert values(ds) == first[:30] + second[:20]
    with pytest.warns(UserWarning, match="not resuming"):  # neither matches these inputs
        record().eval([7, 8], ds, progressbar=False)
    report = record().eval((i for i in second), ds, checkpoint_interval=10,
                           progressbar=False)
    assert report.resumed_from == 20
    report = record().eval((i for i in first), ds, checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == 30
    assert values(ds) == first[:30] + second[:20] + [7, 8] + second[20:] + first[30:]
    assert sorted(values(ds)) == sorted(first + second + [7, 8])


@pytest.mark.timeout(60)
def test_resume_false_abandons_the_old_checkpoint(tmp_path):
    ds = new_ds(tmp_path / "ds")
    items = list(range(50))
    fail_at_30(ds, items)  # eval A: 30 rows checkpointed
    with pytest.raises(sw.TransformError):  # eval B, started over: 20 rows checkpointed
        record(fail_from=20).eval(items, ds, checkpoint_interval=10, progressbar=False,
                                  resume=False)
    report = record().eval(items, ds, checkpoint_interval=10, progressbar=False)
    assert report.resumed_from == 20  # B's checkpoint, never A's
    assert values(ds) == items[:30] + items


CHILD = """
import sys, time
import numpy as np
import slicewise as sw

@sw.compute
def slow(item, sample_out):
    time.sleep(0.01)
    sample_out.append({"x": np.int64(item), "name": f"item{item}"})

ds = sw.load(sys.argv[1])
first = int(sys.argv[2])
slow().eval(list(range(first, first + 300)), ds, num_workers=2, scheduler="processed",
            checkpoint_interval=25, progressbar=False)
print("finished", flush=True)
"""


@sw.compute
def slow(item, sample_out):  # the children's function, under the same name
    sample_out.append({"x": np.int64(item), "name": f"item{item}"})


@pytest.mark.timeout(180)
def test_concurrent_evals_one_killed_9_and_rerun_write_each_row_once(tmp_path):
    """Two evals with different inputs into one dataset, both checkpointing, in two
    processes; one is killed with kill -9 after its checkpoints and re-run once the other
    finished (whose commits then came after the killed one's checkpoints)."""
    new_ds(tmp_path / "ds")
    observer = sw.load(str(tmp_path / "ds"), read_only=True)

    def killed_has_checkpointed():
        observer.refresh()
        return sum(1 for v in values(observer) if v < 1000) >= 50

    ds_path = str(tmp_path / "ds")
    with running_children(tmp_path, CHILD, [ds_path, "0"], [ds_path, "1000"]) as (killed, other):
        while not killed_has_checkpointed():
            assert killed.poll() is None and other.poll() is None, killed.communicate()
            time.sleep(0.05)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        _, stderr = other.communicate(timeout=120)
        assert other.returncode == 0, stderr
    ds = sw.load(str(tmp_path / "ds"))
    done = [v for v in values(ds) if v < 1000]
    assert done == list(range(len(done))) and 50 <= len(done) < 300
    report = slow().eval(list(range(300)), ds, num_workers=2, scheduler="processed",
                         checkpoint_interval=25, progressbar=False)
    assert report.resumed_from == len(done)  # before the fix: 0, duplicating its rows
    rows = values(ds)
    assert Counter(rows) == Counter(list(range(300)) + list(range(1000, 1300)))
    assert [v for v in rows if v < 1000] == list(range(300))  # each eval's rows in order
    assert [v for v in rows if v >= 1000] == list(range(1000, 1300))
    assert names(ds)[rows.index(299)] == "item299"


@pytest.mark.timeout(60)
def test_gc_keeps_an_unfinished_evals_checkpoint(tmp_path):
    """sw.gc(keep_last=1) after other commits would drop the version holding the
    unfinished eval's checkpoint record; a re-run then found none and wrote every row
    again. gc keeps that version (and the ones after it) while the eval is unfinished."""
    ds = new_ds(tmp_path / "ds")
    items = list(range(50))
    fail_at_30(ds, items)
    for i in range(3):
        ds.commit(f"other {i}")
    report = sw.gc(str(tmp_path / "ds"), keep_last=1, grace_seconds=0)
    assert report.kept_versions  # the checkpoint's version and everything after it
    report = record().eval(items, sw.load(str(tmp_path / "ds")), checkpoint_interval=10,
                           progressbar=False)
    assert report.resumed_from == 30
    done = sw.load(str(tmp_path / "ds"))
    assert values(done) == items
    sw.gc(str(tmp_path / "ds"), keep_last=1, grace_seconds=0)  # finished: nothing to keep
    assert len(sw.load(str(tmp_path / "ds")).log()) == 1
    assert values(sw.load(str(tmp_path / "ds"))) == items
