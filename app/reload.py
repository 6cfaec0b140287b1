"""Champion hot-swap: notice that the alias moved, load and check the new version, swap it in.

Each worker runs one :class:`Reloader` task. Every ``MODEL_POLL_SECONDS`` it asks the registry which
version the alias points at (off the event loop). When that differs from the version it serves, it
fetches and checks the new version in a thread (the same checks as at startup, see
:mod:`app.checks`) and only then replaces ``service.model`` in one assignment. A handler takes
``service.model`` once when its request starts, so requests in flight finish on the model they
started with.

A version that fails to load or to pass the checks is logged, counted
(``churn_model_reloads_total{outcome="failed"}``) and not retried until the alias moves again or an
operator asks; the old model keeps serving. A poll the registry does not answer is counted and
logged by :class:`app.registry_health.RegistryHealth` (once per outage, not per poll).

``POST /admin/reload`` (:mod:`app.admin`) runs the same check at once in the worker that received it
and touches a trigger file in the server's shared metrics directory; the other workers look at that
file every second and run the check too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from app import checks, metrics, registry
from app.model import Champion
from app.registry_health import RegistryHealth
from app.settings import Settings

if TYPE_CHECKING:
    from app.service import Service

log = logging.getLogger("churn_api")

TRIGGER_NAME: Final = "reload-request"
TRIGGER_TICK_SECONDS: Final = 1.0


class ReloadResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What one check did: ``swapped``, ``unchanged`` or ``failed`` (then ``detail`` says why)."""

    status: str
    version: str | None
    previous: str | None = None
    detail: str | None = None


class ModelSource(Protocol):
    """Where the champion comes from; every call blocks (the reloader runs them in a thread).

    :class:`RegistrySource` in production; tests pass their own (``tests/support.py``).
    """

    def first(self, settings: Settings) -> Champion | None:
        """The champion a worker starts with (None: it starts without one and answers 503)."""
        ...

    def current_version(self, settings: Settings) -> str: ...

    def load(self, settings: Settings, version: str) -> Champion: ...


class RegistrySource:
    """The MLflow registry: the alias's version, and that exact version fetched and checked."""

    def first(self, settings: Settings) -> Champion:
        return checks.load_champion(settings)

    def current_version(self, settings: Settings) -> str:
        return registry.resolve(settings)[0]

    def load(self, settings: Settings, version: str) -> Champion:
        return checks.check(registry.fetch(settings, version), settings)


class Reloader:
    def __init__(
        self,
        service: Service,
        source: ModelSource,
        *,
        poll_seconds: float,
        trigger: Path | None,
    ) -> None:
        self.service = service
        self.source = source
        self.poll_seconds = poll_seconds
        self.trigger = trigger
        self._lock = asyncio.Lock()
        self._rejected: str | None = None
        self._trigger_seen = _mtime(trigger)
        self.health = RegistryHealth(service.settings.metrics_dir)
        if service.model is not None:
            self.health.loaded()

    @property
    def settings(self) -> Settings:
        return self.service.settings

    async def check(self, *, force: bool = False) -> ReloadResult:
        """Load and swap in the alias's version if it is not the one served.

        ``force`` retries a version that failed before (an operator asked).
        """
        async with self._lock:
            return await self._check(force)

    async def _check(self, force: bool) -> ReloadResult:
        served = self.service.model
        previous = served.version if served is not None else None
        asked_at = time.time()
        try:
            version = await asyncio.to_thread(self.source.current_version, self.settings)
        except Exception as exc:  # noqa: BLE001 - any registry failure: keep serving, say why
            # Counted and logged once per outage by RegistryHealth, not as a failed reload.
            self.health.failed(previous, _reason(exc), asked_at)
            detail = f"cannot resolve the alias: {_reason(exc)}"
            return ReloadResult("failed", previous, detail=detail)
        self.health.answered(previous)
        if version == previous:
            return ReloadResult("unchanged", version)
        if version == self._rejected and not force:
            return ReloadResult("failed", previous, detail=f"version {version} was rejected")
        try:
            candidate = await asyncio.to_thread(self.source.load, self.settings, version)
        except Exception as exc:  # noqa: BLE001 - a bad candidate must never stop the worker
            self._rejected = version
            return self._failed(previous, version, f"version {version}: {_reason(exc)}")
        self.service.model = candidate  # the swap: one assignment, seen by the next request
        self._rejected = None
        if served is not None:
            metrics.model_unloaded(served.name, served.version, served.alias)
        metrics.model_loaded(
            candidate.name, candidate.version, candidate.alias, candidate.load_seconds
        )
        metrics.reload_outcome("swapped")
        log.info(
            "swapped in %s version %s (was %s, %.2fs to load and check)",
            candidate.name,
            candidate.version,
            previous,
            candidate.load_seconds,
            extra={"model_version": candidate.version, "previous_version": previous},
        )
        return ReloadResult("swapped", candidate.version, previous=previous)

    def _failed(self, previous: str | None, candidate: str | None, detail: str) -> ReloadResult:
        metrics.reload_outcome("failed")
        log.error(
            "champion reload failed, still serving version %s: %s",
            previous,
            detail,
            extra={"model_version": previous, "candidate_version": candidate},
        )
        return ReloadResult("failed", previous, detail=detail)

    def request_everywhere(self) -> None:
        """Ask the other workers of this server to check now (see the module docstring)."""
        if self.trigger is None:
            return
        self.trigger.write_text(f"{os.getpid()} {time.time_ns()}\n")
        self._trigger_seen = _mtime(self.trigger)

    async def run(self) -> None:
        """The per-worker loop: poll the alias, and answer other workers' trigger touches."""
        polling = self.poll_seconds > 0
        if not polling and self.trigger is None:
            return
        tick = TRIGGER_TICK_SECONDS if self.trigger is not None else self.poll_seconds
        if polling:
            tick = min(tick, self.poll_seconds)
        next_poll = time.monotonic() + self.poll_seconds
        while True:
            await asyncio.sleep(tick)
            seen = _mtime(self.trigger)
            requested = seen != self._trigger_seen
            self._trigger_seen = seen
            if requested or (polling and time.monotonic() >= next_poll):
                next_poll = time.monotonic() + self.poll_seconds
                await self.check(force=requested)


def trigger_path(directory: str | None) -> Path | None:
    """The reload trigger in the server's shared metrics directory, when there is one."""
    return Path(directory) / TRIGGER_NAME if directory else None


def _mtime(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
