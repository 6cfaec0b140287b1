"""The HTTP contract, clause by clause, against the real app with a fake model (docs/api.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
from collections.abc import Iterator
from importlib.metadata import version as package_version
from typing import Any, ClassVar

import numpy as np
import pytest
from conftest import MakeClient
from litestar.testing import TestClient
from support import (
    CUSTOMERS,
    VALID,
    BrokenModel,
    ConstantModel,
    FakeModel,
    Payload,
    app_with,
    champion,
    customer,
    rounded,
)

from app.errors import StartupError
from app.model import Champion
from app.schemas import FEATURES
from app.settings import Settings

Client = TestClient[Any]
PREDICT_PATHS = ["/predict", "/predict/batch"]


@contextlib.contextmanager
def recorded_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Records reaching logger ``name`` (Litestar reconfigures the root logger's handlers)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    logging.getLogger(name).addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger(name).removeHandler(handler)


def post_customer(client: Client, path: str, payload: Any, **kwargs: Any) -> Any:
    """POST one customer to ``/predict``, or the same customer as a batch of one."""
    body = {"instances": [payload]} if path == "/predict/batch" else payload
    return client.post(path, json=body, **kwargs)


def offending(response: Any) -> list[tuple[str, str]]:
    """``(source, field)`` of every error in a 422 body, checking its shape on the way."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["detail"]
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"source", "field", "message"}
        assert error["source"] in {"body", "query"}
        assert error["message"]
    return [(error["source"], error["field"]) for error in body["errors"]]


def field_path(path: str, name: str, index: int = 0) -> str:
    return f"instances[{index}].{name}" if path == "/predict/batch" else name


class TestPredict:
    def test_single_answers_200_with_probability_label_and_version(
        self, client: Client, fake_model: FakeModel
    ) -> None:
        response = client.post("/predict", json=VALID)

        assert response.status_code == 200  # not Litestar's default 201
        probability = FakeModel.probability(VALID)
        assert response.json() == {
            "churn_probability": rounded(probability),
            "churn_label": probability >= 0.5,
            "model_version": "7",
        }

    def test_batch_answers_one_prediction_per_instance_in_order(self, client: Client) -> None:
        response = client.post("/predict/batch", json={"instances": CUSTOMERS})

        assert response.status_code == 200
        body = response.json()
        assert body["count"] == len(CUSTOMERS)
        assert body["predictions"] == [
            {
                "churn_probability": rounded(FakeModel.probability(payload)),
                "churn_label": FakeModel.probability(payload) >= 0.5,
                "model_version": "7",
            }
            for payload in CUSTOMERS
        ]

    def test_batch_is_scored_with_one_model_call(
        self, client: Client, fake_model: FakeModel
    ) -> None:
        instances = [customer(num_support_tickets=i % 1001) for i in range(1024)]

        response = client.post("/predict/batch", json={"instances": instances})

        assert response.status_code == 200
        assert response.json()["count"] == 1024
        assert len(fake_model.calls) == 1
        assert fake_model.calls[0].shape == (1024, len(FEATURES))

    def test_model_sees_columns_in_contract_order_whatever_the_json_order(
        self, client: Client, fake_model: FakeModel
    ) -> None:
        shuffled = {name: VALID[name] for name in reversed(FEATURES)}
        assert list(shuffled) != list(FEATURES)

        assert client.post("/predict", json=shuffled).status_code == 200
        assert client.post("/predict/batch", json={"instances": [shuffled]}).status_code == 200

        expected = [12.0, 79.5, 954.0, 3.0, 1.0]  # tenure, monthly, total, tickets, month-to-month
        assert [call.tolist() for call in fake_model.calls] == [[expected], [expected]]
        assert all(call.dtype == np.float64 for call in fake_model.calls)

    def test_model_version_is_the_loaded_version_as_a_string(self, make_client: MakeClient) -> None:
        client = make_client(loader=lambda _: champion(FakeModel(), version="42"))

        single = client.post("/predict", json=VALID).json()
        batch = client.post("/predict/batch", json={"instances": [VALID, VALID]}).json()

        assert single["model_version"] == "42"
        assert [p["model_version"] for p in batch["predictions"]] == ["42", "42"]

    def test_probability_is_rounded_to_six_decimals(self, make_client: MakeClient) -> None:
        client = make_client(ConstantModel(0.123456789))

        assert client.post("/predict", json=VALID).json()["churn_probability"] == 0.123457

    @pytest.mark.parametrize(
        ("probability", "threshold", "label"),
        [
            (0.4999996, 0.5, False),  # shown as 0.5, but the label uses the unrounded value
            (0.5, 0.5, True),  # >=, not >
            (0.4999996, 0.4999996, True),
            (0.0, 0.0, True),
            (1.0, 1.0, True),
            (0.9999994, 1.0, False),
        ],
    )
    def test_label_compares_the_unrounded_probability_with_the_threshold(
        self, make_client: MakeClient, probability: float, threshold: float, label: bool
    ) -> None:
        client = make_client(ConstantModel(probability))

        for path in PREDICT_PATHS:
            response = post_customer(client, path, VALID, params={"threshold": str(threshold)})
            body = response.json()
            prediction = body["predictions"][0] if path == "/predict/batch" else body
            assert prediction["churn_probability"] == round(probability, 6)
            assert prediction["churn_label"] is label


class TestThreshold:
    @pytest.mark.parametrize("path", PREDICT_PATHS)
    def test_threshold_changes_the_label_never_the_probability(
        self, make_client: MakeClient, path: str
    ) -> None:
        client = make_client(ConstantModel(0.3))

        answers = {
            threshold: post_customer(client, path, VALID, params={"threshold": threshold}).json()
            for threshold in ("0", "0.2", "0.3", "0.31", "1")
        }

        predictions = {
            threshold: body["predictions"][0] if path == "/predict/batch" else body
            for threshold, body in answers.items()
        }
        assert {p["churn_probability"] for p in predictions.values()} == {0.3}
        assert {t: p["churn_label"] for t, p in predictions.items()} == {
            "0": True,
            "0.2": True,
            "0.3": True,
            "0.31": False,
            "1": False,
        }

    def test_default_threshold_is_decision_threshold(self, make_client: MakeClient) -> None:
        default = make_client(ConstantModel(0.3))
        lowered = make_client(
            ConstantModel(0.3), settings=Settings.from_environ({"DECISION_THRESHOLD": "0.25"})
        )

        assert default.post("/predict", json=VALID).json()["churn_label"] is False
        assert lowered.post("/predict", json=VALID).json()["churn_label"] is True
        assert lowered.get("/model-info").json()["threshold"] == 0.25
        # A request's own threshold wins, for that request only.
        assert lowered.post("/predict?threshold=0.5", json=VALID).json()["churn_label"] is False
        assert lowered.post("/predict", json=VALID).json()["churn_label"] is True

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize("value", ["-0.01", "1.01", "2", "abc", "nan", "inf", "-inf", "1e999"])
    def test_bad_threshold_is_422_naming_the_query_parameter(
        self, client: Client, fake_model: FakeModel, path: str, value: str
    ) -> None:
        response = post_customer(client, path, VALID, params={"threshold": value})

        assert offending(response) == [("query", "threshold")]
        assert fake_model.calls == []


class TestStrictTypes:
    TYPE_CASES: ClassVar[list[tuple[str, Any]]] = [
        ("tenure_months", "12"),
        ("tenure_months", 24.5),
        ("tenure_months", True),
        ("tenure_months", None),
        ("tenure_months", [12]),
        ("monthly_charges", "79.5"),
        ("monthly_charges", "nan"),
        ("monthly_charges", True),
        ("monthly_charges", None),
        ("monthly_charges", {"value": 79.5}),
        ("total_charges", "954.0"),
        ("total_charges", False),
        ("total_charges", None),
        ("num_support_tickets", "3"),
        ("num_support_tickets", 2.5),
        ("num_support_tickets", True),
        ("num_support_tickets", None),
        ("is_month_to_month", 1),
        ("is_month_to_month", 0),
        ("is_month_to_month", 1.0),
        ("is_month_to_month", "true"),
        ("is_month_to_month", None),
    ]

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize(("name", "value"), TYPE_CASES)
    def test_wrong_type_is_422_naming_the_field(
        self, client: Client, fake_model: FakeModel, path: str, name: str, value: Any
    ) -> None:
        response = post_customer(client, path, customer(**{name: value}))

        assert offending(response) == [("body", field_path(path, name))]
        assert fake_model.calls == []

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize("name", FEATURES)
    def test_missing_field_is_422_naming_it(self, client: Client, path: str, name: str) -> None:
        payload = {key: value for key, value in VALID.items() if key != name}

        response = post_customer(client, path, payload)

        assert offending(response) == [("body", field_path(path, name))]
        assert "required" in response.text.lower()

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    def test_unknown_field_is_422_naming_it(self, client: Client, path: str) -> None:
        response = post_customer(client, path, customer(monthlyCharges=79.5))

        assert offending(response) == [("body", field_path(path, "monthlyCharges"))]

    def test_a_misspelt_field_is_both_unknown_and_missing(self, client: Client) -> None:
        payload = {**VALID, "monthlyCharges": VALID["monthly_charges"]}
        del payload["monthly_charges"]

        response = client.post("/predict", json=payload)

        assert sorted(offending(response)) == [
            ("body", "monthlyCharges"),
            ("body", "monthly_charges"),
        ]

    def test_unknown_field_beside_instances_is_422(self, client: Client) -> None:
        response = client.post("/predict/batch", json={"instances": [VALID], "threshold": 0.2})

        assert offending(response) == [("body", "threshold")]

    @pytest.mark.parametrize("body", [[VALID], "x", 1, None, True])
    def test_body_that_is_not_an_object_is_422(self, client: Client, body: Any) -> None:
        for path in PREDICT_PATHS:
            response = client.post(path, content=json.dumps(body))
            assert offending(response)


class TestBounds:
    REJECTED: ClassVar[list[tuple[str, Any]]] = [
        ("tenure_months", -1),
        ("tenure_months", 601),
        ("monthly_charges", 0),
        ("monthly_charges", 0.0),
        ("monthly_charges", -0.01),
        ("monthly_charges", 10_000),
        ("monthly_charges", 10_000.0),
        ("total_charges", -0.01),
        ("total_charges", 6_000_000.01),
        ("num_support_tickets", -1),
        ("num_support_tickets", 1001),
    ]
    ACCEPTED: ClassVar[list[Payload]] = [
        {"tenure_months": 0, "total_charges": 0.0},  # both lower bounds; rule does not apply
        {"tenure_months": 600},
        {"monthly_charges": 0.01},
        {"monthly_charges": 9999.99, "total_charges": 9999.99},
        {"total_charges": 6_000_000},
        {"num_support_tickets": 0},
        {"num_support_tickets": 1000},
        {"is_month_to_month": False},
    ]

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize(("name", "value"), REJECTED)
    def test_out_of_range_is_422_naming_the_field(
        self, client: Client, fake_model: FakeModel, path: str, name: str, value: Any
    ) -> None:
        response = post_customer(client, path, customer(**{name: value}))

        assert offending(response) == [("body", field_path(path, name))]
        assert fake_model.calls == []

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize("changes", ACCEPTED)
    def test_values_on_an_inclusive_bound_are_accepted(
        self, client: Client, fake_model: FakeModel, path: str, changes: Payload
    ) -> None:
        payload = customer(**changes)

        response = post_customer(client, path, payload)

        assert response.status_code == 200, response.text
        assert fake_model.calls[0].tolist() == [[float(payload[name]) for name in FEATURES]]

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize("literal", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
    def test_non_finite_numbers_are_422(self, client: Client, path: str, literal: bytes) -> None:
        one = json.dumps(customer(monthly_charges=0.5)).encode().replace(b"0.5", literal)
        body = b'{"instances": [' + one + b"]}" if path == "/predict/batch" else one

        response = client.post(path, content=body)

        assert offending(response)


class TestCrossFieldRule:
    def test_total_below_monthly_with_tenure_is_422_naming_total_charges(
        self, client: Client
    ) -> None:
        response = client.post(
            "/predict", json=customer(tenure_months=1, monthly_charges=50.0, total_charges=49.99)
        )

        assert offending(response) == [("body", "total_charges")]
        assert "monthly_charges" in response.json()["errors"][0]["message"]

    @pytest.mark.parametrize(
        "changes",
        [
            {"tenure_months": 1, "monthly_charges": 50.0, "total_charges": 50.0},  # equal is fine
            {"tenure_months": 0, "monthly_charges": 50.0, "total_charges": 0.0},  # new customer
            {"tenure_months": 0, "monthly_charges": 50.0, "total_charges": 10.0},
        ],
    )
    def test_rule_allows_equal_totals_and_new_customers(
        self, client: Client, changes: Payload
    ) -> None:
        assert client.post("/predict", json=customer(**changes)).status_code == 200

    def test_rule_in_a_batch_names_the_instance(self, client: Client) -> None:
        bad = customer(tenure_months=5, monthly_charges=100.0, total_charges=99.0)

        response = client.post("/predict/batch", json={"instances": [VALID, VALID, bad]})

        assert offending(response) == [("body", "instances[2].total_charges")]


class TestEveryErrorIsNamed:
    def test_all_offending_fields_of_a_batch_and_query_are_reported_together(
        self, client: Client, fake_model: FakeModel
    ) -> None:
        instances = [
            VALID,
            customer(monthly_charges="79.5"),
            VALID,
            customer(tenure_months=3, monthly_charges=80.0, total_charges=10.0),
            {**{k: v for k, v in VALID.items() if k != "tenure_months"}, "foo": 1},
            customer(num_support_tickets=-1, is_month_to_month=1),
        ]

        response = client.post(
            "/predict/batch", params={"threshold": "2"}, json={"instances": instances}
        )

        assert sorted(offending(response)) == sorted(
            [
                ("query", "threshold"),
                ("body", "instances[1].monthly_charges"),
                ("body", "instances[3].total_charges"),
                ("body", "instances[4].foo"),
                ("body", "instances[4].tenure_months"),
                ("body", "instances[5].num_support_tickets"),
                ("body", "instances[5].is_month_to_month"),
            ]
        )
        assert fake_model.calls == []

    def test_all_offending_fields_of_one_customer_are_reported(self, client: Client) -> None:
        payload = customer(tenure_months="x", monthly_charges=0, is_month_to_month=None, extra=1)

        response = client.post("/predict", params={"threshold": "-1"}, json=payload)

        assert sorted(offending(response)) == [
            ("body", "extra"),
            ("body", "is_month_to_month"),
            ("body", "monthly_charges"),
            ("body", "tenure_months"),
            ("query", "threshold"),
        ]

    def test_a_bad_threshold_with_a_good_body_names_only_the_query(self, client: Client) -> None:
        response = client.post("/predict", params={"threshold": "x"}, json=VALID)

        assert offending(response) == [("query", "threshold")]


class TestBatchSize:
    @pytest.mark.parametrize("size", [0, 1025])
    def test_batch_of_0_or_more_than_1024_is_422(
        self, client: Client, fake_model: FakeModel, size: int
    ) -> None:
        response = client.post("/predict/batch", json={"instances": [VALID] * size})

        assert offending(response) == [("body", "instances")]
        assert fake_model.calls == []

    @pytest.mark.parametrize("size", [1, 1024])
    def test_batch_of_1_and_1024_is_scored(self, client: Client, size: int) -> None:
        response = client.post("/predict/batch", json={"instances": [VALID] * size})

        assert response.status_code == 200
        assert response.json()["count"] == size
        assert len(response.json()["predictions"]) == size

    @pytest.mark.parametrize("instances", [None, {}, VALID, "x"])
    def test_instances_that_is_not_an_array_is_422(self, client: Client, instances: Any) -> None:
        response = client.post("/predict/batch", json={"instances": instances})

        assert offending(response) == [("body", "instances")]


class TestNotJSON:
    BODIES: ClassVar[list[Any]] = [
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n", id="whitespace"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"not json", id="text"),
        pytest.param(b'{"tenure_months": 12,}', id="trailing-comma"),
        pytest.param(json.dumps(VALID).encode() + b"{}", id="trailing-data"),
        pytest.param(b"\xff\xfe{\x00", id="invalid-utf8"),
        pytest.param(
            json.dumps(customer(monthly_charges="79.5")).encode().replace(b"79.5", b"\xc3\x28"),
            id="invalid-utf8-in-string",
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep-object"),
    ]

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize("body", BODIES)
    def test_body_that_is_not_json_is_422(self, client: Client, path: str, body: bytes) -> None:
        response = client.post(path, content=body, headers={"content-type": "application/json"})

        assert offending(response) == [("body", "body")]

    def test_empty_body_without_content_type_is_422(self, client: Client) -> None:
        assert offending(client.post("/predict")) == [("body", "body")]


class TestContentType:
    @pytest.mark.parametrize("path", PREDICT_PATHS)
    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",  # what curl -d sends without -H
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/msgpack",
        ],
    )
    def test_non_json_content_type_is_415_with_a_short_json_message(
        self, client: Client, fake_model: FakeModel, path: str, content_type: str
    ) -> None:
        body = {"instances": [VALID]} if path == "/predict/batch" else VALID

        response = client.post(
            path, content=json.dumps(body), headers={"content-type": content_type}
        )

        assert response.status_code in {415, 422}
        assert response.status_code == 415  # what this service chose of the two
        assert response.headers["content-type"].startswith("application/json")
        assert "json" in response.json()["detail"].lower()
        assert fake_model.calls == []

    @pytest.mark.parametrize(
        "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"]
    )
    def test_json_content_types_are_accepted(self, client: Client, content_type: str) -> None:
        response = client.post(
            "/predict", content=json.dumps(VALID), headers={"content-type": content_type}
        )

        assert response.status_code == 200


class TestBodySize:
    LIMIT = 1000

    def padded(self, size: int) -> bytes:
        body = json.dumps(VALID).encode()
        return body + b" " * (size - len(body))

    def test_body_over_max_body_bytes_is_413_and_the_app_keeps_serving(
        self, make_client: MakeClient, fake_model: FakeModel
    ) -> None:
        client = make_client(fake_model, settings=Settings(max_body_bytes=self.LIMIT))

        too_big = client.post("/predict", content=self.padded(self.LIMIT + 1))
        at_limit = client.post("/predict", content=self.padded(self.LIMIT))

        assert too_big.status_code == 413
        assert too_big.headers["content-type"].startswith("application/json")
        assert "MAX_BODY_BYTES" in too_big.json()["detail"]
        assert at_limit.status_code == 200
        assert len(fake_model.calls) == 1

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    def test_chunked_body_over_the_limit_is_413(
        self, make_client: MakeClient, fake_model: FakeModel, path: str
    ) -> None:
        client = make_client(fake_model, settings=Settings(max_body_bytes=self.LIMIT))

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            yield b'{"instances": [' if path == "/predict/batch" else b""
            for _ in range(10):
                yield b" " * 200

        response = client.post(path, content=chunks())

        assert response.status_code == 413
        assert "MAX_BODY_BYTES" in response.json()["detail"]
        valid = {"instances": [VALID]} if path == "/predict/batch" else VALID
        assert client.post(path, json=valid).status_code == 200
        assert len(fake_model.calls) == 1

    def test_default_limit_is_one_mebibyte(self, client: Client) -> None:
        response = client.post("/predict", content=self.padded(1_048_577))

        assert response.status_code == 413
        assert client.post("/predict", content=self.padded(1_048_576)).status_code == 200


class TestModelNotLoaded:
    @pytest.fixture
    def unloaded(self, make_client: MakeClient) -> Client:
        return make_client(loader=lambda _: None)

    def test_health_is_503_unavailable(self, unloaded: Client) -> None:
        response = unloaded.get("/health")

        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}

    @pytest.mark.parametrize("path", PREDICT_PATHS)
    def test_predict_is_503_model_not_loaded(self, unloaded: Client, path: str) -> None:
        response = post_customer(unloaded, path, VALID)

        assert response.status_code == 503
        assert response.json() == {"detail": "Model not loaded"}

    def test_model_info_is_503_model_not_loaded(self, unloaded: Client) -> None:
        response = unloaded.get("/model-info")

        assert response.status_code == 503
        assert response.json() == {"detail": "Model not loaded"}

    def test_health_is_200_ok_with_a_model(self, client: Client) -> None:
        response = client.get("/health")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


class TestLifecycle:
    def test_model_is_loaded_once_at_startup_never_per_request(
        self, make_client: MakeClient
    ) -> None:
        loads: list[Settings] = []
        model = champion(FakeModel())

        def loader(settings: Settings) -> Champion:
            loads.append(settings)
            return model

        settings = Settings(model_alias="champion")
        client = make_client(settings=settings, loader=loader)
        assert loads == [settings]  # before the first request

        for _ in range(5):
            assert client.post("/predict", json=VALID).status_code == 200
            assert client.post("/predict/batch", json={"instances": [VALID]}).status_code == 200
        assert len(loads) == 1

    def test_a_loader_that_fails_stops_the_app_from_starting(self) -> None:
        def loader(_: Settings) -> Champion:
            raise StartupError("cannot load churn-classifier@champion")

        client = TestClient(app_with(Settings(), loader))

        with pytest.raises((StartupError, BaseExceptionGroup)) as raised, client:
            pass

        # Litestar may wrap the lifespan's exception in an exception group.
        if isinstance(raised.value, BaseExceptionGroup):
            assert raised.group_contains(StartupError, match="cannot load", depth=None)
        else:
            assert isinstance(raised.value, StartupError)


class TestModelInfo:
    def test_model_info_reports_the_registry_facts_threshold_and_features(
        self, client: Client
    ) -> None:
        response = client.get("/model-info")

        assert response.status_code == 200
        assert response.json() == {
            "name": "churn-classifier",
            "version": "7",
            "alias": "champion",
            "run_id": "r1",
            "threshold": 0.5,
            "features": list(FEATURES),
            "scoring": "numpy",
            "drift_monitoring": False,  # a fake model has no reference profile
        }


FORBIDDEN_IN_RESPONSES = [
    "Traceback",
    'File "',
    ".py",
    "/opt/models",
    "boom",
    "site-packages",
    f"Python {platform.python_version()}",
    package_version("litestar"),
    package_version("msgspec"),
]


class TestUnexpectedErrors:
    @pytest.mark.parametrize("path", PREDICT_PATHS)
    def test_a_model_that_raises_gives_a_generic_500_and_logs_the_traceback(
        self, make_client: MakeClient, path: str
    ) -> None:
        model = BrokenModel()
        client = make_client(model)

        with recorded_logs("churn_api") as records:
            response = post_customer(client, path, VALID)

        assert response.status_code == 500
        assert model.calls == 1, "a failed prediction is not retried behind the client's back"
        assert response.json() == {"detail": "Internal server error"}
        for text in FORBIDDEN_IN_RESPONSES:
            assert text not in response.text
            assert all(text not in value for value in response.headers.values())
        logged = [record for record in records if record.exc_info]
        assert logged, "the traceback belongs in the server log"
        assert "boom in /opt/models" in logging.Formatter().format(logged[0])

    @pytest.mark.parametrize("probability", [float("nan"), 1.5, -0.1, float("inf")])
    def test_a_model_answering_outside_0_1_gives_a_generic_500(
        self, make_client: MakeClient, probability: float
    ) -> None:
        client = make_client(ConstantModel(probability))

        response = client.post("/predict", json=VALID)

        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error"}

    @pytest.mark.parametrize("probability", [float("nan"), 1.5, -0.1, float("inf")])
    def test_a_batch_with_one_row_outside_0_1_gives_a_generic_500(
        self, make_client: MakeClient, probability: float
    ) -> None:
        def one_bad_row(rows: Any) -> Any:
            scores = np.full(len(rows), 0.25)
            scores[-1] = probability
            return scores

        client = make_client(one_bad_row)

        response = client.post("/predict/batch", json={"instances": [VALID] * 3})

        assert response.status_code == 500
        assert response.json() == {"detail": "Internal server error"}


class TestUnknownRoutes:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/nope", 404),
            ("POST", "/predict/nope", 404),
            ("GET", "/predict", 405),
            ("PUT", "/predict", 405),
            ("GET", "/predict/batch", 405),
            ("POST", "/health", 405),
            ("DELETE", "/model-info", 405),
        ],
    )
    def test_unknown_path_is_404_and_wrong_method_405_as_json(
        self, client: Client, method: str, path: str, status: int
    ) -> None:
        response = client.request(method, path)

        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json()["detail"], str)
        for text in FORBIDDEN_IN_RESPONSES:
            assert text not in response.text
