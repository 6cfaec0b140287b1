"""Champion hot-swap on the real server: every worker swaps under load with no failed request.

Each test moves the alias in its own copy of the registry database.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import Registry
from ops_support import (
    ADMIN_TOKEN,
    Load,
    Server,
    scrape,
    server_for,
    set_alias,
    total,
    wait_for,
)

pytestmark = pytest.mark.e2e


def serving(server: Server, version: str) -> int:
    """Workers whose loaded model is ``version``."""
    return int(total(scrape(server.base_url), "churn_model_info", version=version))


def log_lines(server: Server, needle: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in server.log_text().splitlines()
        if line.startswith("{") and needle in line
    ]


def test_moving_the_alias_swaps_every_worker_under_load_without_a_failed_request(
    registry: Registry, tmp_path: Path
) -> None:
    uri = registry.copy(tmp_path)
    with server_for(uri, tmp_path, MODEL_POLL_SECONDS="1") as server:
        with Load(server.base_url, threads=6, max_seconds=60) as load:
            wait_for(lambda: load.answered >= 300, 30, server)
            moved_at = time.monotonic()
            set_alias(uri, registry.other_version)
            wait_for(lambda: serving(server, registry.other_version) == 2, 30, server)
            swapped_in = time.monotonic() - moved_at
            answered_at_swap = load.answered
            wait_for(lambda: load.answered >= answered_at_swap + 300, 30, server)
        info = httpx.get(f"{server.base_url}/model-info").json()
        samples = scrape(server.base_url)

    print(
        f"swap under load: {load.answered} answered, {load.failed} failed, "
        f"versions {dict(load.versions)}, both workers on the new version {swapped_in:.1f}s "
        "after the alias moved"
    )
    assert load.failed == 0, (load.statuses, load.errors)
    assert set(load.versions) == {registry.version, registry.other_version}
    assert info["version"] == registry.other_version
    assert total(samples, "churn_model_info", version=registry.version) == 0
    assert total(samples, "churn_model_reloads_total", outcome="swapped") == 2
    assert len(log_lines(server, "swapped in churn-classifier version")) == 2
    # Each load thread keeps one connection, so one worker: it switches once and never back.
    for answers in load.sequences.values():
        switches = sum(1 for a, b in itertools.pairwise(answers) if a != b)
        assert switches <= 1, answers


def test_admin_reload_needs_the_token_and_reaches_every_worker(
    registry: Registry, tmp_path: Path
) -> None:
    uri = registry.copy(tmp_path)
    with server_for(uri, tmp_path, MODEL_POLL_SECONDS="0", ADMIN_TOKEN=ADMIN_TOKEN) as server:
        url = f"{server.base_url}/admin/reload"
        assert httpx.post(url).status_code == 401
        wrong = httpx.post(url, headers={"Authorization": "Bearer " + "x" * len(ADMIN_TOKEN)})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert httpx.post(url, headers={"Authorization": ADMIN_TOKEN}).status_code == 401

        authorized = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        unchanged = httpx.post(url, headers=authorized)
        assert (unchanged.status_code, unchanged.json()["status"]) == (200, "unchanged")

        set_alias(uri, registry.other_version)
        with Load(server.base_url, threads=4, max_seconds=60) as load:
            wait_for(lambda: load.answered >= 100, 30, server)
            swapped = httpx.post(url, headers=authorized, timeout=60)
            assert swapped.status_code == 200
            # The worker that answers swaps now, unless the other worker's trigger touch from the
            # "unchanged" reload above reached it after the alias moved: then it already serves
            # the new version. Either way it answers with the new version.
            assert swapped.json() in (
                {
                    "status": "swapped",
                    "version": registry.other_version,
                    "previous": registry.version,
                },
                {"status": "unchanged", "version": registry.other_version},
            )
            # The other worker follows the trigger file within a second or two.
            wait_for(lambda: serving(server, registry.other_version) == 2, 15, server)

            set_alias(
                uri, registry.reordered_version
            )  # fitted on reordered columns: fails the feature guard
            failed = httpx.post(url, headers=authorized, timeout=60)
            assert failed.status_code == 502
            assert failed.json()["status"] == "failed"
            assert failed.json()["version"] == registry.other_version
            assert "fitted on features" in failed.json()["detail"]
            failures = "churn_model_reloads_total"
            wait_for(
                lambda: total(scrape(server.base_url), failures, outcome="failed") == 2, 15, server
            )
            answered = load.answered
            wait_for(lambda: load.answered >= answered + 100, 30, server)

        assert serving(server, registry.other_version) == 2  # the bad version never replaced it
        assert load.failed == 0, (load.statuses, load.errors)
        assert (
            httpx.get(f"{server.base_url}/model-info").json()["version"] == registry.other_version
        )
        errors = log_lines(server, "champion reload failed")
        assert len(errors) == 2
        assert all(line["level"] == "error" for line in errors)
