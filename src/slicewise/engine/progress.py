"""The optional progress bar of a map call: tqdm.auto (rate and ETA), or nothing."""

from __future__ import annotations

from typing import Any


class Progress:
    """Counts finished items; `progress=True` or a description string turns the bar on."""

    def __init__(self, option: bool | str, total: int | None) -> None:
        self._bar: Any = None
        if option:
            from tqdm.auto import tqdm

            desc = option if isinstance(option, str) else None
            self._bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        if self._bar is not None and count:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
