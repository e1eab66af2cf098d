"""The "slicewise" joblib backend: joblib.Parallel and scikit-learn's n_jobs on the engine;
registered lazily (importing slicewise imports no joblib)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

joblib = pytest.importorskip("joblib")

import slicewise as sw  # noqa: E402, F401  (installs the lazy registration)


def _square_and_pid(x):
    return x * x, os.getpid()


def _fails_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def test_importing_slicewise_does_not_import_joblib():
    code = ("import sys, slicewise as sw, slicewise.integrations.torch, "
            "slicewise.integrations.arrow, slicewise.integrations.hf; "
            "print(sorted(m for m in ('joblib', 'torch', 'pyarrow', 'datasets', 'pandas') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_backend_is_known_to_joblib_imported_later():
    code = ("import slicewise, joblib\n"
            "with joblib.parallel_backend('slicewise', n_jobs=2):\n"
            "    print(joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(5)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0, 1, 2, 3, 4]"


@pytest.mark.timeout(120)
def test_parallel_runs_on_engine_workers():
    with joblib.parallel_backend("slicewise"):
        out = joblib.Parallel(n_jobs=2)(joblib.delayed(_square_and_pid)(i) for i in range(20))
    assert [value for value, _ in out] == [i * i for i in range(20)]
    assert os.getpid() not in {pid for _, pid in out}


@pytest.mark.timeout(120)
def test_errors_keep_their_class():
    with joblib.parallel_backend("slicewise"), pytest.raises(ValueError, match="bad item 3"):
        joblib.Parallel(n_jobs=2)(joblib.delayed(_fails_on_three)(i) for i in range(8))


@pytest.mark.timeout(120)
def test_a_dying_worker_is_an_error_not_a_hang():
    with joblib.parallel_backend("slicewise"), pytest.raises(sw.WorkerLostError):
        joblib.Parallel(n_jobs=2)(joblib.delayed(os._exit)(1) for _ in range(2))


@pytest.mark.timeout(120)
def test_scikit_learn_cross_val_score():
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = make_classification(n_samples=300, random_state=0)
    expected = cross_val_score(LogisticRegression(), X, y, cv=4, n_jobs=1)
    with joblib.parallel_backend("slicewise"):
        scores = cross_val_score(LogisticRegression(), X, y, cv=4, n_jobs=2)
    assert scores.tolist() == expected.tolist()


def test_missing_extras_are_named(tmp_path):
    code = ("import sys\n"
            "for name in ('torch', 'pyarrow', 'datasets', 'pandas'):\n"
            "    sys.modules[name] = None\n"
            "import numpy as np, slicewise as sw\n"
            "ds = sw.empty(sys.argv[1])\n"
            "ds.create_tensor('x', dtype='uint8')\n"
            "ds.x.extend(np.zeros((2, 2), np.uint8))\n"
            "for call in (ds.pytorch, ds.to_arrow, ds.to_hf):\n"
            "    try:\n"
            "        call()\n"
            "    except ImportError as exc:\n"
            "        print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ds")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, extra in zip(lines, ("torch", "arrow", "hf"), strict=True):
        assert f"pip install slicewise[{extra}]" in line, line
