import os
import sys

import pytest

# engine_helpers must be importable by worker processes under every start method
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import slicewise as sw  # noqa: E402

BACKENDS = ["processes", "threads", "serial"]


@pytest.fixture(scope="module")
def process_pool():
    pool = sw.Pool(2)
    yield pool
    pool.terminate()


@pytest.fixture(scope="module", params=BACKENDS)
def any_pool(request):
    pool = sw.Pool(2, request.param)
    yield pool
    pool.terminate()
