"""Fault campaign (issue 11): SIGKILL a cluster worker in the middle of an eval, N times.

    python benchmarks/fault_campaign.py --trials 10                 # dask and ray
    python benchmarks/fault_campaign.py --engines ray --target busy --trials 10
    python benchmarks/fault_campaign.py --engines ray --target raylet --trials 1

One cluster per engine, started once, as a user's would be: a Dask `LocalCluster` of 2
worker processes (one thread each) and a local Ray, `ray.init(num_cpus=2)`. Each trial
evals `slow` (sleeps `--sleep-ms` per item, appends one row) over `--items` inputs into a
fresh local dataset, `num_workers=2`, while a thread waits a random 0.3-1.0 s and then
SIGKILLs one process picked at random among the engine's workers:

    dask   the worker processes (their pids as their nannies, in this process, know
           them); the nanny restarts them
    ray    the worker processes of *this* driver's own raylet (its children titled
           "ray::..."; the agents excluded): the task's worker ("ray::run_remote_batch")
           or an idle, prestarted one ("ray::IDLE"). `--target busy` picks only the former.

A trial passes when the eval completes and the dataset holds every row exactly once, in
input order (and `sw.verify` passes). The table says how many kills landed while the eval
was still running, and whether the killed process was busy.

`--target raylet` (Ray only) kills this driver's raylet instead: the node dies, and no
trial can pass. It shows how that fails: with a clear error that names no input, nothing
committed. That was the mistake behind the first Ray campaign: a Ray worker retitles
itself ("ray::IDLE"), so the only process whose command line still says
`default_worker.py` is the raylet (`--python_worker_command=... default_worker.py`), and
a kill picked by that name takes the whole local node down.

Only processes this script started are ever signalled (children of its own cluster).
Run it from the repository root.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

import slicewise as sw


@sw.compute
def slow(item, sample_out, sleep_s=0.01):
    time.sleep(sleep_s)
    sample_out.append({"x": np.int64(item)})


# -- processes -------------------------------------------------------------------------
def _children(parent: int) -> list[tuple[int, str]]:
    """(pid, first word of the command line) of `parent`'s child processes."""
    import psutil

    found = []
    for child in psutil.Process(parent).children():
        try:
            words = child.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        found.append((child.pid, words[0].strip() if words else ""))
    return found


def ray_raylet() -> int:
    """This driver's own raylet (ray.init started it as a child of this process)."""
    for pid, title in _children(os.getpid()):
        if title.endswith("/raylet"):
            return pid
    raise RuntimeError("no raylet among this process's children: is Ray local and ours?")


def ray_workers(busy_only: bool) -> list[tuple[int, str]]:
    """Worker processes of this driver's raylet: (pid, title)."""
    workers = [
        (pid, title)
        for pid, title in _children(ray_raylet())
        if title.startswith("ray::") and "Agent" not in title
    ]
    if busy_only:
        workers = [(pid, title) for pid, title in workers if title != "ray::IDLE"]
    return workers


# -- engines ---------------------------------------------------------------------------
class Dask:
    name = "dask"

    def __init__(self) -> None:
        import distributed

        self.cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = distributed.Client(self.cluster)

    def victims(self, target: str) -> list[tuple[int, str]]:
        if target == "raylet":
            raise SystemExit("--target raylet is for Ray only")
        nannies = list(self.cluster.workers.values())  # in this process: no round trip
        return [
            (nanny.pid, f"dask worker {nanny.worker_address}") for nanny in nannies if nanny.pid
        ]

    def close(self) -> None:
        self.client.close()
        try:  # after many kills its close can wait for a nanny forever (distributed's)
            self.cluster.close(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the trials are done; say so, go on
            print(f"  (closing the LocalCluster: {type(exc).__name__}: {exc})", flush=True)


class Ray:
    name = "ray"

    def __init__(self) -> None:
        import ray

        self.ray = ray
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.raylet = ray_raylet()

    def victims(self, target: str) -> list[tuple[int, str]]:
        if target == "raylet":
            return [(self.raylet, "raylet")]
        return ray_workers(busy_only=target == "busy")

    def close(self) -> None:
        self.ray.shutdown()


# -- one trial -------------------------------------------------------------------------
def trial(engine, target: str, items: int, sleep_s: float, where: str, rng, kills: int) -> dict:
    path = os.path.join(where, f"{engine.name}-ds")
    ds = sw.empty(path, overwrite=True)
    ds.create_tensor("x", dtype="int64")
    finished = threading.Event()
    kill: dict = {"killed": [], "note": None}

    def killer() -> None:
        wait = rng.uniform(0.3, 1.0)
        while len(kill["killed"]) < kills:
            if finished.wait(wait):
                kill["note"] = kill["note"] or "eval over before the kill"
                return
            wait = rng.uniform(0.2, 0.5)  # the next kill, if any
            victims = engine.victims(target)
            if not victims:
                kill["note"] = "no worker process to kill"
                continue
            pid, title = rng.choice(victims)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                kill["note"] = "the victim exited first"
                continue
            kill["killed"].append((pid, title, not finished.is_set()))

    started = time.perf_counter()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    error = None
    try:
        slow(sleep_s=sleep_s).eval(
            list(range(items)), ds, scheduler=engine.name, num_workers=2, progressbar=False
        )
    except Exception as exc:  # noqa: BLE001 - a failed trial is a row of the table
        error = f"{type(exc).__name__}: {exc}"
    finally:
        seconds = time.perf_counter() - started
        finished.set()
        thread.join()
    back = sw.load(path)
    rows = back.x.numpy().ravel().tolist() if len(back.x) else []
    exact = rows == list(range(items))
    if error is None and not exact:
        error = f"rows wrong: {len(rows)} rows, {len(set(rows))} distinct"
    if error is None and not sw.verify(path).ok:
        error = "sw.verify failed"
    return {
        "ok": error is None,
        "error": error,
        "seconds": seconds,
        "rows": len(rows),
        "killed": kill["killed"],
        "mid_eval": sum(1 for _, _, mid in kill["killed"] if mid),
        "note": kill["note"],
    }


def campaign(
    engine_name: str, trials: int, target: str, items: int, sleep_s: float, seed: int, kills: int
) -> list[dict]:
    rng = random.Random(seed)
    engine = Dask() if engine_name == "dask" else Ray()
    where = tempfile.mkdtemp(prefix=f"sw-fault-{engine_name}-")
    results = []
    try:
        # warm-up, untimed: the workers import slicewise once
        slow(sleep_s=0).eval(
            list(range(4)), _warm_ds(where), scheduler=engine_name, num_workers=2, progressbar=False
        )
        for number in range(trials):
            result = trial(engine, target, items, sleep_s, where, rng, kills)
            results.append(result)
            print(
                f"  {engine_name} trial {number + 1}: "
                f"{'pass' if result['ok'] else 'FAIL'} {result['seconds']:.1f} s, "
                f"killed {', '.join(title for _, title, _ in result['killed']) or result['note']}"
                f"{'' if result['ok'] else ', rows in the dataset ' + str(result['rows'])}"
                f"{'' if result['ok'] else ' -- ' + str(result['error'])[:300]}",
                flush=True,
            )
            time.sleep(1.0)  # let the engine bring the killed worker back
    finally:
        engine.close()
        shutil.rmtree(where, ignore_errors=True)
    return results


def _warm_ds(where: str):
    ds = sw.empty(os.path.join(where, "warm"), overwrite=True)
    ds.create_tensor("x", dtype="int64")
    return ds


def table(rows: list[tuple[str, list[dict]]], target: str) -> str:
    lines = [
        "| engine | target | trials | passed | kills (mid-eval) | busy / idle killed | "
        "eval s (median, max) | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, results in rows:
        mid = sum(r["mid_eval"] for r in results)
        titles = [title for r in results for _, title, _ in r["killed"]]
        busy = sum(1 for title in titles if title != "ray::IDLE")
        idle = len(titles) - busy
        seconds = [r["seconds"] for r in results]
        failures = "; ".join(sorted({str(r["error"])[:120] for r in results if not r["ok"]}))
        lines.append(
            f"| {name} | {target} | {len(results)} | {sum(r['ok'] for r in results)} | "
            f"{len(titles)} ({mid}) | "
            f"{busy} / {idle} | {statistics.median(seconds):.1f}, {max(seconds):.1f} | "
            f"{failures or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--engines", default="dask,ray")
    parser.add_argument("--target", choices=("any", "busy", "raylet"), default="any")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--sleep-ms", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs per trial")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: where a stuck trial waits
    rows = []
    for name in args.engines.split(","):
        print(f"{name}: {args.trials} trials, target {args.target}, {args.kills} kill(s) each")
        rows.append(
            (
                name,
                campaign(
                    name,
                    args.trials,
                    args.target,
                    args.items,
                    args.sleep_ms / 1000,
                    args.seed,
                    args.kills,
                ),
            )
        )
    print(f"\nload average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print(table(rows, args.target))
    return 0 if all(r["ok"] for _, results in rows for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
