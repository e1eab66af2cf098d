"""Fixtures shared by the test packages: dataset locations, real JPEG files, script runs."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["local", "memory"])
def ds_url(request, tmp_path):
    """A fresh dataset location: a local directory and a memory:// URL."""
    if request.param == "local":
        yield str(tmp_path / "ds")
        return
    url = f"memory://sw-test-{uuid.uuid4().hex}"
    yield url
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


@pytest.fixture
def jpeg_files(tmp_path):
    """Six real JPEG files in class folders (cat/dog), different sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        label = "cat" if i % 2 else "dog"
        folder = tmp_path / "imgs" / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(
            path, quality=85
        )
        files.append(str(path))
    return files


@pytest.fixture
def make_image_tree():
    """make_image_tree(root, classes=("cat", "dog"), per_class=3): real JPEG files
    root/<class>/<n>.jpg, small noise photos of different sizes."""
    import numpy as np
    from PIL import Image

    def make(root, classes=("cat", "dog"), per_class=3) -> None:
        rng = np.random.default_rng(0)
        for class_name in classes:
            (root / class_name).mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 255, size=(24 + index, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / class_name / f"{index}.jpg", quality=85)

    return make


@pytest.fixture
def run_script(tmp_path):
    """run_script(source, name): run python `source` as a script in tmp_path (progress bars
    off); fails showing its stderr unless it exits 0; returns its stdout."""
    import os
    import subprocess
    import sys

    def run(source: str, name: str = "example.py", timeout: float = 80) -> str:
        script = tmp_path / name
        script.write_text(source)
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
            cwd=tmp_path, env={**os.environ, "TQDM_DISABLE": "1"},
        )
        assert out.returncode == 0, f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    return run


@pytest.fixture(scope="module")
def s3_options():
    """A real S3-protocol server (moto) on 127.0.0.1 with one bucket, sw-test-bucket; the
    s3fs storage options that reach it."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "endpoint_url": f"http://{host}:{port}",
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    client = boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="sw-test-bucket")
    yield options
    server.stop()


@pytest.fixture
def s3_url():
    import uuid

    return f"s3://sw-test-bucket/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def dask_client():
    """A real Dask LocalCluster: 2 worker processes, one thread each, and its Client."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def ray_session(request):
    """A local Ray with 2 CPUs. Its workers import the test's helper modules by reference,
    as a user's workers import theirs: the test's folder and tests/ are on their path."""
    import os
    import sys

    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    here = os.path.dirname(os.path.abspath(request.module.__file__))
    path = os.pathsep.join([here, os.path.dirname(here), *sys.path])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
