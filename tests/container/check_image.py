"""Build the image and check it as a user would, against a real MLflow tracking server.

Run by ``nox -s container`` (not by pytest: it needs a container engine and takes minutes)::

    python tests/container/check_image.py --engine podman [--base-image IMAGE]

1. build the image from ``Containerfile`` (``--format docker`` with podman, to keep HEALTHCHECK);
2. start ``mlflow server`` (SQLite backend, artifact proxying) on a free loopback port and train
   and register a champion into it with ``churn-api train``;
3. run the image (host network, read-only root file system, all capabilities dropped, no new
   privileges) pointed at ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`` and check: ``/health`` 200,
   ``/livez`` 200, predictions equal to what the same registry version gives in this process,
   ``/model-info`` naming that version, no process running as root, the image's HEALTHCHECK passing,
   the image under 500 MB; measure startup, memory per process and the mean request time;
4. SIGKILL one worker inside the container and check that granian respawns it
   (``--respawn-failed-workers``, passed by ``churn-api serve``) and the server answers again;
5. stop the container (SIGTERM) and check that granian shut down gracefully, exit code 0;
6. stop the MLflow server and check that a fresh container exits non-zero within 30 s with a
   message naming what it could not load.

Prints each check as it goes and a summary of the figures at the end; exits 1 on the first failure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/churn-api:check"
MAX_IMAGE_BYTES = 500 * 1000 * 1000  # 500 MB, as `podman images` / `docker images` count them
FAIL_WITHIN_SECONDS = 30.0
MODEL_NAME = "churn-classifier"
MODEL_ALIAS = "champion"

CUSTOMERS: list[dict[str, Any]] = [
    {
        "tenure_months": 12,
        "monthly_charges": 79.5,
        "total_charges": 954.0,
        "num_support_tickets": 3,
        "is_month_to_month": True,
    },
    {
        "tenure_months": 48,
        "monthly_charges": 55.0,
        "total_charges": 2640.0,
        "num_support_tickets": 0,
        "is_month_to_month": False,
    },
    {
        "tenure_months": 0,
        "monthly_charges": 20.0,
        "total_charges": 0.0,
        "num_support_tickets": 7,
        "is_month_to_month": True,
    },
]

# Lists every process of the container with its user and memory, from inside it (no ps needed).
_PROCESSES = """
import json, os
rows = []
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    try:
        status = dict(l.split(':', 1) for l in open(f'/proc/{pid}/status') if ':' in l)
        roll = dict(l.split(':', 1) for l in open(f'/proc/{pid}/smaps_rollup') if ':' in l)
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode().strip()
    except OSError:
        continue
    kib = lambda d, k: int(d.get(k, '0 kB').split()[0])
    rows.append({'pid': pid, 'ppid': int(status['PPid']), 'uid': int(status['Uid'].split()[0]),
                 'cmd': cmd,
                 'rss_kib': kib(roll, 'Rss'), 'pss_kib': kib(roll, 'Pss')})
print(json.dumps(rows))
"""


class CheckFailed(Exception):
    pass


@dataclass
class Report:
    figures: dict[str, str] = field(default_factory=dict)

    def ok(self, what: str) -> None:
        print(f"  ok   {what}", flush=True)

    def check(self, condition: bool, what: str, detail: str = "") -> None:
        if not condition:
            raise CheckFailed(f"{what}{': ' + detail if detail else ''}")
        self.ok(what)

    def figure(self, name: str, value: str) -> None:
        self.figures[name] = value
        print(f"  --   {name}: {value}", flush=True)


class Engine:
    """A container engine command line: podman, docker, or a wrapper such as podman-here."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.name = Path(self.command[0]).name
        version = self.run("--version", capture=True).stdout.lower()
        self.is_podman = "podman" in version
        # The podman-here helper already runs every container on the host network.
        self.adds_host_network = self.name == "podman-here"

    def run(
        self, *args: str, capture: bool = False, check: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            check=check,
            text=True,
            capture_output=capture,
            timeout=timeout,
        )

    def run_args(self) -> list[str]:
        return [] if self.adds_host_network else ["--network", "host"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_json(url: str, body: object, timeout: float = 10.0) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def healthy(url: str) -> bool:
    try:
        return get(url, timeout=2.0)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(workdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``mlflow server`` with a SQLite backend and proxied artifacts, on 127.0.0.1 only."""
    log = (workdir / "mlflow-server.log").open("wb")
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--serve-artifacts",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield server
    finally:
        stop_process(server)
        log.close()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # its own session: the server and its workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def in_process_probabilities(tracking_uri: str) -> tuple[str, list[float]]:
    """What the registry's champion gives for CUSTOMERS in this process, rounded like the API."""
    from app.checks import load_champion
    from app.schemas import FEATURES
    from app.settings import Settings

    champion = load_champion(Settings(tracking_uri=tracking_uri))
    rows = np.array([[float(c[f]) for f in FEATURES] for c in CUSTOMERS], dtype=np.float64)
    return champion.version, [round(float(p), 6) for p in champion.predict(rows)]


def build(engine: Engine, base_image: str | None, report: Report) -> None:
    args = ["build", "-f", "Containerfile", "-t", IMAGE]
    if engine.is_podman:
        args += ["--format", "docker"]  # the OCI format drops HEALTHCHECK
    if base_image:
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
    from importlib.metadata import version

    args += ["--build-arg", f"VERSION={version('churn-api')}"]
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if revision:
        args += ["--build-arg", f"REVISION={revision}"]
    source = subprocess.run(
        ["git", "-C", str(ROOT), "remote", "get-url", "origin"], capture_output=True, text=True
    ).stdout.strip()
    if source:
        args += ["--build-arg", f"SOURCE_URL={source}"]
    started = time.monotonic()
    subprocess.run([*engine.command, *args, str(ROOT)], check=True, cwd=ROOT)
    report.figure("build time", f"{time.monotonic() - started:.0f} s")


def check_image(engine: Engine, report: Report) -> None:
    out = engine.run("image", "inspect", IMAGE, capture=True).stdout
    info = json.loads(out)[0]
    size = int(info["Size"])
    report.figure("image size", f"{size / 1e6:.0f} MB ({size / 2**20:.0f} MiB)")
    report.check(size < MAX_IMAGE_BYTES, "image is under 500 MB", f"{size / 1e6:.0f} MB")
    config = info.get("Config") or info.get("config") or {}
    user = str(config.get("User", ""))
    report.check(user.split(":")[0] not in ("", "0", "root"), f"image user is {user!r}, not root")
    labels = config.get("Labels") or {}
    for label in ("source", "version", "licenses"):
        key = f"org.opencontainers.image.{label}"
        report.check(bool(labels.get(key)), f"label {key}={labels.get(key)!r}")
    ports = config.get("ExposedPorts") or {}
    report.check("8000/tcp" in ports, "EXPOSE 8000", str(ports))
    report.check(config.get("StopSignal") in ("SIGTERM", "15"), "STOPSIGNAL SIGTERM")
    health = info.get("Healthcheck") or config.get("Healthcheck") or {}
    report.check(bool(health.get("Test")), "image has a HEALTHCHECK", str(health))


def serve_checks(engine: Engine, name: str, port: int, tracking_uri: str, report: Report) -> None:
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    engine.run(
        "run", "-d", "--name", name, *engine.run_args(),
        "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-e", f"MLFLOW_TRACKING_URI={tracking_uri}",
        "-e", f"PORT={port}",
        IMAGE,
        capture=True,
    )  # fmt: skip

    def up() -> bool:
        state = engine.run(
            "inspect", "--format", "{{.State.Running}}", name, capture=True, check=False
        ).stdout.strip()
        if state != "true":
            raise CheckFailed(f"container stopped before it was healthy:\n{logs(engine, name)}")
        return healthy(f"{base}/health")

    report.check(wait_until(up, timeout=120), "GET /health answers 200 (container is ready)")
    report.figure("startup (run to first /health 200)", f"{time.monotonic() - started:.1f} s")

    status, body = get(f"{base}/health")
    report.check(json.loads(body) == {"status": "ok"}, "/health body is {'status': 'ok'}")
    status, body = get(f"{base}/livez")
    report.check(status == 200, "GET /livez answers 200", f"{status} {body!r}")

    version, expected = in_process_probabilities(tracking_uri)
    status, single = post_json(f"{base}/predict", CUSTOMERS[0])
    report.check(
        status == 200 and single["churn_probability"] == expected[0],
        f"POST /predict equals the in-process prediction ({expected[0]})",
        f"{status} {single}",
    )
    report.check(single["model_version"] == version, f"prediction names version {version}")
    status, batch = post_json(f"{base}/predict/batch", {"instances": CUSTOMERS})
    got = [p["churn_probability"] for p in batch.get("predictions", [])]
    report.check(
        status == 200 and got == expected,
        "POST /predict/batch equals the in-process predictions",
        f"{status} {got} != {expected}",
    )
    status, body = get(f"{base}/model-info")
    info = json.loads(body)
    report.check(
        status == 200 and info["version"] == version and info["name"] == MODEL_NAME,
        f"/model-info names {MODEL_NAME} version {version}",
        f"{status} {info}",
    )
    status, _ = post_json(f"{base}/predict", {"tenure_months": "12"})
    report.check(status == 422, "a bad request is 422, not 500", str(status))

    health = engine.run(
        "inspect", "--format", "{{json .Config.Healthcheck.Test}}", name, capture=True
    ).stdout
    test = json.loads(health)
    command = test[1:] if test and test[0] == "CMD" else ["sh", "-c", *test[1:]]
    probe = engine.run("exec", name, *command, capture=True, check=False)
    report.check(probe.returncode == 0, "the image's HEALTHCHECK command passes", probe.stderr)

    processes = container_processes(engine, name)
    roots = [p for p in processes if p["uid"] == 0]
    report.check(not roots, "no process in the container runs as root", str(roots))
    pid1 = next(p for p in processes if p["pid"] == 1)
    report.check(
        "churn-api serve" in pid1["cmd"], f"PID 1 is granian (via churn-api serve): {pid1['cmd']}"
    )
    workers = [p for p in processes if p["ppid"] == 1]  # granian's workers
    report.figure(
        "processes (uid, PSS)",
        ", ".join(f"pid {p['pid']} uid {p['uid']} {p['pss_kib'] // 1024} MiB" for p in processes),
    )
    if workers:
        pss = [p["pss_kib"] / 1024 for p in workers]
        report.figure(
            "memory",
            f"main {pid1['pss_kib'] / 1024:.0f} MiB PSS + {len(workers)} worker(s) x "
            f"{statistics.mean(pss):.0f} MiB PSS (RSS {workers[0]['rss_kib'] / 1024:.0f} MiB) = "
            f"{(pid1['pss_kib'] + sum(p['pss_kib'] for p in workers)) / 1024:.0f} MiB",
        )
    mean_request_time(port, report, workers=len(workers))
    respawn_check(engine, name, base, [p["pid"] for p in workers], report)

    started = time.monotonic()
    engine.run("stop", "-t", "30", name, capture=True)
    stopped = time.monotonic() - started
    code = engine.run(
        "inspect", "--format", "{{.State.ExitCode}}", name, capture=True
    ).stdout.strip()
    text = logs(engine, name)
    report.check(
        code == "0" and "shutdown completed" in text,
        f"SIGTERM: granian shuts down gracefully, exit code 0, in {stopped:.1f} s",
        f"exit code {code}",
    )


def container_processes(engine: Engine, name: str) -> list[dict[str, Any]]:
    """The container's processes (pid, uid, command line, memory), listed from inside it."""
    rows = json.loads(engine.run("exec", name, "python", "-c", _PROCESSES, capture=True).stdout)
    return [p for p in rows if "/proc" not in p["cmd"]]  # not the lister itself


def respawn_check(engine: Engine, name: str, base: str, workers: list[int], report: Report) -> None:
    """SIGKILL one worker inside the container: granian starts a new one, the server answers."""
    report.check(bool(workers), f"granian runs {len(workers)} worker(s) under PID 1")
    victim = workers[0]
    started = time.monotonic()
    kill = f"import os, signal; os.kill({victim}, signal.SIGKILL)"
    engine.run("exec", name, "python", "-c", kill, capture=True)

    def current() -> set[int]:
        return {p["pid"] for p in container_processes(engine, name) if p["ppid"] == 1}

    def respawned() -> bool:
        now = current()
        return victim not in now and len(now) == len(workers) and healthy(f"{base}/health")

    report.check(
        wait_until(respawned, timeout=90, interval=0.5),
        f"a SIGKILLed worker (pid {victim}) is respawned inside the container",
        logs(engine, name)[-2000:],
    )
    report.figure("worker respawn (SIGKILL to a new worker)", f"{time.monotonic() - started:.1f} s")
    text = logs(engine, name)
    report.check("Respawning worker-" in text, "granian logs the respawn", text[-2000:])
    for _ in range(len(workers) * 4):  # new connections: some land on the new worker
        status, answer = post_json(f"{base}/predict", CUSTOMERS[0])
        if status != 200:
            raise CheckFailed(f"POST /predict answered {status} after the respawn: {answer}")
    new = sorted(current() - set(workers))
    report.ok(f"the server answers POST /predict after the respawn (new worker pid {new})")


def mean_request_time(port: int, report: Report, workers: int, n: int = 400) -> None:
    """t-bar: one client, one keep-alive connection, sequential POST /predict (includes client)."""
    body = json.dumps(CUSTOMERS[0]).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times = []
    try:
        for i in range(n + 20):
            started = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if i >= 20:  # warm-up
                times.append(time.perf_counter() - started)
            if response.status != 200:
                raise CheckFailed(f"POST /predict answered {response.status} under load")
    finally:
        conn.close()
    mean = statistics.mean(times)
    report.figure(
        "t-bar (sequential POST /predict, one connection)",
        f"mean {mean * 1000:.2f} ms, median {statistics.median(times) * 1000:.2f} ms over {n}",
    )
    if workers:
        estimate = f"{workers} / {mean * 1000:.2f} ms = {workers / mean:.0f} req/s"
        report.figure("throughput estimate W / t-bar", estimate)


def failure_check(engine: Engine, tracking_uri: str, port: int, report: Report) -> None:
    started = time.monotonic()
    try:
        result = engine.run(
            "run", "--rm", *engine.run_args(), "--read-only", "--tmpfs", "/tmp",
            "-e", f"MLFLOW_TRACKING_URI={tracking_uri}", "-e", f"PORT={port}",
            IMAGE,
            capture=True, check=False, timeout=90,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed("a container without a registry was still running after 90 s") from exc
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if f"cannot load {MODEL_NAME}@" in line]
    report.check(
        result.returncode != 0,
        f"without a registry the container exits non-zero ({result.returncode})",
    )
    report.check(
        elapsed < FAIL_WITHIN_SECONDS, f"... within {FAIL_WITHIN_SECONDS:.0f} s ({elapsed:.1f} s)"
    )
    report.check(bool(lines), "... with a message naming what it could not load", output[-2000:])
    report.figure("failure message", lines[0].strip()[:300])


def logs(engine: Engine, name: str) -> str:
    result = engine.run("logs", name, capture=True, check=False)
    return result.stdout + result.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True, help="container engine command, e.g. podman")
    parser.add_argument("--base-image", default=None, help="BASE_IMAGE build argument")
    parser.add_argument("--skip-build", action="store_true", help=f"use the existing {IMAGE}")
    parser.add_argument("--image", default=IMAGE, help=f"image tag to build and check ({IMAGE})")
    args = parser.parse_args(argv)
    globals()["IMAGE"] = args.image  # one tag per run: several people may share one engine

    engine = Engine(shlex.split(args.engine))
    report = Report()
    name = f"churn-api-check-{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="churn-api-container-"))
    try:
        print(f"== build {IMAGE} with {' '.join(engine.command)}", flush=True)
        if not args.skip_build:
            build(engine, args.base_image, report)
        check_image(engine, report)

        registry_port, service_port = free_port(), free_port()
        tracking_uri = f"http://127.0.0.1:{registry_port}"
        print(f"== MLflow server on {tracking_uri} ({workdir})", flush=True)
        with mlflow_server(workdir, registry_port) as server:
            report.check(
                wait_until(lambda: healthy(f"{tracking_uri}/health"), timeout=120),
                "mlflow server answers /health",
            )
            env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
            trained = subprocess.run(
                [str(Path(sys.executable).with_name("churn-api")), "train"],
                env=env, cwd=workdir, check=True, capture_output=True, text=True,
            )  # fmt: skip
            report.ok(f"churn-api train: {trained.stdout.strip().splitlines()[-1]}")

            print(f"== container {name} on 127.0.0.1:{service_port}", flush=True)
            try:
                serve_checks(engine, name, service_port, tracking_uri, report)
            finally:
                engine.run("rm", "-f", name, capture=True, check=False)
            stop_process(server)
            report.check(not healthy(f"{tracking_uri}/health"), "mlflow server stopped")

        print("== a fresh container with the registry gone", flush=True)
        failure_check(engine, tracking_uri, free_port(), report)
    except (CheckFailed, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        print(f"FAILED: {exc}\n{detail}", file=sys.stderr, flush=True)
        return 1
    finally:
        engine.run("rm", "-f", name, capture=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n== all container checks passed", flush=True)
    for key, value in report.figures.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
