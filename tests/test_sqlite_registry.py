"""churn-api's own reader of SQLite registries answers what MLflow's client answers.

The reader (app.sqlite_registry) is used instead of MLflow's client for ``sqlite:///`` registries
with local artifacts; for anything else, MLflow's client answers. Both are checked here on the
same real registry (trained by the session's ``registry`` fixture).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import Registry

from app import sqlite_registry
from app.checks import load_champion
from app.errors import StartupError
from app.registry import RegistryError, fetch, resolve
from app.schemas import FEATURES
from app.scoring import proof_rows
from app.settings import Settings


def test_the_reader_names_the_version_and_run_mlflow_names(registry: Registry) -> None:
    from mlflow import MlflowClient

    found = MlflowClient(registry.uri, registry.uri).get_model_version_by_alias(
        registry.name, registry.alias
    )
    db = sqlite_registry.database(registry.uri)

    assert db is not None
    assert sqlite_registry.alias_version(db, registry.name, registry.alias) == (
        str(found.version),
        found.run_id,
    )
    assert resolve(registry.settings()) == (registry.version, registry.run_id)


def test_the_model_read_in_place_is_the_one_mlflow_downloads(registry: Registry) -> None:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import Model

    mlflow.set_registry_uri(registry.uri)
    local = mlflow.artifacts.download_artifacts(f"models:/{registry.name}/{registry.version}")
    theirs = mlflow.sklearn.load_model(local)
    logged = Model.load(local)
    ours = fetch(registry.settings(), registry.version)
    rows = pd.DataFrame(proof_rows(), columns=list(FEATURES)).astype(
        {"tenure_months": "int64", "num_support_tickets": "int64", "is_month_to_month": bool}
    )

    np.testing.assert_array_equal(ours.estimator.predict_proba(rows), theirs.predict_proba(rows))
    assert ours.run_id == logged.run_id == registry.run_id
    example: Any = logged.load_input_example(local)
    np.testing.assert_array_equal(
        ours.input_example[list(FEATURES)].to_numpy(dtype=float),
        example[list(FEATURES)].to_numpy(dtype=float),
    )
    assert ours.profile is not None  # the drift profile is read from the run's artifacts too


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:5000", "sqlite:///mlflow.db?timeout=5", "sqlite:///:memory:", "file:///x"],
)
def test_other_registries_are_left_to_mlflow(uri: str) -> None:
    assert sqlite_registry.database(uri) is None


def test_an_unknown_alias_is_still_named_by_mlflow(registry: Registry) -> None:
    with pytest.raises(StartupError, match="no-such-alias"):
        load_champion(registry.settings(model_alias="no-such-alias"))


def test_a_missing_registry_file_is_a_registry_error(tmp_path: object) -> None:
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path}/absent.db")

    with pytest.raises(RegistryError, match=r"absent\.db"):
        resolve(settings)


def test_deserialization_can_be_refused_as_mlflow_refuses_it(registry: Registry) -> None:
    settings = registry.settings(mlflow_allow_pickle_deserialization=False)

    with pytest.raises(RegistryError, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        fetch(settings, registry.version)
