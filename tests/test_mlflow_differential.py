"""churn-api's ``/invocations`` against ``mlflow models serve`` on the same registry versions.

``mlflow models serve --env-manager local`` (shipped with the mlflow dependency) runs on 127.0.0.1
next to the real churn-api server; both answer the same requests in every layout. A second version,
the same estimator logged with ``pyfunc_predict_fn="predict_proba"``, is served by both too. The
MLflow servers are started once for the module (in parallel: each takes seconds).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import Registry, Server
from ops_support import START_SECONDS, Started, free_port, healthy, launch, server_for, wait_for
from support import CUSTOMERS, VALID, customer

from app.schemas import FEATURES

pytestmark = pytest.mark.e2e

PROBA_ALIAS = "proba"


@dataclass(frozen=True)
class Stacks:
    churn: str
    mlflow: str
    churn_proba: str
    mlflow_proba: str
    proba_uri: str


@contextlib.contextmanager
def mlflow_serve(uri: str, model_uri: str, workdir: Path) -> Iterator[tuple[str, Started]]:
    """Start ``mlflow models serve`` in its own session; yield its URL and process."""
    port = free_port()
    log = workdir / f"mlflow-serve-{port}.log"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    started = launch(command, env, workdir, log)
    try:
        yield f"http://127.0.0.1:{port}", started
    finally:
        started.stop(group=True)  # the session started above: only its processes


def register_proba_version(uri: str, registry: Registry) -> str:
    """The champion's estimator again, logged with ``pyfunc_predict_fn="predict_proba"``."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    estimator = mlflow.sklearn.load_model(f"models:/{registry.name}/{registry.version}")
    example = pd.DataFrame(CUSTOMERS, columns=list(FEATURES))
    mlflow.set_experiment("churn")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=infer_signature(example, estimator.predict_proba(example)),
            input_example=example,
            registered_model_name=registry.name,
            pyfunc_predict_fn="predict_proba",
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_PICKLE,
        )
    version = str(info.registered_model_version)
    MlflowClient(uri, uri).set_registered_model_alias(registry.name, PROBA_ALIAS, version)
    return version


@pytest.fixture(scope="module")
def stacks(
    registry: Registry, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stacks]:
    workdir = tmp_path_factory.mktemp("differential")
    uri = registry.copy(workdir)  # this module's own aliases
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")
        proba = register_proba_version(uri, registry)
    with (
        mlflow_serve(registry.uri, f"models:/{registry.name}/{registry.version}", workdir) as plain,
        mlflow_serve(uri, f"models:/{registry.name}/{proba}", workdir) as with_proba,
        server_for(
            uri, workdir / "churn-proba", 1, check="1", MODEL_ALIAS=PROBA_ALIAS
        ) as churn_proba,
    ):
        for url, started in (plain, with_proba):
            wait_for(lambda: healthy(url), START_SECONDS, started)  # noqa: B023
        yield Stacks(server.base_url, plain[0], churn_proba.base_url, with_proba[0], uri)


def valid_customers(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Contract-valid customers over the range the model was trained on, both labels likely."""
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(count):
        tenure = int(rng.integers(0, 73))
        monthly = round(float(rng.uniform(18, 120)), 2)
        total = round(monthly * tenure * float(rng.uniform(1.0, 1.2)), 2) if tenure else 0.0
        found.append(
            {
                "tenure_months": tenure,
                "monthly_charges": monthly,
                "total_charges": total,
                "num_support_tickets": int(rng.integers(0, 10)),
                "is_month_to_month": bool(rng.integers(0, 2)),
            }
        )
    return [*CUSTOMERS, *found]


ROWS = valid_customers(300)


def requests(rows: list[dict[str, Any]]) -> dict[str, tuple[str, bytes]]:
    """The same rows in each layout: (content type, body)."""
    frame = pd.DataFrame(rows, columns=list(FEATURES))
    shuffled = frame[list(reversed(FEATURES))].assign(customer_id=range(len(frame)))
    as_json = {
        "dataframe_split": {"dataframe_split": shuffled.to_dict(orient="split")},
        "dataframe_records": {"dataframe_records": shuffled.to_dict(orient="records")},
        "instances": {"instances": frame.to_dict(orient="records")},
        "inputs": {"inputs": {name: frame[name].tolist() for name in FEATURES}},
    }
    found = {name: ("application/json", _encode(body)) for name, body in as_json.items()}
    found["csv"] = ("text/csv", shuffled.to_csv(index=False).encode())
    return found


def _encode(body: Any) -> bytes:
    import json

    return json.dumps(body, default=lambda o: o.item()).encode()


def invoke(base_url: str, content_type: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{base_url}/invocations", content=body, headers={"Content-Type": content_type}, timeout=60
    )


@pytest.mark.parametrize("layout", list(requests(ROWS[:2])))
def test_every_layout_answers_what_mlflow_models_serve_answers(stacks: Stacks, layout: str) -> None:
    content_type, body = requests(ROWS)[layout]

    ours, theirs = (
        invoke(stacks.churn, content_type, body),
        invoke(stacks.mlflow, content_type, body),
    )

    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert ours.json() == theirs.json()
    assert set(ours.json()["predictions"]) == {0, 1}  # both labels occur: a real comparison


@pytest.mark.parametrize("layout", ["dataframe_split", "dataframe_records", "csv"])
def test_a_predict_proba_model_answers_mlflows_probabilities(stacks: Stacks, layout: str) -> None:
    content_type, body = requests(ROWS)[layout]

    ours = invoke(stacks.churn_proba, content_type, body).json()["predictions"]
    theirs = invoke(stacks.mlflow_proba, content_type, body).json()["predictions"]

    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=0, atol=1e-12)
    # The labels churn-api derives, classes_[argmax(predict_proba)], are scikit-learn's predict.
    labels = invoke(stacks.mlflow, content_type, body).json()["predictions"]
    assert np.argmax(np.array(ours), axis=1).tolist() == labels


INVALID: list[tuple[str, bytes]] = [
    ("application/json", b"nope"),
    ("application/json", b"[1, 2]"),
    ("application/json", b"{}"),
    ("application/json", b'{"dataframe_records": [{"tenure_months": 12}]}'),
    ("application/json", b'{"instances": [[12, 79.5, 954.0, 3, true]]}'),
    ("text/csv", b"tenure_months\n12\n"),
]


@pytest.mark.parametrize(("content_type", "body"), INVALID)
def test_what_mlflow_refuses_churn_api_refuses_with_the_same_code_and_no_traceback(
    stacks: Stacks, content_type: str, body: bytes
) -> None:
    ours, theirs = (
        invoke(stacks.churn, content_type, body),
        invoke(stacks.mlflow, content_type, body),
    )

    assert ours.status_code == theirs.status_code == 400, (ours.text, theirs.text)
    assert ours.json()["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"}
    assert "Traceback" not in ours.text
    assert "site-packages" not in ours.text


@pytest.mark.parametrize(
    "bad",
    [
        customer(tenure_months=-12),
        customer(tenure_months=12.5),
        customer(tenure_months="12"),
        customer(total_charges=1.0),
    ],
)
def test_rows_mlflow_scores_anyway_get_400_naming_the_column(
    stacks: Stacks, bad: dict[str, Any]
) -> None:
    body = _encode({"dataframe_records": [VALID, bad]})

    ours = invoke(stacks.churn, "application/json", body)

    assert invoke(stacks.mlflow, "application/json", body).status_code == 200  # MLflow: lax
    assert ours.status_code == 400
    assert ours.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert ours.json()["message"].startswith("dataframe_records[1].")


def test_mlflows_own_client_predicts_through_churn_api(stacks: Stacks) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient as Untyped

    ScoringServerClient: Any = Untyped  # MLflow's client has no annotations

    host, port = stacks.churn.removeprefix("http://").split(":")
    frame = pd.DataFrame(ROWS, columns=list(FEATURES))
    ours, theirs = (
        ScoringServerClient(host, port),
        ScoringServerClient(*stacks.mlflow[7:].split(":")),
    )

    ours.wait_server_ready(timeout=10)
    assert ours.get_version() == package_version("churn-api")
    got = ours.invoke(frame, params={"ignored": 1}).get_predictions()
    assert got.equals(theirs.invoke(frame).get_predictions())


def test_both_load_paths_read_the_pyfunc_flavor_and_classes(
    stacks: Stacks, registry: Registry
) -> None:
    from app.checks import load_champion
    from app.reload import RegistrySource

    copy = registry.settings(tracking_uri=stacks.proba_uri, model_alias=PROBA_ALIAS)
    at_start = load_champion(copy)
    swapped_in = RegistrySource().load(copy, at_start.version)
    plain = load_champion(registry.settings())

    assert (at_start.pyfunc_predict_fn, at_start.classes) == ("predict_proba", (0, 1))
    assert (swapped_in.pyfunc_predict_fn, swapped_in.classes) == ("predict_proba", (0, 1))
    assert (plain.pyfunc_predict_fn, plain.classes) == ("predict", (0, 1))
