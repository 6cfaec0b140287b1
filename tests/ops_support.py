"""The real processes and models the tests start: a trained registry, servers, load, metrics.

``support.py`` holds the in-process world (payloads, fake models, champions built in memory);
this module holds everything that trains a real model or runs as another process: the registry
trainers (used once per test run by the ``registry`` fixture of ``conftest.py``, and by tests that
need a registry of their own, e.g. behind a real ``mlflow server``), the one launcher of
``churn-api serve`` (:func:`start_server`), ``mlflow server`` (:class:`MlflowServer`), a threaded
load generator (:class:`Load`) and the ``/metrics`` scraper.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support import VALID

if TYPE_CHECKING:
    from app.train import TrainResult

MODEL_NAME: Final = "churn-classifier"
ALIAS: Final = "champion"
START_SECONDS: Final = 120.0
ADMIN_TOKEN: Final = "ops-test-token-0123456789"


# --- a real registry -----------------------------------------------------------------------------


@contextlib.contextmanager
def training_in(workdir: Path) -> Iterator[None]:
    """Train with ``workdir`` as working directory (MLflow puts run artifacts under ./mlruns).

    MLflow spends seconds per model inferring its pip requirements; the tests never read them,
    so the inference gets 1 second. Both are put back afterwards.
    """
    previous = Path.cwd()
    inference_timeout = os.environ.get("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT")
    os.chdir(workdir)
    os.environ["MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT"] = "1"
    try:
        yield
    finally:
        os.chdir(previous)
        if inference_timeout is None:
            del os.environ["MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT"]
        else:
            os.environ["MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT"] = inference_timeout


def train_versions(uri: str, workdir: Path) -> tuple[TrainResult, TrainResult]:
    """Register two versions of the real pipeline; the first is the champion."""
    from app.train import Generation, train_and_register

    with training_in(workdir):
        first = train_and_register(uri, MODEL_NAME, ALIAS, Generation(samples=2000))
        second = train_and_register(
            uri, MODEL_NAME, ALIAS, Generation(samples=2000, seed=8), promote=False
        )
    return first, second


def register_reordered(uri: str, workdir: Path, alias: str) -> str:
    """The same kind of pipeline fitted on columns in reverse order (fails the feature guard)."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from app.train import Generation, synthesize

    with training_in(workdir):
        frame, churn = synthesize(Generation(samples=500, seed=11))
        frame = frame[list(reversed(frame.columns))]
        pipeline = Pipeline(
            [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
        ).fit(frame, churn)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        mlflow.set_experiment("churn")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                pipeline, name="model", registered_model_name=MODEL_NAME
            )
    version = str(info.registered_model_version)
    set_alias(uri, version, alias)
    return version


def set_alias(uri: str, version: str, alias: str = ALIAS) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(
        MODEL_NAME, alias, version
    )


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environ(**variables: str) -> dict[str, str]:
    """This process's environment (without PYTHONWARNINGS) plus ``variables``, for a child."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **variables}
    env.pop("PYTHONWARNINGS", None)
    return env


def serve_command(port: int, workers: int = 2, *options: str) -> list[str]:
    """``churn-api serve`` through the interpreter running the tests (same venv)."""
    return [
        sys.executable, "-m", "app", "serve", *options,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


@dataclass
class Started:
    """A process a test started in its own session (so only it is ever killed), with its log."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        """The output so far, complete lines only (the process may be writing one right now)."""
        text = self.log.read_text(errors="replace")
        return text[: text.rfind("\n") + 1]

    def stop(self, timeout: float = 30.0, *, group: bool = False) -> int:
        """SIGTERM (to its whole session if ``group``) and wait; SIGKILL the session if ignored."""
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        return self.process.returncode


def launch(command: list[str], env: Mapping[str, str], workdir: Path, log: Path) -> Started:
    """Start ``command`` in ``workdir`` in its own session, its output appended to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=dict(env), cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Started(process, log)


@dataclass
class Server(Started):
    """``churn-api serve`` started by a test."""

    base_url: str = ""
    metrics_dir: Path = field(default_factory=Path)
    workers: int = 2

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)


def start_server(uri: str, workdir: Path, workers: int = 2, **variables: str) -> Server:
    """Start the server on a free loopback port; return once every worker serves a model.

    It polls no registry (``MODEL_POLL_SECONDS=0``) and writes its metrics under
    ``workdir/prometheus`` unless ``variables`` say otherwise. ``check="1"`` starts it as
    ``churn-api serve`` runs by default (fetched and checked in the main process before the
    workers start); otherwise with ``--skip-check`` (each worker loads alone).
    """
    check = variables.pop("check", "") == "1"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    metrics_dir = workdir / "prometheus"
    defaults = {
        "MLFLOW_TRACKING_URI": uri,
        "MODEL_NAME": MODEL_NAME,
        "MODEL_ALIAS": ALIAS,
        "MODEL_POLL_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    env = server_environ(**{**defaults, **variables})
    options = [] if check else ["--skip-check"]
    started = launch(serve_command(port, workers, *options), env, workdir, workdir / "server.log")
    server = Server(started.process, started.log, f"http://127.0.0.1:{port}", metrics_dir, workers)
    try:
        wait_for(lambda: serving_workers(server) == workers, START_SECONDS, server)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def server_for(uri: str, workdir: Path, workers: int = 2, **variables: str) -> Iterator[Server]:
    """:func:`start_server` as a context: the server is stopped on the way out."""
    server = start_server(uri, workdir, workers, **variables)
    try:
        yield server
    finally:
        server.stop()


def wait_for(
    condition: Callable[..., object], timeout: float, process: Started | None = None
) -> None:
    """Poll ``condition()`` (bounded) until it is true; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.process.poll() is not None:
            raise AssertionError(
                f"process exited ({process.process.returncode}):\n{process.log_text()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if condition():
                return
        time.sleep(0.2)  # poll interval: the loop waits for a real condition
    tail = process.log_text()[-4000:] if process is not None else ""
    raise AssertionError(f"condition not met within {timeout:.0f}s\n{tail}")


def healthy(base_url: str) -> bool:
    """``GET /health`` answers 200 (a transport error is not an answer: :func:`wait_for`)."""
    return httpx.get(f"{base_url}/health", timeout=2.0).status_code == 200


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return sorted(found)


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 (SQLite backend and artifacts in ``workdir``, artifacts
    served), in its own session; stopped and started again on the same port by the tests."""

    workdir: Path
    port: int = field(default_factory=free_port)
    running: Started | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination", str(self.workdir / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.running = launch(command, os.environ, self.workdir, self.workdir / "mlflow.log")
        wait_for(lambda: healthy(self.uri), START_SECONDS, self.running)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(group=True)  # its own session: the server and its workers
        self.running = None


# --- metrics -------------------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(base_url: str) -> Samples:
    """``/metrics`` parsed with prometheus_client's parser: sample name -> (labels, value)."""
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(key) == wanted for key, wanted in labels.items())
    )


def serving_workers(server: Server) -> int:
    """Worker processes that report a loaded model (``churn_model_info`` is a live sum)."""
    return int(total(scrape(server.base_url), "churn_model_info"))


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """A bounded threaded load generator: ``threads`` loops of POST /predict, one client each.

    Every outcome is recorded: the status, the model version that answered, and any transport
    error by type (``cut_off`` counts errors after the response status line had arrived).
    """

    base_url: str
    threads: int = 8
    max_seconds: float = 60.0
    path: str = "/predict"
    body: Any = field(default_factory=lambda: VALID)
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cut_off: int = 0
    timeline: list[tuple[float, float, str]] = field(default_factory=list)
    sequences: dict[int, list[str]] = field(default_factory=dict)
    """Per thread, the model versions of its 200 answers in order."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(self.errors.values()) + sum(
                count for status, count in self.statuses.items() if status != 200
            )

    def _loop(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with self._lock:
            answers = self.sequences.setdefault(index, [])
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                outcome = self._one(client, answers)
                with self._lock:
                    self.timeline.append((started, time.monotonic(), outcome))

    def _one(self, client: httpx.Client, answers: list[str]) -> str:
        headers_seen = False
        try:
            with client.stream("POST", self.path, json=self.body) as response:
                headers_seen = True
                body = response.read()
                status = response.status_code
                version = httpx.Response(status, content=body).json().get("model_version", "")
        except (httpx.TransportError, ValueError) as exc:
            with self._lock:
                self.errors[type(exc).__name__] += 1
                if headers_seen:
                    self.cut_off += 1
            return f"error:{type(exc).__name__}"
        with self._lock:
            self.statuses[status] += 1
            if status == 200:
                self.versions[str(version)] += 1
                answers.append(str(version))
        return str(status)
