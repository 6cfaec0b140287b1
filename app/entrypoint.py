"""The container's ENTRYPOINT: default granian's worker count to the CPUs the container may use.

granian reads its worker count from ``GRANIAN_WORKERS`` but defaults to 1 and has no "auto". This
sets ``GRANIAN_WORKERS`` when it is unset (or empty) to the CPUs this process may run on, capped by
a cgroup CPU quota (``docker run --cpus 2``, a Kubernetes CPU limit), and then *replaces itself*
with the command it was given (``os.execvp``): granian (run by :mod:`app.serve`) becomes the
container's main process and gets SIGTERM itself; nothing of this module stays running.

    python -m app.entrypoint python -m app.serve --interface asgi --factory app.main:create_app

An explicit ``GRANIAN_WORKERS`` (the Kubernetes manifests set 1) is passed through untouched.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CGROUP: Path = Path("/sys/fs/cgroup")


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
    if not os.environ.get("GRANIAN_WORKERS", "").strip():
        workers = available_cpus()
        os.environ["GRANIAN_WORKERS"] = str(workers)
        print(f"entrypoint: GRANIAN_WORKERS unset, using {workers} (CPUs available)", flush=True)
    os.execvp(argv[0], list(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
