"""The multiprocess metrics directory: ``GET /metrics`` over every worker's files, and cleanup.

Each worker writes its metric values to files in ``PROMETHEUS_MULTIPROC_DIR``
(``settings.metrics_dir``; prometheus_client reads the variable itself). The exposition adds up
the files of every worker, live or dead; a worker's live gauges (``churn_model_info``) are
dropped when it stops, or, for a killed worker, when the next worker starts.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Final

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from app.tally import TALLY

# Text format 0.0.4 (CONTENT_TYPE_PLAIN_0_0_4), which every Prometheus reads; Litestar adds the
# charset to text media types itself.
_CONTENT_TYPE: Final = "text/plain; version=0.0.4"


def render(path: str | None) -> bytes:
    """The exposition text: every worker's files in ``path`` (multiprocess mode), else this
    process's metrics."""
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_dead_workers(path: str | None) -> list[int]:
    """Drop the live-gauge files of worker processes that no longer exist.

    A worker that stops gracefully does this for itself (:func:`worker_stopped`); one that was
    killed cannot, so every worker calls this when it starts (granian respawns a killed worker, and
    the new one cleans up after it). Counter and histogram files of dead workers stay: their counts
    are part of the totals.
    """
    if path is None:
        return []
    dead = []
    for pid in sorted(_pids(glob.glob(os.path.join(path, "gauge_live*_*.db")))):
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def worker_stopped(path: str | None) -> None:
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _pids(files: Iterable[str]) -> set[int]:
    pids = set()
    for name in files:
        stem = os.path.basename(name).removesuffix(".db")
        _, _, pid = stem.rpartition("_")
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_endpoint(path: str | None) -> HTTPRouteHandler:
    """``GET /metrics``: Prometheus exposition of every worker's metrics (files in ``path``)."""

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        TALLY.flush()
        return Response(render(path), media_type=_CONTENT_TYPE)

    return metrics
