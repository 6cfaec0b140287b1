"""Every champion a user brings, served by the real server: it starts, and answers exactly.

One SQLite registry holds one version of each kind :mod:`app.train` fits, logged the ordinary way
(``mlflow.sklearn.log_model``; forests and boosting in MLflow's default skops format with their
trusted types), each under an alias named after its kind. For each, ``churn-api serve`` with two
workers (the way it runs by default: fetched and checked once in the main process) must start and
answer ``/predict``, ``/predict/batch`` and concurrent singles with what the model's own
``predict_proba`` on a DataFrame says (6 decimals; the label from the unrounded probability).

A HistGradientBoosting champion used to hang every worker at startup (its OpenMP pool was started
in the main process before granian forked the workers): the ``hgb`` case is that regression test,
and also kills a worker and checks the respawned one serves.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import pytest
from ops_support import (
    MODEL_NAME,
    Load,
    scrape,
    serving_workers,
    set_alias,
    start_server,
    total,
    wait_for,
)

from app.schemas import FEATURES
from app.scoring import proof_rows

pytestmark = pytest.mark.e2e

KINDS: Final = {  # kind: (serialization format, the scoring path it should be proven for)
    "lr": ("pickle", "linear"),
    "rf": ("skops", "forest"),
    "hgb": ("skops", "numpy"),
    "gb": ("pickle", "boosting"),
    "ct": ("pickle", "numpy"),  # selects its columns by name: rewritten to positions
}
STUCK_ALIAS: Final = "stuck"


@dataclass(frozen=True)
class Champions:
    uri: str
    workdir: Path
    versions: dict[str, str]
    estimators: dict[str, Any]

    def reference(self, kind: str, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What ``/predict`` must answer, from the model's own ``predict_proba`` on a DataFrame."""
        import pandas as pd

        frame = pd.DataFrame(customers, columns=list(FEATURES))
        scores = self.estimators[kind].predict_proba(frame)[:, 1]
        return [
            {
                "churn_probability": round(float(p), 6),
                "churn_label": bool(p >= 0.5),
                "model_version": self.versions[kind],
            }
            for p in scores
        ]


class StuckModel:
    """A model whose ``predict_proba`` never returns (stands for a deadlocked native pool)."""

    classes_ = np.array([0, 1])

    def predict_proba(self, rows: Any) -> Any:
        import threading

        threading.Event().wait()  # blocks forever, as a hung OpenMP call does


@pytest.fixture(scope="module")
def champions(tmp_path_factory: pytest.TempPathFactory) -> Champions:
    import mlflow
    import mlflow.sklearn

    from app.train import Generation, train_and_register

    workdir = tmp_path_factory.mktemp("champions")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    versions, estimators = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # MLflow puts run artifacts under ./mlruns
        patch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
        for kind, (serialization, _) in KINDS.items():
            trained = train_and_register(
                uri, MODEL_NAME, kind, Generation(samples=4000), kind=kind,
                serialization=serialization,
            )  # fmt: skip
            versions[kind] = trained.version
            estimators[kind] = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{trained.version}")
        mlflow.set_experiment("churn")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                StuckModel(), name="model", registered_model_name=MODEL_NAME,
                serialization_format="pickle",
            )  # fmt: skip
        set_alias(uri, str(info.registered_model_version), STUCK_ALIAS)
    return Champions(uri, workdir, versions, estimators)


def customers(count: int) -> list[dict[str, Any]]:
    """Contract-valid customers spread over every feature's range (the load-time proof rows)."""
    names = list(FEATURES)
    return [
        {
            name: bool(value) if name == "is_month_to_month" else
            int(value) if name in ("tenure_months", "num_support_tickets") else float(value)
            for name, value in zip(names, row, strict=True)
        }
        for row in proof_rows()[:count]
    ]  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_starts_with_two_workers_and_answers_exactly(
    champions: Champions, kind: str, tmp_path: Path
) -> None:
    server = start_server(champions.uri, tmp_path, 2, check="1", MODEL_ALIAS=kind)
    try:
        info = httpx.get(f"{server.base_url}/model-info").json()
        assert (info["version"], info["scoring"]) == (champions.versions[kind], KINDS[kind][1])

        batch = customers(300)
        got = httpx.post(f"{server.base_url}/predict/batch", json={"instances": batch}).json()
        assert got == {"predictions": champions.reference(kind, batch), "count": len(batch)}

        singles = customers(64)[:16]
        with ThreadPoolExecutor(16) as pool:  # 16 concurrent singles: scored in micro-batches
            answers = list(
                pool.map(lambda c: httpx.post(f"{server.base_url}/predict", json=c), singles)
            )
        assert [a.json() for a in answers] == champions.reference(kind, singles)
        assert total(scrape(server.base_url), "churn_model_call_rows_count") >= 1

        if kind == "hgb":  # a respawned worker (forked again from the main process) serves too
            victim = server.worker_pids()[0]
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: (
                    victim not in server.worker_pids()
                    and len(server.worker_pids()) == 2
                    and serving_workers(server) == 2
                ),
                60,
                server,
            )
            for _ in range(8):  # reach both workers
                one = httpx.post(f"{server.base_url}/predict", json=singles[0]).json()
                assert one == champions.reference(kind, singles[:1])[0]
    finally:
        server.stop()


def test_hot_swap_from_the_lr_pipeline_to_boosting_and_back_under_load(
    champions: Champions, tmp_path: Path
) -> None:
    import shutil

    shutil.copy(champions.workdir / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    set_alias(uri, champions.versions["lr"], "champion")
    server = start_server(uri, tmp_path, 2, check="1", MODEL_POLL_SECONDS="1")
    try:
        with Load(server.base_url, threads=6, max_seconds=90) as load:
            for kind in ("hgb", "lr"):
                version = champions.versions[kind]
                set_alias(uri, version, "champion")
                wait_for(
                    lambda v=version: (
                        total(scrape(server.base_url), "churn_model_info", version=v) == 2
                    ),
                    60,
                    server,
                )
                seen = load.answered
                wait_for(lambda s=seen: load.answered >= s + 50, 30, server)
        assert load.failed == 0, (load.statuses, load.errors)
        assert {champions.versions["hgb"], champions.versions["lr"]} <= set(load.versions)
        answer = httpx.post(f"{server.base_url}/predict", json=customers(1)[0]).json()
        assert answer == champions.reference("lr", customers(1))[0]
    finally:
        server.stop()


def run_to_exit(champions: Champions, workdir: Path, *args: str) -> tuple[int, str]:
    """``churn-api serve`` that must exit by itself (bounded); its exit status and output."""
    import subprocess
    import sys

    from ops_support import free_port, server_environ

    tests = str(Path(__file__).parent)  # StuckModel is unpickled from this module
    env = server_environ(
        MLFLOW_TRACKING_URI=champions.uri, MODEL_NAME=MODEL_NAME, MODEL_ALIAS=STUCK_ALIAS,
        STARTUP_TIMEOUT_SECONDS="3", PYTHONPATH=tests,
    )  # fmt: skip
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1",
               "--port", str(free_port()), *args]  # fmt: skip
    done = subprocess.run(
        command, env=env, cwd=workdir, capture_output=True, timeout=90, start_new_session=True
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def test_a_champion_stuck_in_its_check_stops_serve_with_one_line(
    champions: Champions, tmp_path: Path
) -> None:
    status, output = run_to_exit(champions, tmp_path)

    assert status == 1
    lines = [line for line in output.splitlines() if line.startswith("churn-api:")]
    assert len(lines) == 1, output
    assert "was not checked after 3s: stuck in scoring the probe rows" in lines[0]
    assert f"{MODEL_NAME} version" in lines[0]
    assert "Traceback" not in output


def test_a_worker_stuck_at_startup_stops_serve_with_one_line(
    champions: Champions, tmp_path: Path
) -> None:
    status, output = run_to_exit(champions, tmp_path, "--skip-check", "--workers", "2")

    assert status == 1
    lines = [line for line in output.splitlines() if line.startswith("churn-api:")]
    assert len(lines) == 1, output
    assert "not ready after 3s (STARTUP_TIMEOUT_SECONDS)" in lines[0]
    assert f"stuck in loading and checking {MODEL_NAME}@{STUCK_ALIAS}" in lines[0]
