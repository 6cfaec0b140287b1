"""A registry that goes away while serving: a real ``mlflow server`` stopped under load, restarted.

The service keeps answering from the model in hand, counts the failed polls, logs the outage once
and its end once (for the whole server, not per poll or worker), keeps ``/health`` at 200, and
picks up an alias moved after the registry is back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from ops_support import (
    Load,
    MlflowServer,
    Server,
    scrape,
    server_for,
    set_alias,
    total,
    train_versions,
    wait_for,
)

pytestmark = pytest.mark.e2e

POLL_SECONDS = 1.0


def service_lines(server: Server, needle: str) -> list[dict[str, Any]]:
    return [
        json.loads(text)
        for text in server.log_text().splitlines()
        if text.startswith("{") and needle in text and "churn_api.access" not in text
    ]


def failed_polls(server: Server) -> float:
    return total(scrape(server.base_url), "churn_registry_polls_total", outcome="failed")


def registry_age(server: Server) -> float:
    """What the documented PromQL computes: time() - max(last success timestamp)."""
    samples = scrape(server.base_url)["churn_registry_last_success_timestamp_seconds"]
    return time.time() - max(value for _, value in samples)


def serving(server: Server, version: str) -> int:
    return int(total(scrape(server.base_url), "churn_model_info", version=version))


def test_a_registry_outage_under_load_fails_no_prediction_and_is_logged_once_each_way(
    tmp_path: Path,
) -> None:
    registry = MlflowServer(tmp_path / "registry")
    registry.workdir.mkdir()
    registry.start()
    try:
        first, second = (v.version for v in train_versions(registry.uri, registry.workdir))
        with (
            server_for(registry.uri, tmp_path / "service", MODEL_POLL_SECONDS="1") as server,
            Load(server.base_url, threads=4, max_seconds=240) as load,
        ):
            wait_for(lambda: load.answered >= 100, 30, server)
            wait_for(lambda: registry_age(server) < 3 * POLL_SECONDS, 30, server)
            assert failed_polls(server) == 0

            registry.stop()
            stopped_at = time.monotonic()
            # At least three poll intervals, and three failed polls per worker.
            wait_for(lambda: failed_polls(server) >= 3 * server.workers, 60, server)
            wait_for(lambda: time.monotonic() - stopped_at >= 3 * POLL_SECONDS, 10, server)
            health = httpx.get(f"{server.base_url}/health", timeout=5)
            age_during = registry_age(server)
            failed_during = failed_polls(server)
            answered_during = load.answered

            registry.start()
            down_for = time.monotonic() - stopped_at
            wait_for(lambda: service_lines(server, "registry answers again"), 60, server)
            wait_for(lambda: registry_age(server) < 3 * POLL_SECONDS, 30, server)
            set_alias(registry.uri, second)
            wait_for(lambda: serving(server, second) == server.workers, 60, server)
            after = load.answered
            wait_for(lambda: load.answered >= after + 100, 30, server)
    finally:
        registry.stop()

    outage = service_lines(server, "registry unreachable")
    recovery = service_lines(server, "registry answers again")
    print(
        f"registry down {down_for:.1f}s under load: {load.answered} answered, {load.failed}"
        f" failed, {failed_during:.0f} failed polls, registry age {age_during:.1f}s during;"
        f" versions {dict(load.versions)}"
    )
    assert load.failed == 0, (load.statuses, load.errors)
    assert answered_during > 100  # predictions went on during the outage
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert age_during >= 3 * POLL_SECONDS
    assert [line["level"] for line in outage] == ["warning"]
    assert outage[0]["model_version"] == first
    assert [line["level"] for line in recovery] == ["info"]
    assert service_lines(server, "champion reload failed") == []
    assert {first, second} == set(load.versions)
