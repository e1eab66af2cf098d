"""Run timelines: map(report=...) and every eval record what each worker did; the HTML
(inline SVG) and PNG pictures show it. Real pools (processes, threads, a Dask cluster);
no test asserts a duration."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from pictures_helpers import Parsed, not_blank
from PIL import Image

import slicewise as sw
from slicewise.engine.progress import tqdm_class
from slicewise.engine.timeline import BatchRecord, Timeline


def flaky(x):
    if x == 13:
        os._exit(3)  # kills its worker
    if x == 29:
        raise ValueError("bad item")
    return x * 2


def square(x):
    return x * x


def check_pictures(timeline: Timeline, tmp_path, name: str) -> Parsed:
    html_path = timeline.save(tmp_path / f"{name}.html")
    page = Parsed(html_path.read_text())
    assert not page.find("script")  # self-contained, nothing from the network
    batches = page.with_class("batch")
    assert len(batches) == len(timeline.records)
    for worker in timeline.worker_ids():
        assert timeline.name_of(worker) in page.texts
    assert page.with_class("throughput")
    png = timeline.save(tmp_path / f"{name}.png")
    with Image.open(png) as image:
        image.load()
        assert image.width == 960 and image.height > 200
        assert not_blank(image)
    return page


@pytest.mark.timeout(120)
def test_map_report_marks_failures_lost_workers_and_retries(tmp_path):
    with sw.Pool(2) as pool:
        out = tmp_path / "run.html"
        result = pool.map(flaky, range(60), on_error="collect", retries=1, report=out)
    assert out.exists()
    timeline = result.report
    assert [f.index for f in result.errors] == [13, 29]
    outcomes = {r.outcome for r in timeline.records}
    assert {"ok", "failed", "lost"} <= outcomes
    assert any(r.retry for r in timeline.records)  # 13 and 29 ran again
    assert timeline.items == 59  # every position but 13, which only ever killed workers
    assert timeline.worker_ids() == [0, 1]
    for r in timeline.records:
        assert 0 <= r.t0 <= r.t1 and r.worker in (0, 1)
    page = check_pictures(timeline, tmp_path, "flaky")
    assert page.with_class("lost") and page.with_class("failed")
    assert "batch(es) failed, lost or retried" in timeline.summary()


@pytest.mark.timeout(60)
def test_no_report_means_no_recording_and_a_plain_list():
    with sw.Pool(2, backend="threads") as pool:
        plain = pool.map(square, range(10))
        it = pool.imap(square, range(10))
        assert list(it) == [x * x for x in range(10)]
    assert type(plain) is list and it.report is None


@pytest.mark.timeout(60)
def test_imap_and_sw_map_reports(tmp_path):
    with sw.Pool(2, backend="threads") as pool:
        it = pool.imap_unordered(square, range(500), report=True)
        assert sorted(it) == [x * x for x in range(500)]
    assert it.report.items == 500
    result = sw.map(square, range(200), workers=2, report=tmp_path / "m.png")
    assert result == [x * x for x in range(200)] and result.report.items == 200
    with Image.open(tmp_path / "m.png") as image:
        assert image.width == 960


def test_idle_gaps_and_throughput_from_records():
    records = [BatchRecord(0, 0, 10, 0.0, 1.0), BatchRecord(0, 10, 10, 2.0, 3.0),
               BatchRecord(1, 20, 10, 0.0, 3.0, "failed", 2)]
    timeline = Timeline(records, workers=2)
    assert timeline.idle_gaps() == [(0, 1.0, 2.0)]
    assert timeline.items == 30
    rates = dict(timeline.throughput(bins=3))
    assert rates[0.0] == pytest.approx(10 + 10 / 3)
    assert rates[1.0] == pytest.approx(10 / 3)


@pytest.mark.timeout(120)
def test_every_eval_records_a_timeline_in_inputs(tmp_path):
    @sw.compute
    def store(item, sample_out):
        if item == 17:
            raise ValueError("bad input")
        sample_out.append({"values": np.full(4, item, np.float32)})

    ds = sw.empty(str(tmp_path / "ds"))
    ds.create_tensor("values", dtype="float32")
    report = store().eval(list(range(80)), ds, num_workers=2, scheduler="processed",
                          progressbar=False, ignore_errors=True,
                          report=str(tmp_path / "eval.html"))
    timeline = report.timeline
    assert timeline.unit == "inputs" and timeline.backend == "processes"
    covered = sorted(p for r in timeline.records if r.outcome in ("ok", "failed")
                     for p in range(r.start, r.start + r.size))
    assert covered == list(range(80))
    failed = [r for r in timeline.records if r.outcome == "failed"]
    assert len(failed) == 1 and failed[0].start <= 17 < failed[0].start + failed[0].size
    assert (tmp_path / "eval.html").exists()
    check_pictures(timeline, tmp_path, "eval")
    page = Parsed(report._repr_html_())
    assert "eval report" in page.texts and page.with_class("batch")
    assert len(repr(report)) < 300
    report.save_timeline(tmp_path / "again.png")


@pytest.mark.timeout(120)
def test_a_dask_run_shows_the_same_timeline(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with sw.Pool(backend="dask", client=client) as pool:
            result = pool.map(square, range(300), report=True, chunksize=10)
    timeline = result.report
    assert timeline.backend == "dask" and timeline.items == 300
    assert len(timeline.records) == 30 and {r.outcome for r in timeline.records} == {"ok"}
    check_pictures(timeline, tmp_path, "dask")


def test_notebook_progress_is_a_text_bar_without_the_ipywidgets_warning(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TqdmWarning("IProgress not found") would raise
        bar_class = tqdm_class(notebook=True, widgets=False)
        bar = bar_class(total=10, desc="eval", dynamic_ncols=True)
        bar.update(10)
        bar.close()
    out = capsys.readouterr().out
    assert "eval" in out and "10/10" in out and "█" in out
    assert max(len(line) for line in out.replace("\r", "\n").splitlines()) <= 100
    from tqdm.notebook import tqdm as widget_bar
    from tqdm.std import tqdm as text_bar

    assert tqdm_class(notebook=True, widgets=True) is widget_bar
    assert tqdm_class(notebook=False) is text_bar
