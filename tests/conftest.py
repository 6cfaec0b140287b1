"""Shared fixtures: in-process apps with a fake model, a real MLflow registry, a real server.

The registry and the server are session-scoped: training, logging and starting granian take
seconds, and every test that needs them only reads from them (a test that moves an alias does it
in its own ``registry.copy(...)``). Helpers: ``support.py`` (in process) and ``ops_support.py``
(real processes).
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
from ops_support import (
    ALIAS,
    MODEL_NAME,
    register_reordered,
    server_environ,
    server_for,
    train_versions,
)
from ops_support import (
    Server as Server,
)
from support import FakeModel, Loader, app_with, champion

from app.settings import Settings

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
            app = app_with(settings or Settings(), loader or (lambda _: model))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient, fake_model: FakeModel) -> TestClient[Any]:
    """An app serving :class:`FakeModel` (version "7") with default settings."""
    return make_client(fake_model)


@dataclass(frozen=True)
class Registry:
    """A real SQLite MLflow registry: a trained champion, a second version and a reordered one.

    Trained once per test run. A test that moves an alias works on its own :meth:`copy` (the
    copies share the artifact files, which are only read), so tests never see each other's
    aliases.
    """

    uri: str
    name: str
    alias: str
    version: str
    """The champion's version."""
    run_id: str
    other_version: str
    """A second version of the same pipeline (another seed), registered, not promoted."""
    reordered_alias: str
    reordered_version: str
    """A pipeline fitted on the columns in reverse order: fails the feature guard."""
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

    def copy(self, where: Path) -> str:
        """A tracking URI of this registry's own copy of the database, in ``where``."""
        where.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.workdir / "mlflow.db", where / "mlflow.db")
        return f"sqlite:///{where / 'mlflow.db'}"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """Train and register the champion, a second version and a model fitted on reordered columns."""
    workdir = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    champion, other = train_versions(uri, workdir)
    reordered_version = register_reordered(uri, workdir, REORDERED_ALIAS)
    yield Registry(
        uri=uri,
        name=MODEL_NAME,
        alias=ALIAS,
        version=champion.version,
        run_id=champion.run_id,
        other_version=other.version,
        reordered_alias=REORDERED_ALIAS,
        reordered_version=reordered_version,
        workdir=workdir,
    )
    shutil.rmtree(workdir / "mlruns", ignore_errors=True)


@pytest.fixture(scope="session")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``churn-api serve --workers 2`` on a free loopback port, serving the registry's champion
    (checked in the main process first, as ``churn-api serve`` does by default)."""
    with server_for(registry.uri, tmp_path_factory.mktemp("server"), check="1") as running:
        yield running
