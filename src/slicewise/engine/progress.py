"""The optional progress bar of a map call or an eval: rate and ETA, or nothing.

Which bar (`tqdm_class`): in a Jupyter notebook with ipywidgets installed, tqdm's widget;
everywhere else tqdm's text bar. tqdm.auto would pick the widget in every notebook and,
without ipywidgets, warn "IProgress not found" and fall back to a bar sized for a
terminal; here a notebook without ipywidgets gets a text bar of a fixed width that
redraws in place (a notebook's output honours the carriage return), and no warning.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

NOTEBOOK_TEXT_WIDTH = 100


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell): there is no terminal."""
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return False
    try:
        shell = shell_module.get_ipython()  # type: ignore[attr-defined]
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def has_widgets() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


def tqdm_class(notebook: bool | None = None, widgets: bool | None = None) -> Any:
    """The tqdm class to draw with: the widget bar in a notebook with ipywidgets, else a
    text bar (in a notebook: fixed width, to stdout, never the IProgress warning).
    `notebook` and `widgets` default to what this process has."""
    notebook = in_notebook() if notebook is None else notebook
    if notebook and (has_widgets() if widgets is None else widgets):
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar
    from tqdm.std import tqdm as text_bar

    if not notebook:
        return text_bar

    class NotebookTextBar(text_bar):  # type: ignore[misc, valid-type]
        """tqdm's text bar, sized for a notebook cell, written to its stdout."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("dynamic_ncols", None)
            kwargs.setdefault("ncols", NOTEBOOK_TEXT_WIDTH)
            kwargs.setdefault("file", sys.stdout)
            kwargs.setdefault("ascii", False)
            super().__init__(*args, **kwargs)

    return NotebookTextBar


class Progress:
    """Counts finished items; `progress=True` or a description string turns the bar on."""

    def __init__(self, option: bool | str, total: int | None) -> None:
        self._bar: Any = None
        if option:
            desc = option if isinstance(option, str) else None
            self._bar = tqdm_class()(total=total, desc=desc, unit="item", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
