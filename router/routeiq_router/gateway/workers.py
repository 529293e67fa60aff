"""Default worker count: RouteIQ's sizing guidance of workers per CPU and strategy."""

from __future__ import annotations

import math
import os
from pathlib import Path

from routeiq_router.strategies import CpuProfile

__all__ = ["available_cpus", "default_workers"]


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cpus)
    if quota != "max" and int(period) > 0:
        cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def default_workers(profile: CpuProfile, cpus: int) -> int:
    """Simple strategies 2n+1, ELO/MF n+1, MLP/SVM n, KNN max(1, n/2)."""
    match profile:
        case CpuProfile.IO:
            return 2 * cpus + 1
        case CpuProfile.LIGHT:
            return cpus + 1
        case CpuProfile.MODERATE:
            return cpus
        case CpuProfile.HEAVY:
            return max(1, cpus // 2)
