"""``churn-api``: train and register a model, check the champion, or serve it with granian.

``serve`` checks the settings and loads the champion once before granian starts, so a bad setting
or a missing champion is one clear line and a non-zero exit, not a traceback per worker. Then this
process runs granian (through :mod:`app.serve`, which first prepares the workers' shared Prometheus
directory) and granian forks the workers from it, warm: every worker loads the champion again in
its own lifespan, in milliseconds, sharing the imported modules' memory with this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from app.errors import StartupError
from app.settings import Settings
from app.train import KINDS

log = logging.getLogger("churn_api")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings.from_environ()
        return int(args.run(settings, args))
    except StartupError as exc:
        print(f"churn-api: {exc}", file=sys.stderr)
        return 1


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from app.train import Generation, train_and_register

    if args.if_missing and _champion_exists(settings):
        print(f"{settings.model_name}@{settings.model_alias} already exists; not training")
        return 0
    result = train_and_register(
        settings.tracking_uri,
        settings.model_name,
        settings.model_alias,
        Generation(samples=args.samples, seed=args.seed),
        promote=not args.no_promote,
        kind=args.model,
        serialization=args.format,
    )
    promoted = f", alias {settings.model_alias} -> v{result.version}" if result.promoted else ""
    print(
        f"registered {settings.model_name} v{result.version} (run {result.run_id}, "
        f"holdout ROC AUC {result.roc_auc:.3f}){promoted}"
    )
    return 0


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from app.registry import load_champion

    model = load_champion(settings)
    print(
        f"{model.name}@{model.alias} is version {model.version} (run {model.run_id}): "
        f"loads and passes the feature guard; scoring path {model.scoring}"
    )
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from app import serve

    workers = args.workers or settings.workers
    options = [
        "--interface", "asgi",
        "--factory",
        "--host", args.host,
        "--port", str(args.port),
        "--workers", str(workers),
        "--no-ws",
        "--loop", "uvloop",  # measured against asyncio and rloop: perf/README.md
        "--respawn-failed-workers",
        "app.main:serve_app",
    ]  # fmt: skip
    # granian forks its workers from this process (the start method on Linux): whatever is loaded
    # here is loaded in every worker too, and shared with it until written to.
    serve.main(
        options,
        before_workers=lambda cleanup: _preload(settings, cleanup, check=not args.skip_check),
    )
    return 0


def _preload(settings: Settings, cleanup: Callable[[], None], *, check: bool) -> None:
    """Fetch and check the champion and import the service in the server's main process.

    The champion is fetched from the registry once here (downloaded and deserialized, never run:
    see :mod:`app.startup`) and checked in a forked child; the workers forked from this process
    find it in memory, check it again in their lifespan (running it for the first time there) and
    share the imported modules' memory with this process. No registry connection is pooled across
    the fork (SQLite connections must not be shared by processes); an operator's own
    MLFLOW_SQLALCHEMYSTORE_POOLCLASS wins. A watchdog thread then ends the server if a worker is
    not ready within STARTUP_TIMEOUT_SECONDS.
    """
    import gc

    from app import registry, startup
    from app.metrics import multiprocess_dir

    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    model = registry.describe(settings)
    if check:
        try:
            fetched, _ = registry.fetch_champion(settings)
        except registry.RegistryError as exc:
            raise StartupError(f"cannot load {model}: {exc}") from exc
        scoring = startup.check_in_child(fetched, settings, settings.startup_timeout_seconds)
        registry.preload(fetched, scoring)
        model = f"{fetched.name} version {fetched.version}"
        print(
            f"{settings.model_name}@{settings.model_alias} is version {fetched.version} "
            f"(run {fetched.run_id}): loads and passes the feature guard; scoring path {scoring}"
        )
    import app.main

    app.main.prebuild(settings)  # the workers share it

    # The workers log JSON lines (app.observability); this process's plain handler stays here.
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)
    gc.collect()
    gc.freeze()  # the collector leaves what exists now alone, so forked pages stay shared
    sys.stdout.flush()
    sys.stderr.flush()
    directory = multiprocess_dir()
    if directory:
        startup.Watchdog(directory, settings.startup_timeout_seconds, model, cleanup).start()


def preload_or_exit(cleanup: Callable[[], None]) -> None:
    """``python -m app.serve`` (the container's command): the same checks as ``churn-api serve``.

    A bad setting or a champion that cannot be loaded is one ``churn-api: ...`` line on stderr and
    exit status 1, before granian starts any worker.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _preload(Settings.from_environ(), cleanup, check=True)
    except StartupError as exc:
        print(f"churn-api: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _champion_exists(settings: Settings) -> bool:
    from app import registry

    try:
        registry.resolve(settings)
    except registry.RegistryError:
        return False
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churn-api", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train on synthetic data, register, make champion")
    train.add_argument("--samples", type=int, default=20_000, help="customers to generate")
    train.add_argument("--seed", type=int, default=7, help="random seed of the generator")
    train.add_argument(
        "--model", choices=KINDS, default="lr", help="model kind (default lr, see app.train)"
    )
    train.add_argument(
        "--format",
        choices=("pickle", "skops"),
        default="pickle",
        help="MLflow serialization format (default pickle; skops is MLflow's default)",
    )
    train.add_argument(
        "--no-promote", action="store_true", help="register without moving the alias"
    )
    train.add_argument(
        "--if-missing", action="store_true", help="only if the alias does not resolve yet"
    )
    train.set_defaults(run=_train)

    check = commands.add_parser("check", help="load the champion once and report it")
    check.set_defaults(run=_check)

    serve = commands.add_parser("serve", help="serve the champion with granian workers")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: WORKERS, 2)"
    )
    serve.add_argument(
        "--skip-check", action="store_true", help="do not load the champion before starting granian"
    )
    serve.set_defaults(run=_serve)
    return parser
