"""A real browser renders /schema from the running server with no internet access."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OPERATIONS = {"/predict", "/predict/batch", "/health", "/model-info"}


def chromium(url: str, profile: Path, *action: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            # No internet: every host name but the loopback address fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--window-size=1280,1400",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def test_schema_page_renders_the_four_operations(server: Server, tmp_path: Path) -> None:
    dom = chromium(f"{server.base_url}/schema", tmp_path / "profile", "--dump-dom").stdout

    # Swagger UI's rendered operation rows, not the spec inside the page's script.
    rendered = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))
    assert rendered >= OPERATIONS, dom[:2000]
    methods = re.findall(r'class="opblock-summary-method">([A-Z]+)<', dom)
    assert methods.count("POST") >= 2
    assert methods.count("GET") >= 2
    assert "churn-api" in dom


def test_schema_page_screenshot(server: Server, tmp_path: Path) -> None:
    picture = tmp_path / "schema.png"

    chromium(f"{server.base_url}/schema", tmp_path / "profile", f"--screenshot={picture}")

    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 20_000  # a rendered page, not a blank one
