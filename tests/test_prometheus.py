"""The monitoring kit of deploy/: Prometheus rules (promtool), the Grafana dashboard, and both
against a real Prometheus scraping the real server while its traffic drifts.

Debian's ``prometheus`` package provides ``prometheus`` and ``promtool`` (.ci/run installs it);
with ``CI`` set a missing binary fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import pytest
import yaml
from conftest import Registry
from ops_support import Server, Started, free_port, launch, start_server, wait_for
from support import payloads, training_like

from app.schemas import FEATURES

ROOT: Final = Path(__file__).resolve().parents[1]
RULES: Final = ROOT / "deploy" / "prometheus"
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "churn-api.json"
DEPLOYMENT: Final = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
WAIT_SECONDS: Final = 60.0
# What Grafana puts in for its variables when the dashboard's expressions are evaluated here.
GRAFANA_VARIABLES: Final = {
    "$__rate_interval": "5m",
    "$__range": "5m",
    "$feature": "tenure_months",
}


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} is not installed (apt-get install -y prometheus)")
    return found


def promtool(*args: str, cwd: Path = RULES) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# --- the files alone ---------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", "rules.yml", "alerts.yml")

    assert "7 rules found" in out
    assert "6 rules found" in out


def test_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "tests/rules.test.yml")


def test_the_example_prometheus_config_checks_with_the_rules() -> None:
    assert "2 rule files found" in promtool("check", "config", "prometheus.yml")


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"][0]["rules"]

    assert {rule["alert"] for rule in rules} == {
        "ChurnFeatureDrift",
        "ChurnHighErrorRatio",
        "ChurnHighLatency",
        "ChurnNoModelLoaded",
        "ChurnModelReloadFailed",
        "ChurnRegistryUnreachable",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert len(rule["annotations"]["runbook"]) > 200, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    drift = next(rule for rule in rules if rule["alert"] == "ChurnFeatureDrift")
    assert drift["for"] == "30m"
    assert "churn:feature_psi:rate1h > 0.2" in drift["expr"]


def test_the_kubernetes_scrape_job_reads_the_pod_annotations() -> None:
    job = yaml.safe_load((RULES / "kubernetes-scrape.yml").read_text())["scrape_configs"][0]
    pod = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]

    sources = {label for step in job["relabel_configs"] for label in step["source_labels"]}
    for key in annotations:
        meta = "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
        assert meta in sources, key
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    name = pod["metadata"]["labels"]["app.kubernetes.io/name"]
    steps = job["relabel_configs"]
    keep = next(s for s in steps if "app_kubernetes_io_name" in s["source_labels"][0])
    assert keep["regex"] == name


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    document = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_is_importable_and_covers_the_service() -> None:
    document = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in document["templating"]["list"]}
    panels = [panel for panel in document["panels"] if panel["type"] != "row"]

    assert document["uid"] == "churn-api"
    assert document["id"] is None  # Grafana assigns its own on import
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["feature"]["query"].split(",") == list(FEATURES)
    for panel in panels:  # every query goes to the chosen Prometheus, none to a fixed uid
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    assert len({panel["id"] for panel in document["panels"]}) == len(document["panels"])
    assert not overlapping([panel["gridPos"] for panel in document["panels"]])
    expressions = " ".join(expr for _, expr in dashboard_targets())
    for metric in (
        "churn_http_requests_total",  # traffic and errors by status
        "churn_http_request_duration_seconds_bucket",  # latency percentiles
        "churn_batch_size_bucket",
        "churn_probability_bucket",  # the P(churn) distribution
        "churn_probability_reference_share",
        "churn:feature_psi:rate1h",
        "churn:feature_bin_share:rate1h",
        "churn_model_info",  # served version over time
        "churn_model_reloads_total",
    ):
        assert metric in expressions, metric


def overlapping(boxes: list[dict[str, int]]) -> list[tuple[int, int]]:
    clashes = []
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes[:i]):
            if (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            ):
                clashes.append((j, i))
    return clashes


# --- a real Prometheus scraping the real server -------------------------------------------------


@dataclass
class Prometheus(Started):
    base_url: str = ""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; fails on an error (a bad expression among them)."""
        response = httpx.get(f"{self.base_url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def by_feature(self, expr: str) -> dict[str, float]:
        return {s["metric"]["feature"]: float(s["value"][1]) for s in self.query(expr)}

    def alerts(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.base_url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts


@pytest.fixture
def served(registry: Registry, tmp_path: Path) -> Iterator[Server]:
    server = start_server(registry.uri, tmp_path / "server", workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(served: Server, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus 127.0.0.1, scraping the server every second, with the repository's rules.

    The only change to the rules: the drift alert fires after 2 s instead of 30 min.
    """
    where = tmp_path / "prometheus"
    where.mkdir()
    shutil.copy(RULES / "rules.yml", where / "rules.yml")
    alerts = yaml.safe_load((RULES / "alerts.yml").read_text())
    for rule in alerts["groups"][0]["rules"]:
        if rule["alert"] == "ChurnFeatureDrift":
            rule["for"] = "2s"
    (where / "alerts.yml").write_text(yaml.safe_dump(alerts, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml", "alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "churn-api",
                "static_configs": [{"targets": [served.base_url.removeprefix("http://")]}],
            }
        ],
    }
    (where / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = where / "prometheus.log"
    command = [
        binary("prometheus"),
        f"--config.file={where / 'prometheus.yml'}",
        f"--storage.tsdb.path={where / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    started = launch(command, os.environ, where, log)
    running = Prometheus(started.process, log, f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: ready(running), WAIT_SECONDS, running)
        yield running
    finally:
        running.stop(group=True)  # its own session: only what we started


def ready(prometheus: Prometheus) -> bool:
    return httpx.get(f"{prometheus.base_url}/-/ready", timeout=2).status_code == 200


def send(server: Server, rows: np.ndarray[Any, Any], singles: int = 0) -> None:
    """The first ``singles`` rows one by one to /predict, the rest in batches of 1000."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for customer in payloads(rows[:singles]):
            assert client.post("/predict", json=customer).status_code == 200
        for start in range(singles, len(rows), 1000):
            batch = {"instances": payloads(rows[start : start + 1000])}
            assert client.post("/predict/batch", json=batch).status_code == 200


def settled_psi(prometheus: Prometheus, rows: int) -> dict[str, float]:
    """PSI per feature once Prometheus has scraped all ``rows`` and evaluated the rules after."""
    seen: list[float] = []

    def counted() -> bool:
        counts = prometheus.by_feature("sum by (feature) (churn_feature_bin_rows_total)")
        if counts != dict.fromkeys(FEATURES, float(rows)):
            return False
        seen.append(
            float(prometheus.query("max(timestamp(churn_feature_bin_rows_total))")[0]["value"][1])
        )
        return True

    wait_for(counted, WAIT_SECONDS)

    def evaluated() -> bool:
        stamps = prometheus.by_feature("timestamp(churn:feature_psi:rate1h)")
        return set(stamps) == set(FEATURES) and min(stamps.values()) > seen[-1] + 1

    wait_for(evaluated, WAIT_SECONDS)
    return prometheus.by_feature("churn:feature_psi:rate1h")


@pytest.mark.e2e
def test_drift_shows_in_prometheus_and_fires_the_alert(
    served: Server, prometheus: Prometheus
) -> None:
    # Every bin series exists at 0 before the first row (so rate() counts the first rows).
    wait_for(
        lambda: (
            prometheus.by_feature("count by (feature) (churn_feature_bin_rows_total)").keys()
            == set(FEATURES)
        ),
        WAIT_SECONDS,
    )

    send(served, training_like(3000, seed=101), singles=200)
    stable = settled_psi(prometheus, 3000)
    print(f"\nPSI, 3000 rows like the training data: {stable}")
    assert set(stable) == set(FEATURES)
    assert all(value < 0.1 for value in stable.values()), stable
    assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "ChurnFeatureDrift"]

    shifted = training_like(12000, seed=202)
    shifted[:, 0] += 36  # three more years of tenure, the charges to match
    shifted[:, 2] = shifted[:, 0] * shifted[:, 1]
    send(served, shifted)
    drifted = settled_psi(prometheus, 15000)
    print(f"PSI, then 12000 rows with tenure + 36 months: {drifted}")
    assert drifted["tenure_months"] > 0.25, drifted
    assert drifted["monthly_charges"] < 0.1, drifted  # untouched features stay stable

    def drift_alert() -> bool:
        return any(
            alert["labels"]["alertname"] == "ChurnFeatureDrift"
            and alert["labels"]["feature"] == "tenure_months"
            and alert["state"] == "firing"
            for alert in prometheus.alerts()
        )

    wait_for(drift_alert, WAIT_SECONDS)
    firing = {a["labels"]["feature"] for a in prometheus.alerts() if a["state"] == "firing"}
    assert "monthly_charges" not in firing

    # One answer of each kind the error panels count: a 422 and a 404.
    assert httpx.post(f"{served.base_url}/predict", json={}).status_code == 422
    assert httpx.get(f"{served.base_url}/nowhere").status_code == 404
    wait_for(
        lambda: (
            prometheus.query('churn_http_requests_total{status="422"}')
            and prometheus.query('churn:http_requests:ratio_rate5m{status_class="4xx"}')
        ),
        WAIT_SECONDS,
    )
    empty = []
    for title, expr in dashboard_targets():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if not prometheus.query(expr):  # query() fails on any error
            empty.append(title)
    assert not empty, f"dashboard panels without data: {empty}"
    for path in (RULES / "rules.yml", RULES / "alerts.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                prometheus.query(rule["expr"])
    info = httpx.get(f"{served.base_url}/model-info").json()
    assert info["drift_monitoring"] is True
