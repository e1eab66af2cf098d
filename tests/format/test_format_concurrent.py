"""Two committers in two real processes: appends on both sides both land (rebase);
conflicting changes give one CommitConflictError; never a silent loss."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import slicewise as sw

APPENDER = r"""
import os, sys, time
import numpy as np
import slicewise as sw

path, who, commits, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ds = sw.load(path)
open(go + f".ready{who}", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
for c in range(commits):
    with ds:
        for r in range(3):
            ds.append({"tag": np.array([who, c, r], dtype=np.int32)})
print("done", flush=True)
"""

CHANGER = r"""
import os, sys, time
import numpy as np
import slicewise as sw

path, who, action, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ds = sw.load(path)
open(go + f".ready{who}", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
try:
    if action == "update":
        ds.tag[0] = np.array([who, who, who], dtype=np.int32)
    else:
        ds.tag.append(np.array([who, 0, 0], dtype=np.int32))
    print("landed", ds.version, flush=True)
except sw.CommitConflictError as exc:
    print("conflict", str(exc).replace(chr(10), " "), flush=True)
"""


def run_pair(code: str, url: str, tmp_path, args_a: list[str], args_b: list[str]):
    go = str(tmp_path / "go")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(who), *args, go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for who, args in ((1, args_a), (2, args_b))
    ]
    # a hang here is caught by the test's pytest-timeout; a child that dies fails at once
    while not all(os.path.exists(f"{go}.ready{w}") for w in (1, 2)):
        assert all(p.poll() is None for p in procs), [
            p.stderr.read().decode() for p in procs if p.poll() is not None
        ]
        time.sleep(0.005)
    open(go, "w").close()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        outs.append(out.decode().strip())
    return outs


@pytest.mark.timeout(90)
def test_two_appending_processes_both_land(tmp_path):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("tag", dtype="int32")
    start_seq = len(ds.log())
    commits = 15
    run_pair(APPENDER, url, tmp_path, [str(commits)], [str(commits)])
    final = sw.load(url)
    tags = final.tag.numpy()
    assert tags.shape == (2 * commits * 3, 3)
    # every row exactly once, each commit's rows contiguous and in order
    assert len({tuple(t) for t in tags}) == len(tags)
    for start in range(0, len(tags), 3):
        block = tags[start : start + 3]
        assert (block[:, 0] == block[0, 0]).all() and (block[:, 1] == block[0, 1]).all()
        assert block[:, 2].tolist() == [0, 1, 2]
    for who in (1, 2):
        order = [int(t[1]) for t in tags[::3] if t[0] == who]
        assert order == list(range(commits))
    assert len(final.log()) == start_seq + 2 * commits
    assert sw.verify(url).ok


@pytest.mark.timeout(90)
@pytest.mark.parametrize("actions", [("update", "update"), ("update", "append")])
def test_conflicting_commits_one_clear_error(tmp_path, actions):
    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    ds.create_tensor("tag", dtype="int32")
    ds.tag.extend([np.zeros(3, np.int32)] * 4)
    outs = run_pair(CHANGER, url, tmp_path, [actions[0]], [actions[1]])
    kinds = sorted(o.split()[0] for o in outs)
    assert kinds == ["conflict", "landed"], outs
    loser = outs[[o.startswith("conflict") for o in outs].index(True)]
    assert "tag" in loser and "landed first" in loser
    final = sw.load(url)
    winner = 1 if outs[0].startswith("landed") else 2
    tags = final.tag.numpy()
    if actions[winner - 1] == "update":
        assert tags[0].tolist() == [winner] * 3 and len(tags) == 4
    else:
        assert tags[-1].tolist() == [winner, 0, 0] and len(tags) == 5
        assert tags[0].tolist() == [0, 0, 0]
    assert sw.verify(url).ok


WORKER = r"""
import json, sys
from slicewise.format import DatasetWriter
import slicewise as sw

spec = json.loads(sys.argv[1])
who, labels = sys.argv[2], sys.argv[3].split(",")
writer = DatasetWriter.from_spec(spec, who)
for i, label in enumerate(labels):
    writer.append_row({"labels": label, "images": sw.read(sys.argv[4 + i])})
print(json.dumps(writer.finish()))
"""


@pytest.mark.timeout(60)
def test_worker_processes_write_chunks_and_agree_on_class_names(tmp_path, jpeg_files):
    """Seed 000's data flow: workers in real processes write chunks and return receipts;
    string labels new to each worker are reconciled by the parent's commit."""
    import json

    url = str(tmp_path / "ds")
    ds = sw.empty(url)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label", class_names=["cat"])
        spec = json.dumps(ds.writer_spec())
        parts = [
            ("w1", ["dog", "cat", "emu"], jpeg_files[:3]),
            ("w2", ["emu", "fox", "dog"], jpeg_files[3:]),
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, spec, who, ",".join(labels), *files],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for who, labels, files in parts
        ]
        receipts = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
            assert len(out) < 2000
            receipts.append(json.loads(out))
        ds.add_receipts(receipts)
        ds.commit("two workers", meta={"inputs": 6})
    again = sw.load(url)
    assert again.labels.info.class_names == ["cat", "dog", "emu", "fox"]
    assert [t[0] for t in again.labels.data()["text"]] == ["dog", "cat", "emu", "emu", "fox", "dog"]
    for i, f in enumerate(jpeg_files):
        assert again.images[i].tobytes() == open(f, "rb").read()
    assert again.version_info["meta"] == {"inputs": 6}
