"""``churn-api``: train and register a model, check the champion, or serve it with granian.

Every command reads the settings once (:func:`app.settings.load`); a bad setting, like any
:class:`~app.errors.StartupError`, is one ``churn-api: ...`` line on stderr and exit status 1.
``serve`` is :func:`app.serve.run`: it checks the champion once before granian starts, so a missing
or broken champion is one clear line, not a traceback per worker, and then runs granian in this
process, which forks the workers from it, warm.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import msgspec

from app.errors import StartupError
from app.settings import Settings, load
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
        settings = load()
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
    from app.checks import load_champion

    model = load_champion(settings)
    print(
        f"{model.name}@{model.alias} is version {model.version} (run {model.run_id}): "
        f"loads and passes the feature guard; scoring path {model.scoring}"
    )
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from app import serve

    given = {"host": args.host, "port": args.port, "workers": args.workers}
    flags = {name: value for name, value in given.items() if value is not None}
    serve.run(msgspec.structs.replace(settings, **flags), check=not args.skip_check)
    return 0


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
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS, 2)")
    serve.add_argument(
        "--skip-check", action="store_true", help="do not load the champion before starting granian"
    )
    serve.set_defaults(run=_serve)
    return parser
