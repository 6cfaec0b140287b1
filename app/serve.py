"""``churn-api serve``: the one way to start the server, on a laptop, in the image and in the tests.

:func:`run` owns everything between the settings and granian's workers, in this order:

1. **The workers' shared metrics directory.** prometheus_client's multiprocess mode needs one
   directory shared by all worker processes of a server, named by ``PROMETHEUS_MULTIPROC_DIR``
   before any worker imports prometheus_client, and empty when the server starts. With
   ``PROMETHEUS_MULTIPROC_DIR`` unset a private directory is made and removed again when granian
   exits (also after SIGTERM or SIGINT, which granian turns into a graceful stop); an operator's
   directory is created if missing and its ``*.db`` files (a previous run's) are deleted, nothing
   else in it is touched. The variable is then set for prometheus_client and the workers.
2. **No pyarrow** unless ``IMPORT_PYARROW=true`` (:class:`WithoutPyarrow`): pandas imports it
   when it is installed (MLflow installs it), for nothing churn-api does; ~30 MiB of a 2-worker
   server (RandomForest champion, PSS 341 -> 311 MiB).
3. **The preload** (:func:`preload`): the champion fetched and checked once, the app built, the
   garbage collector frozen, so the workers fork warm; then the startup watchdog. The collector
   is paused meanwhile (:func:`collector_paused`).
4. **granian's options** (:func:`granian_options`), run by granian's own command line in this
   process: granian forks its workers from it, and its main process is this one.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Final

import msgspec

from app.errors import StartupError
from app.settings import Settings

VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


STOP_GRACE_SECONDS: Final = 5


def granian_options(settings: Settings) -> list[str]:
    """granian's command line for ``settings``: the only place granian's options are written.

    A worker still running ``STOP_GRACE_SECONDS`` after the longest a request may take
    (``REQUEST_TIMEOUT_SECONDS``) once it was told to stop is killed: a worker that hangs in its
    shutdown (seen with granian 2.8 when SIGTERM comes while its lifespan starts) would otherwise
    keep the server from ever exiting. With the time limit off, granian waits as long as it takes.
    """
    timeout = settings.request_timeout_seconds
    kill = (
        ["--workers-kill-timeout", str(math.ceil(timeout) + STOP_GRACE_SECONDS)] if timeout else []
    )
    return [
        "--interface", "asgi",
        "--factory",
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
        "--no-ws",
        "--loop", "uvloop",  # measured against asyncio and rloop: perf/README.md
        "--respawn-failed-workers",  # a killed worker is replaced while the others answer
        *kill,
        "app.main:serve_app",  # the app prebuilt by preload(), shared with the workers
    ]  # fmt: skip


class WithoutPyarrow(importlib.abc.MetaPathFinder):
    """Makes ``import pyarrow`` fail as if it were not installed (``IMPORT_PYARROW=false``):
    pandas and scikit-learn then go on without it, as they do where it is not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ModuleNotFoundError(f"{name} is not imported: IMPORT_PYARROW is false", name=name)


def prepare(configured: str | None, environ: MutableMapping[str, str]) -> tuple[str, Path | None]:
    """Make the shared directory ready and name it in ``environ`` for prometheus_client and the
    workers; returns it, and the private directory to remove afterwards (None: the operator's)."""
    if configured:
        directory, private = Path(configured), None
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = private = Path(tempfile.mkdtemp(prefix="churn-api-metrics-"))
    environ[VARIABLE] = str(directory)
    return str(directory), private


def run(settings: Settings, *, check: bool = True) -> None:
    """Serve ``settings``' champion with granian until granian exits."""
    directory, private = prepare(settings.metrics_dir, os.environ)
    settings = msgspec.structs.replace(settings, metrics_dir=directory)

    def cleanup() -> None:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)

    if not settings.import_pyarrow and "pyarrow" not in sys.modules:
        sys.meta_path.insert(0, WithoutPyarrow())  # before pandas is imported; workers inherit it
    try:
        # granian forks its workers from this process (the start method on Linux): whatever is
        # loaded here is loaded in every worker too, and shared with it until written to.
        with collector_paused():
            preload(settings, cleanup, check=check)
            from granian.cli import entrypoint

        sys.argv[:] = ["granian", *granian_options(settings)]
        entrypoint()  # type: ignore[no-untyped-call]
    finally:
        cleanup()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off, then on again.

    The preload imports scikit-learn, SciPy, pandas, Litestar and the champion: hundreds of
    thousands of objects that all stay alive, which the collector would otherwise traverse again
    and again as they are made (~510 collections, 0.29-0.36 s of a ~5 s preload of the
    RandomForest skops champion on a slow machine, timed with ``gc.callbacks``). The little
    garbage left (~14,000 objects, ~2 MiB) is frozen with the rest (:func:`preload`), shared by
    the workers; the collector runs again in every worker.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def preload(settings: Settings, cleanup: Callable[[], None], *, check: bool) -> None:
    """Fetch and check the champion and import the service in the server's main process.

    The champion is fetched from the registry once here (downloaded and deserialized, never run:
    see :mod:`app.startup`) and checked in a forked child; the workers forked from this process
    find it in memory, check it again in their lifespan (running it for the first time there) and
    share the imported modules' memory with this process. No registry connection is pooled across
    the fork (SQLite connections must not be shared by processes); an operator's own
    MLFLOW_SQLALCHEMYSTORE_POOLCLASS wins. A watchdog thread then ends the server if a worker is
    not ready within STARTUP_TIMEOUT_SECONDS (``cleanup`` removes a private metrics directory
    then, as that exit skips ``finally``).
    """
    import logging

    from app import registry, startup

    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")  # MLflow's own
    model = registry.describe(settings)
    checking = None
    if check:
        try:
            fetched, _ = registry.fetch_champion(settings)
        except registry.RegistryError as exc:
            raise StartupError(f"cannot load {model}: {exc}") from exc
        checking = startup.ChildCheck(fetched, settings)  # the other CPU checks it meanwhile
        model = f"{fetched.name} version {fetched.version}"
    import app.main

    app.main.prebuild(settings)  # the workers share it
    import granian.cli  # noqa: F401 - imported while the child checks, not after

    if checking is not None:
        proven = checking.result(settings.startup_timeout_seconds)
        registry.preload(fetched, proven)
        print(
            f"{settings.model_name}@{settings.model_alias} is version {fetched.version} "
            f"(run {fetched.run_id}): loads and passes the feature guard; "
            f"scoring path {proven.path}"
        )

    # The workers log JSON lines (app.observability); this process's plain handler stays here.
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    gc.freeze()  # the collector leaves what exists now alone, so forked pages stay shared
    # (no gc.collect() first: ~0.1 s of startup for a few MiB of import garbage, frozen shared)
    sys.stdout.flush()
    sys.stderr.flush()
    if settings.metrics_dir:
        startup.Watchdog(
            settings.metrics_dir, settings.startup_timeout_seconds, model, cleanup
        ).start()
