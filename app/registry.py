"""The MLflow registry: which version the alias names, and fetching that version.

Startup (``churn-api serve``, ``churn-api check``), each worker's lifespan and the hot-swap all go
through :func:`resolve` and :func:`fetch`, then :func:`app.checks.check`.

Fetching (download the artifacts, deserialize the estimator) never runs the model, so it is safe
in a process that forks afterwards: ``churn-api serve`` fetches once in the server's main process
and hands the result to the workers it forks (:func:`preload`); a worker fetches again only if the
alias has moved since.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from app import drift, scoring, skops_types, sqlite_registry
from app.profile import Profile
from app.scoring import Proven
from app.settings import Settings
from app.sqlite_registry import LoggedModel


class RegistryError(Exception):
    """The registry cannot say which version the alias names, or that version cannot be fetched."""


@dataclass(frozen=True)
class Fetched:
    """One registry version, downloaded and deserialized, not yet run."""

    name: str
    version: str
    run_id: str
    estimator: Any = field(repr=False)
    pyfunc_predict_fn: str = "predict"
    input_example: Any = field(default=None, repr=False)
    fetch_seconds: float = 0.0
    profile: Profile | None = field(default=None, repr=False)
    """The run's reference profile (:mod:`app.drift`); None: no drift metrics."""


_preloaded: tuple[Fetched, Proven] | None = None


def preload(fetched: Fetched, proven: Proven) -> None:
    """Keep ``fetched``, and what a check proved for it with that path built (the model is not
    run), for the processes forked later."""
    global _preloaded
    _preloaded = (fetched, scoring.build(fetched.estimator, proven))


def describe(settings: Settings) -> str:
    """``name@alias from uri`` (credentials redacted), for messages."""
    return f"{settings.model_name}@{settings.model_alias} from {redact(settings.tracking_uri)}"


def resolve(settings: Settings) -> tuple[str, str]:
    """The version and run id the alias names now."""
    db = sqlite_registry.database(settings.tracking_uri)
    if db is not None:
        try:
            found = sqlite_registry.alias_version(db, settings.model_name, settings.model_alias)
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read {db}: {reason(exc)}") from exc
        if found is not None:
            return found
    client = _client(settings)
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except (MlflowException, OSError) as exc:
        raise RegistryError(reason(exc)) from exc
    return str(found.version), str(found.run_id or "")


def fetch(settings: Settings, version: str, run_id: str = "") -> Fetched:
    """Download ``version`` and deserialize its estimator (the model is not run)."""
    started = time.perf_counter()
    logged = _fetch_local(settings, version) or _fetch_with_mlflow(settings, version)
    run_id = run_id or logged.run_id
    return Fetched(
        name=settings.model_name,
        version=version,
        run_id=run_id,
        estimator=logged.estimator,
        pyfunc_predict_fn=logged.pyfunc_predict_fn,
        input_example=logged.input_example,
        fetch_seconds=time.perf_counter() - started,
        profile=drift.reference(
            settings.tracking_uri,
            settings.model_name,
            version,
            run_id,
            enabled=settings.drift_metrics,
        ),
    )


def _fetch_local(settings: Settings, version: str) -> LoggedModel | None:
    """A SQLite registry's local model directory, read in place (:mod:`app.sqlite_registry`)."""
    db = sqlite_registry.database(settings.tracking_uri)
    try:
        directory = None if db is None else sqlite_registry.model_directory(
            db, settings.model_name, version
        )  # fmt: skip
        if directory is None:
            return None
        return sqlite_registry.load_model(
            directory,
            allow_deserialization=settings.mlflow_allow_pickle_deserialization,
            skops_cache=skops_types.cache_file(settings.skops_types_cache),
        )
    except (sqlite3.Error, OSError, ValueError, KeyError) as exc:
        raise RegistryError(reason(exc)) from exc


def _fetch_with_mlflow(settings: Settings, version: str) -> LoggedModel:
    _client(settings)
    import mlflow
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        with tempfile.TemporaryDirectory(prefix="churn-api-model-") as scratch:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.model_name}/{version}", dst_path=scratch
            )
            logged = Model.load(local)
            if logged.flavors.get("sklearn", {}).get("serialization_format") == "skops":
                skops_types.import_skops(skops_types.cache_file(settings.skops_types_cache))
            estimator = mlflow.sklearn.load_model(local)
            example = logged.load_input_example(local)
    except (MlflowException, OSError, ValueError) as exc:
        raise RegistryError(reason(exc)) from exc
    return LoggedModel(
        estimator=estimator,
        run_id=str(logged.run_id or ""),
        pyfunc_predict_fn=sqlite_registry.pyfunc_predict_fn(logged.flavors),
        input_example=example,
    )


def fetch_champion(settings: Settings) -> tuple[Fetched, Proven | None]:
    """The alias's version, fetched, and what a check already proved for it, if any.

    The preloaded version (with its proof) if the alias still names it.
    """
    version, run_id = resolve(settings)
    if _preloaded is not None:
        fetched, proven = _preloaded
        if fetched.name == settings.model_name and fetched.version == version:
            return fetched, proven
    return fetch(settings, version, run_id), None


def redact(uri: str) -> str:
    """A tracking URI without credentials, for log lines."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line reports."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def _client(settings: Settings) -> Any:
    # MLflow's HTTP retries are settings too, handed to MLflow by app.settings.load at startup.
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
