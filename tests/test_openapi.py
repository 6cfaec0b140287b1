"""The OpenAPI document and the offline Swagger UI at /schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MakeClient
from litestar.testing import TestClient
from support import app_with

from app.schemas import FEATURES

Client = TestClient[Any]
OPERATIONS = {
    ("post", "/predict"),
    ("post", "/predict/batch"),
    ("get", "/health"),
    ("get", "/model-info"),
    ("post", "/invocations"),
    ("get", "/ping"),
    ("get", "/version"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/v2"),
    ("get", "/v2/models/{name}"),
    ("get", "/v2/models/{name}/versions/{version}"),
    ("get", "/v2/models/{name}/ready"),
    ("get", "/v2/models/{name}/versions/{version}/ready"),
    ("post", "/v2/models/{name}/infer"),
    ("post", "/v2/models/{name}/versions/{version}/infer"),
}


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    from app.settings import Settings

    with TestClient(app_with(Settings(), lambda _: None)) as client:
        response = client.get("/schema/openapi.json")
        assert response.status_code == 200
        yield response.json()


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = document["components"]["schemas"][name]
    return result


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict):
                yield method, path, operation


def test_document_is_openapi_3_1_with_every_operation(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert {(method, path) for method, path, _ in operations(document)} >= OPERATIONS


def test_customer_schema_states_every_bound_including_zero(document: dict[str, Any]) -> None:
    properties = schema(document, "Customer")["properties"]
    keys = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    stated = {name: {k: v for k, v in p.items() if k in keys} for name, p in properties.items()}

    assert list(properties) == list(FEATURES)
    assert stated == {
        "tenure_months": {"type": "integer", "minimum": 0, "maximum": 600},
        "monthly_charges": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10_000},
        "total_charges": {"type": "number", "minimum": 0, "maximum": 6_000_000},
        "num_support_tickets": {"type": "integer", "minimum": 0, "maximum": 1000},
        "is_month_to_month": {"type": "boolean"},
    }
    assert sorted(schema(document, "Customer")["required"]) == sorted(FEATURES)


def test_bodies_that_reject_unknown_fields_say_additional_properties_false(
    document: dict[str, Any],
) -> None:
    assert schema(document, "Customer")["additionalProperties"] is False
    assert schema(document, "BatchRequest")["additionalProperties"] is False


def test_batch_schema_states_1_to_1024_instances(document: dict[str, Any]) -> None:
    instances = schema(document, "BatchRequest")["properties"]["instances"]

    assert (instances["minItems"], instances["maxItems"]) == (1, 1024)
    assert instances["items"] == {"$ref": "#/components/schemas/Customer"}


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_threshold_query_parameter_has_bounds_0_and_1(document: dict[str, Any], path: str) -> None:
    (parameter,) = document["paths"][path]["post"]["parameters"]

    assert parameter["name"] == "threshold"
    assert parameter["in"] == "query"
    assert parameter.get("required", False) is False
    assert parameter["schema"]["type"] == "number"
    assert (parameter["schema"]["minimum"], parameter["schema"]["maximum"]) == (0, 1)


@pytest.mark.parametrize(
    ("path", "body"), [("/predict", "Customer"), ("/predict/batch", "BatchRequest")]
)
def test_predict_operations_document_body_example_and_error_responses(
    document: dict[str, Any], make_client: MakeClient, path: str, body: str
) -> None:
    operation = document["paths"][path]["post"]
    content = operation["requestBody"]["content"]["application/json"]

    assert content["schema"] == {"$ref": f"#/components/schemas/{body}"}
    assert {"200", "413", "422", "503"} <= set(operation["responses"])
    assert operation["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationErrorBody"
    }
    # The documented example is a request the service accepts.
    example = content.get("example") or next(iter(content["examples"].values()))["value"]
    assert make_client().post(path, json=example).status_code == 200


def test_health_documents_503(document: dict[str, Any]) -> None:
    assert {"200", "503"} <= set(document["paths"]["/health"]["get"]["responses"])


def test_no_operation_documents_201_and_only_the_protocols_document_400(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        assert "201" not in operation["responses"], (method, path)
        protocol = path == "/invocations" or path.endswith("/infer")
        assert ("400" in operation["responses"]) is protocol, (method, path)


TAGS = {"prediction", "MLflow scoring protocol", "Open Inference Protocol", "operations"}


def test_every_operation_has_one_of_the_four_tags_and_a_human_summary(
    document: dict[str, Any],
) -> None:
    seen = set()
    for method, path, operation in operations(document):
        (tag,) = operation["tags"]
        seen.add(tag)
        summary = operation["summary"]
        assert " " in summary, (method, path, summary)  # words, not a function name
        assert summary[0].isupper(), (method, path, summary)
    assert seen == TAGS


PROTOCOL_BODIES = [
    ("/invocations", "application/json", "Invocation", "MlflowErrorBody"),
    ("/invocations", "text/csv", None, "MlflowErrorBody"),
    ("/v2/models/{name}/infer", "application/json", "InferRequest", "InferenceErrorBody"),
    ("/v2/models/{name}/versions/{version}/infer", "application/json", "InferRequest",
     "InferenceErrorBody"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "media_type", "body", "error"), PROTOCOL_BODIES)
def test_protocol_operations_document_body_example_and_error_responses(
    document: dict[str, Any], client: Client, path: str, media_type: str, body: str | None,
    error: str,
) -> None:  # fmt: skip
    operation = document["paths"][path]["post"]
    content = operation["requestBody"]["content"][media_type]

    expected = {"$ref": f"#/components/schemas/{body}"} if body else {"type": "string"}
    assert content["schema"] == expected
    if body:
        assert body in document["components"]["schemas"]
    assert {"200", "400", "413", "415", "503"} <= set(operation["responses"])
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{error}"
    }
    # The documented example is a request the service accepts.
    url = path.format(name="churn-classifier", version="7")
    example = content["example"]
    raw = example.encode() if isinstance(example, str) else json.dumps(example).encode()
    response = client.post(url, content=raw, headers={"content-type": media_type})
    assert response.status_code == 200, response.text


def test_record_rows_state_the_bounds_and_allow_other_columns(document: dict[str, Any]) -> None:
    record = schema(document, "Record")

    assert record["properties"]["tenure_months"]["maximum"] == 600
    assert record.get("additionalProperties", True) is not False


def test_schema_page_loads_only_local_assets_and_they_are_served(client: Client) -> None:
    page = client.get("/schema")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"<(?:script|link)[^>]*?(?:src|href)=[\"']([^\"']+)[\"']", page.text)
    assert assets, page.text[:500]
    for url in assets:
        assert not re.match(r"^(https?:)?//", url), f"/schema loads {url} from the internet"
    local = [url for url in assets if not url.startswith("data:")]
    assert any(url.endswith(".js") for url in local)
    assert any(url.endswith(".css") for url in local)
    for url in local:
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url
    assert not re.search(r"(src|href)=[\"']https?://", page.text)
