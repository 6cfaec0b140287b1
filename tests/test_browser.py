"""A real browser renders /schema from the running server with no internet access."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import Server
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OPERATIONS = {"/predict", "/predict/batch", "/health", "/model-info"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ROW = (
    r'class="opblock-summary-method">([A-Z]+)<'
    r'.*?class="opblock-summary-path"[^>]*data-path="([^"]+)"'
)
BADGES = {"POST": (0x49, 0xCC, 0x90), "GET": (0x61, 0xAF, 0xFE)}  # Swagger UI's badge colours


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


def test_schema_page_shows_every_operation_of_the_document_under_its_title(
    server: Server, tmp_path: Path
) -> None:
    document = httpx.get(f"{server.base_url}/schema/openapi.json", timeout=10).json()

    dom = chromium(f"{server.base_url}/schema", tmp_path / "profile", "--dump-dom").stdout

    expected = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    # Each operation row as Swagger UI rendered it: its method badge, then its path.
    shown = set(re.findall(ROW, dom, re.DOTALL))
    assert shown == expected, sorted(expected ^ shown)
    title = re.search(r'<h[12] class="title">([^<]+)<', dom)
    assert title is not None, dom[:2000]
    assert title[1].strip() == document["info"]["title"]
    version = rf'<pre class="version">\s*{re.escape(document["info"]["version"])}\s*</pre>'
    assert re.search(version, dom), "no version badge beside the title"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS and operation.get("summary"):
                assert operation["summary"] in dom, (method, path)


def test_schema_page_screenshot(server: Server, tmp_path: Path) -> None:
    picture = tmp_path / "schema.png"

    chromium(f"{server.base_url}/schema", tmp_path / "profile", f"--screenshot={picture}")

    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 20_000  # a rendered page, not a blank one
    with Image.open(picture) as image:
        assert image.size == (1280, 1400)  # the window asked for
        pixels = Counter(image.convert("RGB").get_flattened_data())
    # Swagger UI's own stylesheet (served by the service, offline) paints each operation's method
    # badge: POST green, GET blue, about 2,200 pixels each at this size; at least two of each are
    # in view. Unstyled or unrendered, the page has neither colour.
    for method, colour in BADGES.items():
        assert pixels[colour] >= 3_000, f"fewer than two {method} badges ({colour}) in view"
