"""A sample the tensor cannot hold as it is given is refused at the append that brings
it, naming the tensor and the sample, and nothing already stored changes: lossy casts
(float overflow to inf, NaN and fractions into integers, integers a float cannot hold,
out-of-range integers) and a wrong number of dimensions, in and outside `with ds:`, and
from an eval's workers."""

from __future__ import annotations

import numpy as np
import pytest

import slicewise as sw
from slicewise.format.errors import SampleError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ds(tmp_path):
    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("f32", dtype="float32")
    ds.create_tensor("i32", dtype="int32")
    ds.create_tensor("u8", dtype="uint8")
    ds.create_tensor("c64", dtype="complex64")
    ds.create_tensor("x")
    return ds


REFUSED = [
    ("f32", np.float64(1e300), "would become inf"),
    ("f32", np.array([1.0, -1e39]), "would become inf"),
    ("i32", np.array([1.0, np.nan]), "floating point"),
    ("i32", np.float64(2.5), "floating point"),
    ("i32", np.array([np.inf]), "floating point"),
    ("u8", np.array([300], dtype=np.int64), r"outside \[0, 255\]"),
    ("u8", np.array([-1], dtype=np.int16), r"outside \[0, 255\]"),
    ("i32", np.array([2**40], dtype=np.int64), "outside"),
    ("f32", np.array([2**24 + 1], dtype=np.int64), "cannot represent exactly"),
    ("c64", np.complex128(1e300 + 1j), "would become inf"),
    ("f32", np.complex64(1 + 2j), "does not fit"),
]


@pytest.mark.parametrize(("tensor", "value", "why"), REFUSED,
                         ids=[f"{t}-{i}" for i, (t, _v, _w) in enumerate(REFUSED)])
def test_lossy_casts_are_refused_at_the_append(ds, tensor, value, why):
    ds[tensor].append(np.zeros(1, dtype=ds[tensor].dtype))  # a stored row that must stay
    with pytest.raises(SampleError, match=why) as info:
        ds[tensor].append(value)
    assert repr(tensor) in str(info.value)
    assert len(ds[tensor]) == 1
    with pytest.raises(SampleError, match=why):
        with ds:
            ds[tensor].append(value)
    assert len(sw.load(ds.path)[tensor]) == 1


ACCEPTED = [
    ("f32", np.float64(0.1), np.float32(0.1)),           # float rounding is what float32 is
    ("f32", np.array([3.4e38]), np.float32(3.4e38)),
    ("f32", np.array([np.nan, np.inf]), None),           # non-finite stays non-finite
    ("f32", 7, np.float32(7)),                           # a Python int that a float holds
    ("i32", np.array([5], dtype=np.int64), np.int32(5)),
    ("u8", np.array([255], dtype=np.int64), np.uint8(255)),
    ("c64", np.float64(1.5), np.complex64(1.5)),
    ("i32", True, np.int32(1)),
]


@pytest.mark.parametrize(("tensor", "value", "expected"), ACCEPTED,
                         ids=[f"{t}-{i}" for i, (t, _v, _e) in enumerate(ACCEPTED)])
def test_exact_or_rounding_casts_are_stored(ds, tensor, value, expected):
    ds[tensor].append(value)
    stored = sw.load(ds.path)[tensor][0].numpy()
    assert stored.dtype == ds[tensor].dtype
    if expected is None:
        np.testing.assert_array_equal(stored, np.asarray(value, dtype=stored.dtype))
    else:
        assert stored.reshape(-1)[0] == expected


def test_a_wrong_ndim_is_refused_at_the_append_outside_and_inside_with(ds, tmp_path):
    ds.x.append(np.zeros((2, 3)))
    with pytest.raises(SampleError, match=r"'x'.*\(2, 3, 4\) has 3 dimensions.*have 2"):
        ds.x.append(np.zeros((2, 3, 4)))
    assert len(ds.x) == 1
    with pytest.raises(SampleError, match="has 1 dimensions"):
        with ds:
            ds.x.append(np.zeros((5, 5)))  # fine
            ds.x.append(np.zeros(3))       # refused: the block is rolled back
    again = sw.load(ds.path)
    assert len(again.x) == 1 and again.x[0].numpy().shape == (2, 3)
    again.x.extend([np.ones((1, 1)), np.ones((4, 4))])  # the same ndim still goes in
    assert [again.x[i].numpy().shape for i in range(3)] == [(2, 3), (1, 1), (4, 4)]


@sw.compute
def put(value, sample_out):
    sample_out.x.append(value)


@pytest.mark.parametrize("scheduler", ["serial", "processed"])
def test_a_wrong_ndim_from_an_eval_names_the_item(tmp_path, scheduler):
    ds = sw.empty(str(tmp_path / "one"))
    ds.create_tensor("x")
    ds.x.append(np.zeros((2, 3)))
    data = [np.ones((2, 2)), np.ones((3, 3)), np.ones(4), np.ones((1, 1))]
    with pytest.raises(Exception) as info:
        put().eval(data, ds, scheduler=scheduler, num_workers=2)
    text = "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert "has 1 dimensions" in text and "'x'" in text
    assert "input index 2" in text
    assert len(sw.load(ds.path).x) == 1  # nothing of the eval was committed
