"""The three front ends share one core: one micro-batcher, the metrics, request ids, no 5xx.

Random JSON (hypothesis) is sent in process; the metrics and access log are read from the real
server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from ops_support import scrape, total, wait_for
from support import (
    CUSTOMERS,
    GATE_SECONDS,
    VALID,
    FakeModel,
    GatedModel,
    app_with,
    champion,
    held,
    row,
    serving,
)

from app.schemas import FEATURES
from app.settings import Settings

Client = TestClient[Any]
INFER = "/v2/models/churn-classifier/infer"
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_requests_of_all_front_ends_are_scored_in_one_model_call() -> None:
    model = GatedModel()
    calls = [
        ("/predict", VALID),
        ("/invocations", {"dataframe_records": CUSTOMERS}),
        ("/invocations", {"inputs": {n: [c[n] for c in CUSTOMERS] for n in FEATURES}}),
        (
            INFER,
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 5],
                        "datatype": "FP64",
                        "data": [row(c) for c in CUSTOMERS[:2]],
                    }
                ]
            },
        ),
        ("/predict/batch", {"instances": CUSTOMERS}),
    ]

    async def concurrently() -> list[httpx.Response]:
        app = app_with(Settings(micro_batching=True), lambda _: champion(model))
        async with serving(app) as client:
            gate = asyncio.ensure_future(client.post("/predict", json=VALID))
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, model.entered.wait, GATE_SECONDS)
            answers = [asyncio.ensure_future(client.post(p, json=b)) for p, b in calls]
            await held(app, 1 + 1 + 5 + 5 + 2 + 5)  # (bounded) the gate's row and all of calls'
            model.release.set()
            assert (await gate).status_code == 200
            return list(await asyncio.gather(*answers))

    answers = asyncio.run(concurrently())

    assert [a.status_code for a in answers] == [200] * len(calls)
    assert [len(call) for call in model.calls] == [1, 1 + 5 + 5 + 2 + 5]
    expected = [FakeModel.probability(c) for c in CUSTOMERS]
    assert answers[1].json()["predictions"] == [int(p > 0.5) for p in expected]
    proba = answers[3].json()["outputs"][0]["data"]
    assert proba[1::2] == expected[:2]


# --- random JSON never gives a 5xx ---------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(list(FEATURES))
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text(max_size=8) | st.sampled_from(
        [
            *FEATURES,
            "dataframe_split",
            "dataframe_records",
            "instances",
            "inputs",
            "columns",
            "data",
            "params",
            "name",
            "shape",
            "datatype",
            "parameters",
            "outputs",
            "content_type",
        ]
    )
    return st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5)


json_values = st.recursive(json_scalars, containers, max_leaves=25)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["x", *FEATURES]),
        "shape": st.lists(st.integers(-1, 6), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES"]),
        "data": json_values,
    },
    optional={"parameters": json_values},
)
infer_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=6)},
    optional={
        "parameters": st.sampled_from([{"content_type": "pd"}, {"content_type": 3}, {}]),
        "outputs": json_values,
        "id": json_values,
    },
)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with TestClient(app_with(Settings(), lambda _: champion(FakeModel()))) as client:
        yield client


def check(response: Any) -> None:
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text


@EXAMPLES
@given(document=json_values, layout=st.sampled_from(["dataframe_records", "inputs", "x"]))
def test_random_json_to_invocations_never_gives_a_5xx(
    client: Client, document: Any, layout: str
) -> None:
    for body in (document, {layout: document}):
        check(client.post("/invocations", content=json.dumps(body)))


csv_cells = st.sampled_from(["", "0", "12", "-1", "1e999", "nan", "True", "x", '"a,b"', "1_0"])
csv_lines = st.lists(csv_cells | st.text(max_size=6), min_size=1, max_size=7).map(",".join)


def with_header(lines: list[str]) -> bytes:
    # A named function, not a lambda (see tests/test_properties.py)
    return "\n".join([",".join(FEATURES), *lines]).encode()


csv_bodies = st.lists(csv_lines, max_size=5).map(with_header) | st.binary(max_size=200)


@EXAMPLES
@given(body=csv_bodies)
def test_random_csv_to_invocations_never_gives_a_5xx(client: Client, body: bytes) -> None:
    check(client.post("/invocations", content=body, headers={"content-type": "text/csv"}))


@EXAMPLES
@given(document=json_values | infer_bodies)
def test_random_json_to_infer_never_gives_a_5xx(client: Client, document: Any) -> None:
    check(client.post(INFER, content=json.dumps(document)))


# --- the real server: metrics by route template, request ids ----------------------------------


@pytest.mark.e2e
def test_metrics_and_request_ids_carry_each_protocols_route_template(server: Server) -> None:
    infer = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": row(VALID)}]}
    before = scrape(server.base_url)
    with httpx.Client(base_url=server.base_url) as http:
        answers = [
            http.post(
                "/invocations",
                json={"dataframe_records": [VALID]},
                headers={"X-Request-ID": "inv-1"},
            ),
            http.post(INFER, json=infer, headers={"X-Request-ID": "inf-1"}),
            http.post(INFER, json={"inputs": []}),
            http.get("/v2/models/churn-classifier/ready"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 400, 200]
    assert answers[0].headers["x-request-id"] == "inv-1"
    assert answers[1].headers["x-request-id"] == answers[1].json()["id"] == "inf-1"

    def counted(route: str, status: str, wanted: float) -> bool:
        name = "churn_http_requests_total"
        now = total(scrape(server.base_url), name, route=route, status=status)
        return now - total(before, name, route=route, status=status) >= wanted

    wait_for(lambda: counted("/invocations", "200", 1), 10)
    wait_for(lambda: counted("/v2/models/{name}/infer", "200", 1), 10)
    wait_for(lambda: counted("/v2/models/{name}/infer", "400", 1), 10)
    wait_for(lambda: counted("/v2/models/{name}/ready", "200", 1), 10)
