"""The scoring endpoints (app.asgi.scoring_route): one path per endpoint, under the one error map.

Every request to ``/predict``, ``/predict/batch``, ``/invocations`` and ``/v2/.../infer`` is
answered by its ``@asgi`` route, successes and errors alike: the plain successes with exactly the
bytes and headers a typed Litestar handler sends, every other case with the contract's status and
error body (the same answers as before the fast path and its replay to Litestar were removed), and
a bug in a decoder is a logged 500, never a silent second path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from support import CUSTOMERS, VALID, BrokenModel, FakeModel, app_with, champion, rounded, row

from app import validation
from app.settings import Settings


@pytest.fixture
def client() -> Iterator[TestClient[Any]]:
    served = champion(FakeModel())
    with TestClient(app_with(Settings(max_body_bytes=4096), lambda _: served)) as client:
        yield client


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
RULE = "total_charges must be >= monthly_charges when tenure_months > 0"
FIELDS = [("body", name) for name in VALID]
SLOW = [
    pytest.param("/predict", SINGLE, {"content-type": "text/plain"}, 415,
                 {"detail": "Content-Type must be application/json"}, id="415"),
    pytest.param("/predict", b"", JSON, 422,
                 [("body", "body", "Request body is empty; expected a JSON object")], id="empty"),
    pytest.param("/predict", b'{"tenure_months": "12"', JSON, 422,
                 [("body", "body", "Request body is not valid JSON: Input data was truncated")],
                 id="not-json"),
    pytest.param("/predict", json.dumps({**VALID, "x": 1}).encode(), JSON, 422,
                 [("body", "x", "Unknown field")], id="unknown-field"),
    pytest.param("/predict", json.dumps(CROSS).encode(), JSON, 422,
                 [("body", "total_charges", RULE)], id="cross-field"),
    pytest.param(
        "/predict/batch",
        json.dumps({"instances": [VALID, CROSS, {**VALID, "tenure_months": 2.5}, CROSS]}).encode(),
        JSON, 422,
        [("body", "instances[1].total_charges", RULE),
         ("body", "instances[2].tenure_months", "Expected `int`, got `float`"),
         ("body", "instances[3].total_charges", RULE)],
        id="batch-several-errors",
    ),
    pytest.param("/predict/batch", b'{"instances": []}', JSON, 422,
                 [("body", "instances", "Expected 1 to 1024 instances, got 0")], id="batch-empty"),
    pytest.param("/predict?threshold=1.5", SINGLE, JSON, 422,
                 [("query", "threshold", "Expected `float` <= 1.0, got '1.5'")],
                 id="threshold-out-of-range"),
    pytest.param("/predict?threshold=abc", b"{}", JSON, 422,
                 [("query", "threshold", "Expected `float`, got `str`, got 'abc'")]
                 + [(source, name, "Field required") for source, name in FIELDS],
                 id="threshold-and-body-errors"),
    pytest.param("/predict?threshold=0.2&threshold=0.9", SINGLE, JSON, 200, 0.9,
                 id="repeated-query"),  # the last value counts
    pytest.param("/predict?threshold=%30.9", SINGLE, JSON, 200, 0.9, id="encoded-query"),
    pytest.param("/predict?other=1", SINGLE, JSON, 200, 0.5, id="other-query"),
    pytest.param("/predict?threshold=0.5&threshold=x", SINGLE, JSON, 422,
                 [("query", "threshold", "Expected `float`, got `str`, got 'x'")],
                 id="repeated-query-one-bad"),
    pytest.param("/predict/batch", json.dumps({"instances": CUSTOMERS * 40}).encode(), JSON, 413,
                 {"detail": "Request body is larger than MAX_BODY_BYTES (4096 bytes)"}, id="413"),
    pytest.param("/invocations", RECORDS, {"content-type": "text/csv"}, 400,
                 {"error_code": "INVALID_PARAMETER_VALUE",
                  "message": f"csv header: missing columns {list(VALID)}"},
                 id="invocations-csv"),
    pytest.param("/invocations", RECORDS, {"content-type": "application/json; charset=utf-8"},
                 200, {"predictions": [int(FakeModel.probability(c) > 0.5) for c in CUSTOMERS]},
                 id="charset"),
    pytest.param("/invocations", b"[]", JSON, 400,
                 {"error_code": "BAD_REQUEST", "message": "Expected a JSON object with exactly one "
                  "of dataframe_split, dataframe_records, instances, inputs, got array"},
                 id="invocations-400"),
    pytest.param("/invocations", RECORDS * 3, JSON, 400,
                 {"error_code": "BAD_REQUEST", "message": "Request body is not valid JSON: JSON is "
                  f"malformed: trailing characters (byte {len(RECORDS) + 1})"},
                 id="invocations-not-json"),
    pytest.param("/v2/models/other/infer", TENSOR, JSON, 404,
                 {"error": "unknown model 'other'; this server serves 'churn-classifier'"},
                 id="infer-other-model"),
    pytest.param("/v2/models/churn-classifier/versions/7/infer", TENSOR, JSON, 200, None,
                 id="infer-versioned"),
    pytest.param("/v2/models/churn-classifier/versions/8/infer", TENSOR, JSON, 404,
                 {"error": "model 'churn-classifier' has no version '8' here (serving version 7)"},
                 id="infer-other-version"),
    pytest.param(INFER, TENSOR.replace(b"FP64", b"BYTES"), JSON, 400,
                 {"error": "x: datatype must be one of FP64, FP32, INT64, INT32, got 'BYTES'"},
                 id="infer-400"),
    pytest.param(INFER, TENSOR, {"inference-header-content-length": "9", **JSON}, 400,
                 {"error": "binary tensor data is not supported: send JSON tensors (tritonclient: "
                  "binary_data=False, and name the outputs with binary_data=False)"},
                 id="infer-binary"),
]  # fmt: skip


def expected(path: str, body: bytes) -> Any:
    """What FakeModel's answer to a plain success is, computed from the request on its own."""
    threshold = float(path.split("threshold=")[1]) if "threshold=" in path else 0.5
    sent = json.loads(body)
    if path.startswith("/predict/batch"):
        answers = [expected(f"/predict?threshold={threshold}", json.dumps(c).encode())
                   for c in sent["instances"]]  # fmt: skip
        return {"predictions": answers, "count": len(answers)}
    if path.startswith("/predict"):
        p = FakeModel.probability(sent)
        return {"churn_probability": rounded(p), "churn_label": p >= threshold,
                "model_version": "7"}  # fmt: skip
    if path.startswith("/invocations"):
        rows = sent.get("dataframe_records") or [
            dict(zip(sent["dataframe_split"]["columns"], values, strict=True))
            for values in sent["dataframe_split"]["data"]
        ]
        return {"predictions": [int(FakeModel.probability(r) > 0.5) for r in rows]}
    p = FakeModel.probability(VALID)
    return {
        "model_name": "churn-classifier", "model_version": "7", "id": "t-1",
        "outputs": [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [int(p >= 0.5)]},
                    {"name": "predict_proba", "shape": [1, 2], "datatype": "FP64",
                     "data": [1.0 - p, p]}],
    }  # fmt: skip


class TestScoringRoutes:
    @pytest.mark.parametrize(("path", "body", "headers"), FAST)
    def test_plain_successes_are_answered_with_the_models_answer_as_json(
        self, client: TestClient[Any], path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        status, content, content_type, length = answer(
            client.post(path, content=body, headers=headers)
        )
        assert (status, content_type, length) == (200, "application/json", str(len(content)))
        assert json.loads(content) == expected(path, body)

    @pytest.mark.parametrize(("path", "body", "headers", "status", "wanted"), SLOW)
    def test_everything_else_gets_the_contracts_status_and_error_body(
        self,
        client: TestClient[Any],
        path: str,
        body: bytes,
        headers: dict[str, str],
        status: int,
        wanted: Any,
    ) -> None:
        response = client.post(path, content=body, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        got = response.json()
        if isinstance(wanted, list):  # a 422: every offending field, in order
            assert got["detail"] == "Request validation failed"
            assert [(e["source"], e["field"], e["message"]) for e in got["errors"]] == wanted
        elif isinstance(wanted, float):  # a success at this threshold
            assert got == expected(f"/predict?threshold={wanted}", body)
        elif wanted is None:  # the served version named in the path
            assert got == expected(INFER, body)
        else:
            assert got == wanted

    @pytest.mark.parametrize(
        ("path", "body", "headers"),
        [*FAST[:1], *FAST[4:7], *(pytest.param(*case.values[:3], id=case.id) for case in SLOW)],
    )
    def test_routed_before_litestar_or_by_it_the_answer_is_the_same(
        self, client: TestClient[Any], path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        # "/predict" is looked up before Litestar's router (app.asgi.ScoringRoutes); "/predict/"
        # is routed by Litestar to the same endpoint: the two answers must not differ.
        route, _, query = path.partition("?")
        by_litestar = f"{route}/?{query}" if query else f"{route}/"
        assert answer(client.post(path, content=body, headers=headers)) == answer(
            client.post(by_litestar, content=body, headers=headers)
        )

    @pytest.mark.parametrize("path", ["/predict", INFER])
    def test_an_invalid_host_header_gets_the_routers_answer(
        self, client: TestClient[Any], path: str
    ) -> None:
        response = client.post(path, content=SINGLE, headers={**JSON, "host": "a b"})
        assert (response.status_code, response.json()) == (422, {"detail": "Invalid host header"})

    def test_a_chunked_body_over_the_limit_is_413(self, client: TestClient[Any]) -> None:
        chunks = iter([SINGLE[:10], b" " * 5000, SINGLE[10:]])
        response = client.post("/predict", content=chunks, headers=JSON)
        assert response.status_code == 413
        assert response.json() == {
            "detail": "Request body is larger than MAX_BODY_BYTES (4096 bytes)"
        }

    @pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/invocations", INFER])
    def test_other_methods_get_what_the_router_answers_for_a_post_route(
        self, client: TestClient[Any], path: str
    ) -> None:
        options = client.options(path)
        assert (options.status_code, options.headers["allow"], options.content) == (
            204, "OPTIONS, POST", b""
        )  # fmt: skip
        for method in ("GET", "PUT", "DELETE"):
            response = client.request(method, path)
            assert response.status_code == 405
            assert response.headers["allow"] == "POST, OPTIONS"
            assert response.json() == {"detail": "Method Not Allowed"}

    def test_without_a_model_the_answer_is_503(self) -> None:
        with TestClient(app_with(Settings(), lambda _: None)) as client:
            response = client.post("/predict", content=SINGLE, headers=JSON)
        assert response.status_code == 503
        assert response.json() == {"detail": "Model not loaded"}

    def test_a_bug_in_a_decoder_is_a_logged_500_and_the_model_never_runs(
        self, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
    ) -> None:
        model = FakeModel()

        class Broken:
            def decode(self, raw: bytes) -> Any:
                raise RuntimeError("decoder bug")

        monkeypatch.setattr(validation, "customer_decoder", Broken())
        with TestClient(app_with(Settings(), lambda _: champion(model))) as client:
            response = client.post("/predict", content=SINGLE, headers=JSON)
        assert (response.status_code, response.json()) == (500, {"detail": "Internal server error"})
        errors = [json.loads(line) for line in capfd.readouterr().err.splitlines()
                  if '"level":"error"' in line]  # fmt: skip
        assert [line["message"] for line in errors] == ["unhandled error on POST /predict"]
        assert "decoder bug" in errors[0]["exc"]
        assert model.calls == []

    @pytest.mark.parametrize(
        ("path", "body", "expected"),
        [
            (
                "/invocations",
                RECORDS,
                {"error_code": "INTERNAL_ERROR", "message": "Internal server error"},
            ),
            (INFER, TENSOR, {"error": "Internal server error"}),
            ("/predict", SINGLE, {"detail": "Internal server error"}),
        ],
    )
    def test_a_failing_model_runs_once_and_the_error_has_the_protocols_shape(
        self, path: str, body: bytes, expected: dict[str, str]
    ) -> None:
        model = BrokenModel()
        app = app_with(Settings(), lambda _: champion(model))
        with TestClient(app) as client:
            response = client.post(path, content=body, headers=JSON)
        assert (response.status_code, response.json()) == (500, expected)
        assert model.calls == 1
