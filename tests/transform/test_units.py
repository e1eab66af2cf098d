"""The transform's parts that need no dataset or worker: sample_out buffers, compute and
compose binding, input sources and fingerprints, batch sizing, receipt ordering."""

from __future__ import annotations

import numpy as np
import pytest

from slicewise.transform import (
    ComposeError,
    ComputeFunction,
    Pipeline,
    SampleOut,
    TensorMismatchError,
    compose,
    compute,
)
from slicewise.transform.errors import InvalidInputDataError, UnsupportedSchedulerError
from slicewise.transform.inputs import InputDigest, open_source, unpack
from slicewise.transform.prepare import choose_backend
from slicewise.transform.run import BatchSizer, ReceiptOrder
from slicewise.transform.worker import Batch, BatchResult


# -- sample_out -------------------------------------------------------------------------
def test_sample_out_append_extend_and_tensor_buffers():
    out = SampleOut(frozenset({"images", "labels"}))
    out.append({"images": np.zeros((2, 2)), "labels": 1})
    out.extend({"images": [np.ones((2, 2)), np.ones((3, 3))], "labels": [2, 3]})
    out.images.append(np.zeros(1))
    out["labels"].extend([4])
    out.extend([{"images": 5, "labels": 5}])
    assert out.row_count() == 5
    rows = list(out.rows())
    assert [row["labels"] for row in rows] == [1, 2, 3, 4, 5]
    assert len(out.images) == 5 and len(out) == 5


def test_sample_out_rejects_unknown_tensor_with_its_name():
    out = SampleOut(frozenset({"images"}))
    with pytest.raises(TensorMismatchError, match="'lables'.*images"):
        out.append({"lables": 1})
    with pytest.raises(TensorMismatchError, match="'boxes'"):
        out.boxes.append(1)


def test_sample_out_unequal_row_counts_are_named():
    out = SampleOut(None)
    out.a.extend([1, 2])
    out.b.append(1)
    with pytest.raises(TensorMismatchError, match="'a': 2, 'b': 1"):
        out.row_count()
    with pytest.raises(TensorMismatchError, match="different lengths"):
        SampleOut(None).extend({"a": [1, 2], "b": [1]})


def test_sample_out_empty_is_zero_rows():
    assert SampleOut(frozenset({"x"})).row_count() == 0


def test_sample_out_bad_append_argument():
    with pytest.raises(TypeError, match="dict of tensor name"):
        SampleOut(None).append([1, 2])


def test_row_view_numpy_and_index():
    out = SampleOut(None)
    out.append({"x": np.arange(3), "name": "a"})
    out.append({"x": np.arange(3) + 1, "name": "b"})
    assert out[1].x.numpy().tolist() == [1, 2, 3]
    assert out[-1]["name"].data() == "b"
    assert np.asarray(out[0].x).tolist() == [0, 1, 2]
    assert [row.name.data() for row in out] == ["a", "b"]
    with pytest.raises(IndexError):
        out[2]
    with pytest.raises(KeyError, match="no tensor 'y'"):
        _ = out[0].y


# -- compute / compose ------------------------------------------------------------------
def test_compute_binds_arguments_and_runs_nothing():
    calls = []

    @compute
    def fn(item, sample_out, factor, offset=0):
        calls.append(item)
        sample_out.x.append(item * factor + offset)

    bound = fn(3, offset=1)
    assert isinstance(bound, ComputeFunction) and calls == []
    assert bound.args == (3,) and bound.kwargs == {"offset": 1}
    out = Pipeline([bound]).run_one(2, frozenset({"x"}))
    assert out.tensors["x"] == [7] and calls == [2]


def test_compute_with_name_and_return_value_ignored():
    @compute(name="custom")
    def fn(item, sample_out):
        sample_out.x.append(item)
        return "ignored"

    assert fn().name == "custom"
    assert Pipeline([fn()]).run_one(1, None).tensors == {"x": [1]}


def test_compose_runs_next_stage_once_per_row():
    @compute
    def split(item, sample_out):
        for part in item.split():
            sample_out.word.append(part)

    @compute
    def measure(row, sample_out, suffix):
        word = row.word.data()
        sample_out.append({"word": word + suffix, "length": len(word)})

    pipeline = compose([split(), measure("!")])
    out = pipeline.run_one("a bb ccc", frozenset({"word", "length"}))
    assert out.tensors == {"word": ["a!", "bb!", "ccc!"], "length": [1, 2, 3]}
    assert pipeline.names == ["test_compose_runs_next_stage_once_per_row.<locals>.split",
                              "test_compose_runs_next_stage_once_per_row.<locals>.measure"]
    assert Pipeline([split()]).run_one("", frozenset({"word"})).row_count() == 0


def test_compose_errors():
    @compute
    def fn(item, sample_out):
        pass

    with pytest.raises(ComposeError, match="at least one"):
        compose([])
    with pytest.raises(ComposeError, match="forget the parentheses"):
        compose([fn])
    with pytest.raises(ComposeError, match="item 1"):
        compose([fn(), 3])


def test_intermediate_stage_names_are_free_final_checked():
    @compute
    def first(item, sample_out):
        sample_out.tmp.append(item)

    @compute
    def second(row, sample_out):
        sample_out.bad.append(row.tmp.data())

    with pytest.raises(TensorMismatchError, match="'bad'"):
        compose([first(), second()]).run_one(1, frozenset({"x"}))


# -- schedulers -------------------------------------------------------------------------
def test_choose_backend():
    assert choose_backend("threaded", 0) == ("serial", 1)
    assert choose_backend("threaded", 3) == ("threads", 3)
    assert choose_backend("processed", 2) == ("processes", 2)
    assert choose_backend("serial", 4) == ("serial", 1)
    assert choose_backend("dask", 4) == ("dask", 4)
    assert choose_backend("ray", 2) == ("ray", 2)
    with pytest.raises(UnsupportedSchedulerError, match="unknown scheduler 'gpu'"):
        choose_backend("gpu", 2)
    with pytest.raises(ValueError, match="num_workers"):
        choose_backend("threaded", -1)


# -- inputs -----------------------------------------------------------------------------
def _all_items(source, size=3):
    items = []
    positions = []
    for start, count, payload in source.payloads(0, lambda position: size):
        got = list(unpack(payload))
        assert len(got) == count
        positions.append(start)
        items.extend(got)
    return positions, items


def test_sources_cover_every_input_in_order():
    assert _all_items(open_source(list(range(10)))) == ([0, 3, 6, 9], list(range(10)))
    assert _all_items(open_source(range(7)))[1] == list(range(7))
    assert _all_items(open_source(x for x in "abcdefg"))[1] == list("abcdefg")
    array = np.arange(20).reshape(10, 2)
    positions, rows = _all_items(open_source(array))
    assert np.array_equal(np.stack(rows), array) and positions == [0, 3, 6, 9]
    assert _all_items(open_source([]))[1] == []
    assert _all_items(open_source(iter([])))[1] == []


def test_dataframe_rows():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    _, rows = _all_items(open_source(frame), size=2)
    assert [(row["a"], row["b"]) for row in rows] == [(1, "x"), (2, "y"), (3, "z")]


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(InvalidInputDataError, match="single characters"):
        open_source("abc")
    with pytest.raises(InvalidInputDataError, match="got int"):
        open_source(5)
    with pytest.raises(InvalidInputDataError, match="got dict"):
        open_source({"a": 1})
    with pytest.raises(InvalidInputDataError, match="0-d"):
        open_source(np.array(1.0))


def _digest(data, count):
    source = open_source(data)
    digest = InputDigest(source.identity, ["f"])
    assert source.prefix_digest(digest, count)
    return digest.hexdigest()


def test_digest_is_stable_and_sensitive():
    files = [f"/data/{i}.jpg" for i in range(50)]
    assert _digest(files, 30) == _digest(list(files), 30)
    assert _digest(files, 30) == _digest(iter(files), 30)  # generator: same inputs, same hash
    changed = files[:10] + ["/data/other.jpg"] + files[11:]
    assert _digest(files, 30) != _digest(changed, 30)
    assert _digest(files, 10) == _digest(changed, 10)  # only the prefix counts
    assert _digest(files, 30) != _digest(files, 31)
    array = np.arange(100.0).reshape(50, 2)
    assert _digest(array, 20) == _digest(array.copy(), 20)
    other = array.copy()
    other[5, 1] = -1
    assert _digest(array, 20) != _digest(other, 20)
    assert _digest([{"a": 1, "b": (2, 3)}], 1) == _digest([{"b": (2, 3), "a": 1}], 1)


def test_generator_prefix_is_replayed_when_not_resuming():
    source = open_source(x for x in range(10))
    digest = InputDigest(source.identity, ["f"])
    assert source.prefix_digest(digest, 4)
    items = [item for _, _, p in source.payloads(0, lambda position: 3) for item in unpack(p)]
    assert items == list(range(10))
    source = open_source(x for x in range(10))
    source.prefix_digest(InputDigest(source.identity, ["f"]), 4)
    starts = []
    items = []
    for start, _, payload in source.payloads(4, lambda position: 3):
        starts.append(start)
        items.extend(unpack(payload))
    assert items == list(range(4, 10)) and starts == [4, 7]
    short = open_source(iter(range(3)))
    assert not short.prefix_digest(InputDigest(short.identity, ["f"]), 5)


# -- batch sizing and ordering ----------------------------------------------------------
def test_batch_sizer_targets_time_and_shares_the_tail():
    sizer = BatchSizer(workers=2, length=10_000, first=0, checkpoint_interval=0,
                       batch_seconds=0.1)
    assert sizer.next_size(0) == 256
    sizer.observe(100, 0.01)  # 0.1 ms per input -> 1000 per 0.1 s
    assert sizer.next_size(0) == 1000
    assert sizer.next_size(9_000) == 250  # ceil(1000 / 4): the tail is shared
    assert sizer.next_size(9_900) == 200  # but no batch under 20 ms of work
    # on a cluster (a task's round trip costs ms) the tail's batches hold >= 100 ms
    cluster = BatchSizer(2, 10_000, 0, 0, 0.25, cluster=True)
    cluster.observe(100, 0.01)
    assert cluster.next_size(9_000) == 1000  # not ceil(1000 / 4)
    sizer = BatchSizer(2, None, 0, 0, 0.1)
    assert sizer.next_size(0) == 16
    sizer.observe(10, 10.0)  # 1 s per input
    assert sizer.next_size(123) == 1
    sizer = BatchSizer(2, 10_000, 0, 50, 0.1)
    sizer.observe(100, 0.001)
    assert sizer.next_size(0) == 50  # never past a checkpoint boundary
    assert sizer.next_size(120) == 30


def test_receipt_order_releases_only_contiguous_prefixes():
    order = ReceiptOrder(10)
    batches = [Batch(i, 10 + 5 * i, 5, ("items", [])) for i in range(4)]
    order.add(batches[2], BatchResult(2))
    order.add(batches[1], BatchResult(1))
    assert list(order.pop_ready()) == []
    order.add(batches[0], BatchResult(0))
    assert [result.batch_id for _, result in order.pop_ready()] == [0, 1, 2]
    assert order.waiting() == 0
    order.add(batches[3], BatchResult(3))
    assert [result.batch_id for _, result in order.pop_ready()] == [3]
