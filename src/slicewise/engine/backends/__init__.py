"""Backends: processes (default), threads, serial. See base.py for the interface."""

from slicewise.engine.backends.base import BACKENDS, Backend, Worker, backend_class

__all__ = ["BACKENDS", "Backend", "Worker", "backend_class"]
