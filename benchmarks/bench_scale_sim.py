"""A 1,000-worker simulation of a cluster eval against the S3 harness (issue 11).

    python benchmarks/bench_scale_sim.py                  # 1,000 workers, 10,000 tasks
    python benchmarks/bench_scale_sim.py --workers 100 --tasks 1000 --json out.json

What runs, all real except the fault injector:

- a moto S3 server on 127.0.0.1, in its own process (so the numbers below are this
  process's: the driver and its 1,000 worker threads);
- 1,000 worker threads take 10,000 tasks from a queue. A task is what an eval batch
  does on a cluster worker: `DatasetWriter.from_spec(spec)` (storage options by value),
  `--rows` samples appended, `finish()` writes one chunk object to S3 and returns the
  receipt. A share of tasks (`--rerun`) runs twice, as a Dask worker death re-runs a
  task: the second attempt writes its chunk under a fresh name and sends a second
  receipt;
- one driver thread does what eval's driver does: it takes exactly one receipt per task
  (the first to arrive), keeps them in task order, and commits the contiguous prefix
  every `--checkpoint` tasks (`Dataset.add_receipts` + `commit`: HEADs of the chunk
  objects, then a put-if-absent of the next manifest);
- the fault injector of tests/format/test_format_s3_faults.py (a botocore hook, the one
  stand-in: moto never sends these) answers a share of the manifest PUTs with
  409 ConditionalRequestConflict / 503 SlowDown or drops their connection after they
  landed, and a share of the chunk PUTs with 503 or a dropped connection.

Checked at the end: every sample exactly once and in task order, every commit the driver
saw succeed is in the dataset's history (none lost), the manifest references exactly one
chunk per task, and gc removes every chunk of the second attempts and nothing else.
Reported: tasks/s, commit times, receipts held by the driver, peak RSS of this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import queue
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

import slicewise as sw  # noqa: E402
from slicewise.format.manifest import chunk_key, list_version_seqs, read_version  # noqa: E402
from slicewise.format.storage import FsspecStorage  # noqa: E402
from slicewise.format.writer import DatasetWriter  # noqa: E402

SERVER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


def _injector_class():
    path = ROOT / "tests" / "format" / "test_format_s3_faults.py"
    spec = importlib.util.spec_from_file_location("_s3_faults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.S3FaultInjector


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(workers: int, tasks: int, rows: int, checkpoint: int, rerun: float, faults: bool,
        seed: int = 0) -> dict:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(server.stdout.readline())
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing",
                   "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}
        import boto3

        boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket="sim")
        return _simulate(options, workers, tasks, rows, checkpoint, rerun, faults, seed)
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _simulate(options, workers, tasks, rows, checkpoint, rerun, faults, seed) -> dict:
    url = f"s3://sim/{uuid.uuid4().hex}"
    ds = sw.empty(url, storage_options=options)
    ds.create_tensor("x", dtype="int64")
    spec = json.loads(json.dumps(ds.writer_spec()))  # by value, as it travels to workers
    # A writer's buffer is its chunk target (16 MiB on S3) plus one sample: fine for one
    # writer per worker process, not for 1,000 writers in this one process. The tasks
    # here write ~100-byte chunks, so a small target changes nothing else.
    spec["chunk_target_bytes"] = 64 * 1024
    storage = FsspecStorage(url, options)
    storage.fs.connect()
    rng = random.Random(seed)
    reruns = {t for t in range(tasks) if rng.random() < rerun}

    work: queue.Queue = queue.Queue()
    for t in range(tasks):
        work.put(t)
    receipts: queue.Queue = queue.Queue()
    worker_errors: list[BaseException] = []

    def worker():
        while True:
            try:
                t = work.get_nowait()
            except queue.Empty:
                return
            try:
                for attempt in range(2 if t in reruns else 1):
                    writer = DatasetWriter.from_spec(spec, writer_id=f"t{t}a{attempt}")
                    writer.extend("x", np.arange(t * rows, (t + 1) * rows, dtype=np.int64))
                    receipts.put((t, writer.finish()))
            except BaseException as exc:
                worker_errors.append(exc)
                receipts.put((t, None))

    commit_times: list[float] = []
    committed_ids: list[str] = []
    held_bytes = [0, 0]  # now, peak: receipts the driver holds before committing them

    def driver():
        first: dict[int, dict] = {}
        next_task, batch, duplicates = 0, [], 0
        seen = 0
        while next_task < tasks:
            t, receipt = receipts.get()
            seen += 1
            if receipt is None:
                raise RuntimeError(f"task {t} failed: {worker_errors[-1]!r}")
            if t in first or t < next_task:
                duplicates += 1  # a re-run's receipt: its chunk is left to gc
                continue
            first[t] = receipt
            held_bytes[0] += len(json.dumps(receipt))
            held_bytes[1] = max(held_bytes)
            while next_task in first:
                batch.append(first.pop(next_task))
                next_task += 1
                if len(batch) >= checkpoint or next_task == tasks:
                    start = time.perf_counter()
                    ds.add_receipts(batch)
                    committed_ids.append(ds.commit(f"tasks up to {next_task}"))
                    commit_times.append(time.perf_counter() - start)
                    held_bytes[0] -= sum(len(json.dumps(r)) for r in batch)
                    batch = []
        return duplicates

    injector_cls = _injector_class()
    chunk_faults = {"503": 0.03, "drop": 0.02} if faults else {}
    commit_faults = {"409": 0.3, "503": 0.1, "drop": 0.1} if faults else {}
    rss_before = _rss_mb()
    start = time.perf_counter()
    with injector_cls(storage.fs, commit_faults, keys="/versions/", seed=seed) as on_commits, \
            injector_cls(storage.fs, chunk_faults, keys="/chunks/", conditional_only=False,
                         seed=seed + 1) as on_chunks:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
        for thread in threads:
            thread.start()
        result: dict = {}
        driver_thread = threading.Thread(target=lambda: result.update(dup=driver()))
        driver_thread.start()
        driver_thread.join()
        for thread in threads:
            thread.join()
    elapsed = time.perf_counter() - start
    if "dup" not in result:
        raise RuntimeError("the driver failed (see above)")

    # ---- the invariants
    final = sw.load(url, storage_options=options)
    values = final.x.numpy().ravel()
    assert values.tolist() == list(range(tasks * rows)), "a sample lost, doubled or moved"
    history = {info["id"] for info in final.log()}
    missing = [c for c in committed_ids if c not in history]
    assert not missing, f"commits the driver saw succeed are not in the history: {missing}"
    seqs = list_version_seqs(final.storage)
    chunks = set()
    for seq in seqs[-1:]:
        for state in read_version(final.storage, seq).tensors.values():
            chunks |= {chunk_key(state.meta.id, name) for name in state.keys}
    assert len(chunks) == tasks, f"{len(chunks)} chunks referenced for {tasks} tasks"
    stored = storage.list("chunks", refresh=True)
    gc_report = sw.gc(url, grace_seconds=0, storage_options=options)
    left = set(storage.list("chunks", refresh=True))
    assert left == chunks, "gc left an orphan or took a referenced chunk"
    manifest_bytes = len(final.storage.get(f"versions/{seqs[-1]:012d}.json"))
    return {
        "workers": workers,
        "tasks": tasks,
        "rows_per_task": rows,
        "samples": tasks * rows,
        "rerun_tasks": len(reruns),
        "duplicate_receipts_dropped": result["dup"],
        "chunk_objects_written": len(stored),
        "orphans_removed_by_gc": len(gc_report.removed_files),
        "commits": len(commit_times),
        "versions": len(seqs),
        "faults_injected_commits": on_commits.injected,
        "faults_injected_chunks": on_chunks.injected,
        "seconds": round(elapsed, 2),
        "tasks_per_second": round(tasks / elapsed, 1),
        "commit_seconds_total": round(sum(commit_times), 2),
        "commit_seconds_median": round(statistics.median(commit_times), 3),
        "commit_seconds_max": round(max(commit_times), 3),
        "driver_receipt_bytes_peak": held_bytes[1],
        "receipt_bytes_mean": round(held_bytes[1] / max(1, checkpoint), 1),
        "final_manifest_bytes": manifest_bytes,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_peak": round(_rss_mb(), 1),
        "every_sample_once_in_order": True,
        "no_lost_commit": True,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=8, help="samples per task")
    parser.add_argument("--checkpoint", type=int, default=500, help="tasks per commit")
    parser.add_argument("--rerun", type=float, default=0.02, help="share of tasks run twice")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args(argv)
    result = run(args.workers, args.tasks, args.rows, args.checkpoint, args.rerun,
                 not args.no_faults)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
