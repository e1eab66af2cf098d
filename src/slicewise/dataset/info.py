"""InfoDict: the `info` of a tensor or a dataset, a dict whose changes are written.

    tensor.info.update(k=v) / ds.info[k] = v --write(changes, replace)--> a new version
                                               (or the open `with` block's)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class InfoDict(dict):
    """An `info` dict (`tensor.info`, `ds.info`): attribute access, and update() (or
    `info[key] = value`) hands the changes to `write(changes, replace)`, which writes a new
    version or joins the open `with` block; `del info[key]` writes the rest with
    replace=True."""

    def __init__(self, data: dict, write: Callable[[dict, bool], None]):
        super().__init__(data)
        self._write = write

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def update(self, *args, **kwargs) -> None:  # type: ignore[override]
        changes = dict(*args, **kwargs)
        self._write(changes, False)
        super().update(changes)

    def __setitem__(self, key, value) -> None:
        self.update({key: value})

    def __delitem__(self, key) -> None:
        rest = dict(self)
        del rest[key]
        self._write(rest, True)
        super().__delitem__(key)
