"""Integration with a real SQLite MLflow registry and a real fitted scikit-learn pipeline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import Registry
from litestar.testing import TestClient
from support import CUSTOMERS

from app.checks import load_champion
from app.errors import StartupError
from app.main import create_app
from app.schemas import FEATURES
from app.train import Generation, synthesize

Client = TestClient[Any]


@pytest.fixture(scope="module")
def served(registry: Registry) -> Iterator[Client]:
    """The app with the real loader, serving the registry's champion in-process."""
    with TestClient(create_app(registry.settings())) as client:
        yield client


@pytest.fixture(scope="module")
def customers() -> list[dict[str, Any]]:
    """Realistic customers from the documented generator (another seed than training)."""
    frame, _ = synthesize(Generation(samples=300, seed=99))
    records = frame.to_dict(orient="records")
    return [
        {
            "tenure_months": int(record["tenure_months"]),
            "monthly_charges": float(record["monthly_charges"]),
            "total_charges": float(record["total_charges"]),
            "num_support_tickets": int(record["num_support_tickets"]),
            "is_month_to_month": bool(record["is_month_to_month"]),
        }
        for record in records
    ] + CUSTOMERS


def test_champion_is_loaded_by_alias_and_reported(registry: Registry, served: Client) -> None:
    info = served.get("/model-info").json()

    assert info == {
        "name": registry.name,
        "version": registry.version,
        "alias": "champion",
        "run_id": registry.run_id,
        "threshold": 0.5,
        "features": list(FEATURES),
        "scoring": "linear",  # the LR pipeline's arithmetic, proven equal to predict_proba
        "drift_monitoring": True,  # churn-api train logs a reference profile with the model
    }
    assert served.get("/health").json() == {"status": "ok"}
    assert served.post("/predict", json=CUSTOMERS[0]).json()["model_version"] == registry.version


def test_alias_decides_the_version_not_the_latest(registry: Registry) -> None:
    # The reordered model was registered after the champion, so it is the latest version.
    assert int(registry.reordered_version) > int(registry.version)

    assert load_champion(registry.settings()).version == registry.version


def test_served_probabilities_equal_the_registered_models_predict_proba(
    registry: Registry, served: Client, customers: list[dict[str, Any]]
) -> None:
    import mlflow.sklearn
    import pandas as pd

    mlflow.set_registry_uri(registry.uri)
    model = mlflow.sklearn.load_model(f"models:/{registry.name}@{registry.alias}")
    frame = pd.DataFrame(customers, columns=list(FEATURES))
    expected = model.predict_proba(frame)[:, 1]

    batch = served.post("/predict/batch", json={"instances": customers}).json()["predictions"]
    singles = [served.post("/predict", json=c).json() for c in customers[:20]]

    assert [p["churn_probability"] for p in batch] == np.round(expected, 6).tolist()
    assert [p["churn_label"] for p in batch] == (expected >= 0.5).tolist()
    assert singles == batch[:20]
    assert 0 < sum(p["churn_label"] for p in batch) < len(batch)  # a model, not a constant


def test_a_model_fitted_with_another_column_order_is_refused(registry: Registry) -> None:
    settings = registry.settings(model_alias=registry.reordered_alias)

    with pytest.raises(StartupError, match="fitted on features") as raised:
        load_champion(settings)

    assert f"version {registry.reordered_version}" in str(raised.value)
    assert "is_month_to_month" in str(raised.value)


def test_a_missing_alias_is_a_startup_error_naming_it(registry: Registry) -> None:
    with pytest.raises(StartupError, match="no-such-alias"):
        load_champion(registry.settings(model_alias="no-such-alias"))


def test_a_missing_model_name_is_a_startup_error(registry: Registry) -> None:
    with pytest.raises(StartupError, match="no-such-model"):
        load_champion(registry.settings(model_name="no-such-model"))


def test_a_loaded_model_keeps_answering_when_the_registry_goes_away(
    registry: Registry, tmp_path: Any
) -> None:
    database = tmp_path / "mlflow.db"
    shutil.copy(registry.workdir / "mlflow.db", database)
    settings = registry.settings(tracking_uri=f"sqlite:///{database}")

    with TestClient(create_app(settings)) as client:
        before = client.post("/predict", json=CUSTOMERS[0]).json()
        database.unlink()
        after = client.post("/predict", json=CUSTOMERS[0])

    assert after.status_code == 200
    assert after.json() == before
