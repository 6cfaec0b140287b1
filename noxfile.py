"""Sessions: ``nox -s serve`` runs the service, ``nox -s tests`` the test suite (see README)."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests"]
nox.needs_version = ">=2024.4.15"

PYTHON = "3.11"


def sync(session: nox.Session, *groups: str) -> None:
    """Install the project and the given dependency groups exactly as pinned in uv.lock."""
    args = ["uv", "sync", "--locked", "--compile-bytecode", "--inexact"]
    for group in groups:
        args += ["--group", group]
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location})


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (web layer, real MLflow registry, real granian server, browser)."""
    sync(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """schemathesis over every operation of the OpenAPI document: >= 1,000 requests, real server."""
    sync(session, "test")
    examples = os.environ.get("FUZZ_EXAMPLES", "300")
    session.run(
        "pytest", "tests/test_ops_server.py", "-k", "schemathesis", "-s", *session.posargs,
        env={"FUZZ_EXAMPLES": examples},
    )  # fmt: skip


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy --strict."""
    sync(session, "lint", "test")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session(python=PYTHON, default=False)
def serve(session: nox.Session) -> None:
    """Train and register a champion if the local registry has none, then serve it on :8000."""
    sync(session)
    session.run("churn-api", "train", "--if-missing")
    session.run("churn-api", "serve", *session.posargs, env={"PYTHONUNBUFFERED": "1"})


@nox.session(python=PYTHON, default=False)
def train(session: nox.Session) -> None:
    """Train, register and promote a new champion version (options: see churn-api train -h)."""
    sync(session)
    session.run("churn-api", "train", *session.posargs)


@nox.session(python=PYTHON, default=False)
def perf(session: nox.Session) -> None:
    """Benchmark churn-api against its FastAPI twin with wrk (-- --short: CI smoke, < 1 min)."""
    need_wrk(session)
    sync(session, "perf")
    session.run("python", "perf/bench.py", *session.posargs, env={"PYTHONUNBUFFERED": "1"})


@nox.session(python=PYTHON, default=False)
def soak(session: nox.Session) -> None:
    """Steady load at ~60 % of the maximum with a hot-swap a minute (-- --minutes N, default 10)."""
    need_wrk(session)
    sync(session, "perf")
    session.run("python", "perf/soak.py", *session.posargs, env={"PYTHONUNBUFFERED": "1"})


def need_wrk(session: nox.Session) -> None:
    """wrk from apt-get when it is missing (as root), else a message saying how to install it."""
    if shutil.which("wrk") is None:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            session.error(f"{session.name} needs wrk: install it (apt-get install -y wrk)")
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "wrk", external=True)


@nox.session(python=PYTHON, default=False)
def container(session: nox.Session) -> None:
    """Build the image, serve a real MLflow server's champion from it and check it (deploy/README).

    Engine: CONTAINER_ENGINE (a command, e.g. podman, docker or ../shared/tools/podman-here),
    else podman or docker, whichever exists; base image: BASE_IMAGE if set.
    """
    engine = os.environ.get("CONTAINER_ENGINE") or shutil.which("podman") or shutil.which("docker")
    if not engine:
        session.error("no container engine: install podman or docker, or set CONTAINER_ENGINE")
    sync(session)  # churn-api train, mlflow server and the in-process reference prediction
    args = ["--engine", engine]
    if os.environ.get("BASE_IMAGE"):
        args += ["--base-image", os.environ["BASE_IMAGE"]]
    session.run(
        "python", "tests/container/check_image.py", *args, *session.posargs,
        env={"PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


if os.environ.get("CI"):
    nox.options.error_on_missing_interpreters = True
