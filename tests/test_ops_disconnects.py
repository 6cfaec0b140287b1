"""Clients that hang up, on the real server (granian, 2 workers): the client's 499, never a 5xx.

A client that closes its connection before its body is complete is counted and logged once as
499 (info, no traceback); the model never runs for it; clients around it are not disturbed. One
that closes after its body, before its answer, is a 499 too (its answer had nowhere to go).
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Registry
from ops_support import (
    Server,
    scrape,
    start_server,
    total,
    wait_for,
)
from support import VALID as CUSTOMER

pytestmark = pytest.mark.e2e

EXPECTED_AFTER = sorted(f"after-{index}" for index in range(20))
BATCH = {"instances": [CUSTOMER, {**CUSTOMER, "tenure_months": 0, "total_charges": 0.0}] * 500}


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("disconnects")
    started = start_server(registry.copy(workdir), workdir)
    try:
        yield started
    finally:
        started.stop()


def half_sent(
    server: Server, index: int, *, chunked: bool = False, prefix: str = "hangup"
) -> socket.socket:
    """A connection that sent its headers and half its body, and then nothing."""
    path = "/predict/batch" if index % 2 else "/predict"
    body = json.dumps(BATCH if index % 2 else CUSTOMER).encode()
    half = body[: len(body) // 2]
    host, port = server.base_url.removeprefix("http://").split(":")
    framing = (
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(half), half)
        if chunked
        else b"Content-Length: %d\r\n\r\n%s" % (len(body), half)
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {prefix}-{index}\r\n"
    ).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head + framing)
    return sock


def read_by_server(server: Server, sockets: list[socket.socket]) -> bool:
    """Whether the server has read everything these connections sent (its receive queues empty).

    From /proc/net/tcp: the server's end of each connection has local port = the server's port
    and remote port = the client socket's port.
    """
    port = int(server.base_url.rsplit(":", 1)[1])
    clients = {sock.getsockname()[1] for sock in sockets}
    drained = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) != port:
            continue
        remote_port = int(remote.split(":")[1], 16)
        if remote_port in clients and int(queues.split(":")[1], 16) == 0:
            drained.add(remote_port)
    return drained == clients


def access_lines(server: Server, prefix: str) -> list[dict[str, Any]]:
    """The JSON lines whose request id starts with ``prefix``."""
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if str(line.get("request_id", "")).startswith(prefix)]


def logged(server: Server, prefix: str, count: int) -> bool:
    return len(access_lines(server, prefix)) == count


def error_lines(server: Server) -> list[str]:
    return [text for text in server.log_text().splitlines() if '"level":"error"' in text]


def status_total(server: Server, status: str) -> float:
    return total(scrape(server.base_url), "churn_http_requests_total", status=status)


def server_errors(server: Server) -> float:
    return sum(
        value
        for labels, value in scrape(server.base_url).get("churn_http_requests_total", [])
        if labels["status"].startswith("5")
    )


def scored_rows(server: Server) -> float:
    return total(scrape(server.base_url), "churn_predictions_total")


def test_200_clients_that_hang_up_mid_body_are_499s_not_server_errors(server: Server) -> None:
    counted_before = status_total(server, "499")
    rows_before = scored_rows(server)
    sockets = [half_sent(server, index, chunked=index % 4 >= 2) for index in range(200)]
    try:
        wait_for(lambda: read_by_server(server, sockets), 30, server)
    finally:
        for sock in sockets:
            sock.close()

    wait_for(lambda: len(access_lines(server, "hangup-")) == 200, 30, server)
    lines = access_lines(server, "hangup-")
    assert {line["status"] for line in lines} == {499}
    assert {line["level"] for line in lines} == {"info"}
    assert {line["request_id"] for line in lines} == {f"hangup-{i}" for i in range(200)}
    assert error_lines(server) == []
    assert "Traceback" not in server.log_text()
    # Counted (after the workers' next flush) under 499 and never under 5xx; the model never ran.
    wait_for(lambda: status_total(server, "499") - counted_before == 200, 10, server)
    assert server_errors(server) == 0
    assert scored_rows(server) == rows_before
    # The workers go on answering.
    response = httpx.post(f"{server.base_url}/predict", json=CUSTOMER, timeout=10)
    assert response.status_code == 200


def test_a_hang_up_while_its_batch_is_scored_does_not_disturb_the_requests_scored_with_it(
    server: Server,
) -> None:
    neighbour = {"instances": [CUSTOMER] * 10}
    expected_single = httpx.post(f"{server.base_url}/predict", json=CUSTOMER, timeout=10).json()
    expected_batch = httpx.post(f"{server.base_url}/predict/batch", json=neighbour, timeout=10)
    host, port = server.base_url.removeprefix("http://").split(":")
    full_batch = json.dumps(BATCH).encode()
    stop = threading.Event()
    outcomes: list[bool] = []

    def neighbours(index: int) -> None:
        path, body, expected = (
            ("/predict", CUSTOMER, expected_single)
            if index % 2
            else ("/predict/batch", neighbour, expected_batch.json())
        )
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                response = client.post(path, json=body)
                outcomes.append(response.status_code == 200 and response.json() == expected)

    def hang_up(index: int) -> None:
        # The whole body, then gone before the answer: the batch is queued or being scored.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"X-Request-ID: gone-%d\r\nContent-Length: %d\r\n\r\n%s"
                % (index, len(full_batch), full_batch)
            )
            sock.shutdown(socket.SHUT_RDWR)

    with ThreadPoolExecutor(8) as pool:
        running = [pool.submit(neighbours, index) for index in range(6)]
        wait_for(lambda: len(outcomes) >= 200, 30, server)
        for index in range(50):  # one at a time: 50 queued 1000-row batches would be overload
            hang_up(index)
            wait_for(functools.partial(logged, server, "gone-", index + 1), 30, server)
        answered = len(outcomes)
        wait_for(lambda: len(outcomes) >= answered + 200, 30, server)
        stop.set()
        for future in running:
            future.result(timeout=60)

    # Each hang-up is logged once: 499 when it was gone before its body was read in full,
    # otherwise 200 (the answer was computed with its neighbours and had nowhere to go).
    assert {line["status"] for line in access_lines(server, "gone-")} <= {200, 499}
    assert all(outcomes), f"{outcomes.count(False)} of {len(outcomes)} neighbours disturbed"
    assert error_lines(server) == []
    assert server_errors(server) == 0


def test_slow_clients_holding_half_sent_requests_do_not_delay_other_clients(
    server: Server,
) -> None:
    sockets = [half_sent(server, index, prefix="slow") for index in range(400)]
    try:
        wait_for(lambda: read_by_server(server, sockets), 30, server)
        latencies = []
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(50):
                started = time.perf_counter()
                response = client.post("/predict", json=CUSTOMER)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
    print(f"50 requests beside 400 half-sent ones: max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 0.5
    wait_for(lambda: len(access_lines(server, "slow-")) == 400, 30, server)
    assert {line["status"] for line in access_lines(server, "slow-")} == {499}
    assert error_lines(server) == []


def test_clients_gone_after_their_body_are_logged_once_at_info_and_never_as_errors(
    registry: Registry, tmp_path: Path
) -> None:
    # Neighbours keep both workers' queues long (room for them: no 503), so a 1000-row batch
    # waits past app.hang_up.LISTEN_AFTER; each hang-up sends its whole body and closes at once.
    started = start_server(registry.copy(tmp_path), tmp_path, MAX_QUEUED_ROWS=str(1 << 20))
    body = json.dumps(BATCH).encode()
    # A 1000-row CSV with 40 more columns (dropped, as MLflow drops them) takes the server tens
    # of milliseconds of parsing after its body: still unanswered when it starts listening.
    extra = [f"extra_{number}" for number in range(40)]
    rows = [
        ",".join([*(str(row[name]) for name in CUSTOMER), *("1" * len(extra))])
        for row in BATCH["instances"]
    ]
    table = "\n".join([",".join([*CUSTOMER, *extra]), *rows, ""]).encode()
    host, port = started.base_url.removeprefix("http://").split(":")
    stop = threading.Event()

    def neighbours() -> None:
        with httpx.Client(base_url=started.base_url, timeout=60) as client:
            while not stop.is_set():
                assert client.post("/predict/batch", content=body).status_code == 200

    try:
        with ThreadPoolExecutor(16) as pool:
            running = [pool.submit(neighbours) for _ in range(16)]
            for index in range(20):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(
                    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv"
                    b"\r\nX-Request-ID: after-%d\r\nContent-Length: %d\r\n\r\n%s"
                    % (index, len(table), table)
                )
                sock.close()  # gone right after its body, as a client that timed out
            wait_for(functools.partial(logged, started, "after-", 20), 60, started)
            stop.set()
            for future in running:
                future.result(timeout=60)
        lines = access_lines(started, "after-")
        statuses = [line["status"] for line in lines]
        durations = sorted(line["duration_ms"] for line in lines)
        print(f"20 clients gone after their body: {statuses.count(499)} logged 499, {durations}")
        # Each once, at info; 200 only when its answer left before the hang-up could be heard
        # (answered within LISTEN_AFTER of its body, or before granian saw the connection close).
        assert sorted(line["request_id"] for line in lines) == sorted(
            f"after-{i}" for i in range(20)
        )
        assert set(statuses) <= {200, 499}
        # How many are heard depends on granian: 13 to 18 of 20 in runs here, 2 of 20 on a fresh
        # CI machine (it does not always report a close while it waits for the answer; those are
        # logged with the answer's status). The 499 itself, for every front end, is pinned by
        # tests/test_disconnect_units.py; here: never an error, each logged once, counted alike.
        assert {line["level"] for line in lines} == {"info"}
        assert error_lines(started) == []
        wait_for(lambda: status_total(started, "499") >= statuses.count(499), 10, started)
        assert server_errors(started) == 0
    finally:
        stop.set()
        started.stop()
