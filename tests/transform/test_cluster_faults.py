"""kill -9 of the driver of a cluster eval (scheduler="dask"), with real parts only: a
driver process that starts its own Dask LocalCluster (2 worker processes) and evals with
checkpoints into a local dataset or into S3 (the moto server on 127.0.0.1), a real
SIGKILL of that process after its first checkpoints, then:

- the dataset opens at its last checkpoint: a prefix of the rows, in order;
- the same eval run again (a new driver, a new cluster) resumes exactly: every row once,
  in input order;
- `gc` then leaves no chunk file that no version references (the killed driver's
  in-flight batches wrote some), and on S3 no incomplete multipart upload.

One trial per storage here; `SLICEWISE_FAULT_TRIALS=10` runs more (by hand).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slicewise as sw
from slicewise.format.manifest import chunk_key, list_version_seqs, read_version
from slicewise.format.storage import open_storage

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("SLICEWISE_FAULT_TRIALS", "1"))
ITEMS = 600

DRIVER = """
import json, sys, time
import numpy as np
import slicewise as sw


@sw.compute
def slow(item, sample_out):
    time.sleep(0.02)
    sample_out.append({"x": np.int64(item)})


if __name__ == "__main__":
    from distributed import Client, LocalCluster

    url, options, items = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        ds = sw.load(url, storage_options=options)
        report = slow().eval(list(range(items)), ds, num_workers=2, scheduler="dask",
                             checkpoint_interval=20, progressbar=False)
        print("resumed_from", report.resumed_from, flush=True)
"""


def _driver(tmp_path, url, options):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    # its own session: the cluster's worker processes it starts can be reaped after the
    # driver itself is killed (they are ours; nothing else is touched)
    return subprocess.Popen(
        [sys.executable, str(script), url, json.dumps(options), str(ITEMS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )


def _reap(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _rows(ds) -> list[int]:
    return ds.x.numpy().ravel().tolist() if len(ds.x) else []


def _unreferenced_chunks(url, options) -> list[str]:
    storage = open_storage(url, options)
    referenced = set()
    for seq in list_version_seqs(storage):
        for state in read_version(storage, seq).tensors.values():
            referenced |= {chunk_key(state.meta.id, name) for name in state.keys}
    return [key for key in storage.list("chunks", refresh=True) if key not in referenced]


def kill_driver_then_resume(tmp_path, url, options) -> dict:
    """One trial; returns what it saw."""
    ds = sw.empty(url, overwrite=True, storage_options=options)
    ds.create_tensor("x", dtype="int64")
    observer = sw.load(url, read_only=True, storage_options=options)
    driver = _driver(tmp_path, url, options)
    try:
        while True:  # after the first checkpoints, mid-eval
            assert driver.poll() is None, driver.communicate()
            observer.refresh()
            if len(observer.x) >= 40:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # batches after the checkpoint are in flight: their chunks orphan
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        _reap(driver)
    assert driver.returncode == -signal.SIGKILL
    opened = sw.load(url, storage_options=options)
    done = _rows(opened)
    assert done == list(range(len(done))) and 40 <= len(done) < ITEMS  # its last checkpoint
    orphans_before = len(_unreferenced_chunks(url, options))

    rerun = _driver(tmp_path, url, options)
    try:
        out, err = rerun.communicate(timeout=150)
    finally:
        _reap(rerun)
    assert rerun.returncode == 0, err[-3000:]
    assert f"resumed_from {len(done)}" in out, (out, err[-2000:])
    assert _rows(sw.load(url, storage_options=options)) == list(range(ITEMS))  # each once

    report = sw.gc(url, grace_seconds=0, storage_options=options)
    assert _unreferenced_chunks(url, options) == []
    assert _rows(sw.load(url, storage_options=options)) == list(range(ITEMS))
    assert sw.verify(url, storage_options=options).ok
    uploads = open_storage(url, options).abort_incomplete_uploads(0, dry_run=True)
    assert uploads == []
    return {"checkpointed": len(done), "orphans": orphans_before,
            "gc_removed": len(report.removed_files)}


@pytest.mark.slow
@pytest.mark.timeout(150 + 120 * TRIALS)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_kill_9_of_a_dask_eval_driver_resumes_exactly(tmp_path, request, where):
    if where == "s3":
        options = request.getfixturevalue("s3_options")
        base = request.getfixturevalue("s3_url")
    else:
        options, base = None, str(tmp_path / "ds")
    seen = [kill_driver_then_resume(tmp_path, f"{base}-{trial}", options)
            for trial in range(TRIALS)]
    print(where, seen)
