"""SIGKILL from outside, mid-eval, on real clusters (issue 11's fault campaign, in small):
a local Ray (`ray.init(num_cpus=2)`) and a Dask LocalCluster (2 worker processes).

- A worker killed from outside while the eval runs is not the inputs' fault: the eval
  completes with every row exactly once, in input order (the engine re-runs the task;
  a batch lost even so is probed, and run again when no input of it kills a worker
  alone: shown on the processes backend, where a death fails the batch at once).
- An input that kills its worker every time fails the eval with its input index, and
  nothing is committed.
- A local Ray whose raylet is killed (the whole node) fails the eval with an error that
  says so and names no input; nothing is committed.

Only processes these tests started are signalled: the workers of the fixture's own
raylet (a child of this process) or of the fixture's own LocalCluster. The full campaign
(10 trials per engine, a table) is benchmarks/fault_campaign.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import slicewise as sw

pytestmark = [pytest.mark.slow]

ITEMS = 300


@sw.compute
def slow(item, sample_out):
    time.sleep(0.01)
    sample_out.append({"x": np.int64(item)})


@sw.compute
def kills_at_37(item, sample_out):
    if item == 37:
        os._exit(1)  # every time it runs
    sample_out.append({"x": np.int64(item)})


def _children(parent: int) -> list[tuple[int, str]]:
    """(pid, first word of the command line) of the processes whose parent is `parent`."""
    import psutil

    found = []
    for child in psutil.Process(parent).children():
        try:
            words = child.cmdline()
        except psutil.Error:  # gone meanwhile
            continue
        found.append((child.pid, words[0].strip() if words else ""))
    return found


def _our_raylet() -> int:
    """The raylet of the Ray this process started (a Ray worker retitles itself "ray::IDLE"
    / "ray::<task>"; only the raylet's own command line still names default_worker.py)."""
    raylets = [pid for pid, title in _children(os.getpid()) if title.endswith("/raylet")]
    assert raylets, "the Ray session is not a local one started by this process"
    return raylets[0]


def _busy_ray_worker() -> int | None:
    """A worker process of our raylet that is running one of the eval's tasks."""
    for pid, title in _children(_our_raylet()):
        if title.startswith("ray::run_remote_batch"):
            return pid
    return None


def _new_ds(path):
    ds = sw.empty(str(path), overwrite=True)
    ds.create_tensor("x", dtype="int64")
    return ds


def _eval_while_killing(ds, scheduler: str, find_victim) -> dict:
    """Run `slow` over ITEMS inputs; meanwhile SIGKILL the first process `find_victim()`
    names once the eval has stored its first results (so the kill lands mid-eval)."""
    done = threading.Event()
    killed: dict = {}

    def killer() -> None:
        while not done.is_set():
            pid = find_victim()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                killed["mid_eval"] = not done.is_set()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        slow().eval(list(range(ITEMS)), ds, scheduler=scheduler, num_workers=2, progressbar=False)
    finally:
        done.set()
        thread.join(30)
    return killed


def _assert_every_row_once_in_order(path):
    rows = sw.load(str(path)).x.numpy().ravel().tolist()
    assert rows == list(range(ITEMS))
    assert sw.verify(str(path)).ok


@pytest.mark.timeout(300)
@pytest.mark.parametrize("trial", [1, 2])
def test_ray_worker_killed_from_outside_mid_eval(tmp_path, ray_session, trial):
    ds = _new_ds(tmp_path / "ds")
    killed = _eval_while_killing(ds, "ray", _busy_ray_worker)
    assert killed.get("mid_eval"), "the eval ended before a task's worker could be killed"
    _assert_every_row_once_in_order(tmp_path / "ds")


@pytest.mark.timeout(240)
def test_dask_worker_killed_from_outside_mid_eval(tmp_path, dask_client):
    ds = _new_ds(tmp_path / "ds")
    pids = list(dask_client.run(os.getpid).values())
    killed = _eval_while_killing(ds, "dask", lambda: pids[0])
    assert killed.get("mid_eval")
    _assert_every_row_once_in_order(tmp_path / "ds")


@pytest.mark.timeout(300)
def test_ray_an_input_that_kills_its_worker_every_time_is_named(tmp_path, ray_session):
    ds = _new_ds(tmp_path / "ds")
    ds.commit("tensor x")
    version = sw.load(str(tmp_path / "ds")).commit_id
    with pytest.raises(sw.TransformError) as caught:
        kills_at_37().eval(list(range(80)), ds, scheduler="ray", num_workers=2, progressbar=False)
    assert caught.value.index == 37
    assert "input index 37" in str(caught.value)
    back = sw.load(str(tmp_path / "ds"))
    assert len(back.x) == 0  # nothing committed
    assert back.commit_id == version


@sw.compute
def dies_once(item, sample_out, marker):
    """Input 53's first run kills its worker (an outside event, as far as the eval can
    tell: run again, alone or in its batch, it never kills one)."""
    if item == 53 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    sample_out.append({"x": np.int64(item)})


@pytest.mark.timeout(120)
def test_a_death_no_input_repeats_is_survived_on_the_processes_backend(tmp_path):
    """On the processes backend the scheduler fails the batch at its first death (its
    progress slot pins the eval's batch); the eval's probe finds no input that kills a
    worker again, so the batch runs once more instead of failing the eval."""
    ds = _new_ds(tmp_path / "ds")
    marker = str(tmp_path / "died")
    slow_items = list(range(ITEMS))
    dies_once(marker=marker).eval(
        slow_items, ds, scheduler="processed", num_workers=2, progressbar=False
    )
    assert os.path.exists(marker)  # a worker really died
    _assert_every_row_once_in_order(tmp_path / "ds")


RAYLET_KILL = """
import os, signal, sys, threading, time
import numpy as np
import slicewise as sw
import ray

sys.path.insert(0, {here!r})
from test_cluster_kill import _our_raylet


@sw.compute
def slow(item, sample_out):
    time.sleep(0.01)
    sample_out.append({{"x": np.int64(item)}})


ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
ds = sw.empty("ds")
ds.create_tensor("x", dtype="int64")
slow().eval(list(range(4)), ds, scheduler="ray", num_workers=2,
            progressbar=False)  # 4 rows committed before the kill
raylet = _our_raylet()
threading.Timer(0.5, os.kill, (raylet, signal.SIGKILL)).start()
try:
    slow().eval(list(range(4, 3000)), ds, scheduler="ray", num_workers=2,
                progressbar=False)
except sw.TransformError as error:
    print("index", error.index)
    print("error", error)
print("rows", sw.load("ds").x.numpy().ravel().tolist())
"""


@pytest.mark.timeout(240)
def test_a_killed_raylet_fails_the_eval_naming_the_node_not_an_input(run_script):
    pytest.importorskip("ray")
    here = os.path.dirname(os.path.abspath(__file__))
    out = run_script(RAYLET_KILL.format(here=here), name="raylet_kill.py", timeout=200)
    assert "index None" in out
    assert "cluster can no longer run tasks" in out and "raylet" in out
    assert "rows [0, 1, 2, 3]" in out  # the eval before; nothing of the failed one


RAY_NODE_DIES = """
import threading, time
import numpy as np
import slicewise as sw
import ray
from ray.cluster_utils import Cluster


@sw.compute
def slow(item, sample_out):
    time.sleep(0.01)
    sample_out.append({"x": np.int64(item)})


# a Ray cluster of two nodes (a head and a second raylet, one CPU each) on this machine
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                        "include_dashboard": False})
second = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()
print("nodes alive", sum(1 for node in ray.nodes() if node["Alive"]))
ds = sw.empty("ds")
ds.create_tensor("x", dtype="int64")
started = time.monotonic()


def kill_second_node():
    cluster.remove_node(second, allow_graceful=False)  # its raylet and workers, SIGKILL
    print("node removed at", round(time.monotonic() - started, 2), flush=True)


threading.Timer(1.0, kill_second_node).start()
slow().eval(list(range(600)), ds, scheduler="ray", num_workers=2, progressbar=False)
print("eval done at", round(time.monotonic() - started, 2), flush=True)
print("rows in order", sw.load("ds").x.numpy().ravel().tolist() == list(range(600)))
print("verify", sw.verify("ds").ok)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.timeout(240)
def test_a_ray_node_dying_while_another_lives_is_survived(run_script):
    """Multi-node Ray (ray.cluster_utils.Cluster: a head and a second node, each its own
    raylet, on this machine): the second node is killed mid-eval; its tasks run again on
    the node left, and the eval completes with every row once, in order."""
    pytest.importorskip("ray")
    out = run_script(RAY_NODE_DIES, name="ray_node_dies.py", timeout=200)
    lines = [line for line in out.splitlines() if line.split(" ")[0] in (
        "nodes", "node", "eval", "rows", "verify")]
    assert lines[0] == "nodes alive 2"
    assert lines[1].startswith("node removed at") and lines[2].startswith("eval done at")
    assert "rows in order True" in lines and "verify True" in lines
