"""Run timelines: what each worker did, batch by batch, drawn as HTML (inline SVG) or PNG.

Recording (only when a call asks for a report; nothing is recorded otherwise):

    scheduler._send      Recorder.sent(seq, slot, start, size)        one dict insert
    scheduler._on_event  Recorder.settled(seq, outcome, seconds, n)  one list append
    worker gone          Recorder.settled(seq, "lost" | "timeout")

A batch's start is when its worker began it: the parent sees when it was sent and when
its result arrived; the worker measured how long it ran (`seconds`), so a batch queued
behind another starts at max(sent, arrived - seconds). Times are seconds since the first
batch was sent, on the parent's monotonic clock: the same for processes, threads, Dask
and Ray.

    timeline = pool.map(fn, items, report=True).report     # a Timeline
    timeline.save("run.html"); timeline.save("run.png")     # or report="run.html"
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "failed", "retried", "lost", "timeout", "requeued")
COLORS = {
    "ok": (76, 132, 196),
    "failed": (214, 60, 60),
    "lost": (40, 40, 40),
    "timeout": (230, 140, 30),
    "requeued": (170, 170, 170),
}
RETRY_EDGE = (240, 170, 20)


@dataclass
class BatchRecord:
    """One batch on one worker: `start`, `size` (input positions), `t0`, `t1` (seconds
    since the run began), `outcome` ("ok", "failed": some items failed, "lost": the worker
    died, "timeout", "requeued": sent back whole), `failures` (items that failed) and
    `retry` (the batch re-ran items that had failed or were lost)."""

    worker: int
    start: int
    size: int
    t0: float
    t1: float
    outcome: str = "ok"
    failures: int = 0
    retry: bool = False

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


class Recorder:
    """The scheduler side: cheap notes per batch sent and settled (scheduler thread only)."""

    def __init__(self) -> None:
        self.origin: float | None = None
        self._open: dict[int, tuple[int, int, int, float, bool]] = {}
        self.records: list[BatchRecord] = []
        self._retried: set[int] = set()

    def sent(self, seq: int, slot: int, start: int, size: int, isolated: bool) -> None:
        now = time.monotonic()
        if self.origin is None:
            self.origin = now
        retry = isolated or start in self._retried
        self._open[seq] = (slot, start, size, now - self.origin, retry)

    def settled(self, seq: int, outcome: str, seconds: float | None = None,
                failures: int = 0) -> None:
        opened = self._open.pop(seq, None)
        if opened is None or self.origin is None:
            return
        slot, start, size, sent, retry = opened
        end = time.monotonic() - self.origin
        began = sent if seconds is None else max(sent, end - seconds)
        if outcome in ("lost", "timeout", "requeued") or failures:
            self._retried.update(range(start, start + size))
        self.records.append(BatchRecord(slot, start, size, began, end, outcome, failures, retry))

    def timeline(self, **labels: Any) -> Timeline:
        """The records so far, with time 0 at the first batch's start (the time before
        it, workers starting, is `Timeline.startup_s`)."""
        first = min((r.t0 for r in self.records), default=0.0)
        records = [BatchRecord(r.worker, r.start, r.size, r.t0 - first, r.t1 - first,
                               r.outcome, r.failures, r.retry)
                   for r in sorted(self.records, key=lambda r: (r.t0, r.worker))]
        return Timeline(records, startup_s=first, **labels)


@dataclass
class Timeline:
    """What each worker did during one run: `records` (BatchRecord), drawn as a Gantt of
    batches per worker, throughput over time and idle gaps, with retries and failures
    marked. `to_html()` is a self-contained page (inline SVG, no scripts); `to_png()`
    a Pillow image; `save(path)` writes either by the path's suffix (.html or .png)."""

    records: list[BatchRecord] = field(default_factory=list)
    title: str = "run"
    backend: str = ""
    workers: int = 0
    unit: str = "items"
    worker_names: dict[int, str] = field(default_factory=dict)
    startup_s: float = 0.0  # from the first batch sent to the first batch started

    # -- figures
    @property
    def seconds(self) -> float:
        return max((r.t1 for r in self.records), default=0.0)

    @property
    def items(self) -> int:
        """Input positions settled (a position retried after a failure counts once)."""
        spans = sorted((r.start, r.start + r.size) for r in self.records
                       if r.outcome in ("ok", "failed"))
        count, reach = 0, None
        for lo, hi in spans:
            if reach is None or lo >= reach:
                count += hi - lo
                reach = hi
            elif hi > reach:
                count += hi - reach
                reach = hi
        return count

    def worker_ids(self) -> list[int]:
        return sorted({r.worker for r in self.records} | set(range(self.workers)))

    def busy(self, worker: int) -> float:
        return sum(r.seconds for r in self.records if r.worker == worker)

    def idle_gaps(self, min_seconds: float | None = None) -> list[tuple[int, float, float]]:
        """(worker, from, to): stretches longer than `min_seconds` (default: 2% of the
        run) in which a worker had no batch, between the first start and the last end."""
        total = self.seconds
        if min_seconds is None:
            min_seconds = max(0.02 * total, 1e-3)
        first = min((r.t0 for r in self.records), default=0.0)
        gaps = []
        for worker in self.worker_ids():
            spans = sorted((r.t0, r.t1) for r in self.records if r.worker == worker)
            at = first
            for t0, t1 in spans:
                if t0 - at > min_seconds:
                    gaps.append((worker, at, t0))
                at = max(at, t1)
            if total - at > min_seconds:
                gaps.append((worker, at, total))
        return gaps

    def throughput(self, bins: int = 40) -> list[tuple[float, float]]:
        """(bin start, items per second) over `bins` equal time bins; a batch's items are
        spread evenly over its duration."""
        total = self.seconds
        if total <= 0:
            return []
        width = total / bins
        counts = [0.0] * bins
        for r in self.records:
            if r.outcome not in ("ok", "failed") or r.size == 0:
                continue
            span = max(r.t1 - r.t0, 1e-9)
            for b in range(int(r.t0 / width), min(bins, int(r.t1 / width) + 1)):
                lo, hi = max(r.t0, b * width), min(r.t1, (b + 1) * width)
                if hi > lo:
                    counts[b] += r.size * (hi - lo) / span
        return [(b * width, counts[b] / width) for b in range(bins)]

    def summary(self) -> str:
        lines = [f"{self.title}: {len(self.records)} batches, {self.items} {self.unit} in "
                 f"{self.seconds:.2f} s on {len(self.worker_ids())} worker(s)"
                 + (f" ({self.backend})" if self.backend else "")]
        if self.startup_s >= 0.01:
            lines.append(f"  the first batch started {self.startup_s:.2f} s after it was "
                         "sent (workers starting); time 0 is that start")
        for worker in self.worker_ids():
            busy = self.busy(worker)
            share = busy / self.seconds if self.seconds else 0.0
            lines.append(f"  {self.name_of(worker)}: busy {busy:.2f} s ({share:.0%})")
        marked = [r for r in self.records if r.outcome != "ok" or r.retry]
        if marked:
            lines.append(f"  {len(marked)} batch(es) failed, lost or retried")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Timeline({self.title!r}, batches={len(self.records)}, "
                f"seconds={self.seconds:.2f}, workers={len(self.worker_ids())})")

    def name_of(self, worker: int) -> str:
        return self.worker_names.get(worker, f"worker {worker}")

    def as_dict(self) -> dict:
        return {"title": self.title, "backend": self.backend, "unit": self.unit,
                "records": [vars(r) for r in self.records]}

    # -- pictures
    def to_svg(self, width: int = 960) -> str:
        return _svg(self, width)

    def to_html(self) -> str:
        """A self-contained HTML page: the summary and the SVG, no scripts."""
        body = self._html_fragment()
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)} timeline</title></head>"
                f"<body style='font-family:sans-serif;background:#fff'>{body}</body></html>")

    def _html_fragment(self) -> str:
        summary = html.escape(self.summary())
        return (f"<div class='slicewise-timeline'><pre style='font-size:12px'>{summary}</pre>"
                f"{self.to_svg()}</div>")

    def _repr_html_(self) -> str:
        return self._html_fragment()

    def to_png(self, width: int = 960):
        """A Pillow image of the same picture."""
        return _png(self, width)

    def save(self, path: str | Path) -> Path:
        """Write `path`: an HTML page for .html/.htm, a PNG for .png. Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".html", ".htm"):
            path.write_text(self.to_html(), encoding="utf-8")
        elif suffix == ".png":
            self.to_png().save(path)
        else:
            raise ValueError(f"a timeline is saved as .html or .png, not {path.name!r}")
        return path


# -- layout shared by SVG and PNG ---------------------------------------------------------
LEFT, TOP, ROW, GAP, PLOT = 110, 40, 22, 4, 90


def _layout(timeline: Timeline, width: int) -> dict:
    workers = timeline.worker_ids() or [0]
    total = timeline.seconds or 1.0
    inner = width - LEFT - 20
    gantt_h = len(workers) * ROW
    plot_top = TOP + gantt_h + 40
    return {
        "workers": workers,
        "row_of": {w: i for i, w in enumerate(workers)},
        "x": lambda t: LEFT + inner * t / total,
        "inner": inner,
        "total": total,
        "gantt_h": gantt_h,
        "plot_top": plot_top,
        "height": plot_top + PLOT + 40,
    }


def _ticks(total: float) -> list[float]:
    import math

    raw = total / 6
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    return [i * step for i in range(int(total / step) + 1)]


def _rgb(color: tuple[int, int, int]) -> str:
    return f"rgb({color[0]},{color[1]},{color[2]})"


def _svg(timeline: Timeline, width: int) -> str:
    lay = _layout(timeline, width)
    x, h = lay["x"], lay["height"]
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{h}' "
           f"viewBox='0 0 {width} {h}' font-family='sans-serif' font-size='11'>",
           f"<rect width='{width}' height='{h}' fill='white'/>",
           f"<text x='{LEFT}' y='18' font-size='13' font-weight='bold'>"
           f"{html.escape(timeline.title)}: batches per worker</text>"]
    for worker, row in lay["row_of"].items():
        y = TOP + row * ROW
        out.append(f"<text x='{LEFT - 6}' y='{y + ROW / 2 + 4}' text-anchor='end'>"
                   f"{html.escape(timeline.name_of(worker))}</text>")
        out.append(f"<rect x='{LEFT}' y='{y}' width='{lay['inner']}' height='{ROW - GAP}' "
                   "fill='#f2f2f2'/>")
    for worker, t0, t1 in timeline.idle_gaps():
        y = TOP + lay["row_of"][worker] * ROW
        out.append(f"<rect class='idle' x='{x(t0):.1f}' y='{y + ROW / 2 - 1}' "
                   f"width='{max(x(t1) - x(t0), 1):.1f}' height='2' fill='#d9a0a0'>"
                   f"<title>idle {t1 - t0:.3f} s</title></rect>")
    for r in timeline.records:
        y = TOP + lay["row_of"][r.worker] * ROW
        color = _rgb(COLORS.get(r.outcome, COLORS["ok"]))
        edge = f" stroke='{_rgb(RETRY_EDGE)}' stroke-width='2'" if r.retry else ""
        tip = (f"{timeline.unit} {r.start}..{r.start + r.size - 1}: {r.outcome}, "
               f"{r.seconds * 1000:.1f} ms" + (f", {r.failures} failed" if r.failures else "")
               + (", retry" if r.retry else ""))
        out.append(f"<rect class='batch {r.outcome}' x='{x(r.t0):.2f}' y='{y}' "
                   f"width='{max(x(r.t1) - x(r.t0), 0.8):.2f}' height='{ROW - GAP}' "
                   f"fill='{color}'{edge}><title>{html.escape(tip)}</title></rect>")
    axis_y = TOP + lay["gantt_h"] + 4
    for t in _ticks(lay["total"]):
        out.append(f"<text x='{x(t):.1f}' y='{axis_y + 12}' text-anchor='middle' "
                   f"fill='#555'>{t:g}s</text>")
    points = timeline.throughput()
    top = lay["plot_top"]
    peak = max((v for _, v in points), default=0.0) or 1.0
    out.append(f"<text x='{LEFT}' y='{top - 8}' font-weight='bold'>throughput "
               f"({html.escape(timeline.unit)}/s, peak {peak:,.0f})</text>")
    out.append(f"<rect x='{LEFT}' y='{top}' width='{lay['inner']}' height='{PLOT}' "
               "fill='none' stroke='#ccc'/>")
    if points:
        width_bin = lay["total"] / len(points)
        path = " ".join(f"{x(t0):.1f},{top + PLOT - PLOT * v / peak:.1f} "
                        f"{x(t0 + width_bin):.1f},{top + PLOT - PLOT * v / peak:.1f}"
                        for t0, v in points)
        out.append(f"<polyline class='throughput' points='{path}' fill='none' "
                   "stroke='#2a7' stroke-width='2'/>")
    legend_y = top + PLOT + 24
    at = LEFT
    for name in ("ok", "failed", "lost", "timeout", "requeued"):
        out.append(f"<rect x='{at}' y='{legend_y - 9}' width='10' height='10' "
                   f"fill='{_rgb(COLORS[name])}'/>")
        out.append(f"<text x='{at + 14}' y='{legend_y}'>{name}</text>")
        at += 80
    out.append(f"<rect x='{at}' y='{legend_y - 9}' width='10' height='10' fill='white' "
               f"stroke='{_rgb(RETRY_EDGE)}' stroke-width='2'/>")
    out.append(f"<text x='{at + 14}' y='{legend_y}'>retry</text>")
    out.append(f"<rect x='{at + 80}' y='{legend_y - 5}' width='10' height='2' fill='#d9a0a0'/>"
               f"<text x='{at + 94}' y='{legend_y}'>idle</text>")
    out.append("</svg>")
    return "\n".join(out)


def font(size: int = 11):
    """Pillow's default font at `size` (a scalable one where Pillow has FreeType); the
    sample grids (integrations/pictures.py) use it too."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _png(timeline: Timeline, width: int):
    from PIL import Image, ImageDraw

    lay = _layout(timeline, width)
    x = lay["x"]
    image = Image.new("RGB", (width, lay["height"]), "white")
    draw = ImageDraw.Draw(image)
    small, bold = font(11), font(13)
    draw.text((LEFT, 6), f"{timeline.title}: batches per worker", fill="black", font=bold)
    for worker, row in lay["row_of"].items():
        y = TOP + row * ROW
        name = timeline.name_of(worker)
        draw.text((LEFT - 6, y + ROW / 2 - 2), name, fill="black", font=small, anchor="rm")
        draw.rectangle((LEFT, y, LEFT + lay["inner"], y + ROW - GAP), fill=(242, 242, 242))
    for worker, t0, t1 in timeline.idle_gaps():
        y = TOP + lay["row_of"][worker] * ROW + ROW / 2 - 1
        draw.rectangle((x(t0), y, max(x(t1), x(t0) + 1), y + 1), fill=(217, 160, 160))
    for r in timeline.records:
        y = TOP + lay["row_of"][r.worker] * ROW
        box = (x(r.t0), y, max(x(r.t1), x(r.t0) + 1), y + ROW - GAP)
        draw.rectangle(box, fill=COLORS.get(r.outcome, COLORS["ok"]),
                       outline=RETRY_EDGE if r.retry else (255, 255, 255), width=2 if r.retry else 1)
    axis_y = TOP + lay["gantt_h"] + 4
    for t in _ticks(lay["total"]):
        draw.text((x(t), axis_y + 6), f"{t:g}s", fill=(85, 85, 85), font=small, anchor="mm")
    top = lay["plot_top"]
    points = timeline.throughput()
    peak = max((v for _, v in points), default=0.0) or 1.0
    draw.text((LEFT, top - 18), f"throughput ({timeline.unit}/s, peak {peak:,.0f})",
              fill="black", font=small)
    draw.rectangle((LEFT, top, LEFT + lay["inner"], top + PLOT), outline=(204, 204, 204))
    if points:
        width_bin = lay["total"] / len(points)
        line = []
        for t0, v in points:
            y = top + PLOT - PLOT * v / peak
            line += [(x(t0), y), (x(t0 + width_bin), y)]
        draw.line(line, fill=(34, 170, 119), width=2)
    legend_y = top + PLOT + 16
    at = LEFT
    for name in ("ok", "failed", "lost", "timeout", "requeued"):
        draw.rectangle((at, legend_y, at + 10, legend_y + 10), fill=COLORS[name])
        draw.text((at + 14, legend_y - 1), name, fill="black", font=small)
        at += 80
    draw.rectangle((at, legend_y, at + 10, legend_y + 10), outline=RETRY_EDGE, width=2)
    draw.text((at + 14, legend_y - 1), "retry", fill="black", font=small)
    return image
