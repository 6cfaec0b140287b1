"""MLflow's scoring protocol in process: the four JSON layouts, CSV, errors in MLflow's shape.

The answers of ``mlflow models serve`` itself are compared in tests/test_mlflow_differential.py;
here a fake model pins the decoding and the errors.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import version
from typing import Any

import pytest
from conftest import MakeClient
from litestar.testing import TestClient
from support import CUSTOMERS, VALID, FakeModel, champion, customer

from app.schemas import FEATURES
from app.settings import Settings

Client = TestClient[Any]


def label(payload: dict[str, Any]) -> int:
    """scikit-learn's predict for a binary classifier: class 1 when P(churn) > P(no churn)."""
    p = FakeModel.probability(payload)
    return int(p > 1 - p)


def layouts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same rows in each JSON layout MLflow accepts (split with its columns reversed)."""
    columns = list(reversed(FEATURES))
    return {
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs (columns)": {"inputs": {name: [row[name] for row in rows] for name in FEATURES}},
        "inputs (records)": {"inputs": rows},
        "dataframe_split": {
            "dataframe_split": {
                "columns": columns,
                "data": [[row[name] for name in columns] for row in rows],
                "index": list(range(len(rows))),
            }
        },
    }


def csv_body(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    lines = [",".join(columns)]
    lines += [",".join(str(row.get(name, "")) for name in columns) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def invoke(client: Client, body: Any, **headers: str) -> Any:
    if isinstance(body, bytes):
        return client.post("/invocations", content=body, headers=headers)
    return client.post("/invocations", json=body, headers=headers)


@pytest.mark.parametrize("layout", list(layouts(CUSTOMERS)))
def test_every_json_layout_answers_the_predict_labels_in_order(client: Client, layout: str) -> None:
    response = invoke(client, layouts(CUSTOMERS)[layout])

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [label(c) for c in CUSTOMERS]}


def test_csv_with_a_header_in_any_column_order_answers_the_same(client: Client) -> None:
    body = csv_body(CUSTOMERS, [*reversed(FEATURES), "customer_id"])

    response = invoke(client, body, **{"content-type": "text/csv; charset=utf-8"})

    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [label(c) for c in CUSTOMERS]}


def test_extra_columns_and_top_level_keys_are_dropped_and_params_ignored(client: Client) -> None:
    rows = [{**c, "customer_id": "c-1", "region": None} for c in CUSTOMERS]

    response = invoke(client, {"dataframe_records": rows, "params": {"k": 1}, "id": "x"})

    assert response.json() == {"predictions": [label(c) for c in CUSTOMERS]}


def test_labels_are_the_model_classes(make_client: MakeClient) -> None:
    model = dataclasses.replace(champion(FakeModel()), classes=("stays", "churns"))
    client = make_client(loader=lambda _: model)

    response = invoke(client, {"dataframe_records": CUSTOMERS})

    assert response.json() == {"predictions": [["stays", "churns"][label(c)] for c in CUSTOMERS]}


def test_a_predict_proba_model_answers_both_class_probabilities(make_client: MakeClient) -> None:
    model = dataclasses.replace(champion(FakeModel()), pyfunc_predict_fn="predict_proba")
    client = make_client(loader=lambda _: model)

    predictions = invoke(client, {"dataframe_records": CUSTOMERS}).json()["predictions"]

    expected = [FakeModel.probability(c) for c in CUSTOMERS]
    assert [p1 for _, p1 in predictions] == expected
    assert [p0 for p0, _ in predictions] == [1 - p for p in expected]


def test_another_predict_function_is_refused_with_501(make_client: MakeClient) -> None:
    model = dataclasses.replace(champion(FakeModel()), pyfunc_predict_fn="predict_log_proba")
    client = make_client(loader=lambda _: model)

    response = invoke(client, {"dataframe_records": [VALID]})

    assert response.status_code == 501
    assert response.json()["error_code"] == "NOT_IMPLEMENTED"
    assert "predict_log_proba" in response.json()["message"]


BAD_BODIES: list[tuple[Any, str, list[str]]] = [
    (b"nope", "BAD_REQUEST", ["not valid JSON"]),
    (b"", "BAD_REQUEST", ["empty"]),
    ([VALID], "BAD_REQUEST", ["JSON object", "got array"]),
    ({}, "BAD_REQUEST", ["exactly one of"]),
    ({"dataframe_records": [VALID], "instances": [VALID]}, "BAD_REQUEST", ["exactly one of"]),
    ({"dataframe_records": [VALID], "params": 3}, "BAD_REQUEST", ["params"]),
    ({"dataframe_records": {"a": 1}}, "BAD_REQUEST", ["dataframe_records", "array"]),
    ({"dataframe_split": {"data": [[1]]}}, "BAD_REQUEST", ["dataframe_split", "columns"]),
    (
        {"dataframe_records": [customer(tenure_months=-1), customer(total_charges=1.0), {}]},
        "INVALID_PARAMETER_VALUE",
        [
            "dataframe_records[0].tenure_months: Expected `int` >= 0",
            "dataframe_records[1].total_charges: total_charges must be >= monthly_charges",
            "dataframe_records[2].is_month_to_month: Field required",
        ],
    ),
    (
        {"instances": [VALID, customer(tenure_months=12.5, is_month_to_month="yes")]},
        "INVALID_PARAMETER_VALUE",
        [
            "instances[1].tenure_months: Expected `int`, got `float`",
            "instances[1].is_month_to_month",
        ],
    ),
    (
        {"dataframe_split": {"columns": list(FEATURES), "data": [[12, 79.5, 954.0, 3, 1]]}},
        "INVALID_PARAMETER_VALUE",
        ["dataframe_split.data[0].is_month_to_month: Expected `bool`, got `int`"],
    ),
    (
        {"dataframe_split": {"columns": ["tenure_months"], "data": [[12]]}},
        "INVALID_PARAMETER_VALUE",
        ["missing columns", "total_charges"],
    ),
    (
        {"inputs": {**{name: [VALID[name]] for name in FEATURES}, "total_charges": [1e9]}},
        "INVALID_PARAMETER_VALUE",
        ["inputs.total_charges[0]: Expected `float` <= 6000000.0"],
    ),
    (
        {
            "inputs": {
                name: [VALID[name]] * (2 if name == "tenure_months" else 1) for name in FEATURES
            }
        },
        "INVALID_PARAMETER_VALUE",
        ["different lengths"],
    ),
    ({"dataframe_records": []}, "INVALID_PARAMETER_VALUE", ["expected 1 to 1024 rows"]),
    ({"dataframe_records": [VALID] * 1025}, "INVALID_PARAMETER_VALUE", ["MAX_BATCH", "1025"]),
]


@pytest.mark.parametrize(("body", "code", "fragments"), BAD_BODIES)
def test_a_bad_body_gets_400_in_mlflow_shape_naming_what_is_wrong(
    client: Client, body: Any, code: str, fragments: list[str]
) -> None:
    response = invoke(client, body, **{"content-type": "application/json"})

    assert response.status_code == 400, response.text
    assert response.json() == {"error_code": code, "message": response.json()["message"]}
    for fragment in fragments:
        assert fragment in response.json()["message"]
    assert "Traceback" not in response.text
    assert "/" not in response.json()["message"]


def test_many_bad_rows_are_named_up_to_a_cap(client: Client) -> None:
    rows = [customer(num_support_tickets=-1)] * 30

    message = invoke(client, {"dataframe_records": rows}).json()["message"]

    assert message.count("num_support_tickets: Expected `int` >= 0") == 10
    assert message.endswith("; and 20 more")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (csv_body([VALID], ["tenure_months"]), "csv header: missing columns"),
        (csv_body([customer(tenure_months="12.0")], list(FEATURES)), "csv[0].tenure_months"),
        (
            csv_body([customer(is_month_to_month="maybe")], list(FEATURES)),
            "csv[0].is_month_to_month",
        ),
        (csv_body([customer(monthly_charges=0)], list(FEATURES)), "csv[0].monthly_charges"),
        (csv_body([customer(total_charges="nan")], list(FEATURES)), "csv[0].total_charges"),
        (csv_body([customer(total_charges="9_540")], list(FEATURES)), "csv[0].total_charges"),
        (b",".join(f.encode() for f in FEATURES) + b"\n1,2\n", "csv[0]: 2 values for 5 columns"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "empty"),
    ],
)
def test_a_bad_csv_gets_400_naming_the_row_and_column(
    client: Client, body: bytes, fragment: str
) -> None:
    response = invoke(client, body, **{"content-type": "text/csv"})

    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/json; charset=latin-1", "text/csv; format=x"],
)
def test_another_content_type_gets_415(client: Client, content_type: str) -> None:
    response = invoke(client, b"{}", **{"content-type": content_type})

    assert response.status_code == 415
    assert response.json()["error_code"] == "BAD_REQUEST"


def test_a_body_over_max_body_bytes_gets_413_naming_the_limit(make_client: MakeClient) -> None:
    client = make_client(FakeModel(), settings=Settings(max_body_bytes=1000))

    response = invoke(client, {"dataframe_records": [VALID] * 20})

    assert response.status_code == 413
    assert response.json() == {
        "error_code": "BAD_REQUEST",
        "message": "Request body is larger than MAX_BODY_BYTES (1000 bytes)",
    }


def test_without_a_model_ping_and_invocations_answer_503(make_client: MakeClient) -> None:
    client = make_client(loader=lambda _: None)

    assert client.get("/ping").status_code == 503
    response = invoke(client, {"dataframe_records": [VALID]})
    assert response.status_code == 503
    assert response.json() == {
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": "Model not loaded",
    }


def test_a_model_that_raises_gets_500_in_mlflow_shape_without_details(
    make_client: MakeClient,
) -> None:
    def broken(rows: Any) -> Any:
        raise RuntimeError("boom in /opt/secret.py")

    response = invoke(make_client(broken), {"dataframe_records": [VALID]})

    assert response.status_code == 500
    assert response.json() == {"error_code": "INTERNAL_ERROR", "message": "Internal server error"}


def test_ping_and_version_answer_as_mlflow_does(client: Client) -> None:
    ping = client.get("/ping")
    assert (ping.status_code, ping.text) == (200, "\n")
    answer = client.get("/version")
    assert (answer.status_code, answer.text) == (200, version("churn-api"))
    assert client.get("/health").json() == {"status": "ok"}


def test_invocations_and_predict_batch_share_one_scoring_path(client: Client) -> None:
    batch = client.post("/predict/batch", json={"instances": CUSTOMERS}).json()["predictions"]
    labels = invoke(client, {"dataframe_records": CUSTOMERS}).json()["predictions"]

    assert labels == [int(p["churn_label"]) for p in batch]  # 0.5 is the default threshold
