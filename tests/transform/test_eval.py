"""eval: every behaviour the issue lists, with real worker processes and real datasets."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import slicewise as sw
from slicewise.transform import EvalReport

SCHEDULERS = [("serial", 0), ("threaded", 2), ("processed", 2)]


def new_ds(tmp_path, dataset_name="ds", **tensors):
    ds = sw.empty(str(tmp_path / dataset_name), overwrite=True)
    for tensor, kwargs in (tensors or {"x": {}}).items():
        ds.create_tensor(tensor, **kwargs)
    ds.commit("tensors")
    return ds


@sw.compute
def square(item, sample_out, offset=0):
    sample_out.x.append(np.int64(item * item + offset))


@sw.compute
def fail_at(item, sample_out, bad):
    if item in bad:
        raise ValueError(f"bad item {item}")
    sample_out.x.append(np.int64(item))


@sw.compute
def die_at(item, sample_out, bad):
    if item in bad:
        os._exit(7)
    sample_out.x.append(np.int64(item))


def values(ds, tensor="x"):
    return [int(v) for v in ds[tensor].numpy().reshape(-1)]


# -- basics, every scheduler ------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_rows_in_input_order_every_scheduler(tmp_path, scheduler, workers):
    ds = new_ds(tmp_path)
    report = square(offset=1).eval(list(range(300)), ds, num_workers=workers,
                                   scheduler=scheduler, progressbar=False)
    assert values(ds) == [i * i + 1 for i in range(300)]
    reopened = sw.load(str(tmp_path / "ds"), read_only=True)
    assert values(reopened) == [i * i + 1 for i in range(300)]
    assert isinstance(report, EvalReport)
    assert report.rows_written == 300 and report.inputs_processed == 300
    assert sum(figures.inputs for figures in report.workers.values()) == 300
    assert report.seconds > 0 and report.inputs_per_s > 0 and not report.skipped


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_lambdas_and_closures_work_everywhere(tmp_path, scheduler, workers):
    ds = new_ds(tmp_path)
    factor = 3

    def closure(item, sample_out):
        sample_out.x.append(np.int64(item * factor))

    sw.compute(closure)().eval(range(20), ds, num_workers=workers, scheduler=scheduler,
                               progressbar=False)
    sw.compute(lambda item, out: out.x.append(np.int64(-item)))().eval(
        range(5), ds, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(ds) == [i * 3 for i in range(20)] + [-i for i in range(5)]


@pytest.mark.timeout(60)
def test_rows_are_appended_after_existing_rows_and_one_version_per_eval(tmp_path):
    ds = new_ds(tmp_path)
    ds.x.extend(np.array([-1, -2], dtype=np.int64))
    ds.commit("two rows")
    before = len(ds.log())
    square().eval([5, 6], ds, 2, "processed", False)  # Deep Lake 3's positional order
    assert values(ds) == [-1, -2, 25, 36]
    assert len(ds.log()) == before + 1


@pytest.mark.timeout(60)
def test_compose_runs_next_stage_per_row_in_processes(tmp_path):
    @sw.compute
    def explode(item, sample_out):
        for k in range(item):
            sample_out.x.append(np.int64(item * 10 + k))

    @sw.compute
    def tag(row, sample_out, plus):
        value = int(row.x.numpy().reshape(-1)[0])
        sample_out.append({"x": np.int64(value + plus), "text": f"v{value}"})

    ds = new_ds(tmp_path, x={}, text={"htype": "text"})
    report = sw.compose([explode(), tag(plus=1000)]).eval(
        [1, 0, 3, 2], ds, num_workers=2, scheduler="processed", progressbar=False)
    assert values(ds) == [1010, 1030, 1031, 1032, 1020, 1021]
    assert [ds.text[i].data()["value"] for i in range(6)] == \
        ["v10", "v30", "v31", "v32", "v20", "v21"]
    assert report.rows_written == 6


@pytest.mark.timeout(60)
def test_multi_row_and_zero_row_inputs(tmp_path):
    @sw.compute
    def maybe(item, sample_out):
        if item % 2:  # odd inputs produce two rows, even inputs none (the first included)
            sample_out.extend({"x": [np.int64(item), np.int64(-item)]})

    ds = new_ds(tmp_path)
    report = maybe().eval(list(range(10)), ds, num_workers=2, scheduler="processed",
                          progressbar=False)
    assert values(ds) == [1, -1, 3, -3, 5, -5, 7, -7, 9, -9]
    assert report.rows_written == 10 and report.inputs_processed == 10


# -- inputs -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_numpy_array_generator_and_dataframe_inputs(tmp_path):
    @sw.compute
    def total(row, sample_out):
        sample_out.x.append(np.int64(np.asarray(row).sum()))

    ds = new_ds(tmp_path)
    array = np.arange(40).reshape(20, 2)
    total().eval(array, ds, num_workers=2, scheduler="processed", progressbar=False)
    assert values(ds) == [int(r.sum()) for r in array]

    ds2 = new_ds(tmp_path, "ds2")
    generator = (i for i in range(50))  # unknown length
    square().eval(generator, ds2, num_workers=2, scheduler="processed", progressbar=False)
    assert values(ds2) == [i * i for i in range(50)]

    pd = pytest.importorskip("pandas")

    @sw.compute
    def from_frame(row, sample_out):
        sample_out.x.append(np.int64(row["a"] * 100 + row["b"]))

    ds3 = new_ds(tmp_path, "ds3")
    frame = pd.DataFrame({"a": range(10), "b": range(10, 20)})
    from_frame().eval(frame, ds3, num_workers=2, scheduler="processed", progressbar=False)
    assert values(ds3) == [a * 100 + b for a, b in zip(range(10), range(10, 20), strict=True)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", [("threaded", 2), ("processed", 2)])
def test_dataset_and_tensor_inputs(tmp_path, scheduler, workers):
    source = new_ds(tmp_path, "source", x={}, name={"htype": "text"})
    for i in range(30):
        source.append({"x": np.int64(i), "name": f"n{i}"})
    source.commit("rows")

    @sw.compute
    def from_row(row, sample_out):
        sample_out.x.append(np.int64(int(row.x.numpy().reshape(-1)[0]) * 2))

    out = new_ds(tmp_path, "out")
    from_row().eval(source, out, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(out) == [i * 2 for i in range(30)]

    @sw.compute
    def from_sample(sample, sample_out):
        sample_out.x.append(np.int64(int(np.asarray(sample.numpy()).reshape(-1)[0]) + 1))

    out2 = new_ds(tmp_path, "out2")
    from_sample().eval(source.x, out2, num_workers=workers, scheduler=scheduler,
                       progressbar=False)
    assert values(out2) == [i + 1 for i in range(30)]


@pytest.mark.timeout(60)
def test_empty_input_is_a_no_op(tmp_path):
    ds = new_ds(tmp_path)
    version = ds.version
    report = square().eval([], ds, num_workers=2, scheduler="processed", progressbar=False)
    assert report.rows_written == 0 and len(ds) == 0 and ds.version == version
    report = square().eval(iter([]), ds, num_workers=2, progressbar=False)
    assert report.rows_written == 0 and ds.version == version


# -- errors -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_failure_names_the_input_and_leaves_the_dataset_as_it_was(tmp_path, scheduler,
                                                                  workers):
    ds = new_ds(tmp_path)
    ds.x.extend(np.array([7, 8], dtype=np.int64))
    ds.commit("before")
    version = ds.version
    items = list(range(100, 300))
    with pytest.raises(sw.TransformError) as caught:
        fail_at(bad={237}).eval(items, ds, num_workers=workers, scheduler=scheduler,
                                progressbar=False)
    error = caught.value
    assert error.index == 137 and error.sample == 237
    assert isinstance(error.__cause__, ValueError) and "bad item 237" in str(error)
    assert "fail_at" in str(error)  # the worker traceback is in the message
    assert values(ds) == [7, 8] and ds.version == version
    reopened = sw.load(str(tmp_path / "ds"), read_only=True)
    assert values(reopened) == [7, 8] and reopened.version == version


@pytest.mark.timeout(60)
def test_ignore_errors_skips_and_reports(tmp_path, capsys):
    ds = new_ds(tmp_path)
    report = fail_at(bad={3, 50}).eval(list(range(60)), ds, num_workers=2,
                                       scheduler="processed", progressbar=False,
                                       ignore_errors=True)
    assert values(ds) == [i for i in range(60) if i not in (3, 50)]
    assert [(s.index, s.kind) for s in report.skipped] == [(3, "exception"), (50, "exception")]
    assert "bad item 3" in report.skipped[0].reason
    assert report.rows_written == 58 and report.inputs_processed == 60
    printed = capsys.readouterr().err
    assert "skipped 2 input(s)" in printed and "[50]" in printed


@pytest.mark.timeout(60)
def test_all_samples_skipped(tmp_path):
    ds = new_ds(tmp_path)
    version = ds.version
    with pytest.raises(sw.AllSamplesSkippedError, match="every one of the 5 inputs"):
        fail_at(bad=set(range(5))).eval(list(range(5)), ds, num_workers=2,
                                        progressbar=False, ignore_errors=True)
    assert ds.version == version and len(ds) == 0


@pytest.mark.timeout(60)
def test_tensor_mismatch_errors_name_tensor_and_input(tmp_path):
    ds = new_ds(tmp_path, x={}, y={})

    @sw.compute
    def wrong_name(item, sample_out):
        sample_out.append({"x": item, "y": item, "z": item})

    with pytest.raises(sw.TensorMismatchError, match="'z'") as caught:
        wrong_name().eval([1, 2], ds, num_workers=2, scheduler="processed",
                          progressbar=False)
    assert caught.value.index == 0

    @sw.compute
    def only_x(item, sample_out):
        if item > 0:
            sample_out.x.append(np.int64(item))

    with pytest.raises(sw.TensorMismatchError, match=r"\['y'\]") as caught:
        only_x().eval([0, 1], ds, progressbar=False)
    assert caught.value.index == 1  # input 0 wrote nothing at all, which is fine

    @sw.compute
    def uneven(item, sample_out):
        sample_out.x.extend([1, 2])
        sample_out.y.append(1)

    with pytest.raises(sw.TensorMismatchError, match="'x': 2, 'y': 1"):
        uneven().eval([0], ds, progressbar=False)
    assert len(ds) == 0


@pytest.mark.timeout(60)
def test_invalid_output_and_scheduler(tmp_path):
    ds = new_ds(tmp_path)
    with pytest.raises(sw.InvalidOutputDatasetError, match="ds_out is None"):
        square().eval([1, 2], None)
    with pytest.raises(sw.InvalidOutputDatasetError, match="slicewise Dataset"):
        square().eval([1, 2], {"x": []})
    with pytest.raises(sw.UnsupportedSchedulerError, match="'ray'"):
        square().eval([1, 2], ds, num_workers=2, scheduler="spark")
    with pytest.raises(sw.InvalidInputDataError):
        square().eval(7, ds)
    read_only = sw.load(str(tmp_path / "ds"), read_only=True)
    with pytest.raises(sw.InvalidOutputDatasetError, match="read-only"):
        square().eval([1], read_only)
    two = new_ds(tmp_path, "two", x={}, y={})
    two.x.append(np.int64(1))
    two.commit("uneven")
    with pytest.raises(sw.InvalidOutputDatasetError, match="different lengths"):
        square().eval([1], two)


@pytest.mark.timeout(60)
def test_worker_death_names_the_input(tmp_path):
    ds = new_ds(tmp_path)
    version = ds.version
    with pytest.raises(sw.TransformError) as caught:
        die_at(bad={41}).eval(list(range(120)), ds, num_workers=2, scheduler="processed",
                              progressbar=False)
    assert caught.value.index == 41 and caught.value.sample == 41
    assert "died" in str(caught.value)
    assert ds.version == version and len(ds) == 0


@pytest.mark.timeout(90)
def test_worker_death_is_skipped_under_ignore_errors(tmp_path):
    ds = new_ds(tmp_path)
    report = die_at(bad={5, 77}).eval(list(range(120)), ds, num_workers=2,
                                      scheduler="processed", progressbar=False,
                                      ignore_errors=True)
    assert values(ds) == [i for i in range(120) if i not in (5, 77)]
    assert [(s.index, s.kind) for s in report.skipped] == [(5, "worker_lost"),
                                                          (77, "worker_lost")]


# -- class labels, dynamic batches ------------------------------------------------------
@pytest.mark.timeout(60)
def test_class_labels_from_strings_agree_across_workers(tmp_path):
    @sw.compute
    def label(item, sample_out):
        sample_out.labels.append(f"class{item % 7}")

    ds = new_ds(tmp_path, labels={"htype": "class_label"})
    label().eval(list(range(200)), ds, num_workers=2, scheduler="processed",
                 progressbar=False)
    names = list(ds.labels.info.class_names)
    assert sorted(names) == sorted(f"class{k}" for k in range(7))
    ids = ds.labels.numpy().reshape(-1)
    assert [names[int(i)] for i in ids] == [f"class{item % 7}" for item in range(200)]


@pytest.mark.timeout(60)
def test_batches_are_dynamic_a_slow_start_does_not_hold_the_run(tmp_path):
    @sw.compute
    def uneven(item, sample_out):
        if item < 8:
            time.sleep(0.25)  # the first inputs are slow: a static half split would
        sample_out.x.append(np.int64(item))  # give one worker all of them plus 96 more

    ds = new_ds(tmp_path)
    report = uneven().eval(list(range(200)), ds, num_workers=2, scheduler="processed",
                           progressbar=False)
    assert values(ds) == list(range(200))
    inputs = sorted(figures.inputs for figures in report.workers.values())
    assert len(inputs) == 2 and inputs[0] < inputs[1]
    assert report.batches > 2


@pytest.mark.timeout(60)
def test_a_failing_input_generator_is_named_and_leaves_the_dataset(tmp_path):
    ds = new_ds(tmp_path)
    version = ds.version

    def inputs():
        yield from range(40)
        raise OSError("the source went away")

    with pytest.raises(sw.InvalidInputDataError, match="the source went away"):
        square().eval(inputs(), ds, num_workers=2, scheduler="processed", progressbar=False)
    assert ds.version == version and len(ds) == 0


@pytest.mark.timeout(60)
def test_a_function_that_cannot_travel_is_a_transform_error(tmp_path):
    import threading

    lock = threading.Lock()

    @sw.compute
    def holds_a_lock(item, sample_out):
        with lock:
            sample_out.x.append(np.int64(item))

    ds = new_ds(tmp_path)
    with pytest.raises(sw.TransformError, match="lock"):
        holds_a_lock().eval([1, 2, 3], ds, num_workers=2, scheduler="processed",
                            progressbar=False)
    assert len(ds) == 0
    holds_a_lock().eval([1, 2, 3], ds, num_workers=2, scheduler="threaded",
                        progressbar=False)  # threads share the lock: fine
    assert values(ds) == [1, 2, 3]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", [("threaded", 2), ("processed", 2)])
def test_in_place_replaces_the_transformed_tensors(tmp_path, scheduler, workers):
    ds = new_ds(tmp_path, x={}, y={})
    ds.extend({"x": np.arange(3, dtype=np.int64), "y": np.arange(3, dtype=np.int64)})
    ds.commit("three rows")

    @sw.compute
    def scale(row, sample_out):
        value = int(row.x.numpy().reshape(-1)[0])
        sample_out.append({"x": np.int64(value * 10), "y": np.int64(-value)})

    report = scale().eval(ds, num_workers=workers, scheduler=scheduler, progressbar=False)
    assert values(ds) == [0, 10, 20]  # Deep Lake 3: the outputs only (test_inplace.py)
    assert values(ds, "y") == [0, -1, -2]
    assert report.inputs_processed == 3


@pytest.mark.timeout(60)
def test_skip_ok_and_check_lengths(tmp_path):
    ds = new_ds(tmp_path, x={}, y={})

    @sw.compute
    def only_x(item, sample_out):
        sample_out.x.append(np.int64(item))

    only_x().eval([7, 8], ds, skip_ok=True, progressbar=False)
    assert (len(ds.x), len(ds.y)) == (2, 0)
    with pytest.raises(sw.InvalidOutputDatasetError, match="'x': 2, 'y': 0"):
        only_x().eval([9], ds, progressbar=False)
    only_x().eval([9], ds, check_lengths=False, progressbar=False)  # implies skip_ok
    assert values(ds) == [7, 8, 9]


def test_only_a_small_receipt_travels_back(tmp_path):
    import pickle

    from slicewise.transform.pipeline import Pipeline
    from slicewise.transform.worker import Batch, BatchRunner

    from .conftest import make_jpeg_tree

    files = [str(path) for path in make_jpeg_tree(tmp_path / "src", per_class=40)]
    ds = new_ds(tmp_path, images={"htype": "image", "sample_compression": "jpeg"})

    @sw.compute
    def store(path, sample_out):
        sample_out.images.append(sw.read(path))

    tensors = frozenset({"images"})
    runner = BatchRunner(Pipeline([store()]), ds.writer_spec(), "t", tensors, tensors, False)
    result = runner(Batch(0, 0, len(files), ("items", files)))
    written = sum(os.path.getsize(path) for path in files)
    assert result.rows == len(files) and written > 100_000
    assert len(pickle.dumps(result)) < 2_000  # the samples stay in storage
    ds.add_receipts([result.receipt])
    ds.commit("by hand")
    assert [ds.images[i].tobytes() for i in range(len(files))] == \
        [open(path, "rb").read() for path in files]


@sw.compute
def three_rows_bad_last_at(item, sample_out, bad):
    for k in range(3):
        value = "not a number" if item == bad and k == 2 else np.int64(10 * item + k)
        sample_out.x.append(value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheduler,workers", [("serial", 0), ("processed", 2)])
def test_a_skipped_input_leaves_none_of_its_rows(tmp_path, scheduler, workers):
    # its third row fails to encode after two good ones: the input is all or nothing
    ds = new_ds(tmp_path)
    report = three_rows_bad_last_at(bad=4).eval(list(range(8)), ds, num_workers=workers,
                                                scheduler=scheduler, progressbar=False,
                                                ignore_errors=True)
    assert values(ds) == [10 * i + k for i in range(8) if i != 4 for k in range(3)]
    assert [s.index for s in report.skipped] == [4] and report.rows_written == 21


# -- pad_data_in: a Dataset input with tensors of different lengths ----------------------
def uneven_source(tmp_path):
    """x: 5 rows; name (text), label (class_label), image (png), meta (json): 3 rows."""
    source = new_ds(tmp_path, "source", x={"dtype": "int64"}, name={"htype": "text"},
                    label={"htype": "class_label"},
                    image={"htype": "image", "sample_compression": "png"},
                    meta={"htype": "json"})
    with source:
        source.x.extend([np.int64(10 + i) for i in range(5)])
        source.name.extend(["n0", "n1", "n2"])
        source.label.extend(["a", "b", "a"])
        source.image.extend([np.full((2 + i, 3, 3), i, dtype=np.uint8) for i in range(3)])
        source.meta.extend([{"i": i} for i in range(3)])
    return source


@sw.compute
def describe_row(row, sample_out):
    """Writes down what the function sees of each tensor of the row."""
    label, image = row.label.numpy(), row.image.numpy()
    sample_out.append({
        "x": np.int64(int(row.x.numpy().reshape(-1)[0])),
        "seen": {
            "name": row.name.data()["value"],
            "name_numpy": row.name.numpy().tolist(),
            "label": [list(label.shape), label.dtype.str, label.tolist()],
            "label_text": row.label.data()["text"],
            "image": [list(image.shape), image.dtype.str],
            "meta": row.meta.data()["value"],
        },
    })


def stored_row(i):
    return {"name": f"n{i}", "name_numpy": [f"n{i}"], "label": [[1], "<u4", [i % 2]],
            "label_text": [["a", "b"][i % 2]], "image": [[2 + i, 3, 3], "|u1"],
            "meta": {"i": i}}


EMPTY_ROW = {"name": "", "name_numpy": [""], "label": [[0], "<u4", []], "label_text": [],
             "image": [[0, 0, 0], "|u1"], "meta": {}}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pad", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("scheduler,workers", SCHEDULERS)
def test_pad_data_in_pads_short_tensors_with_empty_samples(tmp_path, scheduler, workers, pad):
    source = uneven_source(tmp_path)
    out = new_ds(tmp_path, "out", x={"dtype": "int64"}, seen={"htype": "json"})
    report = describe_row().eval(source, out, num_workers=workers, scheduler=scheduler,
                                 pad_data_in=pad, progressbar=False)
    rows = 5 if pad else 3
    assert report.inputs_total == rows and report.rows_written == rows
    assert values(out) == [10 + i for i in range(rows)]
    seen = out.seen.data()["value"]
    assert seen == [stored_row(i) for i in range(3)] + [EMPTY_ROW] * (rows - 3)
    assert len(source) == 3 and not source.pad_tensors  # the input itself is unchanged


@pytest.mark.timeout(60)
def test_a_padded_view_as_input_and_pad_data_in_elsewhere(tmp_path):
    source = uneven_source(tmp_path)
    out = new_ds(tmp_path, "out", x={"dtype": "int64"}, seen={"htype": "json"})
    describe_row().eval(source.padded(), out, num_workers=2, scheduler="processed",
                        progressbar=False)  # already padded: read as it is
    assert values(out) == [10, 11, 12, 13, 14]
    assert out.seen[4].data()["value"] == EMPTY_ROW
    with pytest.warns(UserWarning, match="pad_data_in=True has no effect"):
        square().eval([1, 2], out, pad_data_in=True, progressbar=False, check_lengths=False,
                      skip_ok=True)
    assert values(out)[-2:] == [1, 4]
    with pytest.raises(sw.TransformError, match="padded read view"):
        square().eval([1], out.padded(), progressbar=False)
    with source:
        source.x.append(np.int64(99))
        with pytest.raises(sw.TransformError, match="uncommitted"):
            describe_row().eval(source, out, pad_data_in=True, check_lengths=False,
                                progressbar=False)


def test_padded_and_unpadded_inputs_have_different_fingerprints(tmp_path):
    from slicewise.transform.inputs import InputDigest, open_source

    even = new_ds(tmp_path, "even", x={"dtype": "int64"}, name={"htype": "text"})
    even.extend({"x": [np.int64(i) for i in range(4)], "name": ["a", "b", "c", "d"]})
    for ds in (even, uneven_source(tmp_path)):
        plain, padded = open_source(ds), open_source(ds.padded())
        assert plain.identity != padded.identity
        digests = []
        for source in (plain, padded):
            digest = InputDigest(source.identity, ["f"])
            assert source.prefix_digest(digest, 2)
            digests.append(digest.hexdigest())
        assert digests[0] != digests[1]
    assert open_source(even).identity == open_source(sw.load(even.path)).identity


@sw.compute
def copy_row(row, sample_out, fail_from=None):
    x = int(row.x.numpy().reshape(-1)[0])
    if fail_from is not None and x >= fail_from:
        raise RuntimeError(f"stopped at {x}")
    sample_out.append({"x": np.int64(x), "name": row.name.data()["value"]})


@pytest.mark.timeout(90)
def test_a_padded_eval_resumes_only_with_pad_data_in(tmp_path):
    source = new_ds(tmp_path, "source", x={"dtype": "int64"}, name={"htype": "text"})
    with source:
        source.x.extend([np.int64(i) for i in range(30)])
        source.name.extend([f"n{i}" for i in range(20)])
    expected = list(range(30))
    for rerun_padded in (True, False):
        out = new_ds(tmp_path, f"out_{rerun_padded}", x={"dtype": "int64"},
                     name={"htype": "text"})
        with pytest.raises(sw.TransformError) as caught:  # serial: checkpoints at 10, 20
            copy_row(fail_from=25).eval(source, out, pad_data_in=True, checkpoint_interval=10,
                                        progressbar=False)
        assert caught.value.index == 25
        assert values(out) == list(range(20))
        if rerun_padded:
            report = copy_row().eval(source, out, num_workers=2, scheduler="processed",
                                     pad_data_in=True, checkpoint_interval=10,
                                     progressbar=False)
            assert report.resumed_from == 20 and report.rows_written == 10
            assert values(out) == expected
            assert out.name.data()["value"] == [f"n{i}" for i in range(20)] + [""] * 10
        else:
            with pytest.warns(UserWarning, match="not resuming"):
                report = copy_row().eval(source, out, pad_data_in=False,
                                         checkpoint_interval=10, progressbar=False)
            assert report.resumed_from == 0
            assert values(out) == list(range(20)) + list(range(20))


def test_the_resume_fingerprint_does_not_depend_on_batch_boundaries(tmp_path):
    """A re-run checks its prefix in other batches than the run that made the checkpoint
    (Dataset, array and DataFrame inputs used to hash the batch boundaries: no resume)."""
    from slicewise.transform.inputs import InputDigest, open_source

    def digest_in_batches(data, count, size):
        source = open_source(data)
        digest = InputDigest(source.identity, ["f"])
        for position, _, payload in source.payloads(
            0, lambda position: max(1, min(size, count - position))
        ):
            if position >= count:
                break
            source.digest_payload(digest, payload)
        return digest.hexdigest()

    source = uneven_source(tmp_path)
    inputs = [source, source.padded(), source.x, np.arange(40.0).reshape(20, 2),
              [f"/data/{i}.jpg" for i in range(20)]]
    pd = pytest.importorskip("pandas")
    inputs.append(pd.DataFrame({"a": range(20), "b": [str(i) for i in range(20)]}))
    for data in inputs:
        count = min(3, len(data))
        digests = {digest_in_batches(data, count, size) for size in (1, 2, count)}
        assert len(digests) == 1, type(data).__name__
    array = np.arange(40.0).reshape(20, 2)
    assert digest_in_batches(array, 3, 1) != digest_in_batches(array.reshape(10, 4), 3, 1)
    frame = pd.DataFrame({"a": range(5)})
    assert digest_in_batches(frame, 3, 1) != digest_in_batches(frame.rename(columns={"a": "b"}),
                                                               3, 1)
