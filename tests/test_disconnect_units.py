"""A client gone before its answer, in one process: every front end logs and counts 499, not 500.

The app runs with its real lifespan on the test's event loop and is called as the server calls
it: ``receive`` gives half a body and then ``http.disconnect`` (what granian sends), or the whole
body, one empty end of body and then ``http.disconnect`` while the model is scoring (granian's
order once a client that sent everything hangs up).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY
from support import VALID, FakeModel, app_with, champion, row

from app.arrays import Rows
from app.settings import Settings
from app.tally import TALLY

BODY = json.dumps(VALID).encode()
BATCH = json.dumps({"instances": [VALID] * 3}).encode()


RECORDS = json.dumps({"dataframe_records": [VALID]}).encode()
TENSOR = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": row(VALID)}]}
).encode()
GONE = {"type": "http.disconnect"}


async def hang_up(
    path: str, query: bytes, body: bytes, model: Any, *, after_body: bool = False
) -> list[dict[str, Any]]:
    """POST half of ``body`` and disconnect (or all of it, then disconnect); what the app sent."""
    app = app_with(Settings(), lambda _: champion(model))
    messages: list[dict[str, Any]] = (
        [
            {"type": "http.request", "body": body, "more_body": False},
            {"type": "http.request", "body": b"", "more_body": False},
        ]
        if after_body
        else [{"type": "http.request", "body": body[: len(body) // 2], "more_body": True}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        if isinstance(model, Waiting):
            model.client_gone.set()
        return GONE

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
        ("/predict", b"", BODY),
        ("/predict/batch", b"", BATCH),
        ("/predict", b"threshold=0.3&x=1", BODY),
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


class Waiting(FakeModel):
    """Scores only once the client has hung up: its answer can never reach the client."""

    def __init__(self) -> None:
        super().__init__()
        self.client_gone = threading.Event()

    def __call__(self, rows: Rows) -> Any:
        assert self.client_gone.wait(10)
        return super().__call__(rows)


def counted(route: str, status: str) -> float:
    TALLY.flush()
    labels = {"route": route, "method": "POST", "status": status}
    return REGISTRY.get_sample_value("churn_http_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("path", "route", "body"),
    [
        ("/predict", "/predict", BODY),
        ("/predict/batch", "/predict/batch", BATCH),
        ("/invocations", "/invocations", RECORDS),
        ("/v2/models/churn-classifier/infer", "/v2/models/{name}/infer", TENSOR),
    ],
)
def test_a_client_gone_after_its_body_before_its_answer_is_a_499_logged_once_at_info(
    path: str, route: str, body: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    model = Waiting()
    before = {status: counted(route, status) for status in ("200", "499", "500")}
    asyncio.run(hang_up(path, b"", body, model, after_body=True))

    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    access = [line for line in logged if line.get("logger") == "churn_api.access"]
    assert [(line["status"], line["level"], line["request_id"]) for line in access] == [
        (499, "info", "gone-1")
    ]
    assert [line for line in logged if line["level"] == "error"] == []
    after = {status: counted(route, status) for status in before}
    assert {status: after[status] - before[status] for status in before} == {
        "200": 0, "499": 1, "500": 0
    }  # fmt: skip
    assert len(model.calls) == 1  # scored with whatever it was batched with; the answer is dropped
