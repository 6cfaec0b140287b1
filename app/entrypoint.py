"""The container's ENTRYPOINT: default the worker count to the CPUs the container may use.

``churn-api serve`` takes its worker count from the ``WORKERS`` setting (default 2, fitting a
laptop, not a container). This sets ``WORKERS`` when it is unset (or empty) to the CPUs this
process may run on, capped by a cgroup CPU quota (``docker run --cpus 2``, a Kubernetes CPU
limit), and then *replaces itself* with the command it was given (``os.execvp``): ``churn-api
serve`` becomes the container's main process (granian's, see :mod:`app.serve`) and gets SIGTERM
itself; nothing of this module stays running. It runs before any setting is read.

    python -m app.entrypoint churn-api serve

An explicit ``WORKERS`` (the Kubernetes manifests set 1) is passed through untouched.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

CGROUP: Path = Path("/sys/fs/cgroup")
WORKERS: Final = "WORKERS"  # the setting (app.settings) this fills in


def available_cpus(cgroup: Path = CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 or v1 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_quota(cgroup)
    count = cpus or 1
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_quota(cgroup: Path) -> float | None:
    """The CPU quota in CPUs (``quota / period``); None when there is none or it is unreadable."""
    try:
        quota, _, period = (cgroup / "cpu.max").read_text().strip().partition(" ")  # cgroup v2
    except OSError:
        try:  # cgroup v1
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def main(argv: Sequence[str]) -> None:
    if not argv:
        print("usage: python -m app.entrypoint COMMAND [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    if not os.environ.get(WORKERS, "").strip():
        workers = available_cpus()
        os.environ[WORKERS] = str(workers)
        print(f"entrypoint: {WORKERS} unset, using {workers} (CPUs available)", flush=True)
    os.execvp(argv[0], list(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
