"""Make `joblib.parallel_backend("slicewise")` work without importing joblib here.

`install()` runs when slicewise is imported. If joblib.parallel is already imported, the
backend is announced to it now; otherwise a finder on sys.meta_path waits for it to be
imported and announces it then (and removes itself). Announcing means one entry in
joblib's EXTERNAL_BACKENDS; joblib calls it, importing slicewise.integrations.
joblib_backend, only when someone asks for the "slicewise" backend."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

_TARGET = "joblib.parallel"


def _register() -> None:
    from slicewise.integrations.joblib_backend import register

    register()


def _announce(module: Any) -> None:
    backends = getattr(module, "EXTERNAL_BACKENDS", None)
    if isinstance(backends, dict):
        backends.setdefault("slicewise", _register)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util

            spec = importlib.util.find_spec(fullname)
        finally:
            pass
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_announce(module: Any) -> None:
            exec_module(module)
            _announce(module)

        loader.exec_module = exec_and_announce  # type: ignore[method-assign]
        return spec


def install() -> None:
    module = sys.modules.get(_TARGET)
    if module is not None:
        _announce(module)
        return
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
