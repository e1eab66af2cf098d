"""How many CPUs this process may really use: affinity mask, then a cgroup CPU quota."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0))
        except OSError:
            pass
    return os.cpu_count() or 1


def _own_cgroup_v2_path() -> str:
    """This process's cgroup v2 path ("0::/user.slice/..." in /proc/self/cgroup)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip().lstrip("/")
    except OSError:
        pass
    return ""


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _cgroup_quota(root: Path = CGROUP_ROOT, own_path: str | None = None) -> float | None:
    """CPUs granted by the tightest cgroup quota on the way from this process's cgroup up
    to the root (v2), or by cgroup v1's cfs quota; None when unlimited or unknown."""
    path = _own_cgroup_v2_path() if own_path is None else own_path
    quotas = []
    directory = root / path if path else root
    while True:
        quota = _v2_quota(directory)
        if quota is not None:
            quotas.append(quota)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    if quotas:
        return min(quotas)
    for v1 in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((root / v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((root / v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    return None


def cpu_count() -> int:
    """The number of CPUs this process can use.

    The affinity mask (`taskset`, container cpusets) capped by a cgroup v1/v2 CPU quota
    (docker `--cpus`), rounded up, at least 1. `sw.Pool()` starts this many workers.

    Returns:
        The usable CPU count (>= 1).

    Example:
        >>> sw.cpu_count() >= 1
        True
    """
    count = _affinity_count()
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
