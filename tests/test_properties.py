"""Property-based: no input a client can send produces a 5xx; every answer is 200 or a 4xx JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from support import VALID, FakeModel, app_with, champion

from app.schemas import FEATURES
from app.settings import Settings

Client = TestClient[Any]
PATHS = st.sampled_from(["/predict", "/predict/batch"])
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


# Named functions, not lambdas: describing a lambda makes hypothesis scan sys.modules, which the
# app's scoring thread may be changing (it imports scikit-learn when it starts).
def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=5) | st.dictionaries(
        st.text(max_size=10), children, max_size=5
    )


def with_valid_defaults(changes: dict[str, Any]) -> dict[str, Any]:
    return {**VALID, **changes}


json_values = st.recursive(json_scalars, containers, max_leaves=20)
# Values near and across each field's bounds, of every JSON type.
field_values = (
    json_scalars
    | st.integers(min_value=-2, max_value=1002)
    | st.floats(min_value=-1, max_value=10_001)
    | st.sampled_from([0, 0.0, 600, 601, 10_000, 9999.99, 6_000_000, 6_000_000.5, 1e308, -0.0])
)
customers = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(FEATURES, field_values),
        "monthlyCharges": field_values,
        "extra": json_values,
    },
)
nearly_valid = st.builds(with_valid_defaults, customers)
queries = st.none() | st.text(max_size=8) | st.floats().map(repr) | st.sampled_from(["0", "1"])


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with TestClient(app_with(Settings(), lambda _: champion(FakeModel()))) as client:
        yield client


def check(response: Any) -> None:
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.status_code == 200:
        predictions = body.get("predictions", [body])
        for prediction in predictions:
            assert 0 <= prediction["churn_probability"] <= 1
            assert prediction["model_version"] == "7"
    else:
        assert isinstance(body["detail"], str)
        if response.status_code == 422:
            assert body["errors"]


def post(client: Client, path: str, body: bytes, threshold: str | None) -> Any:
    params = {} if threshold is None else {"threshold": threshold}
    return client.post(
        path, content=body, params=params, headers={"content-type": "application/json"}
    )


@EXAMPLES
@given(path=PATHS, document=json_values, threshold=queries)
def test_any_json_value_gets_200_or_4xx(
    client: Client, path: str, document: Any, threshold: str | None
) -> None:
    check(post(client, path, json.dumps(document).encode(), threshold))


@EXAMPLES
@given(path=PATHS, body=st.binary(max_size=200))
def test_any_bytes_get_200_or_4xx(client: Client, path: str, body: bytes) -> None:
    check(post(client, path, body, None))


@EXAMPLES
@given(path=PATHS, field=st.sampled_from(FEATURES), raw=st.binary(min_size=1, max_size=12))
def test_raw_bytes_inside_a_json_string_get_200_or_4xx(
    client: Client, path: str, field: str, raw: bytes
) -> None:
    # Invalid UTF-8 inside a string is a different decoder error than malformed JSON.
    customer = json.dumps(VALID).encode().replace(f'"{field}"'.encode(), b'"' + raw + b'"', 1)
    body = b'{"instances": [' + customer + b"]}" if path == "/predict/batch" else customer
    check(post(client, path, body, None))


@EXAMPLES
@given(payload=st.one_of(customers, nearly_valid), threshold=queries)
def test_random_customers_get_200_or_4xx(
    client: Client, payload: dict[str, Any], threshold: str | None
) -> None:
    check(post(client, "/predict", json.dumps(payload).encode(), threshold))


@EXAMPLES
@given(instances=st.lists(st.one_of(customers, nearly_valid), max_size=8), threshold=queries)
def test_random_batches_get_200_or_4xx(
    client: Client, instances: list[dict[str, Any]], threshold: str | None
) -> None:
    body = json.dumps({"instances": instances}).encode()
    check(post(client, "/predict/batch", body, threshold))


@EXAMPLES
@given(payload=nearly_valid)
def test_a_valid_customer_is_scored_and_an_invalid_one_is_named(
    client: Client, payload: dict[str, Any]
) -> None:
    response = post(client, "/predict", json.dumps(payload).encode(), None)

    check(response)
    if response.status_code == 422:
        named = {error["field"] for error in response.json()["errors"]}
        assert named <= {*FEATURES, "monthlyCharges", "extra"}
        assert named
