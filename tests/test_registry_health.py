"""RegistryHealth in one process: two workers sharing a metrics directory log each outage once."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from app.registry_health import OUTAGE_NAME, RegistryHealth


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname, record.getMessage().split(",")[0])
        for record in caplog.records
        if record.name == "churn_api"
    ]


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="churn_api")
    return caplog


def test_an_outage_seen_by_two_workers_over_many_polls_is_logged_once_each_way(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    workers = [RegistryHealth(str(tmp_path)), RegistryHealth(str(tmp_path))]
    for worker in workers:
        worker.answered("3")
    for _ in range(5):
        for worker in workers:
            worker.failed("3", "ConnectionError: refused", time.time())
    for worker in workers:
        worker.answered("3")

    assert lines(caplog_info) == [
        ("WARNING", "registry unreachable"),
        ("INFO", "registry answers again after 0s"),
    ]
    assert not (tmp_path / OUTAGE_NAME).exists()


def test_a_poll_that_started_before_another_workers_success_declares_no_outage(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    slow, quick = RegistryHealth(str(tmp_path)), RegistryHealth(str(tmp_path))
    started = time.time() - 5  # the slow worker's poll began before the quick one answered
    quick.answered("3")
    slow.failed("3", "ReadTimeout", started)

    assert lines(caplog_info) == []


def test_a_marker_left_by_another_server_is_replaced_silently(
    tmp_path: Path, caplog_info: pytest.LogCaptureFixture
) -> None:
    (tmp_path / OUTAGE_NAME).write_text(f"{os.getppid() + 1} {time.time() - 3600}\n")
    health = RegistryHealth(str(tmp_path))
    health.answered("3")  # the stale marker goes, no recovery line for an outage never seen
    health.failed("3", "ConnectionError", time.time())
    health.answered("3")

    assert lines(caplog_info) == [
        ("WARNING", "registry unreachable"),
        ("INFO", "registry answers again after 0s"),
    ]


def test_without_a_shared_directory_the_worker_logs_its_own_outage_once(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    health = RegistryHealth(None)
    for _ in range(3):
        health.failed("3", "ConnectionError", time.time())
    health.answered("3")
    health.answered("3")

    assert [level for level, _ in lines(caplog_info)] == ["WARNING", "INFO"]
