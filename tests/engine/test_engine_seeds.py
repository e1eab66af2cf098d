"""The seeds' own multiprocessing / concurrent.futures code, with only the constructor
changed to `sw.Pool`, and seed 002's cake eaten in place through a shared array."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import engine_helpers as h
import numpy as np
import pytest
from PIL import Image

import slicewise as sw

pytestmark = pytest.mark.timeout(60)


def make_jpegs(folder, count):
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = os.path.join(folder, f"img{i:03d}.jpg")
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def test_seed_001_process_pool_executor_code(tmp_path):
    image_files = make_jpegs(str(tmp_path), 12)
    # seed 001: `with concurrent.futures.ProcessPoolExecutor() as executor:`
    with sw.Pool() as executor:
        image_files_and_outputs = []
        for image_file, output_file in zip(
            image_files, executor.map(h.load_and_resize, image_files), strict=True
        ):
            image_files_and_outputs.append((image_file, output_file))
    assert [out for _, out in image_files_and_outputs] == [(600, 600)] * 12
    assert all(os.path.exists(f + ".small.jpg") for f in image_files)


def test_seed_003_multiprocessing_pool_code():
    import multiprocessing as mp

    # seed 003: `pool = mp.Pool(mp.cpu_count())`
    pool = sw.Pool(mp.cpu_count())
    result = pool.map(h.slow_function, range(4))
    pool.close()
    pool.join()
    assert result == [0, 1, 4, 9]


def test_seed_003_threads_like_multiprocessing_dummy():
    pool = sw.Pool(4, backend="threads")  # seed 003's multiprocessing.dummy
    result = pool.map(h.slow_function, range(4))
    pool.close()
    pool.join()
    assert result == [0, 1, 4, 9]


SEED_002_NOTEBOOK = """
import slicewise as sw

def EatSlice(cakeSlice):
    return f"{cakeSlice}_eaten"

def makeCake():
    return [f"slice_{i}" for i in range(4)]

strawberryCake = sw.shared_array(4, dtype="U16")   # instead of `strawberryCake = makeCake()`
strawberryCake[:] = makeCake()

def EatSliceParallel(cakeSlice_i):
    strawberryCake[cakeSlice_i] = EatSlice(strawberryCake[cakeSlice_i])

if __name__ == "__main__":
    with sw.Pool(2) as pool:                       # instead of multiprocessing.Pool(2)
        pool.map(EatSliceParallel, range(len(strawberryCake)))
    print(strawberryCake.tolist())
"""


def test_seed_002_cake_is_eaten_in_place(tmp_path):
    before = set(h.shm_leftovers("swarr"))
    script = tmp_path / "cake.py"
    script.write_text(textwrap.dedent(SEED_002_NOTEBOOK))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(
        ["slice_0_eaten", "slice_1_eaten", "slice_2_eaten", "slice_3_eaten"]
    )
    # workers re-import the script (spawn semantics) and make cakes of their own: none leak
    assert set(h.shm_leftovers("swarr")) <= before


def test_cake_with_a_closure_in_process():
    cake = sw.shared_array(4, dtype="U16")
    cake[:] = [f"slice_{i}" for i in range(4)]

    def eat(i):
        cake[i] = cake[i] + "_eaten"

    with sw.Pool(2) as pool:
        pool.map(eat, range(4))
    assert list(cake) == [f"slice_{i}_eaten" for i in range(4)]


SEED_003_SCRIPT = """
import multiprocessing as mp
from time import sleep

import slicewise as sw

def slow_function(n):
    # This stops execution for 0.1 second
    sleep(0.1)
    return n*n

# Start a "pool" of processes holding a maximum of
# processes equal to the number of CPU cores
pool = sw.Pool(mp.cpu_count())

result = pool.map(slow_function, range(4))
pool.close()
pool.join()
print(result)
"""


def test_seed_003_as_a_script_without_a_main_guard(tmp_path):
    """The lecture's code at module level, no `if __name__ == "__main__"`: works, because
    workers never re-run the main script."""
    script = tmp_path / "lecture.py"
    script.write_text(SEED_003_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 1, 4, 9]"
