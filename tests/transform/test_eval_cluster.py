"""eval(scheduler="dask" | "ray") on real clusters (a Dask LocalCluster of 2 worker
processes, a local Ray with 2 CPUs): the cluster's workers write chunk files straight to
the dataset's storage and send back receipts; the driver commits. Same rows, same order,
same bytes as scheduler="processed", and a worker killed mid-task (its task re-run by the
engine: tasks run more than once) never duplicates or loses a row."""

from __future__ import annotations

import os

import numpy as np
import pytest

import slicewise as sw

from .conftest import make_jpeg_tree

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

distributed = pytest.importorskip("distributed")


@sw.compute
def file_to_ds(file_name, sample_out, class_names):
    label = class_names.index(os.path.basename(os.path.dirname(file_name)))
    sample_out.append({"labels": np.uint32(label), "images": sw.read(file_name)})


@sw.compute
def dies_once(x, sample_out, marker):
    """Item 13 kills its worker process the first time anyone runs it (after writing a
    few rows of its batch): the engine re-runs the task on another worker."""
    if x == 13 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    sample_out.x.append(np.full(1000, x, dtype=np.int64))


def build(path, files, classes, scheduler):
    ds = sw.empty(str(path))
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=classes)
    file_to_ds(class_names=classes).eval(files, ds, num_workers=2, scheduler=scheduler)
    return sw.load(str(path))


@pytest.mark.parametrize("scheduler", ["dask", "ray"])
def test_seed_000_on_a_cluster_gives_the_same_dataset(tmp_path, request, scheduler):
    request.getfixturevalue("dask_client" if scheduler == "dask" else "ray_session")
    classes = ["birds", "cats", "dogs"]
    files = [str(p) for p in make_jpeg_tree(tmp_path / "animals", classes, per_class=30)]
    on_cluster = build(tmp_path / "cluster", files, classes, scheduler)
    local = build(tmp_path / "local", files, classes, "processed")
    assert len(on_cluster) == len(local) == len(files)
    for i, name in enumerate(files):
        with open(name, "rb") as f:
            assert on_cluster.images[i].tobytes() == f.read()  # stored byte for byte, in order
    np.testing.assert_array_equal(on_cluster.labels.numpy(), local.labels.numpy())
    assert on_cluster.labels.info.class_names == classes


@pytest.mark.parametrize("scheduler", ["dask", "ray"])
def test_a_worker_killed_mid_task_never_duplicates_rows(tmp_path, request, scheduler):
    request.getfixturevalue("dask_client" if scheduler == "dask" else "ray_session")
    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("x", dtype="int64")
    marker = str(tmp_path / "died")
    dies_once(marker=marker).eval(list(range(40)), ds, num_workers=2, scheduler=scheduler)
    assert os.path.exists(marker)  # a worker really died
    stored = sw.load(str(tmp_path / "ds")).x.numpy()
    assert stored.shape == (40, 1000)
    np.testing.assert_array_equal(stored[:, 0], np.arange(40))  # each row once, in order
    assert sw.verify(str(tmp_path / "ds"))


@pytest.mark.parametrize("scheduler", ["dask", "ray"])
def test_cluster_workers_write_straight_to_s3(tmp_path, request, scheduler, s3_options, s3_url):
    """The dataset on an S3-protocol server (moto on 127.0.0.1): the cluster's workers
    open the storage from the writer spec (storage options travel by value, never a live
    client) and put chunk objects; the driver commits with conditional writes."""
    request.getfixturevalue("dask_client" if scheduler == "dask" else "ray_session")
    classes = ["birds", "cats", "dogs"]
    files = [str(p) for p in make_jpeg_tree(tmp_path / "animals", classes, per_class=10)]
    ds = sw.empty(s3_url, storage_options=s3_options)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=classes)
    file_to_ds(class_names=classes).eval(files, ds, num_workers=2, scheduler=scheduler,
                                         checkpoint_interval=10)
    back = sw.load(s3_url, storage_options=s3_options)
    assert len(back) == len(files)
    for i in (0, 7, len(files) - 1):
        with open(files[i], "rb") as f:
            assert back.images[i].tobytes() == f.read()
    assert sw.verify(s3_url, storage_options=s3_options)
