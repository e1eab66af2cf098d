"""The dataset on S3: a real S3-protocol server (moto) on 127.0.0.1 through s3fs.
Put-if-absent is a conditional PUT (If-None-Match: *); listings are refreshed before the
commit protocol trusts them."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import slicewise as sw  # noqa: E402
from slicewise.format.storage import FsspecStorage  # noqa: E402


@pytest.mark.timeout(60)
def test_put_if_absent_on_s3(s3_options, s3_url):
    storage = FsspecStorage(s3_url, s3_options)
    assert storage.atomic_create
    assert storage.set_if_not_exists("versions/000000000001.json", b"first")
    assert not storage.set_if_not_exists("versions/000000000001.json", b"second")
    assert storage.get("versions/000000000001.json") == b"first"
    assert storage.list("versions/") == ["versions/000000000001.json"]


@pytest.mark.timeout(60)
def test_round_trip_on_s3(s3_options, s3_url, jpeg_files):
    ds = sw.empty(s3_url, storage_options=s3_options)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label")
        ds.create_tensor("x", dtype="float32", chunk_compression="zstd")
        for i, f in enumerate(jpeg_files):
            ds.append({"images": sw.read(f), "labels": f.split("/")[-2], "x": np.full(3, i)})
    again = sw.load(s3_url, storage_options=s3_options)
    for i, f in enumerate(jpeg_files):
        assert again.images[i].tobytes() == open(f, "rb").read()
    assert again.labels.data()["text"][:2] == [["dog"], ["cat"]]
    assert again.x.numpy()[:, 0].tolist() == list(range(6))
    assert sw.verify(s3_url, storage_options=s3_options).ok
    spec = ds.writer_spec()
    assert spec["storage_options"] == s3_options


@pytest.mark.timeout(60)
def test_stale_listing_never_loses_a_commit(s3_options, s3_url):
    """Two handles share s3fs's listing cache; the second commit must see the first."""
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x", dtype="int32")
    first = sw.load(s3_url, storage_options=s3_options)
    second = sw.load(s3_url, storage_options=s3_options)
    first.storage.list("versions/")  # warm the listing cache
    first.x.append(np.array([1]))
    second.x.append(np.array([2]))  # its slot is taken: must rebase, not overwrite
    final = sw.load(s3_url, storage_options=s3_options)
    assert sorted(final.x.numpy().ravel().tolist()) == [1, 2]
    assert len(final.log()) == 4


@pytest.mark.timeout(60)
def test_gc_and_delete_on_s3(s3_options, s3_url):
    ds = sw.empty(s3_url, storage_options=s3_options)
    ds.create_tensor("x")
    ds.x.append(np.ones(2))
    ds.x.append(np.ones(2))
    report = sw.gc(s3_url, keep_last=1, grace_seconds=0, storage_options=s3_options)
    assert len(report.removed_versions) == 3
    assert len(sw.load(s3_url, storage_options=s3_options).x) == 2
    sw.delete(s3_url, storage_options=s3_options)
    assert not sw.exists(s3_url, storage_options=s3_options)


@pytest.mark.timeout(60)
def test_deeplake_creds_reach_s3(s3_options, s3_url):
    # Deep Lake 3 code passes S3 credentials as creds=...; they become s3fs options
    creds = {
        "aws_access_key_id": s3_options["key"],
        "aws_secret_access_key": s3_options["secret"],
        "endpoint_url": s3_options["endpoint_url"],
        "aws_region": "us-east-1",
    }
    ds = sw.empty(s3_url, creds=creds, verbose=False, token=None)
    ds.create_tensor("x", dtype="int32")
    ds.x.append(np.int32(7))
    assert sw.exists(s3_url, creds=creds)
    assert sw.load(s3_url, creds=creds, read_only=True).x.numpy().tolist() == [[7]]
    assert sw.dataset(s3_url, creds=creds).x.numpy().tolist() == [[7]]
    with pytest.raises(TypeError, match="'aws_secret'"):
        sw.load(s3_url, creds={"aws_secret": "x"})
    with pytest.raises(TypeError, match="not both"):
        sw.load(s3_url, creds=creds, storage_options=s3_options)
    sw.delete(s3_url, creds=creds, force=True)
    assert not sw.exists(s3_url, creds=creds)


ENV_CREDENTIALS = """
import json, os, sys
import numpy as np
import slicewise as sw

endpoint, url = sys.argv[1], sys.argv[2]
options = {"endpoint_url": endpoint}  # no key, no secret: s3fs finds them as boto does


@sw.compute
def square(x, sample_out):
    sample_out.append({"x": np.int64(x * x)})


try:
    ds = sw.empty(url, storage_options=options)
    ds.create_tensor("x", dtype="int64")
    print("spec", json.dumps(ds.writer_spec()))
    square().eval(list(range(50)), ds, num_workers=2, scheduler="processed", progressbar=False)
    print("rows", sw.load(url, storage_options=options).x.numpy().ravel().tolist()
          == [x * x for x in range(50)])
except Exception as error:
    print("error", type(error).__name__, error)
"""


@pytest.mark.timeout(120)
def test_credentials_from_the_environment_reach_every_worker(s3_options, s3_url, tmp_path):
    """As s3fs users expect: storage_options without a key or secret, the credentials in
    the environment (AWS_ACCESS_KEY_ID, ...). The writer spec that travels to the worker
    processes holds no secret; each worker finds the credentials as boto does. Without
    any, the error names what is missing instead of writing nothing silently."""
    import os
    import subprocess
    import sys

    script = tmp_path / "env_credentials.py"
    script.write_text(ENV_CREDENTIALS)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
                AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), TQDM_DISABLE="1")
    with_keys = dict(base, AWS_ACCESS_KEY_ID="testing-env", AWS_SECRET_ACCESS_KEY="secret-env",
                     AWS_DEFAULT_REGION="us-east-1")

    def run(env, url):
        out = subprocess.run([sys.executable, str(script), s3_options["endpoint_url"], url],
                             capture_output=True, text=True, timeout=100, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    out = run(with_keys, s3_url)
    assert "rows True" in out, out[-3000:]
    assert "secret-env" not in out.split("spec ", 1)[1].splitlines()[0]  # not in the spec
    out = run(base, s3_url + "-nokeys")
    assert "error PermissionError" in out, out[-3000:]
    assert "no S3 credentials found for dataset " + s3_url + "-nokeys" in out
    assert "AWS_ACCESS_KEY_ID" in out


WORKERS_WITHOUT_CREDENTIALS = """
import os, sys
import numpy as np
import slicewise as sw

endpoint, url = sys.argv[1], sys.argv[2]
with sw.Pool(2) as pool:  # the worker processes' server starts without credentials
    pool.map(abs, [1])
os.environ.update(AWS_ACCESS_KEY_ID="testing-env", AWS_SECRET_ACCESS_KEY="secret-env",
                  AWS_DEFAULT_REGION="us-east-1")  # the driver has them from here on
options = {"endpoint_url": endpoint}


@sw.compute
def square(x, sample_out):
    sample_out.append({"x": np.int64(x * x)})


ds = sw.empty(url, storage_options=options)
ds.create_tensor("x", dtype="int64")
ds.x.append(np.int64(-1))
try:
    square().eval(list(range(50)), ds, num_workers=2, scheduler="processed",
                  ignore_errors=True, progressbar=False)
    print("completed")
except Exception as error:
    print("error", type(error).__name__, getattr(error, "index", None))
    print("message", str(error).replace(chr(10), " "))
print("rows", sw.load(url, storage_options=options).x.numpy().ravel().tolist())
"""


@pytest.mark.timeout(120)
def test_workers_without_credentials_fail_the_eval_and_skip_no_input(
    s3_options, s3_url, tmp_path
):
    """The driver has S3 credentials, its worker processes do not (a cluster whose
    workers lack them): with ignore_errors=True, the eval must not skip every input as
    failed; it fails with the storage's error, naming the dataset and where credentials
    come from, and the dataset keeps its rows."""
    import os
    import subprocess
    import sys

    script = tmp_path / "workers_without_credentials.py"
    script.write_text(WORKERS_WITHOUT_CREDENTIALS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, str(script), s3_options["endpoint_url"], s3_url],
                         capture_output=True, text=True, timeout=100, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines.get("error", "").startswith("EvalStorageError"), out.stdout[-3000:]
    assert "no S3 credentials found for dataset" in lines["message"]
    assert lines["rows"] == "[-1]"  # nothing committed, nothing lost
