"""``python -m app.serve GRANIAN-OPTIONS... app.main:create_app``: granian with shared metrics.

Prometheus' multiprocess mode needs one directory shared by all worker processes of a server,
named by ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports ``prometheus_client``, and empty
when the server starts. This process prepares it and then runs granian's own command line in
itself (the workers are its children and inherit the variable):

* ``PROMETHEUS_MULTIPROC_DIR`` unset: a private directory is created and removed again when granian
  exits (also after SIGTERM or SIGINT, which granian turns into a graceful stop);
* set by the operator: the directory is created if missing and its ``*.db`` files (a previous
  run's) are deleted; nothing else in it is touched.

``churn-api serve`` calls :func:`main` in its own process (and preloads the service there, after
the directory is set, so the workers fork warm); the container image runs this module directly,
which does the same checks and preload (:func:`app.cli.preload_or_exit`).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(environ: MutableMapping[str, str]) -> Path | None:
    """Make the shared directory ready; returns it if it is private (to remove it afterwards)."""
    given = environ.get(VARIABLE, "").strip()
    if not given:
        private = Path(tempfile.mkdtemp(prefix="churn-api-metrics-"))
        environ[VARIABLE] = str(private)
        return private
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return None


def main(
    argv: Sequence[str] | None = None,
    before_workers: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """granian's command line (``argv``, default ``sys.argv[1:]``) with the metrics directory set.

    ``before_workers`` runs in this process once the directory is set and before granian forks
    its workers (``churn-api serve`` fetches the champion there, so the workers start warm); it is
    given the function that removes a private directory, for an exit that skips ``finally``.
    """
    private = prepare(os.environ)

    def cleanup() -> None:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)

    try:
        if before_workers is not None:
            before_workers(cleanup)
        from granian.cli import entrypoint

        sys.argv[:] = ["granian", *(sys.argv[1:] if argv is None else argv)]
        entrypoint()  # type: ignore[no-untyped-call]
    finally:
        cleanup()


if __name__ == "__main__":
    from app.cli import preload_or_exit

    main(before_workers=preload_or_exit)
