"""The OpenAPI document and the offline Swagger UI at /schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MakeClient
from litestar.testing import TestClient

from app.schemas import FEATURES

Client = TestClient[Any]
OPERATIONS = {
    ("post", "/predict"),
    ("post", "/predict/batch"),
    ("get", "/health"),
    ("get", "/model-info"),
}


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(), loader=lambda _: None)) as client:
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


def test_document_is_openapi_3_1_with_the_four_operations(document: dict[str, Any]) -> None:
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


def test_no_operation_documents_201_or_400(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        assert "201" not in operation["responses"], (method, path)
        assert "400" not in operation["responses"], (method, path)


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
