"""Small real objects the tests share: payloads, fake models, free ports and a running server.

Fixtures live in ``conftest.py``; this module holds the plain helpers they (and the tests) use.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np

from app.model import Champion, Rows, Scores
from app.schemas import FEATURES

Payload = dict[str, Any]

VALID: Final[Payload] = {
    "tenure_months": 12,
    "monthly_charges": 79.5,
    "total_charges": 954.0,
    "num_support_tickets": 3,
    "is_month_to_month": True,
}
"""A contract-valid customer (the README example)."""

CUSTOMERS: Final[list[Payload]] = [
    VALID,
    {**VALID, "tenure_months": 0, "total_charges": 0.0},
    {
        "tenure_months": 600,
        "monthly_charges": 9999.99,
        "total_charges": 6_000_000.0,
        "num_support_tickets": 1000,
        "is_month_to_month": False,
    },
    {
        "tenure_months": 1,
        "monthly_charges": 0.01,
        "total_charges": 0.01,
        "num_support_tickets": 0,
        "is_month_to_month": False,
    },
    {
        "tenure_months": 60,
        "monthly_charges": 110.0,
        "total_charges": 6600.0,
        "num_support_tickets": 7,
        "is_month_to_month": True,
    },
]
"""Distinct contract-valid customers, bounds included."""

SERVER_START_SECONDS: Final = 90.0


def customer(**changes: Any) -> Payload:
    """:data:`VALID` with some fields replaced."""
    return {**VALID, **changes}


def row(payload: Mapping[str, Any]) -> list[float]:
    """A customer as the model sees it: floats in contract column order."""
    return [float(payload[name]) for name in FEATURES]


def payloads(rows: Rows) -> list[Payload]:
    """Rows in contract column order as JSON customers (integers and the boolean as such)."""
    return [
        {
            "tenure_months": int(r[0]),
            "monthly_charges": float(r[1]),
            "total_charges": float(r[2]),
            "num_support_tickets": int(r[3]),
            "is_month_to_month": bool(r[4]),
        }
        for r in rows
    ]


def training_like(samples: int, seed: int) -> Rows:
    """Customers from the generative process ``churn-api train`` fits on, as float64 rows."""
    from app.train import Generation, synthesize

    frame, _ = synthesize(Generation(samples=samples, seed=seed))
    return frame.to_numpy(dtype=np.float64)


class FakeModel:
    """A deterministic stand-in for ``predict_proba(rows)[:, 1]`` that records every call.

    P(churn) is a logistic of a linear combination of the five columns, so each column moves the
    answer and a swapped column would show.
    """

    WEIGHTS: Final = np.array([-0.03, 0.012, -0.0001, 0.35, 1.1])
    BIAS: Final = -0.8

    def __init__(self) -> None:
        self.calls: list[Rows] = []
        self._lock = threading.Lock()

    def __call__(self, rows: Rows) -> Scores:
        with self._lock:
            self.calls.append(rows.copy())
        return self.probabilities(rows)

    @classmethod
    def probabilities(cls, rows: Rows) -> Scores:
        # Element-wise, not a matrix product: a row's answer is bit-for-bit the same in any batch.
        logit = np.full(len(rows), cls.BIAS)
        for column, weight in enumerate(cls.WEIGHTS):
            logit = logit + rows[:, column] * weight
        return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)

    @classmethod
    def probability(cls, payload: Mapping[str, Any]) -> float:
        """The unrounded P(churn) this model gives one customer."""
        return float(cls.probabilities(np.array([row(payload)], dtype=np.float64))[0])


class ConstantModel:
    """Answers the same probability for every row."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def __call__(self, rows: Rows) -> Scores:
        return np.full(len(rows), self.probability, dtype=np.float64)


class BrokenModel:
    """A model that fails the way real code fails: with an exception naming a file path."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rows: Rows) -> Scores:
        self.calls += 1
        raise RuntimeError(f"boom in /opt/models/secret_model.py with {len(rows)} rows")


def champion(predict: Any, version: str = "7") -> Champion:
    return Champion(
        name="churn-classifier", version=version, alias="champion", run_id="r1", predict=predict
    )


def rounded(probability: float) -> float:
    assert math.isfinite(probability)
    return round(probability, 6)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int, workers: int = 2) -> list[str]:
    """``churn-api serve`` through the interpreter running the tests (same venv)."""
    return [
        sys.executable, "-m", "app", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def server_environ(**variables: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **variables}
    env.pop("PYTHONWARNINGS", None)
    return env


def wait_until_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Poll ``/health`` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(
                    f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health").status_code == 200:
                    return
            time.sleep(0.2)  # poll interval; the loop waits for a real condition
    raise AssertionError(f"no healthy server after {timeout:.0f}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM the process we started and wait for it; kill it only if it ignores SIGTERM."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only our processes
            process.wait(timeout=timeout)
    return process.returncode


@contextlib.contextmanager
def running_server(
    env: Mapping[str, str], workdir: Path, workers: int = 2
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``churn-api serve`` on a free loopback port; yield its base URL and process."""
    port = free_port()
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(port, workers),
            cwd=workdir,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log, SERVER_START_SECONDS)
        yield base_url, process
    finally:
        stop(process)
