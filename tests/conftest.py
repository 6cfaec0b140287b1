"""Shared fixtures: in-process apps with a fake model, a real MLflow registry, a real server.

The registry and the server are session-scoped: training, logging and starting granian take
seconds, and every test that needs them only reads from them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from support import FakeModel, champion, running_server, server_environ

from app.main import Loader, create_app
from app.settings import Settings

MODEL_NAME = "churn-classifier"
REORDERED_ALIAS = "reordered"

MakeClient = Callable[..., TestClient[Any]]


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Start an app (real lifespan) whose loader returns ``model``; closed after the test.

    ``make_client(predict=fn)`` serves a fake champion scoring with ``fn``;
    ``make_client(loader=...)`` replaces the loader itself (e.g. one returning ``None``).
    """
    with ExitStack() as stack:

        def make(
            predict: Any = None,
            *,
            settings: Settings | None = None,
            loader: Loader | None = None,
        ) -> TestClient[Any]:
            model = champion(predict if predict is not None else FakeModel())
            app = create_app(settings or Settings(), loader=loader or (lambda _: model))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient, fake_model: FakeModel) -> TestClient[Any]:
    """An app serving :class:`FakeModel` (version "7") with default settings."""
    return make_client(fake_model)


@dataclass(frozen=True)
class Registry:
    """A real SQLite MLflow registry holding a trained champion."""

    uri: str
    name: str
    alias: str
    version: str
    run_id: str
    reordered_alias: str
    reordered_version: str
    workdir: Path

    def settings(self, **changes: Any) -> Settings:
        values: dict[str, Any] = {
            "tracking_uri": self.uri,
            "model_name": self.name,
            "model_alias": self.alias,
        }
        return Settings(**{**values, **changes})

    def environ(self, **variables: str) -> dict[str, str]:
        defaults = {
            "MLFLOW_TRACKING_URI": self.uri,
            "MODEL_NAME": self.name,
            "MODEL_ALIAS": self.alias,
        }
        return server_environ(**{**defaults, **variables})


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Train and register a champion, plus a model fitted with its columns in another order."""
    workdir = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # MLflow puts run artifacts under ./mlruns of the working directory
        from app.train import Generation, train_and_register

        trained = train_and_register(uri, MODEL_NAME, "champion", Generation(samples=2000))
        reordered_version = register_reordered_model(uri, MODEL_NAME, REORDERED_ALIAS)
    yield Registry(
        uri=uri,
        name=MODEL_NAME,
        alias="champion",
        version=trained.version,
        run_id=trained.run_id,
        reordered_alias=REORDERED_ALIAS,
        reordered_version=reordered_version,
        workdir=workdir,
    )
    shutil.rmtree(workdir / "mlruns", ignore_errors=True)


def register_reordered_model(uri: str, name: str, alias: str) -> str:
    """The same kind of pipeline, fitted on a DataFrame whose columns are in reverse order."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from app.train import Generation, synthesize

    frame, churn = synthesize(Generation(samples=500, seed=11))
    frame = frame[list(reversed(frame.columns))]
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
    pipeline.fit(frame, churn)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("churn")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=name)
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        name, alias, version
    )
    return version


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


@pytest.fixture(scope="session")
def server(registry: Registry) -> Iterator[Server]:
    """``churn-api serve --workers 2`` on a free loopback port, serving the registry's champion."""
    with running_server(registry.environ(), registry.workdir, workers=2) as (url, process):
        yield Server(base_url=url, pid=process.pid)
