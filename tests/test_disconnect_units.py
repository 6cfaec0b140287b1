"""A client gone before its body is complete, in one process: every path answers 499, not 500.

The app runs with its real lifespan on the test's event loop and is called as the server calls
it: ``receive`` gives half a body and then ``http.disconnect`` (what granian sends).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support import VALID, FakeModel, champion

from app.main import create_app
from app.settings import Settings

BODY = json.dumps(VALID).encode()
BATCH = json.dumps({"instances": [VALID] * 3}).encode()


async def hang_up(path: str, query: bytes, body: bytes, model: FakeModel) -> list[dict[str, Any]]:
    """POST half of ``body`` and disconnect; return what the app sent."""
    app = create_app(Settings(), loader=lambda _: champion(model))
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"gone-1"),
                    (b"content-length", b"%d" % len(body))],
    }  # fmt: skip
    async with app.lifespan():
        await app(scope, receive, send)  # type: ignore[arg-type]  # plain dicts as ASGI messages
    return sent


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("/predict", b"", BODY),  # the fast path
        ("/predict/batch", b"", BATCH),
        ("/predict", b"threshold=0.3&x=1", BODY),  # Litestar's path reads the body itself
        ("/predict/batch", b"threshold=nope", BATCH),
    ],
)
def test_a_client_gone_mid_body_is_a_499_logged_at_info_and_the_model_never_runs(
    path: str, query: bytes, body: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    model = FakeModel()
    sent = asyncio.run(hang_up(path, query, body, model))

    starts = [message["status"] for message in sent if message["type"] == "http.response.start"]
    assert all(status == 499 for status in starts), starts
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    access = [line for line in logged if line.get("logger") == "churn_api.access"]
    assert [(line["status"], line["level"], line["request_id"]) for line in access] == [
        (499, "info", "gone-1")
    ]
    assert [line for line in logged if line["level"] == "error"] == []
    assert model.calls == []
