"""Whether the registry answers the alias poll: counted, timed, and one log line per outage.

Every worker polls the registry (:class:`app.reload.Reloader`) and reports each poll here. A failed
poll is counted (``churn_registry_polls_total{outcome="failed"}``), a successful one sets
``churn_registry_last_success_timestamp_seconds`` (age in PromQL: ``time() - max(...)``). The
service keeps serving the model in hand either way.

An outage is logged once per server, not once per poll and worker: the first worker to see a
failure creates a marker file in the server's shared metrics directory (``O_EXCL``: only one
succeeds) and logs the ``warning``; the first to see the registry answer again removes it (only
one ``unlink`` succeeds) and logs the recovery. A failure of a poll that started before another
worker's last successful poll is stale and declares nothing. Without a shared directory (one
process) the same happens in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Final

from prometheus_client import Counter, Gauge

log = logging.getLogger("churn_api")

OUTAGE_NAME: Final = "registry-outage"
ANSWERED_NAME: Final = "registry-answered"

POLLS: Final = Counter(
    "churn_registry_polls_total",
    "Registry polls for the alias's version, by outcome: answered, or failed (model kept).",
    ["outcome"],
)
LAST_SUCCESS: Final = Gauge(
    "churn_registry_last_success_timestamp_seconds",
    "Unix time the registry last answered a worker (the champion's load or an alias poll).",
    multiprocess_mode="livemax",
)


class RegistryHealth:
    """One worker's view of the registry, with the outage lines shared by the whole server."""

    def __init__(self, directory: str | None = None) -> None:
        shared = Path(directory) if directory else None
        self._outage = shared / OUTAGE_NAME if shared else None
        self._answered = shared / ANSWERED_NAME if shared else None
        self._down_since: float | None = None  # without a shared directory

    def loaded(self) -> None:
        """The champion was just loaded from the registry: it answered."""
        LAST_SUCCESS.set(time.time())

    def answered(self, served: str | None) -> None:
        POLLS.labels("answered").inc()
        now = time.time()
        LAST_SUCCESS.set(now)
        if self._answered is not None:
            with contextlib.suppress(OSError):
                self._answered.touch()
        since = self._end_outage()
        if since is not None:
            log.info(
                "registry answers again after %.0fs, still serving version %s",
                now - since,
                served,
                extra={"model_version": served, "outage_seconds": round(now - since, 1)},
            )

    def failed(self, served: str | None, reason: str, poll_started: float) -> None:
        """A poll that started at ``poll_started`` (Unix time) failed for ``reason``."""
        POLLS.labels("failed").inc()
        if self._answered_since(poll_started) or not self._start_outage(poll_started):
            return
        log.warning(
            "registry unreachable, still serving version %s (hot-swap paused, polling on): %s",
            served,
            reason,
            extra={"model_version": served},
        )

    def _answered_since(self, moment: float) -> bool:
        if self._answered is None:
            return False
        try:
            return self._answered.stat().st_mtime > moment
        except OSError:
            return False

    def _start_outage(self, since: float) -> bool:
        """True for the one caller that starts the outage (and logs it)."""
        if self._outage is None:
            if self._down_since is not None:
                return False
            self._down_since = since
            return True
        for _ in range(2):  # a marker left by an earlier server is replaced once
            try:
                fd = os.open(self._outage, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _marker(self._outage)[0]
                if owner is None or owner == os.getppid():  # ours, or being written right now
                    return False
                with contextlib.suppress(OSError):
                    self._outage.unlink()
                continue
            except OSError:
                return False
            with os.fdopen(fd, "w") as marker:
                marker.write(f"{os.getppid()} {since}\n")
            return True
        return False

    def _end_outage(self) -> float | None:
        """The outage's start for the one caller that ends it (and logs it), else None."""
        if self._outage is None:
            since, self._down_since = self._down_since, None
            return since
        server, since = _marker(self._outage)
        try:
            self._outage.unlink()
        except OSError:
            return None
        return since if server == os.getppid() else None  # another server's marker: silent


def _marker(path: Path) -> tuple[int | None, float | None]:
    """The server process id and the outage's start written in a marker file."""
    try:
        server, since = path.read_text().split()
        return int(server), float(since)
    except (OSError, ValueError):
        return None, None
