"""Starting a server whose champion may use native thread pools, and never waiting forever.

An OpenMP runtime (HistGradientBoosting), BLAS threads or ``n_jobs`` pools are not usable in a
child forked after the pool exists: the child hangs at its first parallel call. granian forks its
workers from the server's main process, so that process never runs the model:

* :class:`ChildCheck` runs the champion's checks (which score rows) in a short-lived forked
  child and reports the outcome to the main process, which stays free of thread pools;
* each worker runs the model for the first time itself, in its own lifespan, and writes the stage
  it is in (:func:`report`) to a file in the server's shared directory;
* :class:`Watchdog` (a thread of the main process) ends the whole server with one line naming the
  model and the stage a worker was stuck in when a worker is not ready within
  ``STARTUP_TIMEOUT_SECONDS``, instead of waiting forever (at startup and after a respawn).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from app import checks, registry
from app.errors import StartupError
from app.scoring import Proven
from app.settings import Settings

READY: Final = "ready"
_PREFIX: Final = "startup-"
_TICK_SECONDS: Final = 0.1


class ChildCheck:
    """:func:`app.checks.check` running in a forked child, while this process goes on.

    The child checks the fetched champion (scoring rows, so starting whatever thread pools the
    model uses, in the child only), reports one line through a pipe and leaves without any
    cleanup of the parent's; :meth:`result` waits for that line, for at most ``timeout`` seconds.
    """

    def __init__(self, fetched: registry.Fetched, settings: Settings) -> None:
        self._what = f"{fetched.name} version {fetched.version}"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            try:
                proven = checks.check(fetched, settings).proven
                answer = "error no proof" if proven is None else "ok " + proven.encode()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
                answer = f"error {exc}"
            os.write(write_end, answer.encode()[:4000])
            os._exit(0)
        os.close(write_end)
        self._pid, self._read_end = pid, read_end

    def result(self, timeout: float) -> Proven:
        """What the child proved; StartupError if the check failed or took over ``timeout``."""
        try:
            ready, _, _ = select.select([self._read_end], [], [], timeout)
            if not ready:
                os.kill(self._pid, signal.SIGKILL)
                raise StartupError(
                    f"{self._what} was not checked after {timeout:g}s: "
                    "stuck in scoring the probe rows"
                )
            answer = os.read(self._read_end, 4096).decode(errors="replace")
        finally:
            os.close(self._read_end)
            os.waitpid(self._pid, 0)
        status, _, detail = answer.partition(" ")
        if status != "ok":
            raise StartupError(detail or f"{self._what}: the check ended without an answer")
        return Proven.decode(detail)


def report(stage: str, directory: str | None) -> None:
    """Say which startup stage this worker is in (``ready`` when it takes traffic)."""
    if directory:
        Path(directory, f"{_PREFIX}{os.getpid()}").write_text(stage)


def forget(directory: str | None) -> None:
    """Remove this worker's stage file (it is stopping)."""
    if directory:
        Path(directory, f"{_PREFIX}{os.getpid()}").unlink(missing_ok=True)


class Watchdog:
    """Ends the server when a live worker is not ready within ``timeout`` of first being seen."""

    def __init__(
        self, directory: str, timeout: float, model: str, cleanup: Callable[[], None]
    ) -> None:
        self._directory = Path(directory)
        self._timeout = timeout
        self._model = model
        self._cleanup = cleanup
        self._first_seen: dict[int, float] = {}
        self._thread = threading.Thread(target=self._run, name="churn-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_TICK_SECONDS)
            stuck = self._stuck()
            if stuck is not None:
                self._fail(*stuck)

    def _stuck(self) -> tuple[int, str] | None:
        now = time.monotonic()
        workers = _children(os.getpid())
        self._first_seen = {pid: self._first_seen.get(pid, now) for pid in workers}
        for pid, seen in self._first_seen.items():
            stage = _stage(self._directory / f"{_PREFIX}{pid}")
            if stage != READY and now - seen > self._timeout:
                return pid, stage or "starting (importing the service)"
        return None

    def _fail(self, pid: int, stage: str) -> None:
        print(
            f"churn-api: worker {pid} not ready after {self._timeout:g}s "
            f"(STARTUP_TIMEOUT_SECONDS), stuck in {stage}, serving {self._model}; stopping",
            file=sys.stderr,
            flush=True,
        )
        for child in _children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self._cleanup()
        os._exit(1)


def _stage(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found
