"""Notebook views: the HTML Jupyter shows for a Dataset, Tensor, Group, row view and
the run reports (`_repr_html_`). Self-contained: inline styles, thumbnails as base64
JPEG, no scripts. Only what is shown is read (a few rows of each image tensor)."""

from __future__ import annotations

import html
from typing import Any

STRIP = 8  # thumbnails in an image tensor's strip
STRIP_SIZE = 64
TABLE = ("<table class='{cls}' style='border-collapse:collapse;font-size:12px'>"
         "<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
CELL = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(cls: str, head: list[str], rows: list[list[str]]) -> str:
    head_html = "".join(f"<th style='{CELL}'>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td style='{CELL}'>{c}</td>" for c in row) + "</tr>"
                   for row in rows)
    return TABLE.format(cls=cls, head=head_html, body=body)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def tensor_nbytes(tensor) -> int:
    """Stored bytes of a tensor's chunks (from the manifest: nothing is read)."""
    try:
        return int(sum(tensor._state.nbytes))
    except Exception:  # an old manifest without sizes
        return 0


def thumbnail_strip(tensor, count: int = STRIP, size: int = STRIP_SIZE) -> str:
    """Up to `count` thumbnails of the first rows of an image tensor, inline JPEG."""
    from slicewise.integrations.pictures import _fit, _pil_image, png_data_uri

    out = []
    for row in range(min(count, len(tensor))):
        try:
            image = _fit(_pil_image(tensor, row), size)
        except Exception as exc:  # a picture must never break the view
            out.append(f"<span title='{_esc(exc)}'>?</span>")
            continue
        out.append(f"<img class='sw-strip' data-row='{row}' width='{image.width}' "
                   f"height='{image.height}' alt='row {row}' "
                   f"src='{png_data_uri(image, 'JPEG')}' style='margin:1px'>")
    return f"<div class='sw-strip-row' data-tensor='{_esc(tensor.name)}'>{''.join(out)}</div>"


def _tensor_row(name: str, tensor) -> list[str]:
    comp = tensor.sample_compression or tensor.chunk_compression or "None"
    return [f"<b>{_esc(name)}</b>", _esc(tensor.htype), _esc(tensor.shape),
            _esc(tensor.meta.dtype), _esc(comp), _esc(human_bytes(tensor_nbytes(tensor)))]


def _tensors_table(tensors: dict) -> str:
    head = ["tensor", "htype", "shape", "dtype", "compression", "size"]
    rows = [_tensor_row(name, t) for name, t in tensors.items()]
    strips = [f"<div style='font-size:11px;margin-top:6px'>{_esc(name)}</div>"
              + thumbnail_strip(t) for name, t in tensors.items()
              if t.htype.startswith("image") and len(t)]
    return _table("sw-tensors", head, rows) + "".join(strips)


def dataset_html(ds) -> str:
    """A dataset: path, version, rows; its tensors; thumbnails; the newest versions."""
    title = (f"<div style='font-weight:bold'>Dataset {_esc(ds.path)}</div>"
             f"<div style='font-size:12px;color:#555'>version <code>{_esc(ds.version)}"
             f"</code> · {len(ds)} rows · {len(ds.tensors)} tensors"
             f"{' · read-only' if ds.read_only else ''}</div>")
    log_rows = []
    try:
        entries = ds.log()[:5]
    except Exception:
        entries = []
    import datetime

    for entry in entries:
        when = entry.get("time")
        if isinstance(when, (int, float)):
            when = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC")
        log_rows.append([f"<code>{_esc(entry.get('id'))}</code>", _esc(when),
                         _esc(entry.get("message") or "")])
    log = ("<details class='sw-log'><summary style='font-size:12px'>log</summary>"
           + _table("sw-log-table", ["version", "time", "message"], log_rows)
           + "</details>") if log_rows else ""
    return f"<div class='slicewise-dataset'>{title}{_tensors_table(ds.tensors)}{log}</div>"


def tensor_html(tensor) -> str:
    head = ["tensor", "htype", "shape", "dtype", "compression", "size"]
    body = _table("sw-tensors", head, [_tensor_row(tensor.name, tensor)])
    extra = ""
    if tensor.htype.startswith("image") and len(tensor):
        extra = thumbnail_strip(tensor)
    elif tensor.htype == "class_label" and tensor.meta.class_names:
        names = ", ".join(tensor.meta.class_names[:20])
        extra = f"<div style='font-size:12px'>class names: {_esc(names)}</div>"
    return f"<div class='slicewise-tensor'>{body}{extra}</div>"


def group_html(group) -> str:
    title = (f"<div style='font-weight:bold'>Group {_esc(group.group_index)} of "
             f"{_esc(group._dataset.path)}</div>")
    return f"<div class='slicewise-group'>{title}{_tensors_table(group.tensors)}</div>"


def rowview_html(view) -> str:
    """One row: a cell per tensor (pictures and captions); several: a grid (16 at most)."""
    from slicewise.integrations.pictures import Grid, render_row

    tensors = {name: tv.tensor for name, tv in view.tensors.items()}
    rows = [view._single] if view._single is not None else list(view._rows)[:16]
    cells = [render_row(tensors, int(row)) for row in rows]
    more = "" if view._single is not None or len(view._rows) <= 16 else \
        f"<div style='font-size:12px'>... and {len(view._rows) - 16} more rows</div>"
    grid = Grid(cells, title=f"{view._dataset.path}", cols=4)
    return f"<div class='slicewise-rows'>{grid.to_html(full_page=False)}{more}</div>"


def eval_report_html(report) -> str:
    """An EvalReport: figures, per-worker figures, skipped inputs, the timeline."""
    figures = [
        ["pipeline", _esc(" -> ".join(report.pipeline))],
        ["scheduler", _esc(f"{report.scheduler} x {report.num_workers}")],
        ["inputs", _esc(f"{report.inputs_processed} of {report.inputs_total}")],
        ["rows written", _esc(report.rows_written)],
        ["time", _esc(f"{report.seconds:.2f} s ({report.inputs_per_s:,.0f} inputs/s)")],
        ["batches", _esc(report.batches)],
        ["version", f"<code>{_esc(report.version)}</code>"],
    ]
    if report.resumed_from:
        figures.append(["resumed after input", _esc(report.resumed_from)])
    workers = [[_esc(f.worker), _esc(f.batches), _esc(f.inputs), _esc(f.rows),
                _esc(f"{f.busy_s:.2f} s")] for f in sorted(report.workers.values(),
                                                         key=lambda f: f.worker)]
    skipped = [[_esc(s.index), _esc(s.kind), _esc(s.sample), _esc(s.reason)]
               for s in report.skipped[:20]]
    parts = ["<div class='slicewise-report'><div style='font-weight:bold'>eval report</div>",
             _table("sw-figures", ["", ""], figures)]
    if workers:
        parts.append(_table("sw-workers", ["worker", "batches", "inputs", "rows", "busy"],
                            workers))
    if skipped:
        parts.append(f"<div style='font-size:12px;color:#a00'>skipped {len(report.skipped)} "
                     "input(s)</div>")
        parts.append(_table("sw-skipped", ["input", "kind", "sample", "reason"], skipped))
    if getattr(report, "timeline", None) is not None:
        parts.append(report.timeline._repr_html_())
    parts.append("</div>")
    return "".join(parts)

