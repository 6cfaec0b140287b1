"""Reference profiles (app/profile.py) and the drift counters (app/drift.py).

The counters are checked against a plain per-row count with the profile's documented bin rule
(``edges[i-1] <= x < edges[i]``), in process and through the real app with a real registry.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from conftest import Registry
from litestar.testing import TestClient
from ops_support import MODEL_NAME
from prometheus_client import REGISTRY
from support import payloads, training_like

from app.checks import load_champion
from app.drift import DRAIN_ROWS, DriftTally
from app.errors import StartupError
from app.main import create_app
from app.metrics import PROBABILITY_BUCKETS
from app.profile import Profile, build, decode
from app.reload import RegistrySource
from app.schemas import FEATURES
from app.settings import Settings
from app.train import Generation, fit

Client = TestClient[Any]
ROWS = "churn_feature_bin_rows_total"
SHARE = "churn_feature_bin_reference_share"


@pytest.fixture(scope="module")
def profile() -> Profile:
    rows = training_like(5000, seed=3)
    return build(rows, np.linspace(0, 1, 1001), PROBABILITY_BUCKETS)


def expected_counts(profile: Profile, rows: np.ndarray[Any, Any]) -> Counter[tuple[str, str]]:
    """(feature, bin) -> rows, one row at a time with the documented rule."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows.tolist():
        for bins, value in zip(profile.features, row, strict=True):
            counts[bins.name, str(bisect_right(bins.edges, value))] += 1
    return counts


def counted(version: str, profile: Profile) -> Counter[tuple[str, str]]:
    """What the Prometheus counters say for the version, per (feature, bin)."""
    counts: Counter[tuple[str, str]] = Counter()
    for bins in profile.features:
        for index in range(len(bins.shares)):
            labels = {"feature": bins.name, "bin": str(index), "version": version}
            value = REGISTRY.get_sample_value(ROWS, labels) or 0.0
            if value:
                counts[bins.name, str(index)] = int(value)
    return counts


class TestProfile:
    def test_edges_are_training_deciles_and_no_training_bin_is_empty(
        self, profile: Profile
    ) -> None:
        rows = training_like(5000, seed=3)
        by_name = {bins.name: bins for bins in profile.features}

        assert [bins.name for bins in profile.features] == list(FEATURES)
        monthly = by_name["monthly_charges"]
        assert monthly.kind == "numeric"
        assert len(monthly.edges) == 9  # continuous: one edge per decile
        assert np.allclose(monthly.shares, 0.1, atol=0.002)
        assert set(monthly.edges) <= set(rows[:, 1].tolist())  # edges are data values
        tickets = by_name["num_support_tickets"]  # a few integers: ties merge deciles
        assert tickets.edges == sorted(set(tickets.edges))
        assert len(tickets.edges) < 9
        assert by_name["is_month_to_month"].kind == "boolean"
        assert by_name["is_month_to_month"].edges == [1.0]  # bin 0 false, bin 1 true
        assert by_name["is_month_to_month"].shares[1] == pytest.approx(rows[:, 4].mean())
        for bins in profile.features:
            assert min(bins.shares) > 0, bins.name
            assert sum(bins.shares) == pytest.approx(1.0)
        assert expected_counts(profile, rows) == Counter(
            {
                (bins.name, str(i)): round(share * 5000)
                for bins in profile.features
                for i, share in enumerate(bins.shares)
            }
        )

    def test_holdout_distribution_uses_the_probability_histogram_buckets(
        self, profile: Profile
    ) -> None:
        assert profile.probability.bounds == list(PROBABILITY_BUCKETS)
        assert profile.probability.holdout_rows == 1001
        assert sum(profile.probability.shares) == pytest.approx(1.0)
        assert profile.probability.shares[0] == pytest.approx(51 / 1001)  # 0, 0.001 .. 0.05

    def test_encodes_and_decodes_to_the_same_profile(self, profile: Profile) -> None:
        assert decode(profile.encode()) == profile

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (lambda d: d["features"].reverse(), "features are not"),
            (lambda d: d["features"][0]["shares"].pop(), "one share per bin"),
            (lambda d: d["features"][1]["edges"].reverse(), "increase strictly"),
            (lambda d: d.update(format_version=2), "version 1"),
            (lambda d: d.update(extra=1), "unknown field"),
        ],
    )
    def test_a_broken_file_is_refused_saying_why(
        self, profile: Profile, change: Any, message: str
    ) -> None:
        document = msgspec.json.decode(profile.encode())
        change(document)

        with pytest.raises(msgspec.ValidationError, match=message):
            decode(msgspec.json.encode(document))


class TestDriftTally:
    def test_counts_every_row_in_its_bin_and_writes_only_on_flush(self, profile: Profile) -> None:
        tally, version = DriftTally(), f"t-{uuid.uuid4().hex[:8]}"
        rows = training_like(3000, seed=4)
        rows[:100, 0] = 600  # far beyond the last edge
        rows[100:200, 1] = 0.01  # below the first edge
        chunks = [rows[:1], rows[1:2], rows[2:1002], rows[1002:1003], rows[1003:]]

        for chunk in chunks[:4]:
            tally.rows(profile, version, chunk)
        assert counted(version, profile) == Counter()  # nothing written on the request path
        tally.rows(profile, version, chunks[4])  # > DRAIN_ROWS kept: binned, still not written
        assert len(rows) > DRAIN_ROWS // 2
        tally.flush()

        assert counted(version, profile) == expected_counts(profile, rows)

    def test_rows_of_two_versions_are_counted_apart(self, profile: Profile) -> None:
        other = build(training_like(2000, seed=5) * [2, 1, 1, 1, 1], np.zeros(1), (1.0,))
        tally, stem = DriftTally(), uuid.uuid4().hex[:8]
        first, second = training_like(400, seed=6), training_like(300, seed=7)

        for k in range(4):  # in-flight requests of the old model interleave with the new one's
            tally.rows(profile, f"{stem}-1", first[k * 100 : (k + 1) * 100])
            tally.rows(other, f"{stem}-2", second[k * 75 : (k + 1) * 75])
        tally.flush()

        assert counted(f"{stem}-1", profile) == expected_counts(profile, first)
        assert counted(f"{stem}-2", other) == expected_counts(other, second)

    def test_a_model_without_profile_counts_nothing(self, profile: Profile) -> None:
        tally = DriftTally()
        tally.rows(None, "none", training_like(10, seed=8))
        tally.flush()

        labels = {"feature": FEATURES[0], "bin": "0", "version": "none"}
        assert REGISTRY.get_sample_value(ROWS, labels) is None


# --- with the real registry ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(registry: Registry) -> Iterator[Client]:
    with TestClient(create_app(registry.settings())) as client:
        yield client


def test_churn_api_train_logs_the_profile_the_service_loads(registry: Registry) -> None:
    champion = load_champion(registry.settings())

    assert champion.profile == fit(Generation(samples=2000))[3]  # the conftest champion's data
    for bins in champion.profile.features:
        for index, share in enumerate(bins.shares):
            labels = {"feature": bins.name, "bin": str(index), "version": registry.version}
            assert REGISTRY.get_sample_value(SHARE, labels) == share
            assert REGISTRY.get_sample_value(ROWS, labels) is not None  # exists from 0
    reloaded = RegistrySource().load(registry.settings(), registry.version)
    assert reloaded.profile == champion.profile


def test_scored_rows_are_counted_by_bin_and_version(registry: Registry, served: Client) -> None:
    profile = load_champion(registry.settings()).profile
    assert profile is not None
    rows = training_like(700, seed=12)
    before = counted(registry.version, profile)

    for customer in payloads(rows[:50]):
        assert served.post("/predict", json=customer).status_code == 200
    batch = served.post("/predict/batch", json={"instances": payloads(rows[50:])})
    assert batch.status_code == 200
    served.get("/metrics")  # a scrape flushes this process's counts

    assert counted(registry.version, profile) - before == expected_counts(profile, rows)
    assert served.get("/model-info").json()["drift_monitoring"] is True


def test_drift_metrics_can_be_turned_off(registry: Registry) -> None:
    settings = registry.settings(drift_metrics=False)
    profile = load_champion(registry.settings()).profile
    assert profile is not None
    with TestClient(create_app(settings)) as client:
        before = counted(registry.version, profile)
        rows = training_like(100, seed=13)
        assert client.post("/predict/batch", json={"instances": payloads(rows)}).status_code == 200
        client.get("/metrics")

        assert counted(registry.version, profile) == before
        assert client.get("/model-info").json()["drift_monitoring"] is False


def test_drift_metrics_setting() -> None:
    assert Settings.from_environ({}).drift_metrics is True
    assert Settings.from_environ({"DRIFT_METRICS": "off"}).drift_metrics is False
    with pytest.raises(StartupError, match="setting DRIFT_METRICS must be one of"):
        Settings.from_environ({"DRIFT_METRICS": "sometimes"})


@pytest.fixture
def own_mlflow_uris() -> Iterator[None]:
    """Put MLflow's process-wide tracking and registry URIs back after the test (later tests
    load ``models:/...`` URIs from the session registry without naming it)."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@pytest.mark.usefixtures("own_mlflow_uris")
def test_a_model_logged_without_profile_serves_without_drift_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts run artifacts under ./mlruns
    monkeypatch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pipeline, _, _, _ = fit(Generation(samples=500, seed=21))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("churn")
    with mlflow.start_run():  # someone else's training code: a model and nothing else
        info = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=MODEL_NAME)
    MlflowClient(uri, uri).set_registered_model_alias(
        MODEL_NAME, "champion", str(info.registered_model_version)
    )
    settings = Settings(tracking_uri=uri, model_name=MODEL_NAME)

    with caplog.at_level(logging.WARNING, logger="churn_api"):
        champion = load_champion(settings)
    lines = [r.getMessage() for r in caplog.records if "reference_profile.json" in r.getMessage()]
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json=payloads(training_like(1, seed=1))[0])
        info_body = client.get("/model-info").json()

    assert champion.profile is None
    assert len(lines) == 1, lines  # once per load, not per request
    assert "no drift metrics" in lines[0]
    assert answer.status_code == 200
    assert info_body["drift_monitoring"] is False
    assert info_body["version"] == champion.version


def test_the_command_line_imports_no_prometheus_client_before_serve_sets_its_dir() -> None:
    # prometheus_client picks its multiprocess mode when imported: `churn-api serve` must set
    # PROMETHEUS_MULTIPROC_DIR first (app/serve.py), so importing app.cli (and app.train) must not.
    code = "import sys, app.cli; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
