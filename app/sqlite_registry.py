"""An MLflow registry kept in SQLite with local artifacts, read without importing MLflow.

MLflow's client on a ``sqlite:///`` URI imports MLflow (~0.8 s here) and builds an SQLAlchemy
store that checks its schema migrations (~1 s) before its first answer, in every process that
asks: the server's main process at startup and every worker's alias poll. For the common case, a
SQLite registry file whose model versions and runs keep their artifacts on a local path (what
``mlflow.sklearn.log_model`` writes against such a URI), this module reads the rows MLflow itself
wrote, read-only, and the logged model's directory in place, deserialized the way MLflow's sklearn
flavor does (``mlflow.sklearn._load_model_from_local_file``), behind MLflow's own
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` switch.

Each function answers None where it cannot be sure (another URI scheme, artifacts elsewhere, an
unknown schema, an input example that is not a DataFrame): :mod:`app.registry` then asks MLflow
as before. A registry that cannot be read now (file missing or unreadable) raises
:class:`sqlite3.Error`. ``tests/test_registry.py`` checks both give the same answers.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

_SCHEME = "sqlite:///"


@dataclass(frozen=True)
class LoggedModel:
    """A logged sklearn model, deserialized: the estimator and what MLflow logged with it (read
    here or by MLflow's own loader)."""

    estimator: Any
    run_id: str
    pyfunc_predict_fn: str
    input_example: Any


def database(tracking_uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` URI (relative to the working directory, as SQLAlchemy
    reads it), or None for any other URI (and for one with query parameters)."""
    if not tracking_uri.startswith(_SCHEME) or "?" in tracking_uri:
        return None
    path = tracking_uri[len(_SCHEME) :]
    return Path(path) if path and path != ":memory:" else None


def alias_version(db: Path, name: str, alias: str) -> tuple[str, str] | None:
    """The version and run id ``name@alias`` names, or None (not exactly one: let MLflow say)."""
    found = _rows(
        db,
        "SELECT v.version, v.run_id FROM registered_model_aliases a JOIN model_versions v"
        " ON v.name = a.name AND v.version = a.version WHERE a.name = ? AND a.alias = ?",
        (name, alias),
    )
    if found is None or len(found) != 1:
        return None
    version, run_id = found[0]
    return str(version), str(run_id or "")


def model_directory(db: Path, name: str, version: str) -> Path | None:
    """The local directory holding ``version``'s logged model, or None if it is not local."""
    found = _rows(
        db, "SELECT storage_location FROM model_versions WHERE name = ? AND version = ?",
        (name, int(version)),
    )  # fmt: skip
    return _local(found[0][0]) if found and len(found) == 1 else None


def run_artifacts(db: Path, run_id: str) -> Path | None:
    """The local artifact directory of a run, or None if it is not local."""
    found = _rows(db, "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,))
    return _local(found[0][0]) if found and len(found) == 1 else None


def load_model(
    directory: Path, *, allow_deserialization: bool, skops_cache: Path | None = None
) -> LoggedModel | None:
    """Deserialize the sklearn model logged in ``directory`` (the model is not run), or None if
    its MLmodel file asks for what only MLflow does (custom code, an unknown format or example).
    ``skops_cache``: see :func:`app.skops_types.import_skops`."""
    import yaml

    logged = yaml.safe_load((directory / "MLmodel").read_text())
    flavor = logged.get("flavors", {}).get("sklearn")
    example_info = logged.get("saved_input_example_info")
    example_type = (example_info or {}).get("type", "dataframe")
    if not flavor or flavor.get("code") or example_type != "dataframe":
        return None
    form = flavor.get("serialization_format", "cloudpickle")
    if form not in ("pickle", "cloudpickle", "skops"):
        return None
    if not allow_deserialization:
        raise PermissionError(
            "deserializing this model is disallowed: MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false"
        )
    path = directory / flavor["pickled_model"]
    if form == "skops":
        from app.skops_types import import_skops

        skops_io = import_skops(skops_cache)
        estimator = skops_io.load(path, trusted=flavor.get("skops_trusted_types"))
    else:
        with path.open("rb") as file:
            if form == "pickle":
                estimator = pickle.load(file)  # the registry's model, as MLflow loads it
            else:
                import cloudpickle  # type: ignore[import-untyped]

                estimator = cloudpickle.load(file)
    return LoggedModel(
        estimator=estimator,
        run_id=str(logged.get("run_id") or ""),
        pyfunc_predict_fn=pyfunc_predict_fn(logged.get("flavors", {})),
        input_example=_example(directory, example_info),
    )


def pyfunc_predict_fn(flavors: dict[str, Any]) -> str:
    """The method MLflow's pyfunc flavor calls, from an MLmodel file's ``flavors``."""
    return str(flavors.get("python_function", {}).get("predict_fn") or "predict")


def _example(directory: Path, info: dict[str, Any] | None) -> Any:
    """The logged DataFrame example (orient ``split``), as MLflow's ``load_input_example``."""
    if not info:
        return None
    import pandas as pd

    split = json.loads((directory / info["artifact_path"]).read_text())
    return pd.DataFrame(split["data"], columns=split["columns"])


def _rows(db: Path, query: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]] | None:
    """The rows of a read-only query; None when the schema is not the one expected."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)) as connection:
            return connection.execute(query, parameters).fetchall()
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such"):  # no such table / column: another schema
            return None
        raise


def _local(location: str | None) -> Path | None:
    if not location:
        return None
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None
