"""`shared_array`: a writable numpy array in shared memory that workers fill in place.

    cake = sw.shared_array(4, dtype="U16")       # the parent creates and owns it
    cake[:] = ["slice_0", "slice_1", "slice_2", "slice_3"]
    def eat(i):
        cake[i] = cake[i] + "_eaten"              # runs in a worker: writes the same pages
    with sw.Pool(2) as pool:
        pool.map(eat, range(4))
    cake[3]                                       # 'slice_3_eaten'

Pickling a `SharedArray` sends a handle (name, offset, shape, dtype, strides), never the
data; unpickling maps the same pages (once per process, cached by name). The process
that created the array owns the name and unlinks it when its last view is garbage
collected; processes that mapped it keep their mapping until they drop it.
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Any

import numpy as np

from slicewise.engine import shm


class _Segment:
    """One named mapping. The creating process unlinks the name when the object dies."""

    def __init__(self, name: str, size: int, create: bool) -> None:
        self.name = name
        self.size = size
        if create:
            fd = shm._posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.ftruncate(fd, size)
                self.mmap = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            weakref.finalize(self, _unlink_if_owner, name, os.getpid())
        else:
            try:
                self.mmap = shm.map_segment(name, size)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"shared array {name!r} no longer exists: the process that created it "
                    "dropped its last reference before the workers attached"
                ) from None
        self.address = np.frombuffer(self.mmap, np.uint8).__array_interface__["data"][0]


def _unlink_if_owner(name: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # a forked child must not unlink its parent's array
        shm.unlink(name)


_attached: weakref.WeakValueDictionary[str, _Segment] = weakref.WeakValueDictionary()


class SharedArray(np.ndarray):
    """A numpy array in shared memory. Pickled (to a worker), it travels as a handle and
    is re-attached to the same pages, so writes in a worker are seen by the parent.

    Create one with `shared_array(shape, dtype)`, not with the constructor (numpy's).
    Slices and views stay shared; results of arithmetic are plain numpy arrays.

    Example:
        >>> a = sw.shared_array(3, dtype="int64")
        >>> def fill(i): a[i] = i * 10
        >>> with sw.Pool(2) as pool:                          # doctest: +SKIP
        ...     _ = pool.map(fill, range(3))
        >>> a                                                 # doctest: +SKIP
        SharedArray([ 0, 10, 20])
    """

    _sw_segment: _Segment | None

    def __array_finalize__(self, obj: Any) -> None:
        self._sw_segment = getattr(obj, "_sw_segment", None)

    def __array_wrap__(self, out_arr, context=None, return_scalar=False):
        # results of arithmetic are new memory: plain arrays, not shared ones
        if out_arr.ndim == 0:
            return out_arr[()]
        return np.asarray(out_arr)

    def _handle(self) -> tuple | None:
        segment = self._sw_segment
        if segment is None:
            return None
        start = self.__array_interface__["data"][0] - segment.address
        if start < 0 or start + max(self.nbytes, 0) > segment.size:
            return None
        return (segment.name, segment.size, start, self.shape, self.dtype, self.strides)

    def __reduce_ex__(self, protocol):
        handle = self._handle()
        if handle is None:
            return np.asarray(self).__reduce_ex__(protocol)
        return (_attach_shared_array, handle)

    def __reduce__(self):
        return self.__reduce_ex__(2)

    @property
    def shm_name(self) -> str | None:
        """The shared memory segment's name; None if this array is not shared memory."""
        return self._sw_segment.name if self._sw_segment is not None else None


def _attach_shared_array(name, size, offset, shape, dtype, strides) -> SharedArray:
    segment = _attached.get(name)
    if segment is None:
        segment = _Segment(name, size, create=False)
        _attached[name] = segment
    array = np.ndarray(shape, dtype=dtype, buffer=segment.mmap, offset=offset, strides=strides)
    shared = array.view(SharedArray)
    shared._sw_segment = segment
    return shared


def shared_array(shape: int | tuple[int, ...], dtype: Any = "float64") -> SharedArray:
    """A zero-filled, writable numpy array in shared memory that workers write in place.

    Freed when the last reference in the creating process dies.

    Args:
        shape: an int or a tuple of ints.
        dtype: any numpy dtype of fixed size ("U16" for strings).

    Returns:
        A `SharedArray` of zeros.

    Raises:
        TypeError: an object dtype (Python objects cannot be shared).
        RuntimeError: the platform has no POSIX shared memory.

    Example:
        >>> a = sw.shared_array((2, 3), dtype="float32")
        >>> a.shape, float(a.sum())
        ((2, 3), 0.0)
    """
    if not shm.available():
        raise RuntimeError(
            "shared_array needs POSIX shared memory (Linux or macOS); this platform has none: "
            "return results from the function instead"
        )
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(f"shared_array cannot hold Python objects (dtype {dtype}); "
                        "use a fixed-size dtype such as 'U32' for strings")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    name = shm.shared_array_prefix(os.getpid()) + os.urandom(6).hex()
    segment = _Segment(name, max(nbytes, 1), create=True)
    _attached[segment.name] = segment
    array = np.ndarray(shape, dtype=dtype, buffer=segment.mmap)
    shared = array.view(SharedArray)
    shared._sw_segment = segment
    return shared
