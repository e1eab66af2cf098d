"""A Dask cluster left with no worker fails the call instead of hanging it (cluster.py's
watchdog, dask.py): real LocalClusters (worker processes with nannies), broken on
purpose by scaling them to zero, killing a worker process, or starting with none.

- workers seen, then none for `slicewise.no-workers-timeout`: the call fails with an
  error naming the scheduler's address and no input; an eval commits nothing;
- a worker SIGKILLed and restarted by its nanny (a few seconds with no worker at all on
  a one-worker cluster) is not a failure under the default wait: the call completes;
- a busy spell that starts with no worker waits `slicewise.first-workers-timeout`, not
  the shorter wait: workers that arrive then (a cluster scaling up from zero) run it;
- a scheduler configured with Dask's own `distributed.scheduler.no-workers-timeout`
  fails the queued tasks with NoWorkerError: the same cluster error, no input blamed.

Only processes these tests started are signalled (their own LocalCluster's worker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import numpy as np
import pytest

import slicewise as sw

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def nap(x):
    time.sleep(0.1)
    return x * 2


@contextlib.contextmanager
def own_cluster(workers: int):
    """A LocalCluster of our own (`workers` processes with nannies, one thread each) and
    a client of it: these tests break their clusters."""
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield local, client


@pytest.fixture
def cluster():
    with own_cluster(2) as pair:
        yield pair


def _no_input_named(error: BaseException) -> None:
    assert not isinstance(error, sw.WorkerLostError)
    assert getattr(error, "index", None) is None


def test_workers_retired_mid_call_fail_it_naming_the_scheduler(cluster):
    local, client = cluster
    with dask.config.set({"slicewise.no-workers-timeout": 3}):
        pool = sw.Pool(backend="dask", client=client)
    with pool:
        results = pool.imap(nap, range(400))
        assert next(results) == 0  # the workers run it
        local.scale(0)  # every worker retired; nothing brings one back
        with pytest.raises(RuntimeError) as caught:
            list(results)
    message = str(caught.value)
    assert "the Dask cluster can no longer run tasks" in message
    assert local.scheduler_address in message
    assert "has had no worker able to run a task for 3 s" in message
    _no_input_named(caught.value)


def test_a_worker_killed_and_restarted_by_its_nanny_is_no_failure():
    # one worker: while its nanny restarts it, the cluster has no worker at all
    with own_cluster(1) as (local, client):
        with sw.Pool(backend="dask", client=client) as pool:  # the default wait (30 s)
            results = pool.imap(nap, range(60))
            assert next(results) == 0
            (pid,) = client.run(os.getpid).values()
            os.kill(pid, signal.SIGKILL)
            assert list(results) == [2 * x for x in range(1, 60)]
            (new_pid,) = client.run(os.getpid).values()
            assert new_pid != pid  # the nanny started a new worker process


def test_a_call_on_a_cluster_with_no_worker_yet_waits_the_first_workers_grace():
    with own_cluster(0) as (local, client):
        config = {"slicewise.no-workers-timeout": 1, "slicewise.first-workers-timeout": 60}
        with dask.config.set(config):
            pool = sw.Pool(backend="dask", client=client, workers=2)
        with pool:
            pending = pool.map_async(nap, range(20))
            time.sleep(3)  # longer than no-workers-timeout: it does not apply yet
            assert not pending.ready()
            local.scale(2)  # workers arrive, as an adaptive cluster's do
            assert pending.get(timeout=60) == [2 * x for x in range(20)]
        config = {"slicewise.first-workers-timeout": 2}
        with dask.config.set(config):
            pool = sw.Pool(backend="dask", client=client, workers=2)
        local.scale(0)
        while client.nthreads():  # bounded by the test's timeout
            time.sleep(0.1)
        with (
            pool,
            pytest.raises(RuntimeError, match="no worker able to run a task in the 2 s since"),
        ):
            pool.map(nap, range(4))


@sw.compute
def double(item, sample_out):
    time.sleep(0.05)
    sample_out.append({"x": np.int64(2 * item)})


def test_an_eval_whose_cluster_loses_every_worker_commits_nothing(cluster, tmp_path):
    local, client = cluster
    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("x", dtype="int64")
    before = ds.version
    scaled = []

    def scale_to_zero_soon():
        time.sleep(1.5)
        local.scale(0)
        scaled.append(True)

    killer = threading.Thread(target=scale_to_zero_soon)
    with client.as_current(), dask.config.set({"slicewise.no-workers-timeout": 3}):
        killer.start()
        with pytest.raises(Exception) as caught:
            double().eval(list(range(2000)), ds, num_workers=2, scheduler="dask")
    killer.join()
    assert scaled
    assert "no worker able to run a task" in str(caught.value)
    assert local.scheduler_address in str(caught.value)
    again = sw.load(str(tmp_path / "ds"))
    assert len(again.x) == 0  # nothing committed
    assert again.version == before


def test_dasks_own_no_workers_timeout_is_the_same_cluster_error():
    with dask.config.set({"distributed.scheduler.no-workers-timeout": "2s"}):
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with local, distributed.Client(local, set_as_default=False) as client:
        with dask.config.set({"slicewise.no-workers-timeout": 60}):
            pool = sw.Pool(backend="dask", client=client)
        with pool:
            results = pool.imap(nap, range(400))
            assert next(results) == 0
            local.scale(0)
            with pytest.raises(RuntimeError) as caught:
                list(results)
    assert "no-workers-timeout passed" in str(caught.value)
    _no_input_named(caught.value)


# -- Ray: a cluster with no CPU fails the call; a cluster whose CPUs are busy does not --
# Each runs as its own script: a process holds one Ray session, and these need their own.

RAY_NO_CPU = """
import os, time
os.environ["SLICEWISE_RAY_FIRST_CPU_TIMEOUT"] = "3"
import ray
import slicewise as sw

ray.init(num_cpus=0, include_dashboard=False, log_to_driver=False)  # a head that runs nothing
started = time.monotonic()
try:
    with sw.Pool(backend="ray", workers=2) as pool:
        pool.map(abs, range(10))
    print("completed")
except RuntimeError as error:
    print("error", type(error).__name__, "index", getattr(error, "index", None))
    print("message", error)
print("seconds", round(time.monotonic() - started, 1))
"""

RAY_LAST_NODE_DIES = """
import os, time
os.environ["SLICEWISE_RAY_NO_CPU_TIMEOUT"] = "3"
import ray
from ray.cluster_utils import Cluster
import slicewise as sw


def nap(x):
    time.sleep(0.05)
    return x * 2


# a head that runs nothing (num_cpus=0, as production heads often are) and one worker node
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                        "include_dashboard": False})
worker_node = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, log_to_driver=False)
cluster.wait_for_nodes()
try:
    with sw.Pool(backend="ray", workers=1) as pool:
        results = pool.imap(nap, range(400))
        print("first", next(results))
        cluster.remove_node(worker_node, allow_graceful=False)
        list(results)
    print("completed")
except RuntimeError as error:
    print("error", type(error).__name__, "index", getattr(error, "index", None))
    print("message", error)
ray.shutdown()
cluster.shutdown()
"""

RAY_BUSY_CPU = """
import os, time
os.environ["SLICEWISE_RAY_NO_CPU_TIMEOUT"] = "2"
os.environ["SLICEWISE_RAY_FIRST_CPU_TIMEOUT"] = "2"
import ray
import slicewise as sw

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)


@ray.remote(num_cpus=1)
def hold_the_cpu():
    time.sleep(6)
    return "held"


holder = hold_the_cpu.remote()
time.sleep(1)  # it runs: the cluster's one CPU is busy, not missing
with sw.Pool(backend="ray", workers=1) as pool:
    print("results", pool.map(abs, [-1, -2, -3]))
print("holder", ray.get(holder))
"""


def _lines(out: str, *starts: str) -> dict:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.splitlines()
            if line.split(" ", 1)[0] in starts and " " in line}


@pytest.mark.timeout(120)
def test_a_ray_cluster_with_no_cpu_fails_the_call_instead_of_hanging(run_script):
    pytest.importorskip("ray")
    out = _lines(run_script(RAY_NO_CPU, name="ray_no_cpu.py", timeout=100),
                 "error", "message", "seconds", "completed")
    assert out["error"] == "RuntimeError index None"  # no input blamed
    assert "the Ray cluster can no longer run tasks" in out["message"]
    assert "no worker able to run a task in the 3 s" in out["message"]
    assert "no CPU on the 1 Ray node(s) alive" in out["message"]
    assert "SLICEWISE_RAY_FIRST_CPU_TIMEOUT" in out["message"]
    assert float(out["seconds"]) < 60


@pytest.mark.timeout(180)
def test_a_ray_cluster_whose_last_cpu_node_dies_fails_the_call(run_script):
    pytest.importorskip("ray")
    out = _lines(run_script(RAY_LAST_NODE_DIES, name="ray_last_node.py", timeout=160),
                 "first", "error", "message", "completed")
    assert out["first"] == "0"
    assert out["error"] == "RuntimeError index None"
    assert "has had no worker able to run a task for 3 s" in out["message"]
    assert "SLICEWISE_RAY_NO_CPU_TIMEOUT" in out["message"]


@pytest.mark.timeout(120)
def test_a_ray_cluster_whose_cpus_are_busy_is_waited_for(run_script):
    pytest.importorskip("ray")
    out = _lines(run_script(RAY_BUSY_CPU, name="ray_busy.py", timeout=100),
                 "results", "holder")
    assert out["results"] == "[1, 2, 3]"  # waited past both 2 s limits: busy is not none
    assert out["holder"] == "held"
