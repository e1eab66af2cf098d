"""Pictures of a dataset: a grid of samples (`ds.show()`, `slicewise show DATASET`).

    grid = ds.show(rows=range(16))             # a Grid: .image (Pillow), .to_html()
    ds.show(random=16, out="grid.png")          # or "grid.html" (self-contained)

Each shown row is one cell: its number, one picture per picturable tensor, and captions.

    image tensors       a thumbnail; the first one carries the overlays:
    bbox tensors          boxes (coords from the tensor's htype kwargs: LTWH pixels by
                          default, LTRB/CCWH, fractional)
    mask tensors          2-D (or H x W x N) arrays whose name says "mask" and whose
                          shape matches the image: a translucent colour
    class_label         its class names, as a caption
    arrays              2-D and 3-D: drawn as an image (scaled to 0..255); 1-D: a small
                        line plot; a few numbers: a caption
    text, json          a caption (shortened)

Only the rows shown are read (one sample per tensor and row); a dataset on S3 or any
fsspec storage works the same. Pictures are Pillow images; nothing else is needed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random as _random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slicewise.engine.timeline import font

THUMB = 128
PAD = 6
LINE = 14
MAX_CAPTION = 40
OVERLAY_COLORS = [(255, 64, 64), (64, 220, 64), (64, 128, 255), (255, 200, 0),
                  (220, 64, 220), (0, 220, 220)]


@dataclass
class Panel:
    tensor: str
    image: Any  # a PIL image, at most THUMB x THUMB


@dataclass
class Cell:
    """One row of the dataset: its pictures and its captions (tensor, text)."""

    row: int
    panels: list[Panel] = field(default_factory=list)
    captions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Grid:
    """The pictures of some rows: `cells` (one per row), `image` (the whole grid, a
    Pillow image), `to_html()` (a self-contained page), `save(path)` (.png or .html)."""

    cells: list[Cell]
    title: str = ""
    thumb: int = THUMB
    cols: int = 4

    @property
    def rows(self) -> list[int]:
        return [cell.row for cell in self.cells]

    @property
    def image(self):
        return _compose(self)

    def to_html(self, full_page: bool = True) -> str:
        body = _grid_html(self)
        if not full_page:
            return body
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title></head>"
                f"<body style='font-family:sans-serif'>{body}</body></html>")

    def _repr_html_(self) -> str:
        return self.to_html(full_page=False)

    def save(self, path: str | Path) -> Path:
        """Write the grid as PNG (.png) or a self-contained HTML page (.html, .htm)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".png":
            self.image.save(path)
        elif suffix in (".html", ".htm"):
            path.write_text(self.to_html(), encoding="utf-8")
        else:
            raise ValueError(f"show() writes .png or .html files, not {path.name!r}")
        return path

    def __repr__(self) -> str:
        return f"Grid({self.title!r}, rows={self.rows})"


# -- choosing rows and tensors -------------------------------------------------------------
def parse_rows(spec: Any, length: int) -> list[int]:
    """Rows to show: None (the first 16), an int n (the first n), "a:b" / slice / range,
    or a list of row numbers (negative ones count from the end)."""
    if spec is None:
        return list(range(min(16, length)))
    if isinstance(spec, str):
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            return list(range(length)[slice(*parts)])
        spec = int(spec)
    if isinstance(spec, (int, np.integer)):
        return list(range(min(int(spec), length)))
    if isinstance(spec, slice):
        return list(range(length)[spec])
    rows = [int(r) for r in spec]
    for r in rows:
        if not -length <= r < length:
            raise IndexError(f"row {r} out of range for a dataset of {length} rows")
    return [r % length for r in rows]


def _kind(tensor) -> str:
    htype = tensor.htype
    if htype.startswith("image"):
        return "image"
    if htype in ("class_label", "bbox", "text", "json"):
        return htype
    if htype in ("binary_mask", "segment_mask") or "mask" in tensor.name.lower():
        return "mask"
    return "array"


def show(dataset, rows: Any = None, tensors: Any = None, out: str | Path | None = None, *,
         random: int | None = None, seed: int | None = None, thumb: int = THUMB,
         cols: int | None = None) -> Grid:
    """`Dataset.show`: a Grid of `rows` (see parse_rows), or of `random` rows picked at
    random (`seed` for the same pick), with `tensors` (names; default: all); written to
    `out` when given (.png or .html)."""
    length = len(dataset)
    if random is not None:
        if rows is not None:
            raise ValueError("show() takes rows= or random=, not both")
        rng = _random.Random(seed)
        picked = sorted(rng.sample(range(length), k=min(int(random), length)))
    else:
        picked = parse_rows(rows, length)
    every = dataset.tensors
    if tensors is None:
        names = list(every)
    else:
        names = [tensors] if isinstance(tensors, str) else list(tensors)
        unknown = [n for n in names if n not in every]
        if unknown:
            raise KeyError(f"no tensor(s) {unknown} in {dataset.path}; tensors: {list(every)}")
    chosen = {name: every[name] for name in names}
    cells = [render_row(chosen, row, thumb) for row in picked]
    if cols is None:
        cols = max(1, min(len(cells), 8 if max((len(c.panels) for c in cells), default=1) <= 1
                          else 4))
    grid = Grid(cells, title=f"{dataset.path} @ {dataset.version}", thumb=thumb, cols=cols)
    if out is not None:
        grid.save(out)
    return grid


def render_row(tensors: dict, row: int, thumb: int = THUMB) -> Cell:
    """One Cell: pictures and captions of `row` of each tensor in `tensors`."""
    cell = Cell(row)
    kinds = {name: _kind(t) for name, t in tensors.items()}
    first_image = next((n for n, k in kinds.items() if k == "image"), None)
    for name, tensor in tensors.items():
        kind = kinds[name]
        if row >= len(tensor):
            continue
        if kind == "image":
            image = _pil_image(tensor, row)
            if name == first_image:
                image = _overlay(image, tensors, kinds, row)
            cell.panels.append(Panel(name, _fit(image, thumb)))
        elif kind == "class_label":
            cell.captions.append((name, _label_text(tensor, row)))
        elif kind == "text":
            cell.captions.append((name, _short(str(tensor[row].data()["value"]))))
        elif kind == "json":
            value = tensor[row].data()["value"]
            cell.captions.append((name, _short(json.dumps(value, sort_keys=True,
                                                          default=str))))
        elif kind in ("bbox", "mask") and first_image is not None:
            continue  # drawn on the image
        else:
            array = np.asarray(tensor[row].numpy())
            picture = array_picture(array, thumb)
            if picture is None:
                cell.captions.append((name, _short(_numbers(array))))
            else:
                cell.panels.append(Panel(name, picture))
    return cell


# -- samples into pictures -------------------------------------------------------------------
def _pil_image(tensor, row: int):
    from PIL import Image

    array = np.asarray(tensor[row].numpy())
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        array = _to_uint8(array)
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        array = array[..., 0]
    image = Image.fromarray(array)
    return image.convert("RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return np.zeros(array.shape, dtype=np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    scaled = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return (np.nan_to_num(scaled) * 255).clip(0, 255).astype(np.uint8)


def array_picture(array: np.ndarray, thumb: int = THUMB):
    """A Pillow picture of an array sample: an image for 2-D and 3-D arrays, a line plot
    for 1-D ones of more than 4 numbers; None when a caption says it better."""
    from PIL import Image

    if array.dtype == object or array.dtype.kind in "USO":
        return None
    if array.ndim >= 2 and min(array.shape[:2]) >= 2:
        if array.ndim > 3:
            array = array.reshape(*array.shape[:2], -1)
        if array.ndim == 3 and array.shape[-1] not in (1, 3, 4):
            array = array[..., 0]
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(_to_uint8(array) if array.dtype != np.uint8 else array)
        return _fit(image.convert("RGB"), thumb)
    flat = array.reshape(-1)
    if flat.size > 4 and flat.dtype.kind in "biuf":
        return _plot(flat.astype(np.float64), thumb)
    return None


def _plot(values: np.ndarray, thumb: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (thumb, thumb), "white")
    draw = ImageDraw.Draw(image)
    finite = np.nan_to_num(values)
    lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo or 1.0
    margin = 6
    n = len(finite)
    points = [(margin + (thumb - 2 * margin) * i / max(n - 1, 1),
               thumb - margin - (thumb - 2 * margin) * (v - lo) / span)
              for i, v in enumerate(finite.tolist())]
    draw.rectangle((0, 0, thumb - 1, thumb - 1), outline=(200, 200, 200))
    draw.line(points, fill=(40, 90, 200), width=2)
    draw.text((margin, 2), f"{hi:.3g}", fill=(90, 90, 90), font=font(9))
    draw.text((margin, thumb - 12), f"{lo:.3g}", fill=(90, 90, 90), font=font(9))
    return image


def _fit(image, thumb: int):
    image = image.copy()
    if image.width > thumb or image.height > thumb:
        image.thumbnail((thumb, thumb))
    elif max(image.size) < thumb // 2:  # tiny samples: scaled up, pixels kept sharp
        from PIL import Image

        factor = max(1, thumb // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image


def _overlay(image, tensors: dict, kinds: dict, row: int):
    from PIL import Image, ImageDraw

    color_at = 0
    for name, kind in kinds.items():
        tensor = tensors[name]
        if kind == "mask" and row < len(tensor):
            mask = np.asarray(tensor[row].numpy())
            layers = [mask] if mask.ndim == 2 else [mask[..., i] for i in range(mask.shape[-1])] \
                if mask.ndim == 3 else []
            for layer in layers:
                if layer.shape != (image.height, image.width):
                    continue
                color = OVERLAY_COLORS[color_at % len(OVERLAY_COLORS)]
                color_at += 1
                alpha = Image.fromarray(((layer != 0) * 110).astype(np.uint8))
                image = Image.composite(Image.new("RGB", image.size, color), image, alpha)
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / THUMB * 1.5))
    for name, kind in kinds.items():
        tensor = tensors[name]
        if kind != "bbox" or row >= len(tensor):
            continue
        boxes = np.asarray(tensor[row].numpy(), dtype=np.float64).reshape(-1, 4)
        coords = (tensor.meta.htype_kwargs or {}).get("coords") or {}
        for i, box in enumerate(boxes):
            left, top, right, bottom = _box(box, coords, image.size)
            color = OVERLAY_COLORS[(color_at + i) % len(OVERLAY_COLORS)]
            draw.rectangle((left, top, right, bottom), outline=color, width=width)
    return image


def _box(box: np.ndarray, coords: dict, size: tuple[int, int]) -> tuple[float, ...]:
    """(left, top, right, bottom) in pixels from Deep Lake 3's bbox coords."""
    a, b, c, d = (float(v) for v in box)
    mode = str(coords.get("mode", "LTWH")).upper()
    if mode == "LTRB":
        left, top, right, bottom = a, b, c, d
    elif mode == "CCWH":
        left, top, right, bottom = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:  # LTWH
        left, top, right, bottom = a, b, a + c, b + d
    if coords.get("type") == "fractional":
        w, h = size
        left, right, top, bottom = left * w, right * w, top * h, bottom * h
    return left, top, max(right, left), max(bottom, top)


def _label_text(tensor, row: int) -> str:
    ids = np.asarray(tensor[row].numpy()).reshape(-1)
    names = list(tensor.meta.class_names or [])
    return ", ".join(names[int(i)] if 0 <= int(i) < len(names) else str(int(i)) for i in ids)


def _numbers(array: np.ndarray) -> str:
    if array.size == 1:
        value = array.reshape(-1)[0]
        return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
    return np.array2string(array.reshape(-1), precision=3, separator=", ", threshold=6)


def _short(text: str, limit: int = MAX_CAPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the grid as one picture, and as HTML ----------------------------------------------------
def _cell_size(grid: Grid) -> tuple[int, int]:
    panels = max((len(c.panels) for c in grid.cells), default=0)
    lines = max((len(c.captions) for c in grid.cells), default=0) + 1
    width = max(1, panels) * (grid.thumb + PAD) + PAD
    height = (grid.thumb + PAD if panels else 0) + lines * LINE + PAD
    return width, height


def _compose(grid: Grid):
    from PIL import Image, ImageDraw

    cols = max(1, min(grid.cols, len(grid.cells)))
    rows = max(1, -(-len(grid.cells) // cols))
    cell_w, cell_h = _cell_size(grid)
    title_h = 22 if grid.title else 0
    image = Image.new("RGB", (cols * cell_w + PAD, rows * cell_h + PAD + title_h), "white")
    draw = ImageDraw.Draw(image)
    text_font = font(11)
    if grid.title:
        draw.text((PAD, 4), grid.title, fill=(60, 60, 60), font=font(12))
    for k, cell in enumerate(grid.cells):
        x0 = PAD + (k % cols) * cell_w
        y0 = title_h + PAD + (k // cols) * cell_h
        draw.rectangle((x0, y0, x0 + cell_w - PAD, y0 + cell_h - PAD), fill=(246, 246, 246))
        for i, panel in enumerate(cell.panels):
            px = x0 + PAD // 2 + i * (grid.thumb + PAD) + (grid.thumb - panel.image.width) // 2
            py = y0 + PAD // 2 + (grid.thumb - panel.image.height) // 2
            image.paste(panel.image, (px, py))
        ty = y0 + (grid.thumb + PAD if cell.panels else PAD // 2)
        draw.text((x0 + 3, ty), f"#{cell.row}", fill=(0, 0, 0), font=text_font)
        for j, (name, text) in enumerate(cell.captions):
            draw.text((x0 + 3, ty + (j + 1) * LINE), _fit_text(draw, f"{name}: {text}",
                                                                cell_w - 8, text_font),
                      fill=(30, 30, 120), font=text_font)
    return image


def _fit_text(draw, text: str, width: int, text_font) -> str:
    while len(text) > 4 and draw.textlength(text, font=text_font) > width:
        text = text[:-2] + "…"
    return text


def png_data_uri(image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _grid_html(grid: Grid) -> str:
    out = [f"<div class='slicewise-grid' data-title='{html.escape(grid.title)}' "
           "style='display:flex;flex-wrap:wrap;gap:6px'>"]
    for cell in grid.cells:
        out.append(f"<figure class='sw-cell' data-row='{cell.row}' style='margin:0;"
                   "padding:4px;background:#f6f6f6;font-size:11px'>")
        for panel in cell.panels:
            out.append(f"<img class='sw-thumb' data-tensor='{html.escape(panel.tensor)}' "
                       f"width='{panel.image.width}' height='{panel.image.height}' "
                       f"alt='{html.escape(panel.tensor)} row {cell.row}' "
                       f"src='{png_data_uri(panel.image)}' style='margin:1px'>")
        out.append(f"<figcaption><b class='sw-row'>#{cell.row}</b>")
        for name, text in cell.captions:
            out.append(f"<div class='sw-caption' data-tensor='{html.escape(name)}'>"
                       f"{html.escape(name)}: <span>{html.escape(text)}</span></div>")
        out.append("</figcaption></figure>")
    out.append("</div>")
    return "".join(out)
