"""Backends: processes (default), threads, serial, and the cluster backends dask and ray
(both over cluster.py). See base.py for the interface; BACKENDS maps names to classes."""

from slicewise.engine.backends.base import BACKENDS, Backend, Worker, backend_class

__all__ = ["BACKENDS", "Backend", "Worker", "backend_class"]
