"""End to end: ``churn-api serve`` with granian workers on a loopback port, over real HTTP."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Registry, Server
from ops_support import (
    START_SECONDS,
    children,
    free_port,
    healthy,
    launch,
    serve_command,
    start_server,
    wait_for,
)
from support import CUSTOMERS, VALID

from app import serve
from app.entrypoint import available_cpus

pytestmark = pytest.mark.e2e

STARTUP_FAILURE_SECONDS = 30.0
CONTAINERFILE = Path(__file__).resolve().parents[1] / "Containerfile"


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        yield client


def test_the_collector_is_paused_only_while_the_server_preloads() -> None:
    seen: list[bool] = []

    def failing_preload() -> None:
        seen.append(gc.isenabled())
        raise RuntimeError("a preload that fails")

    assert gc.isenabled()
    with serve.collector_paused():
        seen.append(gc.isenabled())
    with pytest.raises(RuntimeError), serve.collector_paused():
        failing_preload()
    assert seen == [False, False]
    assert gc.isenabled()  # the workers forked afterwards collect as usual


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a parent that does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_server_runs_two_granian_workers(server: Server) -> None:
    assert len(server.worker_pids()) == 2


def test_health_and_model_info(http: httpx.Client, registry: Registry) -> None:
    health = http.get("/health")
    info = http.get("/model-info")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert info.status_code == 200
    assert info.json()["version"] == registry.version
    assert info.json()["alias"] == "champion"


def test_predict_and_batch_answer_from_the_registered_champion(
    http: httpx.Client, registry: Registry
) -> None:
    single = http.post("/predict", json=VALID)
    batch = http.post("/predict/batch", json={"instances": CUSTOMERS})

    assert single.status_code == 200
    assert single.headers["content-type"].startswith("application/json")
    prediction = single.json()
    assert set(prediction) == {"churn_probability", "churn_label", "model_version"}
    assert 0 <= prediction["churn_probability"] <= 1
    assert prediction["model_version"] == registry.version
    assert batch.status_code == 200
    assert batch.json()["count"] == len(CUSTOMERS)
    assert batch.json()["predictions"][0] == prediction


def test_fresh_connections_all_get_the_same_answer(http: httpx.Client) -> None:
    # New connections are spread over the workers; whichever answers, the answer is the same.
    answers = set()
    for _ in range(20):
        with httpx.Client(base_url=str(http.base_url), timeout=10.0) as fresh:
            answers.add(fresh.post("/predict", json=VALID).text)
    assert len(answers) == 1


def test_invalid_request_is_422_naming_the_field(http: httpx.Client) -> None:
    response = http.post(
        "/predict/batch",
        params={"threshold": "1.5"},
        json={"instances": [VALID, {**VALID, "total_charges": "954"}]},
    )

    assert response.status_code == 422
    named = {(e["source"], e["field"]) for e in response.json()["errors"]}
    assert named == {("query", "threshold"), ("body", "instances[1].total_charges")}


def test_oversized_bodies_are_413_and_the_server_stays_up(server: Server) -> None:
    padding = b" " * (1_048_576 + 1 - len(json.dumps(VALID)))

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        for _ in range(40):
            yield b" " * 65_536

    # One connection per oversized request: the server may close a connection whose request body
    # it did not read to the end (keep-alive after a 413 is not part of the contract).
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        too_big = client.post("/predict", content=json.dumps(VALID).encode() + padding)
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        chunked = client.post(
            "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
        )

    assert too_big.status_code == 413
    assert "MAX_BODY_BYTES" in too_big.json()["detail"]
    assert chunked.status_code == 413
    assert chunked.headers["content-type"].startswith("application/json")
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/predict", json=VALID).status_code == 200


def test_errors_are_json_and_reveal_no_versions(http: httpx.Client) -> None:
    for response in (http.get("/nope"), http.get("/predict"), http.post("/predict", content=b"{")):
        assert response.headers["content-type"].startswith("application/json")
        assert "Traceback" not in response.text
        server_header = response.headers.get("server", "")
        assert not any(ch.isdigit() for ch in server_header), server_header


def container_command(port: int) -> list[str]:
    """The image's ENTRYPOINT and CMD as the Containerfile writes them, run with this venv's
    interpreter and scripts; it binds where the HOST and PORT settings say (see ``run_serve``)."""
    text = CONTAINERFILE.read_text()
    entry, cmd = (
        re.search(rf"^{word} (\[.*\])$", text, re.MULTILINE) for word in ("ENTRYPOINT", "CMD")
    )
    assert entry is not None
    assert cmd is not None
    interpreter, *entrypoint = json.loads(entry[1])
    script, *arguments = json.loads(cmd[1])
    assert Path(interpreter).name == "python"
    return [sys.executable, *entrypoint, str(Path(sys.executable).with_name(script)), *arguments]


def loopback(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` with the image's HOST/PORT settings pointed at a loopback port."""
    return {**env, "HOST": "127.0.0.1", "PORT": str(port)}


def run_serve(
    env: dict[str, str], cwd: Path, command: Callable[[int], list[str]] = serve_command
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    port = free_port()
    result = subprocess.run(
        command(port),
        env=loopback(env, port),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STARTUP_FAILURE_SECONDS + 30,
        check=False,
    )
    return result, time.monotonic() - started


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``churn-api: ...`` line a failed start prints, with no traceback."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("churn-api:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("command", [serve_command, container_command])
def test_missing_alias_makes_serve_exit_non_zero_with_one_clear_line(
    registry: Registry, tmp_path: Path, command: Callable[[int], list[str]]
) -> None:
    result, _ = run_serve(registry.environ(MODEL_ALIAS="no-such-alias"), tmp_path, command)

    assert result.returncode != 0
    line = the_one_line(result)
    assert "no-such-alias" in line
    assert "Listening" not in result.stdout + result.stderr  # granian never started


def test_feature_order_mismatch_makes_serve_exit_non_zero(
    registry: Registry, tmp_path: Path
) -> None:
    result, _ = run_serve(registry.environ(MODEL_ALIAS=registry.reordered_alias), tmp_path)

    assert result.returncode != 0
    assert "fitted on features" in the_one_line(result)


def test_unreachable_registry_makes_serve_exit_non_zero_within_30_seconds(
    registry: Registry, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    result, seconds = run_serve(registry.environ(MLFLOW_TRACKING_URI=closed), tmp_path)

    assert result.returncode != 0
    assert seconds < STARTUP_FAILURE_SECONDS
    assert "127.0.0.1" in the_one_line(result)


def test_bad_setting_makes_serve_exit_non_zero_naming_it(
    registry: Registry, tmp_path: Path
) -> None:
    result, _ = run_serve(registry.environ(MAX_BODY_BYTES="lots"), tmp_path)

    assert result.returncode != 0
    assert "MAX_BODY_BYTES" in the_one_line(result)


def loads_pyarrow(pid: int) -> bool:
    """Whether the process has pyarrow's shared objects mapped (pandas imports it if it can)."""
    return "/pyarrow/" in Path(f"/proc/{pid}/maps").read_text()


def test_no_server_process_imports_pyarrow_unless_told_to(
    server: Server, registry: Registry, tmp_path: Path
) -> None:
    assert healthy(server.base_url)
    assert not any(loads_pyarrow(pid) for pid in [server.process.pid, *server.worker_pids()])

    told = start_server(registry.uri, tmp_path, workers=1, check="1", IMPORT_PYARROW="true")
    try:
        assert all(loads_pyarrow(pid) for pid in [told.process.pid, *told.worker_pids()])
    finally:
        told.stop()


def test_sigterm_stops_the_server_and_its_workers(registry: Registry, tmp_path: Path) -> None:
    server = start_server(registry.uri, tmp_path, workers=1, check="1")
    url = server.base_url
    try:
        workers = server.worker_pids()
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        code = server.stop()

    assert code == 0
    assert workers
    assert not any(alive(pid) for pid in workers)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2.0)


def test_a_worker_that_does_not_stop_is_killed_and_the_server_exits(
    registry: Registry, tmp_path: Path
) -> None:
    # granian kills it REQUEST_TIMEOUT_SECONDS + 5 s after the SIGTERM (--workers-kill-timeout)
    server = start_server(registry.uri, tmp_path, workers=1, check="1", REQUEST_TIMEOUT_SECONDS="1")
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGSTOP)  # a worker that never gets to handle its SIGTERM
    try:
        code = server.stop(timeout=25)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)

    assert code == 0, server.log_text()[-2000:]  # exited by itself, not killed by the test
    assert "refused to gracefully stop" in server.log_text()
    assert not alive(worker)


def test_the_container_command_serves_with_a_worker_per_cpu_and_stops_on_sigterm(
    registry: Registry, tmp_path: Path
) -> None:
    port = free_port()
    env = loopback(registry.environ(), port)
    env.pop("WORKERS", None)  # as in the image: app.entrypoint fills it in
    log = tmp_path / "container-command.log"
    started = launch(container_command(port), env, tmp_path, log)
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), START_SECONDS, started)
        workers = children(started.pid)  # the entrypoint exec'd: this is granian's main process
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=VALID)
    finally:
        code = started.stop()

    assert len(workers) == available_cpus()
    assert answer.status_code == 200
    assert answer.json()["model_version"] == registry.version
    assert code == 0
    output = log.read_text()
    assert f"WORKERS unset, using {available_cpus()}" in output
    assert "is version" in output  # churn-api serve checked the champion before granian started
