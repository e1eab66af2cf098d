"""Functions the engine tests run in workers. Module level, light imports: workers import
this module by name (it is on sys.path through pytest's rootdir insertion)."""

from __future__ import annotations

import ctypes
import os
import signal
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def identity(x):
    return x


def pid_of(_):
    return os.getpid()


def sleep_then(x, seconds=0.05):
    time.sleep(seconds)
    return x


def hang_on(x, bad=3, seconds=60.0):
    if x == bad:
        time.sleep(seconds)
    return x


def die(how: str) -> None:
    """End this process the way a real crash would."""
    if how == "raise":
        raise ValueError("boom from the worker")
    if how == "exit":
        os._exit(7)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sigsegv":
        ctypes.string_at(0)  # a real segmentation fault
    raise AssertionError(f"unknown failure {how!r}")


def fail_at(x, bad=5, how="raise"):
    if x == bad:
        die(how)
    return x * 2


class ExplodesOnUnpickle:
    """Pickles fine; unpickling it runs `die(how)` (in whichever process unpickles it)."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        return (die, (self.how,))


class RefusesPickling:
    def __init__(self, how: str = "raise") -> None:
        self.how = how

    def __reduce__(self):
        if self.how == "raise":
            raise TypeError("this object refuses to be pickled")
        die(self.how)


def result_that_fails_to_pickle(x, bad=1, how="raise"):
    return RefusesPickling(how) if x == bad else x


def result_that_fails_to_unpickle(x, bad=1):
    return ExplodesOnUnpickle("raise") if x == bad else x


_state = {}


def init_worker(value):
    _state["value"] = value


def read_state(_):
    return _state.get("value")


def init_fails(*_):
    raise RuntimeError("initializer refused to start")


def flaky(path_and_x):
    """Fails the first time it sees each item (counted in a file per item)."""
    directory, x = path_and_x
    marker = os.path.join(directory, f"seen-{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError(f"first attempt at {x} fails")
    return x


def big_array(i, n=(1 << 20) // 4 * 2):
    import numpy as np

    return np.full(n, i, dtype=np.float32)  # 2 MiB: above the shared-memory threshold


def array_sum(a):
    return float(a.sum())


def write_into(args):
    shared, i, value = args
    shared[i] = value
    return i


def load_and_resize(image_filename):
    """Seed 001's function, with Pillow: load a JPEG, resize it, save it next to it."""
    from PIL import Image

    with Image.open(image_filename) as img:
        small = img.resize((600, 600))
        small.save(image_filename + ".small.jpg")
    return small.size


def slow_function(n):
    """Seed 003's function (sleeping 0.1 s instead of 1 s to keep the suite fast)."""
    time.sleep(0.1)
    return n * n


def fail_if_flagged(pair):
    value, flagged = pair
    if flagged:
        raise KeyError(value)
    return value


def nested_map(x, backend="processes"):
    """A worker that runs a pool of its own."""
    import slicewise as sw

    with sw.Pool(2, backend) as inner:
        return sum(inner.map(square, range(x)))


class FunctionThatWillNotUnpickle:
    """Callable here; unpickling it in a worker raises."""

    def __call__(self, x):
        return x

    def __reduce__(self):
        return (die, ("raise",))


def shm_leftovers(prefix: str) -> list[str]:
    """Shared-memory segments (in /dev/shm) whose names start with `prefix`."""
    try:
        return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except FileNotFoundError:
        return []


def flaky_if_even(path_and_x):
    """Even items fail on their first attempt (see `flaky`); odd items never fail."""
    _directory, x = path_and_x
    return flaky(path_and_x) if x % 2 == 0 else x


def sum_slowly(a, seconds=0.2):
    time.sleep(seconds)
    return float(a.sum())


def limit_file_size(limit=1 << 20):
    """Initializer: files this worker writes may not grow past `limit` bytes (writes past
    it fail with EFBIG instead of killing the process), as a full /dev/shm refuses them."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def native_threads_seen(_):
    """What a worker's native libraries would size their thread pools by."""
    import os

    return os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")
