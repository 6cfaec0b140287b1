"""The predict fast path (app.fastpath): same answers as Litestar, and Litestar for all the rest.

Each request is sent twice: to the app as built (fast path in front of Litestar) and to the same
app with the fast path taken out. Status, body bytes and content headers must be identical, and a
counter in front of Litestar shows which path answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from support import CUSTOMERS, VALID, BrokenModel, FakeModel, champion, row

from app.fastpath import FastPredict
from app.main import create_app
from app.settings import Settings


class Counting:
    """An ASGI app that counts the HTTP requests it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


def build(settings: Settings, model: bool = True) -> tuple[Litestar, Counting]:
    """The app with a counter between the fast path and Litestar."""
    served = champion(FakeModel())
    app = create_app(settings, loader=lambda _: served if model else None)
    fast = app.asgi_handler.app  # type: ignore[attr-defined]  # RequestObserver -> FastPredict
    assert isinstance(fast, FastPredict)
    counting = Counting(fast.app)
    fast.app = counting
    return app, counting


def without_fast_path(app: Litestar) -> Litestar:
    observer: Any = app.asgi_handler
    observer.app = observer.app.app.app  # skip FastPredict and the counter
    return app


@pytest.fixture
def clients() -> Iterator[tuple[TestClient[Any], TestClient[Any], Counting]]:
    settings = Settings(max_body_bytes=4096)
    app, counting = build(settings)
    plain, _ = build(settings)
    with TestClient(app) as fast, TestClient(without_fast_path(plain)) as slow:
        yield fast, slow, counting


def answer(response: Any) -> tuple[int, bytes, str | None, str | None]:
    headers = response.headers
    return (
        response.status_code,
        response.content,
        headers.get("content-type"),
        headers.get("content-length"),
    )


BATCH = json.dumps({"instances": CUSTOMERS}).encode()
SINGLE = json.dumps(VALID).encode()
JSON = {"content-type": "application/json"}
RECORDS = json.dumps({"dataframe_records": CUSTOMERS}).encode()
SPLIT = json.dumps(
    {"dataframe_split": {"columns": list(VALID), "data": [list(c.values()) for c in CUSTOMERS]}}
).encode()
INFER = "/v2/models/churn-classifier/infer"
TENSOR = json.dumps(
    {
        "id": "t-1",
        "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": row(VALID)}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
).encode()

FAST = [
    pytest.param("/predict", SINGLE, JSON, id="single"),
    pytest.param("/predict?threshold=0.9", SINGLE, JSON, id="threshold"),
    pytest.param("/predict?threshold=0", SINGLE, JSON, id="threshold-0"),
    pytest.param("/predict", SINGLE, {}, id="no-content-type"),
    pytest.param("/predict", SINGLE, {"content-type": "application/vnd.x+json"}, id="+json"),
    pytest.param("/predict/batch", BATCH, JSON, id="batch"),
    pytest.param("/predict/batch?threshold=1", BATCH, JSON, id="batch-threshold"),
    pytest.param("/invocations", RECORDS, JSON, id="invocations"),
    pytest.param("/invocations", RECORDS, {}, id="invocations-no-content-type"),
    pytest.param("/invocations", SPLIT, JSON, id="invocations-split"),
    pytest.param(INFER, TENSOR, JSON, id="infer"),
    pytest.param(INFER, TENSOR, {}, id="infer-no-content-type"),
]

CROSS = {**VALID, "total_charges": 1.0}
SLOW = [
    pytest.param("/predict", SINGLE, {"content-type": "text/plain"}, id="415"),
    pytest.param("/predict", b"", JSON, id="empty"),
    pytest.param("/predict", b'{"tenure_months": "12"', JSON, id="not-json"),
    pytest.param("/predict", json.dumps({**VALID, "x": 1}).encode(), JSON, id="unknown-field"),
    pytest.param("/predict", json.dumps(CROSS).encode(), JSON, id="cross-field"),
    pytest.param(
        "/predict/batch",
        json.dumps({"instances": [VALID, CROSS, {**VALID, "tenure_months": 2.5}, CROSS]}).encode(),
        JSON,
        id="batch-several-errors",
    ),
    pytest.param("/predict/batch", b'{"instances": []}', JSON, id="batch-empty"),
    pytest.param("/predict?threshold=1.5", SINGLE, JSON, id="threshold-out-of-range"),
    pytest.param("/predict?threshold=abc", b"{}", JSON, id="threshold-and-body-errors"),
    pytest.param("/predict?threshold=0.2&threshold=0.9", SINGLE, JSON, id="repeated-query"),
    pytest.param("/predict?threshold=%30.9", SINGLE, JSON, id="encoded-query"),
    pytest.param("/predict?other=1", SINGLE, JSON, id="other-query"),
    pytest.param(
        "/predict/batch", json.dumps({"instances": CUSTOMERS * 40}).encode(), JSON, id="413"
    ),
    pytest.param("/invocations", RECORDS, {"content-type": "text/csv"}, id="invocations-csv"),
    pytest.param(
        "/invocations", RECORDS, {"content-type": "application/json; charset=utf-8"}, id="charset"
    ),
    pytest.param("/invocations", b"[]", JSON, id="invocations-400"),
    pytest.param("/invocations", RECORDS * 3, JSON, id="invocations-not-json"),
    pytest.param("/v2/models/other/infer", TENSOR, JSON, id="infer-other-model"),
    pytest.param(
        "/v2/models/churn-classifier/versions/7/infer", TENSOR, JSON, id="infer-versioned"
    ),
    pytest.param(INFER, TENSOR.replace(b"FP64", b"BYTES"), JSON, id="infer-400"),
    pytest.param(
        INFER, TENSOR, {"inference-header-content-length": "9", **JSON}, id="infer-binary"
    ),
]


class TestFastPath:
    @pytest.mark.parametrize(("path", "body", "headers"), FAST)
    def test_plain_successes_are_answered_without_litestar_byte_for_byte(
        self, clients: Any, path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        fast, slow, counting = clients
        got = answer(fast.post(path, content=body, headers=headers))
        assert counting.calls == 0
        assert got == answer(slow.post(path, content=body, headers=headers))
        assert got[0] == 200

    @pytest.mark.parametrize(("path", "body", "headers"), SLOW)
    def test_everything_else_is_answered_by_litestar_unchanged(
        self, clients: Any, path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        fast, slow, counting = clients
        got = answer(fast.post(path, content=body, headers=headers))
        assert counting.calls == 1
        assert got == answer(slow.post(path, content=body, headers=headers))

    def test_a_chunked_body_over_the_limit_is_413_from_litestar(self, clients: Any) -> None:
        fast, _, counting = clients
        chunks = iter([SINGLE[:10], b" " * 5000, SINGLE[10:]])
        response = fast.post("/predict", content=chunks, headers=JSON)
        assert response.status_code == 413
        assert counting.calls == 1

    def test_without_a_model_litestar_answers_503(self) -> None:
        app, counting = build(Settings(), model=False)
        with TestClient(app) as client:
            response = client.post("/predict", content=SINGLE, headers=JSON)
        assert response.status_code == 503
        assert response.json() == {"detail": "Model not loaded"}
        assert counting.calls == 1

    @pytest.mark.parametrize(
        ("path", "body", "expected"),
        [
            (
                "/invocations",
                RECORDS,
                {"error_code": "INTERNAL_ERROR", "message": "Internal server error"},
            ),
            (INFER, TENSOR, {"error": "Internal server error"}),
        ],
    )
    def test_a_failing_model_runs_once_and_the_error_has_the_protocols_shape(
        self, path: str, body: bytes, expected: dict[str, str]
    ) -> None:
        model = BrokenModel()
        app = create_app(Settings(), loader=lambda _: champion(model))
        with TestClient(app) as client:
            response = client.post(path, content=body, headers=JSON)
        assert (response.status_code, response.json()) == (500, expected)
        assert model.calls == 1
